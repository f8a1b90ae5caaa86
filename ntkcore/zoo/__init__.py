"""Model zoo: architectures, deterministic training and a safe checkpoint cache.

>>> from ntkcore import zoo
>>> zoo.available()[:3]
['mlp', 'hetero-mlp', 'lenet3']
>>> net = zoo.create("mlp", width=40, depth=3, activation="tanh")

* :func:`available`, :func:`create`, :func:`info` - the architecture registry;
* :func:`train` - seeded training from tensors (MSE, heteroscedastic Gaussian NLL,
  cross-entropy) with a progress callback;
* :func:`pretrained` / :func:`fetch` - a source model trained on an ``ntkcore.data`` task on
  first use and cached under ``$NTKCORE_CACHE`` as safetensors + JSON (never pickle);
* :data:`PRESETS` - the models the app offers; ``python -m ntkcore.zoo build`` trains them.
"""

from ntkcore.zoo.architectures import (
    MLP,
    AlexNet,
    HeteroscedasticMLP,
    LeNet3,
    PreResNet,
    WideResNet,
    softplus_scale,
)
from ntkcore.zoo.cache import CacheCorruptionWarning, cache_root
from ntkcore.zoo.presets import PRESETS, Preset, preset, presets_for
from ntkcore.zoo.pretraining import PretrainedEntry, TaskLike, fetch, pretrained
from ntkcore.zoo.registry import ArchInfo, available, create, info, spec
from ntkcore.zoo.training import LOSSES, TrainRecord, evaluate_loss, seeded, train

__all__ = [
    "LOSSES",
    "MLP",
    "PRESETS",
    "AlexNet",
    "ArchInfo",
    "CacheCorruptionWarning",
    "HeteroscedasticMLP",
    "LeNet3",
    "PreResNet",
    "Preset",
    "PretrainedEntry",
    "TaskLike",
    "TrainRecord",
    "WideResNet",
    "available",
    "cache_root",
    "create",
    "evaluate_loss",
    "fetch",
    "info",
    "preset",
    "presets_for",
    "seeded",
    "pretrained",
    "softplus_scale",
    "spec",
    "train",
]
