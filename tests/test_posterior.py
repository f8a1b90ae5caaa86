"""``ntkcore.adapt`` against the explicit dense GP formulas written in this file.

The reference (:class:`DenseGP`) builds J with ``torch.func.jacrev``
(:func:`tests.models.dense_jacobian`), never with the engine, and evaluates the
finite-NTK GP of the paper (Eq. 1–3) literally:

    K = s² J Jᵀ + σ² I,   r = y − m(X)
    mean  = m(X*) + s² J* Jᵀ K⁻¹ r
    var   = s² diag(J* J*ᵀ) − s⁴ diag(J* Jᵀ K⁻¹ J J*ᵀ)
    log p = −½ rᵀ K⁻¹ r − ½ log|K| − (N/2) log 2π

Every strategy (dense, function, parameter) and both prior means (network, zero) are
checked on both regimes n·o < p and n·o > p, multi-output models (o = 2, 3), a CNN with
BatchNorm (in train mode: the engine must linearize the eval-mode function), a model
with one output and (n,) targets, a parameter subset with chunking, and float32. Further:
the automatic choice, low-rank variances (an upper bound, close for a fast-decaying
spectrum), the stochastic log marginal likelihood within its standard errors, honest
diagnostics (the reported residual recomputed here from dense J), non-convergence
warnings, the :class:`~ntkcore.posterior.Prediction` API and the ValueErrors.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from functools import cache

import pytest
import torch
from torch import Tensor, nn

from ntkcore.linearization import Linearization
from ntkcore.parameters import last_layers
from ntkcore.posterior import Posterior, Prediction, adapt, choose_strategy
from ntkcore.solvers import ConvergenceWarning
from tests.models import case, dense_jacobian, dense_output, make_mlp

F64 = torch.float64
STRATEGIES = ("dense", "function", "parameter")
MEANS = ("network", "zero")
MEAN_RTOL = 1e-8  # the issue asks for 1e-6; exact solves in float64 do far better
VAR_RTOL = 1e-8


pytestmark = pytest.mark.usefixtures("one_intraop_thread")


# --------------------------------------------------------------------------- reference
@dataclass
class DenseGP:
    """The explicit finite-NTK GP posterior and marginal likelihood (float64)."""

    mean: Tensor  # (m, o)
    variance: Tensor  # (m, o)
    lml: float
    jac: Tensor  # J, (N, p)
    resid: Tensor  # r, (N,)

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        x_star: Tensor,
        *,
        noise_variance: float,
        prior_variance: float,
        mean: str,
        names: list[str] | None = None,
    ) -> DenseGP:
        s2, sigma2 = prior_variance, noise_variance
        n, m = x.shape[0], x_star.shape[0]
        jac = dense_jacobian(model, x, names).to(F64)
        o = jac.shape[1]
        jac = jac.reshape(n * o, -1)
        jac_star = dense_jacobian(model, x_star, names).to(F64).reshape(m * o, -1)
        if mean == "network":
            prior, prior_star = dense_output(model, x).to(F64), dense_output(model, x_star)
        else:
            prior, prior_star = torch.zeros(n, o, dtype=F64), torch.zeros(m, o, dtype=F64)
        r = (y.to(F64).reshape(n, o) - prior).reshape(-1)
        big_n = n * o
        k = s2 * jac @ jac.mT + sigma2 * torch.eye(big_n, dtype=F64)
        chol = torch.linalg.cholesky(k)
        k_inv_r = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
        post_mean = prior_star.to(F64).reshape(-1) + s2 * jac_star @ (jac.mT @ k_inv_r)
        cross = jac @ jac_star.mT  # J J*ᵀ, (N, M)
        quad = (cross * torch.cholesky_solve(cross, chol)).sum(0)
        var = s2 * jac_star.square().sum(-1) - s2**2 * quad
        lml = (
            -0.5 * float(r @ k_inv_r)
            - float(torch.log(torch.diagonal(chol)).sum())
            - 0.5 * big_n * math.log(2 * math.pi)
        )
        return cls(post_mean.reshape(m, o), var.reshape(m, o), lml, jac, r)


def rel_err(actual: Tensor, expected: Tensor) -> float:
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    a, e = actual.detach().to(F64), expected.detach().to(F64)
    return float(torch.linalg.norm(a - e) / torch.linalg.norm(e))


# --------------------------------------------------------------------------- problems
class OneDimensionalMLP(nn.Module):
    """tanh MLP on scalar inputs: its NTK on a grid has a fast-decaying spectrum."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = make_mlp(1, 16, 1, depth=2).to(F64)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class Problem:
    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    x_star: Tensor
    noise_variance: float
    prior_variance: float

    @property
    def o(self) -> int:
        return 1 if self.y.dim() == 1 else self.y.shape[1]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _targets(x: Tensor, o: int, seed: int) -> Tensor:
    flat = x.reshape(x.shape[0], -1)
    g = torch.Generator().manual_seed(seed)
    cols = [torch.sin((a + 1) * flat[:, a % flat.shape[1]]) + 0.3 * flat[:, 0] for a in range(o)]
    y = torch.stack(cols, -1) + 0.05 * torch.randn(x.shape[0], o, generator=g, dtype=F64)
    return y


@cache
def problem(name: str) -> Problem:
    if name in ("mlp_under", "mlp_over"):  # tanh MLP, o = 2, p = 122
        c = case("mlp")
        n = 10 if name == "mlp_under" else 80  # N = 20 < p  or  N = 160 > p
        x = c.inputs(n, seed=11)
        return Problem(name, c.build(), x, _targets(x, 2, 1), c.inputs(7, seed=12), 0.05, 1.7)
    if name == "cnn_bn":  # conv + BatchNorm, images (2, 6, 6), o = 3, p = 287, N = 18
        c = case("cnn_bn")
        x = c.inputs(6, seed=13)
        return Problem(name, c.build(), x, _targets(x, 3, 2), c.inputs(4, seed=14), 0.1, 0.8)
    if name == "scalar_over":  # o = 1 with y of shape (n,), p = 85 < N = 100
        c = case("scalar_out")
        x = c.inputs(100, seed=15)
        y = _targets(x, 1, 3).squeeze(-1)
        return Problem(name, c.build(), x, y, c.inputs(6, seed=16), 0.02, 1.0)
    raise KeyError(name)


PROBLEMS = ("mlp_under", "mlp_over", "cnn_bn", "scalar_over")


@cache
def reference(name: str, mean: str) -> DenseGP:
    pb = problem(name)
    return DenseGP.fit(
        pb.model,
        pb.x,
        pb.y,
        pb.x_star,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        mean=mean,
    )


@cache
def fitted(name: str, strategy: str, mean: str) -> tuple[Posterior, Prediction]:
    # rank 256 >= min(n·o, p) for every problem: the sketch spans range(J), the matrix-free
    # posteriors are exact (rank="auto" is tested separately below)
    pb = problem(name)
    post = adapt(
        pb.model,
        pb.x,
        pb.y,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        mean=mean,
        strategy=strategy,
        rank=256,
    )
    return post, post.predict(pb.x_star)


# --------------------------------------------------------------------------- exactness
def test_reference_is_consistent_with_the_weight_space_form() -> None:
    # Guards the test's own formula: Σ = σ²(JᵀJ + (σ²/s²) I)⁻¹ gives the same variance.
    pb = problem("mlp_over")
    ref = reference("mlp_over", "network")
    jac_star = dense_jacobian(pb.model, pb.x_star).reshape(-1, pb.num_params)
    c = pb.noise_variance / pb.prior_variance
    a = ref.jac.mT @ ref.jac + c * torch.eye(pb.num_params, dtype=F64)
    var = pb.noise_variance * (jac_star * torch.linalg.solve(a, jac_star.mT).mT).sum(-1)
    assert rel_err(ref.variance.reshape(-1), var) <= 1e-10


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", PROBLEMS)
def test_prediction_equals_dense_gp(name: str, strategy: str, mean: str) -> None:
    pb = problem(name)
    ref = reference(name, mean)
    post, pred = fitted(name, strategy, mean)
    m, o = pb.x_star.shape[0], pb.o
    assert pred.mean.shape == (m, o) and pred.variance.shape == (m, o)
    assert pred.mean.dtype == F64 and pred.variance.dtype == F64
    assert post.strategy == strategy
    assert post.diagnostics["converged"] is True
    assert rel_err(pred.mean, ref.mean) <= MEAN_RTOL
    assert (pred.variance >= 0).all()
    assert post.diagnostics["exact_variance"] is True  # rank 256 >= min(n·o, p) here
    assert rel_err(pred.variance, ref.variance) <= VAR_RTOL
    assert post.weights.shape == (pb.num_params,)


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["mlp_under", "mlp_over", "scalar_over"])
def test_log_marginal_likelihood_equals_explicit_formula(
    name: str, strategy: str, mean: str
) -> None:
    ref = reference(name, mean)
    post, _ = fitted(name, strategy, mean)
    lml = post.log_marginal_likelihood()
    se = post.diagnostics["lml_standard_error"]
    if strategy == "dense":
        assert se == 0.0
        assert lml == pytest.approx(ref.lml, rel=1e-10)
    else:
        # the Nyström sketch spans the whole space here, so the preconditioned system is
        # the identity and SLQ is exact up to rounding
        assert se >= 0
        assert abs(lml - ref.lml) <= 4 * se + 1e-8 * abs(ref.lml)
    assert post.log_marginal_likelihood() == lml  # cached


@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_matrix_free_lml_within_standard_errors(strategy: str) -> None:
    # A rank-2 sketch leaves most of the spectrum to stochastic Lanczos quadrature.
    pb = problem("mlp_under")
    ref = reference("mlp_under", "network")
    post = adapt(
        pb.model,
        pb.x,
        pb.y,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy=strategy,
        rank=2,
    )
    assert post.diagnostics["converged"]
    lml = post.log_marginal_likelihood()
    se = post.diagnostics["lml_standard_error"]
    assert 0 < se < float("inf")
    assert abs(lml - ref.lml) <= 4 * se, (lml, ref.lml, se)


def test_cnn_with_batchnorm_uses_running_statistics_and_keeps_train_mode() -> None:
    pb = problem("cnn_bn")
    flags = {name: m.training for name, m in pb.model.named_modules()}
    assert all(flags.values())  # built in train mode
    # batch statistics would give a visibly different function than running statistics
    train_out = copy.deepcopy(pb.model).train()(pb.x).detach()
    assert rel_err(train_out, dense_output(pb.model, pb.x)) > 1e-2
    state = {k: v.clone() for k, v in pb.model.state_dict().items()}
    post = adapt(
        pb.model,
        pb.x,
        pb.y,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy="function",
    )
    pred = post.predict(pb.x_star)
    # the reference is the eval-mode function (running statistics), so this pins eval mode
    assert rel_err(pred.mean, reference("cnn_bn", "network").mean) <= MEAN_RTOL
    assert {name: m.training for name, m in pb.model.named_modules()} == flags
    for key, value in pb.model.state_dict().items():  # running statistics untouched
        assert torch.equal(value, state[key]), key


def test_parameter_subset_and_chunking() -> None:
    c = case("mlp")
    model = c.build()
    x, x_star = c.inputs(12, seed=21), c.inputs(5, seed=22)
    y = _targets(x, 2, 4)
    names = last_layers(model, 1)  # the paper's "top layer" linearization
    ref = DenseGP.fit(
        model,
        x,
        y,
        x_star,
        noise_variance=0.03,
        prior_variance=2.0,
        mean="network",
        names=names,
    )
    assert ref.jac.shape[1] < sum(p.numel() for p in model.parameters())
    for strategy in STRATEGIES:
        lin = Linearization(model, params=names, chunk_size=5)
        post = adapt(lin, x, y, noise_variance=0.03, prior_variance=2.0, strategy=strategy)
        pred = post.predict(x_star)
        assert post.linearization is lin
        assert rel_err(pred.mean, ref.mean) <= MEAN_RTOL, strategy
        assert rel_err(pred.variance, ref.variance) <= VAR_RTOL, strategy
        assert post.log_marginal_likelihood() == pytest.approx(ref.lml, rel=1e-8)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_model(strategy: str) -> None:
    pb = problem("mlp_under")
    ref = reference("mlp_under", "network")
    model32 = case("mlp").build(dtype=torch.float32)
    post = adapt(
        model32,
        pb.x.float(),
        pb.y.float(),
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy=strategy,
    )
    pred = post.predict(pb.x_star.float())
    assert pred.mean.dtype == torch.float32 and pred.variance.dtype == torch.float32
    assert post.diagnostics["dtype"] == "float32"
    assert post.diagnostics["converged"]
    assert rel_err(pred.mean, ref.mean) <= 1e-4
    assert rel_err(pred.variance, ref.variance) <= 1e-3
    assert (pred.variance >= 0).all()


@pytest.mark.parametrize("name", ["mlp_under", "mlp_over", "cnn_bn"])
def test_parameter_space_with_finite_difference_fisher(name: str) -> None:
    # fisher="fd": JᵀJ v = n F v by the finite-difference KL gradient (Eq. 5). The solve
    # is as accurate as the FD products allow; the variance factor uses exact products.
    pb = problem(name)
    ref = reference(name, "network")
    tol = 1e-6
    post = adapt(
        pb.model,
        pb.x,
        pb.y,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy="parameter",
        fisher="fd",
        tol=tol,
    )
    d = post.diagnostics
    assert d["fisher"] == "fd" and d["converged"] is True and d["residual"] <= tol
    # the residual of the *exact* weight-space system, recomputed from dense J
    assert _weight_space_residual(post, ref) <= tol
    pred = post.predict(pb.x_star)
    assert rel_err(pred.mean, ref.mean) <= 1e-6
    assert rel_err(pred.variance, ref.variance) <= 1e-6
    assert (pred.variance >= 0).all()
    lml = post.log_marginal_likelihood()
    se = d["lml_standard_error"]
    assert abs(lml - ref.lml) <= 4 * se + 1e-4 * abs(ref.lml), (lml, ref.lml, se)


def test_fisher_option_is_recorded_and_validated() -> None:
    pb = problem("mlp_under")
    assert fitted("mlp_under", "parameter", "network")[0].diagnostics["fisher"] == "exact"
    assert fitted("mlp_under", "function", "network")[0].diagnostics["fisher"] is None
    with pytest.raises(ValueError, match="fisher"):
        adapt(pb.model, pb.x, pb.y, noise_variance=0.1, strategy="parameter", fisher="adjoint")


# --------------------------------------------------------------------------- low rank
@pytest.mark.parametrize(("strategy", "rank"), [("function", 4), ("parameter", 10)])
def test_low_rank_variance_is_an_upper_bound(strategy: str, rank: int) -> None:
    # A random tanh MLP: its NTK spectrum decays slowly, so the bound is loose but must
    # hold (Galerkin projection onto the sketch basis discards information).
    c = case("mlp")
    model = c.build()
    x, x_star = c.inputs(15, seed=31), c.inputs(8, seed=32)
    y = _targets(x, 2, 5)
    ref = DenseGP.fit(model, x, y, x_star, noise_variance=0.1, prior_variance=1.0, mean="network")
    post = adapt(model, x, y, noise_variance=0.1, strategy=strategy, rank=rank)
    pred = post.predict(x_star, variance="fast")  # the cached low-rank factor alone
    assert post.diagnostics["exact_variance"] is False
    assert post.diagnostics["variance_rank"] == rank
    assert post.diagnostics["converged"]
    # Σ̂ ⪯ (1 + δ) Σ with the recorded δ (a power-iteration estimate, from below)
    overestimate = float((pred.variance / ref.variance).max()) - 1
    assert 0 < overestimate <= post.diagnostics["variance_error_bound"]
    # the mean does not depend on the variance basis (CG to 1e-8, condition ~1e2)
    assert rel_err(pred.mean, ref.mean) <= 1e-6
    slack = 1e-10 * float(ref.variance.max())
    assert (pred.variance >= ref.variance - slack).all()
    prior = dense_jacobian(model, x_star).square().sum(-1)  # s² diag(J* J*ᵀ), s² = 1
    assert (pred.variance <= prior + slack).all()


@pytest.mark.parametrize(
    ("name", "strategy", "rank"),
    [("mlp_over", "function", 122), ("mlp_under", "parameter", 20)],
)
def test_rank_of_the_smaller_dimension_is_exact(name: str, strategy: str, rank: int) -> None:
    # rank(J) = min(n·o, p): a sketch of that rank spans range(J) in either space
    pb = problem(name)
    ref = reference(name, "network")
    post = adapt(
        pb.model,
        pb.x,
        pb.y,
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy=strategy,
        rank=rank,
    )
    pred = post.predict(pb.x_star)
    assert post.diagnostics["exact_variance"] is True
    assert rel_err(pred.variance, ref.variance) <= VAR_RTOL
    assert rel_err(pred.mean, ref.mean) <= MEAN_RTOL


@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_low_rank_variance_is_close_for_fast_decaying_spectrum(strategy: str) -> None:
    model = OneDimensionalMLP()
    x = torch.linspace(-1, 1, 60, dtype=F64).unsqueeze(-1)
    x_star = torch.linspace(-1.2, 1.2, 9, dtype=F64).unsqueeze(-1)
    y = torch.sin(3 * x)
    ref = DenseGP.fit(model, x, y, x_star, noise_variance=1e-2, prior_variance=1.0, mean="network")
    jac = ref.jac
    evals = torch.linalg.eigvalsh(jac @ jac.mT).flip(0)
    assert float(evals[6] / evals[0]) < 1e-6  # the premise: a fast-decaying spectrum
    post = adapt(model, x, y, noise_variance=1e-2, strategy=strategy, rank=6)
    pred = post.predict(x_star, variance="fast")
    assert post.diagnostics["exact_variance"] is False
    assert (pred.variance >= ref.variance - 1e-12).all()
    assert rel_err(pred.variance, ref.variance) <= 1e-3
    assert rel_err(pred.mean, ref.mean) <= 1e-7


# --------------------------------------------------------------------------- rank="auto"
def _max_pointwise(actual: Tensor, expected: Tensor) -> float:
    return float(((actual.to(F64) - expected) / expected).abs().max())


@pytest.mark.parametrize("strategy", ["function", "parameter"])
@pytest.mark.parametrize("name", ["mlp_over", "scalar_over"])
def test_auto_rank_posterior_equals_dense(name: str, strategy: str) -> None:
    # rank="auto" is the default: the mean is the dense posterior mean to solver
    # tolerance whatever rank it picks; the fast variances are upper bounds within the
    # recorded error estimate λ̂_r/c, which is below variance_tol
    pb = problem(name)
    ref = reference(name, "network")
    post = adapt(
        pb.model, pb.x, pb.y, noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance, strategy=strategy,
    )
    pred = post.predict(pb.x_star, variance="fast")
    d = post.diagnostics
    c = pb.noise_variance / pb.prior_variance
    assert d["converged"] is True and d["rank_mode"] == "auto"
    assert rel_err(pred.mean, ref.mean) <= MEAN_RTOL
    ranks = [rd["rank"] for rd in d["rank_rounds"]]
    # the sketch is of J Jᵀ (N × N) in both spaces; weight space needs at most rank(J)
    n_obs = pb.x.shape[0] * pb.o
    cap = n_obs if strategy == "function" else min(n_obs, pb.num_params)
    assert ranks == [min(32 * 2**i, cap) for i in range(len(ranks))]
    assert d["preconditioner_rank"] == ranks[-1]
    last = d["rank_rounds"][-1]["smallest_eigenvalue_over_shift"]
    # the threshold stops the doubling, except that a sketch whose next doubling spans
    # min(n·o, p) is completed there (exact variances for at most twice the products)
    completed = d["rank_stop"].startswith("λ̂_r/c <= ") and "completed" in d["rank_stop"]
    open_rounds = d["rank_rounds"][: -2 if completed else -1]
    assert all(rd["smallest_eigenvalue_over_shift"] > 0.1 for rd in open_rounds)
    if completed:
        assert d["rank_rounds"][-2]["smallest_eigenvalue_over_shift"] <= 0.1
        assert ranks[-1] == min(n_obs, pb.num_params) <= 2 * ranks[-2]
    if d["exact_variance"]:
        assert d["variance_error_estimate"] == 0.0 and d["variance_error_bound"] == 0.0
        assert d["variance_note"] is None
        assert rel_err(pred.variance, ref.variance) <= VAR_RTOL
    else:
        assert last <= 0.1 and d["rank_stop"].startswith("λ̂_r/c = ")
        assert d["variance_error_estimate"] == pytest.approx(last)
        assert d["variance_note"] and "upper bound" in d["variance_note"]
        slack = 1e-10 * float(ref.variance.max())
        assert (pred.variance >= ref.variance - slack).all()
        err = _max_pointwise(pred.variance, ref.variance)
        assert err <= d["variance_error_estimate"]
        # the rigorous bound Σ̂ ⪯ (1 + δ)Σ, δ by power iteration, and δ <= ‖JJᵀ‖/c
        assert err <= d["variance_error_bound"]
        top = float(torch.linalg.eigvalsh(ref.jac @ ref.jac.mT)[-1])
        assert d["variance_error_bound"] <= top / c * (1 + 1e-9)
    # the default (accurate) variances are within variance_rtol = 1e-2 of the exact ones
    accurate = post.predict(pb.x_star)
    assert _max_pointwise(accurate.variance, ref.variance) <= 1e-2
    assert accurate.diagnostics["variance_error_bound"] <= 1e-2
    # the first rank whose λ̂_r <= c is the solver's rank
    solver = [rd["rank"] for rd in d["rank_rounds"] if rd["smallest_eigenvalue_over_shift"] <= 1]
    assert d["solver_rank"] == solver[0]
    assert c > 0


def test_auto_rank_stops_where_the_kernel_spectrum_says() -> None:
    # scalar_over: N = 100 > p = 85, function space. The independent reference is the
    # spectrum of the explicit kernel s² J Jᵀ from eigvalsh: the Nyström λ̂_r is at most
    # the true λ_r, so the sketch stops no later than the first doubling rank r with
    # λ_r <= c·variance_tol (or min(n·o, p) when that is at most twice that rank: the sketch
    # is then completed), and not before the number of eigenvalues above c.
    pb = problem("scalar_over")
    ref = reference("scalar_over", "network")
    c = pb.noise_variance / pb.prior_variance
    lam = torch.linalg.eigvalsh(ref.jac @ ref.jac.mT).flip(0)
    for tol in (1.0, 0.1, 1e-3):
        bound = next(r for r in (32, 64, 100) if float(lam[r - 1]) <= c * min(1.0, tol))
        if bound < pb.num_params <= 2 * bound:  # completed to min(n·o, p) = p = 85: exact
            bound = pb.num_params
        post = adapt(
            pb.model, pb.x, pb.y, noise_variance=pb.noise_variance,
            prior_variance=pb.prior_variance, strategy="function", variance_tol=tol,
        )
        d = post.diagnostics
        assert d["preconditioner_rank"] <= bound, (tol, d["rank_rounds"])
        assert d["preconditioner_rank"] >= min(int((lam > c).sum()), 100)
        assert d["converged"] is True
        fast = post.predict(pb.x_star, variance="fast").variance
        err = _max_pointwise(fast, ref.variance)
        assert err <= max(d["variance_error_estimate"], VAR_RTOL), (tol, err)


def test_auto_rank_respects_max_rank() -> None:
    pb = problem("mlp_over")
    post = adapt(
        pb.model, pb.x, pb.y, noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance, strategy="function", max_rank=40,
        variance_tol=1e-6,
    )
    d = post.diagnostics
    assert [rd["rank"] for rd in d["rank_rounds"]] == [32, 40]
    assert d["rank_stop"].startswith("max_rank = 40")
    assert d["exact_variance"] is False and d["variance_rank"] == 40
    assert rel_err(post.predict(pb.x_star).mean, reference("mlp_over", "network").mean) <= 1e-7


def test_float32_variances_survive_cancellation() -> None:
    # Far below the prior variance (ratios 2e3–2e4 here) the variance s²(‖J*‖² − ‖F J*ᵀ‖²)
    # is a difference of nearly equal numbers: the projection must be accumulated in
    # float64 even for a float32 model (a float32 GEMM measured 5e-3 relative error here,
    # float64 2e-6). Issue 3 §4 asks for 1e-4 relative on small problems.
    torch.manual_seed(0)
    model = make_mlp(2, 96, 1, depth=3).to(F64)  # p = 19,009
    g = torch.Generator().manual_seed(3)
    x = torch.rand(150, 2, generator=g, dtype=F64) * 4 - 2
    x_star = torch.rand(40, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, :1]) + 0.01 * torch.randn(150, 1, generator=g, dtype=F64)
    ref = DenseGP.fit(model, x, y, x_star, noise_variance=1e-2, prior_variance=1.0, mean="network")
    prior = dense_jacobian(model, x_star).reshape(40, -1).square().sum(-1)
    assert float((prior / ref.variance[:, 0]).min()) > 1e3  # the premise: strong cancellation
    post = adapt(
        model.float(), x.float(), y.float(), noise_variance=1e-2, strategy="function", rank=256
    )
    assert post.diagnostics["exact_variance"] is True  # rank capped at n·o = 150
    pred = post.predict(x_star.float())
    assert _max_pointwise(pred.variance, ref.variance) <= 1e-4
    assert rel_err(pred.mean, ref.mean) <= 1e-3


@pytest.mark.parametrize("panel_bytes", [1 << 20, 8 * 7 * 64])
@pytest.mark.parametrize("cuts", [(), (150, 156, 1_000)])
def test_float64_projections_match_an_explicit_float64_product(
    monkeypatch, panel_bytes, cuts
) -> None:
    # Column parts (a parameter's Jacobian columns each; a ragged last panel when a part is
    # not a multiple of the panel width) give the float64 GEMM and squared norms of the
    # upcast matrix to rounding.
    from ntkcore import posterior

    monkeypatch.setattr(posterior, "_PANEL_BYTES", panel_bytes)
    g = torch.Generator().manual_seed(0)
    block = torch.randn(7, 1_001, generator=g)  # float32
    rows = torch.randn(3, 1_001, generator=g, dtype=F64)
    edges = [0, *cuts, 1_001]
    parts = [(slice(a, b), block[:, a:b]) for a, b in zip(edges, edges[1:], strict=False)]
    products, squares = posterior._float64_projections(rows, parts)
    assert products.dtype == squares.dtype == F64
    exact = block.to(F64)
    torch.testing.assert_close(products, rows @ exact.T, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(squares, (exact * exact).sum(-1), rtol=1e-13, atol=0)


def test_jacobian_parts_are_the_columns_of_the_jacobian() -> None:
    torch.manual_seed(0)
    model = make_mlp(3, 8, 2, depth=2).to(F64)
    x = torch.randn(5, 3, dtype=F64)
    lin = Linearization(model, chunk_size=2)
    blocks = list(lin.jacobian_blocks(x))
    parts = list(lin.jacobian_parts(x))
    assert [rows for rows, _ in parts] == [rows for rows, _ in blocks]
    reference = dense_jacobian(model, x)  # shape: (n, o, p), jacrev
    for (rows, pieces), (_, block) in zip(parts, blocks, strict=True):
        assert [cols.start for cols, _ in pieces][0] == 0 and pieces[-1][0].stop == lin.num_params
        for cols, piece in pieces:
            torch.testing.assert_close(piece, reference[rows, :, cols], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(block, reference[rows], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- auto
def test_auto_picks_dense_for_small_problems_and_says_why() -> None:
    pb = problem("mlp_under")
    post = adapt(
        pb.model, pb.x, pb.y, noise_variance=pb.noise_variance, prior_variance=pb.prior_variance
    )
    assert post.diagnostics["strategy"] == "dense" == post.strategy
    reason = post.diagnostics["reason"]
    assert isinstance(reason, str) and reason and reason != "requested"
    assert rel_err(post.predict(pb.x_star).mean, reference("mlp_under", "network").mean) <= 1e-8
    explicit = adapt(pb.model, pb.x, pb.y, noise_variance=0.05, strategy="function")
    assert explicit.diagnostics["reason"] == "requested"


def test_choose_strategy_follows_the_cost_model() -> None:
    tiny_memory = 2**20  # 1 MiB: nothing explicit fits
    strategy, reason = choose_strategy(100, 10**6, available_memory=tiny_memory)
    assert strategy == "function" and reason
    strategy, reason = choose_strategy(10**5, 1000, available_memory=tiny_memory)
    assert strategy == "parameter" and reason
    strategy, reason = choose_strategy(200, 1000, available_memory=2**33)
    assert strategy == "dense" and reason
    # too large for an eigendecomposition even with ample memory
    strategy, _ = choose_strategy(5000, 10**5, available_memory=2**45, max_dense=4000)
    assert strategy == "function"
    strategy, _ = choose_strategy(10**5, 5000, available_memory=2**45, max_dense=4000)
    assert strategy == "parameter"
    # the memory check scales with the dtype: float64 needs more than float32
    n_obs, p = 400, 2000
    need32 = n_obs * p * (4 + 16) + 2 * n_obs**2 * 8
    mem = 4 * need32 + 4  # just fits in float32
    assert choose_strategy(n_obs, p, dtype=torch.float32, available_memory=mem)[0] == "dense"
    assert choose_strategy(n_obs, p, dtype=F64, available_memory=mem)[0] == "function"


# --------------------------------------------------------------------------- diagnostics
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_diagnostics_are_complete(strategy: str) -> None:
    pb = problem("mlp_under")
    post, _ = fitted("mlp_under", strategy, "network")
    d = post.diagnostics
    for key in ("strategy", "reason", "iterations", "residual", "converged", "seconds"):
        assert key in d, key
    assert d["strategy"] == strategy
    assert isinstance(d["iterations"], int) and d["iterations"] >= 0
    assert isinstance(d["seconds"], float) and d["seconds"] >= 0
    assert d["converged"] is True
    assert d["n"] == pb.x.shape[0] and d["outputs"] == pb.o and d["num_params"] == pb.num_params
    if strategy == "dense":
        assert d["iterations"] == 0 and d["residual"] == 0.0
    else:
        assert 1 <= d["iterations"] <= 1000
        assert 0 <= d["residual"] <= d["tolerance"] == 1e-8
        assert len(d["residuals"]) == 1


def _weight_space_residual(post: Posterior, ref: DenseGP) -> float:
    # ||Jᵀr − (JᵀJ + cI) w̄|| / ||Jᵀr||, with w̄ the posterior's weights (= the CG iterate)
    c = post.noise_variance / post.prior_variance
    jac, w = ref.jac, post.weights
    b = jac.mT @ ref.resid
    return float(torch.linalg.norm(b - jac.mT @ (jac @ w) - c * w) / torch.linalg.norm(b))


def _function_space_residual(post: Posterior, ref: DenseGP) -> float:
    # n·o < p: J has full row rank and w̄ = Jᵀz, so z = (JJᵀ)⁻¹ J w̄ recovers the iterate
    c = post.noise_variance / post.prior_variance
    jac = ref.jac
    z = torch.linalg.solve(jac @ jac.mT, jac @ post.weights)
    r = ref.resid
    return float(torch.linalg.norm(r - jac @ (jac.mT @ z) - c * z) / torch.linalg.norm(r))


@pytest.mark.parametrize(
    ("strategy", "max_iter"),
    [("function", 20), ("parameter", 20), ("function", 3), ("parameter", 2)],
)
def test_non_convergence_is_honest(strategy: str, max_iter: int) -> None:
    pb = problem("mlp_under")
    ref = DenseGP.fit(
        pb.model, pb.x, pb.y, pb.x_star, noise_variance=1e-5, prior_variance=1.0, mean="network"
    )
    with pytest.warns(ConvergenceWarning):
        post = adapt(
            pb.model,
            pb.x,
            pb.y,
            noise_variance=1e-5,
            strategy=strategy,
            rank=1,
            max_iter=max_iter,
            tol=1e-10,
        )
    d = post.diagnostics
    assert d["converged"] is False
    assert d["iterations"] <= max_iter
    assert d["residual"] > 1e-10
    true = (_function_space_residual if strategy == "function" else _weight_space_residual)(
        post, ref
    )
    assert d["residual"] == pytest.approx(true, rel=1e-5)
    assert (post.predict(pb.x_star).variance >= 0).all()


@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_converged_residual_is_the_true_residual(strategy: str) -> None:
    pb = problem("mlp_under")
    ref = reference("mlp_under", "network")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        post = adapt(
            pb.model,
            pb.x,
            pb.y,
            noise_variance=pb.noise_variance,
            prior_variance=pb.prior_variance,
            strategy=strategy,
            rank=4,
            tol=1e-9,
        )
    d = post.diagnostics
    assert d["converged"] is True and d["residual"] <= 1e-9
    assert d["preconditioner_rank"] == 4
    true = (_function_space_residual if strategy == "function" else _weight_space_residual)(
        post, ref
    )
    assert true <= 1e-8  # the dense recomputation carries its own rounding
    assert rel_err(post.predict(pb.x_star).mean, ref.mean) <= 1e-7


# --------------------------------------------------------------------------- Prediction API
def test_prediction_api() -> None:
    pb = problem("mlp_under")
    ref = reference("mlp_under", "network")
    post, pred = fitted("mlp_under", "dense", "network")
    sd = ref.variance.sqrt()
    torch.testing.assert_close(pred.stddev, sd, rtol=1e-7, atol=1e-12)
    lower, upper = pred.confidence_region()
    torch.testing.assert_close(lower, ref.mean - 2 * sd, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(upper, ref.mean + 2 * sd, rtol=1e-7, atol=1e-10)
    lower1, upper1 = pred.confidence_region(num_std=1.0)
    torch.testing.assert_close(upper1 - lower1, 2 * sd, rtol=1e-7, atol=1e-10)
    mean_only = post.predict(pb.x_star, variance=False)
    assert mean_only.variance is None
    assert rel_err(mean_only.mean, ref.mean) <= MEAN_RTOL
    with pytest.raises(ValueError, match="variance=False"):
        _ = mean_only.stddev
    with pytest.raises(ValueError, match="variance=False"):
        mean_only.confidence_region()
    # at the training inputs, the posterior shrinks below the prior
    at_train = post.predict(pb.x)
    prior = dense_jacobian(pb.model, pb.x).square().sum(-1) * pb.prior_variance
    assert (at_train.variance < prior).all()


@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_predict_without_variance_matches(strategy: str) -> None:
    pb = problem("mlp_over")
    post, pred = fitted("mlp_over", strategy, "zero")
    mean_only = post.predict(pb.x_star, variance=False)
    assert mean_only.variance is None
    assert rel_err(mean_only.mean, reference("mlp_over", "zero").mean) <= MEAN_RTOL


def test_targets_as_numpy_array() -> None:
    pb = problem("mlp_under")
    post = adapt(
        pb.model,
        pb.x,
        pb.y.numpy(),
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy="dense",
    )
    assert rel_err(post.predict(pb.x_star).mean, reference("mlp_under", "network").mean) <= 1e-8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cuda_matches_dense_gp(strategy: str) -> None:
    pb = problem("cnn_bn")
    ref = reference("cnn_bn", "network")
    cuda = torch.device("cuda")
    model = case("cnn_bn").build().to(cuda)
    post = adapt(
        model,
        pb.x.to(cuda),
        pb.y.to(cuda),
        noise_variance=pb.noise_variance,
        prior_variance=pb.prior_variance,
        strategy=strategy,
    )
    pred = post.predict(pb.x_star.to(cuda))
    assert pred.mean.device.type == "cuda" and pred.variance.device.type == "cuda"
    assert post.diagnostics["device"].startswith("cuda")
    assert rel_err(pred.mean.cpu(), ref.mean) <= 1e-7
    assert rel_err(pred.variance.cpu(), ref.variance) <= 1e-7
    assert (pred.variance >= 0).all()
    assert abs(post.log_marginal_likelihood() - ref.lml) <= (
        4 * post.diagnostics["lml_standard_error"] + 1e-7 * abs(ref.lml)
    )


# --------------------------------------------------------------------------- bad input
def _bad_input_cases() -> list[tuple[str, dict, str]]:
    n = 10
    return [
        ("y_wrong_rows", {"y": torch.zeros(n - 1, 2, dtype=F64)}, "y must have shape"),
        ("y_wrong_outputs", {"y": torch.zeros(n, 3, dtype=F64)}, "y must have shape"),
        ("y_1d_for_two_outputs", {"y": torch.zeros(n, dtype=F64)}, "o=2"),
        ("y_3d", {"y": torch.zeros(n, 2, 1, dtype=F64)}, "y must have shape"),
        ("y_nan", {"y": torch.full((n, 2), float("nan"), dtype=F64)}, "non-finite"),
        ("y_inf", {"y": torch.full((n, 2), float("inf"), dtype=F64)}, "non-finite"),
        ("x_nan", {"x": torch.full((n, 3), float("nan"), dtype=F64)}, "non-finite"),
        ("x_wrong_features", {"x": torch.zeros(n, 5, dtype=F64)}, "rejected an input"),
        ("noise_negative", {"noise_variance": -0.1}, "noise_variance"),
        ("noise_zero", {"noise_variance": 0.0}, "noise_variance"),
        ("noise_nan", {"noise_variance": float("nan")}, "noise_variance"),
        ("noise_inf", {"noise_variance": float("inf")}, "noise_variance"),
        ("noise_string", {"noise_variance": "small"}, "noise_variance"),
        ("prior_negative", {"prior_variance": -1.0}, "prior_variance"),
        ("prior_nan", {"prior_variance": float("nan")}, "prior_variance"),
        ("strategy_unknown", {"strategy": "cholesky"}, "strategy"),
        ("mean_unknown", {"mean": "constant"}, "mean"),
        ("tol_negative", {"tol": -1e-6}, "tol"),
        ("max_iter_zero", {"max_iter": 0}, "max_iter"),
        ("rank_zero", {"rank": 0}, "rank"),
        ("rank_string", {"rank": "full"}, "rank must be a positive int or 'auto'"),
        ("rank_bool", {"rank": True}, "rank"),
        ("rank_float", {"rank": 64.0}, "rank"),
        ("max_rank_zero", {"max_rank": 0}, "max_rank"),
        ("max_rank_float", {"max_rank": 100.5}, "max_rank"),
        ("variance_tol_zero", {"variance_tol": 0.0}, "variance_tol"),
        ("variance_tol_nan", {"variance_tol": float("nan")}, "variance_tol"),
        ("variance_tol_string", {"variance_tol": "tight"}, "variance_tol"),
    ]


@pytest.mark.parametrize(
    ("label", "override", "match"), _bad_input_cases(), ids=[c[0] for c in _bad_input_cases()]
)
def test_bad_inputs_raise(label: str, override: dict, match: str) -> None:
    pb = problem("mlp_under")
    kwargs = {"x": pb.x, "y": pb.y, "noise_variance": 0.1}
    kwargs.update(override)
    x, y = kwargs.pop("x"), kwargs.pop("y")
    with pytest.raises(ValueError, match=match):
        adapt(pb.model, x, y, **kwargs)


def test_not_a_model_raises() -> None:
    pb = problem("mlp_under")
    with pytest.raises(ValueError, match="torch.nn.Module or a Linearization"):
        adapt("model", pb.x, pb.y, noise_variance=0.1)


def test_predict_bad_inputs_raise() -> None:
    post, _ = fitted("mlp_under", "dense", "network")
    with pytest.raises(ValueError, match="rejected an input"):
        post.predict(torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        post.predict(torch.full((3, 3), float("nan"), dtype=F64))


def test_parameter_space_fd_float32_refines_to_tolerance() -> None:
    # The weight-space system of benchmarks/scaling.py (ELU MLP 5-16-160-16-1, p = 5,409,
    # σ²/s² = 1e-2) in float32: CG on finite-difference Fisher products alone stalls at a
    # true residual of ~4e-2 (measured), the products being ~1e-3 accurate; iterative
    # refinement on the exact residual reaches the default tolerance 1e-3. The residual is
    # re-checked here against a dense float64 Jacobian from torch.func.jacrev.
    torch.manual_seed(0)
    dims = (5, 16, 160, 16)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ELU()]
    model = nn.Sequential(*layers, nn.Linear(dims[-1], 1)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500, 5, generator=gen)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(500, generator=gen)
    post = adapt(model, x, y, noise_variance=1e-2, prior_variance=1.0, strategy="parameter",
                 fisher="fd")  # fmt: skip
    d = post.diagnostics
    assert d["converged"] is True and d["residual"] <= 1e-3
    assert d["refinements"] >= 1
    m64 = copy.deepcopy(model).double()
    params = {k: v.detach() for k, v in m64.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(m64, p, (x.double(),)))(params)
    jac = torch.cat([jac[k].reshape(500, -1) for k in params], dim=1)  # (n, p)
    resid = y.double() - m64(x.double()).squeeze(-1)
    b = jac.mT @ resid
    w = post.weights.double()
    exact = torch.linalg.norm(b - jac.mT @ (jac @ w) - 1e-2 * w) / torch.linalg.norm(b)
    assert float(exact) <= 1.5e-3  # float32 weights, float64 check


def test_covariance_block_is_one_tensor_and_its_rank_fits_memory(monkeypatch) -> None:
    # Matrix-free posteriors keep [w̄; F] as one (1 + r) × p float64 block (predict's GEMM
    # reads it without a copy), and the rank is capped so that the block fits in half the
    # free memory: rank="auto" stops there and says why, a fixed rank beyond it is refused.
    import ntkcore.posterior as posterior_module
    import ntkcore.strategies.iterative as iterative_module

    pb = problem("mlp_over")
    kwargs = {"noise_variance": pb.noise_variance, "prior_variance": pb.prior_variance}
    post = adapt(pb.model, pb.x, pb.y, strategy="function", rank=8, **kwargs)
    factor, _ = post.covariance_factor()
    stacked = posterior_module._stacked(post.weights, factor)
    assert stacked.data_ptr() == post.weights.data_ptr() and stacked.shape[0] == 9
    p = post.weights.shape[0]
    # free memory for a block of 6 rows (rank 5)
    monkeypatch.setattr(iterative_module, "_free_memory", lambda device: 2 * 8 * p * 6)
    capped = adapt(pb.model, pb.x, pb.y, strategy="function", **kwargs)
    d = capped.diagnostics
    assert d["rank_memory_cap"] == 5 and d["variance_rank"] <= 5
    assert "memory cap" in d["rank_stop"]
    ref = reference("mlp_over", "network")
    assert rel_err(capped.predict(pb.x_star).mean, ref.mean) <= 1e-6  # CG still converges
    with pytest.raises(ValueError, match="rank <= 5"):
        adapt(pb.model, pb.x, pb.y, strategy="function", rank=16, **kwargs)
