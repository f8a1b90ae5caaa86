"""The Figure 2 problem and one timed GP inference on it (function vs parameter space).

Section 3.2 of Maddox et al. (2021) times finite-NTK GP inference with the 2021 speed
notebook's five-layer MLP (:class:`Figure2Problem`): ``5 → h → 10h → h → 1`` with ELU at its
random initialization (h = 200 gives p = 803,601, the paper's model), x ~ N(0, I₅),
y = sin(2 aᵀx) + 0.1 ε for a fixed unit vector a, zero prior mean, prior variance
s² = 1 / mean diag J Jᵀ over the first 256 training inputs (unit prior variance of f at the
data) and noise variance σ² = 0.01 (10% of the prior standard deviation).

:func:`measure_adapt` times one ``adapt`` (function space: CG on J Jᵀ + (σ²/s²) I, Eq. 3;
parameter space: CG on JᵀJ + (σ²/s²) I, Eq. 2, with exact or finite-difference Fisher
products, Eq. 5) to a stated relative residual, then ``Posterior.predict`` of means **and**
variances; :func:`measure_reference` times the 2021 reference-style pipeline
(:mod:`ntkcore.experiments.reference`) on the same problem; :func:`run_timing_rows` measures a
list of :class:`TimingRow` with a time budget, memory checks and progress;
:func:`reference_comparison` is ``benchmarks/scaling.py --sweeps reference``. The experiments
built on them are in :mod:`ntkcore.experiments.timing`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore.experiments.clock import PeakMemory, forward_equivalents, forward_seconds, stopwatch
from ntkcore.experiments.machine import device_name
from ntkcore.experiments.reference import ReferencePipeline
from ntkcore.experiments.registry import Progress, ProgressSteps
from ntkcore.linearization import Linearization
from ntkcore.memory import available_memory
from ntkcore.posterior import adapt

__all__ = [
    "AUTO_MAX_RANK",
    "LOVE_RANK",
    "METHODS",
    "REFERENCE_METHOD",
    "Figure2Problem",
    "TimingRow",
    "dense_posterior",
    "estimate_seconds",
    "measure_adapt",
    "measure_reference",
    "parameter_space_bytes",
    "posterior_errors",
    "rank_options",
    "rank_spec",
    "reference_comparison",
    "run_timing_rows",
    "summary",
    "warm_up",
]

RowCallback = Callable[[dict[str, Any]], None]

#: Strategies the sweeps time: ``parameter`` uses exact products JᵀJ v (forward- then
#: reverse-mode), ``parameter-fd`` the paper's finite-difference Fisher products (Eq. 5).
METHODS = ("function", "parameter", "parameter-fd")
#: The 2021 pipeline (:mod:`ntkcore.experiments.reference`), an optional extra method.
REFERENCE_METHOD = "reference-style"
_ADAPT_OPTIONS: dict[str, dict[str, str]] = {
    "function": {"strategy": "function"},
    "parameter": {"strategy": "parameter", "fisher": "exact"},
    "parameter-fd": {"strategy": "parameter", "fisher": "fd"},
}
#: Cap of ``rank="auto"`` (``adapt``'s default ``max_rank``); sizes chunks and memory checks.
AUTO_MAX_RANK = 512
#: Lanczos steps of the reference's LOVE variances (GPyTorch's max_root_decomposition_size).
LOVE_RANK = 100


# --------------------------------------------------------------------------- the problem
@dataclass(frozen=True)
class Figure2Problem:
    """The 2021 speed notebook's regression problem (module docstring).

    >>> Figure2Problem(200).num_params
    803601

    Parameters
    ----------
    hidden : int
        h of the MLP ``in → h → 10h → h → 1`` (ELU).
    in_features : int
        Input dimension (5 in the notebook).
    """

    hidden: int
    in_features: int = 5

    def __post_init__(self) -> None:
        for name in ("hidden", "in_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def widths(self) -> tuple[int, int, int]:
        """Hidden widths (h, 10h, h)."""
        return (self.hidden, 10 * self.hidden, self.hidden)

    @property
    def num_params(self) -> int:
        """p of :meth:`model` (h = 200 gives 803,601)."""
        dims = (self.in_features, *self.widths, 1)
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))

    def model(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> nn.Module:
        """The MLP at its random initialization (``torch.manual_seed(seed)``), in eval mode.

        The global random state is restored afterwards.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dims = (self.in_features, *self.widths)
            layers: list[nn.Module] = []
            for a, b in zip(dims[:-1], dims[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ELU()]
            layers.append(nn.Linear(dims[-1], 1))
            model = nn.Sequential(*layers)
        return model.to(device=device, dtype=dtype).eval()

    def data(
        self,
        n: int,
        m: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 1,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x ~ N(0, I), y = sin(2 aᵀx) + 0.1 ε (``n`` points, y of shape (n,)) and ``m`` test
        inputs, drawn on the CPU from ``seed`` and moved to ``device``."""
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(self.in_features, generator=gen)
        a = a / a.norm()
        x = torch.randn(n, self.in_features, generator=gen)
        y = torch.sin(2 * x @ a) + 0.1 * torch.randn(n, generator=gen)
        x_test = torch.randn(m, self.in_features, generator=gen)
        return tuple(t.to(device=device, dtype=dtype) for t in (x, y, x_test))  # type: ignore[return-value]

    def instance(
        self,
        n: int,
        m: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
        """(model, x, y, x_test): the network from ``seed``, ``n`` points and ``m`` test
        inputs from ``seed + 1`` — what every measurement of one row uses."""
        model = self.model(device=device, dtype=dtype, seed=seed)
        return (model, *self.data(n, m, device=device, dtype=dtype, seed=seed + 1))

    @staticmethod
    def prior_variance(lin: Linearization, x: Tensor, points: int = 256) -> float:
        """s² = 1 / mean diag J Jᵀ over the first ``points`` inputs (unit prior variance of f)."""
        d = lin.ntk_diag(x[:points]).double().mean()
        return float(1.0 / d)

    def product_chunk(
        self, n: int, rank: int, *, device: torch.device, dtype: torch.dtype, fraction: float
    ) -> int | None:
        """Data points per chunk so that a product with ``rank`` vectors fits the memory budget.

        A batched product keeps about four (k, chunk, width) activation tensors alive; ``None``
        (no chunking) when all n points fit, and always on the CPU, where the engine sizes its
        product chunks from its own byte budget and keeps one cached forward pass per chunk
        (``lin.at(x)``; a chunk here would only multiply those passes).
        """
        if device.type == "cpu":
            return None
        itemsize = torch.empty((), dtype=dtype).element_size()
        per_point = rank * max(self.widths) * itemsize * 4
        budget = fraction * available_memory(device)
        if device.type != "cuda":
            budget = min(2 * 2**30, budget)
        chunk = int(budget // per_point)
        return None if chunk >= n else max(64, chunk)


# --------------------------------------------------------------------------- rank specs
def rank_spec(spec: int | str) -> int | str:
    """Validate a Nyström rank: a positive int, ``"auto"`` or ``"auto:TOL"`` (TOL > 0).

    ``auto`` is ``adapt(rank="auto")`` with its default ``variance_tol`` (0.1); ``auto:TOL``
    sets ``variance_tol`` (``auto:1`` stops at the rank CG needs). Strings of digits become
    ints.
    """
    if isinstance(spec, bool):
        raise ValueError(f"rank must be an int, auto or auto:TOL, got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"rank must be positive, got {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"rank must be an int, auto or auto:TOL, got {spec!r}")
    if spec == "auto":
        return spec
    if spec.startswith("auto:"):
        try:
            tol = float(spec[5:])
        except ValueError:
            raise ValueError(f"bad variance tolerance in rank {spec!r}") from None
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"variance tolerance must be positive: {spec!r}")
        return spec
    try:
        return rank_spec(int(spec))
    except ValueError:
        raise ValueError(f"rank must be an int, auto or auto:TOL, got {spec!r}") from None


def rank_options(rank: int | str) -> dict[str, Any]:
    """``adapt`` keyword arguments for a rank spec (:func:`rank_spec`)."""
    rank = rank_spec(rank)
    if isinstance(rank, int):
        return {"rank": rank}
    if rank == "auto":
        return {"rank": "auto"}
    return {"rank": "auto", "variance_tol": float(rank.split(":", 1)[1])}


def _rank_bound(rank: int | str) -> int:
    """The largest rank a spec can reach (for chunk sizes and memory estimates)."""
    return rank if isinstance(rank, int) else AUTO_MAX_RANK


def parameter_space_bytes(p: int, rank: int) -> int:
    """Rough peak of the weight-space Nyström sketch: ~6 float64 (p × rank) matrices."""
    return 6 * p * rank * 8


# --------------------------------------------------------------------------- one row
@dataclass
class TimingRow:
    """One measured (or skipped) configuration of the Figure 2 sweeps.

    The fields before ``note`` are those ``benchmarks/scaling.py`` has always written;
    :meth:`record` gives the tidy record of the experiments' DataFrames.
    """

    sweep: str
    method: str
    n: int
    p: int
    hidden: int
    rank: int | str  # requested: an int, "auto" or "auto:TOL" (LOVE steps for reference-style)
    tol: float
    dtype: str = "float32"
    status: str = "ok"
    iterations: int | None = None
    residual: float | None = None
    converged: bool | None = None
    fit_s: float | None = None
    predict_s: float | None = None
    total_s: float | None = None
    cpu_s: float | None = None
    sketch_s: float | None = None
    chunk: int | None = None
    sketch_rank: int | None = None  # the Nyström rank used (chosen by "auto")
    solver_rank: int | None = None  # first sketch rank with λ̂_r <= σ²/s²
    variance_rank: int | None = None
    variance_error_estimate: float | None = None  # λ̂_r / c, see adapt
    variance_error_bound: float | None = None  # δ: variances at most (1 + δ)× exact
    exact_variance: bool | None = None
    peak_gib: float | None = None
    note: str = ""
    forward_s: float | None = None  # one no_grad forward pass on the n training inputs
    repeat: int = 0
    device: str = ""
    peak_scope: str = ""  # what peak_gib measured (clock.PeakMemory.scope)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two rows the same measurement."""
        return (self.method, self.n, self.p, self.dtype, self.repeat, str(self.rank), self.tol)

    def record(self, device_name: str = "", seed: int | None = None) -> dict[str, Any]:
        """The tidy record (module docstring): NaN for what was not measured."""

        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        return {
            "sweep": self.sweep,
            "method": self.method,
            "n": self.n,
            "p": self.p,
            "hidden": self.hidden,
            "repeat": self.repeat,
            "status": self.status,
            "fit_s": num(self.fit_s),
            "predict_s": num(self.predict_s),
            "total_s": num(self.total_s),
            "cpu_s": num(self.cpu_s),
            "sketch_s": num(self.sketch_s),
            "iterations": num(self.iterations),
            "residual": num(self.residual),
            "converged": self.converged,
            "forward_s": num(self.forward_s),
            "forward_equivalents": forward_equivalents(num(self.fit_s), num(self.forward_s)),
            "rank": str(self.rank),
            "sketch_rank": num(self.sketch_rank),
            "tol": self.tol,
            "dtype": self.dtype,
            "test_points": self.extra.get("test_points"),
            "peak_memory_mib": num(self.peak_gib) * 1024,
            "peak_memory_scope": self.peak_scope,
            "device": self.device,
            "device_name": device_name,
            "seed": seed,
            "note": self.note,
        }


def _forward_time(model: nn.Module, x: Tensor) -> float:
    return forward_seconds(model, x, repeats=3).median


def measure_adapt(
    row: TimingRow,
    *,
    device: torch.device,
    noise_variance: float = 1e-2,
    test_points: int = 1000,
    seed: int = 0,
    max_iter: int = 5000,
    memory_fraction: float = 0.25,
    keep: dict[str, Tensor] | None = None,
) -> TimingRow:
    """Fit with ``adapt`` (method ``row.method``) and predict means and variances.

    Parameters
    ----------
    row : TimingRow
        What to measure: method (one of :data:`METHODS`), n, hidden, rank, tol, dtype.
    device : torch.device
        Where to run.
    noise_variance : float
        σ² (the prior variance of f at the data is 1).
    test_points : int
        Test inputs of ``predict``.
    seed : int
        Network weights from ``seed``, data from ``seed + 1``, the sketch from ``seed``.
    max_iter : int
        CG iteration cap.
    memory_fraction : float
        Fraction of free accelerator memory one batched product may use (chunking).
    keep : dict, optional
        Receives the predicted ``mean`` and ``variance`` (accuracy checks).

    Returns
    -------
    TimingRow
        ``row`` with the measurements filled in; warnings of ``adapt`` go to ``note``.
    """
    if row.method not in _ADAPT_OPTIONS:
        raise ValueError(f"method must be one of {METHODS}, got {row.method!r}")
    dtype = getattr(torch, row.dtype)
    problem = Figure2Problem(row.hidden)
    model, x, y, x_test = problem.instance(
        row.n, test_points, device=device, dtype=dtype, seed=seed
    )
    chunk = problem.product_chunk(
        row.n, _rank_bound(row.rank), device=device, dtype=dtype, fraction=memory_fraction
    )
    lin = Linearization(model)
    # s² from explicit per-sample Jacobians in the engine's default blocks (a chunk of
    # `chunk` Jacobian rows would be 64 GiB at p = 10⁸), then the product chunk
    s2 = Figure2Problem.prior_variance(lin, x)
    t_forward = _forward_time(model, x)
    lin.chunk_size = chunk
    with warnings.catch_warnings(record=True) as caught, PeakMemory(device) as peak:
        warnings.simplefilter("always")
        with stopwatch(device) as fit:
            post = adapt(
                lin, x, y, noise_variance=noise_variance, prior_variance=s2, mean="zero",
                tol=row.tol, max_iter=max_iter, seed=seed, **rank_options(row.rank),
                **_ADAPT_OPTIONS[row.method],
            )
        # Linearization.chunk_size sets both the product chunk (sized above for rank-many
        # vectors) and the block of explicit test Jacobians in predict, which needs no
        # product here (zero prior mean): give predict the engine's default 256 MiB blocks
        # instead of chunk × p Jacobian rows (24 GiB at p = 8M).
        lin.chunk_size = None
        with stopwatch(device) as pred:
            out = post.predict(x_test)
    d = post.diagnostics
    var = out.variance
    if var is None:
        raise RuntimeError("Posterior.predict returned no variance")
    finite = bool(torch.isfinite(var).all() and (var >= 0).all() and torch.isfinite(out.mean).all())
    if keep is not None:
        keep.update(mean=out.mean.detach(), variance=var.detach())

    def opt_int(key: str) -> int | None:
        value = d.get(key)
        return None if value is None else int(value)

    return replace(
        row,
        iterations=opt_int("iterations"),
        residual=None if d.get("residual") is None else float(d["residual"]),
        converged=None if d.get("converged") is None else bool(d["converged"]),
        fit_s=fit.wall,
        predict_s=pred.wall,
        total_s=fit.wall + pred.wall,
        cpu_s=fit.cpu + pred.cpu,
        sketch_s=float(d.get("preconditioner_seconds", math.nan)),
        chunk=chunk,
        sketch_rank=opt_int("preconditioner_rank"),
        solver_rank=d.get("solver_rank"),
        variance_rank=opt_int("variance_rank"),
        variance_error_estimate=d.get("variance_error_estimate"),
        variance_error_bound=d.get("variance_error_bound"),
        exact_variance=None if d.get("exact_variance") is None else bool(d["exact_variance"]),
        peak_gib=peak.gib,
        peak_scope=peak.scope,
        forward_s=t_forward,
        device=str(device),
        status="ok" if finite else "non-finite or negative output",
        note="; ".join(str(w.message)[:120] for w in caught),
        extra={
            "prior_variance": s2, "noise_variance": noise_variance, "test_points": test_points,
            "rank_rounds": d.get("rank_rounds"), "rank_stop": d.get("rank_stop"),
        },
    )


def measure_reference(
    row: TimingRow,
    *,
    device: torch.device,
    noise_variance: float = 1e-2,
    test_points: int = 1000,
    seed: int = 0,
    max_iter: int = 5000,
    prior_variance: float | None = None,
    keep: dict[str, Tensor] | None = None,
) -> TimingRow:
    """Fit and predict with the reference-style pipeline on the same problem as
    :func:`measure_adapt` (``row.rank``: Lanczos steps of its LOVE variances).

    ``prior_variance`` defaults to the problem's s² (computed with the engine's
    ``ntk_diag``, outside the timed blocks, as :func:`measure_adapt` does).
    """
    if not isinstance(row.rank, int):
        raise ValueError(f"the reference's LOVE rank must be an int, got {row.rank!r}")
    model, x, y, x_test = Figure2Problem(row.hidden).instance(
        row.n, test_points, device=device, dtype=getattr(torch, row.dtype), seed=seed
    )
    s2 = prior_variance
    if s2 is None:
        s2 = Figure2Problem.prior_variance(Linearization(model), x)
    t_forward = _forward_time(model, x)
    pipe = ReferencePipeline(
        model, x, y, noise_variance=noise_variance, prior_variance=s2, mean="zero"
    )
    with PeakMemory(device) as peak:
        with stopwatch(device) as fit:
            diag = pipe.fit(tol=row.tol, max_iter=max_iter)
        with stopwatch(device) as pred:
            res = pipe.predict(x_test, rank=row.rank)
    if keep is not None:
        keep.update(mean=res.mean, variance=res.variance)
    finite = bool(torch.isfinite(res.mean).all() and torch.isfinite(res.variance).all())
    return replace(
        row,
        method=REFERENCE_METHOD,
        status="ok" if finite else "non-finite output",
        iterations=int(diag["iterations"]),
        residual=float(diag["residual"]),
        converged=bool(diag["converged"]),
        fit_s=fit.wall,
        predict_s=pred.wall,
        total_s=fit.wall + pred.wall,
        cpu_s=fit.cpu + pred.cpu,
        variance_rank=int(res.diagnostics["variance_rank"]),
        exact_variance=False,
        peak_gib=peak.gib,
        peak_scope=peak.scope,
        forward_s=t_forward,
        device=str(device),
        note=(
            f"{diag['fit_products']} looped kernel columns in CG, "
            f"{res.diagnostics['predict_products']} in prediction + {test_points} per-point "
            "backward passes"
        ),
        extra={"prior_variance": s2, "noise_variance": noise_variance,
               "test_points": test_points},
    )


# --------------------------------------------------------------------------- accuracy
def dense_posterior(
    hidden: int,
    n: int,
    test_points: int,
    *,
    noise_variance: float,
    prior_variance: float,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Exact posterior mean and variance of the problem in float64 on the CPU
    (``adapt(strategy="dense")``; accuracy checks only, not timed)."""
    model, x, y, x_test = Figure2Problem(hidden).instance(
        n, test_points, device="cpu", dtype=torch.float64, seed=seed
    )
    post = adapt(
        model, x, y, noise_variance=noise_variance, prior_variance=prior_variance,
        mean="zero", strategy="dense",
    )
    out = post.predict(x_test)
    assert out.variance is not None
    return out.mean[:, 0], out.variance[:, 0]


def posterior_errors(mean: Tensor, var: Tensor, ref: tuple[Tensor, Tensor]) -> dict[str, float]:
    """Errors against a reference posterior: ``mean_rel_err`` = max |Δmean| / max |mean|,
    ``var_rel_err`` = max pointwise relative variance error, ``var_rel_err_inf`` =
    max |Δvar| / max var."""
    m_ref, v_ref = (t.reshape(-1).cpu().double() for t in ref)
    mean, var = mean.reshape(-1).cpu().double(), var.reshape(-1).cpu().double()
    return {
        "mean_rel_err": float((mean - m_ref).abs().max() / m_ref.abs().max()),
        "var_rel_err": float(((var - v_ref).abs() / v_ref.clamp_min(1e-300)).max()),
        "var_rel_err_inf": float((var - v_ref).abs().max() / v_ref.abs().max()),
    }


def reference_comparison(
    hidden: int,
    n: int,
    *,
    device: torch.device,
    engine_ranks: Sequence[int | str] = ("auto",),
    love_rank: int = LOVE_RANK,
    dtype: str = "float32",
    noise_variance: float = 1e-2,
    tol: float = 1e-3,
    test_points: int = 1000,
    seed: int = 0,
    max_iter: int = 5000,
    memory_fraction: float = 0.25,
    dense_check: bool = True,
) -> list[TimingRow]:
    """Engine vs reference-style pipeline on the same problem, tolerance and process.

    One engine row (``function`` space) per Nyström rank in ``engine_ranks``, then the
    reference-style row (LOVE rank ``love_rank``). Each engine row's ``extra`` holds its
    speed-ups over the reference (``speedup_wall``, ``speedup_cpu``, ``speedup_fit``,
    ``speedup_predict``) and, with ``dense_check`` (when the float64 Jacobian fits in a
    quarter of the memory), every row's errors against the dense float64 posterior
    (:func:`posterior_errors`).
    """
    p = Figure2Problem(hidden).num_params
    base = TimingRow("reference", "function", n, p, hidden, love_rank, tol, dtype)
    engines: list[TimingRow] = []
    kept: list[dict[str, Tensor]] = []
    for rank in engine_ranks:
        kept.append({})
        engines.append(
            measure_adapt(
                replace(base, rank=rank), device=device, noise_variance=noise_variance,
                test_points=test_points, seed=seed, max_iter=max_iter,
                memory_fraction=memory_fraction, keep=kept[-1],
            )
        )
    s2 = float(engines[0].extra["prior_variance"])
    ref_out: dict[str, Tensor] = {}
    ref = measure_reference(
        base, device=device, noise_variance=noise_variance, test_points=test_points,
        seed=seed, max_iter=max_iter, prior_variance=s2, keep=ref_out,
    )
    if dense_check and 3 * n * p * 8 > 0.25 * available_memory(torch.device("cpu")):
        ref.note += "; dense accuracy check skipped: Jacobian too large for memory"
    elif dense_check:  # not timed
        truth = dense_posterior(
            hidden, n, test_points, noise_variance=noise_variance, prior_variance=s2, seed=seed
        )
        for eng, out in zip(engines, kept, strict=True):
            eng.extra.update(posterior_errors(out["mean"], out["variance"], truth))
        ref.extra.update(posterior_errors(ref_out["mean"], ref_out["variance"], truth))
    for eng in engines:
        assert eng.total_s and eng.cpu_s and eng.fit_s and eng.predict_s
        assert ref.total_s and ref.cpu_s and ref.fit_s and ref.predict_s
        eng.extra.update(
            speedup_wall=ref.total_s / eng.total_s,
            speedup_cpu=ref.cpu_s / eng.cpu_s,
            speedup_fit=ref.fit_s / eng.fit_s,
            speedup_predict=ref.predict_s / eng.predict_s,
        )
    return [*engines, ref]


# --------------------------------------------------------------------------- running rows
def estimate_seconds(row: TimingRow, done: Sequence[TimingRow]) -> float | None:
    """Predict a row's time from finished rows of the same method: t ≈ t₀ + k·n·p.

    t₀ is the fastest finished row (fixed overheads), k comes from the largest one, so that
    overhead-dominated small rows do not inflate the estimate for large ones. None when no
    row of the method has finished.
    """
    same = [r for r in done if r.method == row.method and r.total_s is not None]
    if not same:
        return None
    big = max(same, key=lambda r: r.n * r.p)
    t_big = float(big.total_s)  # type: ignore[arg-type]
    t0 = min(float(r.total_s) for r in same)  # type: ignore[arg-type]
    if big.n * big.p == min(r.n * r.p for r in same):
        t0 = 0.0
    k = (t_big - t0) / (big.n * big.p)
    return t0 + k * row.n * row.p


def warm_up(
    device: torch.device, dtype: torch.dtype, methods: Sequence[str] = METHODS
) -> None:
    """One small fit + predict per strategy in ``methods`` (kernel and library initialization,
    which would otherwise land in the first timed row; not timed). ``reference-style`` needs
    none (plain autograd) and is ignored."""
    name = str(dtype).removeprefix("torch.")
    row = TimingRow("warm-up", "function", 256, Figure2Problem(8).num_params, 8, 32, 1e-3, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in (m for m in METHODS if m in methods):
            measure_adapt(
                replace(row, method=method), device=device, noise_variance=1e-2,
                test_points=64, seed=0, memory_fraction=0.1, max_iter=1000,
            )


def run_timing_rows(
    rows: Sequence[TimingRow],
    *,
    device: torch.device,
    noise_variance: float = 1e-2,
    test_points: int = 1000,
    seed: int = 0,
    max_iter: int = 5000,
    memory_fraction: float = 0.25,
    budget: float | None = None,
    done: Sequence[TimingRow] = (),
    warm: bool = True,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    on_row: RowCallback | None = None,
) -> list[TimingRow]:
    """Measure ``rows`` in order; returns the new rows (measured, copied or skipped).

    * A row measured before (same method, n, p, dtype, repeat, rank and tol, here or in
      ``done``) is copied with a note instead of measured again.
    * ``budget`` (seconds, None: no limit): a row whose :func:`estimate_seconds` (from the
      rows of ``done`` and those measured here) would overrun it is skipped, with the
      estimate in ``status``.
    * Rows that cannot fit in memory are skipped (parameter space: ~6 p × rank float64), a
      fixed rank whose float64 covariance block would not fit in half the free memory becomes
      ``"auto"`` (``adapt`` caps it there), and out-of-memory errors become a status.
    * With ``warm``, :func:`warm_up` first runs every (dtype, method) of ``rows`` that no row
      of ``done`` has run.

    ``progress(fraction, message)`` is called before each row (fractions weighted by the
    rows' n·p), ``on_row(record)`` after each with the row's tidy record; exceptions from
    either propagate.
    """
    rows = list(rows)
    say = log if log is not None else (lambda _msg: None)
    name = device_name(device)
    warmed = {(r.dtype, r.method) for r in done}
    need_warm: dict[str, list[str]] = {}  # dtype -> methods not measured before
    for r in rows:
        if warm and (r.dtype, r.method) not in warmed:
            warmed.add((r.dtype, r.method))
            need_warm.setdefault(r.dtype, []).append(r.method)
    cost = [float(r.n * r.p) for r in rows]
    floor = 0.02 * max(cost, default=1.0)
    weights = [floor] * len(need_warm) + [c + floor for c in cost]
    steps = ProgressSteps(progress, weights) if weights else None
    for dt in need_warm:
        assert steps is not None
        steps.start(f"warming up ({dt}, {name})")
        warm_up(device, getattr(torch, dt), tuple(need_warm[dt]))
    history: list[TimingRow] = list(done)
    new: list[TimingRow] = []
    start = time.perf_counter()
    for row in rows:
        assert steps is not None
        row = replace(row, device=str(device))
        label = f"{row.sweep} {row.method} n={row.n:,} p={row.p:,}"
        steps.start(label + (f" (repeat {row.repeat})" if row.repeat else ""))
        result = _run_one(
            row, history, start=start, budget=budget, device=device,
            noise_variance=noise_variance, test_points=test_points, seed=seed,
            max_iter=max_iter, memory_fraction=memory_fraction, say=say,
        )
        history.append(result)
        new.append(result)
        if on_row is not None:
            on_row(result.record(name, seed))
    if steps is not None:
        steps.done(f"done ({name})")
    return new


def _run_one(
    row: TimingRow,
    history: Sequence[TimingRow],
    *,
    start: float,
    budget: float | None,
    device: torch.device,
    noise_variance: float,
    test_points: int,
    seed: int,
    max_iter: int,
    memory_fraction: float,
    say: Callable[[str], None],
) -> TimingRow:
    dup = [r for r in history if r.key == row.key and r.status == "ok"]
    if dup:
        return replace(dup[0], sweep=row.sweep, note=f"same run as the {dup[0].sweep} row")
    if budget is not None:
        est = estimate_seconds(row, history)
        if est is not None and time.perf_counter() - start + est > budget:
            say(f"skip {row.sweep} {row.method} n={row.n} p={row.p} (est {est:.0f} s)")
            return replace(row, status=f"skipped: ~{est:.0f} s would exceed the budget")
    if row.method != REFERENCE_METHOD:
        if isinstance(row.rank, int) and (row.rank + 1) * row.p * 8 > available_memory(device) // 2:
            # adapt refuses a fixed rank whose float64 covariance block [w̄; F] would not fit
            # in half the free memory; rank="auto" is capped there instead
            row = replace(row, rank="auto", note=f"rank {row.rank} factor would not fit: auto")
        if row.method.startswith("parameter"):
            need = parameter_space_bytes(row.p, _rank_bound(row.rank))
            if need > 0.8 * available_memory(device):
                return replace(
                    row, status=f"skipped: weight-space sketch needs ~{need / 2**30:.0f} GiB "
                    "(6 × p × rank float64)",
                )
    say(f"run  {row.sweep} {row.method} n={row.n} p={row.p} rank={row.rank} {row.dtype}")
    measure = measure_reference if row.method == REFERENCE_METHOD else measure_adapt
    options: dict[str, Any] = {} if row.method == REFERENCE_METHOD else {
        "memory_fraction": memory_fraction
    }
    try:
        result = measure(
            row, device=device, noise_variance=noise_variance, test_points=test_points,
            seed=seed, max_iter=max_iter, **options,
        )
    except torch.OutOfMemoryError as err:
        result = replace(row, status="out of memory", note=str(err).splitlines()[0][:160])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    say("     " + summary(result))
    return result


def summary(row: TimingRow) -> str:
    """One line: iterations, residual, convergence and seconds (or the status)."""
    if row.status != "ok":
        return row.status
    return (
        f"{row.iterations} it, residual {row.residual:.1e}, converged {row.converged}, fit "
        f"{row.fit_s:.2f} s, predict {row.predict_s:.2f} s (sketch {row.sketch_s or 0.0:.2f} s)"
    )
