"""Compare-architectures page: how long its views take, in a real browser and in Python.

Serves the app as ``make app`` does (``app/launch.py``, one torch thread per session), opens
the page in headless Chromium (Debian's ``/usr/bin/chromium`` through Playwright) and times,
from the input to the moment the Plotly figure in the page has changed:

* ``load``: opening ``/compare`` in a fresh session (the default: Figure 3 left, four ReLU
  MLPs of widths 5 to 5,000 at their initialization, p up to 15,001); ``adapt_load``: the
  Adapt page's default view, alternating with it, as the baseline under the same load;
* ``prior_variance``: one step of the s² slider (all four posteriors recomputed; every
  other step returns to a cached setting);
* ``layers``: a new width typed into column A (one posterior recomputed, three cached);
* ``view``: the grid/overlay toggle (redraw only, no posterior);
* ``tanh_set``: the "Figure 3 right" button, three trained tanh MLPs of ~21,000
  parameters, until their panels are drawn and the run has ended (only when the three
  networks are in the zoo cache; their first posterior includes the Jacobian programs'
  warm-up).

Then, in-process through ``streamlit.testing.v1.AppTest``, the Python side of the same runs
(script run time, no browser): s² steps on Figure 3 left and on Figure 3 right.

Timings depend on the load of the machine: the script prints the load average before and
after. Usage::

    python benchmarks/compare_page.py --repeats 5 --out benchmarks/results/compare-page.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.browser_timing import (  # noqa: E402
    SNAPSHOT,
    chromium,
    summary,
    timed_change,
    timed_load,
    wait_idle,
)
from ntkcore.experiments.machine import describe_machine, write_json  # noqa: E402
from ntkcore.zoo import cache_root  # noqa: E402
from tests.server import serve_app  # noqa: E402


def browser_timings(url: str, repeats: int) -> dict[str, list[float]]:
    names = ("adapt_load", "load", "prior_variance", "layers", "view")
    out: dict[str, list[float]] = {k: [] for k in names}
    with chromium() as browser:
        for _ in range(repeats):
            for name, path in (("adapt_load", "adapt"), ("load", "compare")):
                out[name].append(timed_load(browser, f"{url}/{path}"))
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(f"{url}/compare", wait_until="domcontentloaded")
        page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=300_000)
        wait_idle(page)
        slider = (
            page.locator('[data-testid="stSlider"]').filter(has_text="Prior variance")
            .locator('input[type="range"]')
        )  # fmt: skip
        for i in range(repeats):
            slider.focus()
            key = "ArrowRight" if i % 2 == 0 else "ArrowLeft"
            out["prior_variance"].append(timed_change(page, lambda key=key: slider.press(key)))
        layers = (
            page.locator('[data-testid="stTextInput"]').filter(has_text="Hidden layers")
            .first.locator("input")
        )  # fmt: skip
        for i in range(repeats):

            def type_width(width: str = str(6 + i)) -> None:
                layers.fill(width)
                layers.press("Enter")

            out["layers"].append(timed_change(page, type_width))
        for i in range(repeats):
            label = "overlay" if i % 2 == 0 else "grid"
            button = page.locator('[data-testid="stButtonGroup"] button').filter(
                has_text=label
            )
            out["view"].append(timed_change(page, lambda button=button: button.first.click()))
        if _tanh_cached():  # until the three tanh panels are drawn and the run ended
            t0 = time.perf_counter()
            page.get_by_role("button", name="Figure 3 right").click()
            while "C: tanh 500-38-38" not in page.evaluate(SNAPSHOT):
                time.sleep(0.02)
            wait_idle(page)
            out["tanh_set"] = [time.perf_counter() - t0]
    return out


def _tanh_cached() -> bool:
    from ntkcore import zoo
    from ntkcore.experiments.inductive_biases import TANH_TRAINING

    for shape in ((100, 100, 100), (10, 1000, 10), (500, 38, 38)):
        preset = zoo.Preset("bench", "mlp", "toy-gap", "", {"width": shape, "depth": 3,
                            "activation": "tanh", **TANH_TRAINING},
                            {"variant": "sine", "source_seed": 0}, 0)  # fmt: skip
        if not preset.is_cached():
            return False
    return True


def python_timings(repeats: int) -> dict[str, list[float]]:
    """Script-run seconds of AppTest reruns (no browser, no websocket)."""
    import torch
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("views/compare.py").run()
    torch.set_num_threads(1)
    out: dict[str, list[float]] = {"relu_prior_variance": [], "tanh_prior_variance": []}
    grid = (1.8, 3.2, 5.6, 10.0, 18.0, 32.0, 56.0, 100.0)
    for value in grid[:repeats]:
        t0 = time.perf_counter()
        at.select_slider(key="cmp_prior_variance").set_value(value).run()
        out["relu_prior_variance"].append(time.perf_counter() - t0)
    if _tanh_cached():
        at.button(key="set-fig3-tanh").click().run()
        for value in grid[:repeats]:
            t0 = time.perf_counter()
            at.select_slider(key="cmp_prior_variance").set_value(value).run()
            out["tanh_prior_variance"].append(time.perf_counter() - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as logs:
        with serve_app(Path(logs), cache_root()) as server:
            browser = browser_timings(server.url, args.repeats)
    python = python_timings(args.repeats)
    load_after = os.getloadavg()
    result = {
        "browser": summary(browser),
        "python": summary(python),
        "raw": {"browser": browser, "python": python},
        "load_average_before_after": [load_before, load_after],
    }
    print(json.dumps({k: result[k] for k in ("browser", "python", "load_average_before_after")},
                     indent=1))  # fmt: skip
    if args.out is not None:
        meta = {"command": " ".join(sys.argv), **describe_machine("cpu")}
        write_json(args.out, result, meta=meta)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
