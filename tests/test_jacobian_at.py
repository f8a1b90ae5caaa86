"""Products of :class:`ntkcore.JacobianAt` (J at fixed inputs, cached) against dense Jacobians.

Reference: :func:`tests.models.dense_jacobian` (``torch.func.jacrev`` in float64, written
independently of the engine). Every cache mode must give the products of the dense
Jacobian to 1e-8 relative on every model of :data:`tests.models.CASES`, chunked or not,
for single and batched vectors, and keep giving them on repeated calls (the cache is
reused). Also: the fallback for networks that cannot be traced, the memory guard, the
accelerator code path (vectors batched with ``vmap`` in budget-sized groups), the byte-
budget chunking of one-shot products, side effects and bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import ntkcore.jacobian_at as jacobian_at_module
import ntkcore.linearization as linearization_module
from ntkcore import JacobianAt, Linearization
from tests.models import CASES, Case, case, dense_jacobian, dense_output, training_flags

RTOL = 1e-8
N = 5
CACHE_MODES = ["none", "pullback", "linearized"]


def rel_err(actual: Tensor, expected: Tensor) -> float:
    assert actual.shape == expected.shape, f"{tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.norm().item()
    return (actual - expected).norm().item() / (scale if scale > 0 else 1.0)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def dense(request: pytest.FixtureRequest) -> tuple[Case, nn.Module, Tensor, Tensor]:
    c: Case = request.param
    model = c.build()
    x = c.inputs(N, seed=3)
    return c, model, x, dense_jacobian(model, x)


def _vectors(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_products_match_dense(dense: tuple, cache: str, chunk: int | None) -> None:
    c, model, x, J = dense
    n, o, p = J.shape
    jm = J.reshape(n * o, p)
    ops = Linearization(model, chunk_size=chunk).at(x, cache=cache)
    assert ops.cache == cache
    assert (ops.n, ops.o, ops.num_params) == (n, o, p)
    assert rel_err(ops.output, dense_output(model, x)) <= RTOL
    v, vs = _vectors(p, seed=1), _vectors(4, p, seed=2)
    u, us = _vectors(n, o, seed=3), _vectors(4, n, o, seed=4)
    for _ in range(2):  # the second round reuses the cache
        assert rel_err(ops.jvp(v), (jm @ v).reshape(n, o)) <= RTOL
        assert rel_err(ops.jvp(vs), (vs @ jm.T).reshape(4, n, o)) <= RTOL
        assert rel_err(ops.vjp(u), jm.T @ u.reshape(-1)) <= RTOL
        assert rel_err(ops.vjp(us), us.reshape(4, -1) @ jm) <= RTOL
        ntk = jm @ jm.T
        assert rel_err(ops.ntk_vp(u), (ntk @ u.reshape(-1)).reshape(n, o)) <= RTOL
        assert rel_err(ops.ntk_vp(us), (us.reshape(4, -1) @ ntk).reshape(4, n, o)) <= RTOL
    assert not ops.jvp(vs).requires_grad and not ops.vjp(us).requires_grad


@pytest.mark.parametrize("cache", ["pullback", "linearized"])
def test_accelerator_path_batches_vectors_in_groups(
    dense: tuple, cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vmap path (used on GPUs) in groups sized by the product budget."""
    c, model, x, J = dense
    n, o, p = J.shape
    jm = J.reshape(n * o, p)
    ops = Linearization(model).at(x, cache=cache)
    ops._batch_vectors = True
    # budget for two vectors at a time: activations of n points plus 3 parameter copies
    param_bytes = p * 8  # float64
    per_group = 2 * (n * ops._per_point + 3 * param_bytes)
    monkeypatch.setattr(jacobian_at_module, "product_budget", lambda device: per_group)
    assert [g.stop - g.start for g in ops._vector_groups(5, n, 3)] == [2, 2, 1]
    # the parameter-sized buffers count: with 30 copies per vector only one fits
    assert [g.stop - g.start for g in ops._vector_groups(3, n, 30)] == [1, 1, 1]
    vs, us = _vectors(5, p, seed=5), _vectors(5, n, o, seed=6)
    assert rel_err(ops.jvp(vs), (vs @ jm.T).reshape(5, n, o)) <= RTOL
    assert rel_err(ops.vjp(us), us.reshape(5, -1) @ jm) <= RTOL


def test_auto_resolves_by_device_and_records_why() -> None:
    c = case("mlp")
    ops = Linearization(c.build()).at(c.inputs(N))
    assert ops.cache == "linearized"  # CPU default
    assert "cpu default" in ops.cache_reason
    assert ops.cache_bytes > 0 and ops.setup_seconds >= 0
    assert "cache='linearized'" in repr(ops)


class DataDependent(nn.Module):
    """Python control flow on a tensor value: ``torch.func.linearize`` cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lin(x)
        return 2 * h if h.sum().item() > 0 else torch.tanh(h)


def test_untraceable_network_falls_back_to_pullback() -> None:
    torch.manual_seed(0)
    model = DataDependent().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    J = dense_jacobian(model, x).reshape(8, -1)
    ops = Linearization(model).at(x, cache="linearized")
    assert ops.cache == "pullback"
    assert "could not be traced" in ops.cache_reason
    v = _vectors(J.shape[1], seed=7)
    assert rel_err(ops.jvp(v), (J @ v).reshape(4, 2)) <= RTOL
    u = _vectors(4, 2, seed=8)
    assert rel_err(ops.vjp(u), J.T @ u.reshape(-1)) <= RTOL


def test_cache_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    c = case("cnn_bn")
    model, x = c.build(), c.inputs(N)
    monkeypatch.setattr(jacobian_at_module, "cache_budget", lambda device: 1)
    lin = Linearization(model)
    ops = lin.at(x)
    assert ops.cache == "none" and "exceeds" in ops.cache_reason and ops.cache_bytes == 0
    J = dense_jacobian(model, x)
    v = _vectors(J.shape[2], seed=9)
    assert rel_err(ops.jvp(v), (J.reshape(-1, J.shape[2]) @ v).reshape(N, -1)) <= RTOL
    with pytest.raises(ValueError, match="cache='pullback' would keep"):
        lin.at(x, cache="pullback")


def test_one_shot_products_are_chunked_by_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    c = case("cnn_bn")
    model, x = c.build(), c.inputs(7)
    lin = Linearization(model)
    per_point = lin.saved_bytes_per_point(lin.prepare_inputs(x))
    assert per_point > 0
    assert lin.saved_bytes_per_point(lin.prepare_inputs(c.inputs(3))) == per_point  # cached
    monkeypatch.setattr(linearization_module, "product_budget", lambda device: 3 * per_point)
    assert lin.product_chunk_size(x, 1) == 3
    assert lin.product_chunk_size(x, 2) == 1
    assert lin.product_chunk_size(x, 1000) == 1
    J = dense_jacobian(model, x)
    jm = J.reshape(-1, J.shape[2])
    vs = _vectors(2, J.shape[2], seed=10)
    assert rel_err(lin.jvp(x, vs), (vs @ jm.T).reshape(2, 7, -1)) <= RTOL
    us = _vectors(2, 7, J.shape[1], seed=11)
    assert rel_err(lin.vjp(x, us), us.reshape(2, -1) @ jm) <= RTOL
    assert Linearization(model, chunk_size=2).product_chunk_size(x, 1000) == 2


@pytest.mark.parametrize("name", ["cnn_bn", "dropout"])
def test_model_untouched(name: str) -> None:
    c = case(name)
    model = c.build()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = training_flags(model)
    ops = Linearization(model).at(c.inputs(N))
    ops.ntk_vp(_vectors(N, c.out_dim))
    assert training_flags(model) == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_input() -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    x = c.inputs(N)
    with pytest.raises(ValueError, match="cache must be one of"):
        lin.at(x, cache="everything")
    with pytest.raises(ValueError, match="must be a Linearization"):
        JacobianAt(c.build(), x)  # type: ignore[arg-type]
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        lin.at(bad)
    ops = lin.at(x)
    with pytest.raises(ValueError, match="v must have shape"):
        ops.jvp(torch.zeros(lin.num_params + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="u must have shape"):
        ops.vjp(torch.zeros(N + 1, c.out_dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        ops.vjp(torch.full((N, c.out_dim), float("inf"), dtype=torch.float64))


def test_adapt_records_and_validates_the_product_cache() -> None:
    from ntkcore import adapt

    c = case("mlp")
    model, x = c.build(), c.inputs(8)
    y = torch.sin(x[:, :2])
    dense = adapt(model, x, y, noise_variance=0.1, strategy="dense")
    for cache in ("none", "pullback", "linearized"):
        post = adapt(model, x, y, noise_variance=0.1, strategy="function", cache=cache, tol=1e-10)
        assert post.diagnostics["product_cache"] == cache
        xs = c.inputs(4, seed=9)
        assert rel_err(post.predict(xs).mean, dense.predict(xs).mean) <= 1e-7
    with pytest.raises(ValueError, match="cache must be one of"):
        adapt(model, x, y, noise_variance=0.1, strategy="function", cache="all")


def test_strict_false_degrades_to_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    monkeypatch.setattr(jacobian_at_module, "cache_budget", lambda device: 1)
    ops = lin.at(c.inputs(N), cache="linearized", strict=False)
    assert ops.cache == "none" and "exceeds" in ops.cache_reason


class CountingMLP(nn.Module):
    """Counts forward passes (calls of ``forward``, also under ``torch.func``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x)


def test_operators_keep_the_forward_pass_across_matmuls() -> None:
    from ntkcore.operators import NTKLinearOperator

    torch.manual_seed(0)
    model = CountingMLP().double()
    x = torch.randn(7, 3, dtype=torch.float64)
    J = dense_jacobian(model, x).reshape(14, -1)
    op = NTKLinearOperator(x, linearization=Linearization(model))
    rhs = _vectors(14, 2, seed=12)
    first = op @ rhs
    before = model.calls
    second = op @ rhs
    assert model.calls - before == 1  # the jvp's primal only; the vjp reuses its pullback
    assert rel_err(second, J @ J.T @ rhs) <= RTOL and torch.equal(first, second)


def test_operator_cache_follows_in_place_changes_of_x() -> None:
    from ntkcore.operators import NTKLinearOperator

    torch.manual_seed(1)
    model = make_counting_model()
    x = torch.randn(6, 3, dtype=torch.float64)
    lin = Linearization(model)
    rhs = _vectors(12, 1, seed=13)
    NTKLinearOperator(x, linearization=lin) @ rhs
    x.mul_(2.0)  # same tensor object, new values: the cached pullback must not be reused
    J = dense_jacobian(model, x).reshape(12, -1)
    assert rel_err(NTKLinearOperator(x, linearization=lin) @ rhs, J @ J.T @ rhs) <= RTOL


def make_counting_model() -> CountingMLP:
    return CountingMLP().double()


def test_reuse_hands_out_the_same_products_for_the_same_unmodified_tensor() -> None:
    c = case("mlp")
    lin = Linearization(c.build())
    x, other = c.inputs(N), c.inputs(N, seed=4)
    first = lin.at(x, cache="pullback", reuse=True)
    assert lin.at(x, cache="pullback", reuse=True) is first
    assert lin.at(x, cache="pullback") is not first  # reuse is opt-in
    assert lin.at(x, cache="none", reuse=True) is not first  # other options, other object
    x.add_(1.0)
    assert lin.at(x, cache="pullback", reuse=True) is not first  # modified in place
    a = lin.at(other, cache="pullback", reuse=True)
    lin.at(c.inputs(N, seed=5), cache="pullback", reuse=True)
    lin.at(c.inputs(N, seed=6), cache="pullback", reuse=True)
    assert lin.at(other, cache="pullback", reuse=True) is not a  # at most two kept
