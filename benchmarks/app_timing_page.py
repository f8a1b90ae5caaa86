"""The Timing page in a real browser: default view, and each Run on the small preset.

Serves the app as ``make app`` does, opens ``/timing`` in headless Chromium (Debian's
``/usr/bin/chromium`` through Playwright) and measures, from the browser's side:

* ``default_view_s``: from navigation to the heading and the Run button (nothing runs on
  load; the issue's goal is 10 s);
* per measurement (time vs n, time vs p, Fisher-vector products) on the small preset: from the
  click on Run to the first progress bar, to the first live point, and to the finished status
  (the goal is 60 s with visible progress), and the run's own seconds from its status line.

Screenshots of each finished panel go to ``tests/artifacts/`` (git-ignored). Timings depend
on the machine's load: the JSON records the load average before and after.

Usage::

    python benchmarks/app_timing_page.py --out benchmarks/results/app-timing-page-cpu.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from benchmarks.browser_timing import serve_and_measure  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
PANELS = {"timing-n": "Time vs n", "timing-p": "Time vs p",
          "fisher-products": "Fisher-vector products"}  # fmt: skip


def measure(url: str, panels: list[str]) -> dict:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out: dict = {"runs": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        t0 = time.perf_counter()
        page.goto(f"{url}/timing", wait_until="domcontentloaded")
        page.get_by_text("Timing: how fast").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Run").wait_for(timeout=60_000)
        out["default_view_s"] = time.perf_counter() - t0
        for panel in panels:
            label = PANELS[panel]
            page.get_by_text(label, exact=True).first.click()
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run").click()
            page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
            first_progress = time.perf_counter() - t0
            page.get_by_text("so far").first.wait_for(timeout=300_000)
            first_point = time.perf_counter() - t0
            status = page.get_by_text(re.compile(r"— done in [0-9.]+ s"))
            status.first.wait_for(timeout=600_000)
            done = time.perf_counter() - t0
            run_s = float(re.search(r"done in ([0-9.]+) s", status.first.inner_text()).group(1))
            page.wait_for_timeout(3000)
            page.screenshot(path=str(ARTIFACTS / f"benchmark-{panel}.png"))
            out["runs"][panel] = {
                "first_progress_s": first_progress, "first_point_s": first_point,
                "done_s": done, "run_s": run_s,
            }  # fmt: skip
            print(panel, json.dumps(out["runs"][panel]), flush=True)
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panels", nargs="+", default=list(PANELS), choices=list(PANELS))
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    return serve_and_measure(lambda url: measure(url, args.panels), args.out)


if __name__ == "__main__":
    sys.exit(main())
