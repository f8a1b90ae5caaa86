"""A room full of users on one server: the load scenario shared by the CI test
(``tests/load/test_load.py``) and the recorded benchmark (``benchmarks/app_load.py``).

Each simulated user opens the Adapt page in its own session (a websocket client, see
:mod:`tests.load.client`), picks its own target task (seed), then holds the "Context points"
slider's arrow key: a widget change every ``interval`` seconds, sent without waiting for the
previous run, as a browser does. Meanwhile a probe asks the server's health endpoint every
0.25 s and the server's memory is sampled. At the end every user sets a final value of its
own and waits for the page to show it; the figure's context points are then checked against
the library's own ``data.load(...).context(n)`` for that user's seed — a run that mixed two
sessions' state, or a session left showing a stale figure, fails the check. Every fifth user
instead presses Run on the Timing page (a tiny sweep, heavy compute slot) again and again;
each of its runs must finish with the page's result.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ntkcore import data
from tests.figures import trace, values
from tests.load.client import AppClient, Run
from tests.server import REPO_ROOT, Server

__all__ = ["LoadReport", "run_room"]

SLIDER = "Context points"
SEED = "Target task (seed)"
#: The Timing page with tiny sweep options (a link carries them: widgets are bound to the URL).
RUN_PAGE = "timing"
RUN_QUERY = "sizes=50&sizes=100&hidden=2&methods=function&methods=parameter-fd&test_points=50"
#: Every RUNNER_EVERY-th user presses Run on the Timing page instead of holding a slider.
RUNNER_EVERY = 5


@dataclass
class UserResult:
    user: int
    seed: int
    role: str = "slider"
    interactions: int = 0
    latencies: list[float] = field(default_factory=list)  # request -> next finished run
    runs: int = 0
    exceptions: list[str] = field(default_factory=list)
    final_ok: bool = False
    final_problem: str = ""
    final_seconds: float = float("nan")


@dataclass
class LoadReport:
    users: list[UserResult]
    health: list[float]
    rss: list[int]
    peak_rss: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        sliders = [u for u in self.users if u.role == "slider"]
        runners = [u for u in self.users if u.role == "runner"]
        lat = sorted(x for u in sliders for x in u.latencies)
        run_lat = sorted(x for u in runners for x in u.latencies)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
        return {
            "users": len(self.users),
            "interactions": sum(u.interactions for u in self.users),
            "runs_finished": sum(u.runs for u in self.users),
            "latency_p50_s": pct(0.5),
            "latency_p95_s": pct(0.95),
            "latency_max_s": lat[-1] if lat else None,
            "runners": len(runners),
            "runs_pressed": sum(u.interactions for u in runners),
            "run_seconds_median": statistics.median(run_lat) if run_lat else None,
            "run_seconds_max": run_lat[-1] if run_lat else None,
            "health_probes": len(self.health),
            "health_max_s": max(self.health) if self.health else None,
            "health_median_s": statistics.median(self.health) if self.health else None,
            "health_over_1s": sum(h > 1.0 for h in self.health),
            "rss_start_mb": self.rss[0] / 2**20 if self.rss else None,
            "rss_end_mb": self.rss[-1] / 2**20 if self.rss else None,
            "peak_rss_mb": self.peak_rss / 2**20,
            "final_ok": sum(u.final_ok for u in self.users),
            "final_seconds_max": max(u.final_seconds for u in self.users),
            "exceptions": sum(len(u.exceptions) for u in self.users),
            "seconds": self.seconds,
        }


def _context_matches(run: Run, seed: int, n: int) -> tuple[bool, str]:
    figures = run.figures()
    if not figures:
        return False, "no figure"
    try:
        ctx = trace(figures[0], "context")
    except KeyError as err:
        return False, str(err)
    x = values(ctx["x"])
    expected = data.load("sinusoids", seed=seed).context(n)[0][:, 0].numpy()
    if x.shape != expected.shape:
        return False, f"{x.shape[0]} context points shown, {n} expected"
    if not np.allclose(x, expected, rtol=1e-6, atol=1e-6):
        return False, "context points of another task (seed) shown"
    return True, ""


async def _finish(result: UserResult, client: AppClient) -> None:
    """Count the session's finished runs and collect what its pages showed as errors."""
    result.runs = sum(r.status == "FINISHED_SUCCESSFULLY" for r in client.runs)
    for run in client.runs:
        result.exceptions += run.exceptions + run.errors
    await client.close()


async def _runner(url: str, user: int, duration: float) -> UserResult:
    """Press Run on the Timing page (tiny sweep) again and again; each run must finish."""
    result = UserResult(user, seed=-1, role="runner")
    client = AppClient(url, page=RUN_PAGE, query=RUN_QUERY)

    def done(run: Run) -> bool:
        return "Points measured" in run.metrics()

    try:
        await client.connect()
        sent = await client.rerun()
        await client.wait_finished(300, since=sent)
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            client.set("Run", True)
            sent = await client.rerun()
            result.interactions += 1
            await client.wait_finished(300, since=sent, check=done)
            result.latencies.append(time.perf_counter() - sent)
        result.final_ok = True
    except (TimeoutError, ConnectionError, OSError) as err:
        result.final_problem = f"{type(err).__name__}: {err}"
    finally:
        await _finish(result, client)
    return result


async def _user(url: str, user: int, duration: float, interval: float) -> UserResult:
    seed = 100 + user
    result = UserResult(user, seed)
    client = AppClient(url)
    try:
        await client.connect()
        sent = await client.rerun()
        await client.wait_finished(300, since=sent)
        client.set(SEED, seed)
        sent = await client.rerun()
        await client.wait_finished(
            120, since=sent, check=lambda r: _context_matches(r, seed, 20)[0]
        )
        value, direction = 20, 1
        pending: list[float] = []
        end = time.perf_counter() + duration
        seen = len(client.runs)
        while time.perf_counter() < end:
            if value >= 40 or value <= 5:
                direction = -direction
            value += direction
            client.set(SLIDER, value)
            pending.append(await client.rerun())
            result.interactions += 1
            await asyncio.sleep(interval)
            # Each run that finishes answers every request sent before it started.
            while seen < len(client.runs) and client.runs[seen].finished is not None:
                run = client.runs[seen]
                seen += 1
                if run.status == "FINISHED_SUCCESSFULLY":
                    result.latencies += [run.finished - t for t in pending if t <= run.started]
                    pending = [t for t in pending if t > run.started]
        final = 5 + user % 30
        client.set(SLIDER, final)
        sent = await client.rerun()
        try:
            run = await client.wait_finished(
                120, since=sent, check=lambda r: _context_matches(r, seed, final)[0]
            )
            result.final_ok, result.final_seconds = True, time.perf_counter() - sent
        except TimeoutError:
            last = client.last_finished
            result.final_problem = (
                _context_matches(last, seed, final)[1] if last else "no run finished"
            )
    except (TimeoutError, ConnectionError, OSError) as err:  # the session did not get through
        result.final_problem = f"{type(err).__name__}: {err}"
    finally:
        await _finish(result, client)
    return result


def run_room(
    server: Server, users: int = 10, duration: float = 120.0, interval: float = 0.1
) -> LoadReport:
    """Run the scenario against ``server`` and return what was measured."""
    samples = server.log_path.with_suffix(".probe")
    probe = subprocess.Popen(
        [sys.executable, "-m", "tests.load.probe", server.url, str(server.process.pid),
         str(samples)],
        cwd=REPO_ROOT,
    )  # fmt: skip
    t0 = time.perf_counter()

    async def room() -> list[UserResult]:
        users_ = (
            _runner(server.url, i, duration)
            if i % RUNNER_EVERY == RUNNER_EVERY - 1
            else _user(server.url, i, duration, interval)
            for i in range(users)
        )
        return await asyncio.gather(*users_)

    try:
        results = asyncio.run(room())
    finally:
        probe.terminate()
        probe.wait()
    rows = [line.split() for line in samples.read_text().splitlines() if line.strip()]
    health = [float(r[1]) for r in rows]
    rss = [int(r[2]) for r in rows]
    return LoadReport(results, health, rss, server.rss_bytes()[1], time.perf_counter() - t0)
