"""Bring your own data and model, in a real browser (issue: uploads and hardening).

Upload a bad file, see the library's message, keep what was shown before; upload a good one,
see the new figure. A pickle with a payload is refused without the payload running.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from app.uploads import EXAMPLE_CSV
from ntkcore import zoo
from tests.test_browser import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    PLOT_TIMEOUT_MS,
    app_url,
    browser,
)

pytestmark = pytest.mark.browser

UPLOAD = '[data-testid="stFileUploaderDropzoneInput"]'
ERROR = '[data-testid="stAlertContentError"]'
PLOT = ".js-plotly-plot .main-svg"


class _Payload:
    """Unpickling this would create the marker directory."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _settle(page) -> None:
    """Wait until the run that an action started has finished."""
    time.sleep(1.0)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)
    time.sleep(0.5)


def _legend(page) -> list[str]:
    return page.locator(".js-plotly-plot .legendtext").all_text_contents()


def test_model_upload_refuses_pickle_and_keeps_the_previous_model(
    app_url: str, browser, tmp_path: Path  # noqa: F811
) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "weights.safetensors"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    good = tmp_path / "mlp.safetensors"
    with zoo.seeded(0):
        model = zoo.create("mlp", in_features=1, out_features=1, width=16, depth=2)
    zoo.save_model(model, good, arch="mlp", in_features=1, out_features=1, width=16, depth=2)

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/?arch=uploaded+model", wait_until="domcontentloaded")
        page.locator(UPLOAD).first.wait_for(state="attached", timeout=PLOT_TIMEOUT_MS)
        page.locator(UPLOAD).first.set_input_files(str(evil))
        page.locator(ERROR).first.wait_for(timeout=60_000)
        assert "pickle is not accepted" in page.locator(ERROR).first.inner_text()
        assert page.locator(PLOT).count() == 0

        page.locator(UPLOAD).first.set_input_files(str(good))
        page.wait_for_selector(PLOT, state="visible", timeout=120_000)
        _settle(page)
        assert page.locator(ERROR).count() == 0
        assert "posterior mean" in _legend(page)
        page.get_by_text("Model in use: mlp.safetensors (321 parameters)").wait_for()

        page.locator(UPLOAD).first.set_input_files(str(evil))
        page.locator(ERROR).first.wait_for(timeout=60_000)
        _settle(page)
        # The message is shown and the previous model's figure stays.
        assert "pickle is not accepted" in page.locator(ERROR).first.inner_text()
        assert page.locator(PLOT).first.is_visible()
        page.get_by_text("Model in use: mlp.safetensors (321 parameters)").wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        context.close()
    assert not marker.exists(), "the pickle's payload ran"


def test_csv_upload_error_keeps_the_previous_data(
    app_url: str, browser, tmp_path: Path  # noqa: F811
) -> None:
    good = tmp_path / "example.csv"
    good.write_text(EXAMPLE_CSV)
    bad = tmp_path / "semicolons.csv"
    bad.write_text("x;y;domain\n1;2;source\n3;4;target\n5;6;target\n")

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/?dataset=your+data+%28CSV%29", wait_until="domcontentloaded")
        page.locator(UPLOAD).first.wait_for(state="attached", timeout=PLOT_TIMEOUT_MS)
        page.get_by_text("Upload a CSV file and choose its columns").wait_for()

        page.locator(UPLOAD).first.set_input_files(str(good))
        page.get_by_role("button", name="Use this data").click()
        page.wait_for_selector(PLOT, state="visible", timeout=120_000)
        _settle(page)
        page.get_by_text("Data in use: example.csv (x → y)").wait_for()
        assert {"posterior mean", "context"} <= set(_legend(page))
        before = page.get_by_text("held-out test points").first.inner_text()

        page.locator(UPLOAD).first.set_input_files(str(bad))
        page.locator(ERROR).first.wait_for(timeout=60_000)
        _settle(page)
        message = page.locator(ERROR).first.inner_text()
        assert "wrong delimiter" in message and "semicolon" in message
        page.get_by_text("Data in use: example.csv (x → y)").wait_for()
        assert page.locator(PLOT).first.is_visible()
        assert page.get_by_text("held-out test points").first.inner_text() == before
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        context.close()


def test_curves_page_csv_upload_error_keeps_the_previous_data(
    app_url: str, browser, tmp_path: Path  # noqa: F811
) -> None:
    """Adaptation curves on your data: a good file gives curves after Run; a bad file then
    shows the library's message while the data in use and its curves stay."""
    good = tmp_path / "example.csv"
    good.write_text(EXAMPLE_CSV)
    bad = tmp_path / "semicolons.csv"
    bad.write_text("x;y;domain\n1;2;source\n3;4;target\n5;6;target\n")
    tiny = "&cv_methods=ntk&cv_methods=no-retrain&cv_sizes=5&cv_sizes=10&cv_tasks=2"

    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/curves?cv_dataset=your+data+%28CSV%29{tiny}",
                  wait_until="domcontentloaded")  # fmt: skip
        page.locator(UPLOAD).first.wait_for(state="attached", timeout=PLOT_TIMEOUT_MS)
        page.get_by_text("Upload a CSV file with a domain column").wait_for()
        assert page.get_by_role("button", name="Run", exact=True).count() == 0

        page.locator(UPLOAD).first.set_input_files(str(bad))  # bad first: nothing to keep
        page.locator(ERROR).first.wait_for(timeout=60_000)
        _settle(page)
        assert "wrong delimiter" in page.locator(ERROR).first.inner_text()
        assert page.get_by_text("Data in use").count() == 0

        page.locator(UPLOAD).first.set_input_files(str(good))
        page.get_by_role("button", name="Use this data").click()
        _settle(page)
        page.get_by_text("Data in use: example.csv (x → y)").wait_for()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("done in").wait_for(timeout=PLOT_TIMEOUT_MS)
        _settle(page)
        page.wait_for_selector(PLOT, state="visible", timeout=60_000)
        assert {"ntk", "no-retrain"} <= set(_legend(page))
        before = page.locator('[data-testid="stTable"]').first.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "curves-upload-after-run.png"))

        page.locator(UPLOAD).first.set_input_files(str(bad))
        page.locator(ERROR).first.wait_for(timeout=60_000)
        _settle(page)
        message = page.locator(ERROR).first.inner_text()
        assert "wrong delimiter" in message and "semicolon" in message
        page.get_by_text("Data in use: example.csv (x → y)").wait_for()
        assert page.locator(PLOT).first.is_visible()
        assert page.locator('[data-testid="stTable"]').first.inner_text() == before
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "curves-upload-bad-file-kept.png"))
    finally:
        context.close()
