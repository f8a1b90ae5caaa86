"""The app's speed goals in a real browser (issue: the app people open, "Speed").

Serves the app as ``make app`` does and drives headless Chromium (Debian's ``/usr/bin/chromium``
through Playwright) to time, with every zoo model cached:

* ``default view``: each page of ``app.pages.PAGES`` opened in a fresh session, until its
  first run has ended (and, on pages that draw a figure by default, the figure is drawn).
  Goal: within 10 s.
* ``adapt load``: the Adapt page opened at ``/?dataset=D&arch=A`` (Adapt is the first page, served at ``/``) for every zoo network
  the page offers for every task (the URL binds the widgets), until its figure is drawn and
  the run has ended. Goal: within 3 s.
* ``adapt slider``: on that page, one step of the "Context points" slider (arrow key) until
  the figure has changed. Goal: within 1 s.

Timings depend on the machine's load: the script prints the load average before and after.
Usage::

    python benchmarks/app_pages.py --repeats 3 --out benchmarks/results/app-pages-cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
GOALS_S = {"default view": 10.0, "adapt load": 3.0, "adapt slider": 1.0}


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
            for _ in range(repeats):
                seconds = timed_load(browser, f"{url}/?{query}")
                _record(out, f"adapt load: {dataset} / {arch}", seconds)
            context = browser.new_context(viewport={"width": 1400, "height": 1500})
            page = context.new_page()
            page.goto(f"{url}/?{query}", wait_until="domcontentloaded")
            page.wait_for_selector(FIGURE, state="visible", timeout=1000 * TIMEOUT_S)
            wait_idle(page)
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
