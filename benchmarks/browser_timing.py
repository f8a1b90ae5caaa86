"""What the browser-driven page benchmarks share: headless Chromium and how to time a view.

A view is timed from an input (page load, key press, click) until the Plotly figures on the
page have changed (``SNAPSHOT``) and the app's "Running" indicator is gone (``wait_idle``).
Used by ``benchmarks/app_pages.py`` and ``benchmarks/compare_page.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
#: JavaScript: a fingerprint of every Plotly figure on the page: per trace its name, the ends
#: of y, z and marker colours (maps and image strips change colours, not y), and the titles.
SNAPSHOT = """() => {
  // Streamlit sends arrays base64-encoded ({dtype, bdata}); plain arrays otherwise.
  const ends = a => !a ? null : a.bdata ? [a.bdata.length, a.bdata.slice(0, 24), a.bdata.slice(-24)]
    : a.length ? [a[0], a[a.length - 1], a.length] : null;
  return Array.from(document.querySelectorAll('.js-plotly-plot')).map(g =>
    JSON.stringify((g.data || []).map(t => [t.name, ends(t.y), ends(t.z),
      ends((t.marker || {}).color)])) +
    JSON.stringify(((g.layout || {}).annotations || []).map(a => a.text))).join('|');
}"""
#: JavaScript: seconds from navigation start (the browser's clock) to now, to the document's
#: DOMContentLoaded and to the end of its load event.
NAVIGATION_PHASES = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  return {drawn: performance.now() / 1000, domcontentloaded: nav.domContentLoadedEventEnd / 1000,
          load: nav.loadEventEnd / 1000};
}"""
#: A figure drawn by Plotly (its SVG is laid out).
FIGURE = ".js-plotly-plot .main-svg"
TIMEOUT_S = 300.0


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Debian's, through Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_idle(page: Any, timeout_s: float = TIMEOUT_S) -> None:
    """Until the app's "Running" indicator is gone."""
    page.wait_for_selector(
        '[data-testid="stStatusWidget"]', state="detached", timeout=1000 * timeout_s
    )


def timed_change(page: Any, action: Callable[[], Any], timeout_s: float = TIMEOUT_S) -> float:
    """Seconds from ``action()`` until the figures differ from before it (then waits idle)."""
    before = page.evaluate(SNAPSHOT)
    t0 = time.perf_counter()
    action()
    while page.evaluate(SNAPSHOT) == before:
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"the figure did not change within {timeout_s:.0f} s")
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    wait_idle(page)
    return seconds


def timed_load(
    browser: Any,
    url: str,
    *,
    figure: bool = True,
    viewport=(1400, 1500),
    phases: dict[str, float] | None = None,
) -> float:
    """Seconds from opening ``url`` in a fresh session until its first figure is drawn (or,
    ``figure=False``, until the page's first run has ended). ``phases``, when given, receives
    the browser's own clock (seconds from navigation start, ``performance``):
    ``"domcontentloaded"`` (the HTML document parsed), ``"load"`` (its load event ended) and
    ``"drawn"`` (when the figure, or the heading, was first seen)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        if figure:
            page.wait_for_selector(FIGURE, state="visible", timeout=1000 * TIMEOUT_S)
        else:
            page.wait_for_selector('[data-testid="stHeading"]', timeout=1000 * TIMEOUT_S)
        if phases is not None:
            phases.update(page.evaluate(NAVIGATION_PHASES))
        wait_idle(page)
        return time.perf_counter() - t0
    finally:
        context.close()


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median, max and count per timed view."""
    return {
        name: {"median_s": statistics.median(v), "max_s": max(v), "n": len(v)}
        for name, v in times.items() if v
    }  # fmt: skip


def serve_and_measure(measure: Callable[[str], dict[str, Any]], out: Path | None) -> int:
    """Serve the app as ``make app`` does, run ``measure(url)``, add the load averages
    before and after, print the result and write it (with the machine and git commit) to
    ``out`` when given. The ``main`` of a page benchmark."""
    from ntkcore.experiments.machine import describe_machine, write_json
    from ntkcore.zoo import cache_root
    from tests.server import serve_app

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as logs, serve_app(Path(logs), cache_root()) as server:
        result = measure(server.url)
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    print(json.dumps(result, indent=1))
    if out is not None:
        write_json(out, result, meta={"command": " ".join(sys.argv), **describe_machine("cpu")})
        print(f"wrote {out}")
    return 0
