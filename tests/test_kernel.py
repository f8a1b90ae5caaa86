"""GPyTorch integration: :class:`ntkcore.kernel.FiniteNTKKernel` inside ``ExactGP``.

References are independent of the code under test: kernel matrices against a dense
``torch.func.jacrev`` Jacobian (:func:`tests.models.dense_jacobian`), J1 J2ᵀ times the
prior variance, and a hand-written dense GP posterior; predictions and marginal
likelihoods against ``ntkcore.adapt(..., strategy="dense")`` (exact eigendecomposition),
gradients against central finite differences of that exact marginal likelihood.
Everything runs in float64 on small networks.

Tolerances (float64, CPU; measured values in parentheses):

* kernel matrix, diagonal, products, indexing: relative 1e-10 (≤ 5e-16);
* Cholesky-path predictions with and without ``fast_pred_var`` and with
  ``lazily_evaluate_kernels(False)``, weight-space prediction, ExactMarginalLogLikelihood·n
  against ``adapt(strategy="dense")``: relative 1e-8 (mean 1e-13, variance ≤ 9e-13,
  MLL 2e-13);
* CG path (``max_cholesky_size(0)``, ``eval_cg_tolerance(1e-6)``, 20 points): mean 1e-4
  (6e-6 to 2e-5); variance 1e-5 with LOVE (8e-7), 1e-3 with the pivoted-Cholesky
  preconditioner (4e-5) and 1e-2 without (4e-3). GPyTorch's ``linear_cg`` treats
  curvatures below 1e-10 as zero and stalls at a relative residual of ~1e-5 on
  normalized right-hand sides (on a 40 × 40 kernel of condition number 1.3e3 it reaches
  neither 1e-8 nor 1e-10 in 1,000 iterations), and prior − kᵀK⁻¹k amplifies that error
  about 100× here, so this path cannot be held tighter;
* MLL gradients against central differences of the exact LML: relative 1e-5.
"""

from __future__ import annotations

import math
import warnings

import gpytorch
import pytest
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.means import ZeroMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.models import ExactGP
from linear_operator import to_linear_operator
from linear_operator.operators import ConstantMulLinearOperator
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import ntkcore
from ntkcore.kernel import (
    FiniteNTKGP,
    FiniteNTKKernel,
    NetworkMean,
    ParameterSpacePredictionStrategy,
)
from ntkcore.linearization import Linearization
from ntkcore.operators import GaussNewtonLinearOperator, NTKLinearOperator
from ntkcore.operators.ntk_kernel_operator import NTKKernelLinearOperator
from tests.models import case, dense_jacobian, make_mlp

F64 = torch.float64
RTOL = 1e-10  # kernel entries
PRED_RTOL = 1e-8  # exact predictions and marginal likelihoods
NOISE, S2 = 0.05, 0.7


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖."""
    assert actual.shape == expected.shape, f"{tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    return (a - e).norm().item() / max(e.norm().item(), 1e-300)


def max_rel_err(actual: Tensor, expected: Tensor) -> float:
    """max_i |actual_i − expected_i| / |expected_i| (for positive quantities)."""
    assert actual.shape == expected.shape, f"{tuple(actual.shape)} != {tuple(expected.shape)}"
    return ((actual.detach() - expected.detach()).abs() / expected.detach().abs()).max().item()


def flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


@pytest.fixture(scope="module")
def problem() -> dict[str, Tensor | torch.nn.Module]:
    """Scalar-output tanh MLP (output shape (n,), p = 85), 40 train and 9 test points."""
    c = case("scalar_out")
    net = c.build()
    x = c.inputs(40, seed=1)
    xt = c.inputs(9, seed=2)
    g = torch.Generator().manual_seed(3)
    y = torch.sin(2 * x[:, 0]) * x[:, 1] + 0.1 * torch.randn(40, generator=g, dtype=F64)
    return {"net": net, "x": x, "y": y, "xt": xt}


def _dense_reference(problem: dict, mean: str = "zero") -> ntkcore.Prediction:
    post = ntkcore.adapt(
        problem["net"],
        problem["x"],
        problem["y"],
        mean=mean,
        noise_variance=NOISE,
        prior_variance=S2,
        strategy="dense",
    )
    return post.predict(problem["xt"])


# --------------------------------------------------------------------------- kernel matrix
@pytest.mark.parametrize("name", ["scalar_out", "cnn_bn"])
def test_kernel_matrix_equals_dense_jacobian_gram(name: str) -> None:
    c = case(name)
    net = c.build()
    x1, x2 = c.inputs(5, seed=1), c.inputs(4, seed=2)
    input_shape = c.input_shape if len(c.input_shape) > 1 else None
    kernel = FiniteNTKKernel(net, prior_variance=S2, input_shape=input_shape)
    j1 = dense_jacobian(net, x1).reshape(5 * c.out_dim, -1)
    j2 = dense_jacobian(net, x2).reshape(4 * c.out_dim, -1)

    cross = kernel(flat(x1), flat(x2))
    assert cross.shape == (5 * c.out_dim, 4 * c.out_dim)
    assert rel_err(cross.to_dense(), S2 * j1 @ j2.T) < RTOL
    square = kernel(flat(x1))
    assert rel_err(square.to_dense(), S2 * j1 @ j1.T) < RTOL
    # exact diagonal, from the kernel (diag=True) and from the lazy operator
    expected_diag = S2 * j1.square().sum(-1)
    assert rel_err(kernel(flat(x1), diag=True), expected_diag) < RTOL
    assert rel_err(square.evaluate_kernel().diagonal(), expected_diag) < RTOL
    # paired values k(x1_i, x2_i) for diag=True with x2 != x1
    x3 = c.inputs(5, seed=4)
    j3 = dense_jacobian(net, x3).reshape(5 * c.out_dim, -1)
    assert rel_err(kernel(flat(x1), flat(x3), diag=True), S2 * (j1 * j3).sum(-1)) < RTOL
    # matrix-free products
    v = torch.randn(4 * c.out_dim, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    assert rel_err(cross.evaluate_kernel() @ v, S2 * j1 @ (j2.T @ v)) < RTOL
    assert kernel.num_outputs_per_input(flat(x1), flat(x2)) == c.out_dim


def test_kernel_forward_returns_scaled_lazy_operator(problem: dict) -> None:
    kernel = FiniteNTKKernel(problem["net"], prior_variance=S2)
    out = kernel.forward(problem["x"], problem["x"])
    assert isinstance(out, ConstantMulLinearOperator)
    assert isinstance(out.base_linear_op, NTKKernelLinearOperator)
    assert out.base_linear_op.square
    assert float(kernel.prior_variance.detach()) == pytest.approx(S2, rel=1e-12)
    # the network is not a hyperparameter
    assert [n for n, _ in kernel.named_parameters()] == ["raw_prior_variance"]


def test_kernel_accepts_linearization_and_parameter_subsets(problem: dict) -> None:
    net = problem["net"]
    names = ["net.4.weight", "net.4.bias"]
    lin = Linearization(net, params=names)
    x = problem["x"][:6]
    j = dense_jacobian(net, x, names=names).reshape(6, -1)
    for kernel in (FiniteNTKKernel(lin), FiniteNTKKernel(net, params=names)):
        assert rel_err(kernel(x).to_dense(), j @ j.T) < RTOL


# --------------------------------------------------------------------------- indexing
def test_indexing_is_lazy_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    c = case("mlp")  # o = 2: rows are sample-major (i·o + a)
    net = c.build()
    n = 16
    x = c.inputs(n, seed=1)
    op = NTKKernelLinearOperator(x, linearization=Linearization(net), scale=S2)
    jac = dense_jacobian(net, x).reshape(2 * n, -1)
    dense = S2 * jac @ jac.T

    # slices aligned to whole samples stay lazy operators on the selected inputs
    for rows, cols in [(slice(0, 8), slice(0, 8)), (slice(8, None), slice(0, 8))]:
        sub = op[..., rows, cols]
        assert isinstance(sub, NTKKernelLinearOperator)
        assert sub.square == (rows == cols)
        assert rel_err(sub.to_dense(), dense[rows, cols]) < RTOL
    idx = torch.tensor([10, 11, 2, 3])  # samples 5 and 1, complete
    sub = op[idx, :][:, idx]
    assert isinstance(sub, NTKKernelLinearOperator)
    assert rel_err(sub.to_dense(), dense[idx][:, idx]) < RTOL
    # misaligned slices fall back to linear_operator's interpolated indexing, still exact
    assert rel_err(op[1:6, 3:].to_dense(), dense[1:6, 3:]) < RTOL

    # element-wise (tensor, tensor) indexing computes only the requested entries
    rows = torch.tensor([0, 3, 13, 7, 7])
    cols = torch.tensor([1, 3, 0, 12, 6])
    assert rel_err(op[rows, cols], dense[rows, cols]) < RTOL
    block = op[rows.unsqueeze(-1), torch.arange(2 * n).unsqueeze(-2)]  # kernel rows
    assert rel_err(block, dense[rows]) < RTOL
    # the pivoted-Cholesky preconditioner fetches rows this way
    piv = op.pivoted_cholesky(rank=4)
    assert rel_err(piv, to_linear_operator(dense).pivoted_cholesky(rank=4)) < 1e-8
    # a diagonal-like selection (many distinct points on both sides) takes paired dot
    # products of per-sample Jacobians, not a kernel block through jvp
    diag_like = torch.arange(2 * n)
    with monkeypatch.context() as m:
        m.setattr(Linearization, "jvp", lambda *a, **k: pytest.fail("kernel block formed"))
        assert rel_err(op[diag_like, diag_like], dense.diagonal()) < RTOL


def test_clone_and_detach_keep_the_exact_diagonal(problem: dict) -> None:
    kernel = FiniteNTKKernel(problem["net"], prior_variance=S2)
    op = kernel(problem["x"]).evaluate_kernel()
    j = dense_jacobian(problem["net"], problem["x"]).reshape(40, -1)
    for copy_ in (op.detach(), op.clone()):
        assert copy_.base_linear_op.square
        assert rel_err(copy_.diagonal(), S2 * j.square().sum(-1)) < RTOL


# --------------------------------------------------------------------------- ExactGP
class ZeroMeanGP(ExactGP):
    """A user-written ExactGP with ZeroMean and the finite-NTK kernel."""

    def __init__(self, x: Tensor, y: Tensor, likelihood, kernel) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = ZeroMean()
        self.covar_module = kernel

    def forward(self, x: Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _user_gp(problem: dict, **kernel_kw) -> ZeroMeanGP:
    likelihood = GaussianLikelihood().double()
    likelihood.noise = torch.tensor(NOISE, dtype=F64)
    kernel = FiniteNTKKernel(problem["net"], prior_variance=S2, **kernel_kw)
    return ZeroMeanGP(problem["x"], problem["y"], likelihood, kernel).eval()


@pytest.mark.parametrize("fast_pred_var", [False, True])
@pytest.mark.parametrize("lazy", [True, False])
def test_exactgp_predictions_equal_adapt(problem: dict, fast_pred_var: bool, lazy: bool) -> None:
    ref = _dense_reference(problem)
    gp = _user_gp(problem)
    with (
        torch.no_grad(),
        gpytorch.settings.fast_pred_var(fast_pred_var),
        gpytorch.settings.lazily_evaluate_kernels(lazy),
    ):
        out = gp(problem["xt"])
        mean, var = out.mean, out.variance
    assert rel_err(mean, ref.mean[:, 0]) < PRED_RTOL
    assert max_rel_err(var, ref.variance[:, 0]) < PRED_RTOL
    # the predictive (with noise) adds σ² to the latent variance
    with torch.no_grad():
        noisy = gp.likelihood(gp(problem["xt"])).variance
    assert max_rel_err(noisy, ref.variance[:, 0] + NOISE) < PRED_RTOL


def test_exactgp_matches_handwritten_dense_gp(problem: dict) -> None:
    """A reference independent of ntkcore: K = s² J Jᵀ from jacrev and the GP formulas."""
    net, x, y, xt = problem["net"], problem["x"], problem["y"], problem["xt"]
    j, jt = dense_jacobian(net, x)[:, 0], dense_jacobian(net, xt)[:, 0]
    k = S2 * j @ j.T + NOISE * torch.eye(40, dtype=F64)
    kst = S2 * jt @ j.T
    mean = kst @ torch.linalg.solve(k, y)
    var = S2 * jt.square().sum(-1) - (kst * torch.linalg.solve(k, kst.T).T).sum(-1)
    gp = _user_gp(problem)
    with torch.no_grad():
        out = gp(xt)
    assert rel_err(out.mean, mean) < PRED_RTOL
    assert max_rel_err(out.variance, var) < PRED_RTOL


@pytest.mark.parametrize(
    ("fast_pred_var", "preconditioned"), [(False, False), (False, True), (True, True)]
)
def test_exactgp_cg_path(
    problem: dict, fast_pred_var: bool, preconditioned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_cholesky_size(0): CG solves, Lanczos (LOVE) variances, pivoted-Cholesky rows."""
    problem = {**problem, "x": problem["x"][:20], "y": problem["y"][:20]}  # fewer CG steps
    ref = _dense_reference(problem)
    gp = _user_gp(problem)
    fetched: list[int] = []
    get_indices = NTKKernelLinearOperator._get_indices

    def spy(self, *args):
        fetched.append(1)
        return get_indices(self, *args)

    monkeypatch.setattr(NTKKernelLinearOperator, "_get_indices", spy)
    with (
        torch.no_grad(),
        gpytorch.settings.max_cholesky_size(0),
        gpytorch.settings.eval_cg_tolerance(1e-6),
        gpytorch.settings.terminate_cg_by_size(True),
        gpytorch.settings.fast_pred_var(fast_pred_var),
        # the pivoted-Cholesky preconditioner (default from n = 2000 on) fetches kernel
        # rows element-wise through NTKKernelLinearOperator._get_indices
        gpytorch.settings.min_preconditioning_size(4 if preconditioned else 10**6),
        gpytorch.settings.max_preconditioner_size(5),
        warnings.catch_warnings(),
    ):
        # linear_cg may warn that it stalled above 1e-6 (see the module docstring)
        warnings.simplefilter("ignore", NumericalWarning)
        out = gp(problem["xt"])
        mean, var = out.mean, out.variance
    assert bool(fetched) == preconditioned
    assert rel_err(mean, ref.mean[:, 0]) < 1e-4
    # Without LOVE the variance is prior − kᵀK⁻¹k from the CG solve; the posterior
    # variance is ~1e-2 of the prior, so the solve error is amplified ~100×.
    if fast_pred_var:
        assert max_rel_err(var, ref.variance[:, 0]) < 1e-5
    else:
        assert max_rel_err(var, ref.variance[:, 0]) < (1e-3 if preconditioned else 1e-2)


def test_marginal_log_likelihood_and_gradients(problem: dict) -> None:
    net, x, y = problem["net"], problem["x"], problem["y"]
    gp = FiniteNTKGP(net, x, y, noise_variance=NOISE, prior_variance=S2)
    gp.train()
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    value = mll(gp(x), y)
    n = x.shape[0]

    def exact_lml(sigma2: float, s2: float) -> float:
        post = ntkcore.adapt(
            net, x, y, mean="zero", noise_variance=sigma2, prior_variance=s2, strategy="dense"
        )
        return post.log_marginal_likelihood()

    sigma2 = float(gp.likelihood.noise.detach())
    s2 = float(gp.covar_module.prior_variance.detach())
    assert value.item() * n == pytest.approx(exact_lml(sigma2, s2), rel=PRED_RTOL)

    # d(MLL·n)/dσ² and d(MLL·n)/ds² by autograd through the lazy kernel vs central
    # differences of the exact (eigendecomposition) marginal likelihood.
    g_noise, g_s2 = torch.autograd.grad(
        value * n, [gp.likelihood.noise_covar.raw_noise, gp.covar_module.raw_prior_variance]
    )
    # chain rule through the softplus constraints: dL/draw = dL/dv · sigmoid(raw)
    dv_noise = torch.sigmoid(gp.likelihood.noise_covar.raw_noise.detach()).item()
    dv_s2 = torch.sigmoid(gp.covar_module.raw_prior_variance.detach()).item()
    h = 1e-5
    fd_noise = exact_lml(sigma2 * (1 + h), s2) - exact_lml(sigma2 * (1 - h), s2)
    fd_noise /= 2 * h * sigma2
    fd_s2 = (exact_lml(sigma2, s2 * (1 + h)) - exact_lml(sigma2, s2 * (1 - h))) / (2 * h * s2)
    assert g_noise.item() / dv_noise == pytest.approx(fd_noise, rel=1e-5)
    assert g_s2.item() / dv_s2 == pytest.approx(fd_s2, rel=1e-5)

    # a few Adam steps on σ² and s² through ExactMarginalLogLikelihood
    opt = torch.optim.Adam(gp.parameters(), lr=0.1)
    assert {id(p) for p in gp.parameters()} == {
        id(gp.likelihood.noise_covar.raw_noise),
        id(gp.covar_module.raw_prior_variance),
    }
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = -mll(gp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert float(gp.likelihood.noise.detach()) != pytest.approx(sigma2, rel=1e-3)
    assert float(gp.covar_module.prior_variance.detach()) != pytest.approx(s2, rel=1e-3)
    # the trained GP still predicts like adapt at the new hyperparameters
    gp.eval()
    sigma2 = float(gp.likelihood.noise.detach())
    s2 = float(gp.covar_module.prior_variance.detach())
    ref = ntkcore.adapt(
        net, x, y, mean="zero", noise_variance=sigma2, prior_variance=s2, strategy="dense"
    ).predict(problem["xt"])
    with torch.no_grad():
        out = gp(problem["xt"])
    assert rel_err(out.mean, ref.mean[:, 0]) < PRED_RTOL


def test_network_mean_and_multitask_outputs() -> None:
    """o = 2: multitask GP (interleaved, sample-major) with m(x) = f(x; θ)."""
    c = case("mlp")
    net = c.build()
    x, xt = c.inputs(15, seed=1), c.inputs(5, seed=2)
    y = torch.stack([torch.sin(x[:, 0]), torch.cos(x[:, 1] * x[:, 2])], dim=-1)
    for prediction in ("function", "parameter"):
        gp = FiniteNTKGP(
            net,
            x,
            y,
            mean="network",
            noise_variance=NOISE,
            prior_variance=S2,
            prediction=prediction,
        ).eval()
        ref = ntkcore.adapt(
            net,
            x,
            y,
            mean="network",
            noise_variance=float(gp.likelihood.noise.detach()),
            prior_variance=S2,
            strategy="dense",
        ).predict(xt)
        with torch.no_grad():
            out = gp(xt)
            mean, var = out.mean, out.variance
        assert mean.shape == (5, 2)
        assert rel_err(mean, ref.mean) < PRED_RTOL
        assert max_rel_err(var, ref.variance) < PRED_RTOL
    gp.train()
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    post = ntkcore.adapt(
        net,
        x,
        y,
        mean="network",
        noise_variance=float(gp.likelihood.noise.detach()),
        prior_variance=S2,
        strategy="dense",
    )
    assert mll(gp(x), y).item() * 30 == pytest.approx(post.log_marginal_likelihood(), rel=1e-8)


def test_image_inputs_through_input_shape() -> None:
    c = case("cnn_bn")  # (2, 6, 6) inputs, 3 outputs
    net = c.build()
    x, xt = c.inputs(8, seed=1), c.inputs(3, seed=2)
    y = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    gp = FiniteNTKGP(
        net, flat(x), y, noise_variance=NOISE, prior_variance=S2, input_shape=c.input_shape
    ).eval()
    ref = ntkcore.adapt(
        net,
        x,
        y,
        mean="zero",
        noise_variance=float(gp.likelihood.noise.detach()),
        prior_variance=S2,
        strategy="dense",
    ).predict(xt)
    with torch.no_grad():
        out = gp(flat(xt))
    assert rel_err(out.mean, ref.mean) < PRED_RTOL
    assert max_rel_err(out.variance, ref.variance) < PRED_RTOL


# --------------------------------------------------------------------------- weight space
def test_parameter_prediction_equals_dense(problem: dict) -> None:
    ref = _dense_reference(problem)
    gp = _user_gp(problem, prediction="parameter")
    with torch.no_grad():
        out = gp(problem["xt"])
        mean, var = out.mean, out.variance
        cov = out.covariance_matrix
    assert isinstance(gp.prediction_strategy, ParameterSpacePredictionStrategy)
    post = gp.prediction_strategy.posterior
    assert post.strategy == "parameter" and post.diagnostics["converged"]
    assert post.diagnostics["exact_variance"]
    assert rel_err(mean, ref.mean[:, 0]) < PRED_RTOL
    assert max_rel_err(var, ref.variance[:, 0]) < PRED_RTOL
    # full test covariance against the function-space (default) strategy
    gp_fn = _user_gp(problem)
    with torch.no_grad():
        cov_fn = gp_fn(problem["xt"]).covariance_matrix
    assert rel_err(cov, cov_fn) < PRED_RTOL
    # changing σ² in eval mode refits (GPyTorch's caches would not notice)
    gp.likelihood.noise = torch.tensor(2 * NOISE, dtype=F64)
    ref2 = ntkcore.adapt(
        problem["net"],
        problem["x"],
        problem["y"],
        mean="zero",
        noise_variance=float(gp.likelihood.noise.detach()),
        prior_variance=S2,
        strategy="dense",
    ).predict(problem["xt"])
    with torch.no_grad():
        assert rel_err(gp(problem["xt"]).mean, ref2.mean[:, 0]) < PRED_RTOL


def test_parameter_prediction_through_scale_kernel(problem: dict) -> None:
    """ScaleKernel(FiniteNTKKernel): the total prior variance is outputscale · s²."""
    likelihood = GaussianLikelihood().double()
    likelihood.noise = torch.tensor(NOISE, dtype=F64)
    base = FiniteNTKKernel(problem["net"], prior_variance=0.5, prediction="parameter")
    kernel = ScaleKernel(base)
    kernel.double()
    kernel.outputscale = torch.tensor(2 * S2, dtype=F64)
    gp = ZeroMeanGP(problem["x"], problem["y"], likelihood, kernel).eval()
    ref = ntkcore.adapt(
        problem["net"],
        problem["x"],
        problem["y"],
        mean="zero",
        noise_variance=NOISE,
        prior_variance=S2,
        strategy="dense",
    ).predict(problem["xt"])
    with torch.no_grad():
        out = gp(problem["xt"])
    assert isinstance(gp.prediction_strategy, ParameterSpacePredictionStrategy)
    assert rel_err(out.mean, ref.mean[:, 0]) < PRED_RTOL
    assert max_rel_err(out.variance, ref.variance[:, 0]) < PRED_RTOL


class _NoLargeMatrices(TorchDispatchMode):
    """Fail on any tensor with two dimensions of size >= ``limit`` (n×n, p×p, n×p)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.dim() >= 2:
                second = sorted(t.shape)[-2]
                self.largest = max(self.largest, second)
                if second >= self.limit:
                    raise AssertionError(f"{func} allocated a {tuple(t.shape)} tensor")
        return out


def test_parameter_prediction_never_forms_large_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = make_mlp(3, 24, 1).double()  # p = 721
    n, m = 240, 6
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, dtype=F64, generator=g)
    y = torch.sin(x.sum(-1))
    xt = torch.randn(m, 3, dtype=F64, generator=g)
    p = sum(q.numel() for q in net.parameters())
    ref = ntkcore.adapt(
        net, x, y, mean="zero", noise_variance=NOISE, prior_variance=S2, strategy="dense"
    ).predict(xt)

    def forbidden(*args, **kwargs):
        raise AssertionError("a dense kernel, Gauss-Newton matrix or Jacobian was formed")

    monkeypatch.setattr(NTKLinearOperator, "to_dense", forbidden)
    monkeypatch.setattr(GaussNewtonLinearOperator, "to_dense", forbidden)
    monkeypatch.setattr(Linearization, "ntk", forbidden)
    monkeypatch.setattr(Linearization, "jacobian", forbidden)
    gp = FiniteNTKGP(
        net,
        x,
        y,
        noise_variance=NOISE,
        prior_variance=S2,
        prediction="parameter",
        parameter_options={"rank": 32},
    ).eval()
    mode = _NoLargeMatrices(limit=min(n, p))
    with torch.no_grad(), mode:
        out = gp(xt)
        mean, var = out.mean, out.variance
    assert 0 < mode.largest < min(n, p)
    post = gp.prediction_strategy.posterior
    assert post.diagnostics["converged"]
    assert rel_err(mean, ref.mean[:, 0]) < 1e-6  # CG to its float64 tolerance 1e-8
    # rank-32 variance factor: a Galerkin upper bound of the exact variance, below the prior
    prior = S2 * ntkcore.Linearization(net).ntk_diag(xt)[:, 0]
    assert torch.all(var >= ref.variance[:, 0] * (1 - 1e-8))
    assert torch.all(var <= prior * (1 + 1e-8))


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_error(problem: dict) -> None:
    net, x, y = problem["net"], problem["x"], problem["y"]
    kernel = FiniteNTKKernel(net)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        kernel(x.unsqueeze(0)).to_dense()
    with pytest.raises(ValueError, match="last_dim_is_batch"):
        kernel.forward(x, x, last_dim_is_batch=True)
    with pytest.raises(ValueError, match="non-finite"):
        kernel(torch.full_like(x, math.nan)).to_dense()
    with pytest.raises(ValueError, match="same number of points"):
        kernel(x[:3], x[:4], diag=True)
    image = FiniteNTKKernel(case("cnn_bn").build(), input_shape=(2, 6, 6))
    with pytest.raises(ValueError, match="input_shape"):
        image(torch.zeros(3, 71, dtype=F64)).to_dense()
    with pytest.raises(ValueError, match="input_shape"):
        FiniteNTKKernel(net, input_shape=(0, 3))
    with pytest.raises(ValueError, match="prior_variance"):
        FiniteNTKKernel(net, prior_variance=-1.0)
    with pytest.raises(ValueError, match="prior_variance"):
        FiniteNTKKernel(net, prior_variance=math.inf)
    with pytest.raises(ValueError, match="prediction"):
        FiniteNTKKernel(net, prediction="weights")
    with pytest.raises(ValueError, match="parameter_options"):
        FiniteNTKKernel(net, parameter_options={"tolerance": 1e-3})
    with pytest.raises(ValueError, match="Linearization"):
        FiniteNTKKernel(Linearization(net), params="net.4.weight")
    with pytest.raises(ValueError, match="nn.Module"):
        FiniteNTKKernel("not a model")
    with pytest.raises(ValueError, match="Linearization"):
        NetworkMean(net)
    with pytest.raises(ValueError, match="train_y must have shape"):
        FiniteNTKGP(net, x, y[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        FiniteNTKGP(net, x, torch.full_like(y, math.nan))
    with pytest.raises(ValueError, match="mean"):
        FiniteNTKGP(net, x, y, mean="constant")
    with pytest.raises(ValueError, match="noise_variance"):
        FiniteNTKGP(net, x, y, likelihood=GaussianLikelihood(), noise_variance=0.1)

    # parameter-space prediction needs one homoskedastic noise variance
    fixed = FixedNoiseGaussianLikelihood(noise=torch.full((40,), NOISE, dtype=F64))
    gp = ZeroMeanGP(x, y, fixed, FiniteNTKKernel(net, prediction="parameter")).eval()
    with pytest.raises(ValueError, match="GaussianLikelihood"), torch.no_grad():
        gp(problem["xt"])
