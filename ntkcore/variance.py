r"""Accurate predictive variances of the matrix-free posteriors.

The latent predictive variance at a test output with Jacobian row j* (Eq. 2 ↔ Eq. 3) is

    var = σ² j*ᵀ (JᵀJ + cI)⁻¹ j*  =  s² (‖j*‖² − b*ᵀ (JJᵀ + cI)⁻¹ b*),   b* = J j*.

The matrix-free strategies cache a Galerkin factor F on a sketch basis U (P = UUᵀ): the
*fast* variance s²(‖j*‖² − ‖F j*‖²) = σ² j*ᵀ M⁻¹ j* with M = JᵀPJ + cI ⪯ JᵀJ + cI, an upper
bound at most (1 + δ) times the exact value, δ = ‖(I − P) J Jᵀ (I − P)‖₂ / c. On slowly
decaying NTK spectra δ is large whatever rank memory allows (tanh MLP 8-128-128-1,
n = 2,000, σ² = 1e-3: 1,005 eigenvalues above c, 1,814 above c/100; at rank 512 the fast
variances are 2.0–3.2× the exact ones).

*Accurate* variances bracket the exact quadratic forms by block preconditioned CG over
the test outputs (:func:`ntkcore.solvers.block_cg.block_quadratic_forms`), with the
cached factor (weight space, M⁻¹ = (I − FᵀF)/c) or the Nyström sketch (function space,
M = U Λ̂ Uᵀ + cI ⪯ JJᵀ + cI) as the preconditioner, until every variance's bracket
[lo, hi] has (hi − lo) / (2 lo) <= ``rtol``; the midpoint is returned, so the relative
error is at most that half-width (a bound, up to the rounding of the products). The space
with the smaller dimension is used (vectors of size min(N, p) per test output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ntkcore.memory import available_memory, product_budget
from ntkcore.solvers.block_cg import block_quadratic_forms

if TYPE_CHECKING:
    from ntkcore.linearization import Linearization
    from ntkcore.strategies.products import TrainingProducts

__all__ = [
    "VARIANCE_MODES",
    "CorrectedVariances",
    "VarianceCorrector",
    "accuracy_label",
    "describe_accuracy",
]

VARIANCE_MODES = ("accurate", "fast")
_F64 = torch.float64
# float64 blocks of size d held per test output by block CG (x, r, z, b, the directions,
# their products, one temporary).
_BLOCKS_PER_COLUMN = 7
_MAX_COLUMNS = 1024  # the (m × m) algebra per step grows as m²·d


@dataclass(frozen=True)
class CorrectedVariances:
    """Result of :meth:`VarianceCorrector.correct` for one block of test outputs.

    Attributes
    ----------
    variance : Tensor
        The bracket midpoints, shape (k,).
    error_bound : Tensor
        max((hi − lo) / (2 lo), u·κ̂) per output: the largest relative error of
        ``variance`` (the bracket's half-width, and at least the products' rounding: u
        the unit roundoff of their dtype, κ̂ the condition estimate).
    iterations, products : int
        Block CG steps (largest over sub-blocks) and single products with the system.
    converged : bool
    """

    variance: Tensor
    error_bound: Tensor
    iterations: int
    products: int
    converged: bool


class VarianceCorrector:
    r"""Brackets exact predictive variances with block CG on the training products.

    Parameters
    ----------
    products : TrainingProducts
        J, Jᵀ at the training inputs in the network's dtype.
    noise_variance, prior_variance : float
        σ², s².
    factor : Tensor
        F (r × p, float64), the Galerkin factor: Jᵀ U (UᵀJJᵀU + cI)⁻¹ UᵀJ = FᵀF.
    factor_float64 : bool
        F was built from float64 products (float64 network, or a refined solve).
    basis, eigenvalues : Tensor
        U (N × r) and Λ̂ (r,) of the Nyström sketch U Λ̂ Uᵀ ⪯ J Jᵀ.
    bound : float
        δ (the fast variances are at most (1 + δ) × the exact ones).
    condition_estimate : float
        κ̂ = (λ̂₁ + c)/c.
    rtol : float
        Target relative error of accurate variances.
    max_iter : int
        Block CG steps at most.
    refined : bool
        The fit's solve needed float64 residuals (then so do the corrections).
    cache : str
        ``cache`` option for the float64 products built on first use.
    directions : Tensor, optional
        T (p × r) with U = J T when the training data is sharded across a process group
        (:func:`ntkcore.strategies.iterative.weight_sketch`; then ``basis`` is unused).
        The corrections then run in weight space, and :meth:`correct` is collective: each
        rank's test rows are gathered, bracketed together on the all-reduced products, and
        each rank keeps its own.

    Notes
    -----
    Precision. The brackets need M ⪯ A to rounding, and products whose rounding is small
    against c: for a float32 network that holds when u·κ̂ <= ``rtol``/10 (u the unit
    roundoff). Otherwise the first correction builds a float64 copy of the linearization
    (:meth:`ntkcore.Linearization.to_dtype`), recomputes UᵀJ with it (r reverse products;
    in function space also J Jᵀ U, r forward ones, for the preconditioner
    M = J P Jᵀ + cI, P the projector onto span(JᵀU): the Nyström approximation with test
    matrix U, ⪯ J Jᵀ) and uses float64 test Jacobians.
    """

    def __init__(
        self,
        products: TrainingProducts,
        *,
        noise_variance: float,
        prior_variance: float,
        factor: Tensor,
        factor_float64: bool,
        basis: Tensor,
        eigenvalues: Tensor,
        bound: float,
        condition_estimate: float,
        rtol: float,
        max_iter: int,
        refined: bool = False,
        cache: str = "auto",
        directions: Tensor | None = None,
    ) -> None:
        self.noise_variance = float(noise_variance)
        self.prior_variance = float(prior_variance)
        self.shift = self.noise_variance / self.prior_variance
        self.bound = float(bound)
        self.condition_estimate = float(condition_estimate)
        self.rtol = float(rtol)
        self.max_iter = int(max_iter)
        self._reduction = products.reduction
        sharded = products.sharded
        self.space = (
            "parameter" if sharded or products.p <= products.num_observations else "function"
        )
        self._directions = directions
        self._dtype = products.dtype
        self._dim = products.p if self.space == "parameter" else products.num_observations
        self._device = products.device
        self._products: TrainingProducts | None = products
        self._products64: TrainingProducts | None = None
        self._refined = bool(refined)
        self._factor = factor
        self._factor_float64 = factor_float64
        self._basis = basis.to(_F64)
        self._eigenvalues = eigenvalues.to(_F64)
        self._cache = cache
        self._ready = False
        if self.fast_is_accurate:  # never corrects: keep no training products alive
            self._products = self._products64 = None
        # set by _prepare
        self._work: TrainingProducts | None = None
        self._weight_factor: Tensor | None = None
        self._low_rank: Tensor | None = None  # function space: V with M = V G⁻¹ Vᵀ + cI
        self._core_chol: Tensor | None = None
        self._columns: int | None = None

    @property
    def needs_float64(self) -> bool:
        """Corrections run on float64 products (see Notes)."""
        dtype = self._dtype
        if dtype == _F64:
            return False
        return (
            self._refined
            or torch.finfo(dtype).eps * self.condition_estimate > self.rtol / 10
        )

    @property
    def dim(self) -> int:
        """Size of the vectors block CG works on per test output: p or N."""
        return self._dim

    @property
    def fast_is_accurate(self) -> bool:
        """The fast variances already meet ``rtol`` by the bound δ (with a factor 2 of
        safety: δ is a power-iteration estimate of a norm, from below)."""
        return 2 * self.bound <= self.rtol

    @property
    def product_dtype(self) -> torch.dtype:
        return _F64 if self.needs_float64 else self._dtype

    def test_linearization(self, lin: Linearization) -> Linearization:
        """Where the test Jacobians come from: ``lin``, or its float64 copy when the
        corrections run in float64 (float32 test Jacobians would carry u·‖J*‖ errors into
        the small-eigenvalue directions that A⁻¹ amplifies)."""
        return lin.to_dtype(_F64) if self.needs_float64 else lin

    # ------------------------------------------------------------------ operators
    def _prepare(self) -> None:
        if self._ready:
            return
        assert self._products is not None, "a corrector within its bound δ never corrects"
        c = self.shift
        if not self.needs_float64:
            self._work = self._products
            if self.space == "parameter":
                self._weight_factor = self._factor
        else:
            if self._products64 is None:
                self._products64 = self._products.to_dtype(_F64, self._cache)
            pr = self._products64
            self._work = pr
            if self.space == "parameter" and self._factor_float64:
                self._weight_factor = self._factor
            else:
                if self._directions is not None:  # sharded: JᵀU = JᵀJ T
                    w64 = pr.gram(self._directions)
                else:
                    w64 = pr.vjp(self._basis)  # JᵀU, shape (p, r), float64
                gram = w64.mT @ w64  # UᵀJJᵀU = G
                if self.space == "parameter":
                    eye = torch.eye(gram.shape[0], dtype=_F64, device=gram.device)
                    chol = torch.linalg.cholesky(gram + c * eye)
                    self._weight_factor = torch.linalg.solve_triangular(
                        chol, w64.mT, upper=False
                    )  # F = L⁻¹ UᵀJ, FᵀF = W(WᵀW + cI)⁻¹Wᵀ
                else:
                    v = pr.jvp(w64)  # J JᵀU, shape (N, r)
                    # M = V G⁻¹ Vᵀ + cI: M⁻¹ = (I − V (cG + VᵀV)⁻¹ Vᵀ)/c (Woodbury)
                    self._low_rank = v
                    core = c * gram + v.mT @ v
                    self._core_chol = torch.linalg.cholesky(0.5 * (core + core.mT))
        # every rank must split the gathered test rows alike
        self._columns = self._reduction.min_int(self._columns_per_block(), "block CG width")
        self._ready = True

    def _matmul(self, v: Tensor) -> Tensor:
        pr = self._work
        assert pr is not None
        dt = pr.dtype
        prod = pr.gram(v.to(dt)) if self.space == "parameter" else pr.kernel(v.to(dt))
        return prod.to(_F64) + self.shift * v

    def _preconditioner(self, v: Tensor) -> Tensor:
        c = self.shift
        if self.space == "parameter":  # M⁻¹ = (I − FᵀF)/c, M = JᵀPJ + cI
            f = self._weight_factor
            assert f is not None
            return (v - f.mT @ (f @ v)) / c
        if self._low_rank is not None:
            low, chol = self._low_rank, self._core_chol
            assert chol is not None
            return (v - low @ torch.cholesky_solve(low.mT @ v, chol)) / c
        u, lam = self._basis, self._eigenvalues  # M⁻¹ = U((Λ̂ + c)⁻¹ − 1/c)Uᵀ + I/c
        return u @ ((1.0 / (lam + c) - 1.0 / c).unsqueeze(-1) * (u.mT @ v)) + v / c

    def _columns_per_block(self) -> int:
        device = self._device
        budget = product_budget(device)
        if device.type != "cpu":
            budget = max(budget, available_memory(device) // 8)
        return max(1, min(_MAX_COLUMNS, budget // (_BLOCKS_PER_COLUMN * 8 * self.dim)))

    # ------------------------------------------------------------------ correction
    def correct(self, rows: Tensor, fast: Tensor) -> CorrectedVariances:
        """Accurate variances of the test outputs whose Jacobian rows are ``rows``.

        Parameters
        ----------
        rows : Tensor
            J* rows, shape (k, p), float64.
        fast : Tensor
            Their fast (Galerkin) variances, shape (k,): an upper bound used to tighten
            the bracket.
        """
        self._prepare()
        reduction = self._reduction
        if reduction.distributed:  # collective: bracket every rank's rows together
            mine = rows.shape[0]
            counts = [c[0] for c in reduction.gather_ints([mine], "test rows per rank")]
            start = sum(counts[: reduction.rank])
            rows = reduction.gather_rows(rows.contiguous(), "test Jacobian rows")
            fast = reduction.gather_rows(fast.contiguous(), "fast variances")
        variances, bounds = [], []
        iterations = products = 0
        converged = True
        step = self._columns
        assert step is not None
        for s in range(0, rows.shape[0], step):
            out = self._correct_block(rows[s : s + step], fast[s : s + step])
            variances.append(out.variance)
            bounds.append(out.error_bound)
            iterations = max(iterations, out.iterations)
            products += out.products
            converged = converged and out.converged
        if not variances:  # no rows on any rank
            empty = fast.new_zeros(0)
            return CorrectedVariances(empty, empty, 0, 0, True)
        variance, bound = torch.cat(variances), torch.cat(bounds)
        if reduction.distributed:
            variance, bound = variance[start : start + mine], bound[start : start + mine]
        return CorrectedVariances(variance, bound, iterations, products, converged)

    def _correct_block(self, rows: Tensor, fast: Tensor) -> CorrectedVariances:
        sigma2, s2, rtol = self.noise_variance, self.prior_variance, self.rtol
        fast = fast.to(_F64)
        if self.space == "parameter":
            rhs = rows.mT.contiguous()  # shape: (p, k)

            def bracket(lower: Tensor, gap: Tensor) -> tuple[Tensor, Tensor]:
                return sigma2 * lower, torch.minimum(sigma2 * (lower + gap), fast)
        else:
            pr = self._work
            assert pr is not None
            rhs = pr.jvp(rows.mT.to(pr.dtype)).to(_F64)  # b* = J j*, shape: (N, k)
            prior = rows.square().sum(-1)  # ‖j*‖²

            def bracket(lower: Tensor, gap: Tensor) -> tuple[Tensor, Tensor]:
                return s2 * (prior - lower - gap), torch.minimum(s2 * (prior - lower), fast)

        def done(lower: Tensor, gap: Tensor) -> Tensor:
            lo, hi = bracket(lower, gap)
            return (lo > 0) & (hi - lo <= 2 * rtol * lo)

        forms = block_quadratic_forms(
            self._matmul, self._preconditioner, rhs, done=done, max_iter=self.max_iter
        )
        lo, hi = bracket(forms.lower, forms.gap)
        ok = lo > 0
        variance = torch.where(ok, 0.5 * (lo + hi), hi).clamp_min(0.0)
        error = torch.where(ok, (hi - lo) / (2 * lo.clamp_min(torch.finfo(_F64).tiny)), math.inf)
        # the bracket holds up to the products' rounding, ~u·κ̂ relative (u of their dtype)
        error = error.clamp_min(torch.finfo(self.product_dtype).eps * self.condition_estimate)
        return CorrectedVariances(
            variance, error, forms.iterations, forms.products, forms.converged
        )


def describe_accuracy(
    method: str, error_bound: float, *, kind: str, iterations: int = 0, converged: bool = True
) -> str:
    """One short sentence on a prediction's variances, for display next to the band.

    Parameters
    ----------
    method : {"exact", "low-rank", "block-cg"}
    error_bound : float
        Largest relative error (δ for the low-rank factor).
    kind : {"bound", "estimate"}
    """
    if method == "exact":
        return "exact (to solver tolerance)"
    pct = "< 0.01%" if error_bound < 1e-4 else f"{100 * error_bound:.2g}%"
    if method == "block-cg":
        steps = f"{iterations} block-CG step{'s' if iterations != 1 else ''}"
        if not converged:
            return f"within {pct} (bound; block CG stopped before its target after {steps})"
        return f"within {pct} of exact (certified bound, {steps})"
    what = "estimated bound" if kind == "estimate" else "bound"
    if error_bound <= 0.1:
        return f"within {pct} of exact (low-rank factor, {what})"
    return f"up to {1 + error_bound:.3g}× the exact variance (fast low-rank factor, {what})"


def accuracy_label(diagnostics: Mapping[str, Any]) -> str:
    """A prediction's variance accuracy in a few characters, for tables and cards.

    Parameters
    ----------
    diagnostics : Mapping
        ``Prediction.diagnostics`` (``variance_method``, ``variance_error_bound``).

    Returns
    -------
    str
        ``"exact"`` (dense, or a basis spanning the problem; also when no variances were
        computed), ``"≤ 0.84%"`` (a relative error bound at most 10%: block CG's certified
        bracket or a tight low-rank factor), else ``"≤ 27.6× (bound)"`` (the fast low-rank
        factor's upper bound).
    """
    method = diagnostics.get("variance_method")
    bound = float(diagnostics.get("variance_error_bound") or 0.0)
    if method in (None, "exact"):
        return "exact"
    if bound <= 0.1:
        return f"≤ {100 * bound:.2g}%"
    return f"≤ {1 + bound:.3g}× (bound)"
