"""AppTest tests of the Classification page: nothing runs on load, Run with tiny options
through the widgets, numbers against the library's own call, view controls that redraw
without recomputing, the cache, stale and failed runs, the Table 1 tab, and the GPU preset
offered only with a GPU.

The runs are real (LeNet-3 on the shipped MNIST images); the options set here keep each to
seconds once LeNet-3 and the autoencoder are cached (about 10 s and 15 s to train when not).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

from ntkcore.experiments import classification as experiments
from ntkcore.experiments.registry import ExperimentTables
from tests.apptest_helpers import reproduce_snippets
from tests.figures import values
from tests.test_app import FIRST_RUN_TIMEOUT, _assert_clean, _figure, _open, _run_button, _traces

PAGE = "views/classification.py"
TINY = {"f4_methods": ["network", "map"], "f4_means": ["zero"], "f4_n_train": 50,
        "f4_n_test": 100}  # fmt: skip
#: The library call the tiny widgets stand for.
TINY_CALL = {"methods": ("network", "map"), "means": ("zero",), "n_train": 50, "n_test": 100}
TRANSFER_TAB = "Unsupervised transfer (Table 1)"
TINY_TRANSFER = {"t1_layers": [1], "t1_methods": ["linear", "map"], "t1_n_train": 50,
                 "t1_n_test": 100}  # fmt: skip


pytestmark = pytest.mark.usefixtures("app_run_environment")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the page's calls into the library (it looks the functions up at call time)."""
    counts = {"classification": 0, "unsupervised_transfer": 0}
    for name in counts:
        real = getattr(experiments, name)

        @functools.wraps(real)
        def counted(*args: Any, _real=real, _name=name, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(experiments, name, counted)
    return counts


def _set(at: AppTest, options: dict[str, Any]) -> None:
    for key, value in options.items():
        kind = "multiselect" if isinstance(value, list) else "select_slider"
        getattr(at, kind)(key=key).set_value(value)


def _run(at: AppTest, options: dict[str, Any] = TINY) -> AppTest:
    _set(at, options)
    _run_button(at).click().run(timeout=FIRST_RUN_TIMEOUT)
    return at


def _table(at: AppTest, index: int = 0) -> pd.DataFrame:
    return at.dataframe[index].value


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _library(**options: Any) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return experiments.classification(**options)
    finally:
        torch.set_num_threads(threads)


def test_default_view_explains_and_runs_nothing(calls):
    at = _open(PAGE)
    _assert_clean(at)
    assert at.title[0].value == "Classification with the linearized network"
    assert not at.get("plotly_chart")
    assert any("Nothing computed yet" in m.value for m in at.markdown)
    # what the page shows, and the honest comparison with the paper
    assert any("calibration goes the other way" in m.value for m in at.markdown)
    assert any("Table 1" in m.value for m in at.markdown)
    assert _run_button(at) is not None
    assert sum(calls.values()) == 0
    # no GPU here: only the CPU preset, and the page says why the GPU one is hidden
    assert list(at.radio(key="cls_preset").options) == ["CPU (LeNet-3)"]
    assert any("offered only when a CUDA GPU is present" in c.value for c in at.caption)
    assert any("GPU preset is hidden" in i.value for i in at.info)
    # the defaults are the library's small preset
    assert at.select_slider(key="f4_n_train").value == 500
    assert at.radio(key="f4_layers").value == "last"
    assert at.multiselect(key="f4_methods").value == ["network", "map", "laplace", "vi"]


@pytest.mark.slow
def test_run_shows_the_numbers_the_library_computes(calls, monkeypatch):
    at = _run(_open(PAGE))
    _assert_clean(at)
    assert calls["classification"] == 1
    expected = _library(**TINY_CALL).main.set_index("method")
    table = _table(at).set_index("method")
    assert list(table.index) == ["network", "finite NTK · MAP"]
    for shown, method in (("network", "network"), ("finite NTK · MAP", "map")):
        for column in ("accuracy", "nll", "ece"):
            assert table.loc[shown, column] == pytest.approx(
                expected.loc[method, column], rel=1e-12
            ), (shown, column)
    metrics = _metrics(at)
    assert metrics["Network accuracy"] == f"{expected.loc['network', 'accuracy']:.1%}"
    assert metrics["Best GLM accuracy"] == f"{expected.loc['map', 'accuracy']:.1%}"
    assert metrics["Best GLM ECE"] == f"{expected.loc['map', 'ece']:.3f}"

    # the metric panels plot the table; the reliability diagram its bins
    traces = _traces(_figure(at, 0))
    for label, method in (("network", "network"), ("finite NTK · MAP", "map")):
        assert values(traces[label]["y"]) == pytest.approx([expected.loc[method, "accuracy"]])
        assert values(traces[f"{label} [NLL]"]["y"]) == pytest.approx(
            [expected.loc[method, "nll"]]
        )
    diagram = _traces(_figure(at, 1))
    assert "perfect calibration" in diagram
    assert values(diagram["finite NTK · MAP [count]"]["y"]).sum() == 100
    assert {"network", "finite NTK · MAP"} <= set(diagram)

    # the verdict list puts each method on the line its mean confidence − accuracy says
    verdict = next(m.value for m in at.markdown if m.value.startswith("**In this run**"))
    lines = {line.split(":")[0]: line for line in verdict.splitlines()[1:]}
    for label in ("network", "finite NTK · MAP"):
        gap = table.loc[label, "mean_confidence"] - table.loc[label, "accuracy"]
        line = ("- calibrated on average (within 0.02)" if abs(gap) < 0.02
                else "- **over**-confident" if gap > 0 else "- **under**-confident")  # fmt: skip
        assert label in lines[line], (label, gap, verdict)
        assert all(label not in other for key, other in lines.items() if key != line)
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"Download the metrics (CSV)", "Download the reliability bins (CSV)"} <= labels

    # the page's own snippet reproduces the table
    snippets = [c for c in reproduce_snippets(at) if "experiments.classification import" in c]
    assert len(snippets) == 1
    assert "n_train=50" in snippets[0] and "means=('zero',)" in snippets[0]
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: None)
    namespace: dict[str, Any] = {}
    exec(compile(snippets[0], "<reproduce>", "exec"), namespace)  # noqa: S102
    reproduced = namespace["tables"].main.set_index("method")
    np.testing.assert_allclose(
        reproduced[["accuracy", "nll", "ece"]].to_numpy(),
        expected[["accuracy", "nll", "ece"]].to_numpy(), rtol=1e-12,
    )


def test_view_controls_redraw_without_running_again(calls):
    at = _run(_open(PAGE))
    before = _figure(at, 0)
    at.pills(key="f4_shown").set_value(["finite NTK · MAP"]).run()
    _assert_clean(at)
    assert {t for t in _traces(_figure(at, 0)) if "[" not in t} == {"finite NTK · MAP"}
    assert set(_traces(_figure(at, 1))) == {
        "perfect calibration", "finite NTK · MAP", "finite NTK · MAP [count]"
    }
    assert _figure(at, 0) != before
    assert calls["classification"] == 1
    # Run again with the same options: the process-wide cache answers
    _run_button(at).click().run()
    assert calls["classification"] == 1
    assert any("Computed in" in c.value for c in at.caption)


def test_changed_settings_mark_the_result_stale_and_a_failure_keeps_it(calls, monkeypatch):
    at = _run(_open(PAGE))
    before = _table(at)
    at.select_slider(key="f4_n_train").set_value(100)

    def refuse(**options: Any) -> Any:
        raise ValueError("n_train = 100 is refused in this test")

    monkeypatch.setattr(experiments, "classification", refuse)
    _run_button(at).click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Cannot run with these settings: n_train = 100 is refused in this test"
    ]
    assert any("earlier settings" in i.value and "n_train" in i.value for i in at.info)
    pd.testing.assert_frame_equal(_table(at), before)  # the last result stays on screen


def test_every_option_reaches_the_library_call(calls, monkeypatch):
    seen: list[dict[str, Any]] = []

    def record(**options: Any) -> Any:
        seen.append(options)
        raise ValueError("recorded")

    monkeypatch.setattr(experiments, "classification", record)
    at = _open(PAGE)
    _set(at, {**TINY, "f4_vi_steps": 50, "f4_prior": "0.1"})
    at.radio(key="f4_layers").set_value("all")
    at.radio(key="f4_link").set_value("mc")
    at.selectbox(key="f4_dataset").set_value("fashion-mnist")
    at.number_input(key="f4_seed").set_value(3)
    _run_button(at).click().run()
    assert len(seen) == 1
    options = {k: v for k, v in seen[0].items() if k != "progress"}
    assert options == {
        "preset": "small", "dataset": "fashion-mnist", "arch": ("lenet3",),
        "methods": ("network", "map"), "means": ("zero",), "n_train": 50, "n_test": 100,
        "layers": 0, "prior_variance": 0.1, "link": "mc", "vi_steps": 50, "seed": 3,
        "device": torch.device("cpu"),
    }  # fmt: skip


def test_empty_choices_warn_instead_of_running(calls):
    at = _open(PAGE)
    at.multiselect(key="f4_methods").set_value([])
    _run_button(at).click().run()
    assert any("Choose at least one method" in w.value for w in at.warning)
    assert calls["classification"] == 0


@pytest.mark.slow
def test_transfer_tab_runs_table1_with_tiny_options(calls):
    at = _open(PAGE)
    at.session_state["cls_section"] = TRANSFER_TAB
    at.run()
    _assert_clean(at)
    assert any("Transferring an unsupervised network" in m.value for m in at.markdown)
    assert len([b for b in at.button if b.label == "Run"]) == 1  # only the open tab runs
    _run(at, TINY_TRANSFER)
    _assert_clean(at)
    assert calls == {"classification": 0, "unsupervised_transfer": 1}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = experiments.unsupervised_transfer(
            layers=(1,), methods=("linear", "map"), n_train=50, n_test=100
        ).set_index("features")
    finally:
        torch.set_num_threads(threads)
    table = _table(at).set_index("features")
    assert table.loc["top 1 layer", "accuracy"] == pytest.approx(
        expected.loc["top-1", "accuracy"], rel=1e-12
    )
    assert table.loc["activations", "accuracy"] == pytest.approx(
        expected.loc["activations", "accuracy"], rel=1e-12
    )
    assert table.loc["activations", "paper"] == 62.87  # the paper's Table 1 beside ours
    traces = _traces(_figure(at))
    assert values(traces["finite NTK · MAP"]["y"]) == pytest.approx(
        [expected.loc["top-1", "accuracy"]]
    )
    assert "linear classifier [ECE]" in traces
    assert any("unsupervised_transfer(" in c for c in reproduce_snippets(at))


def test_gpu_preset_offered_only_with_a_gpu(calls, monkeypatch):
    """With CUDA reported present the GPU preset appears and fills Figure 4's depth sweep
    (rendering only: nothing runs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    at = _open(PAGE)
    _assert_clean(at)
    preset = at.radio(key="cls_preset")
    assert list(preset.options) == ["CPU (LeNet-3)", "GPU (PreResNets)"]
    assert not any("offered only when a CUDA GPU" in c.value for c in at.caption)
    preset.set_value("full").run()
    _assert_clean(at)
    assert at.multiselect(key="f4_archs").value == ["preresnet20", "preresnet56", "preresnet110"]
    assert at.selectbox(key="f4_dataset").value == "fashion-mnist-32"
    assert at.radio(key="f4_layers").value == "all"
    assert at.select_slider(key="f4_n_train").value == 2000
    assert sum(calls.values()) == 0


def test_several_architectures_draw_the_depth_sweep(calls, monkeypatch):
    """How the page shows the GPU preset's result (three PreResNets): lines against depth and
    one reliability diagram at a time. The tables are a tiny LeNet-3 run relabelled as three
    architectures with shifted accuracies (display only: no GPU here)."""
    tiny = _library(**TINY_CALL)
    archs = ("preresnet20", "preresnet56", "preresnet110")

    def relabel(table: pd.DataFrame, shift: bool) -> pd.DataFrame:
        parts = []
        for depth, arch in enumerate(archs):
            part = table.assign(arch=arch)
            if shift:
                part = part.assign(accuracy=part["accuracy"] - 0.01 * depth)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    sweep = ExperimentTables({
        "main": relabel(tiny.main, True), "reliability": relabel(tiny["reliability"], False),
        "evidence": relabel(tiny["evidence"], False),
    })  # fmt: skip
    monkeypatch.setattr(experiments, "classification", lambda **options: sweep)
    at = _run(_open(PAGE))
    _assert_clean(at)
    traces = _traces(_figure(at, 0))
    network = traces["network"]
    assert list(network["x"]) == list(archs)
    expected = tiny.main.set_index("method").loc["network", "accuracy"]
    np.testing.assert_allclose(values(network["y"]), expected - 0.01 * np.arange(3))
    assert "arch" in _table(at).columns
    assert "Network accuracy" not in {m.label for m in at.metric}  # one value per depth
    control = at.segmented_control(key="f4_reliability_arch")
    assert list(control.options) == list(archs)
    control.set_value("preresnet110").run()
    assert "preresnet110" in _figure(at, 1)["layout"]["title"]["text"]
