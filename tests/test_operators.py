"""The ``linear_operator`` operators of :mod:`ntkcore.operators` against dense Jacobians.

A reusable contract in the style of linear_operator's ``LinearOperatorTestCase``:
:class:`RectangularOperatorContract` checks products (vectors, matrices, transposed and
left products), ``to_dense``, indexing, scaling and shape/dtype/device of any operator
against its dense form; :class:`SquareOperatorContract` adds ``diagonal``, adding a
diagonal (``op + DiagLinearOperator(d)``), solving with it (Cholesky and CG paths of
linear_operator) and its log-determinant. Each concrete class builds the dense matrix
*in the test* from ``torch.func.jacrev`` Jacobians (:func:`tests.models.dense_jacobian`),
never from the engine.

Covered: J and Jᵀ (:class:`JacobianLinearOperator`), the square and cross finite NTK
s²·J₁J₂ᵀ (:class:`NTKLinearOperator`) and the Gauss–Newton matrix JᵀJ
(:class:`GaussNewtonLinearOperator`), on a tanh MLP (o = 2), a CNN with BatchNorm
(o = 3, image inputs), tied weights with buffers, a parameter subset, chunked
linearizations and float32.
"""

from __future__ import annotations

import warnings

import linear_operator
import pytest
import torch
from linear_operator.operators import DiagLinearOperator, LinearOperator
from torch import Tensor

from ntkcore.linearization import Linearization
from ntkcore.operators import (
    FisherLinearOperator,
    GaussNewtonLinearOperator,
    JacobianLinearOperator,
    NTKLinearOperator,
)
from ntkcore.parameters import last_layers
from tests.models import case, dense_jacobian, dense_output

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_intraop_thread")


def flat_jacobian(model: torch.nn.Module, x: Tensor, names: list[str] | None = None) -> Tensor:
    """Dense J of shape (n·o, p), rows sample-major, from ``jacrev`` (float64)."""
    jac = dense_jacobian(model, x, names)
    return jac.reshape(-1, jac.shape[-1]).to(F64)


def assert_matches(actual: Tensor | LinearOperator, expected: Tensor, rtol: float) -> None:
    if isinstance(actual, LinearOperator):
        actual = actual.to_dense()
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    a, e = actual.detach().to(F64), expected.detach().to(F64)
    scale = float(torch.linalg.norm(e)) or 1.0
    err = float(torch.linalg.norm(a - e)) / scale
    assert err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


# --------------------------------------------------------------------------- contracts
class RectangularOperatorContract:
    """Checks any operator against its dense form.

    Subclasses implement :meth:`create` returning ``(operator, dense)`` and may set
    ``rtol`` (relative Frobenius error) and ``dtype``.
    """

    rtol: float = 1e-10
    dtype: torch.dtype = F64

    def create(self) -> tuple[LinearOperator, Tensor]:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def pair(cls) -> tuple[LinearOperator, Tensor]:
        return cls().create()

    def rand(self, *shape: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=F64).to(self.dtype)

    def test_shape_dtype_device(self, pair) -> None:
        op, dense = pair
        assert isinstance(op, LinearOperator)
        assert op.shape == dense.shape
        assert op.size() == dense.shape
        assert op.dim() == 2 and op.batch_shape == torch.Size([])
        assert op.dtype == self.dtype
        assert op.device == torch.device("cpu")
        assert op.to_dense().dtype == self.dtype

    def test_to_dense(self, pair) -> None:
        op, dense = pair
        assert_matches(op.to_dense(), dense, self.rtol)

    def test_matmul_vector(self, pair) -> None:
        op, dense = pair
        v = self.rand(op.shape[-1], seed=1)
        out = op @ v
        assert out.shape == (op.shape[0],) and out.dtype == self.dtype
        assert_matches(out, dense @ v.to(F64), self.rtol)
        assert_matches(op.matmul(v), dense @ v.to(F64), self.rtol)

    @pytest.mark.parametrize("k", [1, 3])
    def test_matmul_matrix(self, pair, k: int) -> None:
        op, dense = pair
        m = self.rand(op.shape[-1], k, seed=2)
        out = op @ m
        assert out.shape == (op.shape[0], k)
        assert_matches(out, dense @ m.to(F64), self.rtol)

    def test_transpose(self, pair) -> None:
        op, dense = pair
        op_t = op.mT
        assert op_t.shape == (op.shape[1], op.shape[0])
        assert_matches(op_t.to_dense(), dense.mT, self.rtol)
        u = self.rand(op.shape[0], 3, seed=3)
        assert_matches(op_t @ u, dense.mT @ u.to(F64), self.rtol)
        assert_matches(op_t @ u[:, 0], dense.mT @ u[:, 0].to(F64), self.rtol)
        assert_matches(
            op.mT.mT @ self.rand(op.shape[1], 2),
            dense @ self.rand(op.shape[1], 2).to(F64),
            self.rtol,
        )

    def test_t_matmul(self, pair) -> None:
        op, dense = pair
        u = self.rand(op.shape[0], 2, seed=4)
        assert_matches(op._t_matmul(u), dense.mT @ u.to(F64), self.rtol)
        assert_matches(op._t_matmul(u[:, 0]), dense.mT @ u[:, 0].to(F64), self.rtol)

    def test_left_product(self, pair) -> None:
        op, dense = pair
        lhs = self.rand(2, op.shape[0], seed=5)
        assert_matches(lhs @ op, lhs.to(F64) @ dense, self.rtol)

    def test_index_rows(self, pair) -> None:
        op, dense = pair
        rows = [0, op.shape[0] - 1, 1]
        assert_matches(op[rows], dense[rows], self.rtol)
        assert_matches(op[1:3], dense[1:3], self.rtol)
        assert_matches(op[1], dense[1], self.rtol)
        assert_matches(op[:, 0:2], dense[:, 0:2], self.rtol)
        entry = op[1, op.shape[1] - 1]
        scale = float(dense.abs().max())
        assert abs(float(entry) - float(dense[1, -1])) <= self.rtol * scale

    def test_scaled(self, pair) -> None:
        op, dense = pair
        v = self.rand(op.shape[-1], seed=6)
        assert_matches((op * 2.5) @ v, 2.5 * (dense @ v.to(F64)), self.rtol)


class SquareOperatorContract(RectangularOperatorContract):
    """Adds the checks of symmetric positive semi-definite operators."""

    shift: float = 0.3

    def test_is_square_and_symmetric(self, pair) -> None:
        op, dense = pair
        assert op.shape[0] == op.shape[1]
        torch.testing.assert_close(dense, dense.mT)  # guards the test's own reference

    def test_diagonal(self, pair) -> None:
        op, dense = pair
        diag = op.diagonal()
        assert diag.shape == (op.shape[0],) and diag.dtype == self.dtype
        assert_matches(diag, torch.diagonal(dense), self.rtol)
        assert_matches(op._diagonal(), torch.diagonal(dense), self.rtol)

    def added(self, op: LinearOperator) -> tuple[LinearOperator, Tensor]:
        d = self.shift + 0.1 * torch.rand(
            op.shape[0], generator=torch.Generator().manual_seed(7), dtype=F64
        )
        return op + DiagLinearOperator(d.to(self.dtype)), d

    def test_add_diagonal(self, pair) -> None:
        op, dense = pair
        plus, d = self.added(op)
        assert plus.shape == op.shape
        assert_matches(plus.to_dense(), dense + torch.diag(d), self.rtol)
        assert_matches(plus.diagonal(), torch.diagonal(dense) + d, self.rtol)
        assert_matches(op.add_diagonal(d.to(self.dtype)), dense + torch.diag(d), self.rtol)
        v = self.rand(op.shape[0], seed=8)
        assert_matches(plus @ v, (dense + torch.diag(d)) @ v.to(F64), self.rtol)

    def test_solve_with_added_diagonal(self, pair) -> None:
        op, dense = pair
        plus, d = self.added(op)
        b = self.rand(op.shape[0], 2, seed=9)
        expected = torch.linalg.solve(dense + torch.diag(d), b.to(F64))
        # Cholesky path (linear_operator densifies small operators) ...
        assert_matches(plus.solve(b), expected, max(self.rtol, 1e-9) * 1e3)
        # ... and the iterative path: linear_cg with its pivoted-Cholesky preconditioner,
        # which reads the diagonal and rows of the operator
        with (
            linear_operator.settings.max_cholesky_size(0),
            linear_operator.settings.cg_tolerance(1e-6),
            linear_operator.settings.max_cg_iterations(200),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            solution = plus.solve(b)
        residual = torch.linalg.norm((dense + torch.diag(d)) @ solution.to(F64) - b.to(F64))
        assert float(residual / torch.linalg.norm(b.to(F64))) <= 1e-4

    def test_logdet_with_added_diagonal(self, pair) -> None:
        op, dense = pair
        plus, d = self.added(op)
        expected = float(torch.logdet(dense + torch.diag(d)))
        assert float(plus.logdet()) == pytest.approx(expected, rel=max(1e-8, self.rtol))


# --------------------------------------------------------------------------- problems
def mlp_problem(dtype: torch.dtype = F64):
    c = case("mlp")  # tanh MLP 3 → 8 → 8 → 2, p = 122
    model = c.build()
    x1, x2 = c.inputs(5, seed=1), c.inputs(3, seed=2)
    j1, j2 = flat_jacobian(model, x1), flat_jacobian(model, x2)
    if dtype != F64:
        model = model.to(dtype)
        x1, x2 = x1.to(dtype), x2.to(dtype)
    return model, x1, x2, j1, j2


def cnn_problem(n: int = 4):
    c = case("cnn_bn")  # conv/BatchNorm CNN on (2, 6, 6) images, o = 3, p = 287
    model = c.build()  # train mode: the operators must evaluate in eval mode
    x = c.inputs(n, seed=3)
    return model, x, flat_jacobian(model, x)


class TestJacobianMLP(RectangularOperatorContract):
    def create(self):
        model, x1, _, j1, _ = mlp_problem()
        return JacobianLinearOperator(x1, linearization=Linearization(model)), j1


class TestJacobianTransposeMLP(RectangularOperatorContract):
    def create(self):
        model, x1, _, j1, _ = mlp_problem()
        lin = Linearization(model)
        return JacobianLinearOperator(x1, linearization=lin, transpose=True), j1.mT


class TestJacobianCNNChunked(RectangularOperatorContract):
    def create(self):
        model, x, j = cnn_problem(5)
        return JacobianLinearOperator(x, linearization=Linearization(model, chunk_size=2)), j


class TestJacobianLastLayer(RectangularOperatorContract):
    def create(self):
        c = case("mlp")
        model = c.build()
        x = c.inputs(4, seed=4)
        names = last_layers(model, 1)
        lin = Linearization(model, params=names)
        return JacobianLinearOperator(x, linearization=lin), flat_jacobian(model, x, names)


class TestNTKSquareCNN(SquareOperatorContract):
    def create(self):
        model, x, j = cnn_problem(4)
        op = NTKLinearOperator(x, linearization=Linearization(model), scale=0.7)
        return op, 0.7 * j @ j.mT


class TestNTKSquareTiedChunked(SquareOperatorContract):
    def create(self):
        c = case("tied_buffer")
        model = c.build()
        x = c.inputs(5, seed=5)
        j = flat_jacobian(model, x)
        lin = Linearization(model, chunk_size=2)
        return NTKLinearOperator(x, linearization=lin), j @ j.mT


class TestNTKCrossMLP(RectangularOperatorContract):
    def create(self):
        model, x1, x2, j1, j2 = mlp_problem()
        op = NTKLinearOperator(x1, x2, linearization=Linearization(model), scale=1.3)
        return op, 1.3 * j1 @ j2.mT


class TestNTKSquareMLPFloat32(SquareOperatorContract):
    rtol = 1e-5
    dtype = torch.float32
    shift = 1.0

    def create(self):
        model, x1, _, j1, _ = mlp_problem(torch.float32)
        op = NTKLinearOperator(x1, linearization=Linearization(model), scale=2.0)
        return op, 2.0 * j1 @ j1.mT


class TestGaussNewtonMLP(SquareOperatorContract):
    def create(self):
        model, x1, _, j1, _ = mlp_problem()
        op = GaussNewtonLinearOperator(x1, linearization=Linearization(model), scale=0.5)
        return op, 0.5 * j1.mT @ j1


class TestGaussNewtonScalarChunked(SquareOperatorContract):
    def create(self):
        c = case("scalar_out")  # o = 1, output shape (n,)
        model = c.build()
        x = c.inputs(6, seed=6)
        j = flat_jacobian(model, x)
        lin = Linearization(model, chunk_size=4)
        return GaussNewtonLinearOperator(x, linearization=lin), j.mT @ j


class TestFisherGaussianCNN(SquareOperatorContract):
    # Gaussian likelihood: Λᵢ = I, so F = JᵀJ / n
    def create(self):
        model, x, j = cnn_problem(4)
        op = FisherLinearOperator(x, linearization=Linearization(model), method="exact")
        return op, j.mT @ j / x.shape[0]


class TestFisherCategoricalMLP(SquareOperatorContract):
    # Categorical likelihood: Λᵢ = diag(πᵢ) − πᵢπᵢᵀ with πᵢ = softmax(f(xᵢ))
    shift = 0.05

    def create(self):
        c = case("mlp")
        model = c.build()
        x = c.inputs(6, seed=7)
        jac = dense_jacobian(model, x).to(F64)  # (n, o, p)
        pi = torch.softmax(dense_output(model, x), -1)
        lam = torch.diag_embed(pi) - pi.unsqueeze(-1) * pi.unsqueeze(-2)
        dense = torch.einsum("nap,nab,nbq->pq", jac, lam, jac) / x.shape[0]
        op = FisherLinearOperator(
            x, linearization=Linearization(model), likelihood="categorical", method="exact"
        )
        return op, dense


# --------------------------------------------------------------------------- specifics
def test_ntk_diagonal_never_forms_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, j = cnn_problem(4)
    lin = Linearization(model)
    op = NTKLinearOperator(x, linearization=lin, scale=1.5)

    def forbidden(*args, **kwargs):
        raise AssertionError("the diagonal must not build the explicit kernel")

    monkeypatch.setattr(lin, "ntk", forbidden)
    monkeypatch.setattr(lin, "jacobian", forbidden)
    expected = 1.5 * j.square().sum(-1)
    assert_matches(op.diagonal(), expected, 1e-10)


def test_ntk_with_the_same_inputs_twice_is_square() -> None:
    model, x1, _, j1, _ = mlp_problem()
    op = NTKLinearOperator(x1, x1, linearization=Linearization(model))
    assert_matches(op.diagonal(), torch.diagonal(j1 @ j1.mT), 1e-10)


def test_ntk_cross_diagonal_raises() -> None:
    model, x1, x2, _, _ = mlp_problem()
    op = NTKLinearOperator(x1, x2, linearization=Linearization(model))
    with pytest.raises(ValueError, match="square"):
        op._diagonal()


def test_operators_leave_the_model_untouched() -> None:
    model, x, j = cnn_problem(3)
    flags = {name: m.training for name, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lin = Linearization(model)
    for op in (
        JacobianLinearOperator(x, linearization=lin),
        NTKLinearOperator(x, linearization=lin),
        GaussNewtonLinearOperator(x, linearization=lin),
    ):
        op @ torch.ones(op.shape[-1], dtype=F64)
        op.diagonal() if op.shape[0] == op.shape[1] else op.to_dense()
    assert {name: m.training for name, m in model.named_modules()} == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gauss_newton_is_jacobian_transpose_times_jacobian_operator() -> None:
    # The weight-space Gram matrix composes from two Jacobian operators as linear_operator
    # products; both sides are checked against the dense jacrev product.
    model, x1, _, j1, _ = mlp_problem()
    lin = Linearization(model)
    jac = JacobianLinearOperator(x1, linearization=lin)
    jac_t = JacobianLinearOperator(x1, linearization=lin, transpose=True)
    v = torch.randn(lin.num_params, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert_matches(jac_t @ (jac @ v), j1.mT @ (j1 @ v), 1e-10)
    assert_matches(GaussNewtonLinearOperator(x1, linearization=lin) @ v, j1.mT @ j1 @ v, 1e-10)


@pytest.mark.parametrize("kind", ["jacobian", "ntk", "gauss_newton"])
def test_dtype_conversion_is_honest(kind: str) -> None:
    # linear_operator's .to(dtype)/.float() rebuild the operator from its tensor
    # arguments; the result must either really be float32 or refuse clearly.
    model, x1, _, j1, _ = mlp_problem()
    lin = Linearization(model)
    op, dense = {
        "jacobian": (JacobianLinearOperator(x1, linearization=lin), j1),
        "ntk": (NTKLinearOperator(x1, linearization=lin), j1 @ j1.mT),
        "gauss_newton": (GaussNewtonLinearOperator(x1, linearization=lin), j1.mT @ j1),
    }[kind]
    try:
        converted = op.to(torch.float32)
    except ValueError:
        return
    v = torch.ones(op.shape[-1], dtype=torch.float32)
    out = converted @ v
    assert converted.dtype == torch.float32 and out.dtype == torch.float32
    assert_matches(out, dense @ v.to(F64), 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_operators_on_cuda() -> None:
    model, x, j = cnn_problem(4)
    cuda = torch.device("cuda")
    lin = Linearization(model.to(cuda))
    xc = x.to(cuda)
    for op, dense in [
        (JacobianLinearOperator(xc, linearization=lin), j),
        (NTKLinearOperator(xc, linearization=lin, scale=0.7), 0.7 * j @ j.mT),
        (GaussNewtonLinearOperator(xc, linearization=lin), j.mT @ j),
    ]:
        assert op.device.type == "cuda"
        v = torch.randn(op.shape[-1], 3, generator=torch.Generator().manual_seed(0), dtype=F64)
        out = op @ v.to(cuda)
        assert out.device.type == "cuda"
        assert_matches(out.cpu(), dense @ v, 1e-8)
        if op.shape[0] == op.shape[1]:
            assert_matches(op.diagonal().cpu(), torch.diagonal(dense), 1e-8)
