r"""The matrix-free strategies ``function`` (CG on J Jᵀ + cI, Eq. 3) and ``parameter``
(CG on JᵀJ + cI, Eq. 2), one step per function:

1. :func:`sketch` — one adaptive randomized Nyström sketch of the kernel J Jᵀ: the CG
   preconditioner and the basis U of the covariance factor;
2. :func:`solve` — preconditioned CG with true residuals (refined on the exact residual
   for finite-difference Fisher products);
3. :func:`factor` — w̄ and the Galerkin factor F = L⁻¹ UᵀJ as one (1 + r) × p block;
4. :func:`variance_bound` — δ = ‖(I − P) J Jᵀ (I − P)‖₂ / c, with Σ̂ ⪯ (1 + δ) Σ;
5. :func:`log_marginal_likelihood` and :func:`diagnostics`.

Every product is at the training inputs through :class:`TrainingProducts`.

Data sharded across a process group (:mod:`ntkcore.distributed`): function-space vectors
(N rows) would be sharded too, and every inner product, QR and Lanczos step on them would
need its own collective. Instead both strategies then work in weight space, where every
vector is p long and replicated: the system is (JᵀJ + cI) w̄ = Jᵀr (Eq. 2, one all-reduce of
k p-vectors per product, the same cost per CG iteration as Eq. 3's K u = J(Σ_r J_rᵀu_r)),
the sketch is the Nyström sketch of JᵀJ (:func:`weight_sketch`, same spectrum as J Jᵀ),
and the Galerkin factor's basis is U = J T with T from that sketch (U orthonormal,
sharded by rows, never formed: W = JᵀU = JᵀJ T). Every rank then runs the same CG, sketch
algebra and Lanczos on identical replicated data.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ntkcore.distributed.stream import StreamedJacobian
from ntkcore.memory import available_memory as _free_memory
from ntkcore.solvers.cg import SolveInfo, conjugate_gradients
from ntkcore.solvers.nystrom import (
    Matmul,
    NystromApproximation,
    NystromPreconditioner,
    largest_eigenvalue,
)
from ntkcore.solvers.slq import logdet_slq
from ntkcore.strategies import precision
from ntkcore.strategies.base import FitOptions, FitProblem, FitResult, LmlClosure
from ntkcore.strategies.precision import Precision
from ntkcore.strategies.products import TrainingProducts
from ntkcore.variance import VarianceCorrector

__all__ = [
    "Sketch",
    "WeightSystem",
    "diagnostics",
    "factor",
    "fit_function_space",
    "fit_parameter_space",
    "log_marginal_likelihood",
    "sketch",
    "solve",
    "variance_bound",
    "weight_sketch",
]

_F64 = torch.float64
REFINE_MARGIN = 0.1  # mixed-precision refinement aims at tol × this
_INITIAL_RANK = 32  # first block of the adaptive Nyström sketch
# Transient bytes of one group of float32 reverse products or one column block of the
# triangular solve while the (1 + r) × p float64 covariance block is filled.
_WIDE_GROUP_BYTES = 2**30


def _factor_rank_cap(p: int, device: torch.device) -> int:
    """The largest rank r whose (1 + r) × p float64 covariance block fits in half the free
    memory of ``device`` (the other half for products and the test Jacobians)."""
    return int(_free_memory(device) // 2 // (8 * p)) - 1


# --------------------------------------------------------------------------- the system
@dataclass
class WeightSystem:
    """The linear system of one space: (J Jᵀ + cI) z = r or (JᵀJ + cI) w = Jᵀr.

    Attributes
    ----------
    space : {"function", "parameter"}
    dim : int
        N or p.
    matmul : callable
        The system's product as CG uses it (finite-difference Fisher products for
        ``fisher="fd"``).
    exact_matmul : callable or None
        The exact product when ``matmul`` is approximate (the refinement's residual).
    rhs : Tensor
        Shape (dim, 1), model dtype.
    """

    space: str
    dim: int
    matmul: Matmul
    exact_matmul: Matmul | None
    rhs: Tensor

    @classmethod
    def build(
        cls, products: TrainingProducts, space: str, resid: Tensor, c: float, fisher: str
    ) -> WeightSystem:
        if space == "function":
            return cls(
                space,
                products.num_observations,
                lambda v: products.kernel(v) + c * v,
                None,
                resid.reshape(-1, 1),
            )
        gram = products.gram if fisher == "exact" else products.fisher_gram
        exact = None if fisher == "exact" else (lambda v: products.gram(v) + c * v)
        return cls(
            space, products.p, lambda v: gram(v) + c * v, exact,
            products.vjp(resid.reshape(-1, 1)),
        )


# --------------------------------------------------------------------------- 1. sketch
@dataclass
class Sketch:
    """The adaptive Nyström sketch of J Jᵀ and what it feeds.

    Attributes
    ----------
    nystrom : NystromApproximation
        U Λ̂ Uᵀ ⪯ J Jᵀ (N × N), U orthonormal (N × r).
    preconditioner : NystromPreconditioner
        Of the solve's system (function space: from the sketch; weight space: from the
        SVD of W = JᵀU).
    weight_basis : Tensor or None
        W = JᵀU (p × r, float64), weight space only (it is also UᵀJ of the factor).
    cap : int
        The rank that spans the problem (N in function space, min(N, p) in weight space).
    memory_cap : int
        The largest rank whose (1 + r) × p float64 factor fits in half the free memory.
    memory_capped : bool
        ``rank="auto"`` had its ``max_rank`` lowered to ``memory_cap``.
    max_rank : int
        The cap ``rank="auto"`` ran under.
    seconds : float
    directions : Tensor or None
        Sharded data only (:func:`weight_sketch`): T (p × r, float64) with U = J T the
        orthonormal function-space basis of the factor (then ``weight_basis`` = JᵀJ T and
        ``nystrom`` is the sketch of JᵀJ).
    ritz_values : Tensor or None
        Sharded data only: Θ (r,), the Rayleigh–Ritz values of JᵀJ on the sketch's span
        (its Ritz vectors are T Θ^{1/2}); more accurate than the Nyström eigenvalues.
    """

    nystrom: NystromApproximation
    preconditioner: NystromPreconditioner
    weight_basis: Tensor | None
    cap: int
    memory_cap: int
    memory_capped: bool
    max_rank: int
    seconds: float
    directions: Tensor | None = None
    ritz_values: Tensor | None = None

    @property
    def basis(self) -> Tensor:
        """U, shape (N, r), orthonormal columns (the sketch's eigenvectors, p × r, for
        sharded data: see ``directions``)."""
        return self.nystrom.eigenvectors

    @property
    def rank(self) -> int:
        """The rank of the covariance factor's basis."""
        if self.directions is not None:
            return int(self.directions.shape[1])
        return int(self.basis.shape[1])


def sketch(products: TrainingProducts, space: str, c: float, options: FitOptions) -> Sketch:
    """Sketch J Jᵀ (adaptively for ``rank="auto"``) and build the CG preconditioner.

    The sketch is always of the kernel J Jᵀ in function space (N × N), also for the
    weight-space system: JᵀJ has the same non-zero spectrum but lives in p dimensions,
    where a float32 sketch resolves it poorly (MLP, p = 50,901, N = 1,000: λ̂₃₂/c = 2.1 in
    weight space against 7.4 in function space and λ₃₂/c = 8.0 from eigvalsh; in float64
    both agree), which stopped ``rank="auto"`` too early.
    """
    if products.sharded:
        return weight_sketch(products, c, options)
    n_obs, p = products.num_observations, products.p
    rank = options.rank
    gen = torch.Generator().manual_seed(options.seed)
    t0 = time.perf_counter()
    # In weight space at most rank(J) <= min(N, p) columns carry information; in function
    # space with N > p the sketch still needs all N so that λ̂_r = 0 and the
    # preconditioner sends the null space of J Jᵀ to the shift (condition number 1).
    cap = n_obs if space == "function" else min(n_obs, p)
    memory_cap, memory_capped, max_rank = _rank_caps(products, cap, options)
    if rank == "auto":
        # Once λ̂_r is small enough, a rank-r sketch whose next doubling spans the problem
        # (min(N, p) <= 2r) is completed: exact variances for at most twice the products.
        nystrom = NystromApproximation.adaptive(
            products.kernel, n_obs, threshold=c * min(1.0, options.variance_tol),
            initial_rank=_INITIAL_RANK, max_rank=min(max_rank, cap),
            span_rank=min(n_obs, p), dtype=products.dtype, device=products.device,
            generator=gen,
        )
    else:
        assert isinstance(rank, int)
        nystrom = NystromApproximation(
            products.kernel, n_obs, min(rank, cap), dtype=products.dtype,
            device=products.device, generator=gen,
        )
    weight_basis = None
    if space == "function":
        precond = NystromPreconditioner(nystrom, c)
    else:
        # Weight space: JᵀJ ⪰ Jᵀ U Uᵀ J = W Wᵀ (W = JᵀU, p × r), whose eigenpairs (the thin
        # SVD of W) precondition JᵀJ + cI as a Nyström approximation would; W is also the
        # variance factor's UᵀJ below.
        weight_basis = products.vjp(nystrom.eigenvectors.to(products.dtype)).to(_F64)
        v_w, s_w, _ = torch.linalg.svd(weight_basis, full_matrices=False)
        precond = NystromPreconditioner(
            NystromApproximation.from_eigenpairs(v_w, s_w.square(), dtype=products.dtype), c
        )
    return Sketch(
        nystrom, precond, weight_basis, cap, memory_cap, memory_capped, max_rank,
        time.perf_counter() - t0,
    )


def _rank_caps(
    products: TrainingProducts, cap: int, options: FitOptions
) -> tuple[int, bool, int]:
    """(memory_cap, memory_capped, max_rank) of the sketch; raises for a fixed rank whose
    factor would not fit. The same on every rank of a process group (the smallest)."""
    p, rank, max_rank = products.p, options.rank, options.max_rank
    # The covariance factor [w̄; F] is (1 + r) × p float64 and must fit in half the free
    # memory (p = 10⁸ on one H200: r <= ~80; a rank-256 factor would need 190 GiB).
    memory_cap = products.reduction.min_int(
        _factor_rank_cap(p, products.device), "covariance factor memory cap"
    )
    if rank != "auto" and min(rank, cap) > memory_cap:
        raise ValueError(
            f"rank={rank} needs a ({min(rank, cap) + 1} × {p}) float64 covariance "
            f"factor ({(min(rank, cap) + 1) * p * 8 / 2**30:.0f} GiB), more than half "
            f"the free memory allows (rank <= {memory_cap}); lower rank or use rank='auto'"
        )
    memory_capped = rank == "auto" and min(max_rank, cap) > memory_cap
    if memory_capped:
        max_rank = max(1, memory_cap)
    return memory_cap, memory_capped, max_rank


def weight_sketch(products: TrainingProducts, c: float, options: FitOptions) -> Sketch:
    r"""The sketch for data sharded across ranks: Nyström of JᵀJ, replicated on every rank.

    The test matrix Ω (p × r, drawn from ``options.seed``) is the same on every rank, each
    sketch product JᵀJ Ω = Σ_r J_rᵀJ_r Ω is one all-reduce, and the r × r algebra is
    repeated identically on every rank. The sketch's eigenvectors V (p × r) precondition
    the weight-space CG directly. The covariance factor needs an orthonormal basis U of
    function space with W = JᵀU: r more products give JᵀJ V, the Gram matrix
    G = VᵀJᵀJ V = Q Θ Qᵀ and T = V Q Θ^{-1/2}, so that U = J T has UᵀU = I and
    W = JᵀJ V Q Θ^{-1/2}. Directions with Θ below the products' rounding
    (u · Θ_max · 10, u of the network's dtype: null directions of J) are dropped. U spans
    J V ⊇ the top eigenspace of J Jᵀ as the function-space sketch's basis does, and spans
    range(J) when r reaches min(N, p) (exact variances, as on one process).
    """
    n_obs, p = products.num_observations, products.p
    dtype = products.dtype
    t0 = time.perf_counter()
    cap = min(n_obs, p)
    memory_cap, memory_capped, max_rank = _rank_caps(products, cap, options)
    gen = torch.Generator().manual_seed(options.seed)
    if options.rank == "auto":
        nystrom = NystromApproximation.adaptive(
            products.gram, p, threshold=c * min(1.0, options.variance_tol),
            initial_rank=_INITIAL_RANK, max_rank=min(max_rank, cap), span_rank=cap,
            dtype=dtype, device=products.device, generator=gen,
        )
    else:
        assert isinstance(options.rank, int)
        nystrom = NystromApproximation(
            products.gram, p, min(options.rank, cap), dtype=dtype, device=products.device,
            generator=gen,
        )
    v = nystrom.eigenvectors  # shape: (p, r), float64
    gram_v = products.gram(v.to(dtype)).to(_F64)  # JᵀJ V, shape (p, r)
    g = v.mT @ gram_v
    theta, q = torch.linalg.eigh(0.5 * (g + g.mT))
    theta, q = theta.flip(0), q.flip(1)  # descending
    floor = 10 * torch.finfo(dtype).eps * float(theta[0].clamp_min(0.0))
    keep = theta > max(floor, torch.finfo(_F64).tiny)
    scale = theta[keep].rsqrt()
    directions = (v @ q[:, keep]) * scale  # T, shape (p, r')
    weight_basis = (gram_v @ q[:, keep]) * scale  # W = JᵀJ T = JᵀU, shape (p, r')
    return Sketch(
        nystrom, NystromPreconditioner(nystrom, c), weight_basis, cap, memory_cap,
        memory_capped, max_rank, time.perf_counter() - t0, directions=directions,
        ritz_values=theta[keep],
    )


# --------------------------------------------------------------------------- 2. solve
def solve(
    system: WeightSystem,
    sk: Sketch,
    options: FitOptions,
    *,
    exact: WeightSystem | None = None,
    working_tol: float | None = None,
    refine_to: float | None = None,
) -> tuple[Tensor, SolveInfo]:
    """Preconditioned CG on the system.

    Finite-difference Fisher products are refined on the exact residual. With ``exact``
    (the same system on float64 products, :mod:`ntkcore.strategies.precision`) the
    solution and the residuals are float64 and the CG runs stay in the network's dtype:
    mixed-precision iterative refinement, each run stopping at ``working_tol`` at the
    latest.
    """
    what = (
        f"{system.space}-space system (JJᵀ + cI)"
        if system.space == "function"
        else "weight-space system"
    )
    if exact is None:
        return conjugate_gradients(
            system.matmul, system.rhs, preconditioner=sk.preconditioner.solve,
            tol=options.tol, max_iter=options.max_iter, what=what,
            residual_matmul=system.exact_matmul,
        )
    return conjugate_gradients(
        system.matmul, exact.rhs, preconditioner=sk.preconditioner.solve, tol=options.tol,
        max_iter=options.max_iter, what=what, residual_matmul=exact.matmul,
        working_dtype=system.rhs.dtype, working_tol=working_tol, refine_to=refine_to,
    )


# --------------------------------------------------------------------------- 3. factor
def factor(
    products: TrainingProducts,
    space: str,
    sk: Sketch,
    z: Tensor,
    c: float,
    *,
    float64_products: TrainingProducts | None = None,
    float64_rows: bool = False,
) -> tuple[Tensor, Tensor]:
    """w̄ and the Galerkin covariance factor F = L⁻¹ UᵀJ (LLᵀ = UᵀJJᵀU + cI).

    Jᵀ U (UᵀJJᵀU + cI)⁻¹ UᵀJ ⪯ Jᵀ (JJᵀ + cI)⁻¹ J, so the variance s²(‖J*‖² − ‖F J*ᵀ‖²) is
    an upper bound that is exact when U spans range(J). [w̄; UᵀJ] is one float64 block,
    (1 + r) × p: predict multiplies it with the test Jacobians in one GEMM, and F
    overwrites UᵀJ column block by column block (no second r × p copy: what lets p reach
    10⁸ on one GPU). Returns (w̄, F), views of that block.

    ``float64_products``: after a mixed-precision solve (z float64), w̄ = Jᵀz comes from
    float64 products (one reverse product), so that it keeps what the refinement gained;
    with ``float64_rows`` UᵀJ too (r reverse products), for a basis that spans the problem,
    whose factor is then the exact answer: a float32 UᵀJ is off by ~u·‖J‖², which is ~c
    at the condition numbers that call for refinement (variances 1e-2 off at κ ≈ 1e7).
    A basis that does not span keeps the float32 UᵀJ: accurate variances are corrected
    on float64 products at predict time anyway (:class:`ntkcore.variance.VarianceCorrector`).
    """
    p = products.p
    basis = sk.basis
    rows = torch.empty(1 + sk.rank, p, dtype=_F64, device=products.device)
    rows_products = float64_products if float64_rows and float64_products else products
    if space == "parameter":
        rows[0].copy_(z.reshape(-1))
    elif float64_products is not None and rows_products is not float64_products:
        rows[0].copy_(float64_products.vjp(z.to(_F64)).reshape(-1))  # w̄ = Jᵀz in float64
    if space == "parameter" and rows_products is products:
        assert sk.weight_basis is not None
        rows[1:].copy_(sk.weight_basis.mT)  # shape: (r, p) = UᵀJ, from the sketch step
    elif sk.directions is not None:  # sharded data: UᵀJ = (JᵀJ T)ᵀ by float64 products
        rows[1:].copy_(rows_products.gram(sk.directions.to(rows_products.dtype)).mT)
    else:
        pr = rows_products
        cols = basis.to(pr.dtype)  # shape: (N, r)
        first = 1
        if space == "function" and not (float64_products is not None and pr is products):
            cols, first = torch.cat([z.to(pr.dtype), cols], dim=1), 0  # w̄ = Jᵀz with UᵀJ
        # batched reverse passes, a group of columns at a time
        group = max(1, min(cols.shape[1], _WIDE_GROUP_BYTES // (p * cols.element_size())))
        for s in range(0, cols.shape[1], group):
            rows[first + s : first + s + group].copy_(pr.vjp(cols[:, s : s + group]).mT)
    sk.weight_basis = None  # the factor now holds UᵀJ
    weights, w_rows = rows[0], rows[1:]
    core = w_rows @ w_rows.mT + c * torch.eye(w_rows.shape[0], dtype=_F64, device=rows.device)
    chol = torch.linalg.cholesky(core)
    block = max(1, _WIDE_GROUP_BYTES // (8 * w_rows.shape[0]))
    for s in range(0, p, block):
        w_rows[:, s : s + block] = torch.linalg.solve_triangular(
            chol, w_rows[:, s : s + block], upper=False
        )
    return weights, w_rows  # F = L⁻¹ UᵀJ, shape (r, p)


# --------------------------------------------------------------------------- 4. bound
def variance_bound(products: TrainingProducts, sk: Sketch, c: float, seed: int) -> float:
    """δ with Σ̂ ⪯ (1 + δ) Σ for the Galerkin covariance Σ̂ of the basis U (P = UUᵀ).

    Σ̂ = s²(I + JᵀPJ/c)⁻¹ and Σ = s²(I + JᵀJ/c)⁻¹; since
    I + JᵀJ/c ⪯ (1 + δ)(I + JᵀPJ/c) with δ = ‖(I − P) J Jᵀ (I − P)‖₂ / c, no variance is
    overestimated by more than the factor 1 + δ. δ by four steps of block power iteration
    (16 products). For sharded data (``sk.directions``) the same norm in weight space:
    ‖Jᵀ(I − P)J‖₂ = ‖JᵀJ − W Wᵀ‖₂ with W = JᵀU (replicated p-vectors).
    """
    if sk.directions is not None:
        assert sk.weight_basis is not None, "variance_bound runs before factor"
        w = sk.weight_basis

        def weight_tail(v: Tensor) -> Tensor:  # (JᵀJ − W Wᵀ) v
            v64 = v.to(_F64)
            return products.gram(v).to(_F64) - w @ (w.mT @ v64)

        return largest_eigenvalue(
            weight_tail, products.p, dtype=products.dtype, device=products.device,
            generator=torch.Generator().manual_seed(seed + 2),
        ) / c
    u64 = sk.basis.to(_F64)

    def tail_kernel(v: Tensor) -> Tensor:  # (I − P) J Jᵀ (I − P) v
        v64 = v.to(_F64)
        v64 = v64 - u64 @ (u64.mT @ v64)
        kv = products.kernel(v64.to(products.dtype)).to(_F64)
        return kv - u64 @ (u64.mT @ kv)

    return largest_eigenvalue(
        tail_kernel, products.num_observations, dtype=products.dtype, device=products.device,
        generator=torch.Generator().manual_seed(seed + 2),
    ) / c


# --------------------------------------------------------------------------- 5. lml
def log_marginal_likelihood(
    system: WeightSystem,
    sk: Sketch,
    resid: Tensor,
    z: Tensor,
    *,
    noise_variance: float,
    prior_variance: float,
    seed: int,
    matmul: Matmul | None = None,
    products: TrainingProducts | None = None,
) -> LmlClosure:
    """log p(y) as a closure: the quadratic form from the CG solution now, the
    log-determinant by stochastic Lanczos quadrature on the preconditioned system when
    called (on ``matmul``, default the system's own product).

    With ``products`` of data sharded across a process group (weight space; collective on
    every rank, as is calling the closure): N and the sums below are all-reduced, the
    quadratic form is the minimum rᵀ(s²JJᵀ + σ²I)⁻¹r = (‖r − J w̄‖² + c‖w̄‖²)/σ², whose
    error is second order in that of w̄ (the form (‖r‖² − rᵀJw̄)/σ² cancels: 2.7e-8
    relative on the tests' 23-point problem at tol 1e-13), and the log-determinant is
    deflated: log|JᵀJ + cI| = log|P̃| + log|P̃^{-1/2}(JᵀJ + cI)P̃^{-1/2}| with
    P̃ = R Θ Rᵀ + cI from the Ritz pairs of JᵀJ on the sketch's span
    (:func:`weight_sketch`), so that SLQ only estimates what the sketch missed (nothing
    but rounding when it spans; the normalized preconditioner leaves two clusters, c and
    λ̂_r + c, whose trace estimate had a standard error of 1.8e-7 on that problem).
    """
    sigma2, s2 = noise_variance, prior_variance
    c = sigma2 / s2
    sharded = products is not None and products.sharded
    n_obs = products.num_observations if products is not None else resid.numel()
    r64 = resid.reshape(-1).to(_F64)
    rhs64, z64 = system.rhs.reshape(-1).to(_F64), z.reshape(-1).to(_F64)
    if system.space == "function":
        if sharded:
            raise ValueError("sharded data is solved in weight space (ntkcore.distributed)")
        quad = float(r64 @ z64) / s2  # rᵀ K̂⁻¹ r with K̂ = s²(JJᵀ + cI), z = (JJᵀ + cI)⁻¹ r
    elif sharded:
        assert products is not None
        misfit = r64 - products.jvp(z.reshape(-1, 1).to(products.dtype)).reshape(-1).to(_F64)
        quad = (
            products.reduction.sum_float(float(misfit @ misfit), "‖r − J w̄‖²")
            + c * float(z64 @ z64)
        ) / sigma2
    else:
        quad = (float(r64 @ r64) - float(rhs64 @ z64)) / sigma2
    precond, dim = sk.preconditioner, system.dim
    device = system.rhs.device
    space, p = system.space, system.dim
    matmul = system.matmul if matmul is None else matmul
    dtype = sk.nystrom.dtype

    if sharded:  # deflation by P̃ = R Θ Rᵀ + cI, Ritz pairs on the sketch (see above)
        assert sk.directions is not None and sk.ritz_values is not None
        lam = sk.ritz_values
        vecs = sk.directions * lam.sqrt()  # R = T Θ^{1/2}, orthonormal columns
        scale = (lam + c).rsqrt() - c**-0.5

        def inv_sqrt(v: Tensor) -> Tensor:  # P̃^{-1/2} v
            v64 = v.to(_F64)
            return (v64 * c**-0.5 + vecs @ (scale.unsqueeze(-1) * (vecs.mT @ v64))).to(v.dtype)

        precond_logdet = float(torch.log(lam + c).sum()) + (dim - lam.numel()) * math.log(c)
    else:
        inv_sqrt, precond_logdet = precond.inv_sqrt, precond.logdet()

    def lml() -> tuple[float, float]:
        # log|s² JJᵀ + σ² I_N| = N log s² + log|G + cI_d| (+ (N − p) log c in weight space)
        est, se = logdet_slq(
            lambda v: inv_sqrt(matmul(inv_sqrt(v))),
            dim,
            dtype=dtype,
            device=device,
            generator=torch.Generator().manual_seed(seed + 1),
        )
        logdet = n_obs * math.log(s2) + precond_logdet + est
        if space == "parameter":
            logdet += (n_obs - p) * math.log(c)
        return -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * math.log(2 * math.pi), 0.5 * se

    return lml


# --------------------------------------------------------------------------- 6. report
def diagnostics(
    products: TrainingProducts,
    space: str,
    sk: Sketch,
    info: SolveInfo,
    bound: float,
    c: float,
    options: FitOptions,
    precision: Precision,
) -> dict[str, Any]:
    """What the matrix-free fit did: the solve and its precision, the sketch's rounds and
    why it stopped, the variance basis and its error estimate λ̂_r/c and bound δ."""
    nystrom, rank = sk.nystrom, options.rank
    n_obs, p = products.num_observations, products.p
    exact_variance = sk.rank >= min(n_obs, p)
    # λ̂_r / c estimates the largest relative overestimate of a variance: a direction
    # left out of the basis with eigenvalue λ contributes λ/(λ + c) of its prior variance
    # to the error and c/(λ + c) to the variance (exact eigenvectors; see adapt). A λ̂_r
    # of 0 only says that the tail lies below the sketch's resolution ν.
    resolved_tail = nystrom.smallest if nystrom.smallest > 0 else nystrom.resolution
    variance_error = 0.0 if exact_variance else resolved_tail / c
    rounds = [
        {"rank": rd.rank, "smallest_eigenvalue_over_shift": rd.smallest_eigenvalue / c,
         "seconds": rd.seconds}
        for rd in nystrom.rounds
    ]
    solver_ranks = [rd["rank"] for rd in rounds if rd["smallest_eigenvalue_over_shift"] <= 1.0]
    tol_v = min(1.0, options.variance_tol)
    if rank == "auto":
        stop = {
            "threshold": (
                f"λ̂_r/c = {nystrom.smallest / c:.2g} <= {tol_v:g} (min(1, variance_tol))"
            ),
            "dimension": f"rank reached n·o = {n_obs} (exact)",
            "completed": (
                f"λ̂_r/c <= {tol_v:g} at rank {rounds[-2]['rank'] if len(rounds) > 1 else 0}, "
                f"completed to min(n·o, p) = {min(n_obs, p)} (exact variances for at most "
                "twice the sketch)"
            ),
            "max_rank": (
                f"rank reached {sk.cap} = rank bound (exact)"
                if nystrom.rank >= sk.cap
                else f"max_rank = {sk.max_rank}"
                + (" (the covariance factor's memory cap)" if sk.memory_capped else "")
                + f" reached with λ̂_r/c = {nystrom.smallest / c:.2g} > {tol_v:g}"
            ),
        }[nystrom.stop_reason]
    else:
        capped = f" (capped at {sk.cap})" if rank > sk.cap else ""
        stop = f"fixed rank {rank}{capped}"
    variance_note = None
    if not exact_variance:
        variance_note = (
            f"fast variances (predict(x, variance='fast')) are upper bounds from a "
            f"rank-{sk.rank} basis (< min(n·o, p) = {min(n_obs, p)}): each is at most "
            f"{1 + bound:.3g}× the exact one (δ = ‖(I − P)JJᵀ(I − P)‖/c ≈ {bound:.2g}); "
            f"typical overestimates are nearer λ̂_r/c = {variance_error:.2g}"
        )
        if options.variance == "accurate" and 2 * bound > options.variance_rtol:
            variance_note += (
                f"; accurate variances (the default) are corrected by block CG to within "
                f"{options.variance_rtol:g} at predict time"
            )
    at_x = products.at_x
    return {
        "variance_note": variance_note,
        "space": space,
        "iterations": info.iterations,
        "refinements": info.refinements,
        "residual": info.max_residual,
        "residual_dtype": str(precision.residual).replace("torch.", ""),
        "float64_residual": info.max_residual if precision.residual == _F64 else None,
        "working_dtype": str(precision.working).replace("torch.", ""),
        "refinement": options.refinement,
        "refinement_reason": precision.reason,
        "condition_estimate": precision.condition_estimate,
        "residuals": info.residuals.tolist(),
        "converged": info.converged,
        "tolerance": options.tol,
        "preconditioner": f"Nyström rank {nystrom.rank}",
        "fisher": options.fisher if space == "parameter" else None,
        "preconditioner_rank": nystrom.rank,
        "preconditioner_seconds": sk.seconds,
        "rank_mode": "auto" if rank == "auto" else "fixed",
        "rank_rounds": rounds,
        "rank_memory_cap": sk.memory_cap,
        "rank_stop": stop,
        "solver_rank": solver_ranks[0] if solver_ranks else None,
        "variance_rank": sk.rank,
        "variance_error_estimate": variance_error,
        "variance_error_bound": bound,
        "exact_variance": exact_variance,
        "product_cache": at_x.cache,
        "product_cache_reason": at_x.cache_reason,
        "product_cache_seconds": at_x.setup_seconds,
    }


# --------------------------------------------------------------------------- the fits
def _solve_with_precision(
    problem: FitProblem,
    products: TrainingProducts,
    system: WeightSystem,
    resid: Tensor,
    sk: Sketch,
) -> tuple[Tensor, SolveInfo, Precision, WeightSystem, Tensor]:
    """Solve in the network's precision, or by mixed-precision refinement when that
    cannot reach ``tol`` (predicted from the sketch, or seen after a stalled solve).

    Returns the solution, its info, the precision used, and the system and residual r
    that the solution belongs to (float64 ones after refinement).
    """
    options, c = problem.options, problem.shift
    top = float(sk.nystrom.eigenvalues[0]) if sk.rank else 0.0
    prec = precision.plan(products, top, c, options.tol, options.refinement, options.cache)
    if not prec.refine:
        second_chance = (
            options.refinement == "auto"
            and products.dtype != _F64
            and precision.float64_unavailable(products.device) is None
        )
        if not second_chance:
            z, info = solve(system, sk, options)
            return z, info, prec, system, resid
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            z, info = solve(system, sk, options)
        if info.converged:
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return z, info, prec, system, resid
        prec = precision.plan(
            products, top, c, options.tol, options.refinement, options.cache,
            stalled_at=info.max_residual,
        )
        stalled_iterations = info.iterations
    else:
        stalled_iterations = 0
    assert prec.products64 is not None
    p64 = prec.products64
    resid64 = problem.residual(lambda: p64.at_x.output).to(_F64)
    exact = WeightSystem.build(p64, system.space, resid64, c, "exact")
    working_tol = min(0.1, max(options.tol, prec.floor_estimate))
    # A decade below tol: the posterior mean's relative error was measured at up to ~5×
    # the relative residual (tests/test_mixed_precision.py, κ ≈ 1e7), and a round costs
    # ~10 working-precision iterations and one float64 product.
    z, info = solve(
        system, sk, options, exact=exact, working_tol=working_tol,
        refine_to=options.tol * REFINE_MARGIN,
    )
    if stalled_iterations:
        info = dataclasses.replace(info, iterations=info.iterations + stalled_iterations)
    return z, info, prec, exact, resid64


def _fit_matrix_free(problem: FitProblem, space: str) -> FitResult:
    options = problem.options
    c = problem.shift
    if options.stream is not None:  # x stays off the device (ntkcore.distributed.stream)
        at_x: Any = StreamedJacobian(problem.linearization, problem.x, options.stream)
    else:
        at_x = problem.linearization.at(problem.x, cache=options.cache)
    reduction = problem.reduction
    products = TrainingProducts(at_x, reduction)
    fisher = options.fisher
    requested_space = space
    if products.sharded:
        # function-space vectors would be sharded: solve Eq. 3 through Eq. 2 (module doc)
        space, fisher = "parameter", fisher if space == "parameter" else "exact"
    # The network mean comes from the cached forward pass: no extra pass over x.
    resid = problem.residual(lambda: at_x.output)
    system = WeightSystem.build(products, space, resid, c, fisher)
    sk = sketch(products, space, c, options)
    nystrom_basis, nystrom_eigenvalues = sk.basis, sk.nystrom.eigenvalues
    z, info, prec, solved, resid = _solve_with_precision(problem, products, system, resid, sk)
    exact_variance = sk.rank >= min(products.num_observations, products.p)
    bound = 0.0 if exact_variance else variance_bound(products, sk, c, options.seed)
    directions = sk.directions
    weights, cov_factor = factor(
        products, space, sk, z, c, float64_products=prec.products64,
        float64_rows=exact_variance,
    )
    lml = log_marginal_likelihood(
        solved, sk, resid, z, noise_variance=problem.noise_variance,
        prior_variance=problem.prior_variance, seed=options.seed, matmul=system.matmul,
        products=prec.products64 or products,
    )
    report = diagnostics(products, space, sk, info, bound, c, options, prec)
    if products.sharded:
        report["distributed_note"] = (
            f"data sharded over {reduction.world_size} rank(s)"
            + (f", streamed in shards of {options.stream} points" if options.stream else "")
            + ": "
            + ("Eq. 3 solved through Eq. 2 in weight space (p-vectors replicated, one "
               "all-reduce per product); " if requested_space == "function" else "")
            + "Nyström sketch of JᵀJ"
        )
    corrector = None
    if not exact_variance:
        corrector = VarianceCorrector(
            products, noise_variance=problem.noise_variance,
            prior_variance=problem.prior_variance, factor=cov_factor,
            factor_float64=products.dtype == _F64,
            basis=nystrom_basis, eigenvalues=nystrom_eigenvalues, bound=bound,
            condition_estimate=prec.condition_estimate, rtol=options.variance_rtol,
            max_iter=options.max_iter, refined=prec.refine, cache=options.cache,
            directions=directions,
        )
        report["variance_products_dtype"] = str(corrector.product_dtype).replace("torch.", "")
    return FitResult(weights, cov_factor, "subtract", lml, report, corrector)


def fit_function_space(problem: FitProblem) -> FitResult:
    """``function``: Nyström-preconditioned CG on (J Jᵀ + cI) z = r (size N, Eq. 3),
    w̄ = Jᵀz, Galerkin covariance factor on the sketch basis (an upper bound on the
    variances, exact when the rank reaches min(N, p))."""
    return _fit_matrix_free(problem, "function")


def fit_parameter_space(problem: FitProblem) -> FitResult:
    """``parameter``: Nyström-preconditioned CG on (JᵀJ + cI) w̄ = Jᵀr (size p, Eq. 2),
    with exact or finite-difference Fisher products (Eq. 5, refined on the exact residual);
    the same function-space sketch and covariance factor as ``function``."""
    return _fit_matrix_free(problem, "parameter")
