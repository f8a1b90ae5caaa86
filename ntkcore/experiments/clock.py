"""Device-synchronized clocks, peak-memory probes and forward-pass equivalents.

The instruments every timing in ``ntkcore.experiments.timing`` and ``benchmarks/`` uses, so
that the app's Timing page and the recorded benchmarks measure the same way:

* :func:`synchronize` waits for the accelerator's queued work (CUDA kernels run
  asynchronously: without it a clock measures the launch, not the work); on the CPU it does
  nothing.
* :func:`stopwatch` times a block in **wall** seconds (``time.perf_counter``) and in
  **process CPU** seconds (``time.process_time``: the CPU time of this process over all its
  threads; it does not advance while the process sleeps or waits for a descheduled core, so
  on a machine shared with other jobs it is the less disturbed of the two — with one thread it
  equals wall time on an idle machine, with t busy threads it is up to t× wall time).
* :func:`time_call` times repeated calls after a warm-up (best, median, mean); :func:`timed`
  one call, returning its result too.
* :class:`PeakMemory` measures the peak memory of a block: on CUDA the allocator's
  ``max_memory_allocated`` since the block started; on the CPU the resident-set high-water
  mark of the process (``VmHWM``), reset at the start of the block through
  ``/proc/self/clear_refs`` where Linux allows it, otherwise the process's lifetime peak
  (``getrusage``), which is then only an upper bound for the block (``scope`` says which).
* :func:`forward_seconds` and :func:`forward_equivalents` express a cost in forward passes:
  the time of one plain ``torch.no_grad`` forward pass of the same network on the same batch
  is the unit, which makes costs comparable across machines and networks (Figure 2, right).
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CLOCKS",
    "Elapsed",
    "PeakMemory",
    "Timing",
    "check_clock",
    "clock_function",
    "forward_equivalents",
    "forward_seconds",
    "stopwatch",
    "synchronize",
    "time_call",
    "timed",
]

#: ``wall``: elapsed real time; ``cpu``: CPU time of this process (all threads).
CLOCKS = ("wall", "cpu")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _as_device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work of ``device`` (``torch.cuda.synchronize``; no-op on the CPU)."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_clock(clock: object) -> str:
    """Validate a clock name (``ValueError`` naming the accepted ones)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return str(clock)


def clock_function(clock: str) -> Callable[[], float]:
    """``time.perf_counter`` for ``"wall"``, ``time.process_time`` for ``"cpu"``."""
    return time.perf_counter if check_clock(clock) == "wall" else time.process_time


@dataclass
class Elapsed:
    """Seconds of one timed block: ``wall`` (real time) and ``cpu`` (process CPU time).

    Both are NaN until the block has finished.
    """

    wall: float = math.nan
    cpu: float = math.nan

    def get(self, clock: str) -> float:
        """The seconds of ``clock`` (``"wall"`` or ``"cpu"``)."""
        return self.wall if check_clock(clock) == "wall" else self.cpu


@contextmanager
def stopwatch(device: torch.device | str) -> Iterator[Elapsed]:
    """Time a block in wall and process-CPU seconds, synchronized with ``device``.

    >>> with stopwatch("cpu") as t:
    ...     _ = sum(range(1000))
    >>> t.wall >= 0 and t.cpu >= 0
    True

    The device is synchronized before the clocks start and before they stop, so queued
    accelerator work of earlier code is not counted and the block's own work is. The times
    are set when the block exits, also when it raises.
    """
    device = _as_device(device)
    elapsed = Elapsed()
    synchronize(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        yield elapsed
    finally:
        synchronize(device)
        elapsed.wall = time.perf_counter() - wall0
        elapsed.cpu = time.process_time() - cpu0


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, Elapsed]:
    """Call ``fn`` once under :func:`stopwatch`; returns its result and the :class:`Elapsed`."""
    with stopwatch(device) as elapsed:
        out = fn()
    return out, elapsed


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated calls (``times``) after a warm-up call (``warmup``)."""

    times: tuple[float, ...]
    warmup: float = math.nan

    @property
    def best(self) -> float:
        """The fastest call: on a shared machine the least disturbed estimate of the cost."""
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def repeats(self) -> int:
        return len(self.times)


def time_call(
    fn: Callable[[], Any],
    *,
    device: torch.device | str,
    repeats: int = 3,
    clock: str = "wall",
    budget: float | None = None,
    warmup: bool = True,
) -> Timing:
    """Time ``repeats`` calls of ``fn`` (device-synchronized), after one warm-up call.

    Parameters
    ----------
    fn : callable
        The work to time, called without arguments.
    device : torch.device or str
        The device to synchronize before and after every call.
    repeats : int
        Timed calls (at most ``repeats`` when ``budget`` stops early).
    clock : {"wall", "cpu"}
        Wall time or this process's CPU time (module docstring).
    budget : float, optional
        Stop once the timed calls have spent this many seconds, after at least two calls (one
        when the warm-up alone exceeded the budget).
    warmup : bool
        Call ``fn`` once untimed first (library initialization, caches, autotuning); its time
        is kept in ``Timing.warmup``.

    Returns
    -------
    Timing
        The seconds of every timed call (``best``, ``median``).
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be positive seconds or None, got {budget!r}")
    now = clock_function(clock)
    device = _as_device(device)
    warm = math.nan
    if warmup:
        synchronize(device)
        t0 = now()
        fn()
        synchronize(device)
        warm = now() - t0
    min_runs = 1 if (budget is not None and warm > budget) else 2
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats:
        if budget is not None and len(times) >= min_runs and spent >= budget:
            break
        synchronize(device)
        t0 = now()
        fn()
        synchronize(device)
        times.append(now() - t0)
        spent += times[-1]
    return Timing(tuple(times), warm)


def forward_seconds(
    model: nn.Module,
    x: Tensor,
    *,
    repeats: int = 5,
    clock: str = "wall",
    budget: float | None = None,
) -> Timing:
    """Seconds of one plain forward pass ``model(x)`` under ``torch.no_grad``.

    The unit of :func:`forward_equivalents`. The model is called as it is (put it in eval
    mode first); the device is that of ``x``.
    """

    def forward() -> Tensor:
        with torch.no_grad():
            return model(x)

    return time_call(forward, device=x.device, repeats=repeats, clock=clock, budget=budget)


def forward_equivalents(seconds: float, forward_s: float) -> float:
    """A cost in forward passes: ``seconds / forward_s`` (NaN when either is not finite).

    Raises
    ------
    ValueError
        If ``forward_s`` is finite but not positive.
    """
    seconds, forward_s = float(seconds), float(forward_s)
    if not (math.isfinite(seconds) and math.isfinite(forward_s)):
        return math.nan
    if forward_s <= 0:
        raise ValueError(f"forward_s must be positive seconds, got {forward_s!r}")
    return seconds / forward_s


# --------------------------------------------------------------------------- peak memory
def _read_hwm_bytes() -> int | None:
    """``VmHWM`` of /proc/self/status in bytes (None where there is no such file)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the resident-set high-water mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _lifetime_peak_bytes() -> int:
    """Peak resident set of the process since it started (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes


class PeakMemory:
    """Peak memory of a block of code on ``device``.

    >>> with PeakMemory("cpu") as peak:
    ...     _ = torch.ones(1000)
    >>> peak.bytes > 0
    True

    ``bytes`` after the block: on CUDA ``torch.cuda.max_memory_allocated`` since the block
    started (tensors only, not the allocator's cache; the cache is emptied and the counter
    reset on entry); on the CPU the resident-set high-water mark of the whole process during
    the block (model, data, libraries included). ``scope`` says what was measured:
    ``"cuda allocated"``, ``"cpu rss"`` (the mark was reset on entry) or
    ``"cpu rss (process lifetime)"`` (it could not be reset: an upper bound for the block).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = _as_device(device)
        self.bytes: int | None = None
        self.scope = ""

    def reset(self) -> None:
        """Start a new measurement."""
        self.bytes = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.scope = "cuda allocated"
        elif self.device.type == "cpu":
            self.scope = "cpu rss" if (_reset_hwm() and _read_hwm_bytes()) else (
                "cpu rss (process lifetime)"
            )
        else:
            self.scope = f"not measured on {self.device.type}"

    def read(self) -> int | None:
        """The peak since :meth:`reset`, in bytes (None on devices it cannot measure)."""
        if self.device.type == "cuda":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.device.type == "cpu":
            hwm = _read_hwm_bytes() if self.scope == "cpu rss" else None
            self.bytes = hwm if hwm is not None else _lifetime_peak_bytes()
        return self.bytes

    @property
    def gib(self) -> float | None:
        return None if self.bytes is None else self.bytes / 2**30

    @property
    def mib(self) -> float | None:
        return None if self.bytes is None else self.bytes / 2**20

    def __enter__(self) -> PeakMemory:
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.read()
