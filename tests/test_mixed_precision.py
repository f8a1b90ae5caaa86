"""Float32 solves that converge: mixed-precision refinement against float64 dense.

The reference network is the float32 network cast to float64 (the same function), the
inputs are the float32 inputs cast up, and the posterior mean is written out from explicit
``torch.func.jacrev`` Jacobians:  mean(x*) = f(x*) + J* Jᵀ (J Jᵀ + cI)⁻¹ (y − f(X)).
The weight-space residual ‖Jᵀr − (JᵀJ + cI) w̄‖ / ‖Jᵀr‖ of the engine's w̄ is recomputed
from the same float64 Jacobian (independent of the engine's own report).

Checked on a tanh MLP 4-48-48-1 (p = 2,657), n = 300, σ² = 1e-4 (condition number of
J Jᵀ + cI ~1e7), three seeds: with ``refinement="none"`` float32 CG stalls (function space)
or reports a float32 residual that hides a mean 1e-3 off (weight space); with the default
``"auto"`` both spaces reach the float64 residual ``tol`` = 1e-4 and a mean within 1e-4
of the float64 dense posterior, and ``diagnostics`` say what was done. Well-conditioned
float32 problems are not refined; a device without float64 warns; the CG refinement
mechanism and ``Linearization.to_dtype`` are tested on their own.
"""

from __future__ import annotations

import copy
import warnings
from functools import cache

import pytest
import torch
from torch import Tensor, nn

from ntkcore.linearization import Linearization
from ntkcore.posterior import adapt
from ntkcore.solvers import ConvergenceWarning, conjugate_gradients
from tests.models import dense_jacobian, dense_output, make_mlp

F64 = torch.float64
SIGMA2 = 1e-4


pytestmark = pytest.mark.usefixtures("one_intraop_thread")


@cache
def problem(seed: int) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A float32 tanh MLP 4-48-48-1 with float32 data (n = 300, 15 test points)."""
    torch.manual_seed(seed)
    model = make_mlp(4, 48, 1, depth=2).float()
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(300, 4, generator=g)
    y = torch.sin(x.sum(-1, keepdim=True)) + 0.01 * torch.randn(300, 1, generator=g)
    x_star = torch.randn(15, 4, generator=g)
    return model, x, y, x_star


@cache
def reference(seed: int, noise_variance: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mean at x*, J, r, variance at x*) of the float64 dense posterior of the same net."""
    model, x, y, x_star = problem(seed)
    m64 = copy.deepcopy(model).double()
    x64, xs64 = x.double(), x_star.double()
    jac = dense_jacobian(m64, x64).reshape(300, -1)
    jac_star = dense_jacobian(m64, xs64).reshape(15, -1)
    r = (y.double() - dense_output(m64, x64)).reshape(-1)
    gram = jac @ jac.mT + noise_variance * torch.eye(300, dtype=F64)
    mean = dense_output(m64, xs64).reshape(-1) + jac_star @ (jac.mT @ torch.linalg.solve(gram, r))
    cross = jac @ jac_star.mT
    var = jac_star.square().sum(-1) - (cross * torch.linalg.solve(gram, cross)).sum(0)
    return mean.reshape(15, 1), jac, r, var.reshape(15, 1)


def mean_error(actual: Tensor, expected: Tensor) -> float:
    """max |Δ| / max |mean| (as in benchmarks/RESULTS.md)."""
    return float((actual.double() - expected).abs().max() / expected.abs().max())


def weight_space_residual(weights: Tensor, jac: Tensor, r: Tensor, c: float) -> float:
    b = jac.mT @ r
    w = weights.double()
    return float(torch.linalg.norm(b - jac.mT @ (jac @ w) - c * w) / torch.linalg.norm(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_float32_solves_converge_by_refinement(strategy: str, seed: int) -> None:
    model, x, y, x_star = problem(seed)
    ref_mean, jac, r, ref_var = reference(seed, SIGMA2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        post = adapt(model, x, y, noise_variance=SIGMA2, strategy=strategy)
    d = post.diagnostics
    assert d["dtype"] == "float32" and d["tolerance"] == 1e-4
    assert d["residual_dtype"] == "float64" and d["working_dtype"] == "float32"
    assert d["refinements"] >= 1 and d["converged"] is True
    assert d["float64_residual"] == d["residual"] <= 1e-4
    assert "float64 residuals" in d["refinement_reason"]
    assert d["condition_estimate"] > 1e6  # the sketch saw the ill-conditioning
    pred = post.predict(x_star)
    assert pred.mean.dtype == torch.float32
    assert mean_error(pred.mean, ref_mean) <= 1e-4
    assert float(((pred.variance.double() - ref_var) / ref_var).abs().max()) <= 1e-2
    assert pred.diagnostics["variance_method"] in ("exact", "block-cg", "low-rank")
    if strategy == "parameter":  # the engine's float64 residual is the true one
        assert weight_space_residual(post.weights, jac, r, SIGMA2) <= 1e-4


@pytest.mark.parametrize("strategy", ["function", "parameter"])
def test_without_refinement_float32_cannot_get_there(strategy: str) -> None:
    # The premise: the same solves in float32 alone stall (function space) or stop near
    # tol with a mean far from the float64 answer (weight space: measured residual 5e-5,
    # mean 2e-3 off).
    model, x, y, x_star = problem(0)
    ref_mean, _, _, _ = reference(0, SIGMA2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = adapt(model, x, y, noise_variance=SIGMA2, strategy=strategy, refinement="none")
    d = post.diagnostics
    assert d["residual_dtype"] == "float32" and d["float64_residual"] is None
    assert d["refinements"] == 0 and d["refinement_reason"] == "refinement='none'"
    stalled = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert stalled == (not d["converged"])
    assert mean_error(post.predict(x_star, variance=False).mean, ref_mean) > 3e-4


def test_well_conditioned_float32_is_not_refined() -> None:
    model, x, y, x_star = problem(1)
    ref_mean, _, _, _ = reference(1, 0.1)
    post = adapt(model, x, y, noise_variance=0.1, strategy="function")
    d = post.diagnostics
    assert d["residual_dtype"] == "float32" and d["refinements"] == 0
    assert d["float64_residual"] is None
    assert d["refinement_reason"].startswith("torch.float32 suffices")
    assert d["converged"] is True
    assert mean_error(post.predict(x_star, variance=False).mean, ref_mean) <= 1e-4
    forced = adapt(model, x, y, noise_variance=0.1, strategy="function", refinement="float64")
    assert forced.diagnostics["residual_dtype"] == "float64"
    assert forced.diagnostics["float64_residual"] <= 1e-4


def test_float64_network_is_unchanged() -> None:
    model, x, y, _ = problem(2)
    post = adapt(copy.deepcopy(model).double(), x.double(), y.double(), noise_variance=SIGMA2,
                 strategy="parameter", rank=32)
    d = post.diagnostics
    assert d["residual_dtype"] == "float64" and d["working_dtype"] == "float64"
    assert d["refinements"] == 0 and d["refinement_reason"] == "float64 network"
    assert d["float64_residual"] == d["residual"] <= 1e-8


def test_without_float64_the_solve_warns_and_stays_float32(monkeypatch) -> None:
    import ntkcore.strategies.precision as precision

    monkeypatch.setattr(
        precision, "float64_unavailable", lambda device: "float64 is not available on test"
    )
    model, x, y, _ = problem(0)
    with pytest.warns(RuntimeWarning, match="float64 is not available on test"):
        with pytest.warns(ConvergenceWarning):
            post = adapt(model, x, y, noise_variance=SIGMA2, strategy="function")
    d = post.diagnostics
    assert d["residual_dtype"] == "float32" and d["converged"] is False
    assert "float64 is not available" in d["refinement_reason"]


@pytest.mark.parametrize("seed", [0, 1])
def test_conjugate_gradients_refines_in_mixed_precision(seed: int) -> None:
    # A = Q diag(λ) Qᵀ + cI with λ from 1e3 down to 0 and c = 1e-4 (κ = 1e7), a float32
    # preconditioner from the top 40 eigenpairs (as a Nyström sketch would give): float32
    # products cannot resolve 1e-7, float64 residuals with float32 corrections can.
    g = torch.Generator().manual_seed(seed)
    d, c = 120, 1e-4
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    lam = torch.cat([torch.logspace(3, -3, 60, dtype=F64), torch.zeros(60, dtype=F64)])
    a = (q * lam) @ q.mT + c * torch.eye(d, dtype=F64)
    a32 = a.float()
    top = q[:, :40].float()
    scale = ((lam[39] + c) / (lam[:40] + c)).float()

    def precond(v: Tensor) -> Tensor:  # Nyström preconditioner (Frangella et al.)
        return v + top @ ((scale - 1).unsqueeze(-1) * (top.mT @ v))

    b = torch.randn(d, 2, generator=g, dtype=F64)
    exact = torch.linalg.solve(a, b)
    with pytest.warns(ConvergenceWarning):
        x32, info32 = conjugate_gradients(
            lambda v: a32 @ v, b.float(), preconditioner=precond, tol=1e-7, max_iter=500
        )
    assert info32.residual_dtype == torch.float32
    x, info = conjugate_gradients(
        lambda v: a32 @ v, b, preconditioner=precond, tol=1e-7, max_iter=500,
        residual_matmul=lambda v: a @ v, working_dtype=torch.float32, working_tol=1e-3,
    )
    assert x.dtype == F64 and info.residual_dtype == F64
    assert info.converged and info.refinements >= 1
    true = torch.linalg.norm(b - a @ x, dim=0) / torch.linalg.norm(b, dim=0)
    assert float(true.max()) <= 1e-7
    torch.testing.assert_close(info.residuals.to(F64), true, rtol=1e-6, atol=0)
    err32 = torch.linalg.norm(x32.double() - exact) / torch.linalg.norm(exact)
    assert float(torch.linalg.norm(x - exact) / torch.linalg.norm(exact)) < 1e-2 * float(err32)


def test_linearization_to_dtype_matches_a_float64_network() -> None:
    model, x, _, _ = problem(0)
    lin = Linearization(model)
    twin = lin.to_dtype(F64)
    assert twin.dtype == F64 and lin.dtype == torch.float32 and twin.num_params == lin.num_params
    assert lin.to_dtype(torch.float32) is lin
    jac = dense_jacobian(copy.deepcopy(model).double(), x[:20].double()).reshape(20, -1)
    v = torch.randn(lin.num_params, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(twin.jvp(x[:20], v).reshape(-1), jac @ v, rtol=1e-12, atol=1e-12)
    u = torch.randn(20, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(twin.vjp(x[:20], u), jac.mT @ u.reshape(-1), rtol=1e-12,
                               atol=1e-12)
    assert next(model.parameters()).dtype == torch.float32  # the module is untouched
    with pytest.raises(ValueError, match="floating dtype"):
        lin.to_dtype(torch.int64)
