"""The app's speed goals in a real browser (issue: the app people open, "Speed").

Serves the app as ``make app`` does and drives headless Chromium (Debian's ``/usr/bin/chromium``
through Playwright) to time, with every zoo model cached:

* ``default view``: each page of ``app.pages.PAGES`` opened in a fresh session, until its
  first run has ended (and, on pages that draw a figure by default, the figure is drawn).
  Goal: within 10 s.
* ``adapt load``: the Adapt page opened at ``/?dataset=D&arch=A`` (Adapt is the first page,
  served at ``/``; the URL binds the widgets) for every zoo network the page offers for every
  task, until its figure is drawn and the run has ended, in a browser that has visited the
  page before (its HTTP and code caches warm: a reload, a returning user). Goal: within 3 s.
  ``adapt load, cold browser``: the same in a fresh browser profile (a first visit: the
  browser fetches and compiles Streamlit's and Plotly's JavaScript, 4.6 MB for Plotly), also
  timed on the browser's clock from the document's ``DOMContentLoaded`` and from the end of
  its load event to the moment the figure was first seen (page load, read two ways).
* ``floor``: a one-figure Streamlit app (``FLOOR_APP``) in a fresh browser profile: what
  Streamlit and Plotly alone cost on this machine, the bound under any cold page load.
* ``adapt slider``: on that page, one step of the "Context points" slider (arrow key) until
  the figure has changed. Goal: within 1 s.

Timings depend on the machine's load: the script prints the load average before and after.
Usage::

    python benchmarks/app_pages.py --repeats 3 --out benchmarks/results/app-pages-cpu.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.pages import PAGES  # noqa: E402
from benchmarks.browser_timing import (  # noqa: E402
    FIGURE,
    TIMEOUT_S,
    chromium,
    summary,
    timed_change,
    timed_load,
    wait_idle,
)
from ntkcore import zoo  # noqa: E402
from ntkcore.experiments.machine import describe_machine, write_json  # noqa: E402
from tests.server import serve_app  # noqa: E402

#: Pages whose default view draws a figure without pressing Run.
FIGURE_PAGES = ("adapt", "compare", "learn")
ADAPT_TASKS = ("sinusoids", "linear-to-sine", "toy-gap", "spatial", "faces-rotation")
GOALS_S = {
    "default view": 10.0,
    "adapt load": 3.0,
    "adapt load, cold browser": 3.0,
    "adapt load, cold browser, figure after domcontentloaded": 3.0,
    "adapt load, cold browser, figure after load": 3.0,
    "adapt slider": 1.0,
    "floor": 3.0,
}


def adapt_pairs() -> list[tuple[str, str]]:
    """(task, zoo network) pairs the Adapt page offers, all of whose models are cached."""
    pairs = []
    for dataset in ADAPT_TASKS:
        for preset in zoo.presets_for(dataset):
            if not preset.is_cached():
                raise SystemExit(
                    f"{preset.id} is not in the zoo cache: run `python -m ntkcore.zoo build` "
                    "first (the goals are stated with models cached)"
                )
            pairs.append((dataset, preset.id))
    return pairs


def _record(out: dict[str, list[float]], view: str, seconds: float) -> None:
    out.setdefault(view, []).append(seconds)
    print(f"{view}: {seconds:.2f} s", file=sys.stderr, flush=True)  # a long run's progress


FLOOR_APP = """
import numpy as np
import plotly.graph_objects as go
import streamlit as st

st.title("One figure")
st.plotly_chart(go.Figure(go.Scatter(x=np.arange(200), y=np.sin(np.arange(200) / 10))))
"""


def floor_timings(repeats: int) -> list[float]:
    """Cold loads of a one-figure Streamlit app: what Streamlit and Plotly alone cost here."""
    from tests.server import free_port, healthy

    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "one_figure.py"
        script.write_text(FLOOR_APP)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while not healthy(url):
                if time.monotonic() > deadline:
                    raise TimeoutError("the one-figure app did not start")
                time.sleep(0.2)
            with chromium() as browser:
                return [timed_load(browser, url) for _ in range(repeats)]
        finally:
            server.terminate()
            server.wait(30)


def measure(url: str, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with chromium() as browser:
        for _ in range(repeats):
            for spec in PAGES:
                path = "" if spec is PAGES[0] else spec.url_path  # the first page is "/"
                seconds = timed_load(browser, f"{url}/{path}", figure=spec.url_path in FIGURE_PAGES)
                _record(out, f"default view: {spec.url_path}", seconds)
        for dataset, arch in adapt_pairs():
            query = urlencode({"dataset": dataset, "arch": arch})
            for _ in range(repeats):  # a fresh browser profile each time: nothing cached
                phases: dict[str, float] = {}
                seconds = timed_load(browser, f"{url}/?{query}", phases=phases)
                _record(out, f"adapt load, cold browser: {dataset} / {arch}", seconds)
                for event in ("domcontentloaded", "load"):  # the browser's clock
                    _record(
                        out,
                        f"adapt load, cold browser, figure after {event}: {dataset} / {arch}",
                        phases["drawn"] - phases[event],
                    )
            context = browser.new_context(viewport={"width": 1400, "height": 1500})
            page = context.new_page()
            for i in range(repeats + 1):  # the first load fills the browser's cache
                t0 = time.perf_counter()
                page.goto(f"{url}/?{query}", wait_until="domcontentloaded")
                page.wait_for_selector(FIGURE, state="visible", timeout=1000 * TIMEOUT_S)
                wait_idle(page)
                if i > 0:
                    _record(out, f"adapt load: {dataset} / {arch}", time.perf_counter() - t0)
            slider = (
                page.locator('[data-testid="stSlider"]').filter(has_text="Context points")
                .locator('input[type="range"]')
            )  # fmt: skip
            for i in range(repeats):
                slider.focus()
                key = "ArrowRight" if i % 2 == 0 else "ArrowLeft"
                seconds = timed_change(page, lambda key=key, slider=slider: slider.press(key))
                _record(out, f"adapt slider: {dataset} / {arch}", seconds)
            context.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as logs:
        with serve_app(Path(logs), zoo.cache_root()) as server:
            times = measure(server.url, args.repeats)
    times["floor: one-figure Streamlit app, cold browser"] = floor_timings(args.repeats)
    load_after = os.getloadavg()
    stats = summary(times)
    for name, s in stats.items():
        goal = GOALS_S[name.split(":")[0]]
        s["goal_s"] = goal
        s["met"] = s["max_s"] <= goal
    result = {"views": stats, "raw": times, "load_average_before_after": [load_before, load_after]}
    width = max(map(len, stats))
    for name, s in stats.items():
        print(f"{name:{width}s}  median {s['median_s']:6.2f} s  max {s['max_s']:6.2f} s  "
              f"goal {s['goal_s']:4.0f} s  {'met' if s['met'] else 'NOT MET'}")  # fmt: skip
    print(f"load average {load_before} -> {load_after}")
    if args.out is not None:
        write_json(args.out, result, meta=describe_machine("cpu"))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
