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

``--sweeps reference`` also runs a reference-style pipeline (``ntkcore.experiments.reference``:
per-column Python loops, J v by double backward, unpreconditioned CG, LOVE variances) on the
same problem to the same tolerance in the same process, and reports the speed-up.

The problem, the measurement of one row, the budget and memory checks and the reference
comparison live in ``ntkcore.experiments.figure2`` (shared with the app's Timing page and
``python -m ntkcore.experiments timing-n`` / ``timing-p``); this script keeps the presets,
the command line and the reports.

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
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ntkcore.experiments.figure2 import (
    METHODS,
    Figure2Problem,
    TimingRow,
    rank_options,
    rank_spec,
    reference_comparison,
    run_timing_rows,
)
from ntkcore.experiments.machine import describe_machine, write_json

GOAL_SECONDS = 30.0
SWEEPS = ("goal", "n", "p", "reference")
#: One measured (or skipped) configuration; the CSV columns are its fields.
Row = TimingRow

__all__ = ["PRESETS", "Preset", "main", "parse_rank", "rank_options"]


# --------------------------------------------------------------------------- configuration
def parse_rank(spec: str) -> int | str:
    """A Nyström rank from the command line: an int, ``auto`` or ``auto:TOL``
    (:func:`ntkcore.experiments.figure2.rank_spec`)."""
    try:
        return rank_spec(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


# --------------------------------------------------------------------------- planning
def num_params(hidden: int) -> int:
    """p of the Figure 2 MLP 5 → h → 10h → h → 1 (h = 200 gives 803,601)."""
    return Figure2Problem(hidden).num_params


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
    ``"never"``. Measuring, skipping and budgeting: ``ntkcore.experiments.figure2.
    run_timing_rows``.
    """
    options: dict[str, Any] = dict(
        device=device, noise_variance=noise, test_points=m_test, seed=seed,
        max_iter=max_iter, memory_fraction=fraction, log=log,
    )
    start = time.perf_counter()
    done: list[Row] = []
    for row in (r for r in rows if r.sweep == "goal"):
        (res,) = run_timing_rows([row], done=done, **options)
        done.append(res)
        if row.dtype == "float32" and (
            goal_float64 == "always" or (goal_float64 == "auto" and not res.converged)
        ):
            done += run_timing_rows([replace(row, dtype="float64")], done=done, **options)
    left = budget - (time.perf_counter() - start)
    rest = [r for r in rows if r.sweep != "goal"]
    done += run_timing_rows(rest, done=done, budget=max(left, 1e-9), **options)
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


def markdown(rows: Sequence[Row], columns: Sequence[str] = COLUMNS) -> str:
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(getattr(r, c)) for c in columns) + " |")
    return "\n".join(lines)


def machine(device: torch.device) -> dict[str, Any]:
    """The machine description (``ntkcore.experiments.machine``), load average at the start."""
    info = describe_machine(device)
    info["loadavg_start"] = info.pop("loadavg")
    return info


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

    rows: list[Row] = []
    rows += run_rows(
        plan(preset, sweeps, args.tol, args.dtype), device=device, noise=args.noise,
        m_test=args.test, seed=args.seed, fraction=preset.memory_fraction,
        max_iter=args.max_iter, budget=budget, goal_float64=args.goal_float64, log=log,
    )
    if "reference" in sweeps:
        log(f"run  reference comparison n={preset.reference_n} h={preset.reference_hidden}")
        rows += reference_comparison(
            preset.reference_hidden, preset.reference_n, device=device,
            engine_ranks=args.engine_ranks or [preset.rank], love_rank=preset.reference_rank,
            dtype=args.dtype, noise_variance=args.noise, tol=args.tol, test_points=args.test,
            seed=args.seed, max_iter=args.max_iter, memory_fraction=preset.memory_fraction,
            dense_check=not args.no_dense_check,
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
        write_json(args.json, [r.__dict__ for r in rows], meta=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
