"""Streamlit AppTest tests: every page renders, shows its figure and reacts to its widgets.

Each page listed in ``PAGES`` is run headless through ``streamlit.testing.v1.AppTest`` from the
real entry point (``st.navigation``). The Plotly figure spec Streamlit would send to the browser
is parsed and its traces are checked by name and content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import ntkcore
from app import learn_content
from app.learn_content import EXERCISES, NETWORKS
from app.pages import PAGES as PAGE_SPECS
from ntkcore import data, zoo
from ntkcore.experiments import tour
from tests.figures import values as _values

APP = Path(__file__).resolve().parents[1] / "app"
ENTRY = APP / "streamlit_app.py"

#: Page file (relative to app/) -> trace names its first figure must contain (once a run
#: exists, for the pages in RUN_FIRST).
PAGES: dict[str, set[str]] = {
    "views/adapt.py": {"posterior mean", "±2σ", "context", "true function", "network"},
    "views/classification.py": {"network", "finite NTK · MAP", "finite NTK · MAP [ECE]"},
    "views/compare.py": {"posterior mean", "±2σ", "context", "true function", "network"},
    "views/curves.py": {"ntk", "no-retrain"},
    "views/learn.py": {"network, x = 0", "linearization, x = 0", "relative error", "threshold"},
    "views/similarity.py": {"mnist1-mnist2 · kernel", "mnist1-mnist2 · parameter"},
    "views/timing.py": {"function", "parameter-fd", "∝ n (linear)"},
}


def _run_button(at: AppTest) -> Any:
    buttons = [b for b in at.button if b.label == "Run"]
    assert len(buttons) == 1, [b.label for b in at.button]
    return buttons[0]


def _run_timing_tiny(at: AppTest) -> None:
    """Timing draws after Run: tiny sweep options through its widgets, then Run."""
    at.multiselect(key="sizes").set_value([50, 100])
    at.select_slider(key="hidden").set_value(2)
    at.multiselect(key="methods").set_value(["function", "parameter-fd"])
    at.select_slider(key="test_points").set_value(50)
    _run_button(at).click().run()


def _run_classification_tiny(at: AppTest) -> None:
    """Classification draws after Run: the network and the finite-NTK MAP on 50 training and
    100 test images (seconds; LeNet-3 trains first, about 10 s, when the cache is cold)."""
    at.multiselect(key="f4_methods").set_value(["network", "map"])
    at.multiselect(key="f4_means").set_value(["zero"])
    at.select_slider(key="f4_n_train").set_value(50)
    at.select_slider(key="f4_n_test").set_value(100)
    _run_button(at).click().run(timeout=FIRST_RUN_TIMEOUT)


def _run_similarity_tiny(at: AppTest) -> None:
    """Similarity draws after Run: 2 seeds of MNIST1 and MNIST2 (4 LeNet-3s trained for one
    epoch: the model cache may be cold), 10 probe images."""
    from ntkcore.experiments import similarity

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(similarity.TRAINING, "epochs", 1)
        at.number_input(key="sim_seeds").set_value(2)
        at.number_input(key="sim_probes").set_value(10)
        at.pills(key="sim_pairs").set_value(["mnist1-mnist2"])
        _run_button(at).click().run(timeout=FIRST_RUN_TIMEOUT)


def _run_curves_tiny(at: AppTest) -> None:
    """Adaptation curves draw after Run: sinusoids (its source MLP trains in seconds on a cold
    cache), two methods, two sizes, two target tasks."""
    at.multiselect(key="cv_methods").set_value(["ntk", "no-retrain"])
    at.multiselect(key="cv_sizes").set_value([5, 10])
    at.number_input(key="cv_tasks").set_value(2)
    _run_button(at).click().run(timeout=FIRST_RUN_TIMEOUT)


#: Pages whose figure appears only after a Run button: page -> how to run it with tiny options.
RUN_FIRST: dict[str, Callable[[AppTest], None]] = {
    "views/classification.py": _run_classification_tiny,
    "views/curves.py": _run_curves_tiny,
    "views/similarity.py": _run_similarity_tiny,
    "views/timing.py": _run_timing_tiny,
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
    """The Adapt page's score table, indexed by method, at full precision; checks that the
    Markdown table the page shows holds the same rows, rounded as stated."""
    from app.views.adapt import LAST_RESULT_KEY, SCORE_FORMATS

    scores = pd.DataFrame(at.session_state[LAST_RESULT_KEY].scores).set_index("method")
    shown = [m.value for m in at.markdown if m.value.startswith("| method |")]
    assert len(shown) == 1, "one scores table"
    lines = shown[0].splitlines()
    assert lines[0] == "| method | " + " | ".join(scores.columns) + " |"
    body = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    assert [row[0] for row in body] == list(scores.index)
    for row in body:
        for column, text in zip(scores.columns, row[1:], strict=True):
            assert text == format(scores.loc[row[0], column], SCORE_FORMATS[column])
    return scores


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
    if page in RUN_FIRST:
        RUN_FIRST[page](at)
        _assert_clean(at)
    names = set(_traces(_figure(at)))
    assert PAGES[page] <= names, f"missing traces {PAGES[page] - names}"


def test_markdown_table_formats_aligns_and_escapes():
    from app.common import markdown_table

    table = markdown_table(
        [
            {"method": "a|b", "MSE": 0.0123456, "cover": 0.951},
            {"method": "c", "MSE": 2e-7, "cover": 1},
        ],
        {"MSE": ".3g", "cover": ".2f"},
    )
    assert table.splitlines() == [
        "| method | MSE | cover |",
        "|---|---:|---:|",
        "| a\\|b | 0.0123 | 0.95 |",
        "| c | 2e-07 | 1.00 |",
    ]
    with pytest.raises(ValueError, match="at least one row"):
        markdown_table([], {})


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
        assert {"Solve time", "Strategy", "Parameters p", "Band accuracy"} <= set(metrics)
        # 20 context points of a 3,401-parameter network: the variances are exact
        assert metrics["Band accuracy"] == "exact"
        assert any(c.value == "Band: exact (to solver tolerance)." for c in at.caption)
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
            ("radio", "precision", "float64"),
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
        if key == "precision":  # the page's float64 posterior is the library's, to 1e-9
            task = data.load("sinusoids", seed=at.number_input(key="seed").value)
            model = zoo.preset(at.selectbox(key="arch").value).load().double()
            x, y = task.context(at.slider(key="n_context").value)
            post = ntkcore.adapt(
                model, x, y, noise_variance=1e-3, prior_variance=1e-2, mean="zero"
            )
            expected = post.predict(task.test[0]).mean[:, 0].numpy()
            shown = _values(traces["posterior mean"]["y"])
            order = np.argsort(task.test[0][:, 0].numpy())
            np.testing.assert_allclose(shown, expected[order], rtol=1e-9, atol=1e-9)

    def test_baselines_are_drawn_and_scored_as_the_library_scores_them(self, at: AppTest):
        from ntkcore import metrics
        from ntkcore.experiments import methods

        at.multiselect(key="baselines").set_value(["RBF GP", "ABLR"]).run(timeout=300)
        _assert_clean(at)
        traces = _traces(_figure(at))
        assert {"RBF GP", "ABLR"} <= set(traces)
        scores = _scores(at)
        task = data.load("sinusoids", seed=at.number_input(key="seed").value)
        x, y = task.context(at.slider(key="n_context").value)
        x_test, y_test = task.test
        source = methods.cached_source("sinusoids", at.selectbox(key="arch").value)
        for label, name in (("RBF GP", "rbf-gp"), ("ABLR", "ablr")):
            mean, _ = methods.prepared(name, source).fit(x, y).predict(x_test)
            assert scores.loc[label, "MSE"] == pytest.approx(metrics.mse(mean, y_test), rel=1e-6)
        assert np.isfinite(scores.loc["network (no retraining)", "NLL"])

    def test_spatial_task_draws_maps(self, at: AppTest):
        at.selectbox(key="dataset").set_value("spatial").run(timeout=300)
        _assert_clean(at)
        names = set(_traces(_figure(at)))
        assert {"target map (truth)", "posterior mean", "context points"} <= names

    def test_image_task_draws_a_strip_that_matches_the_library(self, at: AppTest):
        from app.views.adapt import LAST_RESULT_KEY, STRIP_IMAGES

        at.selectbox(key="dataset").set_value("faces-rotation").run(timeout=300)
        _assert_clean(at)
        spec = _figure(at)
        titles = [a["text"] for a in spec["layout"]["annotations"]]
        assert len(titles) == STRIP_IMAGES
        assert any(c.value.startswith(f"The first {STRIP_IMAGES} of") for c in at.caption)
        # The library, called as the page's snippet says (float32 network, default settings).
        task = data.load("faces-rotation", seed=at.number_input(key="seed").value)
        model = zoo.preset(at.selectbox(key="arch").value).load()
        x, y = task.context(at.slider(key="n_context").value)
        post = ntkcore.adapt(
            model, x, y, noise_variance=at.select_slider(key="noise_variance").value,
            prior_variance=at.select_slider(key="prior_variance").value, mean="zero",
        )  # fmt: skip
        pred = post.predict(task.test[0][:STRIP_IMAGES])
        result = at.session_state[LAST_RESULT_KEY]
        torch.testing.assert_close(
            torch.as_tensor(result.mean[:STRIP_IMAGES]), pred.mean, rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            torch.as_tensor(result.variance[:STRIP_IMAGES]), pred.variance, rtol=1e-3, atol=1e-7
        )
        transform = task.meta.transform
        scale, shift = float(transform["y_std"]), float(transform["y_mean"])
        for title, m, v in zip(titles, pred.mean[:, 0], pred.variance[:, 0], strict=True):
            shown = re.search(r"pred (-?\d+)° ± (\d+)°", title)
            assert shown, title
            assert abs(int(shown[1]) - (shift + scale * float(m))) <= 0.5 + 1e-3
            assert abs(int(shown[2]) - 2 * scale * float(v) ** 0.5) <= 0.5 + 1e-3

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


def _latex_numbers(text: str) -> list[float]:
    """The numbers printed after "= " in a LaTeX string (plain decimals, or a ×10^k form)."""
    numbers = []
    for mantissa, exponent in re.findall(r"= (-?[0-9.]+)(?:\\times 10\^\{(-?\d+)\})?", text):
        numbers.append(float(mantissa) * 10.0 ** int(exponent or 0))
    return numbers


def test_learn_exercises_fill_valid_widget_values():
    """Every exercise setting is a value its widget offers (checked without running the app)."""
    options = {
        "net": set(NETWORKS),
        "line_layers": set(learn_content.LAYERS),
        "line_range": set(learn_content.LINE_RANGES),
        "line_threshold": set(learn_content.THRESHOLDS),
        "post_noise": set(learn_content.NOISE_VARIANCES),
        "post_prior": set(learn_content.PRIOR_VARIANCES),
        "post_mean": set(learn_content.PRIOR_MEANS),
        "kernel_scale": set(learn_content.KERNEL_SCALES),
        "cost_p": set(learn_content.P_GRID),
        "cost_linearize": set(learn_content.COST_PARAMS),
        "fd_scheme": set(learn_content.FD_SCHEMES),
        "fd_n": set(learn_content.FD_POINTS),
    }
    ranges = {"line_seed": (0, 10_000), "kernel_points": (5, 61), "post_n": (1, 50)}
    for name, exercise in EXERCISES.items():
        assert exercise.title and exercise.question and exercise.look_for, name
        assert exercise.section in (1, 2, 3, 4, 5), name
        for key, value in exercise.settings.items():
            if key in options:
                assert value in options[key], (name, key, value)
            elif key in ranges:
                assert ranges[key][0] <= value <= ranges[key][1], (name, key, value)
            else:
                assert key == "post_x", (name, key)  # checked against the task's range below
        net = NETWORKS[exercise.settings.get("net", learn_content.DEFAULT_NETWORK)]
        if "post_x" in exercise.settings:
            x_test = data.load(net.dataset, seed=1).test[0]
            assert x_test.min() <= exercise.settings["post_x"] <= x_test.max()
    for defaults in learn_content.TASK_DEFAULTS.values():
        assert defaults["post_noise"] in options["post_noise"]
        assert defaults["post_prior"] in options["post_prior"]


class TestLearnPage:
    """The Learn page: six figures, each section's widgets, the exercises, the Run button.

    One app session per class (the page's first run computes every section): widget changes
    accumulate, and each test compares the figure before and after its own change.
    """

    #: Figure order on the page.
    FIGURES = ("path", "function", "kernel", "posterior", "costs", "fd")

    @pytest.fixture(scope="class")
    def at(self, ntkcore_cache: Path) -> Iterator[AppTest]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
            threads = torch.get_num_threads()
            at = _open("views/learn.py")
            _assert_clean(at)
            yield at
            torch.set_num_threads(threads)

    def _figure(self, at: AppTest, name: str) -> dict[str, Any]:
        return _figure(at, self.FIGURES.index(name))

    def test_defaults_render_every_section(self, at: AppTest):
        assert len(at.get("plotly_chart")) == len(self.FIGURES)
        assert at.title[0].value.startswith("Learn")
        path = _traces(self._figure(at, "path"))
        # The linearization is a straight line in α through f(x; θ).
        lin = _values(path["linearization, x = 0"]["y"])
        np.testing.assert_allclose(np.diff(lin, 2), 0.0, atol=1e-9 * np.abs(lin).max())
        assert {"finite NTK"} == set(_traces(self._figure(at, "kernel")))
        assert {"posterior mean", "±2σ", "context", "test point x*"} <= set(
            _traces(self._figure(at, "posterior"))
        )
        assert {"function space (n·o × n·o)", "parameter space (p × p)"} <= set(
            _traces(self._figure(at, "costs"))
        )
        assert "live kinks, central" in _traces(self._figure(at, "fd"))
        assert {"‖θ‖", "Largest relative error"} <= set(_metrics(at))
        assert [b.proto.label for b in at.get("download_button")]

    def test_equation_numbers_match_the_library(self, at: AppTest):
        at.selectbox(key="exercise").set_value("none").run()
        settings = {k: at.session_state[k] for k in
                    ("net", "task_seed", "post_n", "post_x", "post_noise", "post_prior",
                     "post_mean")}
        net = NETWORKS[settings["net"]]
        model = (
            zoo.preset(net.preset_id).load() if net.trained
            else tour.initial_network(net.preset_id)
        )
        task = data.load(net.dataset, seed=int(settings["task_seed"]))
        x, y = task.context(int(settings["post_n"]))
        numbers = tour.posterior_numbers(
            model, x, y, torch.tensor([float(settings["post_x"])]),
            noise_variance=float(settings["post_noise"]),
            prior_variance=float(settings["post_prior"]), mean=str(settings["post_mean"]),
        )
        latex = [e.value.strip("$\n") for e in at.latex]
        eq2 = next(text for text in latex if text.startswith(r"\text{(2)}"))
        eq3 = next(text for text in latex if text.startswith(r"\text{(3)}"))
        for text, mean, var in (
            (eq2, numbers.weight_space_mean[0], numbers.weight_space_variance[0]),
            (eq3, numbers.function_space_mean[0], numbers.function_space_variance[0]),
        ):
            printed_mean, printed_var = _latex_numbers(text)
            assert printed_mean == pytest.approx(mean, rel=1e-3)  # 4 significant digits
            assert printed_var == pytest.approx(var, rel=1e-3)
        point = _traces(self._figure(at, "posterior"))["test point x*"]
        assert _values(point["y"])[0] == pytest.approx(numbers.function_space_mean[0], rel=1e-9)

    @pytest.mark.parametrize(
        ("kind", "key", "value", "figure"),
        [
            ("radio", "line_layers", "first", "path"),
            ("select_slider", "line_range", 2.0, "path"),
            ("select_slider", "line_threshold", 0.01, "path"),
            ("number_input", "line_seed", 3, "path"),
            ("slider", "line_at", -0.5, "function"),
            ("slider", "kernel_points", 11, "kernel"),
            ("radio", "kernel_scale", "kernel", "kernel"),
            ("slider", "post_n", 3, "posterior"),
            ("slider", "post_x", 10.0, "posterior"),
            ("select_slider", "post_noise", 0.1, "posterior"),
            ("select_slider", "post_prior", 1.0, "posterior"),
            ("radio", "post_mean", "network", "posterior"),
            ("select_slider", "cost_p", 100_000, "costs"),
            ("select_slider", "fd_n", 32, "fd"),
            ("radio", "fd_scheme", "forward", "fd"),
            ("number_input", "task_seed", 4, "posterior"),
            ("selectbox", "net", "sinusoids-mlp", "path"),
        ],
    )
    def test_widget_change_changes_its_figure(
        self, at: AppTest, kind: str, key: str, value: Any, figure: str
    ):
        before = self._figure(at, figure)
        getattr(at, kind)(key=key).set_value(value).run()
        _assert_clean(at)
        assert self._figure(at, figure) != before, f"changing {key} did not change {figure}"
        if key == "fd_scheme":
            assert not any("central" in n for n in _traces(self._figure(at, "fd")))
        if key == "kernel_points":
            assert len(_values(_traces(self._figure(at, "kernel"))["finite NTK"]["x"])) == 11

    @pytest.mark.parametrize("exercise", ["breaks", "exact", "band", "kernel", "space", "kinks"])
    def test_each_exercise_fills_the_widgets(self, at: AppTest, exercise: str):
        at.selectbox(key="exercise").set_value(exercise).run()
        _assert_clean(at)
        for key, value in EXERCISES[exercise].settings.items():
            assert at.session_state[key] == value, key
        assert any(EXERCISES[exercise].title in m.value for m in at.markdown)

    def test_measure_button_adds_the_timing_panel(self, at: AppTest):
        at.selectbox(key="net").set_value("sinusoids-mlp").run()
        at.radio(key="cost_linearize").set_value("last").run()
        assert "ntkcore.adapt (auto)" not in _traces(self._figure(at, "costs"))
        at.button(key="cost_run").click().run(timeout=120)
        _assert_clean(at)
        traces = _traces(self._figure(at, "costs"))
        assert {"function space (n·o × n·o), measured", "parameter space (p × p), measured",
                "ntkcore.adapt (auto)"} <= set(traces)
        assert list(_values(traces["ntkcore.adapt (auto)"]["x"])) == [16, 32, 64, 128, 256]
        # A later change of the inputs marks the timings stale instead of showing them.
        at.radio(key="cost_linearize").set_value("all").run()
        assert "ntkcore.adapt (auto)" not in _traces(self._figure(at, "costs"))
        assert any("Press Run to update them" in i.value for i in at.info)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_setting_is_reported(value: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NTKCORE_APP_THREADS", value)
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT).run()
    assert len(at.exception) == 1
    assert "NTKCORE_APP_THREADS must be a positive integer" in at.exception[0].value
