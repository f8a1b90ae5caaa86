"""Run ``experiments.fast_adaptation`` for several datasets and record the tables.

Usage::

    python benchmarks/fast_adaptation.py --preset small [--datasets sinusoids spatial ...]
        [--threads 1] [--outdir benchmarks/results] [--tag cpu]

Run with the zoo models already cached (``python -m ntkcore.zoo build``). Each dataset is
run once, in one process (its source network and source-side fits are computed then, as a
fresh app session would); it writes ``fast-adaptation-<preset>-<dataset>-<tag>.csv`` and a
JSON sidecar with the git commit, machine, thread count, load average, wall and CPU time,
and prints a Markdown summary (mean test MSE / NLL / coverage over tasks per method and
context size, seconds per method) for ``benchmarks/RESULTS.md``. On a shared machine the
CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch

from ntkcore.experiments.fast_adaptation import DATASETS, fast_adaptation


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _summary(table: pd.DataFrame) -> str:
    lines = []
    for metric, fmt in (("mse", "{:.4g}"), ("nll", "{:.3g}"), ("coverage95", "{:.2f}")):
        pivot = table.pivot_table(index="n_context", columns="method", values=metric,
                                  aggfunc="mean", sort=False)
        pivot = pivot[[m for m in table["method"].unique()]]
        lines.append(f"\nmean {metric} over {table['task'].nunique()} task(s)\n")
        lines.append("| n | " + " | ".join(pivot.columns) + " |")
        lines.append("|---" * (len(pivot.columns) + 1) + "|")
        for n, row in pivot.iterrows():
            lines.append(f"| {n} | " + " | ".join(fmt.format(v) for v in row) + " |")
    seconds = table.groupby("method", sort=False)[["seconds", "prepare_seconds"]].agg(
        {"seconds": "sum", "prepare_seconds": "first"})
    lines.append("\nseconds (fits + predictions, all tasks and sizes; source-side work)\n")
    lines.append("| method | fits | source side |")
    lines.append("|---|---|---|")
    for m, row in seconds.iterrows():
        lines.append(f"| {m} | {row['seconds']:.2f} | {row['prepare_seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("small", "full"), default="small")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-hyper", action="store_true")
    parser.add_argument("--outdir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.outdir.mkdir(parents=True, exist_ok=True)
    commit = _commit()  # the code this process imported (later commits do not apply)
    for dataset in args.datasets:
        load_before = os.getloadavg()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        table = fast_adaptation(dataset=dataset, preset=args.preset, fit_hyper=args.fit_hyper)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stem = f"fast-adaptation-{args.preset}-{dataset}-{args.tag}"
        if args.fit_hyper:
            stem += "-fit-hyper"
        table.to_csv(args.outdir / f"{stem}.csv", index=False)
        meta = {
            "command": f"python benchmarks/fast_adaptation.py --preset {args.preset} "
                       f"--datasets {dataset} --threads {args.threads}"
                       + (" --fit-hyper" if args.fit_hyper else ""),
            "commit": commit,
            "machine": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        (args.outdir / f"{stem}.json").write_text(json.dumps(meta, indent=2))
        print(f"\n### {dataset} ({args.preset}): {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"load {load_before[0]:.1f}")
        print(_summary(table))


if __name__ == "__main__":
    main()
