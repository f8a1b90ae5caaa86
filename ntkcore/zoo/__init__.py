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
* :data:`PRESETS` - the models the app offers; ``python -m ntkcore.zoo build`` trains them;
* :func:`load_model` / :func:`save_model` / :func:`check_input_shape` - your own model, from
  safetensors weights of a zoo architecture or a ``torch.export`` program, never unpickled.
"""

from ntkcore.zoo.architectures import (
    MLP,
    AlexNet,
    ConvAutoencoder,
    HeteroscedasticMLP,
    LeNet3,
    PreResNet,
    WideResNet,
    softplus_scale,
)
from ntkcore.zoo.cache import CacheCorruptionWarning, cache_root
from ntkcore.zoo.loading import ExportedModel, check_input_shape, load_model, save_model
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
    "ConvAutoencoder",
    "CacheCorruptionWarning",
    "ExportedModel",
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
    "check_input_shape",
    "create",
    "evaluate_loss",
    "fetch",
    "info",
    "load_model",
    "preset",
    "presets_for",
    "save_model",
    "seeded",
    "pretrained",
    "softplus_scale",
    "spec",
    "train",
]
