"""Activation patterns of piecewise-linear networks, recorded at θ and replayed at θ + εv.

A ReLU network is smooth in its parameters except where a unit's pre-activation crosses
zero (likewise the window maximum of a max-pooling, the clipping of a ReLU6). A finite
difference f(θ + εv) − f(θ) of a ReLU network therefore mixes tangents with *secants*
wherever a unit lies within ε|∂z| of its kink: a fraction ∝ ε of the units, whose errors
add like a random walk, so the truncation error of Eq. 5 of Maddox et al. (2021) is
≈ O(ε^{1/2}) there instead of O(ε) or O(ε²) (``benchmarks/RESULTS.md``, "What limits fd in
float32"). In float32 that truncation meets the rounding error ∝ 1/ε of the two forward
passes at ≈ 3e-3 on CIFAR ResNets.

:class:`ActivationPattern` removes the crossings. A forward pass at θ under
:meth:`~ActivationPattern.recording` stores which piece every piecewise-linear operation
used (the sign mask of a ReLU, the argmax of a max-pooling window, the clipped sides of a
hardtanh); a pass at θ' under :meth:`~ActivationPattern.replaying` uses those pieces
instead of re-deciding them: ``relu(z)`` becomes ``z · [z(θ) > 0]``, a max-pooling gathers
the recorded argmax. The replayed network equals the real one at θ, bit for bit, and is a
polynomial in θ near θ with the *same* Jacobian J(θ) (the derivative of ``relu`` at z is
``[z > 0]`` in PyTorch's convention, which is the recorded mask). Finite differences of the
replayed network are thus those of a smooth function: O(ε) or, central, O(ε²) truncation,
which allows steps 10–100x longer and so 10–100x less rounding.

The operations are intercepted with a :class:`torch.overrides.TorchFunctionMode` at the
level of ``torch.nn.functional`` (so ``nn.ReLU``, ``F.relu``, ``torch.relu`` and
``Tensor.relu`` — in place or not — are all seen). Replayed: ``relu``, ``relu6``,
``leaky_relu``, ``hardtanh``, ``threshold`` and ``max_pool1d/2d/3d``,
``adaptive_max_pool1d/2d/3d``. Smooth activations (tanh, GELU, SiLU, softplus) need
nothing. Other kinks (``abs``, ``clamp``, ``maximum``, ...) are evaluated as usual and keep
their ordinary truncation error. Replaying requires the pass at θ' to make the same calls
in the same order with the same shapes as the recorded pass (static control flow); a
mismatch raises :class:`PatternMismatch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["ActivationPattern", "PatternMismatch"]


class PatternMismatch(ValueError):
    """A replayed forward pass did not make the recorded sequence of kinked operations
    (data-dependent control flow); ``fisher_vp(..., kinks="live")`` does not replay."""


def _plain(t: Tensor) -> Tensor:
    """``t`` without the wrapper of a ``torch.func`` transform that has exited.

    A pattern recorded inside ``torch.func.vjp`` (the pass at θ of a Fisher product) holds
    its transform's wrapped tensors; once the transform returns they are dead wrappers."""
    unwrap = getattr(torch._C._functorch, "unwrap_if_dead", None)
    return t if unwrap is None else unwrap(t)


@dataclass
class _Record:
    kind: str
    shape: tuple[int, ...]  # of the operation's input
    pieces: tuple[Tensor, ...]  # masks or argmax indices


# ------------------------------------------------------------------ the operations
def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _finish(z: Tensor, out: Tensor, inplace: bool) -> Tensor:
    if inplace:
        return z.copy_(out)
    return out


def _relu_like(kind: str) -> tuple[Callable, Callable]:
    """Record / replay of the one-kink activations: relu, leaky_relu, threshold."""

    def parts(args: tuple, kwargs: dict) -> tuple[Tensor, bool, float, float]:
        z = args[0]
        if kind == "threshold":  # F.threshold(input, threshold, value, inplace)
            at = float(_arg(args, kwargs, 1, "threshold", 0.0))
            below = float(_arg(args, kwargs, 2, "value", 0.0))
            return z, bool(_arg(args, kwargs, 3, "inplace", False)), at, below
        if kind == "leaky_relu":  # F.leaky_relu(input, negative_slope, inplace)
            slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
            return z, bool(_arg(args, kwargs, 2, "inplace", False)), 0.0, slope
        return z, bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, 0.0

    def record(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, tuple[Tensor, ...]]:
        z, _, at, _ = parts(args, kwargs)
        on = z > at  # before an in-place call overwrites z
        return func(*args, **kwargs), (on,)

    def replay(args: tuple, kwargs: dict, pieces: tuple[Tensor, ...]) -> Tensor:
        z, inplace, _, other = parts(args, kwargs)
        (on,) = pieces
        if kind == "relu":
            # z · mask: 3.4x the time of relu on a (32, 16, 32, 32) float32 tensor on one
            # CPU thread, torch.where(mask, z, 0) 15x (bool-mask selects are not vectorized)
            return z.mul_(on) if inplace else z * on
        if kind == "leaky_relu":
            off = z * other
        else:
            off = torch.full_like(z, other)
        return _finish(z, torch.where(on, z, off), inplace)

    return record, replay


def _hardtanh(kind: str) -> tuple[Callable, Callable]:
    """Record / replay of the two-kink clipping activations: hardtanh, relu6."""

    def parts(args: tuple, kwargs: dict) -> tuple[Tensor, bool, float, float]:
        z = args[0]
        if kind == "relu6":  # F.relu6(input, inplace)
            return z, bool(_arg(args, kwargs, 1, "inplace", False)), 0.0, 6.0
        low = float(_arg(args, kwargs, 1, "min_val", -1.0))
        high = float(_arg(args, kwargs, 2, "max_val", 1.0))
        return z, bool(_arg(args, kwargs, 3, "inplace", False)), low, high

    def record(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, tuple[Tensor, ...]]:
        z, _, low, high = parts(args, kwargs)
        pieces = (z < low, z > high)
        return func(*args, **kwargs), pieces

    def replay(args: tuple, kwargs: dict, pieces: tuple[Tensor, ...]) -> Tensor:
        z, inplace, low, high = parts(args, kwargs)
        below, above = pieces
        out = torch.where(below, torch.full_like(z, low), torch.where(above, high, z))
        return _finish(z, out, inplace)

    return record, replay


def _max_pool(dims: int, adaptive: bool, with_indices: bool) -> tuple[Callable, Callable]:
    """Record / replay of max-pooling: the argmax of each window, then a gather.

    ``with_indices``: the ``*_with_indices`` functions, which always return the indices
    (``F.max_pool2d(..., return_indices=True)`` dispatches to them)."""
    index = 2 if adaptive else 6  # position of ``return_indices``

    def wants_indices(args: tuple, kwargs: dict) -> bool:
        return with_indices or bool(_arg(args, kwargs, index, "return_indices", False))

    def record(func: Callable, args: tuple, kwargs: dict) -> tuple[Any, tuple[Tensor, ...]]:
        call_args, call_kwargs = list(args), dict(kwargs)
        if len(call_args) > index:
            call_args[index] = True
        else:
            call_kwargs["return_indices"] = True
        out, indices = func(*call_args, **call_kwargs)
        return ((out, indices) if wants_indices(args, kwargs) else out), (indices,)

    def replay(args: tuple, kwargs: dict, pieces: tuple[Tensor, ...]) -> Any:
        z = args[0]
        (indices,) = pieces
        # indices address the flattened pooled dimensions of each (batch, channel) plane
        flat = z.flatten(start_dim=z.dim() - dims)
        out = flat.gather(-1, indices.flatten(start_dim=indices.dim() - dims))
        out = out.view(indices.shape)
        return (out, indices) if wants_indices(args, kwargs) else out

    return record, replay


Handler = tuple[str, Callable, Callable]  # kind, record, replay


def _handlers() -> dict[Callable, Handler]:
    table: dict[Callable, Handler] = {}

    def add(funcs: list[Any], kind: str, pair: tuple[Callable, Callable]) -> None:
        for func in funcs:
            table[func] = (kind, *pair)

    add([F.relu, torch.relu, Tensor.relu], "relu", _relu_like("relu"))
    # in-place variants carry no `inplace` argument: replay writes into z
    record, replay = _relu_like("relu")
    add(
        [F.relu_, torch.relu_, Tensor.relu_],
        "relu",
        (record, lambda args, kwargs, pieces: replay((args[0], True), {}, pieces)),
    )
    add([F.leaky_relu], "leaky_relu", _relu_like("leaky_relu"))
    add([F.threshold], "threshold", _relu_like("threshold"))
    add([F.hardtanh], "hardtanh", _hardtanh("hardtanh"))
    add([F.relu6], "relu6", _hardtanh("relu6"))
    for dims in (1, 2, 3):
        for adaptive in (False, True):
            name = f"{'adaptive_' if adaptive else ''}max_pool{dims}d"
            plain, indexed = getattr(F, name), getattr(F, f"{name}_with_indices")
            add([plain], name, _max_pool(dims, adaptive, with_indices=False))
            add([indexed], name, _max_pool(dims, adaptive, with_indices=True))
    return table


_HANDLERS = _handlers()


class _PatternMode(TorchFunctionMode):
    """Calls the network's functions as usual, except the kinked ones (:data:`_HANDLERS`),
    whose pieces it appends to ``records`` or, with ``replay``, takes from them in order."""

    def __init__(self, records: list[_Record], *, replay: bool) -> None:
        super().__init__()
        self.records = records
        self.replay = replay
        self.position = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is None:
            return func(*args, **kwargs)
        kind, record, replay = handler
        shape = tuple(args[0].shape)
        if not self.replay:
            out, pieces = record(func, args, kwargs)
            self.records.append(_Record(kind, shape, tuple(p.detach() for p in pieces)))
            return out
        if self.position >= len(self.records):
            raise PatternMismatch(
                f"the replayed pass calls {kind} more often than the recorded pass "
                f"({len(self.records)} kinked operations); use kinks='live'"
            )
        rec = self.records[self.position]
        if rec.kind != kind or rec.shape != shape:
            raise PatternMismatch(
                f"kinked operation {self.position}: recorded {rec.kind}{list(rec.shape)}, "
                f"replayed {kind}{list(shape)} (data-dependent control flow?); use "
                "kinks='live'"
            )
        self.position += 1
        return replay(args, kwargs, rec.pieces)


class ActivationPattern:
    """The pieces used by every piecewise-linear operation of one forward pass.

    Record with ``with pattern.recording(): f = model(x)`` (at θ), then evaluate the
    network at other parameters with the same pieces with
    ``with pattern.replaying(): f2 = model_at_theta_prime(x)`` (module docstring).

    Attributes
    ----------
    records : list
        One entry per kinked operation of the recorded pass, in call order.
    """

    def __init__(self) -> None:
        self.records: list[_Record] = []

    def __len__(self) -> int:
        return len(self.records)

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded pieces (masks and argmax indices)."""
        return sum(p.numel() * p.element_size() for r in self.records for p in r.pieces)

    @contextlib.contextmanager
    def recording(self) -> Iterator[ActivationPattern]:
        """Record the pieces of the forward pass run inside (replacing earlier records)."""
        self.records = []
        with _PatternMode(self.records, replay=False):
            yield self
        for record in self.records:
            record.pieces = tuple(_plain(p) for p in record.pieces)

    @contextlib.contextmanager
    def replaying(self) -> Iterator[ActivationPattern]:
        """Replay the recorded pieces in the forward pass run inside.

        Raises
        ------
        PatternMismatch
            When the pass makes a different sequence of kinked operations (or does not
            use all of them) than the recorded one.
        """
        mode = _PatternMode(self.records, replay=True)
        with mode:
            yield self
        if mode.position != len(self.records):
            raise PatternMismatch(
                f"the replayed pass made {mode.position} of the {len(self.records)} "
                "recorded kinked operations; use kinks='live'"
            )
