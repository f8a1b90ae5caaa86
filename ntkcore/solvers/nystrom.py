"""Randomized Nyström approximation and preconditioner for shifted PSD systems.

For G ⪰ 0 (the NTK J Jᵀ in function space, or J ᵀJ in weight space) and a shift μ > 0,
CG on G + μI converges slowly when the spectrum of G has a few huge eigenvalues and μ
is small — exactly the trained-network NTK with small noise. The randomized Nyström
preconditioner (Frangella, Tropp & Udell, 2023, "Randomized Nyström preconditioning",
SIAM J. Matrix Anal. Appl.) removes the top-r eigenvalues from the condition number
using one batched sketch G Ω of r products. linear_operator ships a pivoted-Cholesky
preconditioner, but it needs r *sequential* kernel columns (one matvec each), whereas
the sketch is one batched product through ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Matmul = Callable[[Tensor], Tensor]  # (d, k) -> (d, k)


class NystromApproximation:
    r"""Rank-r randomized Nyström approximation Ĝ = U diag(λ) Uᵀ of a PSD matrix G.

    Parameters
    ----------
    matmul : callable
        ``matmul(V)`` returns G V for V of shape (d, k).
    dim : int
        d, the size of G.
    rank : int
        r, the sketch size (capped at d). With r = d the approximation is exact.
    dtype, device
        Of the sketch; algebra on the (d × r) factors runs in float64.
    generator : torch.Generator, optional
        For a reproducible sketch.

    Attributes
    ----------
    eigenvectors : Tensor
        U, shape (d, r), orthonormal columns.
    eigenvalues : Tensor
        λ, shape (r,), non-negative, descending.
    """

    def __init__(
        self,
        matmul: Matmul,
        dim: int,
        rank: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> None:
        r = int(min(rank, dim))
        if r < 1:
            raise ValueError(f"Nyström rank must be >= 1, got {rank}")
        # Drawn on the CPU so that a seed gives the same sketch on every device.
        omega = torch.randn(dim, r, dtype=torch.float64, generator=generator).to(device)
        omega, _ = torch.linalg.qr(omega)  # shape: (d, r)
        y = matmul(omega.to(dtype)).to(torch.float64)  # shape: (d, r)
        # Stabilizing shift (Tropp et al., 2017, Alg. 3); ||Y||₂ from the small Gram YᵀY.
        y_norm = torch.linalg.eigvalsh(y.mT @ y)[-1].clamp_min(0.0).sqrt()
        nu = torch.finfo(dtype).eps * dim**0.5 * y_norm
        nu = torch.clamp(nu, min=torch.finfo(torch.float64).tiny)
        y_nu = y + nu * omega
        core = omega.mT @ y_nu
        core = 0.5 * (core + core.mT)
        chol, info = torch.linalg.cholesky_ex(core)
        jitter, eye = nu, torch.eye(r, dtype=core.dtype, device=device)
        while int(info) != 0:  # Ωᵀ G Ω lost definiteness to rounding: add jitter
            jitter = jitter * 10
            chol, info = torch.linalg.cholesky_ex(core + jitter * eye)
        b = torch.linalg.solve_triangular(chol, y_nu.mT, upper=False).mT  # shape: (d, r)
        u, s, _ = torch.linalg.svd(b, full_matrices=False)
        self.eigenvectors: Tensor = u
        self.eigenvalues: Tensor = torch.clamp(s.square() - nu, min=0.0)
        self.rank = r
        self.dim = dim
        self.dtype = dtype


class NystromPreconditioner:
    r"""Preconditioner P ≈ G + μI from a Nyström approximation (Frangella et al., Eq. 5.3).

    P⁻¹ = (λ_r + μ) U (Λ + μI)⁻¹ Uᵀ + (I − U Uᵀ). Also provides P^{-1/2} and log|P|
    for stochastic Lanczos quadrature of log|G + μI|.
    """

    def __init__(self, approximation: NystromApproximation, shift: float) -> None:
        if not shift > 0:
            raise ValueError(f"the shift must be positive, got {shift}")
        self.approximation = approximation
        self.shift = float(shift)
        lam = approximation.eigenvalues
        self._floor = lam[-1] + self.shift
        self._scale = self._floor / (lam + self.shift)  # shape: (r,)
        self._u = approximation.eigenvectors.to(approximation.dtype)

    def _apply(self, rhs: Tensor, diag: Tensor) -> Tensor:
        u = self._u
        proj = u.mT @ rhs  # shape: (r, k)
        return rhs + u @ ((diag.to(rhs.dtype).unsqueeze(-1) - 1.0) * proj)

    def solve(self, rhs: Tensor) -> Tensor:
        """P⁻¹ rhs for rhs of shape (d, k)."""
        return self._apply(rhs, self._scale)

    def inv_sqrt(self, rhs: Tensor) -> Tensor:
        """P^{-1/2} rhs."""
        return self._apply(rhs, self._scale.sqrt())

    def sqrt(self, rhs: Tensor) -> Tensor:
        """P^{1/2} rhs."""
        return self._apply(rhs, self._scale.rsqrt())

    def logdet(self) -> float:
        """log|P| = Σ log((λ_j + μ) / (λ_r + μ))."""
        return float(-torch.log(self._scale).sum())
