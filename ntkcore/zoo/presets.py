"""The pretrained source models the app offers, defined in one place.

``python -m ntkcore.zoo build --preset workshop`` trains every entry of a preset group ahead
of time; the app calls :meth:`Preset.load` and trains on first use if the cache is cold.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ntkcore.zoo.cache import CheckpointStore
from ntkcore.zoo.pretraining import PretrainedEntry, TaskLike, fetch, load_task, resolve

__all__ = ["PRESETS", "Preset", "preset", "presets_for"]


@dataclass(frozen=True)
class Preset:
    """A named pretrained source model.

    Attributes
    ----------
    id : str
        Unique identifier (``"<dataset>-<arch>"``).
    arch, dataset : str
        Zoo architecture and ``ntkcore.data`` dataset names.
    description : str
        One line for menus and ``--list``.
    hyper : Mapping
        Architecture keywords and training hyperparameters passed to
        :func:`ntkcore.zoo.pretrained`.
    data_kw : Mapping
        Keywords for ``ntkcore.data.load``.
    seed : int
        Training seed.
    listed : bool
        Whether app menus offer it (:func:`presets_for`); ``False`` for replicates that a page
        uses in bulk, e.g. the Jacobian-similarity page's LeNet-3s on MNIST halves.
    """

    id: str
    arch: str
    dataset: str
    description: str
    hyper: Mapping[str, Any] = field(default_factory=dict)
    data_kw: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    listed: bool = True

    def fetch(
        self,
        *,
        task: TaskLike | None = None,
        progress: Callable[[float], None] | None = None,
        device: torch.device | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        retrain: bool = False,
    ) -> PretrainedEntry:
        """The pretrained entry (model and provenance); trains and caches on first use."""
        return fetch(
            self.arch,
            self.dataset,
            self.seed,
            task=task,
            data_kw=dict(self.data_kw),
            progress=progress,
            device=device,
            cache_dir=cache_dir,
            retrain=retrain,
            **self.hyper,
        )

    def is_cached(self, *, cache_dir: str | os.PathLike[str] | None = None) -> bool:
        """Whether the trained weights are in the checkpoint cache (loading takes ms)."""
        task = load_task(self.dataset, dict(self.data_kw))
        r = resolve(self.arch, self.dataset, task, self.seed, self.data_kw, **self.hyper)
        return CheckpointStore(cache_dir).contains(r.stem)

    def load(
        self,
        *,
        task: TaskLike | None = None,
        progress: Callable[[float], None] | None = None,
        device: torch.device | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> nn.Module:
        """The trained network in eval mode (see :meth:`fetch`)."""
        return self.fetch(task=task, progress=progress, device=device, cache_dir=cache_dir).model


def _frozen(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(kw)


_WORKSHOP = (
    Preset(
        "sinusoids-mlp",
        "mlp",
        "sinusoids",
        "Three-layer tanh MLP (40 units) trained on one sinusoid task: the Adapt page's source",
        _frozen(width=40, depth=3, activation="tanh", epochs=1500, lr=1e-2),
    ),
    Preset(
        "sinusoids-mlp-relu",
        "mlp",
        "sinusoids",
        "Two-layer ReLU MLP (100 units) trained on one sinusoid task",
        _frozen(width=100, depth=2, activation="relu", epochs=1500, lr=1e-2),
    ),
    Preset(
        "sinusoids-mlp-gelu-wide",
        "mlp",
        "sinusoids",
        "One-layer GELU MLP (1,000 units) trained on one sinusoid task",
        _frozen(width=1000, depth=1, activation="gelu", epochs=1500, lr=1e-2),
    ),
    Preset(
        "linear-to-sine-mlp",
        "mlp",
        "linear-to-sine",
        "Three-layer tanh MLP (40 units) trained on linear functions, adapted to sinusoids",
        _frozen(width=40, depth=3, activation="tanh", epochs=1500, lr=1e-2),
    ),
    Preset(
        "toy-gap-mlp",
        "mlp",
        "toy-gap",
        "One-hidden-layer ReLU MLP (512 units) on the 1-D data with a gap (Figure 3)",
        _frozen(width=512, depth=1, activation="relu", epochs=1500, lr=1e-2),
    ),
    Preset(
        "spatial-hetero-mlp",
        "hetero-mlp",
        "spatial",
        "Heteroscedastic three-layer tanh MLP (64 units) on the earlier spatial map",
        _frozen(width=64, depth=3, activation="tanh", epochs=2000, lr=5e-3),
    ),
    Preset(
        "faces-rotation-lenet3",
        "lenet3",
        "faces-rotation",
        "LeNet on 45x45 rotated faces (20 identities): standardized rotation angle",
        _frozen(in_size=45, epochs=40, lr=1e-3, batch_size=64),
    ),
    Preset(
        "mnist-lenet3",
        "lenet3",
        "mnist",
        "LeNet classifier on MNIST digits (28x28)",
        _frozen(in_size=28, epochs=20, lr=1e-3, batch_size=128),
    ),
    Preset(
        "fashion-mnist-lenet3",
        "lenet3",
        "fashion-mnist",
        "LeNet classifier on Fashion-MNIST (28x28)",
        _frozen(in_size=28, epochs=20, lr=1e-3, batch_size=128),
    ),
)

# The Jacobian-similarity page's default run (Figure 5, ``jacobian_similarity`` small preset):
# LeNet-3s on MNIST1, MNIST2 (``half=2``) and Fashion-MNIST with seeds 0-2. Seed 0 of MNIST1
# and Fashion are the menu entries above; the hyperparameters equal the experiment's
# ``TRAINING`` (tests/test_similarity_page.py checks that both name the same cache entries).
_LENET_MNIST = _frozen(in_size=28, epochs=20, lr=1e-3, batch_size=128)
_SIMILARITY = tuple(
    Preset(
        f"{dataset}-lenet3-seed{seed}" if seed else f"{dataset}-lenet3",
        "lenet3",
        name,
        f"LeNet on {label} (seed {seed}): a Jacobian-similarity replicate",
        _LENET_MNIST,
        _frozen(**data_kw),
        seed,
        listed=False,
    )
    for dataset, name, data_kw, label in (
        ("mnist", "mnist", {}, "MNIST1"),
        ("mnist2", "mnist", {"half": 2}, "MNIST2"),
        ("fashion-mnist", "fashion-mnist", {}, "Fashion-MNIST"),
    )
    for seed in (0, 1, 2)
    if not (seed == 0 and dataset != "mnist2")  # mnist-lenet3, fashion-mnist-lenet3 above
)

#: Preset groups: name -> entries.  ``workshop`` is what the app offers on a laptop CPU.
PRESETS: Mapping[str, tuple[Preset, ...]] = MappingProxyType({"workshop": _WORKSHOP + _SIMILARITY})


def presets_for(dataset: str, group: str = "workshop") -> list[Preset]:
    """The presets of ``group`` trained on ``dataset`` (the app's architecture menu)."""
    if group not in PRESETS:
        raise ValueError(f"unknown preset group {group!r}; available: {sorted(PRESETS)}")
    return [p for p in PRESETS[group] if p.dataset == dataset and p.listed]


def preset(preset_id: str) -> Preset:
    """The preset with identifier ``preset_id`` (searched across all groups).

    Raises
    ------
    ValueError
        If there is no such preset; the message lists the identifiers.
    """
    entries = {p.id: p for group in PRESETS.values() for p in group}
    if preset_id not in entries:
        raise ValueError(f"unknown preset {preset_id!r}; available: {sorted(entries)}")
    return entries[preset_id]
