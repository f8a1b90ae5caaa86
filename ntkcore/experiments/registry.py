"""The experiments' registry, their common result type and their progress protocol.

Every experiment is a plain function ``f(*, preset="small", seed=0, progress=None, device=None,
**options)`` returning a tidy :class:`pandas.DataFrame` (one row per method × setting × task
× seed) or, when it produces several tables, an :class:`ExperimentTables` whose ``"main"``
table is the headline result. Experiments are registered by name in :data:`EXPERIMENTS`
(``name -> "module:function"``) and imported on first use, so listing them costs nothing and
the command line (``python -m ntkcore.experiments``) and the app share one table.

Progress
--------
``progress(fraction, message)`` is called with the fraction of the run done (0.0 to 1.0,
non-decreasing) and a short description of the current step. The app passes a callback
that updates a progress bar (and may raise to interrupt the run: experiments let exceptions
from ``progress`` propagate); the command line passes a ``tqdm`` bar. :class:`ProgressSteps`
splits one callback into weighted steps, each of which can hand a sub-callback with the
signature ``zoo.train(progress=...)`` expects (fraction only) to the code it calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import pandas as pd
import torch

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "Experiment",
    "ExperimentTables",
    "Progress",
    "ProgressSteps",
    "available",
    "check_preset",
    "get",
    "resolve_device",
]

#: The size presets every experiment accepts: ``small`` finishes within a minute on two CPU
#: cores (the app runs it live); ``full`` follows the paper's sizes and uses the GPU if present.
PRESETS = ("small", "full")


class Progress(Protocol):
    """``progress(fraction, message)``: fraction of the run done in [0, 1] and the step."""

    def __call__(self, fraction: float, message: str) -> None: ...


@dataclass(frozen=True)
class ExperimentTables(Mapping[str, pd.DataFrame]):
    """Several tidy tables from one experiment; ``tables["main"]`` is the headline result.

    A read-only mapping ``name -> DataFrame``. The command line prints ``main`` and writes
    every table (``--out results.csv`` writes ``results.csv`` and ``results-<name>.csv``).
    """

    tables: Mapping[str, pd.DataFrame]

    def __post_init__(self) -> None:
        tables = dict(self.tables)
        if "main" not in tables:
            raise ValueError(f"ExperimentTables needs a 'main' table, got {sorted(tables)}")
        for name, table in tables.items():
            if not isinstance(table, pd.DataFrame):
                raise ValueError(f"table {name!r} is a {type(table).__name__}, not a DataFrame")
        object.__setattr__(self, "tables", MappingProxyType(tables))

    @property
    def main(self) -> pd.DataFrame:
        return self.tables["main"]

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, function and one-line description."""

    name: str
    target: str  # "module:function"
    description: str

    @property
    def function(self) -> Callable[..., pd.DataFrame | ExperimentTables]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, **options: Any) -> pd.DataFrame | ExperimentTables:
        return self.function(**options)


_P = "ntkcore.experiments."
#: name -> Experiment. The paper's figure or table each reproduces is in the description.
EXPERIMENTS: Mapping[str, Experiment] = MappingProxyType(
    {
        e.name: e
        for e in (
            Experiment(
                "fast-adaptation",
                _P + "fast_adaptation:fast_adaptation",
                "Algorithm 1 vs baselines on a transfer task: error vs context size (Fig. 6, 7)",
            ),
            Experiment(
                "spatial-maps",
                _P + "fast_adaptation:spatial_maps",
                "Posterior mean and standard deviation on the spatial task's grid (Fig. 7a)",
            ),
            Experiment(
                "inductive-biases",
                _P + "inductive_biases:inductive_biases",
                "Linearized vs network predictions for MLPs of several widths/depths (Fig. 3)",
            ),
            Experiment(
                "jacobian-similarity",
                _P + "similarity:jacobian_similarity",
                "Cosine similarity of LeNet-3 Jacobians across MNIST halves and Fashion (Fig. 5)",
            ),
            Experiment(
                "classification",
                _P + "classification:classification",
                "Linearized GLM (MAP, Laplace, VI) vs the network: accuracy, NLL, ECE (Fig. 4)",
            ),
            Experiment(
                "unsupervised-transfer",
                _P + "classification:unsupervised_transfer",
                "Jacobian of an autoencoder's top k layers vs all layers as features (Table 1)",
            ),
            Experiment(
                "timing-n",
                _P + "timing:timing_vs_n",
                "Fit time vs number of points, function vs parameter space (Fig. 2 left)",
            ),
            Experiment(
                "timing-p",
                _P + "timing:timing_vs_p",
                "Fit time vs number of parameters, function vs parameter space (Fig. 2 centre)",
            ),
            Experiment(
                "fisher-products",
                _P + "timing:fisher_products",
                "Per-vector cost of fd / exact / autograd Fisher products (Fig. 2 right)",
            ),
        )
    }
)


def available() -> list[str]:
    """Names of the registered experiments."""
    return list(EXPERIMENTS)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the available ones.
    """
    if not isinstance(name, str) or name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {available()}")
    return EXPERIMENTS[name]


def check_preset(preset: object) -> str:
    """Validate a size preset name (``ValueError`` naming the accepted ones)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return str(preset)


def resolve_device(device: torch.device | str | None, preset: str = "small") -> torch.device:
    """The device an experiment runs on.

    ``None`` means the CPU for the ``small`` preset (what the app runs live) and the GPU, when
    one is present, for ``full``. An explicit device is validated.

    Raises
    ------
    ValueError
        For a malformed device string or a CUDA device on a machine without one.
    """
    if device is None:
        if preset == "full" and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA device is available")
    return dev


class ProgressSteps:
    """Split one :class:`Progress` callback into weighted steps.

    >>> seen = []
    >>> steps = ProgressSteps(lambda f, m: seen.append((round(f, 2), m)), [1, 3])
    >>> sub = steps.start("train")          # step 1 of 2 (weight 1)
    >>> sub(0.5)                            # half of step 1
    >>> steps.start("adapt")(1.0)           # step 2 done
    >>> steps.done()
    >>> seen[-1]
    (1.0, 'done')

    Parameters
    ----------
    progress : Progress or None
        The callback to drive; ``None`` makes every call a no-op.
    weights : sequence of float or int
        Relative cost of each step (an int ``n`` means ``n`` equal steps).
    """

    def __init__(self, progress: Progress | None, weights: Sequence[float] | int) -> None:
        if isinstance(weights, int):
            weights = [1.0] * weights
        weights = [float(w) for w in weights]
        if not weights or any(not w > 0 for w in weights):
            raise ValueError(f"progress step weights must be positive, got {weights}")
        total = sum(weights)
        self._progress = progress
        self._starts = [sum(weights[:i]) / total for i in range(len(weights))]
        self._sizes = [w / total for w in weights]
        self._index = -1
        self._message = ""
        self._last = 0.0

    def _report(self, fraction: float, message: str) -> None:
        fraction = min(1.0, max(self._last, fraction))
        self._last = fraction
        if self._progress is not None:
            self._progress(fraction, message)

    def start(self, message: str) -> Callable[[float], None]:
        """Begin the next step; returns ``sub(fraction_of_this_step)``."""
        self._index += 1
        if self._index >= len(self._starts):
            raise ValueError(f"more steps started than the {len(self._starts)} declared")
        index, self._message = self._index, message
        self._report(self._starts[index], message)

        def sub(fraction: float) -> None:
            f = min(1.0, max(0.0, float(fraction)))
            self._report(self._starts[index] + f * self._sizes[index], message)

        return sub

    def done(self, message: str = "done") -> None:
        """Report completion."""
        self._report(1.0, message)
