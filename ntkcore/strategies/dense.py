"""The ``dense`` strategy: explicit Jacobian and an eigendecomposition (exact, Eq. 2–3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ntkcore.distributed.reduction import LOCAL, DataReduction
from ntkcore.spectral import SpectralGram
from ntkcore.strategies.base import FitProblem, FitResult

__all__ = ["dense_spectrum", "fit_dense", "spectrum_over_shards"]

_F64 = torch.float64


def dense_spectrum(jac: Tensor, resid: Tensor) -> tuple[SpectralGram, Tensor]:
    """Eigendecomposition of the smaller Gram matrix of an explicit Jacobian.

    Parameters
    ----------
    jac : Tensor
        J, shape (N, p), float64.
    resid : Tensor
        r, shape (N,), float64.

    Returns
    -------
    spectral : SpectralGram
        In function space (K = J Jᵀ = Q Λ Qᵀ) when N <= p, else in weight space
        (JᵀJ = V Λ Vᵀ).
    eigenvectors : Tensor
        Q (N × N) or V (p × p).
    """
    n_obs, p = jac.shape
    if n_obs <= p:
        lam, vecs = torch.linalg.eigh(jac @ jac.mT)
        proj = vecs.mT @ resid
        spectral = SpectralGram(lam.clamp_min(0.0), proj, float(resid @ resid), n_obs, "function")
        return spectral, vecs
    return _weight_spectrum(jac.mT @ jac, jac.mT @ resid, float(resid @ resid), n_obs)


def _weight_spectrum(
    gram: Tensor, jac_resid: Tensor, resid_sq_norm: float, n_obs: int
) -> tuple[SpectralGram, Tensor]:
    """Weight-space spectrum from the sums JᵀJ (p × p), Jᵀr (p,) and ‖r‖²."""
    lam, vecs = torch.linalg.eigh(gram)
    proj = vecs.mT @ jac_resid
    return SpectralGram(lam.clamp_min(0.0), proj, resid_sq_norm, n_obs, "parameter"), vecs


def spectrum_over_shards(
    jac: Tensor, resid: Tensor, reduction: DataReduction = LOCAL
) -> tuple[SpectralGram, Tensor, Tensor]:
    """:func:`dense_spectrum` of the Jacobian of all ranks' data, from this rank's rows.

    Weight space (global N > p): the sums JᵀJ = Σ_r J_rᵀJ_r, Jᵀr and ‖r‖² are all-reduced
    (p² + p + 1 floats); nothing else leaves a rank. Function space (N <= p): the N × N
    Gram matrix couples all pairs of points, so the Jacobian rows (N × p, what ``dense``
    holds on one process anyway) and the residuals are all-gathered.

    Parameters
    ----------
    jac : Tensor
        This rank's rows of J, shape (N_r, p), float64.
    resid : Tensor
        This rank's r, shape (N_r,), float64.
    reduction : DataReduction
        The no-op default gives :func:`dense_spectrum` itself.

    Returns
    -------
    spectral, eigenvectors
        As :func:`dense_spectrum`, on the concatenated data.
    jacobian : Tensor
        The full J (function space, all ranks' rows in rank order) or ``jac`` (weight space).
    """
    p = jac.shape[1]
    n_obs = reduction.sum_int(jac.shape[0], "number of observations")
    if n_obs <= p:
        jac = reduction.gather_rows(jac, "Jacobian rows")
        resid = reduction.gather_rows(resid, "residuals")
        spectral, vecs = dense_spectrum(jac, resid)
        return spectral, vecs, jac
    if not reduction.distributed:
        spectral, vecs = dense_spectrum(jac, resid)
        return spectral, vecs, jac
    gram = reduction.sum_((jac.mT @ jac).contiguous(), "JᵀJ")
    jac_resid = reduction.sum_((jac.mT @ resid).contiguous(), "Jᵀr")
    rtr = reduction.sum_float(float(resid @ resid), "‖r‖²")
    spectral, vecs = _weight_spectrum(gram, jac_resid, rtr, n_obs)
    return spectral, vecs, jac


def fit_dense(problem: FitProblem) -> FitResult:
    """Exact posterior from the explicit Jacobian and an eigendecomposition.

    Function space (N <= p, Eq. 3 with K = J Jᵀ = Q Λ Qᵀ): w̄ = Jᵀ Q (Λ + c)⁻¹ Qᵀ r and
    Σ = s² (I − FᵀF), F = (Λ + c)^{-1/2} Qᵀ J. Weight space (N > p, Eq. 2 with
    JᵀJ = V Λ Vᵀ): w̄ = V (Λ + c)⁻¹ Vᵀ Jᵀ r and Σ = s² FᵀF, F = √c (Λ + c)^{-1/2} Vᵀ.
    The log marginal likelihood is the exact spectral formula.
    """
    lin = problem.linearization
    c = problem.shift
    resid = problem.residual(lambda: lin(problem.x))
    jac = lin.jacobian(problem.x).reshape(-1, lin.num_params).to(_F64)  # shape: (N, p)
    r = resid.reshape(-1).to(_F64)
    # on several ranks: the spectrum of all ranks' data (ntkcore.distributed)
    spectral, vecs, jac = spectrum_over_shards(jac, r, problem.reduction)
    lam, proj = spectral.eigenvalues, spectral.projections
    if spectral.space == "function":
        weights = jac.mT @ (vecs @ (proj / (lam + c)))
        factor = (vecs.mT @ jac) / (lam + c).sqrt().unsqueeze(-1)
        form = "subtract"
    else:
        weights = vecs @ (proj / (lam + c))
        factor = (math.sqrt(c) / (lam + c).sqrt()).unsqueeze(-1) * vecs.mT
        form = "direct"
    sigma2, s2 = problem.noise_variance, problem.prior_variance

    def lml() -> tuple[float, float]:
        val = spectral.log_marginal_likelihood(
            torch.tensor(sigma2, dtype=_F64), torch.tensor(s2, dtype=_F64)
        )
        return float(val), 0.0

    diagnostics = {
        "space": spectral.space,
        "iterations": 0,
        "residual": 0.0,
        "residuals": [0.0],
        "converged": True,
        "tolerance": 0.0,
        "variance_rank": int(factor.shape[0]),
        "exact_variance": True,
    }
    return FitResult(weights, factor, form, lml, diagnostics)
