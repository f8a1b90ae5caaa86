"""The Jacobian-similarity page (``app/views/similarity.py``) through Streamlit's AppTest.

The model cache of a test session may be cold, so the page's networks are trained for one
epoch here (``TRAINING`` of the experiment patched: other cache keys than the app's), on the
smallest options (2 seeds of MNIST1 and MNIST2, 10 probe images). Numbers on the page are
checked against the library's own call with the same settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.compute import RESULTS
from ntkcore import data, zoo
from ntkcore.experiments import similarity as experiment
from ntkcore.zoo.pretraining import load_task, resolve
from tests.apptest_helpers import reproduce_snippets
from tests.figures import values

ENTRY = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
PAGE = "views/similarity.py"
TINY = {"seeds": 2, "n_probe": 10, "pairs": ("mnist1-mnist2",)}
#: Cold cache: four one-epoch LeNet-3s and the comparison; warm: a few seconds.
RUN_TIMEOUT = 300.0

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _environment(ntkcore_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    monkeypatch.setitem(experiment.TRAINING, "epochs", 1)
    threads = torch.get_num_threads()
    RESULTS.clear()
    yield
    RESULTS.clear()
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


def _press_run(at: AppTest, **options: Any) -> AppTest:
    settings = {**TINY, **options}
    at.number_input(key="sim_seeds").set_value(settings["seeds"])
    at.number_input(key="sim_probes").set_value(settings["n_probe"])
    at.pills(key="sim_pairs").set_value(list(settings["pairs"]))
    at.button[0].click().run()
    _assert_clean(at)
    return at


def _figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """Plotly specs by their first trace's name."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {spec["data"][0]["name"]: spec for spec in specs}


def _summary(at: AppTest) -> pd.DataFrame:
    return at.table[0].value.set_index(["measure", "pair"])


def test_default_view_explains_and_waits_for_run():
    at = _open()
    assert at.title[0].value == "Jacobian similarity across tasks"
    assert any("No result for these settings yet" in i.value for i in at.info)
    assert any("nearly zero similarity" in m.value for m in at.markdown)
    if not torch.cuda.is_available():
        assert any("offered only when the server has a GPU" in c.value for c in at.caption)
    assert [b.label for b in at.button] == ["Run"]
    assert not at.table  # nothing computed on load


def test_full_preset_offered_with_a_gpu_and_fills_the_form(monkeypatch: pytest.MonkeyPatch):
    """With a (faked) CUDA device the preset selector appears; "full" fills the paper's sizes.
    Nothing is run: the check is the form's wiring."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    at = _open()
    assert not any("offered only when the server has a GPU" in c.value for c in at.caption)
    at.segmented_control(key="sim_preset").set_value("full").run()
    _assert_clean(at)
    sizes = experiment._PRESETS["full"]
    assert at.number_input(key="sim_seeds").value == sizes["seeds"] == 25
    assert at.number_input(key="sim_probes").value == sizes["n_probe"] == 2000
    reproduce = reproduce_snippets(at)[0]
    assert "preset='full', seeds=25, n_probe=2000" in reproduce and "device='cuda'" in reproduce


def test_run_matches_library_and_view_controls_do_not_rerun(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = experiment.jacobian_similarity

    def counted(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(experiment, "jacobian_similarity", counted)
    at = _press_run(_open())
    assert len(calls) == 1
    names = [t["name"] for t in next(iter(_figures(at).values()))["data"]]
    assert names == ["mnist1-mnist2 · kernel", "mnist1-mnist2 · parameter"]

    expected = real(**TINY, device="cpu")["main"]
    summary = _summary(at)
    for measure in ("kernel", "parameter"):
        values = expected.loc[expected["measure"] == measure, "similarity"]
        row = summary.loc[(measure, "mnist1-mnist2")]
        assert row["comparisons"] == len(values) == 2
        # The page's results run in the app's thread (1 OpenMP thread), the reference here.
        assert row["mean"] == pytest.approx(values.mean(), abs=1e-6)
        assert row["min"] == pytest.approx(values.min(), abs=1e-6)

    # View-only controls redraw without running the experiment again.
    before = _figures(at)["mnist1-mnist2 · kernel"]
    at.toggle(key="sim_full_range").set_value(False).run()
    after = _figures(at)["mnist1-mnist2 · kernel"]
    assert before["layout"]["yaxis"]["range"] == [0.0, 1.02]
    assert "range" not in after["layout"]["yaxis"]
    at.pills(key="sim_show_measures").set_value(["parameter"]).run()
    assert [t["name"] for t in _figures(at)["mnist1-mnist2 · parameter"]["data"]] == [
        "mnist1-mnist2 · parameter"
    ]
    at.toggle(key="sim_log_x").set_value(False).run()
    spectra = _figures(at)["mnist1-s0"]
    assert spectra["layout"]["xaxis"]["type"] == "linear"
    assert {t["name"] for t in spectra["data"]} == {"mnist1-s0", "mnist1-s1", "mnist2-s0",
                                                    "mnist2-s1"}  # fmt: skip
    _assert_clean(at)
    assert len(calls) == 1

    # Run with another option computes anew; back to the first, the process-wide cache
    # answers without computing.
    at.number_input(key="sim_probes").set_value(20)
    at.button[0].click().run()
    _assert_clean(at)
    assert len(calls) == 2 and calls[-1]["n_probe"] == 20
    at.number_input(key="sim_probes").set_value(10)
    at.button[0].click().run()
    _assert_clean(at)
    assert len(calls) == 2
    # (only the parameter measure is shown since the pills changed above)
    assert _summary(at).loc[("parameter", "mnist1-mnist2"), "mean"] == pytest.approx(
        expected.loc[expected["measure"] == "parameter", "similarity"].mean(), abs=1e-6
    )


def test_result_with_other_settings_is_labelled_stale():
    at = _press_run(_open())
    assert any("Computed in" in c.value for c in at.caption)
    # Widgets changed without a run (the preset selector, a shared link): the shown result
    # is the last one, labelled with what changed.
    at.session_state["sim_probes"] = 30
    at.run()
    _assert_clean(at)
    notes = [i.value for i in at.info]
    assert any("computed with earlier settings" in n and "n_probe" in n for n in notes), notes
    assert at.table  # still shown


def test_heatmap_matches_ntk_by_class():
    at = _press_run(_open())
    heat = _figures(at)["finite NTK"]
    names = [t["name"] for t in heat["data"]]
    assert names == ["finite NTK", "same class", "other classes"]
    at.selectbox(key="sim_heat_network").set_value("mnist2-s1")
    at.selectbox(key="sim_heat_n").set_value(50)
    at.selectbox(key="sim_heat_output").set_value(3).run()
    _assert_clean(at)
    z = values(_figures(at)["finite NTK"]["data"][0]["z"]).astype(np.float64)

    task = data.load("mnist", half=2)
    model = zoo.fetch("lenet3", "mnist", 1, task=task, data_kw={"half": 2},
                      **experiment.TRAINING).model  # fmt: skip
    x, y = data.load("mnist").source
    expected = experiment.ntk_by_class(model, x[:50], y[:50], output=3)
    assert z.shape == (50, 50)
    np.testing.assert_allclose(z, expected.gram, rtol=1e-5, atol=1e-6)
    assert any("MNIST2 (seed 1)" in c.value for c in at.caption)


def test_reproduce_snippets_run_and_give_the_pages_numbers(monkeypatch: pytest.MonkeyPatch):
    at = _press_run(_open())
    snippets = reproduce_snippets(at)
    assert len(snippets) == 2 and "jacobian_similarity(" in snippets[0]
    assert "ntk_by_class(" in snippets[1]
    monkeypatch.setattr("plotly.graph_objects.Figure.show", lambda self, *a, **k: None)
    run_namespace: dict[str, Any] = {}
    exec(snippets[0], run_namespace)  # noqa: S102 (the page's own snippet)
    main = run_namespace["tables"]["main"]
    means = main.groupby(["measure", "pair"])["similarity"].mean()
    summary = _summary(at)
    for key, mean in means.items():
        assert summary.loc[key, "mean"] == pytest.approx(mean, abs=1e-6)
    heat_namespace: dict[str, Any] = {}
    exec(snippets[1], heat_namespace)  # noqa: S102
    z = values(_figures(at)["finite NTK"]["data"][0]["z"]).astype(np.float64)
    np.testing.assert_allclose(z, heat_namespace["kernel"].gram, rtol=1e-5, atol=1e-6)


def test_workshop_presets_are_the_pages_default_networks(monkeypatch: pytest.MonkeyPatch):
    """``zoo build --preset workshop`` trains exactly what the page's default run loads."""
    monkeypatch.setitem(experiment.TRAINING, "epochs", 20)  # the real value
    workshop = {
        resolve(p.arch, p.dataset, load_task(p.dataset, dict(p.data_kw)), p.seed, p.data_kw,
                **p.hyper).stem
        for p in zoo.PRESETS["workshop"]
    }  # fmt: skip
    small_seeds = experiment._PRESETS["small"]["seeds"]
    for dataset, (name, data_kw) in experiment.DATASETS.items():
        task = load_task(name, data_kw)
        for seed in range(small_seeds):
            stem = resolve("lenet3", name, task, seed, data_kw, **experiment.TRAINING).stem
            assert stem in workshop, f"{dataset} seed {seed} is not pre-trained by zoo build"
    # The replicates stay out of the architecture menus.
    assert [p.id for p in zoo.presets_for("mnist")] == ["mnist-lenet3"]
