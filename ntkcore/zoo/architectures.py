"""Network architectures of the model zoo.

Every architecture follows three conventions that the rest of ``ntkcore`` relies on:

* ``forward`` maps a batch ``(n, *input_shape)`` to a 2-D output ``(n, output_dim)``, so a
  :class:`~ntkcore.linearization.Linearization` sees one output vector per sample;
* the final linear read-out is the submodule ``head`` (parameter names ``head.weight`` and
  ``head.bias``), so "retrain / linearize only the last layer" is the parameter filter
  ``"head"`` for every network;
* the per-sample input shape and the output dimension are exposed as the attributes
  ``input_shape`` and ``output_dim``.

The convolutional networks are the CIFAR variants used for the timing study of Maddox et al.
(2021, Figure 2 right, and Figure 4): pre-activation ResNets (He et al., 2016), a wide
ResNet (Zagoruyko & Komodakis, 2016) and a CIFAR-sized AlexNet (Krizhevsky et al., 2012).
``LeNet3`` is the small LeNet (LeCun et al., 1998) used for the Jacobian-similarity study
(Section 4) and the image pose task (Section 5).  No in-place operations are used, so every
network can be differentiated with ``torch.func`` transforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ConvAutoencoder",
    "SCALE_FLOOR",
    "MLP",
    "HeteroscedasticMLP",
    "LeNet3",
    "PreResNet",
    "WideResNet",
    "AlexNet",
    "softplus_scale",
]

#: Activation functions accepted by the fully connected and LeNet architectures.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

#: Lower bound added to the softplus of the raw scale output of a heteroscedastic network.
SCALE_FLOOR = 1e-4


def softplus_scale(raw: torch.Tensor) -> torch.Tensor:
    """Map the raw scale output of a heteroscedastic network to a standard deviation.

    Parameters
    ----------
    raw : torch.Tensor
        Unconstrained network output.

    Returns
    -------
    torch.Tensor
        ``softplus(raw) + SCALE_FLOOR``, strictly positive.
    """
    return F.softplus(raw) + SCALE_FLOOR


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Fully connected networks
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected network ``in_features -> width x depth -> out_features``.

    Parameters
    ----------
    in_features : int
        Input dimension.
    out_features : int
        Output dimension.
    width : int or sequence of int
        Number of units of every hidden layer, or one number per hidden layer (a sequence of
        ``depth`` widths: the equal-size, differently shaped tanh networks of Figure 3 right,
        e.g. ``width=(10, 1000, 10)``).
    depth : int
        Number of hidden layers (each a ``Linear`` followed by the activation).  ``depth=3``
        is the "three-layer tanh MLP" of the sinusoid experiments (Maddox et al., 2021,
        Section 5, Figure 6).
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer non-linearity.

    Notes
    -----
    Hidden layers are ``body.0, body.2, ...``; the read-out is ``head``.
    """

    def __init__(
        self,
        in_features: int = 1,
        out_features: int = 1,
        width: int | Sequence[int] = 40,
        depth: int = 3,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        in_features = _positive_int(in_features, "in_features")
        out_features = _positive_int(out_features, "out_features")
        depth = _positive_int(depth, "depth")
        if isinstance(width, Sequence) and not isinstance(width, str):
            if len(width) != depth:
                raise ValueError(
                    f"width must be one integer or {depth} (depth) per-layer widths, got "
                    f"{list(width)!r}"
                )
            widths = [_positive_int(w, "width") for w in width]
        else:
            widths = [_positive_int(width, "width")] * depth
        layers: list[nn.Module] = []
        fan_in = in_features
        for layer_width in widths:
            layers += [nn.Linear(fan_in, layer_width), _activation(activation)]
            fan_in = layer_width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, out_features)
        self.input_shape: tuple[int, ...] = (in_features,)
        self.output_dim = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class HeteroscedasticMLP(MLP):
    """Fully connected network predicting a mean and a (raw) scale per output.

    The forward pass returns ``(n, 2 * out_features)``: columns ``[:out_features]`` are the
    predictive mean and columns ``[out_features:]`` the raw scale, mapped to a standard
    deviation by :func:`softplus_scale`.  Trained with the Gaussian negative log likelihood,
    this is the heteroscedastic network of the malaria experiment (Maddox et al., 2021,
    Section 5, "Malaria Incidence Prediction"; two spatial inputs, longitude and latitude).

    Parameters
    ----------
    in_features, out_features, width, depth, activation
        As for :class:`MLP`; ``out_features`` counts the regression targets, so the network
        has ``2 * out_features`` outputs.
    """

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        width: int = 64,
        depth: int = 3,
        activation: str = "tanh",
    ) -> None:
        out_features = _positive_int(out_features, "out_features")
        super().__init__(in_features, 2 * out_features, width, depth, activation)
        self.num_targets = out_features

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split a forward output into ``(mean, std)``, each of shape ``(n, out_features)``."""
        mean, raw = output[..., : self.num_targets], output[..., self.num_targets :]
        return mean, softplus_scale(raw)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictive mean and standard deviation at ``x``."""
        return self.split(self(x))

    def mean_model(self) -> nn.Module:
        """A module sharing this network's parameters that outputs only the mean columns.

        Linearizing it gives the finite NTK of the mean function alone (the quantity adapted
        in the malaria experiment).  Parameter names gain the prefix ``net.``.
        """
        return _MeanOutput(self)


class _MeanOutput(nn.Module):
    """Mean columns of a :class:`HeteroscedasticMLP` (parameters shared, not copied)."""

    def __init__(self, net: HeteroscedasticMLP) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape
        self.output_dim = net.num_targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[..., : self.net.num_targets]


# --------------------------------------------------------------------------------------------
# LeNet
# --------------------------------------------------------------------------------------------


class LeNet3(nn.Module):
    """LeNet (LeCun et al., 1998) for square single- or multi-channel images.

    Two 5x5 convolutions, each followed by the activation and 2x2 max pooling, one hidden
    fully connected layer (the three feature layers) and a linear read-out ``head``.

    Parameters
    ----------
    in_size : int
        Height and width of the (square) input images: 28 for MNIST / Fashion-MNIST, 45 for
        the rotated-faces pose task.  Must be at least 16.
    in_channels : int
        Number of image channels.
    out_features : int
        Number of outputs: classes (logits) or regression targets.
    channels : tuple of int
        Output channels of the two convolutions.
    hidden : int
        Units of the hidden fully connected layer.
    activation : {"relu", "tanh", "gelu"}
        Non-linearity.
    """

    def __init__(
        self,
        in_size: int = 28,
        in_channels: int = 1,
        out_features: int = 10,
        channels: tuple[int, int] = (6, 16),
        hidden: int = 120,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        in_size = _positive_int(in_size, "in_size")
        in_channels = _positive_int(in_channels, "in_channels")
        out_features = _positive_int(out_features, "out_features")
        hidden = _positive_int(hidden, "hidden")
        channels = tuple(channels)
        if len(channels) != 2:
            raise ValueError(f"channels must be a pair of positive integers, got {channels!r}")
        c1, c2 = (_positive_int(c, "channels[i]") for c in channels)
        side = ((in_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"in_size must be at least 16 for two 5x5 convolutions, got {in_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),
            _activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            _activation(activation),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            _activation(activation),
        )
        self.head = nn.Linear(hidden, out_features)
        self.input_shape = (in_channels, in_size, in_size)
        self.output_dim = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder for square images (trained without labels).

    ``encoder``: two 5×5 stride-2 convolutions (ReLU), a hidden dense layer (ReLU) and a
    linear code layer; ``decoder``: dense (ReLU), dense (ReLU) and the read-out ``head`` to
    the pixels (sigmoid, as pixels lie in [0, 1]). The forward pass returns the flattened
    reconstruction, shape (n, channels · size²), trained with the mean squared error against
    the flattened input. The encoder is the unsupervised feature extractor of Table 1's
    setting (Maddox et al., 2021, Section 5, "Transferring Unsupervised Models").

    Parameters
    ----------
    in_size : int
        Height and width of the images (at least 13).
    in_channels : int
        Image channels.
    code : int
        Code (bottleneck) width.
    channels : tuple of int
        Output channels of the two convolutions.
    hidden : int
        Units of the encoder's and the decoder's hidden dense layers.
    """

    def __init__(
        self,
        in_size: int = 28,
        in_channels: int = 1,
        code: int = 16,
        channels: tuple[int, int] = (8, 16),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        in_size = _positive_int(in_size, "in_size")
        in_channels = _positive_int(in_channels, "in_channels")
        code = _positive_int(code, "code")
        hidden = _positive_int(hidden, "hidden")
        channels = tuple(channels)
        if len(channels) != 2:
            raise ValueError(f"channels must be a pair of positive integers, got {channels!r}")
        c1, c2 = (_positive_int(c, "channels[i]") for c in channels)
        side = ((in_size - 5) // 2 + 1 - 5) // 2 + 1
        if in_size < 13 or side < 1:
            raise ValueError(f"in_size must be at least 13 for two 5x5 stride-2 convolutions, "
                             f"got {in_size}")
        pixels = in_channels * in_size * in_size
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, stride=2),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=5, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, code),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, 4 * hidden), nn.ReLU()
        )
        self.head = nn.Linear(4 * hidden, pixels)
        self.input_shape = (in_channels, in_size, in_size)
        self.output_dim = pixels
        self.code = code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.decoder(self.encoder(x))))


# --------------------------------------------------------------------------------------------
# CIFAR-style residual networks
# --------------------------------------------------------------------------------------------


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _init_conv_bn(module: nn.Module) -> None:
    """He initialization for convolutions, unit/zero affine BatchNorm (He et al., 2016)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PreActBasicBlock(nn.Module):
    """Pre-activation basic block: (BN-ReLU-conv3x3) x 2 plus identity / 1x1 shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class _PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block: BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PreResNet(nn.Module):
    """Pre-activation ResNet for 32x32 images (He et al., 2016, "Identity Mappings").

    The CIFAR layout of the reference implementation used by Maddox et al. (2021): a 3x3
    stem with 16 channels, three stages of 16/32/64 planes (strides 1, 2, 2), final
    BN-ReLU, global average pooling and the read-out ``head``.  Depths below 44 use basic
    blocks (``depth = 6n + 2``: 20, 32, ...); deeper networks use bottleneck blocks
    (``depth = 9n + 2``: 56, 110, ...).

    Parameters
    ----------
    depth : int
        Number of weight layers (20, 56 and 110 are registered in the zoo).
    num_classes : int
        Number of output logits.
    in_channels : int
        Number of image channels.
    in_size : int
        Height and width of the input images (global pooling makes any size >= 8 work; the
        registered networks document 32).
    """

    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, in_size: int = 32
    ) -> None:
        super().__init__()
        depth = _positive_int(depth, "depth")
        num_classes = _positive_int(num_classes, "num_classes")
        in_channels = _positive_int(in_channels, "in_channels")
        in_size = _positive_int(in_size, "in_size")
        if in_size < 8:
            raise ValueError(f"in_size must be at least 8 for three stages, got {in_size}")
        block: type[_PreActBasicBlock] | type[_PreActBottleneck]
        if depth >= 44:
            if (depth - 2) % 9:
                raise ValueError(f"bottleneck PreResNet depth must be 9n+2 (56, 110), got {depth}")
            n, block = (depth - 2) // 9, _PreActBottleneck
        else:
            if (depth - 2) % 6 or depth < 8:
                raise ValueError(f"basic-block PreResNet depth must be 6n+2 (20, 32), got {depth}")
            n, block = (depth - 2) // 6, _PreActBasicBlock
        self.stem = _conv3x3(in_channels, 16)
        planes_in = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(block(planes_in, planes, stride if i == 0 else 1))
                planes_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes_in)
        self.head = nn.Linear(planes_in, num_classes)
        _init_conv_bn(self)
        self.input_shape = (in_channels, in_size, in_size)
        self.output_dim = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.head(out.mean(dim=(-2, -1)))


class _WideBasicBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv3x3 (strided), dropout, BN-ReLU-conv3x3."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(self.dropout(out))))
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nn.Module):
    """Wide residual network WRN-depth-k for 32x32 images (Zagoruyko & Komodakis, 2016).

    Parameters
    ----------
    depth : int
        ``6n + 4`` weight layers (16 for WRN-16-4).
    widen_factor : int
        Width multiplier ``k``: stages have ``16k, 32k, 64k`` channels.
    num_classes : int
        Number of output logits.
    dropout : float
        Dropout rate inside the blocks (inactive in eval mode, hence in linearizations).
    in_channels, in_size : int
        Input channels and image size.
    """

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 4,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
        in_size: int = 32,
    ) -> None:
        super().__init__()
        depth = _positive_int(depth, "depth")
        widen_factor = _positive_int(widen_factor, "widen_factor")
        num_classes = _positive_int(num_classes, "num_classes")
        in_channels = _positive_int(in_channels, "in_channels")
        in_size = _positive_int(in_size, "in_size")
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 28, ...), got {depth}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if in_size < 8:
            raise ValueError(f"in_size must be at least 8 for three stages, got {in_size}")
        n = (depth - 4) // 6
        self.stem = _conv3x3(in_channels, 16)
        planes_in = 16
        stages = []
        for planes, stride in (
            (16 * widen_factor, 1),
            (32 * widen_factor, 2),
            (64 * widen_factor, 2),
        ):
            blocks = []
            for i in range(n):
                blocks.append(_WideBasicBlock(planes_in, planes, stride if i == 0 else 1, dropout))
                planes_in = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes_in)
        self.head = nn.Linear(planes_in, num_classes)
        _init_conv_bn(self)
        self.input_shape = (in_channels, in_size, in_size)
        self.output_dim = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.stages(self.stem(x))))
        return self.head(out.mean(dim=(-2, -1)))


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012) sized for 32x32x3 CIFAR images.

    Five convolutions (64, 192, 384, 256, 256 channels; the first 11x11 with stride 4) with
    three 2x2 max-pooling stages reduce a 32x32 image to a 256-dimensional feature vector,
    followed by the linear read-out ``head`` (the CIFAR variant of the reference
    implementations used by Maddox et al., 2021, Figure 2 right).

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        num_classes = _positive_int(num_classes, "num_classes")
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(256, num_classes)
        self.input_shape = (3, 32, 32)
        self.output_dim = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
