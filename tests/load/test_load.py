"""A room full of users on one server (issue: hardening for workshops).

Ten sessions on one ``app/launch.py`` server on loopback, each holding the Adapt page's
"Context points" slider's arrow key (a widget change every 100 ms, sent without waiting, as a
browser does) after picking its own target task. The short version here runs in CI; the
two-minute run is ``benchmarks/app_load.py`` (figures in ``benchmarks/RESULTS.md``).

What must hold (``tests/load/driver.py`` measures it): no exception in any run; every
session ends showing its own last setting (checked against ``data.load(...).context(n)`` for
its seed: no stale figure, no other session's data); the health endpoint answers within 1 s
throughout (probed every 0.25 s from a process of its own); the server's memory stays bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.load.driver import run_room
from tests.server import serve_app

pytestmark = pytest.mark.slow

USERS = 10
SECONDS = 20.0
#: Resident memory the server may add during the run (caches are bounded: app/compute.py).
MAX_GROWTH_MB = 600


def test_ten_sessions_holding_arrow_keys(
    ntkcore_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_app(tmp_path, ntkcore_cache) as server:
        report = run_room(server, users=USERS, duration=SECONDS, interval=0.1)
        log = server.log_tail()
    summary = report.summary()
    with capsys.disabled():
        print("\nload test:", json.dumps(summary))
    problems = {
        u.user: (u.final_problem, u.exceptions[:2])
        for u in report.users
        if not u.final_ok or u.exceptions
    }
    assert not problems, f"sessions that failed: {problems}\nserver log:\n{log}"
    assert summary["interactions"] >= USERS * SECONDS * 5  # the users really hammered
    assert summary["health_probes"] >= SECONDS * 2
    assert summary["health_over_1s"] == 0, f"health max {summary['health_max_s']:.2f} s"
    growth = summary["rss_end_mb"] - summary["rss_start_mb"]
    assert growth < MAX_GROWTH_MB, f"server memory grew by {growth:.0f} MB"
