"""The app under a room full of users: latency, health and memory (issue: hardening).

Serves the app as ``make app`` does and runs the load scenario of ``tests/load/driver.py``:
``--users`` sessions (websocket clients, so that browsers do not take the server's cores) each
pick their own target task on the Adapt page and hold the "Context points" slider's arrow key
(a change every ``--interval`` seconds, sent without waiting, as a browser does) for
``--seconds``; a separate process probes the health endpoint every 0.25 s and samples the
server's resident memory. Reported: latency from a widget change to the end of the run that
answers it (p50/p95/max), health-probe latency, memory, and whether every session ends
showing its own last setting.

``--streamlit-defaults`` runs the same scenario with Streamlit's own ``runner.fastReruns`` and
``runner.postScriptGC`` (both on) instead of the app's configuration (both off), to measure
what the app's compute model (``app/compute.py``) changed.

Usage::

    python benchmarks/app_load.py                       # 10 users, 120 s
    python benchmarks/app_load.py --users 5 --seconds 30 --streamlit-defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ntkcore.experiments.machine import describe_machine, write_json  # noqa: E402
from ntkcore.zoo import cache_root  # noqa: E402
from tests.load.driver import run_room  # noqa: E402
from tests.server import serve_app  # noqa: E402

DEFAULTS = ["--runner.fastReruns", "true", "--runner.postScriptGC", "true"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--streamlit-defaults", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()

    extra = DEFAULTS if args.streamlit_defaults else []
    with tempfile.TemporaryDirectory() as logs:
        with serve_app(Path(logs), cache_root(), extra_args=extra) as server:
            report = run_room(server, args.users, args.seconds, args.interval)
    summary = report.summary()
    summary["configuration"] = "streamlit defaults" if args.streamlit_defaults else "app"
    failed = {u.user: u.final_problem for u in report.users if not u.final_ok}
    summary["failed_sessions"] = failed
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        write_json(
            args.out,
            {"summary": summary, "health": report.health, "rss": report.rss},
            meta={"command": " ".join(sys.argv), **describe_machine("cpu")},
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
