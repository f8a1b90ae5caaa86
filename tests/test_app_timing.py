"""AppTest tests of the Timing page: no run on load, Run with tiny options through the widgets,
points against the library's own call, view controls that redraw without re-measuring, the
cache, the Fisher panel and the time-vs-p panel.

The page's sweeps are real measurements; the options set here keep each run to seconds.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

from ntkcore.experiments import timing
from ntkcore.experiments.figure2 import Figure2Problem
from tests.apptest_helpers import reproduce_snippets
from tests.figures import values
from tests.test_app import _assert_clean, _figure, _open, _run_button, _traces

PAGE = "views/timing.py"
TINY_N = {"sizes": [50, 100], "hidden": 2, "methods": ["function", "parameter-fd"],
          "test_points": 50}  # fmt: skip


pytestmark = pytest.mark.usefixtures("app_run_environment")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the page's calls into the library (the page imports the functions on each run)."""
    counts = {"timing_vs_n": 0, "timing_vs_p": 0, "fisher_products": 0}
    for name in counts:
        real = getattr(timing, name)

        @functools.wraps(real)
        def counted(*args: Any, _real=real, _name=name, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(timing, name, counted)
    return counts


def _set(at: AppTest, options: dict[str, Any]) -> None:
    kinds = {"sizes": "multiselect", "widths": "multiselect", "methods": "multiselect",
             "archs": "multiselect", "fisher_methods": "multiselect", "hidden": "select_slider",
             "points": "select_slider", "test_points": "select_slider", "batch": "select_slider",
             "vectors": "select_slider", "fisher_repeats": "select_slider",
             "repeats": "select_slider"}  # fmt: skip
    for key, value in options.items():
        getattr(at, kinds[key])(key=key).set_value(value)


def _table(at: AppTest) -> pd.DataFrame:
    assert len(at.dataframe) == 1
    return at.dataframe[0].value


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _reproduced_table(at: AppTest, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    """Execute the page's "Reproduce in Python" snippet (figure display switched off)."""
    snippets = [c for c in reproduce_snippets(at) if "ntkcore.experiments.timing" in c]
    assert len(snippets) == 1
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: None)
    namespace: dict[str, Any] = {}
    exec(compile(snippets[0], "<reproduce>", "exec"), namespace)  # noqa: S102
    return namespace["table"]


def test_default_view_explains_and_measures_nothing(calls):
    at = _open(PAGE)
    _assert_clean(at)
    assert at.title[0].value.startswith("Timing")
    assert not at.get("plotly_chart")
    assert any("Nothing measured yet" in m.value for m in at.markdown)
    assert any("30×" in m.value and "linear" in m.value for m in at.markdown)
    assert _run_button(at) is not None
    assert sum(calls.values()) == 0
    # no GPU here: only the small preset, and the page says why
    assert list(at.radio(key="preset").options) == ["small"]
    assert any("offered only when a CUDA GPU is present" in c.value for c in at.caption)
    assert any("Measuring on" in i.value and "cpu" in i.value for i in at.info)


def test_run_draws_the_points_the_library_measures(calls, monkeypatch):
    at = _open(PAGE)
    _set(at, TINY_N)
    _run_button(at).click().run()
    _assert_clean(at)
    assert calls["timing_vs_n"] == 1
    traces = _traces(_figure(at))
    assert {"function", "parameter-fd", "∝ n (linear)"} == set(traces)
    table = _table(at)
    assert len(table) == 4 and set(table["n"]) == {50, 100}
    for method in ("function", "parameter-fd"):
        rows = table[table["method"] == method].sort_values("n")
        np.testing.assert_allclose(values(traces[method]["x"]), rows["n"])
        np.testing.assert_allclose(values(traces[method]["y"]), rows["total_s"], rtol=1e-6)
    # the same call, made from the page's own snippet, measures the same points
    reproduced = _reproduced_table(at, monkeypatch)
    key = ["method", "n", "p", "hidden", "repeat", "tol", "test_points"]
    pd.testing.assert_frame_equal(
        table[key].reset_index(drop=True), reproduced[key].reset_index(drop=True),
        check_dtype=False,
    )
    metrics = _metrics(at)
    assert metrics["Points measured"] == f"{len(reproduced)} of {len(reproduced)}"
    assert metrics["Parameters p"] == f"{Figure2Problem(2).num_params:,}"
    assert any("Download the points" in b.label for b in at.get("download_button"))
    assert any("From n = 50 to 100" in m.value for m in at.markdown)


def test_view_controls_redraw_without_measuring_again(calls):
    at = _open(PAGE)
    _set(at, TINY_N)
    _run_button(at).click().run()
    table = _table(at)
    seconds = _figure(at)

    at.segmented_control(key="unit").set_value("forward passes").run()
    _assert_clean(at)
    traces = _traces(_figure(at))
    rows = table[table["method"] == "function"].sort_values("n")
    np.testing.assert_allclose(
        values(traces["function"]["y"]), rows["forward_equivalents"], rtol=1e-6
    )
    assert "∝ n (linear)" not in traces  # slope one means nothing in forward passes

    at.toggle(key="log").set_value(False).run()
    assert _figure(at)["layout"]["xaxis"]["type"] == "linear"
    at.pills(key="shown").set_value(["parameter-fd"]).run()
    assert set(_traces(_figure(at))) == {"parameter-fd"}
    assert _figure(at) != seconds
    assert calls["timing_vs_n"] == 1  # nothing was measured again

    # Run again with the same options: the process-wide cache answers
    _run_button(at).click().run()
    assert calls["timing_vs_n"] == 1
    assert any("Computed in" in c.value for c in at.caption)


def test_each_option_set_is_measured_once_and_cached(calls):
    at = _open(PAGE)
    _set(at, TINY_N)
    _run_button(at).click().run()
    _set(at, {"sizes": [50]})
    _run_button(at).click().run()
    assert calls["timing_vs_n"] == 2
    assert set(_table(at)["n"]) == {50}
    # back to the first options: cached, shown without measuring
    _set(at, {"sizes": [50, 100]})
    _run_button(at).click().run()
    assert calls["timing_vs_n"] == 2
    assert set(_table(at)["n"]) == {50, 100}


def test_a_failed_run_keeps_the_last_result_labelled_stale(calls, monkeypatch):
    at = _open(PAGE)
    _set(at, TINY_N)
    _run_button(at).click().run()
    before = _figure(at)

    def refuse(**options: Any) -> pd.DataFrame:
        raise ValueError("hidden width 4 is refused in this test")

    monkeypatch.setattr(timing, "timing_vs_n", refuse)
    _set(at, {"hidden": 4})
    _run_button(at).click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Cannot run with these settings: hidden width 4 is refused in this test"
    ]
    assert any("earlier settings" in i.value and "hidden" in i.value for i in at.info)
    assert _figure(at) == before  # the last result stays, labelled as such
    assert set(_table(at)["hidden"]) == {2}


def test_time_vs_p_panel(calls):
    at = _open(PAGE)
    at.radio(key="experiment").set_value("Time vs p").run()
    _assert_clean(at)
    _set(at, {"widths": [2, 4], "points": 100, "methods": ["function"], "test_points": 50})
    _run_button(at).click().run()
    _assert_clean(at)
    assert calls["timing_vs_p"] == 1 and calls["timing_vs_n"] == 0
    spec = _figure(at)
    traces = _traces(spec)
    assert set(traces) == {"function", "∝ p (linear)"}
    expected_p = [Figure2Problem(h).num_params for h in (2, 4)]
    np.testing.assert_allclose(values(traces["function"]["x"]), expected_p)
    assert spec["layout"]["xaxis"]["title"]["text"] == "parameters p"
    assert _metrics(at)["Parameters p"] == f"{expected_p[0]:,} – {expected_p[1]:,}"


def test_fisher_panel(calls, monkeypatch):
    at = _open(PAGE)
    at.radio(key="experiment").set_value("Fisher-vector products").run()
    _assert_clean(at)
    _set(at, {"archs": ["lenet3"], "fisher_methods": ["fd", "autograd"], "batch": 4,
              "vectors": 1, "fisher_repeats": 1})  # fmt: skip
    _run_button(at).click().run()
    _assert_clean(at)
    assert calls["fisher_products"] == 1
    traces = _traces(_figure(at))
    assert set(traces) == {"fd", "autograd"}
    table = _table(at)
    assert len(table) == 2 and set(table["arch"]) == {"lenet3"}
    assert math.isclose(values(traces["fd"]["y"])[0],
                        table.loc[table["method"] == "fd", "seconds_per_vector"].iloc[0],
                        rel_tol=1e-6)  # fmt: skip
    assert "fd vs autograd" in _metrics(at)
    at.segmented_control(key="fisher_unit").set_value("forward passes").run()
    np.testing.assert_allclose(
        values(_traces(_figure(at))["autograd"]["y"]),
        table.loc[table["method"] == "autograd", "forward_equivalents_per_vector"],
        rtol=1e-6,
    )
    reproduced = _reproduced_table(at, monkeypatch)
    assert list(reproduced[["arch", "method", "p", "batch", "vectors"]].itertuples(
        index=False)) == list(table[["arch", "method", "p", "batch", "vectors"]].itertuples(
        index=False))  # fmt: skip


def test_empty_choice_is_refused(calls):
    at = _open(PAGE)
    at.multiselect(key="methods").set_value([])
    _run_button(at).click().run()
    _assert_clean(at)
    assert any("at least one" in w.value for w in at.warning)
    assert sum(calls.values()) == 0


def test_full_preset_is_offered_with_a_gpu_and_fills_the_form(calls, monkeypatch):
    """With a (pretend) CUDA device the page offers the full preset, and choosing it fills
    every option with the paper's sizes; nothing runs until Run (so no GPU is touched)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Pretend GPU")
    at = _open(PAGE)
    _assert_clean(at)
    assert list(at.radio(key="preset").options) == ["small", "full"]
    assert not any("offered only when a CUDA GPU" in c.value for c in at.caption)
    assert any("Pretend GPU (cuda)" in i.value for i in at.info)
    at.radio(key="preset").set_value("full").run()
    _assert_clean(at)
    full = timing.preset_options("timing-n", "full")
    assert at.multiselect(key="sizes").value == list(full["sizes"])
    assert at.select_slider(key="hidden").value == full["hidden"]
    assert at.select_slider(key="test_points").value == full["test_points"]
    at.radio(key="experiment").set_value("Time vs p").run()
    _assert_clean(at)
    full_p = timing.preset_options("timing-p", "full")
    assert at.multiselect(key="widths").value == list(full_p["widths"])
    assert at.select_slider(key="points").value == full_p["n"]
    at.radio(key="experiment").set_value("Fisher-vector products").run()
    _assert_clean(at)
    full_fisher = timing.preset_options("fisher-products", "full", device="cuda")
    assert full_fisher["batch"] == 256
    assert at.multiselect(key="archs").value == list(full_fisher["archs"])
    assert at.select_slider(key="batch").value == 256
    assert at.select_slider(key="vectors").value == full_fisher["vectors"]
    assert sum(calls.values()) == 0
