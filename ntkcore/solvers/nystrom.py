"""Randomized Nyström approximation and preconditioner for shifted PSD systems.

For G ⪰ 0 (the NTK J Jᵀ in function space, or J ᵀJ in weight space) and a shift μ > 0,
CG on G + μI converges slowly when the spectrum of G has a few huge eigenvalues and μ
is small — exactly the trained-network NTK with small noise. The randomized Nyström
preconditioner (Frangella, Tropp & Udell, 2023, "Randomized Nyström preconditioning",
SIAM J. Matrix Anal. Appl.) removes the top-r eigenvalues from the condition number
using one batched sketch G Ω of r products. linear_operator ships a pivoted-Cholesky
preconditioner, but it needs r *sequential* kernel columns (one matvec each), whereas
the sketch is one batched product through ``vmap``.

The rank r that CG needs is about the number of eigenvalues of G above μ, which is not
known in advance. :meth:`NystromApproximation.adaptive` finds it as Frangella et al.
(2023, Sec. 5.4) suggest: sketch a block, double the total rank while the smallest
Nyström eigenvalue λ̂_r is above a threshold, and reuse every product already made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Matmul = Callable[[Tensor], Tensor]  # (d, k) -> (d, k)
_F64 = torch.float64


@dataclass(frozen=True)
class SketchRound:
    """One round of the adaptive sketch: the total rank and its smallest eigenvalue λ̂_r."""

    rank: int
    smallest_eigenvalue: float
    seconds: float


def _draw_block(
    dim: int,
    k: int,
    previous: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """k new orthonormal test vectors, orthogonal to the columns of ``previous``.

    Drawn on the CPU in float64 so that a seed gives the same sketch on every device;
    without ``previous`` this is exactly the QR of a Gaussian (d × k) matrix.
    """
    block = torch.randn(dim, k, dtype=_F64, generator=generator).to(device)
    if previous is not None:
        # Block Gram–Schmidt, twice ("twice is enough", Giraud et al., 2005).
        for _ in range(2):
            block = block - previous @ (previous.mT @ block)
    block, _ = torch.linalg.qr(block)
    return block


def _factorize(omega: Tensor, y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, float]:
    """Eigenpairs (U, λ) of the Nyström approximation G Ω (Ωᵀ G Ω)⁺ Ωᵀ G, and ν.

    Numerically stable form of Tropp et al. (2017, Alg. 3) with the shift
    ν = eps(dtype) √d ‖Y‖₂, Y = G Ω, both (d × r) in float64. The eigenvalues are
    clamped at zero and sorted in descending order.
    """
    dim, r = omega.shape
    # ||Y||₂ from the small Gram YᵀY.
    y_norm = torch.linalg.eigvalsh(y.mT @ y)[-1].clamp_min(0.0).sqrt()
    nu = torch.finfo(dtype).eps * dim**0.5 * y_norm
    nu = torch.clamp(nu, min=torch.finfo(_F64).tiny)
    y_nu = y + nu * omega
    core = omega.mT @ y_nu
    core = 0.5 * (core + core.mT)
    chol, info = torch.linalg.cholesky_ex(core)
    jitter, eye = nu, torch.eye(r, dtype=core.dtype, device=core.device)
    while int(info) != 0:  # Ωᵀ G Ω lost definiteness to rounding: add jitter
        jitter = jitter * 10
        chol, info = torch.linalg.cholesky_ex(core + jitter * eye)
    b = torch.linalg.solve_triangular(chol, y_nu.mT, upper=False).mT  # shape: (d, r)
    u, s, _ = torch.linalg.svd(b, full_matrices=False)
    return u, torch.clamp(s.square() - nu, min=0.0), float(nu)


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
    rank : int
        r.
    resolution : float
        ν = eps(dtype) √d ‖G Ω‖₂, the stabilizing shift: eigenvalues below it are not
        resolved by a sketch computed in ``dtype`` (they come out as 0).
    rounds : list of SketchRound
        One entry for a fixed rank; one per doubling for :meth:`adaptive`.
    stop_reason : str
        Why the sketch stopped growing: ``"fixed rank"``, or for :meth:`adaptive`
        ``"threshold"`` (λ̂_r <= threshold), ``"dimension"`` (r = d, exact),
        ``"max_rank"`` or ``"completed"`` (threshold met, then completed to ``span_rank``).
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
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"Nyström rank must be a positive int, got {rank!r}")
        t0 = time.perf_counter()
        omega = _draw_block(dim, min(rank, dim), None, generator, device)  # shape: (d, r)
        y = matmul(omega.to(dtype)).to(_F64)  # shape: (d, r)
        self._set(omega, y, dtype, dim)
        self.rounds = [SketchRound(self.rank, self.smallest, time.perf_counter() - t0)]
        self.stop_reason = "fixed rank"

    def _set(self, omega: Tensor, y: Tensor, dtype: torch.dtype, dim: int) -> None:
        u, lam, nu = _factorize(omega, y, dtype)
        self.eigenvectors: Tensor = u
        self.eigenvalues: Tensor = lam
        self.resolution = nu
        self.rank = int(lam.numel())
        self.dim = dim
        self.dtype = dtype

    @classmethod
    def from_eigenpairs(
        cls, eigenvectors: Tensor, eigenvalues: Tensor, *, dtype: torch.dtype
    ) -> NystromApproximation:
        """A low-rank PSD approximation U diag(λ) Uᵀ given by its eigenpairs.

        For :class:`NystromPreconditioner` from a factor computed elsewhere (``adapt`` in
        weight space: the SVD of Jᵀ U for a function-space sketch U). ``eigenvalues`` are
        clamped at zero and must be in descending order.
        """
        lam = eigenvalues.to(_F64).clamp_min(0.0)
        if eigenvectors.dim() != 2 or lam.shape != eigenvectors.shape[-1:]:
            raise ValueError(
                f"eigenvectors (d, r) and eigenvalues (r,) do not match: "
                f"{tuple(eigenvectors.shape)} and {tuple(eigenvalues.shape)}"
            )
        if lam.numel() > 1 and bool((lam[1:] > lam[:-1]).any()):
            raise ValueError("eigenvalues must be in descending order")
        self = cls.__new__(cls)
        self.eigenvectors = eigenvectors.to(_F64)
        self.eigenvalues = lam
        self.rank = int(lam.numel())
        self.dim = int(eigenvectors.shape[0])
        self.dtype = dtype
        self.resolution = 0.0
        self.rounds = [SketchRound(self.rank, self.smallest, 0.0)]
        self.stop_reason = "given"
        return self

    @property
    def smallest(self) -> float:
        """λ̂_r, the smallest eigenvalue of the approximation."""
        return float(self.eigenvalues[-1])

    @classmethod
    def adaptive(
        cls,
        matmul: Matmul,
        dim: int,
        *,
        threshold: float,
        initial_rank: int = 32,
        max_rank: int = 512,
        span_rank: int | None = None,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> NystromApproximation:
        r"""Grow the sketch until its smallest eigenvalue λ̂_r is at most ``threshold``.

        Ranks ``initial_rank``, 2·``initial_rank``, 4·``initial_rank``, … capped at
        min(``max_rank``, d). Each round draws only the new test vectors (orthogonal to
        the previous ones), so the total cost is one product per column of the final
        sketch; the small factorization is recomputed each round. λ̂_r underestimates
        λ_r(G) (Nyström approximates from below), and a preconditioner of rank r with
        λ_{r+1}(G) <= μ bounds the condition number of CG by about 2 (Frangella et al.,
        2023, Prop. 5.3 and Sec. 5.4.2), hence ``threshold`` = μ for solving.

        Parameters
        ----------
        threshold : float
            Stop once λ̂_r <= threshold (must be positive and finite).
        initial_rank : int
            Size of the first block.
        max_rank : int
            Cap on the total rank.
        span_rank : int, optional
            The rank at which the approximation is exact (rank(G), or a bound on it). When
            the threshold is met at a rank r with r < ``span_rank`` <= min(2r,
            ``max_rank``), the sketch is completed to ``span_rank`` (at most doubling its
            cost) so that it is exact; ``stop_reason`` is then ``"completed"``.
        """
        for name, value in (("initial_rank", initial_rank), ("max_rank", max_rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be positive and finite, got {threshold!r}")
        cap = min(max_rank, dim)
        self = cls.__new__(cls)
        self.rounds = []
        omega: Tensor | None = None
        y: Tensor | None = None
        target = min(initial_rank, cap)
        completing = False
        while True:
            t0 = time.perf_counter()
            have = 0 if omega is None else omega.shape[1]
            block = _draw_block(dim, target - have, omega, generator, device)
            y_block = matmul(block.to(dtype)).to(_F64)
            omega = block if omega is None else torch.cat([omega, block], dim=1)
            y = y_block if y is None else torch.cat([y, y_block], dim=1)
            self._set(omega, y, dtype, dim)
            self.rounds.append(SketchRound(self.rank, self.smallest, time.perf_counter() - t0))
            if completing:
                self.stop_reason = "completed"
            elif (
                self.smallest <= threshold
                and span_rank is not None
                and self.rank < span_rank <= min(2 * self.rank, cap)
            ):
                target, completing = span_rank, True
                continue
            elif self.smallest <= threshold:
                self.stop_reason = "threshold"
            elif self.rank >= dim:
                self.stop_reason = "dimension"
            elif self.rank >= cap:
                self.stop_reason = "max_rank"
            else:
                target = min(2 * self.rank, cap)
                continue
            return self


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


def largest_eigenvalue(
    matmul: Matmul,
    dim: int,
    *,
    num_vectors: int = 4,
    num_iter: int = 4,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> float:
    r"""Estimate λ_max of a PSD operator by block power iteration with Rayleigh–Ritz.

    ``num_iter`` products with ``num_vectors`` columns each; the estimate is the largest
    Ritz value of the last block, a lower bound on λ_max that converges to it (quickly when
    λ_max is separated from the rest; within a few percent after four steps on the
    slowly decaying NTK tails measured in ``benchmarks/RESULTS.md``).

    Parameters
    ----------
    matmul : callable
        ``matmul(V)`` = A V for V of shape (d, k) in ``dtype``.
    dim : int
        d.
    """
    if num_vectors < 1 or num_iter < 1:
        raise ValueError(
            f"num_vectors and num_iter must be >= 1, got {num_vectors} and {num_iter}"
        )
    k = min(num_vectors, dim)
    z = torch.randn(dim, k, dtype=_F64, generator=generator).to(device)
    estimate = 0.0
    for _ in range(num_iter):
        z, _ = torch.linalg.qr(z)
        az = matmul(z.to(dtype)).to(_F64)
        ritz = torch.linalg.eigvalsh(0.5 * (z.mT @ az + az.mT @ z))
        estimate = max(estimate, float(ritz[-1]))
        z = az
    return estimate
