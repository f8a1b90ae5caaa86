"""The Adaptation-curves page (``app/views/curves.py``) through Streamlit's AppTest.

Runs use the smallest options (sinusoids, whose source MLP trains in seconds on a cold model
cache: the NTK and no retraining, two context sizes, two target tasks). Numbers on the page
are checked against the library's own ``fast_adaptation`` call with the same settings; the
uploaded-data path is driven by putting a CSV file in the session as the upload panel does
(AppTest cannot upload files; ``tests/test_browser_uploads.py`` does, in Chromium).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.uploads import EXAMPLE_CSV, UserData
from ntkcore.experiments import fast_adaptation as experiment
from tests.apptest_helpers import reproduce_snippets
from tests.figures import values

ENTRY = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
PAGE = "views/curves.py"
TINY = {"methods": ("ntk", "no-retrain"), "context_sizes": (5, 10), "tasks": (0, 1)}
#: Cold cache: the sinusoids MLP trains first (seconds); warm: a second or two.
RUN_TIMEOUT = 300.0


pytestmark = pytest.mark.usefixtures("app_run_environment")  # tests/conftest.py


#: The library's function (tests patch the module's name to count the page's calls).
FAST_ADAPTATION = experiment.fast_adaptation


def _library(**options: Any) -> pd.DataFrame:
    """The library's own call, with the app's one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return FAST_ADAPTATION(dataset="sinusoids", **{**TINY, **options})
    finally:
        torch.set_num_threads(threads)


def _open() -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT)
    at.run()
    at.switch_page(PAGE).run()
    _assert_clean(at)
    return at


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _press_run(at: AppTest) -> AppTest:
    at.multiselect(key="cv_methods").set_value(list(TINY["methods"]))
    at.multiselect(key="cv_sizes").set_value(list(TINY["context_sizes"]))
    at.number_input(key="cv_tasks").set_value(len(TINY["tasks"]))
    [b for b in at.button if b.label == "Run"][0].click().run()
    return at


def _figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _curves(at: AppTest) -> dict[str, dict[str, Any]]:
    """The curves figure's traces by name."""
    return {t["name"]: t for t in _figures(at)[0]["data"]}


def _means(at: AppTest) -> pd.DataFrame:
    """The page's table of mean metric per method (rows) and context size (columns)."""
    return at.table[0].value


def test_default_view_explains_and_waits_for_run():
    at = _open()
    assert at.title[0].value == "Adaptation curves: error vs number of context points"
    assert any("Nothing computed yet" in m.value for m in at.markdown)
    assert any("significantly outperforms ABLR" in m.value for m in at.markdown)  # findings
    if not torch.cuda.is_available():
        assert any("offered only when the server has a CUDA GPU" in c.value for c in at.caption)
    assert [b.label for b in at.button] == ["Run"]
    assert not at.get("plotly_chart") and not at.table  # nothing runs on load
    # the form's defaults: Figure 6's comparison and the small preset's sizes
    assert at.multiselect(key="cv_methods").value == ["ntk", "rbf-gp", "ablr", "ablr-scratch"]
    assert at.multiselect(key="cv_sizes").value == list(experiment.preset_sizes("sinusoids")[0])


def test_dataset_change_fills_the_papers_methods_and_sizes():
    at = _open()
    at.selectbox(key="cv_dataset").set_value("spatial").run()
    _assert_clean(at)
    assert at.multiselect(key="cv_methods").value == ["ntk", "no-retrain", "last-layer",
                                                      "last-layer-6x"]  # fmt: skip
    assert at.multiselect(key="cv_sizes").value == [10, 50, 200]
    assert at.number_input(key="cv_tasks").value == 3
    assert any("malaria" in m.value for m in at.markdown)


def test_full_preset_offered_with_a_gpu_and_fills_the_form(monkeypatch: pytest.MonkeyPatch):
    """With a (faked) CUDA device the preset selector appears; "full" fills the paper's sizes.
    Nothing runs: the check is the form's wiring."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    at = _open()
    assert not any("offered only when" in c.value for c in at.caption)
    at.selectbox(key="cv_dataset").set_value("faces-rotation").run()
    at.segmented_control(key="cv_preset").set_value("full").run()
    _assert_clean(at)
    assert at.multiselect(key="cv_sizes").value == [10, 25, 50, 100, 200]
    assert at.number_input(key="cv_tasks").value == 10


def test_run_matches_the_library_and_view_controls_do_not_rerun(
    monkeypatch: pytest.MonkeyPatch,
):
    calls: list[dict[str, Any]] = []
    real = experiment.fast_adaptation

    def counted(**kwargs: Any) -> pd.DataFrame:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(experiment, "fast_adaptation", counted)
    at = _press_run(_open())
    _assert_clean(at)
    assert len(calls) == 1 and calls[0]["tasks"] == (0, 1) and calls[0]["preset"] == "small"
    expected = _library()
    means = expected.pivot_table(index="method", columns="n_context", values="mse")
    traces = _curves(at)
    assert set(traces) == {"ntk", "no-retrain"}
    for method in TINY["methods"]:
        np.testing.assert_allclose(values(traces[method]["y"]), means.loc[method], rtol=1e-5)
        assert list(values(traces[method]["customdata"])) == [5, 10]
        np.testing.assert_allclose(_means(at).loc[method].to_numpy(float), means.loc[method],
                                   rtol=1e-5)  # fmt: skip
    # the win-rate heatmap: ntk against no retraining on both tasks at each size
    heat = _figures(at)[1]["data"][0]
    per_task = expected.pivot_table(index=["n_context", "task"], columns="method", values="mse")
    wins = (per_task["ntk"] < per_task["no-retrain"]).groupby(level="n_context").mean()
    np.testing.assert_allclose(values(heat["z"]).reshape(1, -1)[0], wins.to_numpy())
    assert heat["name"] == "ntk win rate"

    # Metric, error bars, axes, methods shown: redrawn without running again.
    at.segmented_control(key="cv_metric").set_value("NLL").run()
    nll = expected.pivot_table(index="method", columns="n_context", values="nll")
    shown = values(_curves(at)["ntk"]["y"])
    if _figures(at)[0]["layout"]["meta"]["y_scale"] == "symlog":  # sign(v) log10(1 + |v|)
        shown = np.sign(shown) * (10 ** np.abs(shown) - 1)
    np.testing.assert_allclose(shown, nll.loc["ntk"], rtol=1e-5)
    assert "NLL" in _figures(at)[0]["layout"]["yaxis"]["title"]["text"]
    at.segmented_control(key="cv_spread").set_value("± 1 std").run()
    at.toggle(key="cv_log_x").set_value(True).run()
    assert _figures(at)[0]["layout"]["xaxis"]["type"] == "log"
    at.pills(key="cv_shown").set_value(["ntk"]).run()
    assert set(_curves(at)) == {"ntk"}
    _assert_clean(at)
    assert len(calls) == 1

    # Run again with the same settings: the process-wide cache answers.
    [b for b in at.button if b.label == "Run"][0].click().run()
    _assert_clean(at)
    assert len(calls) == 1


def test_show_first_sets_the_metric_when_run_is_pressed():
    at = _open()
    at.selectbox(key="cv_metric_default").set_value("95% coverage")
    _press_run(at)
    _assert_clean(at)
    assert at.segmented_control(key="cv_metric").value == "95% coverage"
    assert "nominal 0.95" in _curves(at)


def test_result_with_other_settings_is_labelled_stale():
    at = _press_run(_open())
    assert any("Computed in" in c.value for c in at.caption)
    at.session_state["cv_tasks"] = 3  # e.g. a shared link with another task count
    at.run()
    _assert_clean(at)
    notes = [i.value for i in at.info]
    assert any("computed with earlier settings" in n and "tasks" in n for n in notes), notes
    assert at.get("plotly_chart")  # the last result is still shown, labelled


def test_library_error_is_shown_and_the_previous_result_kept(monkeypatch: pytest.MonkeyPatch):
    at = _press_run(_open())
    before = _curves(at)

    def refuse(**kwargs: Any) -> pd.DataFrame:
        raise ValueError("context size(s) [10] exceed the target pool")

    monkeypatch.setattr(experiment, "fast_adaptation", refuse)
    at.number_input(key="cv_tasks").set_value(3)
    [b for b in at.button if b.label == "Run"][0].click().run()
    assert not at.exception
    assert len(at.error) == 1 and "exceed the target pool" in at.error[0].value
    assert _curves(at) == before  # the last good result stays, labelled as earlier settings
    assert any("computed with earlier settings" in i.value for i in at.info)


def test_reproduce_snippet_runs_and_gives_the_pages_numbers(monkeypatch: pytest.MonkeyPatch):
    at = _press_run(_open())
    (snippet,) = reproduce_snippets(at)
    assert "fast_adaptation(" in snippet and "tasks=(0, 1)" in snippet
    monkeypatch.setattr("plotly.graph_objects.Figure.show", lambda self, *a, **k: None)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 (the page's own snippet)
    means = namespace["table"].pivot_table(index="method", columns="n_context", values="mse")
    np.testing.assert_allclose(_means(at).loc[list(TINY["methods"])].to_numpy(float),
                               means.loc[list(TINY["methods"])].to_numpy(), rtol=1e-5)  # fmt: skip


def _use_csv(at: AppTest, text: str, name: str = "example.csv") -> UserData:
    """What the upload panel's "Use this data" stores (the page reads it from the session)."""
    content = text.encode()
    user = UserData(name, content, hashlib.sha256(content).hexdigest()[:16], ("x",), "y",
                    "domain")  # fmt: skip
    at.session_state["curves.user_data"] = user
    return user


def test_uploaded_data_run_matches_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The example CSV: a tanh MLP trained on its source rows, then every method adapts it to
    splits of the target rows; the page's numbers are the library's; the snippet runs."""
    at = _open()
    at.selectbox(key="cv_dataset").set_value("your data (CSV)").run()
    _assert_clean(at)
    assert any("Upload a CSV file" in i.value for i in at.info)
    assert not [b for b in at.button if b.label == "Run"]
    _use_csv(at, EXAMPLE_CSV)
    at.run()
    _assert_clean(at)
    at.multiselect(key="cv_methods").set_value(["ntk", "no-retrain"])
    at.multiselect(key="cv_sizes").set_value([5, 10])
    at.number_input(key="cv_tasks").set_value(2)
    [b for b in at.button if b.label == "Run"][0].click().run()
    _assert_clean(at)
    assert set(_curves(at)) == {"ntk", "no-retrain"}
    assert any("random splits of your target rows" in m.value for m in at.markdown)

    (snippet,) = reproduce_snippets(at)
    assert "train_source(" in snippet and "fast_adaptation_from_source(" in snippet
    (tmp_path / "example.csv").write_text(EXAMPLE_CSV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("plotly.graph_objects.Figure.show", lambda self, *a, **k: None)
    namespace: dict[str, Any] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(snippet, namespace)  # noqa: S102 (the page's own snippet)
    finally:
        torch.set_num_threads(threads)
    table = namespace["table"]
    assert set(table["task"]) == {0, 1} and len(table) == 2 * 2 * 2
    means = table.pivot_table(index="method", columns="n_context", values="mse")
    np.testing.assert_allclose(_means(at).loc[["ntk", "no-retrain"]].to_numpy(float),
                               means.loc[["ntk", "no-retrain"]].to_numpy(), rtol=1e-4)  # fmt: skip


def test_target_only_upload_is_explained_not_run():
    at = _open()
    at.selectbox(key="cv_dataset").set_value("your data (CSV)").run()
    content = "x,y\n" + "".join(f"{i / 10},{(i / 10) ** 2}\n" for i in range(30))
    at.session_state["curves.user_data"] = UserData(
        "target.csv", content.encode(), "0" * 16, ("x",), "y", None
    )
    at.run()
    _assert_clean(at)
    assert any("holds target rows only" in w.value for w in at.warning)
    assert not [b for b in at.button if b.label == "Run"]
