"""``torchrun`` entry point: data-parallel adaptation of a network to sharded target data.

Every rank loads the network, reads *its own* contiguous shard of the target data and of
the test points (``.npy`` files are memory-mapped and only the rank's rows are read;
nothing is gathered on one rank; with ``--stream N`` the rows stay on disk and move to the
device N points at a time per product), calls ``ntkcore.adapt(..., process_group=WORLD)``,
predicts its test shard and writes

* ``OUT/result.json`` (rank 0): settings, the posterior's diagnostics, the log marginal
  likelihood (``--lml``), per-rank timings and communication (calls, bytes, seconds);
* ``OUT/mean.rank{r}.npy``, ``OUT/variance.rank{r}.npy``: rank r's predictions for test
  rows [start, stop) (``result.json`` lists the ranges).

Examples (one node; ``--nnodes``/``--rdzv-endpoint`` across nodes, ``docs/DISTRIBUTED.md``)::

    torchrun --standalone --nproc-per-node 4 -m ntkcore.distributed \\
        --preset sinusoids-mlp --context 2000 --noise-variance 1e-3 --out run/
    torchrun --standalone --nproc-per-node 8 -m ntkcore.distributed \\
        --mlp 8,256,256,1 --x x.npy --y y.npy --x-test xt.npy --noise-variance 1e-2 --out run/
    torchrun --standalone --nproc-per-node 2 -m ntkcore.distributed \\
        --mlp 8,64,64,1 --synthetic 100000 --test 1000 --noise-variance 1e-2 --out run/
    torchrun --standalone --nproc-per-node 2 -m ntkcore.distributed --mlp 8,64,64,1 \\
        --x big_x.npy --y big_y.npy --stream 25000 --noise-variance 1e-2 --out run/

GPUs: with CUDA present each rank takes ``cuda:LOCAL_RANK`` and the group uses NCCL;
otherwise Gloo on the CPU (``--backend`` overrides). Same code path either way.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ntkcore.distributed.launch import init_from_env, shard_bounds

_SYNTHETIC_BLOCK = 4096  # points per independently seeded block of synthetic data


def random_mlp(widths: list[int], seed: int, dtype: torch.dtype) -> nn.Module:
    """A tanh MLP with PyTorch's default initialization from ``seed`` (same on every rank)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype).eval()


def synthetic_rows(
    start: int, stop: int, dim: int, outputs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop) of a synthetic regression set, y = sin(Σx + k) + noise, x ~ N(0, I).

    Generated in blocks of 4,096 points, each from its own seed, so any rank reproduces
    any range without the rest: the concatenation over ranks is the single-process set.
    """
    xs, ys = [], []
    first, last = start // _SYNTHETIC_BLOCK, (stop - 1) // _SYNTHETIC_BLOCK
    for block in range(first, last + 1):
        rng = np.random.default_rng([seed, block])
        x = rng.standard_normal((_SYNTHETIC_BLOCK, dim))
        y = np.sin(x.sum(-1, keepdims=True) + np.arange(outputs)) + 0.1 * rng.standard_normal(
            (_SYNTHETIC_BLOCK, outputs)
        )
        lo = max(start - block * _SYNTHETIC_BLOCK, 0)
        hi = min(stop - block * _SYNTHETIC_BLOCK, _SYNTHETIC_BLOCK)
        xs.append(x[lo:hi])
        ys.append(y[lo:hi])
    return np.concatenate(xs), np.concatenate(ys)


def npy_rows(
    path: str, rank: int, world: int, *, in_memory: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """This rank's rows of a ``.npy`` array, through a memory map (only they are read).

    ``in_memory=False`` returns the memory-mapped rows themselves: nothing is read until a
    streamed product touches them (``--stream``), so a rank's shard may exceed its memory.
    """
    arr = np.load(path, mmap_mode="r")
    start, stop = shard_bounds(arr.shape[0], rank, world)
    rows = arr[start:stop]
    return (np.ascontiguousarray(rows) if in_memory else rows), (start, stop)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m ntkcore.distributed", description=__doc__.split("\n\n")[0]
    )
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--preset", help="zoo preset id (ntkcore.zoo), e.g. sinusoids-mlp")
    model.add_argument("--mlp", help="random tanh MLP widths, e.g. 8,128,128,1")
    ap.add_argument("--model-seed", type=int, default=0)
    ap.add_argument("--x", help=".npy of target inputs (n, ...) (memory-mapped, by rank)")
    ap.add_argument("--y", help=".npy of target outputs (n,) or (n, o)")
    ap.add_argument("--x-test", help=".npy of test inputs (m, ...)")
    ap.add_argument("--synthetic", type=int, help="n synthetic points (with --mlp)")
    ap.add_argument("--test", type=int, default=1000, help="synthetic test points")
    ap.add_argument("--context", type=int, help="target points of the preset's task")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--noise-variance", type=float, required=True)
    ap.add_argument("--prior-variance", type=float, default=1.0)
    ap.add_argument("--mean", default="network", choices=("network", "zero"))
    ap.add_argument("--strategy", default="auto",
                    choices=("auto", "dense", "function", "parameter"))
    ap.add_argument("--tol", type=float)
    ap.add_argument("--rank", default="auto", help="Nyström rank: int or auto")
    ap.add_argument("--max-rank", type=int, default=512)
    ap.add_argument("--variance", default="accurate", choices=("accurate", "fast", "none"))
    ap.add_argument("--lml", action="store_true", help="also the log marginal likelihood")
    ap.add_argument("--stream", type=int, default=None,
                    help="points per shard streamed through the device (adapt(stream=)): "
                    "--x stays memory-mapped on disk, synthetic data in host memory")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    ap.add_argument("--timeout", type=float, default=300.0, help="collective timeout, s")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: keep)")
    ap.add_argument("--out", required=True, help="output folder")
    return ap


def _load_data(args: argparse.Namespace, model_dim: int | None, outputs: int | None,
               rank: int, world: int) -> dict[str, Any]:
    if args.x is not None:
        if args.y is None:
            raise ValueError("--x needs --y")
        x, rows = npy_rows(args.x, rank, world, in_memory=args.stream is None)
        y, rows_y = npy_rows(args.y, rank, world)
        if rows != rows_y:
            raise ValueError(f"--x and --y have different lengths ({args.x}, {args.y})")
        xt, test_rows = (None, (0, 0)) if args.x_test is None else npy_rows(args.x_test, rank,
                                                                             world)
        return dict(x=x, y=y, x_test=xt, rows=rows, test_rows=test_rows)
    if args.synthetic is not None:
        if model_dim is None or outputs is None:
            raise ValueError("--synthetic needs --mlp")
        rows = shard_bounds(args.synthetic, rank, world)
        x, y = synthetic_rows(*rows, model_dim, outputs, args.data_seed)
        test_rows = shard_bounds(args.test, rank, world)
        xt, _ = synthetic_rows(*test_rows, model_dim, outputs, args.data_seed + 1)
        return dict(x=x, y=y, x_test=xt, rows=rows, test_rows=test_rows)
    if args.preset is None or args.context is None:
        raise ValueError("give --x/--y, --synthetic N (with --mlp) or --preset with --context")
    from ntkcore import data, zoo  # the entry point sits above the engine's layers

    task = data.load(zoo.preset(args.preset).dataset, seed=args.data_seed)
    x_all, y_all = task.context(args.context)
    xt_all, _ = task.test
    rows = shard_bounds(x_all.shape[0], rank, world)
    test_rows = shard_bounds(xt_all.shape[0], rank, world)
    return dict(x=x_all[slice(*rows)], y=y_all[slice(*rows)], x_test=xt_all[slice(*test_rows)],
                rows=rows, test_rows=test_rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch.distributed as dist

    args = _parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    group, device = init_from_env(backend=args.backend, timeout_s=args.timeout)
    result = _run(args, argv, group, device)
    # The posterior and its products hold the process group. Free them (and any reference
    # cycle through them) before the group is destroyed, so that no Gloo object outlives it
    # into interpreter finalization: that aborted a rank at exit ("terminate called without
    # an active exception") in about 1 of 6 two-rank runs on a loaded 2-core machine.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    return result


def _run(args: argparse.Namespace, argv: list[str] | None, group: Any, device: torch.device
         ) -> dict[str, Any]:
    """Load, adapt, predict and write this rank's part; the result (rank 0 writes it)."""
    import torch.distributed as dist

    import ntkcore

    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    t_start = time.perf_counter()
    if args.mlp is not None:
        widths = [int(w) for w in args.mlp.split(",")]
        model = random_mlp(widths, args.model_seed, dtype).to(device)
        in_dim, outputs = widths[0], widths[-1]
    else:
        from ntkcore import zoo

        preset = zoo.preset(args.preset)
        if rank == 0:  # trains into the cache if missing; the others then load it
            model = preset.load(device=device)
        dist.barrier()
        if rank != 0:
            model = preset.load(device=device)
        model = model.to(dtype)
        in_dim = outputs = None
    loaded = _load_data(args, in_dim, outputs, rank, world)
    t_data = time.perf_counter()

    def tensor(a: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a)).to(device=device, dtype=dtype)

    y = tensor(loaded["y"])
    if args.stream is None:
        x = tensor(loaded["x"])
    else:  # stays on the host (or on disk): shards move to the device per product
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only memory map
            x = torch.as_tensor(loaded["x"])  # shares the (memory-mapped) buffer
    rank_arg: Any = args.rank if args.rank == "auto" else int(args.rank)
    variance = "accurate" if args.variance == "none" else args.variance
    post = ntkcore.adapt(
        model, x, y, noise_variance=args.noise_variance, prior_variance=args.prior_variance,
        mean=args.mean, strategy=args.strategy, tol=args.tol, rank=rank_arg,
        max_rank=args.max_rank, variance=variance, process_group=group, stream=args.stream,
    )
    t_adapt = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pred_seconds = 0.0
    if loaded["x_test"] is not None:
        xt = tensor(loaded["x_test"])
        t0 = time.perf_counter()
        pred = post.predict(xt, variance=False if args.variance == "none" else True)
        pred_seconds = time.perf_counter() - t0
        np.save(out / f"mean.rank{rank}.npy", pred.mean.detach().cpu().numpy())
        if pred.variance is not None:
            np.save(out / f"variance.rank{rank}.npy", pred.variance.detach().cpu().numpy())
    lml = post.log_marginal_likelihood() if args.lml else None
    comm = post.diagnostics.get("communication", {"calls": 0, "bytes": 0, "seconds": 0.0})
    mine = {
        "rank": rank, "rows": list(loaded["rows"]), "test_rows": list(loaded["test_rows"]),
        "data_seconds": t_data - t_start, "adapt_seconds": t_adapt - t_data,
        "predict_seconds": pred_seconds, "comm_calls": comm["calls"],
        "comm_bytes": comm["bytes"], "comm_seconds": comm["seconds"],
    }
    ranks: list[Any] = [None] * world
    dist.all_gather_object(ranks, mine)
    diagnostics = {
        k: v for k, v in post.diagnostics.items()
        if isinstance(v, (int, float, str, bool)) or v is None
    }
    argv_used = sys.argv[1:] if argv is None else argv
    result = {
        "command": "python -m ntkcore.distributed " + " ".join(argv_used),
        "world_size": world, "backend": dist.get_backend(), "device": str(device),
        "stream": args.stream,
        "dtype": args.dtype, "num_params": post.linearization.num_params,
        "log_marginal_likelihood": lml, "diagnostics": diagnostics, "ranks": ranks,
    }
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
