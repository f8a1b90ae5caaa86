"""Registry of the zoo's architectures: names, metadata and validated construction."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ntkcore.zoo.architectures import (
    MLP,
    AlexNet,
    ConvAutoencoder,
    HeteroscedasticMLP,
    LeNet3,
    PreResNet,
    WideResNet,
)

__all__ = ["ArchInfo", "ArchSpec", "available", "create", "info", "spec"]

TaskKwargs = Callable[[tuple[int, ...], int], dict[str, Any]]


@dataclass(frozen=True)
class ArchSpec:
    """How to build one registered architecture.

    Attributes
    ----------
    name : str
        Registry name.
    cls : type of nn.Module
        Architecture class.
    fixed : Mapping
        Constructor arguments bound by the name (e.g. ``depth=20`` for ``preresnet20``);
        they cannot be overridden.
    description : str
        One-line description for menus.
    outputs : str
        What the output columns mean.
    kinds : frozenset of str
        Task kinds the network can be trained for ("regression", "classification").
    task_kwargs : callable
        ``(input_shape, output_dim) -> kwargs`` fitting the network to a dataset.
    train_defaults : Mapping
        Training hyperparameters used by :func:`ntkcore.zoo.pretrained` unless overridden.
    """

    name: str
    cls: type[nn.Module]
    fixed: Mapping[str, Any]
    description: str
    outputs: str
    kinds: frozenset[str]
    task_kwargs: TaskKwargs
    train_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """Default value of every keyword the user may pass to :func:`create`."""
        params = inspect.signature(self.cls.__init__).parameters
        return {
            k: p.default
            for k, p in params.items()
            if k != "self" and k not in self.fixed and p.default is not inspect.Parameter.empty
        }

    def resolve(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated by ``kwargs``; unknown keywords raise ``ValueError``."""
        defaults = self.defaults
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown keyword(s) {unknown} for architecture {self.name!r}; "
                f"accepted: {sorted(defaults)}"
            )
        resolved = {**defaults, **kwargs}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


@dataclass(frozen=True)
class ArchInfo:
    """Metadata of an architecture for given keyword arguments.

    Attributes
    ----------
    name, description, outputs : str
        Registry name, description and meaning of the output columns.
    input_shape : tuple of int
        Shape of one input sample (the network takes ``(n, *input_shape)``).
    output_dim : int
        Number of outputs per sample (the network returns ``(n, output_dim)``).
    num_params : int
        Number of trainable parameters ``p`` (the width of the Jacobian).
    kwargs : dict
        Fully resolved constructor keywords.
    kinds : tuple of str
        Task kinds the network can be trained for.
    """

    name: str
    description: str
    outputs: str
    input_shape: tuple[int, ...]
    output_dim: int
    num_params: int
    kwargs: dict[str, Any]
    kinds: tuple[str, ...]


def _vector_input(shape: tuple[int, ...], name: str) -> int:
    if len(shape) != 1:
        raise ValueError(f"{name} needs vector inputs of shape (d,), the dataset has {shape}")
    return shape[0]


def _square_image(shape: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(
            f"{name} needs square images of shape (channels, size, size), the dataset has {shape}"
        )
    return shape[0], shape[1]


def _mlp_task(shape: tuple[int, ...], out: int) -> dict[str, Any]:
    return {"in_features": _vector_input(shape, "mlp"), "out_features": out}


def _lenet_task(shape: tuple[int, ...], out: int) -> dict[str, Any]:
    channels, size = _square_image(shape, "lenet3")
    return {"in_channels": channels, "in_size": size, "out_features": out}


def _resnet_task(shape: tuple[int, ...], out: int) -> dict[str, Any]:
    channels, size = _square_image(shape, "a residual network")
    return {"in_channels": channels, "in_size": size, "num_classes": out}


def _autoencoder_task(shape: tuple[int, ...], out: int) -> dict[str, Any]:
    channels, size = _square_image(shape, "autoencoder")
    if out != channels * size * size:
        raise ValueError(
            f"autoencoder reconstructs its input: it needs {channels * size * size} outputs "
            f"(channels x size x size), the task has {out}"
        )
    return {"in_channels": channels, "in_size": size}


def _alexnet_task(shape: tuple[int, ...], out: int) -> dict[str, Any]:
    if tuple(shape) != (3, 32, 32):
        raise ValueError(f"alexnet needs 32x32 RGB images (3, 32, 32), the dataset has {shape}")
    return {"num_classes": out}


_REGRESSION = frozenset({"regression"})
#: Unsupervised: the targets are the flattened inputs (mean squared reconstruction error).
_RECONSTRUCTION = frozenset({"reconstruction"})
_CLASSIFICATION = frozenset({"classification"})
_BOTH = _REGRESSION | _CLASSIFICATION
_MLP_TRAIN = {"epochs": 2000, "lr": 1e-2, "batch_size": None, "schedule": "cosine"}
_CNN_TRAIN = {"epochs": 10, "lr": 1e-3, "batch_size": 128, "schedule": "cosine"}
_AUTOENCODER_TRAIN = {"epochs": 30, "lr": 2e-3, "batch_size": 128, "schedule": "cosine",
                      "loss": "mse"}
_CIFAR_TRAIN = {
    "epochs": 30,
    "lr": 1e-3,
    "batch_size": 128,
    "schedule": "cosine",
    "weight_decay": 5e-4,
}

_SPECS: dict[str, ArchSpec] = {
    s.name: s
    for s in (
        ArchSpec(
            "mlp",
            MLP,
            {},
            "Fully connected network (width x depth hidden units; tanh, relu or gelu)",
            "out_features regression values or class logits",
            _BOTH,
            _mlp_task,
            _MLP_TRAIN,
        ),
        ArchSpec(
            "hetero-mlp",
            HeteroscedasticMLP,
            {},
            "Heteroscedastic fully connected network: a mean and a scale per target",
            "out_features means, then out_features raw scales (std = softplus(raw) + 1e-4)",
            _REGRESSION,
            _mlp_task,
            _MLP_TRAIN,
        ),
        ArchSpec(
            "lenet3",
            LeNet3,
            {},
            "LeNet: two 5x5 convolutions with max pooling and one hidden dense layer",
            "out_features regression values or class logits",
            _BOTH,
            _lenet_task,
            _CNN_TRAIN,
        ),
        ArchSpec(
            "autoencoder",
            ConvAutoencoder,
            {},
            "Convolutional autoencoder (two strided 5x5 convolutions, a 16-unit code): "
            "trained without labels",
            "reconstructed pixels, flattened (channels x size x size); loss: mean squared error",
            _RECONSTRUCTION,
            _autoencoder_task,
            _AUTOENCODER_TRAIN,
        ),
        ArchSpec(
            "preresnet20",
            PreResNet,
            {"depth": 20},
            "Pre-activation ResNet-20 (basic blocks) for 32x32 images",
            "num_classes logits",
            _CLASSIFICATION,
            _resnet_task,
            _CIFAR_TRAIN,
        ),
        ArchSpec(
            "preresnet56",
            PreResNet,
            {"depth": 56},
            "Pre-activation ResNet-56 (bottleneck blocks) for 32x32 images",
            "num_classes logits",
            _CLASSIFICATION,
            _resnet_task,
            _CIFAR_TRAIN,
        ),
        ArchSpec(
            "preresnet110",
            PreResNet,
            {"depth": 110},
            "Pre-activation ResNet-110 (bottleneck blocks) for 32x32 images",
            "num_classes logits",
            _CLASSIFICATION,
            _resnet_task,
            _CIFAR_TRAIN,
        ),
        ArchSpec(
            "wrn16-4",
            WideResNet,
            {"depth": 16, "widen_factor": 4},
            "Wide ResNet WRN-16-4 for 32x32 images",
            "num_classes logits",
            _CLASSIFICATION,
            _resnet_task,
            _CIFAR_TRAIN,
        ),
        ArchSpec(
            "alexnet",
            AlexNet,
            {},
            "AlexNet sized for CIFAR (32x32x3 inputs)",
            "num_classes logits",
            _CLASSIFICATION,
            _alexnet_task,
            _CIFAR_TRAIN,
        ),
    )
}


def available() -> list[str]:
    """Names of the registered architectures, in registry order."""
    return list(_SPECS)


def spec(name: str) -> ArchSpec:
    """The :class:`ArchSpec` registered as ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the available names.
    """
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(f"unknown architecture {name!r}; available: {available()}")
    return _SPECS[name]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a freshly initialized network.

    Parameters
    ----------
    name : str
        Registered architecture name (see :func:`available`).
    **kwargs
        Constructor keywords of the architecture (see :func:`info` for the defaults).

    Returns
    -------
    nn.Module
        The network in training mode on the CPU, initialized from the global torch RNG
        (seed it, or use :func:`ntkcore.zoo.pretrained`, for reproducible weights).

    Raises
    ------
    ValueError
        For an unknown name, an unknown keyword or an invalid value.
    """
    s = spec(name)
    return s.cls(**s.resolve(kwargs), **s.fixed)


def info(name: str, **kwargs: Any) -> ArchInfo:
    """Metadata of architecture ``name`` built with ``kwargs`` (no weights are allocated).

    Examples
    --------
    >>> from ntkcore import zoo
    >>> zoo.info("mlp", width=40, depth=3).num_params
    3401
    """
    s = spec(name)
    resolved = s.resolve(kwargs)
    with torch.device("meta"):
        model = s.cls(**resolved, **s.fixed)
    return ArchInfo(
        name=name,
        description=s.description,
        outputs=s.outputs,
        input_shape=tuple(model.input_shape),
        output_dim=int(model.output_dim),
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        kwargs=resolved,
        kinds=tuple(sorted(s.kinds)),
    )
