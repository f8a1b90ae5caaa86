"""The Classification page in a real browser: default view, and each Run on the CPU preset.

Serves the app as ``make app`` does, opens ``/classification`` in headless Chromium (Debian's
``/usr/bin/chromium`` through Playwright) and measures, from the browser's side:

* ``default_view_s``: from navigation to the heading and the Run button (nothing runs on
  load; the issue's goal is 10 s);
* per Run (Figure 4 with the library's small preset, Figure 4 with tiny options, Table 1 with
  the small preset): from the click on Run to the first progress bar and to the finished
  status (the goal is 60 s with visible progress, models cached), the run's own seconds from
  its status line, and the step names the progress bar showed.

Screenshots of each finished run go to ``tests/artifacts/`` (git-ignored). Timings depend on
the machine's load: the JSON records the load average before and after. Runs use the model
cache ``$NTKCORE_CACHE`` (warm it first: ``python -m ntkcore.zoo build --preset workshop``
and one ``python -m ntkcore.experiments unsupervised-transfer --preset small``).

Usage::

    python benchmarks/app_classification_page.py --out \\
        benchmarks/results/app-classification-page-cpu.json
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
#: Run name -> query string (bound widgets carry their option labels).
RUNS = {
    "figure4-small": "",
    "figure4-tiny": "?f4_methods=network&f4_methods=MAP&f4_means=finite+NTK&f4_n_train=50"
    "&f4_n_test=100",
    "table1-small": "?cls_section=Unsupervised+transfer+%28Table+1%29",
}


def measure(url: str, runs: list[str]) -> dict:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out: dict = {"runs": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        for name in runs:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            t0 = time.perf_counter()
            page.goto(f"{url}/classification{RUNS[name]}", wait_until="domcontentloaded")
            page.get_by_text("Classification with the linearized network").first.wait_for(
                timeout=60_000
            )
            page.get_by_role("button", name="Run").wait_for(timeout=60_000)
            page.get_by_text("Nothing computed yet").wait_for(timeout=60_000)
            out.setdefault("default_view_s", time.perf_counter() - t0)
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run").click()
            bar = page.locator('[data-testid="stProgress"]').first
            bar.wait_for(timeout=60_000)
            first_progress = time.perf_counter() - t0
            steps: list[str] = []
            status = page.get_by_text(re.compile(r"— done in [0-9.]+ s"))
            while not status.count():  # the progress bar's step names, as a user reads them
                try:
                    text = bar.inner_text(timeout=1_000).split(" · ")[0].strip()
                except Exception:  # noqa: BLE001 (the bar went away: the run finished)
                    text = ""
                if text and (not steps or steps[-1] != text):
                    steps.append(text)
                page.wait_for_timeout(250)
                if time.perf_counter() - t0 > 900:
                    raise TimeoutError(f"{name} did not finish in 900 s")
            done = time.perf_counter() - t0
            run_s = float(re.search(r"done in ([0-9.]+) s", status.first.inner_text()).group(1))
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(ARTIFACTS / f"benchmark-classification-{name}.png"),
                            full_page=True)  # fmt: skip
            out["runs"][name] = {"first_progress_s": first_progress, "done_s": done,
                                 "run_s": run_s, "steps": steps}  # fmt: skip
            print(name, json.dumps(out["runs"][name]), flush=True)
            page.close()
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    return serve_and_measure(lambda url: measure(url, args.runs), args.out)


if __name__ == "__main__":
    sys.exit(main())
