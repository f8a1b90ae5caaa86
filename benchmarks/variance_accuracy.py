"""Predictive-variance accuracy and mixed-precision solves against the dense answer (issue 11).

Two sweeps, each against an independent float64 dense reference computed here from the
explicit Jacobian rows (``Linearization.jacobian_blocks``, itself tested against
``torch.func.jacrev``): with K = JJᵀ when n·o <= p, else G = JᵀJ accumulated over row
blocks, a Cholesky factorization and

    mean = f(x*) + J* Jᵀ (JJᵀ + cI)⁻¹ r = f(x*) + J* (JᵀJ + cI)⁻¹ Jᵀ r,
    var  = s² (‖j*‖² − ‖L⁻¹ J j*‖²)      or      σ² ‖L⁻¹ j*‖².

``--sweep variance``: ``adapt(strategy="function" | "parameter")`` with default settings
(``rank="auto"``, ``variance="accurate"``) for each n; then ``predict`` of means and
variances at ``--test`` points with ``variance="fast"`` (the cached low-rank factor) and
``"accurate"`` (block CG brackets, :mod:`ntkcore.variance`): the largest pointwise relative
variance error against the reference, the error bound the engine reports, the products
and block steps, and the seconds per 1,000 test points (wall and process CPU).

``--sweep float32``: the same network in float32 with ``refinement="none"`` (float32 CG
only, the engine before issue 11) and ``"auto"`` (float64 residuals when needed): CG
iterations, refinement rounds, the residual and its dtype, the mean's largest error
relative to max |mean| against the float64 dense posterior of the *same* (float32)
weights, fit seconds (median of ``--repeats``, after an untimed warm-up fit).

Problems (``--problems``): ``random`` — the issue's tanh MLP 8 → 128 → 128 → 1 at its
random initialization (p = 17,793; slowly decaying NTK spectrum), x ~ N(0, I₈),
y = sin(Σx) + 0.03 ε; ``trained`` — the trained sinusoid MLP of
``benchmarks/preconditioning.py`` (p = 18,526; fast-decaying spectrum), target sinusoid.
σ² = 1e-3, s² = 1, network prior mean.

Usage (the machine is shared: pin and report the load)::

    taskset -c 0,1 python benchmarks/variance_accuracy.py --sweep variance --n 2000 10000 \\
        --threads 1 --json benchmarks/results/variance-cpu-t1.json
    taskset -c 0,1 python benchmarks/variance_accuracy.py --sweep variance --n 50000 \\
        --test 200 --problems random --threads 1 \\
        --json benchmarks/results/variance-cpu-n50000-t1.json
    taskset -c 0,1 python benchmarks/variance_accuracy.py --sweep float32 --n 2000 \\
        --threads 2 --json benchmarks/results/float32-refinement-cpu-t2.json

Every JSON records the git commit of the engine it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore.linearization import Linearization
from ntkcore.posterior import Posterior, adapt

F64 = torch.float64
REFINE = ("none", "auto")
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- problems
def random_mlp(dtype: torch.dtype = F64, seed: int = 0) -> nn.Module:
    """The issue's tanh MLP 8 → 128 → 128 → 1 (p = 17,793) at its initialization."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1)
    ).to(dtype)


def random_data(n: int, m: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=F64)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.03 * torch.randn(n, 1, generator=g, dtype=F64)
    x_test = torch.randn(m, 8, generator=g, dtype=F64)
    return x, y, x_test


def problem(name: str, n: int, m: int, cache_dir: str | None) -> dict[str, Any]:
    if name == "random":
        x, y, xs = random_data(n, m)
        return {"model": random_mlp(), "x": x, "y": y, "x_test": xs,
                "description": "tanh MLP 8-128-128-1 at initialization"}
    if name == "trained":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from preconditioning import SOURCE_KW, trained_source_model

        from ntkcore import data

        task = data.load("sinusoids", seed=1, n_target=n, n_test=m, **SOURCE_KW)
        model, info = trained_source_model(
            task, width=95, depth=3, epochs=1000, seed=0, cache_dir=cache_dir
        )
        x, y = (t.to(F64) for t in task.target)
        description = f"tanh MLP 3×95 trained on a sinusoid (MSE {info['final_loss']:.1e})"
        return {"model": model.to(F64).eval(), "x": x, "y": y, "x_test": task.test[0].to(F64),
                "description": description}
    raise ValueError(f"unknown problem {name!r}")


# --------------------------------------------------------------------------- reference
def dense_reference(
    model: nn.Module, x: Tensor, y: Tensor, x_test: Tensor, *, noise: float, prior: float
) -> dict[str, Any]:
    """The float64 GP posterior from explicit Jacobian rows and a Cholesky factor."""
    t0 = time.perf_counter()
    lin = Linearization(model.to(F64))
    c = noise / prior
    x, y, x_test = x.to(F64), y.to(F64), x_test.to(F64)
    r = (y - lin(x)).reshape(-1)
    jac_star = torch.cat([b.reshape(-1, lin.num_params) for _, b in lin.jacobian_blocks(x_test)])
    n_obs, p = r.numel(), lin.num_params
    if n_obs <= p:  # K = JJᵀ + cI, N × N
        jac = torch.cat([b.reshape(-1, p) for _, b in lin.jacobian_blocks(x)])
        gram = jac @ jac.mT
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        del gram
        cross = jac @ jac_star.mT  # J J*ᵀ, N × M
        alpha = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
        latent = jac_star @ (jac.mT @ alpha)
        var = prior * (
            jac_star.square().sum(-1)
            - torch.linalg.solve_triangular(chol, cross, upper=False).square().sum(0)
        )
        space = "function"
    else:  # G = JᵀJ + cI, p × p, accumulated over row blocks
        gram = torch.zeros(p, p, dtype=F64)
        rhs = torch.zeros(p, dtype=F64)
        start = 0
        for _, block in lin.jacobian_blocks(x):
            rows = block.reshape(-1, p)
            gram.addmm_(rows.mT, rows)
            rhs += rows.mT @ r[start : start + rows.shape[0]]
            start += rows.shape[0]
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        del gram
        latent = jac_star @ torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        var = noise * torch.linalg.solve_triangular(chol, jac_star.mT, upper=False).square().sum(0)
        space = "parameter"
    mean = lin(x_test).reshape(-1) + latent
    return {"mean": mean, "variance": var, "space": space,
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- measuring
def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def max_rel(actual: Tensor, expected: Tensor) -> float:
    return float(((actual.reshape(-1).to(F64) - expected) / expected).abs().max())


def mean_err(actual: Tensor, expected: Tensor) -> float:
    return float((actual.reshape(-1).to(F64) - expected).abs().max() / expected.abs().max())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fit_record(post: Posterior, wall: float, cpu: float) -> dict[str, Any]:
    d = post.diagnostics
    keys = ("strategy", "iterations", "refinements", "residual", "residual_dtype",
            "float64_residual", "converged", "variance_rank", "variance_error_bound",
            "variance_error_estimate", "exact_variance", "rank_stop", "condition_estimate",
            "refinement_reason")
    return {**{k: d.get(k) for k in keys}, "fit_seconds": wall, "fit_cpu_seconds": cpu}


def variance_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.problems:
        for n in args.n:
            pb = problem(name, n, args.test, args.cache_dir)
            log(f"[{name} n={n}] dense reference ...")
            ref = dense_reference(pb["model"], pb["x"], pb["y"], pb["x_test"],
                                  noise=args.noise, prior=args.prior)
            log(f"  reference in {ref['seconds']:.1f} s ({ref['space']} space)")
            for strategy in args.strategies:
                post, wall, cpu = timed(partial(
                    adapt, pb["model"], pb["x"], pb["y"], noise_variance=args.noise,
                    prior_variance=args.prior, strategy=strategy,
                ))
                row: dict[str, Any] = {
                    "problem": name, "description": pb["description"], "n": n,
                    "p": post.linearization.num_params, "test_points": args.test,
                    "reference_seconds": ref["seconds"], "reference_space": ref["space"],
                    **fit_record(post, wall, cpu),
                }
                log(f"  {strategy}: fit {wall:.1f} s (CPU {cpu:.1f}), rank "
                    f"{row['variance_rank']}, δ {row['variance_error_bound']:.2g}")
                for mode in ("fast", "accurate"):
                    pred, pw, pc = timed(partial(post.predict, pb["x_test"], variance=mode))
                    d = pred.diagnostics
                    scale = 1000.0 / args.test
                    row[mode] = {
                        "var_rel_err": max_rel(pred.variance, ref["variance"]),
                        "mean_rel_err": mean_err(pred.mean, ref["mean"]),
                        "reported_bound": d["variance_error_bound"],
                        "bound_kind": d["variance_error_kind"],
                        "method": d["variance_method"],
                        "accuracy": d["variance_accuracy"],
                        "block_steps": d["variance_iterations"],
                        "products": d["variance_products"],
                        "products_dtype": d["variance_products_dtype"],
                        "seconds": pw, "cpu_seconds": pc,
                        "seconds_per_1000": pw * scale, "cpu_seconds_per_1000": pc * scale,
                    }
                    log(f"    {mode}: var err {row[mode]['var_rel_err']:.2e} (reported "
                        f"{d['variance_error_bound']:.2e}, {d['variance_method']}), "
                        f"{pw:.1f} s (CPU {pc:.1f}) for {args.test} points")
                rows.append(row)
    return rows


def float32_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.n:
        x, y, xs = random_data(n, args.test)
        x32, y32, xs32 = x.float(), y.float(), xs.float()
        m32 = random_mlp(torch.float32)
        ref = dense_reference(random_mlp(torch.float32).double(), x32, y32, xs32,
                              noise=args.noise, prior=args.prior)
        # warm-up (library initialization, first traces) outside the timings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for refinement in ("none", "auto"):
                adapt(m32, x32[:200], y32[:200], noise_variance=args.noise,
                      strategy="function", refinement=refinement, max_iter=20)
        for strategy in args.strategies:
            # interleaved repeats (none, auto, none, auto, ...): load drifts hit both alike
            runs: dict[str, dict[str, Any]] = {r: {"walls": [], "cpus": []} for r in REFINE}
            for _ in range(args.repeats):
                for refinement in REFINE:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        post, wall, cpu = timed(partial(
                            adapt, m32, x32, y32, noise_variance=args.noise,
                            prior_variance=args.prior, strategy=strategy,
                            refinement=refinement,
                        ))
                    run = runs[refinement]
                    run["walls"].append(wall)
                    run["cpus"].append(cpu)
                    run["post"], run["caught"] = post, caught
            for refinement in REFINE:
                run = runs[refinement]
                post, caught = run["post"], run["caught"]
                walls, cpus = run["walls"], run["cpus"]
                wall, cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
                pred = post.predict(xs32)
                row = {
                    "n": n, "p": post.linearization.num_params, "refinement": refinement,
                    **fit_record(post, wall, cpu), "fit_seconds_all": walls,
                    "fit_cpu_seconds_all": cpus,
                    "tolerance": post.diagnostics["tolerance"],
                    "mean_rel_err": mean_err(pred.mean, ref["mean"]),
                    "var_rel_err": max_rel(pred.variance, ref["variance"]),
                    "variance_method": pred.diagnostics["variance_method"],
                    "warnings": [str(w.message)[:160] for w in caught
                                 if "jit" not in str(w.message)],
                }
                log(f"[float32 n={n}] {strategy} {refinement}: {row['iterations']} it, "
                    f"{row['refinements']} ref, residual {row['residual']:.1e} "
                    f"({row['residual_dtype']}), mean err {row['mean_rel_err']:.1e}, "
                    f"fit {wall:.1f} s (CPU {cpu:.1f})")
                rows.append(row)
    return rows


# --------------------------------------------------------------------------- report
def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "ntkcore"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+uncommitted-engine-changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": os.getloadavg(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        names = [ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Model name:")]
        info["cpu"] = names[0] if names else platform.processor()
    except (OSError, subprocess.SubprocessError):
        info["cpu"] = platform.processor()
    return info


def report(sweep: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Machine: {meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"{meta['date']}, git {meta['git_commit'][:12]}; load average "
        f"{tuple(round(v, 1) for v in meta['loadavg_start'])} → "
        f"{tuple(round(v, 1) for v in meta['loadavg_end'])}",
        f"Command: {meta['command']}", "",
    ]
    if sweep == "variance":
        lines += [
            "| problem | n | strategy | rank | δ | fit s (CPU) | fast: var err | fast s/1k (CPU) "
            "| accurate: var err | reported bound | block steps | products/point "
            "| accurate s/1k (CPU) | mean err |",
            "|---|---:|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|---:|",
        ]
        for r in rows:
            f, a = r["fast"], r["accurate"]
            lines.append(
                f"| {r['problem']} | {r['n']:,} | {r['strategy']} | {r['variance_rank']} | "
                f"{r['variance_error_bound']:.2g} | {r['fit_seconds']:.1f} "
                f"({r['fit_cpu_seconds']:.1f}) | {f['var_rel_err']:.2e} | "
                f"{f['seconds_per_1000']:.1f} ({f['cpu_seconds_per_1000']:.1f}) | "
                f"{a['var_rel_err']:.2e} | {a['reported_bound']:.2e} ({a['method']}) | "
                f"{a['block_steps']} | {a['products'] / r['test_points']:.1f} | "
                f"{a['seconds_per_1000']:.1f} ({a['cpu_seconds_per_1000']:.1f}) | "
                f"{a['mean_rel_err']:.1e} |"
            )
    else:
        lines += [
            "| n | strategy | refinement | iterations | refinements | residual (dtype) "
            "| converged | mean err | var err | fit s (CPU) |",
            "|---:|---|---|---:|---:|---|---|---:|---:|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['n']:,} | {r['strategy']} | {r['refinement']} | {r['iterations']} | "
                f"{r['refinements']} | {r['residual']:.1e} ({r['residual_dtype']}) | "
                f"{'yes' if r['converged'] else '**no**'} | {r['mean_rel_err']:.1e} | "
                f"{r['var_rel_err']:.1e} | {r['fit_seconds']:.1f} ({r['fit_cpu_seconds']:.1f}) |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sweep", choices=("variance", "float32"), default="variance")
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--test", type=int, default=1000, help="test points")
    ap.add_argument("--problems", nargs="+", choices=("random", "trained"),
                    default=["random", "trained"])
    ap.add_argument("--strategies", nargs="+", choices=("function", "parameter"),
                    default=["function", "parameter"])
    ap.add_argument("--noise", type=float, default=1e-3, help="σ²")
    ap.add_argument("--prior", type=float, default=1.0, help="s²")
    ap.add_argument("--repeats", type=int, default=1,
                    help="float32 sweep: fits per setting, median time reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", default=None, help="ntkcore.zoo cache (default $NTKCORE_CACHE)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    meta = machine()
    rows = variance_sweep(args) if args.sweep == "variance" else float32_sweep(args)
    meta["loadavg_end"] = os.getloadavg()
    text = report(args.sweep, rows, meta)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
        args.json.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
