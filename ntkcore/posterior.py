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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore.distributed.reduction import LOCAL, DataReduction
from ntkcore.distributed.shards import prepare_shard
from ntkcore.jacobian_at import CACHES
from ntkcore.linearization import Linearization, as_linearization, as_real_tensor
from ntkcore.memory import available_memory as _free_memory
from ntkcore.strategies import FITS, FitOptions, FitProblem, dense_spectrum
from ntkcore.strategies.precision import REFINEMENTS
from ntkcore.variance import VARIANCE_MODES, VarianceCorrector, describe_accuracy

__all__ = [
    "Posterior",
    "Prediction",
    "adapt",
    "as_linearization",
    "choose_strategy",
    "dense_spectrum",
]

STRATEGIES = ("auto", *FITS)
MEANS = ("network", "zero")
FISHER_PRODUCTS = ("exact", "fd")


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
# Width budget of the float64 column panels in `_float64_projections` (bytes per panel).
_PANEL_BYTES = 1 << 20


def _float64_projections(
    rows: Tensor, parts: Sequence[tuple[slice, Tensor]]
) -> tuple[Tensor, Tensor]:
    """``rows @ Bᵀ`` and the squared row norms of B, both accumulated in float64.

    ``rows``: float64, shape (k, p). B (m × p) is given by its column ``parts``: pairs of
    a slice of the p columns and those columns of B, shape (m, width), any floating dtype
    (the parameters' per-sample Jacobians, not concatenated). Float32 columns on the CPU
    are converted in panels of about 1 MiB that stay in cache, never as a whole float64
    copy: for 400 × 125,693 per-sample Jacobians (the Adapt page's faces) 0.115 s against
    0.316 s for copy-then-GEMM (one thread), the same sums to 1e-13. On a GPU one copy per
    part is cheaper than a loop of small kernels.
    """
    m = parts[0][1].shape[0]
    products = rows.new_zeros(rows.shape[0], m)  # shape: (k, m)
    squares = rows.new_zeros(m)
    panel: Tensor | None = None
    for cols, part in parts:
        if part.dtype == _F64 or part.device.type != "cpu":
            whole = part.to(_F64)
            products.addmm_(rows[:, cols], whole.mT)
            squares += torch.linalg.vector_norm(whole, dim=-1).square()
            continue
        width = part.shape[1]
        step = max(64, min(width, _PANEL_BYTES // (8 * max(m, 1))))
        if panel is None or panel.shape[1] < step:
            panel = torch.empty(m, step, dtype=_F64)
        for start in range(0, width, step):
            stop = min(start + step, width)
            block = panel[:, : stop - start].copy_(part[:, start:stop])
            products.addmm_(rows[:, cols.start + start : cols.start + stop], block.mT)
            squares += torch.linalg.vector_norm(block, dim=-1).square()
    return products, squares

@dataclass(frozen=True)
class Prediction:
    """Latent predictive distribution p(f* | y) at test inputs (noise not added).

    Attributes
    ----------
    mean : Tensor
        Shape (m, o).
    variance : Tensor or None
        Shape (m, o), non-negative; None when variances were not requested.
    diagnostics : Mapping
        How the variances were computed and how accurate they are (empty when built by
        hand, as in ``Prediction(mean, variance)``). From :meth:`Posterior.predict`:
        ``variance_mode`` (``"accurate"``, ``"fast"`` or None), ``variance_method``
        (``"exact"``: dense or a basis spanning min(n·o, p); ``"low-rank"``: the cached
        Galerkin factor, an upper bound; ``"block-cg"``: brackets by block CG),
        ``variance_error_bound`` (largest relative error over the test outputs),
        ``variance_error_kind`` (``"bound"``: certified by the bracket, up to the
        products' rounding; ``"estimate"``: δ from power iteration), ``variance_accuracy``
        (one short sentence for display), ``variance_iterations``, ``variance_products``,
        ``variance_converged``, ``variance_seconds`` and ``variance_products_dtype``.
    """

    mean: Tensor
    variance: Tensor | None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

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
        ``rank_mode``, ``rank_rounds``, ``rank_stop``, ``solver_rank``,
        ``variance_error_estimate``, and the solve's precision (``residual_dtype``,
        ``float64_residual``, ``refinements``, ``refinement_reason``; see :func:`adapt`).

    Notes
    -----
    A matrix-free posterior whose variance basis does not span the problem keeps its
    products at the training inputs (the cached forward pass, ``lin.at(x)``) for accurate
    variances at predict time.
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
    # Block CG on the training products for accurate variances (None: the factor is exact)
    _variance_corrector: VarianceCorrector | None = field(default=None, repr=False)
    _variance_mode: str = field(default="accurate", repr=False)
    # Sums over data shards (ntkcore.distributed): the training data of a posterior fitted
    # with a process group is sharded; accurate-variance corrections are then collective.
    _reduction: DataReduction = field(default=LOCAL, repr=False)

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

    def predict(self, x: Tensor, *, variance: bool | str = True) -> Prediction:
        """Latent predictive mean and variance at ``x`` (Eq. 3), each of shape (m, o).

        Parameters
        ----------
        x : Tensor
            Test inputs, shape (m, *input_shape).
        variance : bool or {"accurate", "fast"}
            ``True``: the mode chosen at :func:`adapt` (``variance=``, default
            ``"accurate"``); ``False``: means only. ``"fast"``: the cached low-rank factor
            alone — an upper bound, at most (1 + δ)× the exact variance
            (``diagnostics["variance_error_bound"]`` of the posterior). ``"accurate"``:
            within ``variance_rtol`` (adapt's, default 1e-2) of the exact variance: exact
            when the factor is (dense, or a basis spanning min(n·o, p)); the fast value
            when the bound δ already guarantees it; otherwise each variance is bracketed
            by block preconditioned CG over the test outputs on the training products
            (:mod:`ntkcore.variance`) and the bracket's midpoint returned — a few
            products per test output, more on slowly decaying spectra
            (``benchmarks/RESULTS.md``, "Variance accuracy").

            A posterior fitted on data sharded across a process group predicts each
            rank's own ``x`` locally from the replicated w̄ and factor; only that block CG
            needs the (sharded) training products, and then ``predict`` is collective:
            every rank of the group must call it (with its own test points, any number,
            0 included) with the same ``variance``.

        Returns
        -------
        Prediction
            ``diagnostics`` says which method gave the variances and their accuracy.

        Notes
        -----
        Variances come from per-sample Jacobians J* of the test points (batched with
        ``vmap``, in blocks bounded by the linearization's ``chunk_size``) and the cached
        covariance factor F (r × p). Per block, one float64 GEMM [w̄; F] J*ᵀ gives the
        means and the projections, and var = s² (‖J*‖² − ‖F J*ᵀ‖²) (or s² ‖F J*ᵀ‖² for
        the direct form).

        The GEMM stays in float64 even for float32 models. The subtraction cancels
        where the posterior variance is far below the prior variance, and a float32 GEMM
        (float32 accumulation) made the variances 6e-4 to 2e-3 relatively wrong on the
        scaling benchmark's MLP (prior/posterior variance ratios 1e2–2e3), against 1e-6
        in float64 (``benchmarks/RESULTS.md``). On the CPU, float32 Jacobians are
        converted in cache-sized column panels (:func:`_float64_projections`); where the
        variance correction needs whole float64 rows they are copied into one reused
        buffer: a fresh float64 tensor per block cost 12× the copy in page faults on the CPU
        (370 ms vs 30 ms for 203 × 330k).
        """
        mode = self._variance_mode if variance is True else variance
        if mode is not False and mode not in VARIANCE_MODES:
            raise ValueError(
                f"variance must be True, False or one of {VARIANCE_MODES}, got {variance!r}"
            )
        lin = self.linearization
        x = lin.prepare_batch(x)  # o is known: m = 0 test points give (0, o) tensors
        prior_mean = lin(x) if self.mean_type == "network" else None
        w = self.weights
        diagnostics: dict[str, Any] = {"variance_mode": mode or None}
        if mode is False:
            mean = lin.jvp(x, w.to(lin.dtype)).to(_F64)
        else:
            t0 = time.perf_counter()
            corrector = self._variance_corrector
            correct = (
                mode == "accurate"
                and corrector is not None
                and not corrector.fast_is_accurate
            )
            means, variances, errors = [], [], []
            iterations = products = 0
            converged = True
            rows = _stacked(w.to(_F64), self._factor)  # shape: (1 + r, p)
            buffer: Tensor | None = None
            jac_lin = corrector.test_linearization(lin) if correct and corrector else lin
            # the corrector needs whole rows; otherwise the parameters' columns are reduced
            # where they are, with no (c, o, p) concatenation
            blocks = iter(jac_lin.jacobian_blocks(x) if correct else jac_lin.jacobian_parts(x))
            collective = correct and self._reduction.distributed
            while True:
                item = next(blocks, None)
                if collective:  # every rank corrects as many blocks as the busiest one
                    if not self._reduction.any(item is not None, "test blocks left"):
                        break
                    if item is None:
                        assert corrector is not None
                        empty = rows.new_zeros(0, rows.shape[1])
                        corrector.correct(empty, empty[:, 0])
                        continue
                elif item is None:
                    break
                if correct:
                    block = item[1]
                    c, o, p = block.shape
                    b = block.reshape(c * o, p)
                    if b.dtype != _F64:  # the corrector's solves take float64 rows
                        if buffer is None or buffer.shape[0] < b.shape[0]:
                            buffer = torch.empty(b.shape[0], p, dtype=_F64, device=b.device)
                        b = buffer[: b.shape[0]].copy_(b)
                    parts = [(slice(0, p), b)]
                else:
                    c, o = item[1][0][1].shape[:2]
                    parts = [(cols, t.reshape(c * o, -1)) for cols, t in item[1]]
                g, squares = _float64_projections(rows, parts)  # shape: (1 + r, c·o), (c·o,)
                means.append(g[0].reshape(c, o))
                proj = torch.linalg.vector_norm(g[1:], dim=0).square()
                v = squares - proj if self._factor_form == "subtract" else proj
                v = (self.prior_variance * v).clamp_min(0.0)
                if correct:
                    assert corrector is not None
                    out = corrector.correct(b, v)
                    v = out.variance
                    errors.append(out.error_bound)
                    iterations = max(iterations, out.iterations)
                    products += out.products
                    converged = converged and out.converged
                variances.append(v.reshape(c, o))
            empty = rows.new_zeros(0, lin.output_dim(x))  # no test points on this rank
            mean = torch.cat(means, 0) if means else empty
            diagnostics.update(
                self._variance_diagnostics(
                    mode, correct, errors, iterations, products, converged,
                    time.perf_counter() - t0,
                )
            )
        out_mean = mean if prior_mean is None else mean + prior_mean.to(_F64)
        out_var = None
        if mode is not False:
            out_var = torch.cat(variances, 0) if variances else empty
        dtype = lin.dtype
        return Prediction(
            mean=out_mean.to(dtype),
            variance=None if out_var is None else out_var.to(dtype),
            diagnostics=diagnostics,
        )

    def _variance_diagnostics(
        self,
        mode: str,
        corrected: bool,
        errors: list[Tensor],
        iterations: int,
        products: int,
        converged: bool,
        seconds: float,
    ) -> dict[str, Any]:
        corrector = self._variance_corrector
        if corrector is None:
            method, bound, kind = "exact", 0.0, "bound"
        elif corrected:
            method, kind = "block-cg", "bound"
            bound = float(torch.cat(errors).max()) if errors else 0.0
        else:
            method, bound, kind = "low-rank", corrector.bound, "estimate"
        return {
            "variance_method": method,
            "variance_error_bound": bound,
            "variance_error_kind": kind,
            "variance_accuracy": describe_accuracy(
                method, bound, kind=kind, iterations=iterations, converged=converged
            ),
            "variance_iterations": iterations,
            "variance_products": products,
            "variance_converged": converged,
            "variance_seconds": seconds,
            "variance_products_dtype": (
                str(corrector.product_dtype).replace("torch.", "") if corrected and corrector
                else None
            ),
            "variance_rtol": None if corrector is None else corrector.rtol,
        }

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
    variance: str = "accurate",
    variance_rtol: float = 1e-2,
    refinement: str = "auto",
    process_group: Any = None,
    stream: int | None = None,
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
        (1e-6 and 1e-3 with ``fisher="fd"``). For a float32 network the target is met by
        mixed-precision refinement where float32 products cannot resolve it (see
        ``refinement``); the reported ``residual`` is then the float64 one.
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
        backward per vector, activation pattern frozen at θ). Their accuracy, measured
        against ``method="exact"`` *in the network's own precision*: ~1e-3 relative in
        float32 (~1e-4 with ``central=True``) on the test networks; against float64
        ``exact`` products, deep float32 PreResNets at initialization are 2–5e-3 off,
        as far as float32 ``exact`` itself is (``benchmarks/RESULTS.md``, "Fisher-vector
        products"). CG on fd products is refined on the exact residual (one exact product
        per round, ``diagnostics["refinements"]``; float64 exact products when
        ``refinement`` calls for them), so the reported residual is that of the exact
        system.
    seed : int
        Seed of the random sketch and probes.
    cache : {"auto", "none", "pullback", "linearized"}
        What the matrix-free strategies keep across their Jacobian products at the fixed
        training inputs (:class:`ntkcore.JacobianAt`): ``auto`` keeps the forward pass
        (and on the CPU the traced tangent program) when it fits in a quarter of the free
        memory. Recorded in ``diagnostics["product_cache"]``.
    variance : {"accurate", "fast"}
        What ``predict(x)`` returns by default (``predict(x, variance=...)`` overrides
        it). ``"accurate"``: predictive variances within ``variance_rtol`` of the exact
        posterior variances — exact from ``dense`` and from a basis spanning min(n·o, p),
        else the cached low-rank variance corrected by block preconditioned CG over the
        test outputs until a guaranteed bracket is that tight (:mod:`ntkcore.variance`;
        a few products per test output, more on slowly decaying spectra). ``"fast"``:
        the low-rank Galerkin variance alone, an upper bound at most (1 + δ)× the exact
        one (``diagnostics["variance_error_bound"]``). Each ``Prediction`` states which
        was used and its accuracy in ``Prediction.diagnostics``.
    variance_rtol : float
        Target relative error of accurate variances (default 1e-2).
    refinement : {"auto", "float64", "none"}
        Precision of the matrix-free solves of a float32 (or lower) network. ``"auto"``:
        when the sketch's condition estimate κ̂ predicts that products in the network's
        dtype cannot reach ``tol`` (u·κ̂/100 > tol, u its unit roundoff), or a solve in that
        dtype stalls above ``tol``, the solve is refined on float64 residuals: the solution
        and the residual b − A x are float64 (products of a float64 copy of the
        linearization), each correction is solved by the float32 preconditioned CG, until
        the float64 residual meets ``tol`` (:mod:`ntkcore.strategies.precision`).
        Otherwise everything stays in float32 (GPUs keep float32 speed). ``"float64"``:
        always refine; ``"none"``: never (the solve then warns when it stalls). Where a
        device has no float64 (Apple MPS), the solve stays in float32 with a warning.
        ``diagnostics`` reports ``refinements``, ``residual_dtype``, ``float64_residual``
        (None without refinement), ``working_dtype``, ``refinement_reason`` and
        ``condition_estimate`` κ̂. Accurate variances use the float64 products too when
        the solve did. Refinement aims a decade below ``tol`` (the posterior mean's error
        was measured at up to ~5× the relative residual). One limit: a weight-space solve
        of an under-determined problem (n·o < p) keeps float32 rounding components in the
        null space of J, which the residual weighs by c only, so the mean can stay ~1e-4
        off however small the residual (n = 300, p = 17,793, σ² = 1e-3: residual 4e-6,
        mean 1.1e-4; ``benchmarks/RESULTS.md``); ``function`` (what ``auto`` picks when
        n·o <= p) has no such null space.
    process_group : torch.distributed.ProcessGroup, optional
        Data-parallel adaptation (:mod:`ntkcore.distributed`): ``x`` and ``y`` are this
        rank's shard of the data, the network is replicated on every rank, and every sum
        over data points is all-reduced across the group (collective: every rank calls
        ``adapt`` with the same settings). The result on every rank equals ``adapt`` on
        the concatenated shards, to the solver's tolerance; ``strategy="auto"`` decides
        from the global n·o and p and the smallest free memory of the ranks.
        ``function`` then solves Eq. 3 through Eq. 2 in weight space (p-vectors
        replicated; function-space vectors would be sharded), ``dense`` all-gathers the
        Jacobian rows (n·o <= p) or all-reduces JᵀJ (n·o > p). Invalid input on one
        rank raises ``ValueError`` naming that rank on every rank; a rank that fails or
        hangs later makes the others raise
        :class:`~ntkcore.distributed.DistributedError` after the group's timeout.
        ``log_marginal_likelihood()`` and accurate-variance ``predict`` are collective
        too. A rank's shard may be empty (shape (0, *input_shape), targets (0, o) or
        (0,)) as long as some rank holds a point: it takes part in every collective and
        gets the same posterior (:mod:`ntkcore.distributed.shards`); every shard empty is
        a ``ValueError`` on every rank, as an empty ``x`` is on one process. ``None``:
        one process.
    stream : int, optional
        Points per shard streamed through the device (:mod:`ntkcore.distributed.stream`):
        ``x`` stays where it is (host memory, or a tensor over a ``numpy`` memory map of a
        ``.npy`` file) and every product of the matrix-free strategies moves one shard at
        a time to the network's device, keeping no forward pass; the solve then works in
        weight space (p-vectors) as for sharded data, so n is bounded by the disk. Costs
        a forward pass per shard per product. Not with ``fisher="fd"``. Combines with
        ``process_group`` (each rank streams its own shard). ``dense`` (and ``auto``
        choosing it) moves ``x`` to the device as usual.

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
    if variance not in VARIANCE_MODES:
        raise ValueError(f"variance must be one of {VARIANCE_MODES}, got {variance!r}")
    variance_rtol = _validate_scalar("variance_rtol", variance_rtol)
    if refinement not in REFINEMENTS:
        raise ValueError(f"refinement must be one of {REFINEMENTS}, got {refinement!r}")
    lin = as_linearization(model_or_lin)
    if tol is None:
        # Finite-difference Fisher products are within ~1e-8 (float64) and ~1e-3 (float32)
        # of exact products in the same precision (2–5e-3 of float64 exact ones on deep
        # float32 PreResNets); ask no more of the solve than its products can give.
        if fisher == "fd" and strategy in ("parameter", "auto"):
            tol = 1e-6 if lin.dtype == torch.float64 else 1e-3
        else:
            tol = 1e-8 if lin.dtype == torch.float64 else 1e-4
    tol = _validate_scalar("tol", tol)
    reduction = DataReduction(process_group)
    if stream is not None:
        if isinstance(stream, bool) or not isinstance(stream, int) or stream < 1:
            raise ValueError(f"stream must be a positive int or None, got {stream!r}")
        if fisher == "fd":
            raise ValueError("stream does not support fisher='fd' (use fisher='exact')")

    t0 = time.perf_counter()
    # a rank may hold no points (0 of n): it learns o from the others and joins every
    # collective with empty sums (ntkcore.distributed.shards)
    x = prepare_shard(lin, x, reduction, "adapt's input validation", on_device=stream is None)
    error: Exception | None = None
    try:
        y = _validate_targets(lin, x, y)
    except Exception as err:  # every rank must learn of it (no-op on one process)
        error = err
    reduction.check(error, "adapt's input validation")
    n, o = y.shape
    p = lin.num_params
    n_obs = n * o
    memory = None
    if reduction.distributed:
        shapes = reduction.gather_ints([n, o, p], "shard shapes")
        if len({(s[1], s[2]) for s in shapes}) != 1:
            raise ValueError(
                "the ranks' networks or targets disagree on (outputs, parameters): "
                + ", ".join(f"rank {r}: {s[1:]}" for r, s in enumerate(shapes))
            )
        n_obs = sum(s[0] for s in shapes) * o
        memory = reduction.min_int(_free_memory(lin.device), "free memory")

    if strategy == "auto":
        chosen, reason = choose_strategy(
            n_obs, p, dtype=lin.dtype, device=lin.device, available_memory=memory
        )
    else:
        chosen, reason = strategy, "requested"
    diagnostics: dict[str, Any] = {
        "strategy": chosen,
        "reason": reason,
        "n": n_obs // o,
        "outputs": o,
        "num_params": p,
        "dtype": str(lin.dtype).replace("torch.", ""),
        "device": str(lin.device),
    }
    problem = FitProblem(
        linearization=lin, x=x, y=y, mean=mean, noise_variance=sigma2, prior_variance=s2,
        options=FitOptions(
            tol=tol, max_iter=max_iter, rank=rank, max_rank=max_rank,
            variance_tol=variance_tol, variance=variance, variance_rtol=variance_rtol,
            refinement=refinement, fisher=fisher, seed=seed, cache=cache, stream=stream,
        ),
        reduction=reduction,
    )
    fit = FITS[chosen](problem)
    diagnostics.update(fit.diagnostics)
    if reduction.distributed:
        diagnostics["world_size"] = reduction.world_size
        diagnostics["local_n"] = n
        diagnostics["communication"] = reduction.stats()
    diagnostics["variance"] = variance
    diagnostics["variance_rtol"] = variance_rtol
    diagnostics["seconds"] = time.perf_counter() - t0
    return Posterior(
        linearization=lin,
        mean_type=mean,
        noise_variance=sigma2,
        prior_variance=s2,
        weights=fit.weights,
        diagnostics=diagnostics,
        _factor=fit.factor,
        _factor_form=fit.factor_form,
        _lml=fit.log_marginal_likelihood,
        _variance_corrector=fit.variance_corrector,
        _variance_mode=variance,
        _reduction=reduction,
    )
