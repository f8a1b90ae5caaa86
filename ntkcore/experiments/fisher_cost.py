"""Fisher-vector product cases and their timing (Figure 2, right; Eq. 5).

A :class:`FisherCase` is a CIFAR-sized zoo network at initialization (BatchNorm statistics
calibrated on random batches, eval mode, float32), a batch of random 3×32×32 inputs and k
random parameter-space directions; :func:`fisher_calls` gives every way of computing F v that
the benchmark compares (:data:`FISHER_METHODS`), :func:`time_fisher_method` times one of them
(device-synchronized, TF32 off) and :func:`fisher_reference` gives the ``exact`` products the
errors are measured against. Used by :func:`ntkcore.experiments.timing.fisher_products` and
``benchmarks/fisher.py``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore import zoo
from ntkcore.experiments.clock import Timing, time_call
from ntkcore.fisher import fisher_vp
from ntkcore.linearization import Linearization

__all__ = [
    "FISHER_ARCHS",
    "FISHER_METHODS",
    "LIKELIHOODS",
    "NUM_CLASSES",
    "FisherCase",
    "arch_kwargs",
    "calibrate_batchnorm",
    "fisher_calls",
    "fisher_case",
    "fisher_reference",
    "full_float32",
    "relative_error",
    "time_fisher_method",
]

#: Networks of the Fisher benchmark, CIFAR-sized (3×32×32 inputs, 10 classes).
FISHER_ARCHS = ("mlp", "lenet3", "alexnet", "preresnet20", "preresnet56", "preresnet110",
                "wrn16-4")  # fmt: skip
#: ``fd`` (Eq. 5, frozen kinks), ``fd-central`` (compensated central differences),
#: ``fd-live`` / ``fd-central-live`` (``kinks="live"``, as the 2021 code), ``fd-auto`` /
#: ``fd-central-auto`` (``eps="auto"``, calibration included), ``exact`` (Jᵀ Λ J v by forward
#: then reverse mode), ``autograd`` (double backward of the detached KL, the 2021 reference).
FISHER_METHODS = (
    "fd", "fd-central", "fd-live", "fd-central-live", "fd-auto", "fd-central-auto", "exact",
    "autograd",
)  # fmt: skip
NUM_CLASSES = 10
_IMAGE = (3, 32, 32)
#: Likelihoods whose output-space Fisher the benchmark uses (10 outputs).
LIKELIHOODS = ("gaussian", "categorical")


def arch_kwargs(arch: str) -> tuple[dict[str, Any], tuple[int, ...]]:
    if arch == "mlp":  # 4 hidden tanh layers of 256 on the flattened image, ~1M parameters
        return {"in_features": math.prod(_IMAGE), "out_features": NUM_CLASSES, "width": 256,
                "depth": 4}, (math.prod(_IMAGE),)  # fmt: skip
    if arch == "lenet3":
        return {"in_channels": 3, "in_size": 32, "out_features": NUM_CLASSES}, _IMAGE
    if arch == "alexnet":
        return {"num_classes": NUM_CLASSES}, _IMAGE
    if arch in FISHER_ARCHS:
        return {"num_classes": NUM_CLASSES, "in_channels": 3, "in_size": 32}, _IMAGE
    raise ValueError(f"unknown architecture {arch!r}; choose from {FISHER_ARCHS}")


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, shape: tuple[int, ...], batch: int, seed: int) -> None:
    """Set BatchNorm running statistics to their averages over 4 random batches (so that deep
    networks at initialization see normalized activations in eval mode); leaves eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        model.eval()
        return
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for _ in range(4):
        model(torch.randn((batch, *shape), generator=g).to(device))
    model.eval()


@dataclass
class FisherCase:
    """A network at initialization, a batch of inputs and k parameter-space vectors."""

    arch: str
    model: nn.Module
    lin: Linearization
    x: Tensor  # shape: (batch, *input_shape)
    v: Tensor  # shape: (vectors, p)

    @property
    def p(self) -> int:
        return self.lin.num_params

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def vectors(self) -> int:
        return self.v.shape[0]


def fisher_case(
    arch: str, *, batch: int, vectors: int, device: torch.device | str = "cpu", seed: int = 0
) -> FisherCase:
    """A zoo network for 3×32×32 inputs and 10 classes (``torch.manual_seed(seed)``), its
    BatchNorm statistics calibrated, in eval mode, with ``batch`` random inputs and
    ``vectors`` random directions (from ``seed + 2``), float32 on ``device``."""
    kwargs, shape = arch_kwargs(arch)
    for name, value in (("batch", batch), ("vectors", vectors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = zoo.create(arch, **kwargs).to(device)
    calibrate_batchnorm(model, shape, batch, seed)
    g = torch.Generator(device="cpu").manual_seed(seed + 2)
    x = torch.randn((batch, *shape), generator=g).to(device)
    lin = Linearization(model)
    v = torch.randn(vectors, lin.num_params, generator=g).to(device)
    return FisherCase(arch, model, lin, x, v)


def fisher_calls(
    case: FisherCase, *, likelihood: str = "categorical"
) -> dict[str, Callable[[], Tensor]]:
    """``method -> call`` for every method of :data:`FISHER_METHODS` on ``case``."""
    lin, x, v, lik = case.lin, case.x, case.v, likelihood
    return {
        "fd": lambda: fisher_vp(lin, x, v, likelihood=lik, method="fd"),
        "fd-central": lambda: fisher_vp(lin, x, v, likelihood=lik, method="fd", central=True),
        "fd-live": lambda: fisher_vp(lin, x, v, likelihood=lik, kinks="live"),
        "fd-central-live": lambda: fisher_vp(lin, x, v, likelihood=lik, central=True,
                                             kinks="live"),  # fmt: skip
        "fd-auto": lambda: fisher_vp(lin, x, v, likelihood=lik, eps="auto"),
        "fd-central-auto": lambda: fisher_vp(lin, x, v, likelihood=lik, eps="auto", central=True),
        "exact": lambda: fisher_vp(lin, x, v, likelihood=lik, method="exact"),
        "autograd": lambda: fisher_vp(lin, x, v, likelihood=lik, method="autograd"),
    }


@contextlib.contextmanager
def full_float32(device: torch.device | str) -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions inside the block (restored after), so that
    methods are compared at one precision; nothing changes on the CPU."""
    if torch.device(device).type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def relative_error(a: Tensor, ref: Tensor) -> float:
    """max_j ‖a_j − ref_j‖ / ‖ref_j‖ over the rows j (in float64)."""
    a, ref = a.double().reshape(ref.shape[0], -1), ref.double().reshape(ref.shape[0], -1)
    return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


def fisher_reference(
    case: FisherCase, *, likelihood: str = "categorical", float64: bool = False
) -> Tensor:
    """``exact`` Fisher-vector products of ``case`` (untimed), in float32 or on a float64
    copy of the network (chunks of 64 points bound the memory)."""
    if not float64:
        return fisher_vp(case.lin, case.x, case.v, likelihood=likelihood, method="exact")
    model64 = copy.deepcopy(case.model).double()
    return fisher_vp(
        Linearization(model64, chunk_size=64), case.x.double(), case.v.double(),
        likelihood=likelihood, method="exact",
    )


def time_fisher_method(
    case: FisherCase,
    method: str,
    *,
    likelihood: str = "categorical",
    repeats: int = 3,
    clock: str = "wall",
) -> tuple[Timing, Tensor]:
    """Time ``repeats`` calls of one method on ``case`` for its k vectors at once (after a
    warm-up; device-synchronized) and return the timing and the last call's products."""
    if method not in FISHER_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {FISHER_METHODS}")
    call = fisher_calls(case, likelihood=likelihood)[method]
    last: list[Tensor] = []

    def run() -> None:
        last[:] = [call()]

    with full_float32(case.x.device):
        timing = time_call(run, device=case.x.device, repeats=repeats, clock=clock)
    return timing, last[0]
