"""Prepared methods cached per process, so the source-side work is done once.

:func:`prepared` returns a fresh, unfitted clone of a cached prepared method each call:
callers fit their clone on their own context points, nothing is shared but the
read-only source-side state (the app's pages and repeated experiment runs use this).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

from ntkcore.experiments.methods.base import Method, create
from ntkcore.experiments.methods.source import Source, load_source

__all__ = ["clear", "prepared", "source"]

_MAX_ENTRIES = 32
_SOURCES: OrderedDict[Hashable, Source] = OrderedDict()
_METHODS: OrderedDict[Hashable, Method] = OrderedDict()
_LOCK = threading.RLock()


def _remember(table: OrderedDict, key: Hashable, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _MAX_ENTRIES:
        table.popitem(last=False)


def _device_key(device: torch.device | str | None) -> str:
    return str(torch.device(device)) if device is not None else "cpu"


def source(
    dataset: str,
    arch: str | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
) -> Source:
    """:func:`~ntkcore.experiments.methods.load_source`, memoized per process."""
    key = (dataset, arch, seed, _device_key(device))
    with _LOCK:
        if key in _SOURCES:
            _SOURCES.move_to_end(key)
            if progress is not None:
                progress(1.0)
            return _SOURCES[key]
    loaded = load_source(dataset, arch, seed=seed, device=device, progress=progress)
    with _LOCK:
        _remember(_SOURCES, key, loaded)
    return loaded


def prepared(name: str, src: Source, **options: Any) -> Method:
    """An unfitted method ``name`` (with ``options``) prepared on ``src``.

    The prepared instance is cached per (source object, name, options); each call returns
    its :meth:`~Method.clone`, so fitting the result never changes the cached state.
    Option values must be hashable.
    """
    key = (id(src), name, tuple(sorted(options.items())))
    with _LOCK:
        cached = _METHODS.get(key)
        if cached is not None and cached.source is src:
            _METHODS.move_to_end(key)
            return cached.clone()
    method = create(name, src, **options)
    with _LOCK:
        _remember(_METHODS, key, method)
    return method.clone()


def clear() -> None:
    """Forget every cached source and prepared method."""
    with _LOCK:
        _SOURCES.clear()
        _METHODS.clear()
