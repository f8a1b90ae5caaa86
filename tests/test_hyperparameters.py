"""``ntkcore.fit_hyperparameters`` against an explicit marginal likelihood and scipy.

The reference log marginal likelihood is written here literally,

    log p(y) = −½ rᵀK⁻¹r − ½ log|K| − (N/2) log 2π,   K = s² J Jᵀ + σ² I,

with J from ``torch.func.jacrev`` (:func:`tests.models.dense_jacobian`) and a Cholesky
factorization in numpy, and is maximized independently: a log-spaced grid over
(σ², s²) locates the basin, then ``scipy.optimize.minimize`` (L-BFGS-B, bounds
σ² >= ``min_noise_variance``) refines it. Both regimes n·o < p (function-space
eigendecomposition) and n·o > p (weight space) are covered, as are the noise floor,
subsampling (the subset is identified by brute force among all subsets) and the
ValueErrors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import optimize
from torch import Tensor, nn

from ntkcore.hyperparameters import HyperparameterFit, fit_hyperparameters
from ntkcore.linearization import Linearization
from ntkcore.posterior import adapt
from tests.models import case, dense_jacobian, dense_output

F64 = torch.float64


# --------------------------------------------------------------------------- reference
def explicit_lml(jac: Tensor, r: Tensor, sigma2: float, s2: float) -> float:
    """log N(r | 0, s² J Jᵀ + σ² I) by Cholesky (float64).

    torch rather than numpy: numpy's multithreaded OpenBLAS was ~30× slower on these small
    matrices on a loaded 2-core machine (torch runs single-threaded here, see below).
    """
    s2, sigma2 = float(s2), float(sigma2)
    k = s2 * jac @ jac.mT + sigma2 * torch.eye(jac.shape[0], dtype=F64)
    chol = torch.linalg.cholesky(k)
    alpha = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
    return float(
        -0.5 * alpha @ alpha
        - torch.log(torch.diagonal(chol)).sum()
        - 0.5 * r.numel() * math.log(2 * math.pi)
    )


def dense_problem(
    model: nn.Module, x: Tensor, y: Tensor, mean: str = "network"
) -> tuple[Tensor, Tensor]:
    """J (N × p) and r (N,), float64."""
    jac = dense_jacobian(model, x).to(F64)
    n, o, p = jac.shape
    prior = dense_output(model, x).to(F64) if mean == "network" else torch.zeros(n, o, dtype=F64)
    r = (y.to(F64).reshape(n, o) - prior).reshape(-1)
    return jac.reshape(n * o, p), r


pytestmark = pytest.mark.usefixtures("one_intraop_thread")


def maximize_explicit(jac: Tensor, r: Tensor, floor: float = 1e-6) -> tuple[float, float, float]:
    """(σ², s², log p) maximizing the explicit LML: grid search, then L-BFGS-B."""

    def neg(a: np.ndarray) -> float:
        return -explicit_lml(jac, r, math.exp(a[0]), math.exp(a[1]))

    lo = math.log(floor)
    grid = [
        (neg(np.array([a, b])), a, b)
        for a in np.linspace(lo, math.log(10.0), 7)
        for b in np.linspace(math.log(1e-4), math.log(1e3), 7)
    ]
    _, a0, b0 = min(grid)
    res = optimize.minimize(
        neg,
        np.array([a0, b0]),
        method="L-BFGS-B",
        bounds=[(lo, math.log(1e3)), (math.log(1e-8), math.log(1e6))],
        options={"ftol": 1e-13, "gtol": 1e-8, "maxiter": 500},
    )
    return math.exp(res.x[0]), math.exp(res.x[1]), -float(res.fun)


def targets(x: Tensor, o: int, seed: int) -> Tensor:
    flat = x.reshape(x.shape[0], -1)
    g = torch.Generator().manual_seed(seed)
    cols = [torch.sin((a + 1) * flat[:, a % flat.shape[1]]) for a in range(o)]
    return torch.stack(cols, -1) + 0.1 * torch.randn(x.shape[0], o, generator=g, dtype=F64)


# --------------------------------------------------------------------------- optimum
@pytest.mark.parametrize(
    ("n", "mean"),
    [(10, "network"), (10, "zero"), (70, "network")],  # N = 20 < p = 122; N = 140 > p
    ids=["under-network", "under-zero", "over-network"],
)
def test_fit_reaches_the_maximum_of_the_explicit_lml(n: int, mean: str) -> None:
    c = case("mlp")
    model = c.build()
    x = c.inputs(n, seed=3)
    y = targets(x, 2, seed=4)
    fit = fit_hyperparameters(model, x, y, mean=mean)
    assert isinstance(fit, HyperparameterFit)
    assert fit.num_points == n and fit.seconds >= 0
    jac, r = dense_problem(model, x, y, mean)
    # the reported value is the explicit LML at the reported maximizer ...
    at_fit = explicit_lml(jac, r, fit.noise_variance, fit.prior_variance)
    assert fit.log_marginal_likelihood == pytest.approx(at_fit, rel=1e-9)
    # ... which is the maximum found by an independent optimizer
    sigma2, s2, best = maximize_explicit(jac, r)
    assert fit.log_marginal_likelihood >= best - 1e-7 * abs(best)
    assert fit.noise_variance == pytest.approx(sigma2, rel=1e-3)
    assert fit.prior_variance == pytest.approx(s2, rel=1e-3)


def test_fit_is_a_stationary_point() -> None:
    c = case("cnn_bn")  # BatchNorm in train mode: the fit must use the eval-mode Jacobian
    model = c.build()
    x = c.inputs(8, seed=5)
    y = targets(x, 3, seed=6)
    fit = fit_hyperparameters(model, x, y)
    jac, r = dense_problem(model, x, y)
    a = np.log([fit.noise_variance, fit.prior_variance])
    assert np.isfinite(a).all()
    h = 1e-4
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        up = explicit_lml(jac, r, *np.exp(a + e))
        down = explicit_lml(jac, r, *np.exp(a - e))
        centre = explicit_lml(jac, r, *np.exp(a))
        assert abs(up - down) / (2 * h) <= 1e-4 * max(1.0, abs(centre))
        assert centre >= max(up, down) - 1e-9 * abs(centre)  # a maximum, not a saddle


@pytest.mark.parametrize(("noise_start", "prior_start"), [(None, 1.0), (1e-3, 10.0), (2.0, 0.01)])
def test_fit_does_not_depend_on_the_starting_point(noise_start, prior_start) -> None:
    c = case("mlp")
    model = c.build()
    x = c.inputs(10, seed=3)
    y = targets(x, 2, seed=4)
    fit = fit_hyperparameters(model, x, y, noise_variance=noise_start, prior_variance=prior_start)
    sigma2, s2, best = maximize_explicit(*dense_problem(model, x, y))
    assert fit.log_marginal_likelihood >= best - 1e-7 * abs(best)
    assert fit.noise_variance == pytest.approx(sigma2, rel=1e-3)
    assert fit.prior_variance == pytest.approx(s2, rel=1e-3)


def test_fit_feeds_adapt() -> None:
    # a Linearization passes through, and adapt at the fitted values attains the maximum
    c = case("mlp")
    model = c.build()
    x = c.inputs(10, seed=3)
    y = targets(x, 2, seed=4)
    lin = Linearization(model)
    fit = fit_hyperparameters(lin, x, y)
    post = adapt(
        lin,
        x,
        y,
        noise_variance=fit.noise_variance,
        prior_variance=fit.prior_variance,
        strategy="dense",
    )
    jac, r = dense_problem(model, x, y)
    expected = explicit_lml(jac, r, fit.noise_variance, fit.prior_variance)
    assert post.log_marginal_likelihood() == pytest.approx(expected, rel=1e-9)
    assert fit.log_marginal_likelihood == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- noise floor
@pytest.mark.parametrize("floor", [1e-6, 1e-3])
def test_noise_floor_is_respected_on_noise_free_data(floor: float) -> None:
    # n·o > p and y = f(x) + J w exactly: r lies in range(J), so the likelihood grows
    # without bound as σ² → 0 and the fit must stop at the floor.
    c = case("mlp")
    model = c.build()
    x = c.inputs(70, seed=7)
    jac = dense_jacobian(model, x).to(F64)
    w = torch.randn(jac.shape[-1], generator=torch.Generator().manual_seed(8), dtype=F64)
    y = dense_output(model, x) + 0.1 * (jac @ w)
    fit = fit_hyperparameters(model, x, y, min_noise_variance=floor)
    assert fit.noise_variance >= floor
    assert fit.noise_variance == pytest.approx(floor, rel=1e-6)
    jac_flat, r = dense_problem(model, x, y)
    at_floor = explicit_lml(jac_flat, r, floor, fit.prior_variance)
    assert at_floor > explicit_lml(jac_flat, r, 2 * floor, fit.prior_variance)
    assert fit.log_marginal_likelihood == pytest.approx(at_floor, rel=1e-8)


def test_noise_floor_above_the_optimum_binds() -> None:
    c = case("mlp")
    model = c.build()
    x = c.inputs(10, seed=3)
    y = targets(x, 2, seed=4)
    jac, r = dense_problem(model, x, y)
    sigma2, _, _ = maximize_explicit(jac, r)
    floor = 10 * sigma2
    fit = fit_hyperparameters(model, x, y, min_noise_variance=floor)
    assert fit.noise_variance == pytest.approx(floor, rel=1e-6)
    _, s2_ref, best = maximize_explicit(jac, r, floor=floor)
    assert fit.log_marginal_likelihood >= best - 1e-7 * abs(best)
    assert fit.prior_variance == pytest.approx(s2_ref, rel=1e-3)


# --------------------------------------------------------------------------- subsampling
def test_subsamples_when_n_exceeds_max_points() -> None:
    c = case("scalar_out")  # o = 1, y of shape (n,)
    model = c.build()
    n, m = 8, 6
    x = c.inputs(n, seed=9)
    y = targets(x, 1, seed=10).squeeze(-1)
    fit = fit_hyperparameters(model, x, y, max_points=m, seed=3)
    assert fit.num_points == m
    jac, r = dense_problem(model, x, y)
    # identify the subset: the reported LML is the explicit LML on exactly one subset
    matches = [
        idx
        for idx in itertools.combinations(range(n), m)
        if abs(
            explicit_lml(jac[list(idx)], r[list(idx)], fit.noise_variance, fit.prior_variance)
            - fit.log_marginal_likelihood
        )
        <= 1e-8 * abs(fit.log_marginal_likelihood)
    ]
    assert len(matches) == 1, matches
    rows = list(matches[0])
    _, _, best = maximize_explicit(jac[rows], r[rows])
    assert fit.log_marginal_likelihood >= best - 1e-7 * abs(best)
    # the subset is seeded: same seed, same fit
    again = fit_hyperparameters(model, x, y, max_points=m, seed=3)
    assert again.noise_variance == fit.noise_variance
    assert again.prior_variance == fit.prior_variance
    # with n <= max_points every point is used
    full = fit_hyperparameters(model, x, y, max_points=n)
    assert full.num_points == n
    _, _, best_full = maximize_explicit(jac, r)
    assert full.log_marginal_likelihood >= best_full - 1e-7 * abs(best_full)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"mean": "constant"}, "mean"),
        ({"max_points": 1}, "max_points"),
        ({"max_points": 2.5}, "max_points"),
        ({"max_points": "100"}, "max_points"),
        ({"min_noise_variance": 0.0}, "min_noise_variance"),
        ({"min_noise_variance": -1e-3}, "min_noise_variance"),
        ({"min_noise_variance": float("nan")}, "min_noise_variance"),
        ({"prior_variance": 0.0}, "prior_variance"),
        ({"prior_variance": float("inf")}, "prior_variance"),
        ({"noise_variance": -1.0}, "noise_variance"),
        ({"noise_variance": float("nan")}, "noise_variance"),
        ({"y": torch.zeros(10, 3, dtype=F64)}, "y must have shape"),
        ({"y": torch.zeros(9, 2, dtype=F64)}, "y must have shape"),
        ({"y": torch.full((10, 2), float("nan"), dtype=F64)}, "non-finite"),
        ({"x": torch.full((10, 3), float("inf"), dtype=F64)}, "non-finite"),
        ({"model": "not a model"}, "torch.nn.Module or a Linearization"),
    ],
)
def test_bad_inputs_raise(override: dict, match: str) -> None:
    c = case("mlp")
    kwargs = {"model": c.build(), "x": c.inputs(10), "y": torch.zeros(10, 2, dtype=F64)}
    kwargs.update(override)
    model, x, y = kwargs.pop("model"), kwargs.pop("x"), kwargs.pop("y")
    with pytest.raises(ValueError, match=match):
        fit_hyperparameters(model, x, y, **kwargs)
