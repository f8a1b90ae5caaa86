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

__all__ = ["DEFAULT_PRESETS", "HEAD", "Source", "load_source"]

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
        Zoo architecture; default (and any arch equal to the preset's) the dataset's zoo
        preset with its hyperparameters, otherwise ``zoo.fetch(arch, dataset, seed)`` with
        the architecture's default training configuration.
    seed : int
        Training seed of the network (0 is the preset's cached network).
    device : torch.device or str, optional
        Where the network lives (default CPU).
    progress : callable, optional
        Fraction-only training progress (called once with 1.0 on a cache hit).

    Raises
    ------
    ValueError
        For an unknown dataset or an architecture that does not fit it.
    """
    if dataset not in DEFAULT_PRESETS:
        raise ValueError(
            f"unknown dataset {dataset!r} for the adaptation experiments; available: "
            f"{sorted(DEFAULT_PRESETS)}"
        )
    preset = zoo.preset(DEFAULT_PRESETS[dataset])
    task = data.load(dataset, seed=0, **dict(preset.data_kw))
    if arch is None or arch == preset.arch:
        arch, hyper, data_kw = preset.arch, dict(preset.hyper), dict(preset.data_kw)
        name = preset.id if seed == preset.seed else f"{preset.id}@seed{seed}"
    else:
        hyper, data_kw, name = {}, {}, f"{arch}@{dataset}"
    entry = zoo.fetch(arch, dataset, seed, task=task, data_kw=data_kw, device=device,
                      progress=progress, **hyper)
    model = entry.model
    if isinstance(model, zoo.HeteroscedasticMLP):
        model = model.mean_model()  # adapt the mean; the scale output is not a target
    training = {k: entry.metadata["train"][k] for k in _BUDGET_KEYS}
    return Source(model=model, task=task, training=training, name=name, arch=arch, seed=seed,
                  from_cache=entry.from_cache)
