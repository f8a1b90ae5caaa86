"""Closed-form GP quantities from an eigendecomposition of the Gram matrix.

With the eigenvalues of the Gram matrix (J Jᵀ in function space or JᵀJ in weight
space — they share their non-zero spectrum) and the projections of the residual onto the
eigenvectors, the log marginal likelihood of the finite-NTK GP is a closed-form function
of the prior variance s² and noise variance σ². One eigendecomposition then serves every
(s², σ²): the dense posterior and the hyperparameter fit share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SpectralGram:
    r"""Spectrum of the Gram matrix and the residual's coordinates in its eigenbasis.

    Parameters
    ----------
    eigenvalues : Tensor
        λ, shape (m,), non-negative (float64).
    projections : Tensor
        Function space (``space="function"``, m = N = n·o): Qᵀ r with K = J Jᵀ = Q Λ Qᵀ.
        Weight space (``space="parameter"``, m = p): Vᵀ Jᵀ r with JᵀJ = V Λ Vᵀ.
    residual_sq_norm : float
        ||r||², r = y − m(X) flattened.
    num_observations : int
        N = n·o.
    space : {"function", "parameter"}
    """

    eigenvalues: Tensor
    projections: Tensor
    residual_sq_norm: float
    num_observations: int
    space: str

    def log_marginal_likelihood(self, noise_variance: Tensor, prior_variance: Tensor) -> Tensor:
        r"""log N(r | 0, s² J Jᵀ + σ² I), differentiable in (σ², s²).

        Function space: −½ Σ c_j² / (s²λ_j + σ²) − ½ Σ log(s²λ_j + σ²) − (N/2) log 2π.
        Weight space (Woodbury, Eq. 2 ↔ Eq. 3): the quadratic form is
        (||r||² − Σ s² g_j² / (s²λ_j + σ²)) / σ² and the log-determinant is
        Σ log(s²λ_j + σ²) + (N − p) log σ².
        """
        lam, proj = self.eigenvalues, self.projections
        s2, sigma2 = prior_variance, noise_variance
        denom = s2 * lam + sigma2
        n_obs = self.num_observations
        if self.space == "function":
            quad = (proj.square() / denom).sum()
            logdet = denom.log().sum()
        else:
            quad = (self.residual_sq_norm - (s2 * proj.square() / denom).sum()) / sigma2
            logdet = denom.log().sum() + (n_obs - lam.numel()) * torch.log(sigma2)
        return -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * math.log(2 * math.pi)
