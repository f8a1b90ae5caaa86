"""``torchrun`` end to end against one process: the NCCL check of issue 13 (GPU half).

Runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m ntkcore.distributed``
on synthetic data for each strategy (dense, function, parameter) with the chosen backend
(``nccl`` on GPUs: each rank takes ``cuda:LOCAL_RANK``; ``gloo`` on the CPU), reads every
rank's predictions back, and compares them with the exact GP posterior: a single-process
float64 ``ntkcore.adapt(strategy="dense")`` on the CPU over the concatenated data (the same
network, data and settings). The iterative strategies run with CG tolerance 1e-12 and a
Nyström rank equal to n, so that their variance factor is exact too. Tolerance: 1e-8
relative on means and variances (float64 throughout). Writes a JSON record with the errors,
the per-rank timings and the bytes all-reduced, and exits 1 if any strategy misses the
tolerance.

Usage::

    python benchmarks/torchrun_check.py --backend nccl --nproc 1 --out results/torchrun-nccl.json
    python benchmarks/torchrun_check.py --backend gloo --nproc 2      # the same check on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ntkcore  # noqa: E402
from ntkcore.distributed.__main__ import random_mlp, synthetic_rows  # noqa: E402
from ntkcore.experiments.machine import describe_machine, write_json  # noqa: E402

STRATEGIES = ("dense", "function", "parameter")
TOLERANCE = 1e-8


def _gathered(folder: Path, name: str, result: dict) -> np.ndarray:
    parts = []
    for r in sorted(result["ranks"], key=lambda r: r["rank"]):
        start, stop = r["test_rows"]
        if stop > start:
            parts.append(np.load(folder / f"{name}.rank{r['rank']}.npy"))
    return np.concatenate(parts, 0)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    ap.add_argument("--nproc", type=int, default=1, help="ranks (one GPU each with nccl)")
    ap.add_argument("--mlp", default="8,64,64,1")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--noise-variance", type=float, default=1e-2)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per torchrun")
    ap.add_argument("--out", type=Path, default=None, help="JSON record")
    args = ap.parse_args()
    if args.backend == "nccl" and torch.cuda.device_count() < args.nproc:
        raise SystemExit(
            f"--backend nccl needs one GPU per rank: {args.nproc} ranks, "
            f"{torch.cuda.device_count()} GPUs"
        )
    widths = [int(w) for w in args.mlp.split(",")]
    x, y = synthetic_rows(0, args.n, widths[0], widths[-1], seed=0)
    xt, _ = synthetic_rows(0, args.test, widths[0], widths[-1], seed=1)
    model = random_mlp(widths, 0, torch.float64)
    reference = ntkcore.adapt(
        model, torch.as_tensor(x), torch.as_tensor(y), noise_variance=args.noise_variance,
        strategy="dense",
    ).predict(torch.as_tensor(xt))  # the exact posterior, one process, float64
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in STRATEGIES:
            folder = Path(tmp) / strategy
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(args.nproc), "-m", "ntkcore.distributed",
                "--mlp", args.mlp, "--synthetic", str(args.n), "--test", str(args.test),
                "--noise-variance", str(args.noise_variance), "--strategy", strategy,
                "--dtype", "float64", "--backend", args.backend, "--out", str(folder),
            ]  # fmt: skip
            if strategy != "dense":  # converged CG, an exact variance factor
                command += ["--tol", "1e-12", "--rank", str(args.n), "--max-rank", str(args.n)]
            t0 = time.perf_counter()
            run = subprocess.run(
                command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout
            )
            seconds = time.perf_counter() - t0
            if run.returncode != 0:
                print(run.stdout[-3000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
                rows.append({"strategy": strategy, "ok": False, "returncode": run.returncode})
                continue
            result = json.loads((folder / "result.json").read_text())
            mean_err = _relative(_gathered(folder, "mean", result), reference.mean.numpy())
            var_err = _relative(_gathered(folder, "variance", result), reference.variance.numpy())
            rows.append({
                "strategy": strategy,
                "ok": mean_err <= TOLERANCE and var_err <= TOLERANCE,
                "mean_relative_error": mean_err,
                "variance_relative_error": var_err,
                "backend": result["backend"], "device": result["device"],
                "world_size": result["world_size"], "num_params": result["num_params"],
                "torchrun_seconds": seconds,
                "adapt_seconds": [r["adapt_seconds"] for r in result["ranks"]],
                "comm_bytes": [r["comm_bytes"] for r in result["ranks"]],
                "iterations": result["diagnostics"].get("iterations"),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    record = {
        "benchmark": "torchrun_check", "backend": args.backend, "nproc": args.nproc,
        "n": args.n, "test": args.test, "mlp": widths, "tolerance": TOLERANCE,
        "device_name": torch.cuda.get_device_name(0) if args.backend == "nccl" else "cpu",
        "rows": rows,
    }
    if args.out is not None:
        device = "cuda" if args.backend == "nccl" else "cpu"
        write_json(args.out, record, meta=describe_machine(device))
    ok = all(r["ok"] for r in rows)
    print("torchrun check:", "passed" if ok else "FAILED", f"(tolerance {TOLERANCE:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
