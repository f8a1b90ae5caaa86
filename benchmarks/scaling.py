"""Figure 2 of Maddox et al. (2021): finite-NTK GP inference time vs n and vs p, converged.

The paper (Section 3.2, Figure 2 left/center) times GP inference with a ≈800,000-parameter
five-layer MLP for up to n = 100,000 points, and for n = 1,000 points as the model grows,
in function space (CG on the n × n kernel, Eq. 3) and in parameter space (CG on the p × p
Gauss–Newton/Fisher matrix, Eq. 2). The 2021 code let CG stop at its iteration cap
(relative residual 0.96 at n = 50,000); every row here reports iterations, the *true*
final relative residual and whether the tolerance was reached.

What one row measures (``ntkcore.adapt`` with ``strategy="function"``, or ``"parameter"``
with exact products JᵀJ v — method ``parameter`` — or the paper's finite-difference Fisher
products — method ``parameter-fd``):

* ``fit_s`` — ``adapt``: Nyström sketch (preconditioner and variance basis), preconditioned
  CG to relative residual ``tol``, the cached variance factor;
* ``predict_s`` — ``Posterior.predict`` of latent means *and* variances at 1,000 test points;
* iterations, residual, converged, the sketch time, peak accelerator memory.

Problem: the reference notebook's MLP ``5 → h → 10h → h → 1`` with ELU (h = 200 gives
p = 803,601, the paper's model), inputs x ~ N(0, I₅), targets y = sin(2 aᵀx) + 0.1 ε with a
fixed unit vector a, zero prior mean, prior variance s² = 1 / mean diag J Jᵀ (unit prior
variance of f at the data) and noise variance σ² = 0.01 (noise std 10% of the prior std).
The network is at its random initialization (as in the reference speed notebooks); the
ill-conditioned trained case is ``benchmarks/preconditioning.py``.

Nyström rank: ``--rank`` (and ``--engine-ranks`` for the reference comparison) takes an
int, ``auto`` (``adapt``'s default: blocks of 32, doubling while the smallest Nyström
eigenvalue exceeds 0.1·σ²/s², at most 512) or ``auto:TOL`` (``variance_tol=TOL``; ``auto:1``
stops at the rank CG needs). The CPU presets use ``auto``; the GPU preset keeps the rank 256
its goal was measured with. Rows report the requested ``rank`` and the ``sketch_rank`` used.

``--sweeps reference`` also runs a reference-style pipeline (``benchmarks/reference_style.py``:
per-column Python loops, J v by double backward, unpreconditioned CG, LOVE variances) on the
same problem to the same tolerance in the same process, and reports the speed-up.

Usage::

    taskset -c 0,1 python benchmarks/scaling.py --quick                 # ~1-2 min on 2 cores
    taskset -c 0,1 python benchmarks/scaling.py --sweeps reference      # CPU goal: >= 10x
    taskset -c 0,1 python benchmarks/scaling.py --sweeps reference --engine-ranks auto auto:1
    taskset -c 0,1 python benchmarks/scaling.py --sweeps n p            # CPU Figure 2
    python benchmarks/scaling.py --device cuda --preset gpu             # GPU goal, < 3 min

On a machine shared with other jobs add ``--threads 1``: with two OpenMP threads and a busy
second core, small matrix products wait on descheduled threads and timings become erratic.

The GPU preset first runs the goal — n = 100,000, p = 803,601, float32, relative residual
<= 1e-3, means and variances at 1,000 test points, target <= 30 s — then as much of the n and
p sweeps as fits in ``--budget`` seconds (rows that would not fit are listed as skipped).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_style import ReferencePipeline  # noqa: E402

from ntkcore.linearization import Linearization  # noqa: E402
from ntkcore.memory import available_memory  # noqa: E402
from ntkcore.posterior import adapt  # noqa: E402

IN_FEATURES = 5
GOAL_SECONDS = 30.0
SWEEPS = ("goal", "n", "p", "reference")
#: Strategies timed by the sweeps: ``parameter`` uses exact products JᵀJ v (forward- then
#: reverse-mode), ``parameter-fd`` the paper's finite-difference Fisher-vector products (Eq. 5).
METHODS = ("function", "parameter", "parameter-fd")
_ADAPT_KW = {
    "function": {"strategy": "function"},
    "parameter": {"strategy": "parameter", "fisher": "exact"},
    "parameter-fd": {"strategy": "parameter", "fisher": "fd"},
}


#: Cap of ``rank="auto"`` (``adapt``'s default ``max_rank``); sizes chunks and memory checks.
AUTO_MAX_RANK = 512


# --------------------------------------------------------------------------- configuration
def parse_rank(spec: str) -> int | str:
    """A Nyström rank from the command line: an int, ``auto`` or ``auto:TOL``.

    ``auto`` is ``adapt(rank="auto")`` with its default ``variance_tol`` (0.1);
    ``auto:TOL`` sets ``variance_tol`` (``auto:1`` stops at the rank CG needs).
    """
    if spec == "auto":
        return spec
    if spec.startswith("auto:"):
        try:
            tol = float(spec[5:])
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad variance tolerance in {spec!r}") from None
        if not (math.isfinite(tol) and tol > 0):
            raise argparse.ArgumentTypeError(f"variance tolerance must be positive: {spec!r}")
        return spec
    try:
        rank = int(spec)
    except ValueError:
        msg = f"rank must be an int, auto or auto:TOL: {spec!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if rank < 1:
        raise argparse.ArgumentTypeError(f"rank must be positive: {spec!r}")
    return rank


def rank_options(rank: int | str) -> dict[str, Any]:
    """``adapt`` keyword arguments for a rank spec (see :func:`parse_rank`)."""
    if isinstance(rank, int):
        return {"rank": rank}
    if rank == "auto":
        return {"rank": "auto"}
    return {"rank": "auto", "variance_tol": float(rank.split(":", 1)[1])}


def rank_bound(rank: int | str) -> int:
    """The largest rank a spec can reach (for chunk sizes and memory estimates)."""
    return rank if isinstance(rank, int) else AUTO_MAX_RANK


@dataclass(frozen=True)
class Preset:
    """One benchmark setting (overridable from the command line)."""

    name: str
    n_values: tuple[int, ...]  # n sweep
    n_hidden: int  # h of the n sweep (and the goal)
    p_hidden: tuple[int, ...]  # p sweep at n = p_n
    p_n: int
    rank: int | str  # Nyström rank (preconditioner and variance basis), or "auto[:TOL]"
    sweeps: tuple[str, ...]
    methods: tuple[str, ...] = ("function", "parameter")
    goal_n: int | None = None
    reference_n: int = 2000
    reference_hidden: int = 50
    reference_rank: int = 100  # Lanczos steps of LOVE (GPyTorch's max_root_decomposition_size)
    budget: float = 280.0
    memory_fraction: float = 0.25  # of free memory for one batched product (chunking)


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "cpu",
        n_values=(1000, 2000, 5000, 10000),
        n_hidden=50,
        p_hidden=(16, 32, 64, 128),
        p_n=1000,
        rank="auto",
        sweeps=("n", "p"),
        reference_n=2000,
        reference_hidden=50,
    ),
    "quick": Preset(
        "quick",
        n_values=(500, 1000, 2000),
        n_hidden=32,
        p_hidden=(16, 32, 64),
        p_n=1000,
        rank="auto",
        sweeps=("n", "p"),
        reference_n=1000,
        reference_hidden=32,
        budget=150.0,
    ),
    "gpu": Preset(
        "gpu",
        n_values=(1000, 10000, 25000, 50000, 100000),
        n_hidden=200,
        p_hidden=(20, 63, 200, 632, 2236),  # p up to 1.0e8
        p_n=1000,
        rank=256,
        sweeps=("goal", "n", "p"),
        methods=("function", "parameter", "parameter-fd"),
        goal_n=100_000,
        reference_n=5000,
        reference_hidden=200,
        budget=110.0,
    ),
}


def widths(hidden: int) -> tuple[int, int, int]:
    """Hidden widths (h, 10h, h) of the reference notebook's five-layer MLP."""
    return (hidden, 10 * hidden, hidden)


def num_params(hidden: int, in_features: int = IN_FEATURES) -> int:
    """p of :func:`make_mlp` (h = 200 gives 803,601)."""
    dims = (in_features, *widths(hidden), 1)
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))


def make_mlp(hidden: int, *, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """``in → h → 10h → h → 1`` with ELU (the 2021 speed notebook's model, p = 803,601 at 200)."""
    torch.manual_seed(seed)
    dims = (IN_FEATURES, *widths(hidden))
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ELU()]
    layers.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*layers).to(device=device, dtype=dtype).eval()


def make_data(
    n: int, m: int, *, device: torch.device, dtype: torch.dtype, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """x ~ N(0, I₅), y = sin(2 aᵀx) + 0.1 ε (n points) and m test inputs."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(IN_FEATURES, generator=gen)
    a = a / a.norm()
    x = torch.randn(n, IN_FEATURES, generator=gen)
    y = torch.sin(2 * x @ a) + 0.1 * torch.randn(n, generator=gen)
    x_test = torch.randn(m, IN_FEATURES, generator=gen)
    return (
        x.to(device=device, dtype=dtype),
        y.to(device=device, dtype=dtype),
        x_test.to(device=device, dtype=dtype),
    )


def product_chunk(
    n: int, hidden: int, rank: int, *, device: torch.device, dtype: torch.dtype, fraction: float
) -> int | None:
    """Data points per chunk so that a product with ``rank`` vectors fits the memory budget.

    A batched product keeps about four (k, chunk, width) activation tensors alive; ``None``
    (no chunking) when all n points fit. Note that ``Linearization.chunk_size`` also sets the
    block size of explicit test Jacobians in ``predict``.
    """
    if device.type == "cpu":
        # The engine sizes CPU product chunks from its own byte budget
        # (Linearization.product_chunk_size) and keeps one cached forward pass per chunk
        # (lin.at(x)); a chunk here would only multiply those passes.
        return None
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_point = rank * max(widths(hidden)) * itemsize * 4
    budget = fraction * available_memory(device) if device.type == "cuda" else min(
        2 * 2**30, fraction * available_memory(device)
    )
    chunk = int(budget // per_point)
    return None if chunk >= n else max(64, chunk)


# --------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Clock:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def clock(device: torch.device) -> Iterator[Clock]:
    """Wall and process-CPU seconds of the block (CUDA-synchronized)."""
    c = Clock()
    synchronize(device)
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield c
    finally:
        synchronize(device)
        c.wall = time.perf_counter() - w0
        c.cpu = time.process_time() - c0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


# --------------------------------------------------------------------------- one run
@dataclass
class Row:
    """One measured (or skipped) configuration."""

    sweep: str
    method: str
    n: int
    p: int
    hidden: int
    rank: int | str  # requested: an int, "auto" or "auto:TOL"
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
    extra: dict[str, Any] = field(default_factory=dict)


def prior_variance(lin: Linearization, x: Tensor, points: int = 256) -> float:
    """s² = 1 / mean diag J Jᵀ over the first ``points`` inputs (unit prior variance of f)."""
    d = lin.ntk_diag(x[:points]).double().mean()
    return float(1.0 / d)


def run_engine(
    row: Row,
    *,
    device: torch.device,
    noise: float,
    m_test: int,
    seed: int,
    fraction: float,
    max_iter: int,
    keep: dict[str, Tensor] | None = None,
) -> Row:
    """Fit with ``adapt`` and predict means and variances at ``m_test`` points.

    With ``keep`` given, the predicted ``mean`` and ``variance`` are stored in it.
    """
    dtype = getattr(torch, row.dtype)
    model = make_mlp(row.hidden, device=device, dtype=dtype, seed=seed)
    x, y, x_test = make_data(row.n, m_test, device=device, dtype=dtype, seed=seed + 1)
    chunk = product_chunk(
        row.n, row.hidden, rank_bound(row.rank), device=device, dtype=dtype, fraction=fraction
    )
    lin = Linearization(model)
    # s² from explicit per-sample Jacobians in the engine's default blocks (a chunk of
    # `chunk` Jacobian rows would be 64 GiB at p = 10⁸), then the product chunk
    s2 = prior_variance(lin, x)
    lin.chunk_size = chunk
    reset_peak(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with clock(device) as fit:
            post = adapt(
                lin, x, y, noise_variance=noise, prior_variance=s2, mean="zero",
                tol=row.tol, max_iter=max_iter, seed=seed, **rank_options(row.rank),
                **_ADAPT_KW[row.method],
            )
        # Workaround: Linearization.chunk_size sets both the product chunk (sized above for
        # rank-many vectors) and the block of explicit test Jacobians in predict, which
        # needs no product here (zero prior mean); give predict the engine's default
        # 256 MiB blocks instead of chunk × p Jacobian rows (24 GiB at p = 8M).
        lin.chunk_size = None
        with clock(device) as pred:
            out = post.predict(x_test)
    d = post.diagnostics
    var = out.variance
    assert var is not None
    ok_var = bool(torch.isfinite(var).all() and (var >= 0).all())
    ok_mean = bool(torch.isfinite(out.mean).all())
    if keep is not None:
        keep.update(mean=out.mean.detach(), variance=var.detach())
    return replace(
        row,
        iterations=int(d["iterations"]),
        residual=float(d["residual"]),
        converged=bool(d["converged"]),
        fit_s=fit.wall,
        predict_s=pred.wall,
        total_s=fit.wall + pred.wall,
        cpu_s=fit.cpu + pred.cpu,
        sketch_s=float(d.get("preconditioner_seconds", float("nan"))),
        chunk=chunk,
        sketch_rank=int(d["preconditioner_rank"]),
        solver_rank=d.get("solver_rank"),
        variance_rank=int(d["variance_rank"]),
        variance_error_estimate=d.get("variance_error_estimate"),
        variance_error_bound=d.get("variance_error_bound"),
        exact_variance=bool(d["exact_variance"]),
        peak_gib=peak_gib(device),
        status="ok" if (ok_var and ok_mean) else "non-finite or negative output",
        note="; ".join(str(w.message)[:120] for w in caught),
        extra={
            "prior_variance": s2, "noise_variance": noise, "test_points": m_test,
            "rank_rounds": d.get("rank_rounds"), "rank_stop": d.get("rank_stop"),
        },
    )


def dense_reference(
    hidden: int, n: int, m_test: int, *, noise: float, s2: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Exact posterior mean and variance in float64 on the CPU (accuracy check only)."""
    cpu = torch.device("cpu")
    model = make_mlp(hidden, device=cpu, dtype=torch.float64, seed=seed)
    x, y, x_test = make_data(n, m_test, device=cpu, dtype=torch.float64, seed=seed + 1)
    post = adapt(
        model, x, y, noise_variance=noise, prior_variance=s2, mean="zero", strategy="dense"
    )
    out = post.predict(x_test)
    assert out.variance is not None
    return out.mean[:, 0], out.variance[:, 0]


def _errors(mean: Tensor, var: Tensor, ref: tuple[Tensor, Tensor]) -> dict[str, float]:
    m_ref, v_ref = ref
    mean, var = mean.reshape(-1).cpu().double(), var.reshape(-1).cpu().double()
    return {
        "mean_rel_err": float((mean - m_ref).abs().max() / m_ref.abs().max()),
        "var_rel_err": float(((var - v_ref).abs() / v_ref.clamp_min(1e-300)).max()),
        "var_rel_err_inf": float((var - v_ref).abs().max() / v_ref.abs().max()),
    }


def run_reference_comparison(
    preset: Preset,
    *,
    device: torch.device,
    dtype: str,
    noise: float,
    tol: float,
    m_test: int,
    seed: int,
    max_iter: int,
    dense_check: bool,
    engine_ranks: Sequence[int | str],
) -> list[Row]:
    """Engine vs reference-style pipeline on the same problem, same tolerance, same process.

    One engine row per Nyström rank in ``engine_ranks``, then the reference-style row; each
    engine row's ``extra`` holds its speed-ups over the reference (wall, CPU, fit, predict).
    """
    n, hidden, love_rank = preset.reference_n, preset.reference_hidden, preset.reference_rank
    p = num_params(hidden)
    base = Row("reference", "function", n, p, hidden, love_rank, tol, dtype)
    engines: list[Row] = []
    kept: list[dict[str, Tensor]] = []
    for rank in engine_ranks:
        kept.append({})
        engines.append(
            run_engine(
                replace(base, rank=rank), device=device, noise=noise, m_test=m_test,
                seed=seed, fraction=preset.memory_fraction, max_iter=max_iter, keep=kept[-1],
            )
        )
    s2 = float(engines[0].extra["prior_variance"])

    tdtype = getattr(torch, dtype)
    model = make_mlp(hidden, device=device, dtype=tdtype, seed=seed)
    x, y, x_test = make_data(n, m_test, device=device, dtype=tdtype, seed=seed + 1)
    pipe = ReferencePipeline(model, x, y, noise_variance=noise, prior_variance=s2, mean="zero")
    with clock(device) as fit:
        diag = pipe.fit(tol=tol, max_iter=max_iter)
    with clock(device) as pred:
        res = pipe.predict(x_test, rank=love_rank)
    ref = replace(
        base,
        method="reference-style",
        iterations=int(diag["iterations"]),
        residual=float(diag["residual"]),
        converged=bool(diag["converged"]),
        fit_s=fit.wall,
        predict_s=pred.wall,
        total_s=fit.wall + pred.wall,
        cpu_s=fit.cpu + pred.cpu,
        variance_rank=int(res.diagnostics["variance_rank"]),
        exact_variance=False,
        note=(
            f"{diag['fit_products']} looped kernel columns in CG, "
            f"{res.diagnostics['predict_products']} in prediction + {m_test} per-point "
            "backward passes"
        ),
    )
    if dense_check and 3 * n * p * 8 > 0.25 * available_memory(torch.device("cpu")):
        ref.note += "; dense accuracy check skipped: Jacobian too large for memory"
    elif dense_check:  # not timed
        truth = dense_reference(hidden, n, m_test, noise=noise, s2=s2, seed=seed)
        for eng, out in zip(engines, kept, strict=True):
            eng.extra.update(_errors(out["mean"], out["variance"], truth))
        ref.extra.update(_errors(res.mean, res.variance, truth))
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


# --------------------------------------------------------------------------- planning
def plan(preset: Preset, sweeps: Sequence[str], tol: float, dtype: str) -> list[Row]:
    """Rows to measure, in execution order (goal first, then ascending n·p)."""
    rows: list[Row] = []
    if "goal" in sweeps and preset.goal_n is not None:
        n, h = preset.goal_n, preset.n_hidden
        rows.append(Row("goal", "function", n, num_params(h), h, preset.rank, tol, dtype))
    if "n" in sweeps:
        h = preset.n_hidden
        for n in sorted(preset.n_values):
            for method in preset.methods:
                rows.append(Row("n", method, n, num_params(h), h, preset.rank, tol, dtype))
    if "p" in sweeps:
        for h in sorted(preset.p_hidden):
            for method in preset.methods:
                rows.append(
                    Row("p", method, preset.p_n, num_params(h), h, preset.rank, tol, dtype)
                )
    # Goal first, then cheapest first so that --budget drops the most expensive rows.
    return sorted(rows, key=lambda r: (r.sweep != "goal", r.n * r.p, r.method))


def parameter_space_bytes(p: int, rank: int) -> int:
    """Rough peak of the weight-space Nyström sketch: ~6 float64 (p × rank) matrices."""
    return 6 * p * rank * 8


def estimate_seconds(row: Row, done: Sequence[Row]) -> float | None:
    """Predict a row's time from finished rows of the same method: t ≈ t₀ + k·n·p.

    t₀ is the fastest finished row (fixed overheads), k comes from the largest one, so that
    overhead-dominated small rows do not inflate the estimate for large ones.
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


def run_rows(
    rows: list[Row],
    *,
    device: torch.device,
    noise: float,
    m_test: int,
    seed: int,
    fraction: float,
    max_iter: int,
    budget: float,
    goal_float64: str,
    log: Callable[[str], None],
) -> list[Row]:
    """Run ``rows`` in order within ``budget`` seconds (the goal rows always run).

    ``goal_float64``: ``"auto"`` adds a float64 goal row when the float32 goal did not reach
    its tolerance (float32 products limit the attainable residual), ``"always"`` or
    ``"never"``.
    """
    done: list[Row] = []
    start = time.perf_counter()
    queue = list(rows)
    while queue:
        row = queue.pop(0)
        # The goal row also stands for the n sweep's row of the same size.
        key = (row.method, row.n, row.p, row.dtype)
        dup = [r for r in done if (r.method, r.n, r.p, r.dtype) == key]
        if dup:
            note = f"same run as the {dup[0].sweep} row"
            done.append(replace(dup[0], sweep=row.sweep, note=note))
            continue
        elapsed = time.perf_counter() - start
        est = estimate_seconds(row, done)
        if row.sweep != "goal" and est is not None and elapsed + est > budget:
            done.append(replace(row, status=f"skipped: ~{est:.0f} s would exceed --budget"))
            log(f"skip {row.sweep} {row.method} n={row.n} p={row.p} (est {est:.0f} s)")
            continue
        if isinstance(row.rank, int) and (row.rank + 1) * row.p * 8 > available_memory(device) // 2:
            # adapt refuses a fixed rank whose float64 covariance block [w̄; F] would not fit
            # in half the free memory; rank="auto" is capped there instead
            row = replace(row, rank="auto", note=f"rank {row.rank} factor would not fit: auto")
        if row.method.startswith("parameter"):
            need = parameter_space_bytes(row.p, rank_bound(row.rank))
            if need > 0.8 * available_memory(device):
                done.append(
                    replace(row, status=f"skipped: weight-space sketch needs ~{need / 2**30:.0f} "
                            "GiB (6 × p × rank float64)")
                )
                continue
        log(f"run  {row.sweep} {row.method} n={row.n} p={row.p} rank={row.rank} {row.dtype}")
        try:
            if row.dtype != "float32" and not any(r.dtype == row.dtype for r in done):
                warm_up(device, getattr(torch, row.dtype))
            res = run_engine(
                row, device=device, noise=noise, m_test=m_test, seed=seed,
                fraction=fraction, max_iter=max_iter,
            )
        except torch.OutOfMemoryError as err:
            res = replace(row, status="out of memory", note=str(err).splitlines()[0][:160])
            if device.type == "cuda":
                torch.cuda.empty_cache()
        done.append(res)
        log("     " + summary(res))
        if row.sweep == "goal" and row.dtype == "float32" and (
            goal_float64 == "always" or (goal_float64 == "auto" and not res.converged)
        ):
            queue.insert(0, replace(row, dtype="float64"))
    return done


# --------------------------------------------------------------------------- output
COLUMNS = (
    "sweep", "method", "dtype", "n", "p", "rank", "sketch_rank", "iterations", "residual",
    "converged", "fit_s",
    "predict_s", "total_s", "cpu_s", "sketch_s", "chunk", "peak_gib", "status",
)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.1e}" if (abs(v) < 1e-2 and v != 0) else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def summary(r: Row) -> str:
    if r.status != "ok":
        return r.status
    return (
        f"{r.iterations} it, residual {r.residual:.1e}, converged {r.converged}, fit "
        f"{r.fit_s:.2f} s, predict {r.predict_s:.2f} s (sketch {r.sketch_s:.2f} s)"
    )


def markdown(rows: Sequence[Row], columns: Sequence[str] = COLUMNS) -> str:
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(getattr(r, c)) for c in columns) + " |")
    return "\n".join(lines)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": os.getloadavg(),
        "device": str(device),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """One small fit + predict per strategy (kernel/library initialization, not timed)."""
    name = str(dtype).removeprefix("torch.")
    row = Row("warm-up", "function", 256, num_params(8), 8, 32, 1e-3, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in METHODS:
            run_engine(
                replace(row, method=method), device=device, noise=1e-2, m_test=64, seed=0,
                fraction=0.1, max_iter=1000,
            )


def goal_verdict(rows: Sequence[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.sweep != "goal":
            continue
        if r.status != "ok":
            out.append(f"GOAL {r.dtype} n={r.n:,} p={r.p:,}: not measured ({r.status})")
            continue
        assert r.residual is not None and r.total_s is not None
        ok = bool(r.converged) and r.residual <= r.tol and r.total_s <= GOAL_SECONDS
        m = r.extra.get("test_points", 0)
        out.append(
            f"GOAL {r.dtype} n={r.n:,} p={r.p:,}: {'PASS' if ok else 'FAIL'} — fit "
            f"{r.fit_s:.1f} s + predict ({m:,} means and variances) {r.predict_s:.1f} s = "
            f"{r.total_s:.1f} s "
            f"(target <= {GOAL_SECONDS:.0f} s), residual {r.residual:.1e} (tol {r.tol:.0e}), "
            f"{r.iterations} CG iterations, peak memory {_fmt(r.peak_gib)} GiB"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="cpu (default on CPU), gpu (default on CUDA); --quick selects 'quick'")
    ap.add_argument("--quick", action="store_true", help="small CPU sweep (~2 min on 2 cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=None)
    ap.add_argument("--n", type=int, nargs="+", default=None, help="override the n sweep")
    ap.add_argument("--hidden", type=int, default=None, help="override h of the n sweep")
    ap.add_argument("--p-hidden", type=int, nargs="+", default=None,
                    help="override the h values of the p sweep")
    ap.add_argument("--rank", type=parse_rank, default=None,
                    help="Nyström rank: an int, auto (adapt's default) or auto:TOL "
                    "(variance_tol=TOL; auto:1 stops at the rank CG needs)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                    help="strategies of the n and p sweeps")
    ap.add_argument("--goal-n", type=int, default=None, help="override n of the goal row")
    ap.add_argument("--reference-n", type=int, default=None)
    ap.add_argument("--engine-ranks", type=parse_rank, nargs="+", default=None,
                    help="Nyström ranks of the engine rows of the reference comparison "
                    "(default: --rank)")
    ap.add_argument("--reference-rank", type=int, default=None,
                    help="Lanczos steps of the reference's LOVE variances (default 100, "
                    "GPyTorch's max_root_decomposition_size)")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--noise", type=float, default=1e-2,
                    help="noise variance relative to the unit prior variance of f")
    ap.add_argument("--test", type=int, default=1000, help="test points for mean+variance")
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--budget", type=float, default=None, help="seconds for the sweeps")
    ap.add_argument("--goal-float64", choices=("auto", "always", "never"), default="auto",
                    help="also run the goal in float64 (auto: if float32 did not converge)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dense-check", action="store_true",
                    help="skip the float64 dense accuracy check of the reference comparison")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    name = args.preset or ("quick" if args.quick else "gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[name]
    if args.n:
        preset = replace(preset, n_values=tuple(args.n))
    if args.hidden:
        preset = replace(preset, n_hidden=args.hidden, reference_hidden=args.hidden)
    if args.p_hidden:
        preset = replace(preset, p_hidden=tuple(args.p_hidden))
    if args.rank:
        preset = replace(preset, rank=args.rank)
    if args.methods:
        preset = replace(preset, methods=tuple(args.methods))
    if args.reference_n:
        preset = replace(preset, reference_n=args.reference_n)
    if args.goal_n:
        preset = replace(preset, goal_n=args.goal_n)
    if args.reference_rank:
        preset = replace(preset, reference_rank=args.reference_rank)
    sweeps = tuple(args.sweeps or preset.sweeps)
    budget = args.budget if args.budget is not None else preset.budget

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    meta = machine(device)
    meta.update(preset=name, dtype=args.dtype, tol=args.tol, noise_variance=args.noise,
                test_points=args.test, rank=preset.rank)
    log(f"# {meta}")
    warm_up(device, dtype)

    rows: list[Row] = []
    rows += run_rows(
        plan(preset, sweeps, args.tol, args.dtype), device=device, noise=args.noise,
        m_test=args.test, seed=args.seed, fraction=preset.memory_fraction,
        max_iter=args.max_iter, budget=budget, goal_float64=args.goal_float64, log=log,
    )
    if "reference" in sweeps:
        log(f"run  reference comparison n={preset.reference_n} h={preset.reference_hidden}")
        rows += run_reference_comparison(
            preset, device=device, dtype=args.dtype, noise=args.noise, tol=args.tol,
            m_test=args.test, seed=args.seed, max_iter=args.max_iter,
            dense_check=not args.no_dense_check, engine_ranks=args.engine_ranks or [preset.rank],
        )
    meta["loadavg_end"] = os.getloadavg()

    print(f"\nMachine: {meta.get('gpu') or meta.get('cpu')}, torch {meta['torch']}, "
          f"{meta['threads']} threads, {meta['date']}; load average {meta['loadavg_start']} → "
          f"{meta['loadavg_end']}\nCommand: {meta['command']}\n")
    for sweep in ("goal", "n", "p", "reference"):
        part = [r for r in rows if r.sweep == sweep]
        if part:
            print(f"### {sweep}\n\n{markdown(part)}\n")
    ref = [r for r in rows if r.sweep == "reference"]
    if ref:
        base = ref[-1]
        for eng in ref[:-1]:
            e = eng.extra
            line = (
                f"Reference comparison (n={eng.n:,}, p={eng.p:,}, tol {eng.tol:.0e}), engine "
                f"rank {eng.rank} (chose {eng.sketch_rank}; variance error estimate "
                f"{_fmt(eng.variance_error_estimate)}, bound {_fmt(eng.variance_error_bound)}) "
                f"vs LOVE rank {base.rank}: speed-up "
                f"{e['speedup_wall']:.1f}× "
                f"wall ({e['speedup_cpu']:.1f}× CPU time); fit {e['speedup_fit']:.1f}×, "
                f"predict {e['speedup_predict']:.1f}×."
            )
            if "mean_rel_err" in e:
                line += (
                    f" Accuracy vs dense float64 (mean: max |Δ|/max|mean|; variance: max "
                    f"pointwise relative, max |Δ|/max var): engine {e['mean_rel_err']:.1e}; "
                    f"{e['var_rel_err']:.1e}, {e['var_rel_err_inf']:.1e}"
                )
            print(line)
        if "mean_rel_err" in base.extra:
            b = base.extra
            print(
                f"Reference-style accuracy: {b['mean_rel_err']:.1e}; {b['var_rel_err']:.1e}, "
                f"{b['var_rel_err_inf']:.1e}."
            )
    for line in goal_verdict(rows):
        print(line)

    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            w = csv.writer(fh)
            keys = [k for k in Row.__dataclass_fields__ if k != "extra"]
            w.writerow([*keys, "extra"])
            for r in rows:
                w.writerow([*(getattr(r, k) for k in keys), json.dumps(r.extra)])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "rows": [r.__dict__ for r in rows]}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
