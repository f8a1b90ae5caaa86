"""The source side of a transfer experiment: the trained network, its data and its budget.

Every adaptation method of :mod:`ntkcore.experiments.methods` starts from the same
:class:`Source` — the network trained on the source task (Algorithm 1's θ_MLE), the source
data (what the transferred RBF GP and ABLR fit their hyperparameters on) and the source
training configuration (the "training budget" the retraining baselines reuse).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore import data, zoo

__all__ = ["DEFAULT_PRESETS", "HEAD", "Source", "check_arch", "load_source", "train_source"]

#: The zoo preset whose network a dataset's experiments adapt by default.
DEFAULT_PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "sinusoids": "sinusoids-mlp",
        "linear-to-sine": "linear-to-sine-mlp",
        "toy-gap": "toy-gap-mlp",
        "spatial": "spatial-hetero-mlp",
        "faces-rotation": "faces-rotation-lenet3",
    }
)

#: Parameter patterns of the read-out layer ``head`` (also inside a wrapper such as the
#: heteroscedastic network's mean module, where it is ``net.head``).
HEAD = ("head", "*.head.*")

#: Training keywords of :func:`ntkcore.zoo.train` that define the source "budget".
_BUDGET_KEYS = ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "schedule")


@dataclass(frozen=True, eq=False)
class Source:
    """A trained source network with the data and the budget it was trained with.

    Parameters
    ----------
    model : nn.Module
        The trained network in eval mode. Its outputs are the regression targets being
        adapted: for the heteroscedastic spatial network this is its mean module
        (:meth:`~ntkcore.zoo.HeteroscedasticMLP.mean_model`), whose parameters are the
        network's own.
    task : ntkcore.data.Task
        A task whose ``source`` split the network was trained on (any target seed: the
        source split does not depend on it).
    training : mapping
        The source training configuration reused by the retraining baselines:
        ``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``weight_decay``, ``schedule``
        (as for :func:`ntkcore.zoo.train`; the loss is always least squares).
    name : str
        Where the network came from (a zoo preset id or ``arch@dataset``).
    arch : str
        Zoo architecture name (``""`` when not from the zoo).
    seed : int
        The network's training seed.
    from_cache : bool
        Whether the weights were loaded from the checkpoint cache.
    """

    model: nn.Module
    task: data.Task
    training: Mapping[str, Any] = field(default_factory=dict)
    name: str = "custom"
    arch: str = ""
    seed: int = 0
    from_cache: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(self.model).__name__}")
        if not isinstance(self.task, data.Task):
            raise ValueError(f"task must be an ntkcore.data.Task, got {type(self.task).__name__}")
        if self.task.kind != "regression":
            raise ValueError(
                f"the adaptation methods are for regression; task {self.task.meta.name!r} is "
                f"{self.task.kind!r} (classification: ntkcore.experiments.classification)"
            )
        unknown = sorted(set(self.training) - set(_BUDGET_KEYS))
        if unknown:
            raise ValueError(f"unknown training keyword(s) {unknown}; accepted: {_BUDGET_KEYS}")
        training = {"epochs": 100, "lr": 1e-3, "batch_size": None, "optimizer": "adam",
                    "weight_decay": 0.0, "schedule": "cosine", **dict(self.training)}
        object.__setattr__(self, "training", MappingProxyType(training))
        self.model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dataset(self) -> str:
        return self.task.meta.name

    @property
    def source_data(self) -> tuple[Tensor, Tensor]:
        """The source split on the model's device and dtype."""
        x, y = self.task.source
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype)


def _choose(dataset: str, arch: str | None) -> tuple[zoo.Preset | None, str]:
    """The zoo preset (or None) and architecture name behind ``arch`` for ``dataset``."""
    if dataset not in DEFAULT_PRESETS:
        raise ValueError(
            f"unknown dataset {dataset!r} for the adaptation experiments; available: "
            f"{sorted(DEFAULT_PRESETS)}"
        )
    default = zoo.preset(DEFAULT_PRESETS[dataset])
    if arch is None or arch == default.arch:
        return default, default.arch
    by_id = {p.id: p for p in zoo.presets_for(dataset)}
    if arch in by_id:
        return by_id[arch], by_id[arch].arch
    if arch not in zoo.available():
        raise ValueError(
            f"arch must be a zoo architecture {zoo.available()} or a preset of {dataset!r} "
            f"{sorted(by_id)}, got {arch!r}"
        )
    return None, arch


def check_arch(dataset: str, arch: str | None) -> str:
    """Validate ``arch`` for ``dataset`` (see :func:`load_source`); returns the zoo
    architecture name. ``ValueError`` for an unknown dataset or architecture."""
    return _choose(dataset, arch)[1]


def load_source(
    dataset: str,
    arch: str | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
) -> Source:
    """The source network for ``dataset``: trained on first use, then from the zoo cache.

    Parameters
    ----------
    dataset : str
        One of :data:`DEFAULT_PRESETS` (the regression transfer tasks).
    arch : str, optional
        A zoo preset id of this dataset (``zoo.presets_for(dataset)``, e.g.
        ``"sinusoids-mlp-relu"``) or a zoo architecture name. Default (and the default
        preset's architecture) :data:`DEFAULT_PRESETS`'s preset with its hyperparameters;
        another architecture is trained by ``zoo.fetch(arch, dataset, seed)`` with its
        default configuration.
    seed : int
        Training seed of the network (the preset's own seed, 0, is its cached network).
    device : torch.device or str, optional
        Where the network lives (default CPU).
    progress : callable, optional
        Fraction-only training progress (called once with 1.0 on a cache hit).

    Raises
    ------
    ValueError
        For an unknown dataset or architecture, or one that does not fit the dataset.
    """
    preset, arch = _choose(dataset, arch)
    data_kw = dict(preset.data_kw) if preset is not None else {}
    task = data.load(dataset, seed=0, **data_kw)
    if preset is not None:
        hyper = dict(preset.hyper)
        name = preset.id if seed == preset.seed else f"{preset.id}@seed{seed}"
    else:
        hyper, name = {}, f"{arch}@{dataset}"
    entry = zoo.fetch(arch, dataset, seed, task=task, data_kw=data_kw, device=device,
                      progress=progress, **hyper)
    return _from_entry(entry, task, name, arch, seed)


def _from_entry(entry: zoo.PretrainedEntry, task: data.Task, name: str, arch: str,
                seed: int) -> Source:
    """The :class:`Source` of a trained zoo entry: its mean network and training budget."""
    model = entry.model
    if isinstance(model, zoo.HeteroscedasticMLP):
        model = model.mean_model()  # adapt the mean; the scale output is not a target
    training = {k: entry.metadata["train"][k] for k in _BUDGET_KEYS}
    return Source(model=model, task=task, training=training, name=name, arch=arch, seed=seed,
                  from_cache=entry.from_cache)


def train_source(
    task: data.Task,
    arch: str = "mlp",
    *,
    name: str = "custom",
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[float], None] | None = None,
    **hyper: Any,
) -> Source:
    """A :class:`Source` for a task of your own: a zoo architecture trained on its source split.

    What :func:`load_source` does for the built-in datasets, for any regression
    :class:`~ntkcore.data.Task` with a source split — e.g. ``data.from_csv(...)`` of an
    uploaded file with a domain column. The network is trained by :func:`ntkcore.zoo.fetch`
    on ``task.source`` (cached on disk under ``name``; the cache key includes a fingerprint of
    the source data, the architecture and every training keyword, so another file or
    configuration never reuses it), and its training configuration becomes the budget of the
    retraining baselines.

    Parameters
    ----------
    task : ntkcore.data.Task
        A regression task with a source split (``task.has_source``); its source split does
        not depend on the target seed for ``data.from_csv``, so any seed's task will do.
    arch : str
        A zoo architecture whose input fits the task (default ``"mlp"``).
    name : str
        The cache label and the source's name (the ``source`` column of the tables).
    seed : int
        Training seed (initialization and data order).
    device : torch.device or str, optional
        Where the network is trained and lives (default CPU).
    progress : callable, optional
        Fraction-only training progress (called once with 1.0 on a cache hit).
    **hyper
        Architecture and training keywords for :func:`ntkcore.zoo.fetch`, e.g.
        ``width=64, depth=2, activation="tanh", epochs=1000, lr=1e-2``.

    Raises
    ------
    ValueError
        If ``task`` is not a regression Task with a source split, or the architecture or a
        keyword is unknown or does not fit the task.
    """
    if not isinstance(task, data.Task):
        raise ValueError(f"task must be an ntkcore.data.Task, got {type(task).__name__}")
    if task.kind != "regression":
        raise ValueError(
            f"the adaptation methods are for regression; task {task.meta.name!r} is "
            f"{task.kind!r}"
        )
    if not task.has_source:
        raise ValueError(
            f"task {task.meta.name!r} has no source split (target data only): a source network "
            "needs source data to train on (give the CSV file a domain column, or a second "
            "file with the source rows)"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    entry = zoo.fetch(arch, name, seed, task=task, device=device, progress=progress, **hyper)
    return _from_entry(entry, task, name, arch, seed)
