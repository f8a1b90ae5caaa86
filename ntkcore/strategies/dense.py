"""The ``dense`` strategy: explicit Jacobian and an eigendecomposition (exact, Eq. 2–3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ntkcore.spectral import SpectralGram
from ntkcore.strategies.base import FitProblem, FitResult

__all__ = ["dense_spectrum", "fit_dense"]

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
        space = "function"
    else:
        lam, vecs = torch.linalg.eigh(jac.mT @ jac)
        proj = vecs.mT @ (jac.mT @ resid)
        space = "parameter"
    spectral = SpectralGram(lam.clamp_min(0.0), proj, float(resid @ resid), n_obs, space)
    return spectral, vecs


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
    spectral, vecs = dense_spectrum(jac, r)
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
