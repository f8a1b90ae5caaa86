"""Process groups: from ``torchrun``'s environment, or spawned locally (tests, benchmarks).

:func:`init_from_env` is what a script started by ``torchrun`` calls: it picks the device
of its rank (``cuda:LOCAL_RANK`` when CUDA is present, else the CPU), the backend to match
(NCCL on GPUs, Gloo on CPUs) and a timeout on every collective. :func:`run_local` spawns
``world_size`` CPU processes with a Gloo group on this machine and returns what each
rank's function returned (or raised): the harness of the tests and of
``benchmarks/distributed.py``.
"""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

__all__ = ["RankOutcome", "init_from_env", "run_local", "shard_bounds"]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous shard of ``n`` points split as evenly
    as possible over ``world_size`` ranks (the first n mod W ranks hold one more)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(int(n), world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def init_from_env(
    *, backend: str = "auto", timeout_s: float = 300.0
) -> tuple[Any, torch.device]:
    """Initialize the default process group from ``torchrun``'s environment variables.

    Parameters
    ----------
    backend : {"auto", "nccl", "gloo"}
        ``auto``: NCCL when CUDA is available (one GPU per rank, ``cuda:LOCAL_RANK``),
        else Gloo on the CPU.
    timeout_s : float
        Timeout of every collective: a rank that dies or hangs makes the others raise
        after at most this long instead of waiting forever.

    Returns
    -------
    group, device
        ``torch.distributed.group.WORLD`` and this rank's device.
    """
    import torch.distributed as dist

    if backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"backend must be 'auto', 'nccl' or 'gloo', got {backend!r}")
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(
                f"environment variable {var} is not set: start the script with torchrun "
                "(torchrun --nproc-per-node N ...)"
            )
    use_cuda = backend == "nccl" or (backend == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        chosen = "nccl"
    else:
        device, chosen = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if chosen == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s), **kwargs)
    return dist.group.WORLD, device


@dataclass(frozen=True)
class RankOutcome:
    """What one spawned rank did: ``value`` (what the function returned) or ``error``
    (``"TypeName: message"``, with ``traceback``); ``exitcode`` of its process (None:
    killed at the overall timeout)."""

    rank: int
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exitcode == 0


def _worker(
    fn: Callable[..., Any], rank: int, world_size: int, folder: str, timeout_s: float,
    threads: int, args: tuple,
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    outcome: tuple = ("error", "RuntimeError: never started", "")
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
            world_size=world_size, timeout=timedelta(seconds=timeout_s),
        )
        outcome = ("ok", fn(rank, world_size, *args))
    except BaseException as err:  # reported to the parent, which decides
        outcome = ("error", f"{type(err).__name__}: {err}", traceback.format_exc())
    path = os.path.join(folder, f"rank{rank}.pkl")
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(outcome, fh)
    os.replace(path + ".tmp", path)
    if dist.is_initialized() and outcome[0] == "ok":
        gc.collect()  # nothing that holds the group may outlive it (see __main__.main)
        dist.destroy_process_group()
    # a failed rank leaves at once: no teardown handshake with peers that may be gone
    os._exit(0)


def run_local(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    *,
    timeout_s: float = 120.0,
    collective_timeout_s: float = 30.0,
    threads: int = 1,
) -> list[RankOutcome]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned CPU processes that
    share a Gloo process group (the default group; ``file://`` rendezvous in a temporary
    folder, so no port is needed).

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by name into the spawned processes);
        its return value must be picklable.
    timeout_s : float
        Overall limit: processes still running after it are killed (their outcome then
        has ``exitcode=None``), so a run never hangs the caller.
    collective_timeout_s : float
        The process group's timeout on every collective.
    threads : int
        ``torch.set_num_threads`` in each process.

    Returns
    -------
    list of RankOutcome
        One per rank, in rank order.
    """
    import multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    folder = tempfile.mkdtemp(prefix="ntkcore-dist-")
    try:
        procs = [
            ctx.Process(
                target=_worker,
                args=(fn, rank, world_size, folder, collective_timeout_s, threads, args),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        outcomes = []
        for rank, proc in enumerate(procs):
            exitcode = proc.exitcode
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
                exitcode = None
            path = os.path.join(folder, f"rank{rank}.pkl")
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    outcome = pickle.load(fh)  # written by our own child process
            else:
                outcome = ("error", "RuntimeError: the process ended without a result", "")
            if outcome[0] == "ok":
                outcomes.append(RankOutcome(rank, value=outcome[1], exitcode=exitcode))
            else:
                outcomes.append(
                    RankOutcome(rank, error=outcome[1], traceback=outcome[2], exitcode=exitcode)
                )
        return outcomes
    finally:
        shutil.rmtree(folder, ignore_errors=True)
