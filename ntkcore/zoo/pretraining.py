"""Pretrained source models: train on first use, then load from the checkpoint cache.

A source model (Maddox et al., 2021, Section 3: the network whose linearization around the
trained weights is transferred) is identified by its architecture and constructor keywords,
the dataset and its loader keywords, a fingerprint of the training data, the seed and every
training hyperparameter.  The canonical JSON of these, with the cache format version, is
hashed into the cache key, so changing any of them trains (and caches) a new model.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ntkcore.zoo.cache import FORMAT_VERSION, CheckpointStore, digest
from ntkcore.zoo.registry import ArchSpec, create, spec
from ntkcore.zoo.training import TrainRecord, seeded, train

__all__ = [
    "TRAIN_HYPERPARAMETERS",
    "load_task",
    "PretrainedEntry",
    "Resolved",
    "TaskLike",
    "cache_stem",
    "fetch",
    "pretrained",
    "resolve",
]

#: Training hyperparameters accepted by :func:`pretrained` next to the architecture keywords.
TRAIN_HYPERPARAMETERS = (
    "loss",
    "epochs",
    "lr",
    "batch_size",
    "optimizer",
    "weight_decay",
    "schedule",
)
_TRAIN_FIXED_DEFAULTS = {"optimizer": "adam", "weight_decay": 0.0, "schedule": "cosine"}


class TaskLike(Protocol):
    """What :func:`pretrained` needs from a dataset: ``ntkcore.data.Task`` satisfies it.

    ``source`` is the ``(x, y)`` training pair; ``meta`` is a mapping (or an object with
    attributes) providing ``input_shape``, ``output_dim`` and ``kind`` ("regression" or
    "classification").
    """

    source: tuple[torch.Tensor, torch.Tensor]
    meta: Any


@dataclass(frozen=True)
class PretrainedEntry:
    """A pretrained model with its provenance.

    Attributes
    ----------
    model : nn.Module
        The trained network, in eval mode.
    metadata : dict
        The cache sidecar: key material, training record, torch version, weights checksum.
    from_cache : bool
        Whether the weights were loaded from the cache (``False``: trained now).
    path : Path
        The safetensors file of the entry.
    """

    model: nn.Module
    metadata: dict[str, Any]
    from_cache: bool
    path: Path

    @property
    def record(self) -> TrainRecord:
        """Training record of the model (from the run that produced the cached weights)."""
        return TrainRecord.from_dict(self.metadata["record"])


@dataclass(frozen=True)
class Resolved:
    """A fully resolved pretraining request (see :func:`resolve`).

    Attributes
    ----------
    spec : ArchSpec
        The architecture's registry entry.
    arch_kwargs : dict
        Constructor keywords, defaults and dataset-derived sizes included.
    train_kwargs : dict
        Training hyperparameters for :func:`ntkcore.zoo.train`, defaults included.
    material : dict
        Everything the cache key is computed from (canonical JSON, SHA-256).
    key : str
        The cache key (hex SHA-256 of ``material``).
    stem : str
        File stem of the cache entry.
    """

    spec: ArchSpec
    arch_kwargs: dict[str, Any]
    train_kwargs: dict[str, Any]
    material: dict[str, Any]
    key: str
    stem: str


def _meta_get(meta: Any, name: str) -> Any:
    if isinstance(meta, Mapping):
        if name in meta:
            return meta[name]
    elif hasattr(meta, name):
        return getattr(meta, name)
    raise ValueError(f"dataset metadata lacks {name!r} (needs input_shape, output_dim, kind)")


def load_task(dataset: str, data_kw: Mapping[str, Any]) -> TaskLike:
    """Load ``dataset`` with ``ntkcore.data.load(dataset, **data_kw)``.

    The data layer is imported lazily (architectures and training do not need it); this is
    the one place where the zoo reads named datasets.
    """
    from ntkcore import data

    return data.load(dataset, **data_kw)


def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_stem(arch: str, dataset: str, seed: int, key: str) -> str:
    """Readable, filesystem-safe file stem of a cache entry."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[:60]
    return f"{arch}__{safe}__seed{seed}__{key[:20]}"


def resolve(
    arch: str,
    dataset: str,
    task: TaskLike,
    seed: int = 0,
    data_kw: Mapping[str, Any] | None = None,
    **hyper: Any,
) -> Resolved:
    """Resolve architecture keywords, training hyperparameters and the cache key.

    ``hyper`` mixes constructor keywords of ``arch`` and the training hyperparameters
    :data:`TRAIN_HYPERPARAMETERS`.  Input and output sizes are taken from the task's
    metadata; passing them explicitly is allowed only if they agree.
    """
    s = spec(arch)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    input_shape = tuple(int(d) for d in _meta_get(task.meta, "input_shape"))
    output_dim = int(_meta_get(task.meta, "output_dim"))
    kind = _meta_get(task.meta, "kind")
    if kind not in s.kinds:
        raise ValueError(
            f"architecture {arch!r} supports {sorted(s.kinds)} tasks; "
            f"dataset {dataset!r} is {kind!r}"
        )
    arch_names = set(s.defaults)
    unknown = sorted(set(hyper) - arch_names - set(TRAIN_HYPERPARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown keyword(s) {unknown} for pretrained({arch!r}, ...); architecture keywords: "
            f"{sorted(arch_names)}; training keywords: {list(TRAIN_HYPERPARAMETERS)}"
        )
    user_arch = {k: v for k, v in hyper.items() if k in arch_names}
    fitted = s.task_kwargs(input_shape, output_dim)
    for k, v in fitted.items():
        if k in user_arch and user_arch[k] != v:
            raise ValueError(
                f"{arch}: {k}={user_arch[k]!r} conflicts with dataset {dataset!r} "
                f"(input shape {input_shape}, {output_dim} outputs) which needs {k}={v!r}"
            )
    arch_kwargs = s.resolve({**user_arch, **fitted})
    default_loss = (
        "cross_entropy"
        if kind == "classification"
        else ("gaussian_nll" if arch == "hetero-mlp" else "mse")
    )
    train_kwargs = {
        "loss": default_loss,
        **_TRAIN_FIXED_DEFAULTS,
        **s.train_defaults,
        **{k: v for k, v in hyper.items() if k in TRAIN_HYPERPARAMETERS},
    }
    x, y = task.source
    material = {
        "format": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "dataset": dataset,
        "data_kwargs": dict(data_kw or {}),
        "data_sha256": _fingerprint(x, y),
        "seed": seed,
        "train": train_kwargs,
    }
    key = digest(material)
    return Resolved(
        s, arch_kwargs, train_kwargs, material, key, cache_stem(arch, dataset, seed, key)
    )


def fetch(
    arch: str,
    dataset: str,
    seed: int = 0,
    *,
    task: TaskLike | None = None,
    data_kw: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    **hyper: Any,
) -> PretrainedEntry:
    """Like :func:`pretrained`, returning a :class:`PretrainedEntry` with provenance."""
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty name, got {dataset!r}")
    data_kw = dict(data_kw or {})
    if task is None:
        task = load_task(dataset, data_kw)
    r = resolve(arch, dataset, task, seed, data_kw, **hyper)
    store = CheckpointStore(cache_dir)
    weights_path = store.paths(r.stem)[0]
    with seeded(seed, device):
        model = create(arch, **r.arch_kwargs)
    if not retrain:
        t0 = time.perf_counter()
        hit = store.load(r.stem, r.key, model.state_dict())
        if hit is not None:
            tensors, sidecar = hit
            model.load_state_dict(tensors, strict=True)
            model.to(device or "cpu").eval()
            if progress is not None:
                progress(1.0)
            sidecar["load_seconds"] = time.perf_counter() - t0
            return PretrainedEntry(model, sidecar, True, weights_path)
    x, y = task.source
    model, record = train(
        model, x, y, seed=seed, progress=progress, device=device or "cpu", **r.train_kwargs
    )
    metadata = {
        "arch": arch,
        "arch_kwargs": r.arch_kwargs,
        "dataset": dataset,
        "data_kwargs": data_kw,
        "seed": seed,
        "train": r.train_kwargs,
        "key_material": r.material,
        "record": record.to_dict(),
        "created_unix": time.time(),
    }
    try:
        sidecar = store.save(r.stem, r.key, model.state_dict(), metadata)
    except OSError as err:
        warnings.warn(
            f"could not write the model cache under {store.directory}: {err}",
            RuntimeWarning,
            stacklevel=2,
        )
        sidecar = metadata
    return PretrainedEntry(model, sidecar, False, weights_path)


def pretrained(
    arch: str,
    dataset: str,
    seed: int = 0,
    *,
    task: TaskLike | None = None,
    data_kw: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    **hyper: Any,
) -> nn.Module:
    """A trained source network, trained on first use and cached on disk.

    Parameters
    ----------
    arch : str
        Architecture name (see :func:`ntkcore.zoo.available`).
    dataset : str
        Dataset name for :func:`ntkcore.data.load`; the network is trained on the task's
        ``source`` split.  With ``task`` given, only a label for the cache key.
    seed : int
        Seed of the initialization and of the data order.
    task : TaskLike, optional
        Use this task instead of loading ``dataset`` (callers with their own data).
    data_kw : mapping, optional
        Keywords for ``ntkcore.data.load`` (part of the cache key).
    device : torch.device or str, optional
        Device to train on and to return the model on (default CPU).  The device is not
        part of the cache key.
    progress : callable, optional
        Called with the fraction of training done (0.0 to 1.0); once with 1.0 on a cache hit.
    cache_dir : path-like, optional
        Cache root; default ``$NTKCORE_CACHE`` or ``~/.cache/ntkcore``.
    retrain : bool
        Train even if a cached entry exists, and overwrite it.
    **hyper
        Architecture keywords (e.g. ``width=40, depth=3, activation="tanh"``) and training
        hyperparameters (``loss``, ``epochs``, ``lr``, ``batch_size``, ``optimizer``,
        ``weight_decay``, ``schedule``; defaults per architecture in
        ``zoo.spec(arch).train_defaults``).  Input/output sizes follow from the dataset.

    Returns
    -------
    nn.Module
        The trained network in eval mode.

    Raises
    ------
    ValueError
        Unknown architecture or keyword, or an architecture that does not fit the dataset.

    Notes
    -----
    The default loss is cross-entropy for classification tasks, the Gaussian negative log
    likelihood for ``hetero-mlp``, and mean squared error otherwise.  Cached entries are
    verified (checksum, tensor names and shapes) before use; a damaged entry is removed and
    retrained with a :class:`~ntkcore.zoo.cache.CacheCorruptionWarning`.
    """
    return fetch(
        arch,
        dataset,
        seed,
        task=task,
        data_kw=data_kw,
        device=device,
        progress=progress,
        cache_dir=cache_dir,
        retrain=retrain,
        **hyper,
    ).model
