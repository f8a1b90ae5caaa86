"""``ntkcore.experiments.timing.preset_options``: the values a preset stands for are the ones
the experiments use (checked by capturing what the experiments would measure)."""

from __future__ import annotations

import pytest

from ntkcore.experiments import timing
from ntkcore.experiments.figure2 import Figure2Problem


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replace the row runner: record what a sweep would measure, measure nothing."""
    seen: dict = {}

    def run_timing_rows(rows, *, test_points, **_options):
        seen["rows"], seen["test_points"] = list(rows), test_points
        return []

    monkeypatch.setattr(timing, "run_timing_rows", run_timing_rows)
    return seen


@pytest.mark.parametrize("preset", ["small", "full"])
def test_sweep_presets_match_what_the_sweeps_measure(preset: str, captured: dict):
    options = timing.preset_options("timing-n", preset)
    timing.timing_vs_n(preset=preset, device="cpu", methods=("function",))
    rows = captured["rows"]
    assert sorted(r.n for r in rows) == sorted(options["sizes"])
    assert {r.hidden for r in rows} == {options["hidden"]}
    assert {r.rank for r in rows} == {options["rank"]}
    assert captured["test_points"] == options["test_points"]

    options = timing.preset_options("timing-p", preset)
    timing.timing_vs_p(preset=preset, device="cpu", methods=("function",))
    rows = captured["rows"]
    assert sorted(r.hidden for r in rows) == sorted(options["widths"])
    assert sorted(r.p for r in rows) == sorted(Figure2Problem(h).num_params
                                               for h in options["widths"])  # fmt: skip
    assert {r.n for r in rows} == {options["n"]}
    assert captured["test_points"] == options["test_points"]


def test_small_presets_are_the_documented_ones():
    assert timing.preset_options("timing-n") == {
        "sizes": (250, 500, 1000, 2000), "hidden": 16, "rank": "auto", "test_points": 200,
    }
    assert timing.preset_options("timing-p")["widths"] == (8, 16, 32, 64)
    fisher = timing.preset_options("fisher-products", "full", device="cpu")
    assert fisher["batch"] == 32  # 256 only on a GPU
    assert "preresnet110" in fisher["archs"]
    assert timing.preset_options("fisher-products")["archs"] == ("mlp", "lenet3", "preresnet20")


def test_bad_arguments():
    with pytest.raises(ValueError, match="experiment must be one of"):
        timing.preset_options("timing-q")
    with pytest.raises(ValueError, match="preset"):
        timing.preset_options("timing-n", "medium")
