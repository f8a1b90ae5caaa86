"""Data-parallel adaptation on the CPU: weak and strong scaling of one CG iteration.

One iteration of weight-space CG on sharded data (what ``ntkcore.adapt(...,
process_group=...)`` runs for every matrix-free strategy) is one product
(JᵀJ) v = Σ_r J_rᵀ(J_r v): a forward-mode and a reverse-mode product on each rank's shard
(through ``lin.at(x_shard)``) and one ``all_reduce`` of p floats. This script spawns 1–4
Gloo processes (``ntkcore.distributed.run_local``, one thread each), times ``--iters`` such
products per configuration and records per rank the wall time, the time inside
``all_reduce`` (including waiting for slower ranks) and the bytes handed to it.

* weak scaling: ``--n-per-rank`` points on every rank (total grows with the ranks);
* strong scaling: ``--n-total`` points split over the ranks.

The machine this was written on has 2 CPU cores shared with other work: 3 and 4 ranks
oversubscribe it, so those rows measure contention, not scaling (said again in the
output). Then a cost *model* (not a measurement) for n = 10⁷ on 8 GPUs: compute per rank
from a measured single-H200 product rate plus a ring all-reduce of p floats at a stated
bandwidth.

Usage::

    python benchmarks/distributed.py                       # full (a few minutes)
    python benchmarks/distributed.py --quick               # smaller, for a smoke run
    python benchmarks/distributed.py --out benchmarks/results/distributed-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ntkcore import Linearization  # noqa: E402
from ntkcore.distributed import DataReduction, run_local, shard_bounds  # noqa: E402
from ntkcore.distributed.__main__ import random_mlp, synthetic_rows  # noqa: E402
from ntkcore.strategies import TrainingProducts  # noqa: E402


def _rank_products(rank: int, world: int, n_total: int, widths: list[int], iters: int,
                   dtype_name: str) -> dict:
    """In each spawned rank: time ``iters`` all-reduced JᵀJ v products on its shard."""
    dtype = getattr(torch, dtype_name)
    group = torch.distributed.group.WORLD
    model = random_mlp(widths, 0, dtype)
    start, stop = shard_bounds(n_total, rank, world)
    x, _ = synthetic_rows(start, stop, widths[0], widths[-1], seed=0)
    lin = Linearization(model)
    t0 = time.perf_counter()
    at_x = lin.at(torch.as_tensor(x, dtype=dtype), cache="auto")
    reduction = DataReduction(group)
    products = TrainingProducts(at_x, reduction)
    setup = time.perf_counter() - t0
    v = torch.randn(lin.num_params, 1, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # warm-up (allocations, first collective)
        products.gram(v)
    torch.distributed.barrier()
    before = reduction.stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        w = products.gram(v)
        v = w / w.norm()
    wall = time.perf_counter() - t0
    after = reduction.stats()
    return {
        "rank": rank, "n_local": stop - start, "setup_seconds": setup,
        "cache": at_x.cache, "wall_seconds": wall,
        "comm_seconds": after["seconds"] - before["seconds"],
        "comm_bytes": after["bytes"] - before["bytes"],
        "comm_calls": after["calls"] - before["calls"],
    }


def _row(mode: str, world: int, n_total: int, outs: list, iters: int, p: int) -> dict:
    per_iter = max(o["wall_seconds"] for o in outs) / iters
    comm = sum(o["comm_seconds"] for o in outs) / len(outs) / iters
    return {
        "mode": mode, "ranks": world, "n_total": n_total,
        "n_per_rank": [o["n_local"] for o in outs], "p": p,
        "seconds_per_iteration": per_iter,
        "comm_seconds_per_iteration": comm,
        "comm_share": comm / per_iter,
        "bytes_per_iteration": outs[0]["comm_bytes"] / iters,
        "ring_bytes_sent_per_rank": 2 * (world - 1) / world * outs[0]["comm_bytes"] / iters,
        "cache": outs[0]["cache"],
    }


def cost_model(n: float, ranks: int, p: int, *, seconds_per_point: float,
               bandwidth_bytes_s: float, latency_s: float, bytes_per_float: int = 4,
               iterations: int, sketch_columns: int,
               sketch_seconds_per_point_column: float) -> dict:
    """Predicted time of one sharded weight-space adaptation (a model, not a measurement).

    t_iteration = (n / ranks) · seconds_per_point + t_allreduce(p floats),
    t_allreduce = 2 (W − 1) · latency + 2 (W − 1)/W · bytes / bandwidth (ring);
    the sketch: ``sketch_columns`` batched products (sketch of JᵀJ and JᵀJ V: 2 r) at
    ``sketch_seconds_per_point_column``, each batch of k columns one all-reduce of k·p floats.
    """
    w = ranks
    allreduce = 2 * (w - 1) * latency_s + 2 * (w - 1) / w * p * bytes_per_float / (
        bandwidth_bytes_s) if w > 1 else 0.0
    compute = n / w * seconds_per_point
    sketch = n / w * sketch_seconds_per_point_column * sketch_columns + sketch_columns * (
        allreduce - 2 * (w - 1) * latency_s) + 2 * (w - 1) * latency_s
    return {
        "n": n, "ranks": w, "p": p, "compute_seconds_per_iteration": compute,
        "allreduce_seconds_per_iteration": allreduce,
        "comm_share": allreduce / (compute + allreduce),
        "iterations": iterations, "sketch_seconds": sketch,
        "total_seconds": sketch + iterations * (compute + allreduce),
        "bytes_per_iteration": p * bytes_per_float,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--widths", default="8,256,256,1")
    ap.add_argument("--n-per-rank", type=int, default=2000)
    ap.add_argument("--n-total", type=int, default=8000)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--max-ranks", type=int, default=4)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--out", default="benchmarks/results/distributed-cpu.json")
    args = ap.parse_args()
    if args.quick:
        args.n_per_rank, args.n_total, args.iters, args.max_ranks = 500, 1000, 5, 2
    widths = [int(w) for w in args.widths.split(",")]
    p = Linearization(random_mlp(widths, 0, torch.float32)).num_params
    rows = []
    for mode in ("weak", "strong"):
        for world in range(1, args.max_ranks + 1):
            n_total = args.n_per_rank * world if mode == "weak" else args.n_total
            t0 = time.perf_counter()
            outs = run_local(_rank_products, world,
                             (n_total, widths, args.iters, args.dtype),
                             timeout_s=900, collective_timeout_s=600)
            bad = [o for o in outs if not o.ok]
            if bad:
                raise RuntimeError(f"{mode} {world}: {bad[0].error}\n{bad[0].traceback}")
            row = _row(mode, world, n_total, [o.value for o in outs], args.iters, p)
            rows.append(row)
            print(f"{mode:6s} ranks={world} n={n_total:6d} "
                  f"{1e3 * row['seconds_per_iteration']:8.1f} ms/iter  "
                  f"comm {100 * row['comm_share']:5.1f}%  "
                  f"{row['bytes_per_iteration'] / 1024:.0f} KiB/iter  "
                  f"(run {time.perf_counter() - t0:.0f} s)", flush=True)
    # The model: H200 product rate from benchmarks/RESULTS.md ("GPU: goal re-run ...", p =
    # 803,601 MLP, n = 100,000, float32, `parameter`: fit 11.14 s = sketch 5.65 s (rank 256)
    # + 18 CG iterations and the factor; taken as 0.25 s per iteration at n = 1e5 and
    # 5.65 s / 256 columns per 1e5 points for batched sketch columns).
    model_inputs = dict(
        p=803_601, seconds_per_point=0.25 / 1e5, bandwidth_bytes_s=100e9, latency_s=10e-6,
        iterations=30, sketch_columns=512, sketch_seconds_per_point_column=5.65 / 256 / 1e5,
    )
    models = [cost_model(1e7, w, **model_inputs) for w in (1, 8)]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    record = {
        "benchmark": "distributed", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git_commit": commit, "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads_per_rank": 1,
                    "note": "2 CPU cores shared with other work: 3-4 ranks oversubscribe"},
        "widths": widths, "dtype": args.dtype, "iters": args.iters, "rows": rows,
        "cost_model": {"inputs": model_inputs, "predictions": models,
                       "note": "a model, not a measurement"},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    for m in models:
        print(f"MODEL n=1e7 on {m['ranks']} GPU(s): {m['compute_seconds_per_iteration']:.3f} s "
              f"compute + {1e3 * m['allreduce_seconds_per_iteration']:.3f} ms all-reduce per "
              f"iteration (comm share {100 * m['comm_share']:.3f}%), total "
              f"{m['total_seconds']:.0f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
