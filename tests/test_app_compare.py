"""AppTest tests of the Compare-architectures page (``app/views/compare.py``).

The page's numbers are checked against references computed here: the finite-NTK posterior of
the smallest network written out as explicit float64 GP formulas on a ``torch.func.jacrev``
Jacobian, parameter counts from ``zoo.info``, σ², s² from ``fit_hyperparameters`` and the
training record of the zoo's cache entry. Networks are tiny (the test cache may be cold);
the default view (ReLU widths 5 to 5,000 at initialization) needs no training.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

import ntkcore
from ntkcore import data, zoo
from tests.apptest_helpers import reproduce_snippets
from tests.figures import trace, trace_names
from tests.figures import values as _values

ENTRY = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
PAGE = "views/compare.py"
FIRST_RUN_TIMEOUT = 300.0
RUN_TIMEOUT = 120.0


@pytest.fixture(autouse=True)
def _app_environment(ntkcore_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _open(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=RUN_TIMEOUT)
    at.run(timeout=FIRST_RUN_TIMEOUT)
    at.query_params.update({f"cmp_{k}": v for k, v in (query or {}).items()})
    at.switch_page(PAGE).run(timeout=FIRST_RUN_TIMEOUT)
    return at


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, f"expected one Plotly chart, found {len(charts)}"
    return json.loads(charts[0].proto.spec)


def _titles(spec: dict[str, Any]) -> list[str]:
    return [a["text"] for a in spec["layout"].get("annotations", [])]


def _table(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value.set_index("network")


def _mlp(width: int, seed: int = 0) -> torch.nn.Module:
    with zoo.seeded(seed):
        return zoo.create("mlp", in_features=1, out_features=1, width=width, depth=1,
                          activation="relu").eval()  # fmt: skip


def _explicit_posterior(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
    noise: float, prior: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Latent GP posterior with kernel prior·J Jᵀ and prior mean 0, in float64 (Eq. 3)."""
    model = model.double()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def jacobian(inputs: torch.Tensor) -> torch.Tensor:
        def f(p):
            return torch.func.functional_call(model, p, (inputs.double(),))[:, 0]

        jac = torch.func.jacrev(f)(params)
        return torch.cat([j.reshape(inputs.shape[0], -1) for j in jac.values()], dim=1)

    j, j_test = jacobian(x), jacobian(x_test)
    gram = prior * j @ j.T + noise * torch.eye(x.shape[0], dtype=torch.float64)
    cross = prior * j_test @ j.T
    mean = cross @ torch.linalg.solve(gram, y.double()[:, 0])
    variance = prior * (j_test**2).sum(1) - (cross * torch.linalg.solve(gram, cross.T).T).sum(1)
    return mean.numpy(), variance.numpy()


@pytest.fixture
def at() -> AppTest:
    """The default comparison (Figure 3 left) cut to its two smallest networks."""
    at = _open({"n_models": "2"})
    _assert_clean(at)
    return at


def test_default_is_figure3_left_with_parameter_counts(at: AppTest):
    table = _table(at)
    assert list(table.index) == ["A: ReLU 5, untrained", "B: ReLU 50, untrained"]
    for width, row in zip((5, 50), table.itertuples(), strict=True):
        info = zoo.info("mlp", in_features=1, out_features=1, width=width, depth=1,
                        activation="relu")  # fmt: skip
        assert row.p == info.num_params == 3 * width + 1
        assert not row.trained
    spec = _figure(at)
    assert _titles(spec)[0].startswith("A: ReLU 5, untrained<br>p = 16 · test MSE ")
    assert {"posterior mean", "posterior mean · B: ReLU 50, untrained"} <= set(trace_names(spec))


def test_posterior_matches_explicit_gp_formulas(at: AppTest):
    """Panel A against Eq. 3 written out: σ² = max(10⁻³, the network's MSE), s² = 1."""
    task = data.load("toy-gap", seed=1, variant="relu")
    x, y = task.source[0][:300], task.source[1][:300]
    x_test, y_test = task.test
    model = _mlp(5)
    with torch.no_grad():
        noise = max(1e-3, float(((model.double()(x.double()) - y.double()) ** 2).mean()))
    mean, variance = _explicit_posterior(_mlp(5), x, y, x_test, noise, 1.0)
    spec = _figure(at)
    np.testing.assert_allclose(_values(trace(spec, "posterior mean")["x"]), x_test[:, 0])
    np.testing.assert_allclose(_values(trace(spec, "posterior mean")["y"]), mean,
                               rtol=2e-3, atol=2e-3 * np.abs(mean).max())  # fmt: skip
    band = _values(trace(spec, "±2σ")["y"])
    np.testing.assert_allclose(band[: mean.size] - mean, 2 * np.sqrt(variance),
                               rtol=5e-3, atol=5e-3 * np.sqrt(variance).max())  # fmt: skip
    row = _table(at).loc["A: ReLU 5, untrained"]
    assert row["σ²"] == pytest.approx(noise, rel=1e-4)
    assert row["s²"] == 1.0
    assert row["MSE"] == pytest.approx(float(((mean - y_test[:, 0].numpy()) ** 2).mean()), rel=2e-3)
    context = trace(spec, "context")
    np.testing.assert_allclose(_values(context["x"]), x[:, 0])


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("text_input", "layers1", "8"),
        ("segmented_control", "act2", "tanh"),
        ("number_input", "net_seed", 3),
        ("slider", "n_context", 40),
        ("select_slider", "prior_variance", 10.0),
        ("radio", "mean", "network"),
        ("radio", "split", "target"),
        ("selectbox", "dataset", "toy-gap-sine"),
    ],
)
def test_widget_change_changes_the_figure(at: AppTest, kind: str, key: str, value: Any):
    before = _figure(at)
    getattr(at, kind)(key=f"cmp_{key}").set_value(value).run()
    _assert_clean(at)
    after = _figure(at)
    assert after != before, f"changing {key} did not change the figure"
    assert "posterior mean" in trace_names(after)
    if key == "layers1":
        assert _table(at).loc["A: ReLU 8, untrained", "p"] == 25
        assert _titles(after)[0].startswith("A: ReLU 8, untrained<br>p = 25 ")
    if key == "n_context":
        assert len(_values(trace(after, "context")["x"])) == 40


def test_figure3_sets_fill_the_widgets(at: AppTest):
    at.pills(key="cmp_set").set_value("fig3-tanh").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="cmp_dataset").value == "toy-gap-sine"
    assert at.radio(key="cmp_n_models").value == 3
    assert at.radio(key="cmp_hyper").value == "network MSE"
    assert at.slider(key="cmp_n_context").value == 200
    shapes = ("100-100-100", "10-1000-10", "500-38-38")
    for i, shape in enumerate(shapes, start=1):
        assert at.text_input(key=f"cmp_layers{i}").value == shape
        assert at.segmented_control(key=f"cmp_act{i}").value == "tanh"
        assert at.toggle(key=f"cmp_trained{i}").value is True
    counts = [
        zoo.info("mlp", in_features=1, out_features=1, width=[int(w) for w in s.split("-")],
                 depth=3, activation="tanh").num_params
        for s in shapes
    ]  # fmt: skip
    assert counts == [20501, 21041, 21559]  # "about 21,000 parameters each" (Figure 3 right)
    assert any(i.value.startswith("**Figure 3 right.**") for i in at.info)
    assert at.pills(key="cmp_set").value == "fig3-tanh"
    captions = " ".join(c.value for c in at.caption)
    for count in counts:
        assert f"p = {count:,} · " in captions

    at.pills(key="cmp_set").set_value("fig3-untrained").run()
    _assert_clean(at)
    assert at.radio(key="cmp_n_models").value == 4
    assert [at.text_input(key=f"cmp_layers{i}").value for i in range(1, 5)] == ["5", "50", "500",
                                                                            "5000"]  # fmt: skip
    assert list(_table(at)["p"]) == [16, 151, 1501, 15001]
    assert any(i.value.startswith("**Figure 3 left.**") for i in at.info)

    at.pills(key="cmp_set").set_value("sinusoid-presets").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [at.selectbox(key=f"cmp_arch{i}").value for i in (1, 2, 3)] == [
        "sinusoids-mlp", "sinusoids-mlp-relu", "sinusoids-mlp-gelu-wide"
    ]  # fmt: skip
    assert at.radio(key="cmp_split").value == "target" and at.radio(key="cmp_split").disabled
    assert any(i.value.startswith("**Zoo, sinusoids.**") for i in at.info)
    # Changing a setting of the set: no longer "showing" it.
    at.slider(key="cmp_n_context").set_value(21).run()
    assert not any(i.value.startswith("**Zoo, sinusoids.**") for i in at.info)
    assert at.pills(key="cmp_set").value is None


def test_train_missing_network_then_loss_matches_zoo_record(at: AppTest):
    at.text_input(key="cmp_layers2").set_value("6").run()
    at.toggle(key="cmp_trained2").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    train = [b for b in at.button if b.key == "train-missing"]
    if train:  # cold cache: the page says so and trains on request
        assert any("not in the zoo's disk cache" in w.value for w in at.warning)
        train[0].click().run(timeout=FIRST_RUN_TIMEOUT)
    _assert_clean(at)
    row = _table(at).loc["B: ReLU 6, trained"]
    entry = zoo.fetch("mlp", "toy-gap", 0, data_kw={"variant": "relu", "source_seed": 0},
                      width=6, depth=1, activation="relu", epochs=1500, lr=1e-2)  # fmt: skip
    assert entry.from_cache, "the page should have put the network in the zoo's cache"
    assert row["train loss"] == pytest.approx(entry.record.final_loss, rel=1e-9)
    assert row["p"] == 19 and row["trained"]
    assert not [b for b in at.button if b.key == "train-missing"]


def test_marginal_likelihood_mode_states_fitted_values(at: AppTest):
    at.radio(key="cmp_hyper").set_value("marginal likelihood").run()
    _assert_clean(at)
    task = data.load("toy-gap", seed=1, variant="relu")
    x, y = task.source[0][:300], task.source[1][:300]
    table = _table(at)
    for width, label in ((5, "A: ReLU 5, untrained"), (50, "B: ReLU 50, untrained")):
        fit = ntkcore.fit_hyperparameters(_mlp(width), x, y, mean="zero")
        assert table.loc[label, "σ²"] == pytest.approx(fit.noise_variance, rel=1e-3)
        assert table.loc[label, "s²"] == pytest.approx(fit.prior_variance, rel=1e-3)
    at.radio(key="cmp_hyper").set_value("shared").run()
    at.select_slider(key="cmp_noise_variance").set_value(0.1).run()
    _assert_clean(at)
    assert list(_table(at)["σ²"]) == [0.1, 0.1]


def test_view_toggle_redraws_without_recomputing(at: AppTest, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real_adapt = ntkcore.adapt
    monkeypatch.setattr(ntkcore, "adapt", lambda *a, **k: calls.append(1) or real_adapt(*a, **k))
    at.segmented_control(key="cmp_view").set_value("overlay").run()
    _assert_clean(at)
    names = trace_names(_figure(at))
    assert {"A: ReLU 5, untrained", "B: ReLU 50, untrained", "context"} <= set(names)
    assert "A: ReLU 5, untrained ±2σ" in names
    at.toggle(key="cmp_show_network").set_value(False).run()
    assert not any(n.endswith("(network)") for n in trace_names(_figure(at)))
    assert calls == [], "switching the view must not recompute the posteriors"


def test_bad_layers_are_reported_in_their_column(at: AppTest):
    at.text_input(key="cmp_layers1").set_value("10-abc").run()
    assert not at.exception
    assert len(at.error) == 1 and "hidden layers look like" in at.error[0].value
    spec = _figure(at)  # the other network is still drawn, alone
    assert [t.split("<br>")[0] for t in _titles(spec)] == ["B: ReLU 50, untrained"]
    assert "posterior mean" in trace_names(spec)
    at.text_input(key="cmp_layers1").set_value("100000").run()
    assert "between 1 and 10,000" in at.error[0].value


def test_url_query_reproduces_the_comparison():
    at = _open({"n_models": "3", "dataset": "toy-gap-sine", "layers1": "7", "act1": "tanh",
                "layers3": "3x2", "split": "target", "n_context": "25", "view": "overlay"})
    _assert_clean(at)
    assert at.selectbox(key="cmp_dataset").value == "toy-gap-sine"
    assert at.segmented_control(key="cmp_act1").value == "tanh"
    assert list(_table(at).index) == ["A: tanh 7, untrained", "B: ReLU 50, untrained",
                                      "C: ReLU 3-3, untrained"]  # fmt: skip
    two_layers = zoo.info("mlp", in_features=1, out_features=1, width=[3, 3], depth=2).num_params
    assert list(_table(at)["p"]) == [22, 151, two_layers] == [22, 151, (3 + 3) + (9 + 3) + 4]
    assert len(_values(trace(_figure(at), "context")["x"])) == 25
    assert at.segmented_control(key="cmp_view").value == "overlay"


def test_reproduce_snippet_regenerates_the_figure(at: AppTest, monkeypatch: pytest.MonkeyPatch):
    shown: list[go.Figure] = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    code = reproduce_snippets(at)[0]
    exec(compile(textwrap.dedent(code), "<reproduce>", "exec"), {})
    assert len(shown) == 1
    page = _figure(at)
    snippet = shown[0].to_plotly_json()
    for name in ("posterior mean", "posterior mean · B: ReLU 50, untrained", "±2σ", "network"):
        np.testing.assert_allclose(
            _values(trace(snippet, name)["y"]), _values(trace(page, name)["y"]),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip



def test_table_states_the_bands_accuracy(at: AppTest):
    """Each network's row says how close its band is to the exact posterior variances
    (small networks: exact, the basis spans the problem)."""
    assert list(_table(at)["band"]) == ["exact", "exact"]
