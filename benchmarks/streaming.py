"""Streaming within one process: n = 200,000 target points on the CPU under 8 GB; on a GPU,
n = 1,000,000 through the Figure-2 MLP (p = 803,601) in at most 2 minutes (issue 13, §3).

The target inputs live in a ``.npy`` file on disk, opened as a ``numpy`` memory map;
``ntkcore.adapt(..., stream=POINTS)`` moves them through the device a shard at a time
(``ntkcore.distributed.stream``), so no n·p, n·r or cached forward pass is ever held. The
script records the wall time, the CG iterations and residual, and the peak resident set
size of the process (``ru_maxrss``), and predicts 1,000 test points with variances.

Usage::

    python benchmarks/streaming.py                      # n = 200,000 (issue 13's CPU goal)
    python benchmarks/streaming.py --n 20000 --quick    # smoke run
    python benchmarks/streaming.py --device cuda --n 1000000 --widths 5,200,2000,200,1 \
        --stream 100000 --tol 1e-3 --variance accurate --out results/streaming-cuda.json

On a GPU the data stays in host memory (a memory map), the model on the device; the record
adds the device's name and its peak memory (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntkcore  # noqa: E402
from ntkcore.distributed.__main__ import random_mlp, synthetic_rows  # noqa: E402
from ntkcore.experiments.clock import synchronize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--widths", default="8,64,64,1")
    ap.add_argument("--stream", type=int, default=25_000, help="points per shard")
    ap.add_argument("--noise-variance", type=float, default=1e-2)
    ap.add_argument("--max-rank", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the model's device)")
    ap.add_argument("--variance", default="fast", choices=("fast", "accurate"),
                    help="adapt(variance=): the low-rank bound, or corrected to 1%%")
    ap.add_argument("--out", default="benchmarks/results/streaming-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    widths = [int(w) for w in args.widths.split(",")]
    model = random_mlp(widths, 0, torch.float32).to(device)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.npy"
        x, y = synthetic_rows(0, args.n, widths[0], widths[-1], seed=0)
        np.save(path, x.astype(np.float32))
        y_t = torch.as_tensor(y, dtype=torch.float32)
        del x
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory map
            x_disk = torch.from_numpy(np.load(path, mmap_mode="r"))
        xt, _ = synthetic_rows(0, 1000, widths[0], widths[-1], seed=1)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        post = ntkcore.adapt(
            model, x_disk, y_t, noise_variance=args.noise_variance, strategy="parameter",
            stream=args.stream, max_rank=args.max_rank, tol=args.tol, variance=args.variance,
        )
        synchronize(device)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = post.predict(torch.as_tensor(xt, dtype=torch.float32, device=device))
        synchronize(device)
        predict = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = post.diagnostics
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    record = {
        "benchmark": "streaming", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git_commit": commit, "command": " ".join(sys.argv), "torch": torch.__version__,
        "threads": args.threads, "n": args.n, "widths": widths, "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else "cpu"),
        "peak_device_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                                   if device.type == "cuda" else None),
        "variance": args.variance, "tol": args.tol,
        "p": post.linearization.num_params, "stream": args.stream,
        "fit_seconds": fit, "predict_seconds_1000": predict,
        "iterations": d["iterations"], "residual": d["residual"],
        "residual_dtype": d.get("residual_dtype"), "variance_rank": d["variance_rank"],
        "variance_error_bound": d.get("variance_error_bound"),
        "peak_rss_gib": peak_kib / 2**20, "rss_before_adapt_gib": rss0 / 2**20,
        "finite_predictions": bool(torch.isfinite(pred.mean).all()
                                   and torch.isfinite(pred.variance).all()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
