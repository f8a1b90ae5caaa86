"""Closed-form adaptation: the finite-NTK Gaussian-process posterior (Eq. 1–3).

Model (Section 3 of the paper, with a prior scale s²)::

    g(x) = m(x) + J(x) w,   w ~ N(0, s² I_p),   y = g(x) + ε,   ε ~ N(0, σ² I)

with m(x) = f(x; θ) (``mean="network"``, the linearized network) or m(x) = 0
(``mean="zero"``, the finite NTK). Write N = n·o, r = y − m(X), c = σ²/s².
The posterior over w has mean and covariance

    w̄ = (JᵀJ + c I_p)⁻¹ Jᵀ r = Jᵀ (J Jᵀ + c I_N)⁻¹ r          (Eq. 2 ↔ Eq. 3)
    Σ = s² (I − Jᵀ (J Jᵀ + c I_N)⁻¹ J) = σ² (JᵀJ + c I_p)⁻¹,

so the latent predictive at x* is mean m(x*) + J* w̄ and variance diag(J* Σ J*ᵀ).
Every strategy computes w̄ and a factor of Σ; prediction is shared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore.fisher import fisher_vp
from ntkcore.jacobian_at import CACHES, JacobianAt
from ntkcore.linearization import Linearization, as_linearization, as_real_tensor
from ntkcore.memory import available_memory as _free_memory
from ntkcore.solvers.cg import conjugate_gradients
from ntkcore.solvers.nystrom import (
    NystromApproximation,
    NystromPreconditioner,
    largest_eigenvalue,
)
from ntkcore.solvers.slq import logdet_slq
from ntkcore.spectral import SpectralGram

__all__ = [
    "Posterior",
    "Prediction",
    "adapt",
    "as_linearization",
    "choose_strategy",
    "dense_spectrum",
]

STRATEGIES = ("auto", "dense", "function", "parameter")
MEANS = ("network", "zero")
FISHER_PRODUCTS = ("exact", "fd")
# Transient bytes of one group of float32 reverse products or one column block of the
# triangular solve while the (1 + r) × p float64 covariance block is filled.
_WIDE_GROUP_BYTES = 2**30


def _factor_rank_cap(p: int, device: torch.device) -> int:
    """The largest rank r whose (1 + r) × p float64 covariance block fits in half the free
    memory of ``device`` (the other half for products and the test Jacobians)."""
    return int(_free_memory(device) // 2 // (8 * p)) - 1


def _stacked(weights: Tensor, factor: Tensor) -> Tensor:
    """[w̄; F] as one (1 + r) × p tensor: a view when F directly follows w̄ in memory (the
    matrix-free strategies build them so), else a copy."""
    p = weights.shape[0]
    if (
        factor.dim() == 2
        and factor.shape[1] == p
        and factor.dtype == weights.dtype
        and weights.is_contiguous()
        and factor.is_contiguous()
        and factor.untyped_storage().data_ptr() == weights.untyped_storage().data_ptr()
        and factor.storage_offset() == weights.storage_offset() + p
    ):
        return weights.as_strided((1 + factor.shape[0], p), (p, 1))
    return torch.cat([weights.unsqueeze(0), factor], dim=0)
_F64 = torch.float64
_INITIAL_RANK = 32  # first block of the adaptive Nyström sketch


@dataclass(frozen=True)
class Prediction:
    """Latent predictive distribution p(f* | y) at test inputs (noise not added).

    Attributes
    ----------
    mean : Tensor
        Shape (m, o).
    variance : Tensor or None
        Shape (m, o), non-negative; None when variances were not requested.
    """

    mean: Tensor
    variance: Tensor | None

    @property
    def stddev(self) -> Tensor:
        if self.variance is None:
            raise ValueError("this prediction was made with variance=False")
        return self.variance.sqrt()

    def confidence_region(self, num_std: float = 2.0) -> tuple[Tensor, Tensor]:
        """(lower, upper) = mean ∓ num_std·stddev."""
        sd = self.stddev
        return self.mean - num_std * sd, self.mean + num_std * sd


def choose_strategy(
    num_observations: int,
    num_params: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    available_memory: int | None = None,
    max_dense: int = 4000,
) -> tuple[str, str]:
    """Pick an inference strategy from a cost model; return ``(strategy, reason)``.

    * ``dense`` when the explicit Jacobian (N × p) and the smaller Gram matrix
      (min(N, p)²) fit in a quarter of the available memory and min(N, p) <= ``max_dense``
      (an O(min(N,p)³) eigendecomposition of at most a few seconds);
    * otherwise matrix-free CG in the smaller space: ``function`` when N = n·o <= p
      (the usual over-parameterized case, Eq. 3), ``parameter`` when p < N (Eq. 2).
    """
    n_obs, p = int(num_observations), int(num_params)
    device = torch.device(device)
    mem = _free_memory(device) if available_memory is None else int(available_memory)
    itemsize = torch.empty((), dtype=dtype).element_size()
    small = min(n_obs, p)
    # explicit Jacobian in model dtype and as float64, Gram matrix and eigenvectors
    dense_bytes = n_obs * p * (itemsize + 2 * 8) + 2 * small * small * 8
    if small <= max_dense and dense_bytes <= mem // 4:
        return "dense", (
            f"explicit Jacobian n·o×p = {n_obs}×{p} ({dense_bytes / 2**20:.0f} MiB) fits in "
            f"memory and min(n·o, p) = {small} <= {max_dense}: exact eigendecomposition"
        )
    why = (
        f"explicit Jacobian ({dense_bytes / 2**20:.0f} MiB) exceeds a quarter of available "
        f"memory ({mem / 2**20:.0f} MiB)"
        if dense_bytes > mem // 4
        else f"min(n·o, p) = {small} > {max_dense}"
    )
    if n_obs <= p:
        return "function", f"{why}; n·o = {n_obs} <= p = {p}: CG in function space (Eq. 3)"
    return "parameter", f"{why}; p = {p} < n·o = {n_obs}: CG in weight space (Eq. 2)"


@dataclass
class Posterior:
    r"""The adapted finite-NTK GP. Create it with :func:`adapt`.

    Attributes
    ----------
    linearization : Linearization
    mean_type : str
        ``"network"`` or ``"zero"``.
    noise_variance, prior_variance : float
        σ² and s².
    weights : Tensor
        w̄, the posterior mean of the linear weights, shape (p,) (float64).
    diagnostics : dict
        ``strategy``, ``reason``, ``iterations``, ``residual`` (max true relative residual),
        ``residuals``, ``converged``, ``tolerance``, ``seconds``, ``variance_rank``,
        ``exact_variance`` and more; matrix-free strategies add the Nyström sketch's
        ``rank_mode``, ``rank_rounds``, ``rank_stop``, ``solver_rank`` and
        ``variance_error_estimate`` (see :func:`adapt`).
    """

    linearization: Linearization
    mean_type: str
    noise_variance: float
    prior_variance: float
    weights: Tensor
    diagnostics: dict[str, Any]
    # Posterior covariance factor: with form "subtract", var = s²(||J*||² − ||F J*ᵀ||²);
    # with form "direct", var = s² ||F J*ᵀ||².
    _factor: Tensor = field(repr=False)
    _factor_form: str = field(repr=False)
    _lml: Callable[[], tuple[float, float]] = field(repr=False)
    _lml_cache: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def strategy(self) -> str:
        return str(self.diagnostics["strategy"])

    def covariance_factor(self) -> tuple[Tensor, str]:
        r"""The factor F (r × p) of the weight posterior covariance Σ and its form.

        ``"subtract"``: Σ = s² (I − FᵀF) (function-space and matrix-free strategies);
        ``"direct"``: Σ = s² FᵀF (dense weight-space strategy). The latent predictive
        covariance at x* follows as J* Σ J*ᵀ.
        """
        return self._factor, self._factor_form

    def predict(self, x: Tensor, *, variance: bool = True) -> Prediction:
        """Latent predictive mean and variance at ``x`` (Eq. 3), each of shape (m, o).

        Variances come from per-sample Jacobians J* of the test points (batched with
        ``vmap``, in blocks bounded by the linearization's ``chunk_size``) and the cached
        covariance factor F (r × p): no linear solve per test point. Per block, one
        float64 GEMM [w̄; F] J*ᵀ gives the means and the projections, and
        var = s² (‖J*‖² − ‖F J*ᵀ‖²) (or s² ‖F J*ᵀ‖² for the direct form).

        The GEMM stays in float64 even for float32 models. The subtraction cancels
        where the posterior variance is far below the prior variance, and a float32 GEMM
        (float32 accumulation) made the variances 6e-4 to 2e-3 relatively wrong on the
        scaling benchmark's MLP (prior/posterior variance ratios 1e2–2e3), against 1e-6
        in float64 (``benchmarks/RESULTS.md``). Blocks of float32 Jacobians are copied
        into one reused float64 buffer: a fresh float64 tensor per block cost 12× the copy
        in page faults on the CPU (370 ms vs 30 ms for 203 × 330k).
        """
        lin = self.linearization
        x = lin.prepare_inputs(x)
        prior_mean = lin(x) if self.mean_type == "network" else None
        w = self.weights
        if not variance:
            mean = lin.jvp(x, w.to(lin.dtype)).to(_F64)
        else:
            means, variances = [], []
            rows = _stacked(w.to(_F64), self._factor)  # shape: (1 + r, p)
            buffer: Tensor | None = None
            for _, block in lin.jacobian_blocks(x):
                c, o, p = block.shape
                b = block.reshape(c * o, p)
                if b.dtype != _F64:
                    if buffer is None or buffer.shape[0] < b.shape[0]:
                        buffer = torch.empty(b.shape[0], p, dtype=_F64, device=b.device)
                    b = buffer[: b.shape[0]].copy_(b)
                g = rows @ b.mT  # shape: (1 + r, c·o)
                means.append(g[0].reshape(c, o))
                proj = torch.linalg.vector_norm(g[1:], dim=0).square()
                if self._factor_form == "subtract":
                    v = torch.linalg.vector_norm(b, dim=-1).square() - proj
                else:
                    v = proj
                variances.append((self.prior_variance * v).clamp_min(0.0).reshape(c, o))
            mean = torch.cat(means, 0)
        out_mean = mean if prior_mean is None else mean + prior_mean.to(_F64)
        out_var = torch.cat(variances, 0) if variance else None
        dtype = lin.dtype
        return Prediction(
            mean=out_mean.to(dtype), variance=None if out_var is None else out_var.to(dtype)
        )

    def log_marginal_likelihood(self) -> float:
        """log p(y | X, σ², s²) of the finite-NTK GP.

        Exact for ``dense``; for matrix-free strategies the quadratic form comes from the
        CG solve and the log-determinant from stochastic Lanczos quadrature on the
        Nyström-preconditioned system (its standard error is stored in
        ``diagnostics["lml_standard_error"]``).
        """
        if self._lml_cache is None:
            self._lml_cache = self._lml()
            self.diagnostics["lml_standard_error"] = self._lml_cache[1]
        return self._lml_cache[0]


# --------------------------------------------------------------------------- helpers
def _validate_scalar(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _validate_targets(lin: Linearization, x: Tensor, y: Tensor) -> Tensor:
    y = as_real_tensor(y, "y")
    n = x.shape[0]
    o = lin.output_dim(x)
    if y.dim() == 1:
        if o != 1:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the model has o={o} outputs; pass y of "
                f"shape ({n}, {o})"
            )
        y = y.unsqueeze(-1)
    if y.dim() != 2 or y.shape != (n, o):
        raise ValueError(f"y must have shape ({n},) or ({n}, {o}), got {tuple(y.shape)}")
    y = y.to(device=lin.device, dtype=lin.dtype)
    if not torch.isfinite(y).all():
        raise ValueError("y contains non-finite values (nan or inf)")
    return y


def _lml_gaussian(quad: float, logdet: float, n_obs: int) -> float:
    return -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * math.log(2 * math.pi)


# --------------------------------------------------------------------------- strategies
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


def _fit_dense(
    lin: Linearization, x: Tensor, resid: Tensor, s2: float, sigma2: float
) -> tuple[Tensor, Tensor, str, SpectralGram, dict[str, Any]]:
    """Exact posterior from the explicit Jacobian and an eigendecomposition."""
    c = sigma2 / s2
    jac = lin.jacobian(x).reshape(-1, lin.num_params).to(_F64)  # shape: (N, p)
    r = resid.reshape(-1).to(_F64)
    spectral, vecs = dense_spectrum(jac, r)
    lam, proj = spectral.eigenvalues, spectral.projections
    if spectral.space == "function":
        # Eq. 3 with K = J Jᵀ = Q Λ Qᵀ: w̄ = Jᵀ Q (Λ + c)⁻¹ Qᵀ r and
        # Σ = s² (I − Jᵀ Q (Λ + c)⁻¹ Qᵀ J) = s² (I − FᵀF), F = (Λ + c)^{-1/2} Qᵀ J.
        weights = jac.mT @ (vecs @ (proj / (lam + c)))
        factor = (vecs.mT @ jac) / (lam + c).sqrt().unsqueeze(-1)
        return weights, factor, "subtract", spectral, {"space": "function"}
    # Eq. 2 with JᵀJ = V Λ Vᵀ: w̄ = V (Λ + c)⁻¹ Vᵀ Jᵀ r and
    # Σ = σ² V (Λ + c)⁻¹ Vᵀ = s² FᵀF, F = √c (Λ + c)^{-1/2} Vᵀ.
    weights = vecs @ (proj / (lam + c))
    factor = (math.sqrt(c) / (lam + c).sqrt()).unsqueeze(-1) * vecs.mT
    return weights, factor, "direct", spectral, {"space": "parameter"}


def _fit_iterative(
    at_x: JacobianAt,
    resid: Tensor,
    s2: float,
    sigma2: float,
    *,
    space: str,
    tol: float,
    max_iter: int,
    rank: int | str,
    seed: int,
    fisher: str = "exact",
    max_rank: int = 512,
    variance_tol: float = 0.1,
) -> tuple[Tensor, Tensor, Callable[[], tuple[float, float]], dict[str, Any]]:
    """Matrix-free posterior: Nyström-preconditioned CG in function or weight space.

    Every product is at the training inputs through ``at_x`` (``lin.at(x)``), which keeps
    the forward pass (and, on the CPU, the traced tangent program) across the sketch, CG
    and the variance factor.

    ``rank="auto"`` grows the sketch (blocks of 32, doubling, at most ``max_rank``) until
    its smallest eigenvalue λ̂_r <= c · min(1, ``variance_tol``); see :func:`adapt`.
    """
    c = sigma2 / s2
    n, o = resid.shape
    lin = at_x.linearization
    n_obs, p = n * o, lin.num_params
    dtype = lin.dtype

    def jvp_cols(v: Tensor) -> Tensor:  # (p, k) -> (N, k)
        return at_x.jvp(v.mT).reshape(v.shape[-1], -1).mT

    def vjp_cols(u: Tensor) -> Tensor:  # (N, k) -> (p, k)
        return at_x.vjp(u.mT.reshape(u.shape[-1], n, o)).mT

    def kernel(v: Tensor) -> Tensor:  # J Jᵀ v, (N, k) -> (N, k)
        return jvp_cols(vjp_cols(v))

    if space == "function":
        dim = n_obs
        gram = kernel
        rhs = resid.reshape(-1, 1)
    elif fisher == "exact":
        dim = p

        def gram(v: Tensor) -> Tensor:  # Jᵀ J v
            return vjp_cols(jvp_cols(v))
    else:
        dim = p

        def gram(v: Tensor) -> Tensor:  # Jᵀ J v = n F v, F by finite differences (Eq. 5)
            return n * fisher_vp(at_x, None, v.mT, likelihood="gaussian", method="fd").mT

    if space == "parameter":
        rhs = vjp_cols(resid.reshape(-1, 1))

    def system(v: Tensor) -> Tensor:
        return gram(v) + c * v

    def exact_system(v: Tensor) -> Tensor:  # for the residual check of fd products
        return vjp_cols(jvp_cols(v)) + c * v

    # The sketch is always of the kernel J Jᵀ in function space (N × N), also for the
    # weight-space system: JᵀJ has the same non-zero spectrum but lives in p dimensions,
    # where a float32 sketch resolves it poorly (MLP, p = 50,901, N = 1,000: λ̂₃₂/c = 2.1
    # in weight space against 7.4 in function space and λ₃₂/c = 8.0 from eigvalsh; in
    # float64 both agree), which stopped rank="auto" too early.
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    # In weight space at most rank(J) <= min(N, p) columns carry information; in function
    # space with N > p the sketch still needs all N so that λ̂_r = 0 and the
    # preconditioner sends the null space of J Jᵀ to the shift (condition number 1).
    sketch_cap = n_obs if space == "function" else min(n_obs, p)
    # The covariance factor [w̄; F] is (1 + r) × p float64 and must fit in half the free
    # memory (p = 10⁸ on one H200: r <= ~80; a rank-256 factor would need 190 GiB).
    memory_cap = _factor_rank_cap(p, lin.device)
    if rank != "auto" and min(rank, sketch_cap) > memory_cap:
        raise ValueError(
            f"rank={rank} needs a ({min(rank, sketch_cap) + 1} × {p}) float64 covariance "
            f"factor ({(min(rank, sketch_cap) + 1) * p * 8 / 2**30:.0f} GiB), more than half "
            f"the free memory allows (rank <= {memory_cap}); lower rank or use rank='auto'"
        )
    memory_capped = rank == "auto" and min(max_rank, sketch_cap) > memory_cap
    if memory_capped:
        max_rank = max(1, memory_cap)
    if rank == "auto":
        nystrom = NystromApproximation.adaptive(
            kernel, n_obs, threshold=c * min(1.0, variance_tol), initial_rank=_INITIAL_RANK,
            max_rank=min(max_rank, sketch_cap), dtype=dtype, device=lin.device, generator=gen,
        )
    else:
        assert isinstance(rank, int)
        nystrom = NystromApproximation(
            kernel, n_obs, min(rank, sketch_cap), dtype=dtype, device=lin.device, generator=gen
        )
    basis = nystrom.eigenvectors  # U, shape (N, r), orthonormal
    if space == "function":
        precond = NystromPreconditioner(nystrom, c)
    else:
        # Weight space: JᵀJ ⪰ Jᵀ U Uᵀ J = W Wᵀ (W = JᵀU, p × r), whose eigenpairs (the thin
        # SVD of W) precondition JᵀJ + cI as a Nyström approximation would; W is also the
        # variance factor's UᵀJ below.
        w_cols = vjp_cols(basis.to(dtype)).to(_F64)  # shape: (p, r)
        v_w, s_w, _ = torch.linalg.svd(w_cols, full_matrices=False)
        precond = NystromPreconditioner(
            NystromApproximation.from_eigenpairs(v_w, s_w.square(), dtype=dtype), c
        )
    t_sketch = time.perf_counter() - t0
    z, info = conjugate_gradients(
        system,
        rhs,
        preconditioner=precond.solve,
        tol=tol,
        max_iter=max_iter,
        what=f"{space}-space system (JJᵀ + cI)" if space == "function" else "weight-space system",
        residual_matmul=exact_system if space == "parameter" and fisher == "fd" else None,
    )
    # Galerkin factor: Jᵀ U (UᵀJJᵀU + cI)⁻¹ UᵀJ ⪯ Jᵀ (JJᵀ + cI)⁻¹ J, so the variance
    # below is an upper bound that is exact when U spans range(J).
    # [w̄; UᵀJ] in one float64 block, (1 + r) × p: predict multiplies it with the test
    # Jacobians in one GEMM, and the factor F = L⁻¹ UᵀJ overwrites UᵀJ column block by
    # column block (no second r × p copy: what lets p reach 10⁸ on one GPU).
    rows = torch.empty(1 + basis.shape[1], p, dtype=_F64, device=lin.device)
    if space == "function":
        # w̄ = Jᵀz and UᵀJ by batched reverse passes, a group of columns at a time
        cols = torch.cat([z, basis.to(dtype)], dim=1)  # shape: (N, 1 + r)
        group = max(1, min(cols.shape[1], _WIDE_GROUP_BYTES // (p * cols.element_size())))
        for s in range(0, cols.shape[1], group):
            rows[s : s + group].copy_(vjp_cols(cols[:, s : s + group]).mT)
    else:
        rows[0].copy_(z.reshape(-1))
        rows[1:].copy_(w_cols.mT)  # shape: (r, p) = UᵀJ
        del w_cols
    weights, w_rows = rows[0], rows[1:]
    core = w_rows @ w_rows.mT + c * torch.eye(w_rows.shape[0], dtype=_F64, device=lin.device)
    chol = torch.linalg.cholesky(core)
    block = max(1, _WIDE_GROUP_BYTES // (8 * w_rows.shape[0]))
    for s in range(0, p, block):
        w_rows[:, s : s + block] = torch.linalg.solve_triangular(
            chol, w_rows[:, s : s + block], upper=False
        )
    factor = w_rows  # shape: (r, p), F = L⁻¹ UᵀJ
    exact_variance = basis.shape[1] >= min(n_obs, p)
    # The Galerkin covariance is Σ̂ = s²(I + JᵀPJ/c)⁻¹ with P = UUᵀ, the exact one
    # Σ = s²(I + JᵀJ/c)⁻¹; since I + JᵀJ/c ⪯ (1 + δ)(I + JᵀPJ/c) with
    # δ = ‖(I − P) J Jᵀ (I − P)‖₂ / c, Σ̂ ⪯ (1 + δ) Σ: no variance is overestimated by more
    # than the factor 1 + δ. δ by four steps of block power iteration (16 products).
    variance_bound = 0.0
    if not exact_variance:
        u64 = basis.to(_F64)

        def tail_kernel(v: Tensor) -> Tensor:  # (I − P) J Jᵀ (I − P) v
            v64 = v.to(_F64)
            v64 = v64 - u64 @ (u64.mT @ v64)
            kv = kernel(v64.to(dtype)).to(_F64)
            return kv - u64 @ (u64.mT @ kv)

        variance_bound = largest_eigenvalue(
            tail_kernel, n_obs, dtype=dtype, device=lin.device,
            generator=torch.Generator().manual_seed(seed + 2),
        ) / c

    r64 = resid.reshape(-1).to(_F64)
    rhs64, z64 = rhs.reshape(-1).to(_F64), z.reshape(-1).to(_F64)
    if space == "function":
        quad = float(r64 @ z64) / s2  # rᵀ K̂⁻¹ r with K̂ = s²(JJᵀ + cI), z = (JJᵀ + cI)⁻¹ r
    else:
        quad = (float(r64 @ r64) - float(rhs64 @ z64)) / sigma2

    def lml() -> tuple[float, float]:
        # log|s² JJᵀ + σ² I_N| = N log s² + log|G + cI_d| (+ (N − p) log c in weight space)
        est, se = logdet_slq(
            lambda v: precond.inv_sqrt(system(precond.inv_sqrt(v))),
            dim,
            dtype=dtype,
            device=lin.device,
            generator=torch.Generator().manual_seed(seed + 1),
        )
        logdet = n_obs * math.log(s2) + precond.logdet() + est
        if space == "parameter":
            logdet += (n_obs - p) * math.log(c)
        return _lml_gaussian(quad, logdet, n_obs), 0.5 * se

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
    if rank == "auto":
        stop = {
            "threshold": (
                f"λ̂_r/c = {nystrom.smallest / c:.2g} <= {min(1.0, variance_tol):g} "
                f"(min(1, variance_tol))"
            ),
            "dimension": f"rank reached n·o = {n_obs} (exact)",
            "max_rank": (
                f"rank reached {sketch_cap} = rank bound (exact)"
                if nystrom.rank >= sketch_cap
                else f"max_rank = {max_rank}"
                + (" (the covariance factor's memory cap)" if memory_capped else "")
                + f" reached with λ̂_r/c = {nystrom.smallest / c:.2g} > "
                f"{min(1.0, variance_tol):g}"
            ),
        }[nystrom.stop_reason]
    else:
        capped = f" (capped at {sketch_cap})" if rank > sketch_cap else ""
        stop = f"fixed rank {rank}{capped}"
    variance_note = None
    if not exact_variance:
        variance_note = (
            f"variances are upper bounds from a rank-{basis.shape[1]} basis (< min(n·o, p) = "
            f"{min(n_obs, p)}): each is at most {1 + variance_bound:.3g}× the exact one "
            f"(δ = ‖(I − P)JJᵀ(I − P)‖/c ≈ {variance_bound:.2g}); typical overestimates are "
            f"nearer λ̂_r/c = {variance_error:.2g}"
        )
        if variance_bound > 1.0:
            variance_note += "; raise rank (or max_rank) for tighter variances"
    extra = {
        "variance_note": variance_note,
        "space": space,
        "iterations": info.iterations,
        "refinements": info.refinements,
        "residual": info.max_residual,
        "residuals": info.residuals.tolist(),
        "converged": info.converged,
        "tolerance": tol,
        "preconditioner": f"Nyström rank {nystrom.rank}",
        "fisher": fisher if space == "parameter" else None,
        "preconditioner_rank": nystrom.rank,
        "preconditioner_seconds": t_sketch,
        "rank_mode": "auto" if rank == "auto" else "fixed",
        "rank_rounds": rounds,
        "rank_memory_cap": memory_cap,
        "rank_stop": stop,
        "solver_rank": solver_ranks[0] if solver_ranks else None,
        "variance_rank": int(basis.shape[1]),
        "variance_error_estimate": variance_error,
        "variance_error_bound": variance_bound,
        "exact_variance": exact_variance,
        "product_cache": at_x.cache,
        "product_cache_reason": at_x.cache_reason,
        "product_cache_seconds": at_x.setup_seconds,
    }
    return weights, factor, lml, extra


# --------------------------------------------------------------------------- adapt
def adapt(
    model_or_lin: nn.Module | Linearization,
    x: Tensor,
    y: Tensor,
    *,
    noise_variance: float,
    prior_variance: float = 1.0,
    mean: str = "network",
    strategy: str = "auto",
    tol: float | None = None,
    max_iter: int = 1000,
    rank: int | str = "auto",
    max_rank: int = 512,
    variance_tol: float = 0.1,
    fisher: str = "exact",
    seed: int = 0,
    cache: str = "auto",
) -> Posterior:
    r"""Adapt a trained network to target data by finite-NTK GP inference (Algorithm 1).

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
        The network trained on the source task (wrapped at its current θ), or a
        :class:`Linearization` of it.
    x : Tensor
        Target inputs, shape (n, *input_shape).
    y : Tensor
        Target outputs, shape (n,) for one output or (n, o).
    noise_variance : float
        σ², the observation noise variance.
    prior_variance : float
        s², the prior variance of the linearized weights (the paper uses 1).
    mean : {"network", "zero"}
        Prior mean m(x): the trained network f(x; θ) (the linearized NN of Eq. 1) or 0
        (the finite NTK).
    strategy : {"auto", "dense", "function", "parameter"}
        ``dense``: explicit Jacobian and eigendecomposition (exact). ``function``:
        CG on (J Jᵀ + (σ²/s²) I) of size n·o with Jacobian products only (Eq. 3).
        ``parameter``: CG on (JᵀJ + (σ²/s²) I_p) in weight space (Eq. 2). ``auto``:
        :func:`choose_strategy` decides and records why in ``diagnostics["reason"]``.
    tol : float, optional
        Relative residual target of CG; default 1e-8 in float64 and 1e-4 otherwise
        (1e-6 and 1e-3 with ``fisher="fd"``).
    max_iter : int
        CG iteration cap. Not reaching ``tol`` warns and sets ``diagnostics["converged"]``.
    rank : int or "auto"
        Rank r of the randomized Nyström sketch of J Jᵀ (function space) or JᵀJ (weight
        space), used both to precondition CG and as the basis of the cached
        predictive-variance factor. An int fixes it (capped at the dimension; variances
        are exact when r >= min(n·o, p)). ``"auto"`` sketches a block of 32 vectors and
        doubles the total rank, reusing every product already made, while the smallest
        Nyström eigenvalue λ̂_r exceeds c · min(1, ``variance_tol``), c = σ²/s², up to
        ``max_rank``. Two needs set the rank. CG needs about as many vectors as there are
        eigenvalues above c (λ̂_r <= c; the preconditioned system then has condition
        number ≈ 2). The variances are a Galerkin upper bound: a direction left out of
        the basis with eigenvalue λ adds λ/(λ + c) of its prior variance to the error and
        c/(λ + c) to the variance, so with exact eigenvectors the relative overestimate is
        at most λ_{r+1}/c. For the sketched basis U (P = UUᵀ) the rigorous bound is
        Σ̂ ⪯ (1 + δ) Σ with δ = ‖(I − P) J Jᵀ (I − P)‖₂ / c, estimated after the fit by
        four steps of block power iteration (16 extra products). Measured
        (``benchmarks/RESULTS.md``): on a trained MLP's fast-decaying spectrum λ̂_r/c and
        δ both match the largest error; on a random MLP's slowly decaying one the largest
        error lay between them (λ̂_r/c about 7× too small, δ 3–7× too large).
        ``diagnostics`` records ``rank_rounds`` (rank and λ̂_r/c per round),
        ``rank_stop`` (why it stopped), ``solver_rank`` (the first rank with
        λ̂_r <= c), ``variance_rank``, ``variance_error_estimate`` (λ̂_r/c; ν/c when
        λ̂_r is below the sketch's resolution ν = eps·√d·‖GΩ‖, pessimistic in float32),
        ``variance_error_bound`` (δ), both 0 when exact, and ``exact_variance``.
    max_rank : int
        Cap of ``rank="auto"`` (also capped by the dimension). Ignored for an int rank.
    variance_tol : float
        ``rank="auto"`` stops once λ̂_r/c <= ``variance_tol``: the targeted largest
        relative overestimate of a predictive variance (0.1: variances within about 10%,
        standard deviations within about 5%). Values >= 1 stop at the rank CG needs
        (fastest; variances can then be several times too large). The criterion uses the
        cheap λ̂_r, not δ: on slowly decaying spectra the variances can miss the target
        (``variance_error_bound`` then says by how much at most). Ignored for an int rank.
    fisher : {"exact", "fd"}
        Weight-space (``strategy="parameter"``) products JᵀJ v = n·F v: ``exact`` by
        forward- then reverse-mode products, ``fd`` by the finite-difference Fisher-vector
        product of Eq. 5 (:func:`ntkcore.fisher.fisher_vp`; one extra forward and one
        backward per vector, activation pattern frozen at θ, relative error ~1e-3 in
        float32). CG on fd products is refined on the exact residual (one exact product
        per round, ``diagnostics["refinements"]``), so the reported residual is that of
        the exact system.
    seed : int
        Seed of the random sketch and probes.
    cache : {"auto", "none", "pullback", "linearized"}
        What the matrix-free strategies keep across their Jacobian products at the fixed
        training inputs (:class:`ntkcore.JacobianAt`): ``auto`` keeps the forward pass
        (and on the CPU the traced tangent program) when it fits in a quarter of the free
        memory. Recorded in ``diagnostics["product_cache"]``.

    Returns
    -------
    Posterior
    """
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    sigma2 = _validate_scalar("noise_variance", noise_variance)
    s2 = _validate_scalar("prior_variance", prior_variance)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if rank != "auto" and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive int or 'auto', got {rank!r}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive int, got {max_rank!r}")
    variance_tol = _validate_scalar("variance_tol", variance_tol)
    if fisher not in FISHER_PRODUCTS:
        raise ValueError(f"fisher must be one of {FISHER_PRODUCTS}, got {fisher!r}")
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    lin = as_linearization(model_or_lin)
    if tol is None:
        # Finite-difference Fisher products are accurate to ~1e-8 (float64) and ~1e-3
        # (float32) relative; ask no more of the solve than its products can give.
        if fisher == "fd" and strategy in ("parameter", "auto"):
            tol = 1e-6 if lin.dtype == torch.float64 else 1e-3
        else:
            tol = 1e-8 if lin.dtype == torch.float64 else 1e-4
    tol = _validate_scalar("tol", tol)

    t0 = time.perf_counter()
    x = lin.prepare_inputs(x)
    y = _validate_targets(lin, x, y)
    n, o = y.shape
    n_obs, p = n * o, lin.num_params

    if strategy == "auto":
        chosen, reason = choose_strategy(n_obs, p, dtype=lin.dtype, device=lin.device)
    else:
        chosen, reason = strategy, "requested"
    diagnostics: dict[str, Any] = {
        "strategy": chosen,
        "reason": reason,
        "n": n,
        "outputs": o,
        "num_params": p,
        "dtype": str(lin.dtype).replace("torch.", ""),
        "device": str(lin.device),
    }
    if chosen == "dense":
        resid = y - lin(x) if mean == "network" else y
        weights, factor, form, spectral, extra = _fit_dense(lin, x, resid, s2, sigma2)

        def lml() -> tuple[float, float]:
            val = spectral.log_marginal_likelihood(
                torch.tensor(sigma2, dtype=_F64), torch.tensor(s2, dtype=_F64)
            )
            return float(val), 0.0

        extra.update(
            iterations=0,
            residual=0.0,
            residuals=[0.0],
            converged=True,
            tolerance=0.0,
            variance_rank=int(factor.shape[0]),
            exact_variance=True,
        )
    else:
        at_x = lin.at(x, cache=cache)
        # The network mean comes from the cached forward pass: no extra pass over x.
        resid = y - at_x.output if mean == "network" else y
        weights, factor, lml, extra = _fit_iterative(
            at_x, resid, s2, sigma2, space=chosen, tol=tol, max_iter=max_iter,
            rank=rank, seed=seed, fisher=fisher, max_rank=max_rank, variance_tol=variance_tol,
        )
        form = "subtract"
    diagnostics.update(extra)
    diagnostics["seconds"] = time.perf_counter() - t0
    return Posterior(
        linearization=lin,
        mean_type=mean,
        noise_variance=sigma2,
        prior_variance=s2,
        weights=weights,
        diagnostics=diagnostics,
        _factor=factor,
        _factor_form=form,
        _lml=lml,
    )
