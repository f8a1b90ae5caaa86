"""Streamlit AppTest tests: every page renders, shows its figure and reacts to its widgets.

Each page listed in ``PAGES`` is run headless through ``streamlit.testing.v1.AppTest`` from the
real entry point (``st.navigation``). The Plotly figure spec Streamlit would send to the browser
is parsed and its traces are checked by name and content.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import ntkcore
from app.pages import PAGES as PAGE_SPECS
from ntkcore import data
from tests.figures import values as _values

APP = Path(__file__).resolve().parents[1] / "app"
ENTRY = APP / "streamlit_app.py"

#: Page file (relative to app/) -> trace names its first figure must contain.
PAGES: dict[str, set[str]] = {
    "views/adapt.py": {"posterior mean", "±2σ", "context", "true function", "network"},
    "views/compare.py": {"posterior mean", "±2σ", "context", "true function", "network"},
}

#: The first run may train the source network when the model cache is cold.
FIRST_RUN_TIMEOUT = 300.0
RUN_TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _app_environment(ntkcore_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the app at the session's model cache; undo its process-wide torch thread setting."""
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _open(page: str) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT)
    at.run(timeout=FIRST_RUN_TIMEOUT)
    at.switch_page(page).run(timeout=FIRST_RUN_TIMEOUT)
    return at


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figure(at: AppTest, index: int = 0) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) > index, f"expected a Plotly chart, found {len(charts)}"
    return json.loads(charts[index].proto.spec)


def _traces(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    traces = {t.get("name"): t for t in spec["data"]}
    assert len(traces) == len(spec["data"]), "trace names must be unique"
    return traces


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _scores(at: AppTest) -> Any:
    """The Adapt page's score table, indexed by method."""
    return at.dataframe[0].value.set_index("method")


def test_every_page_file_is_registered_and_tested():
    files = {f"views/{p.name}" for p in (APP / "views").glob("*.py") if p.name != "__init__.py"}
    assert files == {spec.file for spec in PAGE_SPECS}, "register every view in app/pages.py"
    assert files == set(PAGES), "add new pages (and their expected traces) to PAGES"
    # A pages/ folder next to the entry script switches Streamlit to legacy multipage mode for
    # deep links opened before st.navigation first runs (see app/streamlit_app.py).
    assert not (APP / "pages").exists()


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_with_expected_traces(page: str):
    at = _open(page)
    _assert_clean(at)
    names = set(_traces(_figure(at)))
    assert PAGES[page] <= names, f"missing traces {PAGES[page] - names}"


def test_entry_point_opens_adapt_by_default():
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT).run(timeout=FIRST_RUN_TIMEOUT)
    _assert_clean(at)
    assert at.title[0].value.startswith("Adapt")
    assert "posterior mean" in _traces(_figure(at))


class TestAdaptPage:
    """The Adapt page: defaults, each widget, and the error path."""

    @pytest.fixture
    def at(self) -> AppTest:
        at = _open("views/adapt.py")
        _assert_clean(at)
        return at

    def test_defaults_render_figure_and_metrics(self, at: AppTest):
        traces = _traces(_figure(at))
        context = traces["context"]
        assert len(_values(context["x"])) == at.slider(key="n_context").value == 20
        # The band encloses the posterior mean everywhere (it is mean ± 2σ, σ >= 0).
        mean_y = _values(traces["posterior mean"]["y"])
        band_y = _values(traces["±2σ"]["y"])
        m = len(mean_y)
        assert len(band_y) == 2 * m
        assert np.all(band_y[m:][::-1] <= mean_y) and np.all(mean_y <= band_y[:m])
        # Context points are the first n of the target pool of the selected task.
        task = data.load("sinusoids", seed=at.number_input(key="seed").value)
        x_context, y_context = task.context(20)
        np.testing.assert_allclose(_values(context["x"]), x_context[:, 0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(_values(context["y"]), y_context[:, 0].numpy(), rtol=1e-6)

        metrics = _metrics(at)
        assert {"Solve time", "Strategy", "Parameters p"} <= set(metrics)
        assert metrics["Strategy"] in {"dense", "function", "parameter"}
        assert metrics["Solve time"].endswith("ms")
        scores = _scores(at)
        # Conditioning on the target beats the source network on the target's test set.
        assert scores.loc["finite NTK", "MSE"] < scores.loc["network (no retraining)", "MSE"]

    @pytest.mark.parametrize(
        ("kind", "key", "value"),
        [
            ("number_input", "seed", 7),
            ("slider", "n_context", 3),
            ("select_slider", "noise_variance", 0.1),
            ("select_slider", "prior_variance", 10.0),
            ("radio", "mean", "network"),
            ("selectbox", "strategy", "function"),
            ("checkbox", "show_source", True),
        ],
    )
    def test_widget_change_rerenders(self, at: AppTest, kind: str, key: str, value: Any):
        before = _figure(at)
        getattr(at, kind)(key=key).set_value(value).run()
        _assert_clean(at)
        after = _figure(at)
        assert after != before, f"changing {key} did not change the figure"
        traces = _traces(after)
        assert PAGES["views/adapt.py"] <= set(traces)
        if key == "n_context":
            assert len(_values(traces["context"]["x"])) == value
        if key == "show_source":
            assert len(_values(traces["source"]["x"])) > 0
        if key == "strategy":
            assert _metrics(at)["Strategy"] == value

    def test_library_value_error_is_shown_and_previous_result_kept(
        self, at: AppTest, monkeypatch: pytest.MonkeyPatch
    ):
        before = _figure(at)
        real_adapt = ntkcore.adapt

        def adapt(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("strategy") == "function":
                raise ValueError("the function-space solver rejects this problem")
            return real_adapt(*args, **kwargs)

        monkeypatch.setattr(ntkcore, "adapt", adapt)
        at.selectbox(key="strategy").set_value("function").run()
        assert not at.exception
        assert len(at.error) == 1
        assert "the function-space solver rejects this problem" in at.error[0].value
        assert _figure(at) == before  # the last good figure stays on screen

        at.selectbox(key="strategy").set_value("dense").run()
        _assert_clean(at)
        assert _metrics(at)["Strategy"] == "dense"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_setting_is_reported(value: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NTKCORE_APP_THREADS", value)
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT).run()
    assert len(at.exception) == 1
    assert "NTKCORE_APP_THREADS must be a positive integer" in at.exception[0].value
