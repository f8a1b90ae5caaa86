"""Small reusable test networks and an independent dense-Jacobian reference.

Every model here is tiny (a few hundred parameters at most) so that dense float64
Jacobians from ``torch.func.jacrev`` are cheap, yet each one exercises a feature the
engine must handle: multiple outputs, BatchNorm running statistics, Dropout, tied
(shared) parameters, registered buffers used in the forward pass, a scalar output per
sample (o = 1) and image inputs of shape (n, c, h, w).

Use :data:`CASES` (or :func:`case`) to parametrize tests over all of them::

    from tests.models import CASES, dense_jacobian

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_something(case):
        model = case.build()            # float64, train mode, deterministic weights
        x = case.inputs(5)              # (5, *input_shape)
        J = dense_jacobian(model, x)    # (n, o, p), eval mode, named_parameters order

The reference deliberately does not import anything from :mod:`ntkcore`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

__all__ = [
    "CASES",
    "Case",
    "CNNWithBatchNorm",
    "DropoutMLP",
    "ScalarOutputMLP",
    "TiedWithBuffer",
    "autograd_jacobian",
    "case",
    "dense_jacobian",
    "dense_output",
    "make_mlp",
    "training_flags",
]


def make_mlp(in_dim: int = 3, hidden: int = 8, out_dim: int = 2, depth: int = 2) -> nn.Sequential:
    """A tanh MLP as ``nn.Sequential`` (parameter names ``0.weight``, ``0.bias``, ...)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.Tanh()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class CNNWithBatchNorm(nn.Module):
    """Conv → BatchNorm → tanh → Conv → BatchNorm → ReLU → pool → Linear, 3 outputs.

    Input (n, 2, 6, 6). Its BatchNorm layers carry non-trivial running statistics and
    affine parameters, so evaluating in train mode (batch statistics) gives a visibly
    different function from eval mode.
    """

    def __init__(self, in_channels: int = 2, width: int = 4, out_dim: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width * 4, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = nn.functional.adaptive_avg_pool2d(h, 2)
        return self.head(h.flatten(1))


class TiedWithBuffer(nn.Module):
    """Encoder/decoder with a tied weight matrix and buffers used in the forward pass.

    ``dec.weight`` *is* ``enc.weight`` (the same Parameter), so ``named_parameters()``
    lists it once, as ``enc.weight``. The buffers ``scale`` and ``shift`` enter the
    output, so a wrong or missing buffer changes every product.
    """

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.enc = nn.Linear(dim, dim)
        self.dec = nn.Linear(dim, dim)
        self.dec.weight = self.enc.weight
        self.register_buffer("scale", torch.linspace(0.5, 1.5, dim))
        self.register_buffer("shift", torch.linspace(-0.3, 0.3, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.enc(x) * self.scale)
        return self.dec(h) + self.shift


class DropoutMLP(nn.Module):
    """tanh MLP with Dropout(0.5) between layers; 2 outputs."""

    def __init__(self, in_dim: int = 3, hidden: int = 6, out_dim: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(0.5), nn.Linear(hidden, hidden)
        )
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.tanh(self.body(x))))


class ScalarOutputMLP(nn.Module):
    """tanh MLP whose output has shape (n,) — one output per sample (o = 1)."""

    def __init__(self, in_dim: int = 2, hidden: int = 7) -> None:
        super().__init__()
        self.net = make_mlp(in_dim, hidden, 1, depth=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def _randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic non-trivial parameters and BatchNorm statistics (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.num_batches_tracked.fill_(7)
    return model


@dataclass(frozen=True)
class Case:
    """A test network with its input shape.

    Attributes
    ----------
    name : str
        Test id.
    factory : callable
        Builds the (float32, untrained) module.
    input_shape : tuple of int
        Shape of one input, without the batch dimension.
    out_dim : int
        o, outputs per sample after flattening.
    seed : int
        Seed for the weights.
    """

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    out_dim: int
    seed: int = 0

    def build(self, dtype: torch.dtype = torch.float64, train: bool = True) -> nn.Module:
        """The model in ``dtype`` with deterministic weights, in train mode by default.

        Train mode is the hard case for the engine: it must evaluate in eval mode
        anyway and restore the flags.
        """
        torch.manual_seed(self.seed)
        model = _randomize_(self.factory().to(dtype), self.seed)
        return model.train(train)

    def inputs(self, n: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
        """A batch of ``n`` inputs of shape ``(n, *input_shape)``."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn((n, *self.input_shape), generator=g, dtype=dtype)


CASES: tuple[Case, ...] = (
    Case("mlp", lambda: make_mlp(3, 8, 2), (3,), 2, seed=0),
    Case("cnn_bn", CNNWithBatchNorm, (2, 6, 6), 3, seed=1),
    Case("tied_buffer", TiedWithBuffer, (4,), 4, seed=2),
    Case("dropout", DropoutMLP, (3,), 2, seed=3),
    Case("scalar_out", ScalarOutputMLP, (2,), 1, seed=4),
)


def case(name: str) -> Case:
    """The case called ``name`` from :data:`CASES`."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no test case {name!r}; have {[c.name for c in CASES]}")


def training_flags(model: nn.Module) -> dict[str, bool]:
    """``training`` flag of every submodule, by qualified name."""
    return {name: m.training for name, m in model.named_modules()}


def _reference_parts(
    model: nn.Module, names: list[str] | None
) -> tuple[nn.Module, dict[str, Tensor], dict[str, Tensor], list[str]]:
    ref = copy.deepcopy(model).eval()
    named = dict(ref.named_parameters())
    names = list(named) if names is None else list(names)
    theta = {n: named[n].detach() for n in names}
    rest = {n: t.detach() for n, t in named.items() if n not in theta}
    rest.update({n: b.detach() for n, b in ref.named_buffers()})
    return ref, theta, rest, names


def dense_output(model: nn.Module, x: Tensor) -> Tensor:
    """f(x; θ) in eval mode on a copy of the model, flattened to (n, o)."""
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        out = ref(x)
    return out.reshape(x.shape[0], -1)


def dense_jacobian(model: nn.Module, x: Tensor, names: list[str] | None = None) -> Tensor:
    """Dense Jacobian ∂f(x)/∂θ of shape (n, o, p), eval mode, by ``jacrev`` on all of x.

    Parameters
    ----------
    model : nn.Module
        The network (not modified: a deep copy is evaluated in eval mode).
    x : Tensor
        Inputs (n, *input_shape).
    names : list of str, optional
        Parameters to differentiate, in this column order; default all of
        ``named_parameters()`` in that order (tied parameters once).

    Returns
    -------
    Tensor
        ``J[i, a, :]`` is the gradient of output ``a`` at point ``i``.
    """
    ref, theta, rest, names = _reference_parts(model, names)
    n = x.shape[0]

    def f(th: dict[str, Tensor]) -> Tensor:
        return functional_call(ref, {**rest, **th}, (x,)).reshape(n, -1)

    jac = jacrev(f)(theta)  # name -> (n, o, *shape)
    return torch.cat([jac[k].reshape(n, jac[k].shape[1], -1) for k in names], dim=-1)


def autograd_jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """Dense Jacobian by one ``torch.autograd.grad`` per output row (a second reference).

    Uses the model's own parameters (no ``functional_call``), so it also checks how
    ``functional_call`` treats tied parameters and buffers. Slow; tiny models only.
    """
    ref = copy.deepcopy(model).eval()
    params = [p for _, p in ref.named_parameters()]
    out = ref(x).reshape(x.shape[0], -1)
    rows = []
    for i in range(out.shape[0]):
        for a in range(out.shape[1]):
            grads = torch.autograd.grad(out[i, a], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).reshape(-1)
                        for g, p in zip(grads, params, strict=True)
                    ]
                )
            )
    return torch.stack(rows).reshape(out.shape[0], out.shape[1], -1)
