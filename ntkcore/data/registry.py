"""Registry of named tasks: :func:`available`, :func:`info` and :func:`load`.

Loaders are plain functions ``loader(seed, *, option=default, ...) -> Task`` registered with
:func:`register`.  :func:`load` checks the name and the option names against the loader's
signature (a ``ValueError`` lists the valid ones), validates ``seed``, applies the common
``dtype`` option and returns the task.

Seeding convention (all tasks): ``seed`` selects the *target* side (the target task, the order
of the adaptation pool, target-side noise and rotations), while ``source_seed`` selects the
source side.  The source split never depends on ``seed`` or on target-only options, so one
pretrained source model serves every target seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ntkcore.data.task import Task

Loader = Callable[..., Task]


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a registered task (available without loading any data)."""

    name: str
    loader: Loader
    description: str
    kind: str
    input_shape: tuple[int, ...]
    output_dim: int
    num_classes: int | None
    citation: str
    files: tuple[str, ...]
    rank: int

    @property
    def options(self) -> dict[str, Any]:
        """Load options and their defaults (``seed`` and ``dtype`` included)."""
        params = inspect.signature(self.loader).parameters
        options = {name: p.default for name, p in params.items() if name != "seed"}
        return {"seed": 0, **options, "dtype": torch.float32}


_REGISTRY: dict[str, DatasetSpec] = {}


def register(
    name: str,
    *,
    description: str,
    kind: str,
    input_shape: tuple[int, ...],
    output_dim: int,
    num_classes: int | None = None,
    citation: str,
    files: Sequence[str] = (),
    rank: int = 100,
) -> Callable[[Loader], Loader]:
    """Decorator adding ``loader`` to the registry under ``name`` (listed by ``rank``)."""

    def decorate(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered")
        params = list(inspect.signature(loader).parameters.values())
        if (
            not params
            or params[0].name != "seed"
            or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params[1:])
        ):
            raise TypeError(f"loader for {name!r} must look like loader(seed, *, options...)")
        _REGISTRY[name] = DatasetSpec(
            name=name,
            loader=loader,
            description=description,
            kind=kind,
            input_shape=tuple(input_shape),
            output_dim=output_dim,
            num_classes=num_classes,
            citation=citation,
            files=tuple(files),
            rank=rank,
        )
        return loader

    return decorate


def available() -> list[str]:
    """Names of the registered tasks (simple 1-D tasks first, then maps, then images)."""
    return sorted(_REGISTRY, key=lambda name: _REGISTRY[name].rank)


def _spec(name: str) -> DatasetSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {available()}")
    return _REGISTRY[name]


def info(name: str) -> dict[str, Any]:
    """Static description of task ``name``: kind, shapes, options with defaults, citation, files.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    """
    spec = _spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "kind": spec.kind,
        "input_shape": spec.input_shape,
        "output_dim": spec.output_dim,
        "num_classes": spec.num_classes,
        "options": spec.options,
        "citation": spec.citation,
        "files": spec.files,
        "doc": inspect.getdoc(spec.loader) or "",
    }


def load(name: str, seed: int = 0, **kw: Any) -> Task:
    """Load task ``name``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    seed : int
        Non-negative seed of the target side (see the module docstring).
    **kw
        Task options (see ``info(name)["options"]``), plus ``dtype`` (``torch.float32`` or
        ``torch.float64``, default float32) for inputs and regression targets.

    Raises
    ------
    ValueError
        For an unknown name, an unknown option (the message lists the valid ones) or an invalid
        option value.
    """
    spec = _spec(name)
    dtype = kw.pop("dtype", torch.float32)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    valid = [k for k in spec.options if k not in ("seed", "dtype")]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for dataset {name!r}; valid options: {valid + ['dtype']}"
        )
    seed = check_int("seed", seed, minimum=0)
    task = spec.loader(seed, **kw)
    return task if dtype == torch.float32 else task.to(dtype=dtype)


# --- validation and seeding helpers shared by the loaders ------------------------------------


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def check_optional_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """Like :func:`check_int` but ``None`` passes through."""
    return None if value is None else check_int(name, value, minimum=minimum, maximum=maximum)


def check_float(
    name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` as a finite float within bounds, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must lie in [{minimum}, {maximum}], got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


#: Stream identifiers mixed into every seed, so that different uses of the same integer seed
#: give statistically independent random streams.
STREAMS = {
    "sinusoid-source": 0,
    "sinusoid-target": 1,
    "linear-source": 2,
    "toy-source": 3,
    "toy-target": 4,
    "spatial-source": 5,
    "spatial-target": 6,
    "faces-source": 7,
    "faces-target": 8,
    "images-source": 9,
    "images-target": 10,
}


def rngs(stream: str, seed: int, count: int) -> list[np.random.Generator]:
    """``count`` independent generators for ``(stream, seed)`` (NumPy ``SeedSequence.spawn``).

    Separate generators per quantity (parameters, inputs, noise, ...) keep draws prefix-stable:
    asking for more points appends points without changing the earlier ones.
    """
    sequence = np.random.SeedSequence([STREAMS[stream], seed])
    return [np.random.default_rng(child) for child in sequence.spawn(count)]
