"""End-to-end tests: the real app served by ``streamlit run``, opened in headless Chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (``playwright install`` cannot download
browsers on the machines that build this project). Without that browser these tests skip,
except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import ntkcore
from ntkcore import data, metrics, zoo
from ntkcore.experiments.inductive_biases import default_noise_variance
from tests.server import serve_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: URL path of every page registered in app/streamlit_app.py ("" for the default page, which
#: Streamlit serves at the root) -> (a heading the page shows, a legend entry of its figure).
PAGES: dict[str, tuple[str, str]] = {
    "": ("Adapt a trained network to a new task", "posterior mean"),
    "compare": ("Compare architectures on the same task", "posterior mean"),
}

SERVER_START_TIMEOUT = 90.0
#: Generous: with a cold model cache the first page view trains the source network.
PLOT_TIMEOUT_MS = 300_000


def _require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = (
        f"headless Chromium not found at {CHROMIUM}; install Debian's 'chromium' package "
        "(apt-get install -y chromium) to run the browser tests"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url(ntkcore_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the app as ``make app`` does (app/launch.py) on a free local port."""
    _require_chromium()
    try:
        with serve_app(tmp_path_factory.mktemp("streamlit"), ntkcore_cache) as server:
            yield server.url
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("url_path", sorted(PAGES), ids=lambda p: p or "default")
def test_page_renders_plot_without_exception(
    app_url: str, browser, url_path: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    try:
        page.goto(f"{app_url}/{url_path}", wait_until="domcontentloaded")
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        heading, legend_entry = PAGES[url_path]
        page.get_by_text(heading).first.wait_for(timeout=30_000)
        # Let the run finish (the status widget disappears) before looking for errors.
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        screenshot = tmp_path / f"{url_path or 'default'}.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 0
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        assert page.get_by_text("Page not found").count() == 0, "Streamlit did not know the URL"
        legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert legend_entry in legend, legend
        assert not page_errors, page_errors
    finally:
        context.close()


def test_adapt_slider_change_redraws(app_url: str, browser) -> None:
    """Moving a slider in the real browser reruns the page and redraws without an exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        page.get_by_text("n = 20 context points").wait_for(timeout=30_000)
        slider = (
            page.locator('[data-testid="stSlider"]')
            .filter(has_text="Context points")
            .locator('input[type="range"]')
        )
        slider.focus()
        slider.press("ArrowRight")
        page.get_by_text("n = 21 context points").wait_for(timeout=60_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator(".js-plotly-plot .main-svg").first.is_visible()
    finally:
        context.close()


def test_compare_layers_change_matches_library(app_url: str, browser) -> None:
    """Compare page: a link with two networks, a new width typed into column A; the panel's
    parameter count and test MSE equal the library's own call with the same settings, and
    the URL holds the new width (so the link reproduces the comparison)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/compare?cmp_n_models=2", wait_until="domcontentloaded")
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        page.get_by_text("B: ReLU 50, untrained").first.wait_for(timeout=60_000)
        layers = (
            page.locator('[data-testid="stTextInput"]')
            .filter(has_text="Hidden layers")
            .first.locator("input")
        )
        layers.fill("12")
        layers.press("Enter")
        title = page.locator(".js-plotly-plot .annotation-text").filter(has_text="ReLU 12")
        title.first.wait_for(timeout=60_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)
        text = title.first.text_content()
        match = re.search(r"p = ([\d,]+) · test MSE ([\d.e+-]+)", text or "")
        assert match, text
        artifacts = Path(__file__).resolve().parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "compare-width-12.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "cmp_layers1=12" in page.url

        # The library, called as the page says it does (Figure 3's GP on the 300 points).
        task = data.load("toy-gap", seed=1, variant="relu")
        x, y = task.source[0][:300], task.source[1][:300]
        with zoo.seeded(0):
            model = zoo.create("mlp", in_features=1, out_features=1, width=12, depth=1,
                               activation="relu").eval()  # fmt: skip
        post = ntkcore.adapt(model, x, y, noise_variance=default_noise_variance(model, x, y),
                             prior_variance=1.0, mean="zero")  # fmt: skip
        with torch.no_grad():
            mse = metrics.mse(post.predict(task.test[0]).mean, task.test[1])
        assert int(match.group(1).replace(",", "")) == zoo.info(
            "mlp", in_features=1, out_features=1, width=12, depth=1
        ).num_params == 37
        assert float(match.group(2)) == pytest.approx(mse, rel=5e-3)  # shown with 3 digits
    finally:
        context.close()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)]
)
def test_missing_browser_skips_except_under_ci(
    ci: str | None, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="headless Chromium not found"):
        _require_chromium()
