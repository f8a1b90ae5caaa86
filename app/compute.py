"""The app's compute model: where work runs, how a rerun interrupts it, what is kept.

Every page shares it. Measured on the 2-core machine the app is built on (``tests/load``,
``benchmarks/app_load.py``, ``benchmarks/RESULTS.md`` "App under load"): with Streamlit's
defaults, five sessions holding a slider's arrow key (a rerun request every 100 ms each) hung
the server for minutes. Two defaults caused it:

* ``runner.fastReruns`` answers each rerun request by starting a *new* script thread while the
  old one keeps computing until its next ``st`` call. The server's event loop blocks in
  ``Thread.start`` until the new thread gets the GIL, so with a dozen threads in torch code
  the loop stalls, queues more requests, and starts more threads (13 were computing at once;
  the health endpoint did not answer for over 3 minutes).
* ``runner.postScriptGC`` runs a full garbage collection after every run: 0.2 s holding the
  GIL once torch, Plotly and pandas are loaded.

Both are off in ``.streamlit/config.toml``, and the app's work follows these rules:

1. **One script thread per session.** With ``fastReruns`` off, rerun requests that arrive
   during a run coalesce into one, served at the run's next *yield point*: any ``st`` call, or
   :func:`yield_point`, which long library calls reach through their ``progress`` callbacks.
   The stale run stops there (Streamlit raises its rerun exception) and the new one starts.
2. **Two process-wide compute slots.** :data:`LIGHT` for closed-form posteriors and figures
   (well under a second, CPU), :data:`HEAVY` for what a Run button starts (training, sweeps,
   classification; on the GPU when one is present, so the heavy slot is also the lock that
   serializes GPU work across sessions). Waiting for a slot is a loop of short waits and
   yield points, so a request whose session has asked for something newer leaves the queue
   at once instead of computing a result nobody will see.
3. **Bounded memory.** Models live in ``st.cache_resource`` and light results in
   ``st.cache_data``, each with ``max_entries``; heavy results in :data:`RESULTS`, a
   process-wide LRU keyed by every input (``st.cache_data`` cannot take a live progress
   callback, and replays ``st`` calls made inside it).
4. **Results carry their inputs.** :func:`run_heavy` stores a :class:`RunRecord` with the
   inputs that produced it; :func:`show_record_status` says when the widgets no longer match,
   so a stale result is never labelled fresh and an interrupted run is reported as such.

Numerics stay in the library; this module only schedules calls into it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx

__all__ = [
    "HEAVY",
    "LIGHT",
    "RESULTS",
    "ComputeSlot",
    "ResultCache",
    "RunRecord",
    "compute_device",
    "input_key",
    "last_record",
    "run_heavy",
    "show_record_status",
    "yield_point",
]

T = TypeVar("T")

#: Seconds between two checks for a newer rerun request while waiting for a slot.
POLL_SECONDS = 0.05
#: Seconds between two redraws of a progress bar (every call still checks for reruns).
DRAW_SECONDS = 0.25


def yield_point() -> None:
    """Let Streamlit stop this run here if its session asked for a newer one.

    Reading session state is a yield point of Streamlit's script runner: with a rerun or stop
    request pending it raises the runner's control exception, which unwinds the library call
    in progress. Outside a script run (tests, notebooks) this does nothing.
    """
    if get_script_run_ctx(suppress_warning=True) is not None:
        "_" in st.session_state  # noqa: B015 (the read is the yield point)


class ComputeSlot:
    """A process-wide limit on how many script runs compute at once.

    Parameters
    ----------
    name : str
        Shown to users while they wait.
    capacity : int
        Runs computing at the same time.
    """

    def __init__(self, name: str, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._semaphore = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self._waiting = 0
        self._busy = 0

    @property
    def waiting(self) -> int:
        """Runs currently waiting for this slot."""
        return self._waiting

    @property
    def busy(self) -> int:
        """Runs currently holding this slot."""
        return self._busy

    @contextmanager
    def hold(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold the slot for the ``with`` block; wait at yield points until it is free.

        ``on_wait(runs_ahead)`` is called once per second of waiting (for a status line).
        """
        with self._lock:
            self._waiting += 1
        try:
            last_report = time.perf_counter()
            while not self._semaphore.acquire(timeout=POLL_SECONDS):
                yield_point()
                if on_wait is not None and time.perf_counter() - last_report >= 1.0:
                    last_report = time.perf_counter()
                    on_wait(self._waiting - 1 + self._busy)
        finally:
            with self._lock:
                self._waiting -= 1
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
            self._semaphore.release()


#: Closed-form posteriors, predictions and figures: short, on the CPU.
LIGHT = ComputeSlot("live", capacity=1)
#: Run-button work: training, sweeps, classification, similarity; the GPU lock.
HEAVY = ComputeSlot("run", capacity=1)


def compute_device() -> torch.device:
    """Where heavy work runs: the first CUDA device when present, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def input_key(inputs: Mapping[str, Any]) -> str:
    """A stable key for a mapping of JSON-representable inputs (floats by ``repr``)."""
    text = json.dumps(inputs, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RunRecord(Generic[T]):
    """A finished heavy run: its result and everything needed to say what it is."""

    page: str
    inputs: Mapping[str, Any]
    result: T
    seconds: float
    device: str
    finished_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return input_key(self.inputs)


class ResultCache:
    """A thread-safe LRU of :class:`RunRecord` keyed by page and inputs (bounded)."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, str], RunRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, page: str, inputs: Mapping[str, Any]) -> RunRecord | None:
        key = (page, input_key(inputs))
        with self._lock:
            record = self._items.get(key)
            if record is not None:
                self._items.move_to_end(key)
            return record

    def put(self, record: RunRecord) -> None:
        key = (record.page, record.key)
        with self._lock:
            self._items[key] = record
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: Heavy results shared by every session (a room running the same preset computes it once).
RESULTS = ResultCache(max_entries=64)


def _state_key(page: str, what: str) -> str:
    return f"compute.{page}.{what}"


def last_record(page: str) -> RunRecord | None:
    """The last heavy result this session got on ``page`` (``None`` before the first)."""
    return st.session_state.get(_state_key(page, "record"))


def run_heavy(
    page: str,
    title: str,
    work: Callable[..., T],
    *,
    inputs: Mapping[str, Any],
    device: torch.device | None = None,
) -> RunRecord[T]:
    """Run ``work(progress=..., device=...)`` under the heavy slot with a live status box.

    The status box names what runs, on which device, and the seconds elapsed; the progress
    bar follows ``progress(fraction, message)`` calls from the library. Each call is a yield
    point: a rerun requested meanwhile (a widget changed, a page switched, Run pressed again)
    stops the work there, and the session records that it was interrupted.

    Results are cached process-wide by ``(page, inputs)``: ``inputs`` must hold every value
    the result depends on. The record is also stored as this session's last result on
    ``page``.
    """
    device = compute_device() if device is None else device
    cached = RESULTS.get(page, inputs)
    if cached is not None:
        st.session_state[_state_key(page, "record")] = cached
        st.session_state.pop(_state_key(page, "interrupted"), None)
        return cached
    status = st.status(f"{title} — waiting for the compute slot", expanded=True)
    with status:
        bar = st.progress(0.0, text="queued")
    t0 = time.perf_counter()

    def on_wait(ahead: int) -> None:
        # expanded=True each time: an update without it collapses the box (Streamlit 1.67
        # clears the field), hiding the progress bar
        status.update(label=f"{title} — waiting: {ahead} run(s) ahead of you", expanded=True)

    interrupted = True
    st.session_state[_state_key(page, "interrupted")] = title
    try:
        with HEAVY.hold(on_wait=on_wait):
            status.update(
                label=f"{title} — running on {device}", state="running", expanded=True
            )
            last_draw = [0.0]
            last_message = [""]

            def progress(fraction: float, message: str) -> None:
                yield_point()
                now = time.perf_counter()
                # a new step is always drawn: a long step that reports no progress of its own
                # (VI inside one library call) must not show the previous step's name
                if (now - last_draw[0] >= DRAW_SECONDS or fraction >= 1.0
                        or message != last_message[0]):  # fmt: skip
                    last_draw[0] = now
                    last_message[0] = message
                    bar.progress(
                        min(max(float(fraction), 0.0), 1.0),
                        text=f"{message} · {now - t0:.0f} s",
                    )

            result = work(progress=progress, device=device)
        interrupted = False
    except Exception:
        # The library refused the settings (a ValueError the page shows) or failed: not an
        # interruption, so no "press Run again" note.
        interrupted = False
        st.session_state.pop(_state_key(page, "interrupted"), None)
        status.update(label=f"{title} — failed", state="error", expanded=False)
        raise
    finally:
        if interrupted:
            status.update(label=f"{title} — interrupted", state="error", expanded=False)
    seconds = time.perf_counter() - t0
    record = RunRecord(page, dict(inputs), result, seconds, str(device))
    RESULTS.put(record)
    st.session_state[_state_key(page, "record")] = record
    st.session_state.pop(_state_key(page, "interrupted"), None)
    status.update(
        label=f"{title} — done in {seconds:.1f} s on {device}", state="complete", expanded=False
    )
    return record


def show_record_status(page: str, record: RunRecord | None, inputs: Mapping[str, Any]) -> bool:
    """Say what the shown result is; returns whether it matches the current ``inputs``.

    * a run of this page was interrupted (a widget changed or the page was left mid-run);
    * the shown result was computed with other settings than the widgets show now;
    * no result yet.
    """
    interrupted = st.session_state.get(_state_key(page, "interrupted"))
    if interrupted:
        st.warning(
            f"“{interrupted}” was interrupted before it finished. Press Run to start it again."
        )
    if record is None:
        return False
    if input_key(record.inputs) != input_key(inputs):
        changed = sorted(
            k for k in set(record.inputs) | set(inputs) if record.inputs.get(k) != inputs.get(k)
        )
        st.info(
            "The results below were computed with earlier settings (changed since: "
            + ", ".join(changed)
            + "). Press Run to update them."
        )
        return False
    st.caption(
        f"Computed in {record.seconds:.1f} s on {record.device} at "
        f"{time.strftime('%H:%M:%S', time.localtime(record.finished_at))}."
    )
    return True
