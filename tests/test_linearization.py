"""Every product of :class:`ntkcore.linearization.Linearization` against dense Jacobians.

The reference (:func:`tests.models.dense_jacobian`) is ``torch.func.jacrev`` of
``functional_call`` on an eval-mode copy of the model, in float64, written
independently of the engine. Each product is checked against its dense form
(relative error <= 1e-8) on every model of :data:`tests.models.CASES` (tanh MLP, CNN
with BatchNorm and 3 outputs on image inputs, tied weights + buffers, Dropout, scalar
output) and for several ``chunk_size`` values, including 1 and sizes that do not divide
n. Further sections cover parameter subsets, flattening, dtypes/devices, side effects
on the wrapped model, snapshot semantics, and the ValueErrors for bad input.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

import ntkcore.linearization as linearization_module
from ntkcore.linearization import Linearization
from ntkcore.parameters import last_layers
from tests.models import (
    CASES,
    Case,
    autograd_jacobian,
    case,
    dense_jacobian,
    dense_output,
    training_flags,
)

RTOL = 1e-8  # relative error bound for float64 products
RTOL32 = 2e-4  # float32 products against the float64 reference
N1, N2 = 5, 6  # N2 > 4 * 1 exercises the "recompute x2 blocks" path of ntk for chunk 1
CHUNKS = [None, 1, 3]  # 3 does not divide N1 = 5 and divides N2 = 6


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (absolute error when expected is zero)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    scale = e.norm().item()
    return (a - e).norm().item() / (scale if scale > 0 else 1.0)


def assert_close(actual: Tensor, expected: Tensor, rtol: float = RTOL) -> None:
    err = rel_err(actual, expected)
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.0e}"


@dataclass
class Problem:
    """A model with inputs and its dense float64 Jacobians."""

    case: Case
    model: nn.Module
    x1: Tensor
    x2: Tensor
    J1: Tensor  # (N1, o, p)
    J2: Tensor  # (N2, o, p)

    @property
    def o(self) -> int:
        return self.J1.shape[1]

    @property
    def p(self) -> int:
        return self.J1.shape[2]

    def vectors(self, *shape: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def problem(request: pytest.FixtureRequest) -> Problem:
    c: Case = request.param
    model = c.build()
    x1, x2 = c.inputs(N1, seed=1), c.inputs(N2, seed=2)
    J1, J2 = dense_jacobian(model, x1), dense_jacobian(model, x2)
    assert J1.shape[1] == c.out_dim
    return Problem(c, model, x1, x2, J1, J2)


@pytest.fixture(params=CHUNKS, ids=lambda c: f"chunk={c}")
def chunk_size(request: pytest.FixtureRequest) -> int | None:
    return request.param


# --------------------------------------------------------------------------- reference
def test_reference_matches_per_row_autograd(problem: Problem) -> None:
    """The jacrev reference agrees with one autograd.grad per row (no functional_call)."""
    assert_close(problem.J1, autograd_jacobian(problem.model, problem.x1), 1e-12)


# --------------------------------------------------------------------------- products
class TestProducts:
    """Every product against its dense form, for every model and chunk size."""

    def test_forward(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        out = lin(problem.x1)
        assert out.shape == (N1, problem.o)
        assert_close(out, dense_output(problem.model, problem.x1))

    def test_num_params(self, problem: Problem) -> None:
        lin = Linearization(problem.model)
        assert lin.num_params == problem.p == sum(p.numel() for p in problem.model.parameters())

    def test_jvp_single(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        v = problem.vectors(problem.p)
        out = lin.jvp(problem.x1, v)
        assert out.shape == (N1, problem.o)
        assert_close(out, torch.einsum("iap,p->ia", problem.J1, v))

    @pytest.mark.parametrize("k", [1, 4])
    def test_jvp_batched(self, problem: Problem, chunk_size: int | None, k: int) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        V = problem.vectors(k, problem.p)
        out = lin.jvp(problem.x1, V)
        assert out.shape == (k, N1, problem.o)
        assert_close(out, torch.einsum("iap,kp->kia", problem.J1, V))

    def test_vjp_single(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        u = problem.vectors(N1, problem.o)
        out = lin.vjp(problem.x1, u)
        assert out.shape == (problem.p,)
        assert_close(out, torch.einsum("iap,ia->p", problem.J1, u))

    @pytest.mark.parametrize("k", [1, 4])
    def test_vjp_batched(self, problem: Problem, chunk_size: int | None, k: int) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        U = problem.vectors(k, N1, problem.o)
        out = lin.vjp(problem.x1, U)
        assert out.shape == (k, problem.p)
        assert_close(out, torch.einsum("iap,kia->kp", problem.J1, U))

    def test_jacobian(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        out = lin.jacobian(problem.x1)
        assert out.shape == (N1, problem.o, problem.p)
        assert_close(out, problem.J1)

    def test_ntk_symmetric(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        K = lin.ntk(problem.x1)
        J = problem.J1.reshape(N1 * problem.o, problem.p)
        assert K.shape == (N1 * problem.o, N1 * problem.o)
        assert_close(K, J @ J.T)
        assert_close(K, K.T, 1e-14)  # symmetric up to rounding

    def test_ntk_cross(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        K = lin.ntk(problem.x1, problem.x2)
        o = problem.o
        assert K.shape == (N1 * o, N2 * o)
        expected = torch.einsum("iap,jbp->iajb", problem.J1, problem.J2)
        assert_close(K, expected.reshape(N1 * o, N2 * o))

    def test_ntk_row_order_is_sample_major(self, problem: Problem) -> None:
        """K[i·o + a, j·o + b] = J(x1)_{ia} · J(x2)_{jb}, entry by entry."""
        K = Linearization(problem.model).ntk(problem.x1, problem.x2)
        o = problem.o
        for i in range(N1):
            for a in range(o):
                for j in range(N2):
                    for b in range(o):
                        ref = torch.dot(problem.J1[i, a], problem.J2[j, b])
                        got = K[i * o + a, j * o + b]
                        assert abs(got - ref) <= RTOL * max(1.0, abs(ref.item())), (i, a, j, b)

    def test_ntk_diag(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        d = lin.ntk_diag(problem.x1)
        assert d.shape == (N1, problem.o)
        assert_close(d, problem.J1.square().sum(-1))

    def test_ntk_blockdiag(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        B = lin.ntk_blockdiag(problem.x1)
        assert B.shape == (N1, problem.o, problem.o)
        assert_close(B, torch.einsum("iap,ibp->iab", problem.J1, problem.J1))

    def test_ntk_vp_single(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        u = problem.vectors(N1, problem.o)
        out = lin.ntk_vp(problem.x1, u)
        J = problem.J1.reshape(N1 * problem.o, problem.p)
        assert out.shape == (N1, problem.o)
        assert_close(out, (J @ (J.T @ u.reshape(-1))).reshape(N1, problem.o))

    def test_ntk_vp_batched(self, problem: Problem, chunk_size: int | None) -> None:
        lin = Linearization(problem.model, chunk_size=chunk_size)
        U = problem.vectors(3, N1, problem.o)
        out = lin.ntk_vp(problem.x1, U)
        J = problem.J1.reshape(N1 * problem.o, problem.p)
        assert out.shape == (3, N1, problem.o)
        assert_close(out, (U.reshape(3, -1) @ J @ J.T).reshape(3, N1, problem.o))

    def test_results_carry_no_autograd_graph(self, problem: Problem) -> None:
        lin = Linearization(problem.model)
        u = problem.vectors(N1, problem.o)
        v = problem.vectors(problem.p)
        for out in (lin(problem.x1), lin.jvp(problem.x1, v), lin.vjp(problem.x1, u)):
            assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 7])
def test_chunked_equals_unchunked(chunk: int) -> None:
    """Chunking changes only memory, not results (to rounding), for every product."""
    c = case("cnn_bn")
    model, x = c.build(), c.inputs(N1)
    full, part = Linearization(model), Linearization(model, chunk_size=chunk)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(3, full.num_params, generator=g, dtype=torch.float64)
    U = torch.randn(3, N1, c.out_dim, generator=g, dtype=torch.float64)
    x2 = c.inputs(N2, seed=9)
    pairs = [
        (part(x), full(x)),
        (part.jvp(x, V), full.jvp(x, V)),
        (part.jvp(x, V[0]), full.jvp(x, V[0])),
        (part.vjp(x, U), full.vjp(x, U)),
        (part.vjp(x, U[0]), full.vjp(x, U[0])),
        (part.ntk_vp(x, U), full.ntk_vp(x, U)),
        (part.jacobian(x), full.jacobian(x)),
        (part.ntk(x), full.ntk(x)),
        (part.ntk(x, x2), full.ntk(x, x2)),
        (part.ntk_diag(x), full.ntk_diag(x)),
        (part.ntk_blockdiag(x), full.ntk_blockdiag(x)),
    ]
    for i, (a, b) in enumerate(pairs):
        assert a.shape == b.shape, i
        assert rel_err(a, b) <= 1e-13, (i, rel_err(a, b))


def test_default_chunking_of_explicit_jacobians(monkeypatch: pytest.MonkeyPatch) -> None:
    """With chunk_size=None the explicit objects are chunked by a byte budget."""
    c = case("mlp")
    model, x = c.build(), c.inputs(N1)
    J = dense_jacobian(model, x)
    o, p = J.shape[1], J.shape[2]
    # A budget of two Jacobian rows' worth of points forces chunks of 2 (non-dividing).
    monkeypatch.setattr(linearization_module, "_DEFAULT_JACOBIAN_BYTES", 2 * o * p * 8)
    lin = Linearization(model)
    assert_close(lin.jacobian(x), J)
    Jf = J.reshape(-1, p)
    assert_close(lin.ntk(x), Jf @ Jf.T)
    assert_close(lin.ntk_diag(x), J.square().sum(-1))


def test_larger_batch_products() -> None:
    """n = 37 (prime), chunk 8: products over many chunks still match the dense form."""
    c = case("tied_buffer")
    model, x = c.build(), c.inputs(37, seed=5)
    J = dense_jacobian(model, x).reshape(37 * c.out_dim, -1)
    lin = Linearization(model, chunk_size=8)
    g = torch.Generator().manual_seed(0)
    V = torch.randn(5, J.shape[1], generator=g, dtype=torch.float64)
    assert_close(lin.jvp(x, V).reshape(5, -1), V @ J.T)
    U = torch.randn(5, 37, c.out_dim, generator=g, dtype=torch.float64)
    assert_close(lin.vjp(x, U), U.reshape(5, -1) @ J)
    assert_close(lin.ntk(x), J @ J.T)


# --------------------------------------------------------------------------- images
def test_image_inputs_keep_their_shape() -> None:
    """(n, c, h, w) inputs reach the model unchanged; outputs are (n, o)."""
    seen: list[tuple[int, ...]] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1).double()

        def forward(self, x: Tensor) -> Tensor:
            seen.append(tuple(x.shape[1:]))
            return self.conv(x).mean(dim=(2, 3))

    model = Probe()
    x = torch.randn(4, 3, 5, 7, dtype=torch.float64)
    lin = Linearization(model, chunk_size=3)
    J = dense_jacobian(model, x)
    assert_close(lin.jacobian(x), J)
    v = torch.randn(lin.num_params, dtype=torch.float64)
    assert_close(lin.jvp(x, v), J @ v)
    assert set(seen) == {(3, 5, 7)}


def test_scalar_parameter() -> None:
    """A 0-d parameter (a learnable output scale) is one column of J."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2).double()
            self.scale = nn.Parameter(torch.tensor(1.7, dtype=torch.float64))

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x) * self.scale

    model = Scaled()
    x = torch.randn(4, 3, dtype=torch.float64)
    J = dense_jacobian(model, x)
    lin = Linearization(model)
    assert lin.num_params == 9
    v = torch.randn(9, dtype=torch.float64)
    assert_close(lin.jacobian(x), J)
    assert_close(lin.jvp(x, v), J @ v)
    assert_close(lin.jvp(x, v[None]), (J @ v)[None])
    u = torch.randn(4, 2, dtype=torch.float64)
    assert_close(lin.vjp(x, u), torch.einsum("iap,ia->p", J, u))
    assert lin.unflatten(v)["scale"].shape == ()


# --------------------------------------------------------------------------- subsets
def _columns(model: nn.Module, names: list[str]) -> Tensor:
    """Indices of ``names``' entries in the flat named_parameters() vector."""
    offsets, start = {}, 0
    for n, p in model.named_parameters():
        offsets[n] = torch.arange(start, start + p.numel())
        start += p.numel()
    return torch.cat([offsets[n] for n in names])


SUBSETS = [
    ("mlp", "0", ["0.weight", "0.bias"]),
    ("mlp", "*.bias", ["0.bias", "2.bias", "4.bias"]),
    ("mlp", ["4.weight", "0.*"], ["0.weight", "0.bias", "4.weight"]),
    ("mlp", lambda name, p: p.dim() == 2, ["0.weight", "2.weight", "4.weight"]),
    ("mlp", "last1", ["4.weight", "4.bias"]),
    ("cnn_bn", "bn*", ["bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"]),
    ("cnn_bn", "last1", ["head.weight", "head.bias"]),
    ("cnn_bn", "last2", ["bn2.weight", "bn2.bias", "head.weight", "head.bias"]),
    ("tied_buffer", "enc.weight", ["enc.weight"]),  # the tied weight, both uses
    ("tied_buffer", "dec", ["dec.bias"]),
]


@pytest.mark.parametrize(
    ("case_name", "params", "names"), SUBSETS, ids=[f"{s[0]}-{i}" for i, s in enumerate(SUBSETS)]
)
def test_parameter_subset_is_columns_of_full_jacobian(
    case_name: str, params: object, names: list[str]
) -> None:
    c = case(case_name)
    model = c.build()
    if isinstance(params, str) and params.startswith("last"):
        params = last_layers(model, int(params[4:]))
    x1, x2 = c.inputs(N1), c.inputs(N2, seed=2)
    cols = _columns(model, names)
    J1 = dense_jacobian(model, x1)[:, :, cols]
    J2 = dense_jacobian(model, x2)[:, :, cols]

    lin = Linearization(model, params=params, chunk_size=2)
    assert list(lin.layout.names) == names
    assert lin.num_params == cols.numel()
    o, p = c.out_dim, cols.numel()
    assert_close(lin(x1), dense_output(model, x1))  # other parameters stay at θ
    assert_close(lin.jacobian(x1), J1)
    g = torch.Generator().manual_seed(4)
    V = torch.randn(2, p, generator=g, dtype=torch.float64)
    assert_close(lin.jvp(x1, V), torch.einsum("iap,kp->kia", J1, V))
    U = torch.randn(2, N1, o, generator=g, dtype=torch.float64)
    assert_close(lin.vjp(x1, U), torch.einsum("iap,kia->kp", J1, U))
    assert_close(lin.ntk(x1, x2), torch.einsum("iap,jbp->iajb", J1, J2).reshape(N1 * o, N2 * o))
    assert_close(lin.ntk_diag(x1), J1.square().sum(-1))
    # θ of the subset
    named = dict(model.named_parameters())
    assert_close(lin.parameter_vector(), torch.cat([named[n].detach().reshape(-1) for n in names]))


def test_frozen_parameters_are_not_linearized_by_default() -> None:
    c = case("mlp")
    model = c.build()
    model[0].weight.requires_grad_(False)
    lin = Linearization(model)
    names = [n for n, _ in model.named_parameters() if n != "0.weight"]
    assert list(lin.layout.names) == names
    x = c.inputs(N1)
    assert_close(lin.jacobian(x), dense_jacobian(model, x)[:, :, _columns(model, names)])
    assert_close(lin(x), dense_output(model, x))


# --------------------------------------------------------------------------- flattening
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_flatten_unflatten_round_trip_and_order(c: Case) -> None:
    model = c.build()
    lin = Linearization(model)
    named = list(model.named_parameters())
    assert list(lin.parameter_names) == [n for n, _ in named]
    assert [tuple(s) for s in lin.layout.shapes] == [tuple(p.shape) for _, p in named]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    assert torch.equal(lin.parameter_vector(), theta)
    assert torch.equal(lin.flatten({n: p.detach() for n, p in named}), theta)
    parts = lin.unflatten(theta)
    assert list(parts) == [n for n, _ in named]
    for n, p in named:
        assert torch.equal(parts[n], p.detach())
    V = torch.randn(3, lin.num_params, dtype=torch.float64)
    parts = lin.unflatten(V)
    for n, p in named:
        assert parts[n].shape == (3, *p.shape)
    assert torch.equal(lin.flatten(parts), V)


# --------------------------------------------------------------------------- dtype/device
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_float32_follows_model(c: Case) -> None:
    model32 = c.build(dtype=torch.float32)
    model64 = c.build(dtype=torch.float64)
    x64 = c.inputs(N1)
    J = dense_jacobian(model64, x64)
    lin = Linearization(model32, chunk_size=2)
    assert lin.dtype == torch.float32 and lin.device == torch.device("cpu")
    p = lin.num_params
    v = torch.randn(p, dtype=torch.float64)
    u = torch.randn(N1, c.out_dim, dtype=torch.float64)
    x32 = x64.float()
    outs = {
        "f": (lin(x32), dense_output(model64, x64)),
        "jvp": (lin.jvp(x32, v.float()), J @ v),
        "vjp": (lin.vjp(x32, u.float()), torch.einsum("iap,ia->p", J, u)),
        "jacobian": (lin.jacobian(x32), J),
        "ntk_diag": (lin.ntk_diag(x32), J.square().sum(-1)),
        "ntk": (lin.ntk(x32), J.reshape(-1, p) @ J.reshape(-1, p).T),
        # float64 inputs and vectors are cast to the model's dtype
        "jvp_from_f64": (lin.jvp(x64, v), J @ v),
    }
    for name, (got, ref) in outs.items():
        assert got.dtype == torch.float32, name
        assert got.device.type == "cpu", name
        assert rel_err(got, ref) <= RTOL32, (name, rel_err(got, ref))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_model() -> None:
    c = case("cnn_bn")
    model = c.build()
    x = c.inputs(N1)
    J = dense_jacobian(model, x)
    lin = Linearization(model.cuda(), chunk_size=2)
    assert lin.device.type == "cuda"
    v = torch.randn(3, lin.num_params, dtype=torch.float64)
    out = lin.jvp(x, v)  # x and v on the CPU: moved to the model's device
    assert out.device.type == "cuda"
    assert_close(out, torch.einsum("iap,kp->kia", J, v))
    assert_close(lin.vjp(x.cuda(), out[0]), torch.einsum("iap,ia->p", J, out[0].cpu()))
    assert_close(lin.ntk(x), J.reshape(-1, lin.num_params) @ J.reshape(-1, lin.num_params).T)


# --------------------------------------------------------------------------- side effects
def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _call_everything(lin: Linearization, x: Tensor, o: int) -> list[Tensor]:
    p = lin.num_params
    g = torch.Generator().manual_seed(11)
    v = torch.randn(2, p, generator=g, dtype=torch.float64)
    u = torch.randn(2, x.shape[0], o, generator=g, dtype=torch.float64)
    return [
        lin(x),
        lin.jvp(x, v),
        lin.jvp(x, v[0]),
        lin.vjp(x, u),
        lin.vjp(x, u[0]),
        lin.ntk_vp(x, u),
        lin.jacobian(x),
        lin.ntk(x),
        lin.ntk(x, x[:2]),
        lin.ntk_diag(x),
        lin.ntk_blockdiag(x),
    ]


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_model_untouched_and_flags_restored(c: Case) -> None:
    model = c.build(train=True)
    # mixed flags: the root in train mode, its first child in eval mode
    next(iter(model.children())).eval()
    flags, state = training_flags(model), _state(model)
    lin = Linearization(model, chunk_size=3)
    _call_everything(lin, c.inputs(N1), c.out_dim)
    assert training_flags(model) == flags
    after = _state(model)
    assert after.keys() == state.keys()
    for k in state:
        assert torch.equal(after[k], state[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters())


def test_model_in_eval_mode_stays_in_eval_mode() -> None:
    c = case("cnn_bn")
    model = c.build(train=False)
    Linearization(model).ntk(c.inputs(3))
    assert not any(training_flags(model).values())


@pytest.mark.parametrize("name", ["cnn_bn", "dropout"])
def test_evaluates_in_eval_mode(name: str) -> None:
    """BatchNorm uses running statistics and Dropout is off, whatever the model's mode."""
    c = case(name)
    model = c.build(train=True)
    x = c.inputs(N1)
    with torch.no_grad():
        train_out = copy.deepcopy(model).train()(x).reshape(N1, -1)
    eval_out = dense_output(model, x)
    assert rel_err(train_out, eval_out) > 1e-3, "test model must differ in train mode"
    lin = Linearization(model)
    assert_close(lin(x), eval_out)
    assert_close(lin(x), lin(x), 0.0)  # deterministic: no dropout


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_theta_is_a_snapshot(c: Case) -> None:
    """Changing the model after wrapping (parameters or buffers) changes no result."""
    model = c.build()
    x = c.inputs(N1)
    lin = Linearization(model, chunk_size=2)
    before = _call_everything(lin, x, c.out_dim)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-2.0).add_(1.0)
        for b in model.buffers():
            if b.is_floating_point():
                b.mul_(3.0).add_(0.5)
    model.eval()
    after = _call_everything(lin, x, c.out_dim)
    for i, (a, b) in enumerate(zip(after, before, strict=True)):
        assert torch.equal(a, b), f"product {i} changed after the model was modified"
    # a fresh wrapper does see the change (so the test above can fail)
    assert rel_err(Linearization(model)(x), before[0]) > 1e-3


# --------------------------------------------------------------------------- bad input
class NoParams(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return 2 * x


class ReturnsTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.lin(x)
        return y, y


class DropsBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x).sum(0)


@pytest.mark.parametrize("model", [NoParams(), nn.ReLU(), nn.Sequential()], ids=type)
def test_model_without_parameters(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="no parameters"):
        Linearization(model)


def test_not_a_module() -> None:
    with pytest.raises(ValueError, match="nn.Module"):
        Linearization(lambda x: x)  # type: ignore[arg-type]


def test_all_parameters_frozen() -> None:
    model = case("mlp").build()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="selects no parameter"):
        Linearization(model)


@pytest.mark.parametrize(
    "params",
    ["nonexistent", ["nope.*", "also.nope"], lambda n, p: False, "dec.weight"],
    ids=["pattern", "patterns", "callable", "tied-alias"],
)
def test_params_filter_selecting_nothing(params: object) -> None:
    model = case("tied_buffer").build()
    with pytest.raises(ValueError, match=r"selects no parameter.*enc\.weight"):
        Linearization(model, params=params)  # type: ignore[arg-type]


@pytest.mark.parametrize("params", [[], [3], 5], ids=["empty", "int-in-list", "int"])
def test_params_filter_malformed(params: object) -> None:
    with pytest.raises(ValueError, match="params"):
        Linearization(case("mlp").build(), params=params)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [0, -1, 2.5, "3"])
def test_bad_chunk_size(chunk: object) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Linearization(case("mlp").build(), chunk_size=chunk)  # type: ignore[arg-type]


def test_mixed_dtypes_in_selected_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4).double(), nn.Linear(4, 2).float())
    with pytest.raises(ValueError, match="dtype"):
        Linearization(model)


METHODS = ["call", "jvp", "vjp", "ntk_vp", "jacobian", "ntk", "ntk_diag", "ntk_blockdiag"]


def _invoke(lin: Linearization, method: str, x: Tensor, o: int) -> Tensor:
    n, p = x.shape[0], lin.num_params
    v = torch.ones(p, dtype=torch.float64)
    u = torch.ones(n, o, dtype=torch.float64)
    return {
        "call": lambda: lin(x),
        "jvp": lambda: lin.jvp(x, v),
        "vjp": lambda: lin.vjp(x, u),
        "ntk_vp": lambda: lin.ntk_vp(x, u),
        "jacobian": lambda: lin.jacobian(x),
        "ntk": lambda: lin.ntk(x),
        "ntk_diag": lambda: lin.ntk_diag(x),
        "ntk_blockdiag": lambda: lin.ntk_blockdiag(x),
    }[method]()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("case_name", "bad_shape"),
    [("mlp", (N1, 4)), ("mlp", (N1, 3, 1)), ("cnn_bn", (N1, 3, 6, 6))],
    ids=["mlp-features", "mlp-extra-dim", "cnn-channels"],
)
def test_input_shape_rejected_by_model(method: str, case_name: str, bad_shape: tuple) -> None:
    c = case(case_name)
    lin = Linearization(c.build())
    x = torch.randn(bad_shape, dtype=torch.float64)
    # message names the offending input's trailing shape, e.g. "(…, 4)"
    trailing = ", ".join(map(str, bad_shape[1:]))
    with pytest.raises(ValueError, match=rf"rejected an input of shape \(\d+, {trailing}\)"):
        _invoke(lin, method, x, c.out_dim)


def test_input_shape_rejected_after_a_good_call() -> None:
    """Caches from earlier calls (e.g. the output size) do not mask a bad input."""
    c = case("mlp")
    lin = Linearization(c.build())
    lin.vjp(c.inputs(N1), torch.ones(N1, c.out_dim))
    for method in METHODS:
        with pytest.raises(ValueError, match="rejected"):
            _invoke(lin, method, torch.randn(N1, 5, dtype=torch.float64), c.out_dim)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x(method: str, bad: float) -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    x = c.inputs(N1)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        _invoke(lin, method, x, c.out_dim)


@pytest.mark.parametrize("x", [torch.tensor(1.0), torch.empty(0, 3)], ids=["scalar", "empty"])
def test_x_without_points(x: Tensor) -> None:
    with pytest.raises(ValueError, match="batch dimension"):
        Linearization(case("mlp").build())(x)


def test_model_output_must_be_a_batched_tensor() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="one tensor"):
        Linearization(ReturnsTuple())(x)
    with pytest.raises(ValueError, match="first output dimension must be the batch"):
        Linearization(DropsBatch())(x)


def test_v_of_wrong_shape() -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    x, p = c.inputs(N1), lin.num_params
    for shape in [(p + 1,), (p - 1,), (3, p + 1), (2, 3, p), (), (p, 1)]:
        got = re.escape(str(shape))
        with pytest.raises(ValueError, match=rf"v must have shape.*{p}.*got {got}"):
            lin.jvp(x, torch.ones(shape, dtype=torch.float64))


def test_u_of_wrong_shape() -> None:
    c = case("cnn_bn")
    lin = Linearization(c.build())
    x, o = c.inputs(N1), c.out_dim
    for shape in [(N1, o + 1), (N1 + 1, o), (N1 * o,), (2, 2, N1, o), (2, N1, o - 1), ()]:
        u = torch.ones(shape, dtype=torch.float64)
        with pytest.raises(ValueError, match=rf"u must have shape.*\({N1}, {o}\)"):
            lin.vjp(x, u)
        with pytest.raises(ValueError, match="u must have shape"):
            lin.ntk_vp(x, u)


def test_scalar_output_model_wants_u_of_shape_n_by_1() -> None:
    c = case("scalar_out")
    lin = Linearization(c.build())
    x = c.inputs(N1)
    assert lin(x).shape == (N1, 1)
    with pytest.raises(ValueError, match=rf"\({N1}, 1\)"):
        lin.vjp(x, torch.ones(N1, dtype=torch.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_vectors(bad: float) -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    x, p = c.inputs(N1), lin.num_params
    v = torch.ones(2, p, dtype=torch.float64)
    v[1, 3] = bad
    u = torch.ones(N1, c.out_dim, dtype=torch.float64)
    u[0, 1] = bad
    with pytest.raises(ValueError, match="v contains non-finite"):
        lin.jvp(x, v)
    with pytest.raises(ValueError, match="u contains non-finite"):
        lin.vjp(x, u)
    with pytest.raises(ValueError, match="u contains non-finite"):
        lin.ntk_vp(x, u)


def test_parameter_count_matches_layout() -> None:
    """Sanity of the layout for a model with parameters of every rank."""
    c = case("cnn_bn")
    lin = Linearization(c.build())
    assert lin.num_params == sum(math.prod(s) for s in lin.layout.shapes)
    slices = lin.layout.slices()
    assert next(iter(slices.values())).start == 0
    assert list(slices.values())[-1].stop == lin.num_params
