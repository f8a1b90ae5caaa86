"""Tests of ``ntkcore.plots.timing``: the Figure 2 timing figures.

Tables are built from the experiments' own record type (``TimingRow.record``) with known
times, so every plotted number can be checked against values written out here; one test
draws a real (tiny) run of ``timing_vs_n``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from ntkcore.experiments.figure2 import TimingRow
from ntkcore.experiments.timing import timing_vs_n
from ntkcore.plots import (
    FISHER_UNITS,
    REFERENCE_TRACE,
    TIMING_UNITS,
    fisher_cost_figure,
    fisher_speedups,
    timing_figure,
    timing_growth,
)


def _trace(fig: go.Figure, name: str) -> go.BaseTraceType:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return matches[0]


def _row(sweep: str, method: str, n: int, p: int, total: float, **fields) -> dict:
    fields = {"iterations": 11, "residual": 1e-4, "converged": True} | fields
    row = TimingRow(
        sweep, method, n, p, 4, "auto", 1e-3, fit_s=0.75 * total, predict_s=0.25 * total,
        total_s=total, forward_s=total / 1000, device="cpu", **fields,
    )
    return row.record("Test CPU", 0)


@pytest.fixture
def n_table() -> pd.DataFrame:
    """Time vs n: function grows linearly (t = 1e-3 n), parameter-fd as sqrt(n)."""
    rows = []
    for n in (100, 400, 1600):
        rows.append(_row("n", "function", n, 500, 1e-3 * n))
        rows.append(_row("n", "parameter-fd", n, 500, 0.01 * math.sqrt(n)))
    return pd.DataFrame(rows)


def _fisher_record(arch: str, method: str, p: int, seconds: float, repeat: int = 0) -> dict:
    return {
        "arch": arch, "method": method, "p": p, "batch": 8, "vectors": 2, "repeat": repeat,
        "seconds_per_vector": seconds, "forward_s": 0.01,
        "forward_equivalents_per_vector": seconds / 0.01,
        "rel_error": 0.0 if method == "exact" else 1e-3, "rel_error_float64": math.nan,
        "likelihood": "categorical", "clock": "wall", "device": "cpu",
        "device_name": "Test CPU", "seed": 0,
    }  # fmt: skip


@pytest.fixture
def fisher_table() -> pd.DataFrame:
    rows = []
    for arch, p, base in (("mlp", 1000, 0.01), ("lenet3", 500, 0.02)):
        for repeat, jitter in enumerate((1.0, 1.2, 0.9)):
            rows.append(_fisher_record(arch, "fd", p, base * jitter, repeat))
            rows.append(_fisher_record(arch, "exact", p, 2 * base * jitter, repeat))
            rows.append(_fisher_record(arch, "autograd", p, 6 * base * jitter, repeat))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- timing_figure
def test_timing_figure_traces_named_after_methods_with_reference_line(n_table):
    fig = timing_figure(n_table)
    assert [t.name for t in fig.data] == ["function", "parameter-fd", REFERENCE_TRACE["n"]]
    function = _trace(fig, "function")
    np.testing.assert_allclose(function.x, [100, 400, 1600])
    np.testing.assert_allclose(function.y, [0.1, 0.4, 1.6])  # total_s = adapt + predict
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.title.text == "data points n"
    assert fig.layout.yaxis.title.text == TIMING_UNITS["seconds"][1]
    assert "measured on Test CPU (cpu)" in fig.layout.title.text
    # hover names the point, the forward-pass equivalents, iterations and residual
    hover = function.hovertext[1]
    assert "n = 400" in hover and "p = 500" in hover and "11 iterations" in hover
    assert "750 forward passes" in hover  # fit 0.3 s / forward 0.0004 s
    assert "did not converge" not in hover
    assert '"function"' in fig.to_json()


def test_reference_line_has_slope_one_through_the_geometric_centre(n_table):
    ref = _trace(timing_figure(n_table), REFERENCE_TRACE["n"])
    x, y = np.asarray(ref.x), np.asarray(ref.y)
    np.testing.assert_allclose(x, [100, 1600])
    slope = (np.log(y[1]) - np.log(y[0])) / (np.log(x[1]) - np.log(x[0]))
    assert slope == pytest.approx(1.0)
    # through (geometric mean of x, geometric mean of y) of all six drawn points
    xs = np.array([100, 400, 1600] * 2, dtype=float)
    ys = np.concatenate([1e-3 * xs[:3], 0.01 * np.sqrt(xs[:3])])
    x_c, y_c = np.exp(np.log(xs).mean()), np.exp(np.log(ys).mean())
    assert y[0] * x_c / x[0] == pytest.approx(y_c)
    assert ref.line.dash == "dash"


def test_log_ticks_are_the_sizes_and_readable_times(n_table):
    fig = timing_figure(n_table)
    assert list(fig.layout.xaxis.tickvals) == [100, 400, 1600]
    assert list(fig.layout.xaxis.ticktext) == ["100", "400", "1,600"]
    y_ticks, y_text = list(fig.layout.yaxis.tickvals), list(fig.layout.yaxis.ticktext)
    assert len(set(y_text)) == len(y_text) >= 3  # no bare "2 … 9" minor labels, no repeats
    assert [float(t) for t in y_text] == pytest.approx(y_ticks)
    # the ticks cover the drawn times (0.1 s to 1.6 s)
    assert min(y_ticks) <= 0.1 and max(y_ticks) >= 1.6
    assert timing_figure(n_table, log_axes=False).layout.xaxis.tickvals is None


def test_units_methods_and_linear_axes(n_table):
    fig = timing_figure(n_table, unit="forward passes", methods=["function"], log_axes=False)
    assert [t.name for t in fig.data] == ["function"]  # no slope line in forward passes
    np.testing.assert_allclose(fig.data[0].y, [750.0] * 3)  # fit_s / forward_s
    assert fig.layout.xaxis.type == "linear" and fig.layout.yaxis.type == "linear"
    fit = timing_figure(n_table, unit="fit seconds", reference_slope=False)
    np.testing.assert_allclose(_trace(fit, "function").y, [0.075, 0.3, 1.2])
    assert REFERENCE_TRACE["n"] not in [t.name for t in fit.data]


def test_p_sweep_repeats_are_medians_with_ranges():
    rows = [
        _row("p", "parameter", 500, p, t, repeat=r)
        for p, times in ((1000, (1.0, 3.0, 2.0)), (4000, (4.0, 5.0, 9.0)))
        for r, t in enumerate(times)
    ]
    fig = timing_figure(pd.DataFrame(rows), device="GPU X (cuda)")
    trace = _trace(fig, "parameter")
    np.testing.assert_allclose(trace.x, [1000, 4000])
    np.testing.assert_allclose(trace.y, [2.0, 5.0])
    np.testing.assert_allclose(trace.error_y.array, [1.0, 4.0])
    np.testing.assert_allclose(trace.error_y.arrayminus, [1.0, 1.0])
    assert "median of 3 repeats" in trace.hovertext[0]
    assert fig.layout.xaxis.title.text == "parameters p"
    assert "measured on GPU X (cuda)" in fig.layout.title.text
    assert [t.name for t in fig.data] == ["parameter", REFERENCE_TRACE["p"]]


def test_unconverged_points_are_open_and_unmeasured_rows_left_out(n_table):
    rows = n_table.to_dict("records")
    rows[0]["converged"] = False  # function at n = 100
    rows.append(_row("n", "function", 6400, 500, math.nan, status="skipped: budget"))
    fig = timing_figure(pd.DataFrame(rows))
    function = _trace(fig, "function")
    assert list(function.marker.symbol) == ["circle-open", "circle", "circle"]
    assert "did not converge" in function.hovertext[0]
    np.testing.assert_allclose(function.x, [100, 400, 1600])  # the skipped row is not drawn


def test_growth_compares_the_ends_of_the_sweep(n_table):
    growth = timing_growth(n_table).set_index("method")
    assert list(growth.index) == ["function", "parameter-fd"]
    assert growth.loc["function", "x_from"] == 100 and growth.loc["function", "x_to"] == 1600
    assert growth.loc["function", "x_ratio"] == pytest.approx(16.0)
    assert growth.loc["function", "y_ratio"] == pytest.approx(16.0)  # t = 1e-3 n
    assert growth.loc["parameter-fd", "y_ratio"] == pytest.approx(4.0)  # t ∝ sqrt(n)
    assert growth.loc["parameter-fd", "y_to"] == pytest.approx(0.4)
    one_size = n_table[n_table["n"] == 100]
    assert timing_growth(one_size).empty
    with pytest.raises(ValueError, match="unit must be one of"):
        timing_growth(n_table, unit="minutes")


def test_timing_figure_rejects_bad_input(n_table):
    with pytest.raises(ValueError, match="DataFrame"):
        timing_figure(n_table.to_dict("records"))
    with pytest.raises(ValueError, match="lacks the columns.*total_s"):
        timing_figure(n_table.drop(columns="total_s"))
    with pytest.raises(ValueError, match="no rows"):
        timing_figure(n_table.iloc[:0])
    mixed = n_table.copy()
    mixed.loc[0, "sweep"] = "p"
    with pytest.raises(ValueError, match="one sweep"):
        timing_figure(mixed)
    with pytest.raises(ValueError, match="unit must be one of"):
        timing_figure(n_table, unit="hours")
    with pytest.raises(ValueError, match=r"methods \['dense'\] are not in the table"):
        timing_figure(n_table, methods=["dense"])
    with pytest.raises(ValueError, match="sequence of method names"):
        timing_figure(n_table, methods="function")


def test_timing_figure_draws_a_real_sweep():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = timing_vs_n(
            sizes=(32, 64), hidden=2, test_points=8, methods=("function", "parameter-fd"),
            warm_up=False,
        )
    finally:
        torch.set_num_threads(threads)
    fig = timing_figure(table)
    assert [t.name for t in fig.data] == ["function", "parameter-fd", REFERENCE_TRACE["n"]]
    for method in ("function", "parameter-fd"):
        rows = table[table["method"] == method].sort_values("n")
        trace = _trace(fig, method)
        np.testing.assert_allclose(trace.x, rows["n"])
        np.testing.assert_allclose(trace.y, rows["total_s"])
    assert table["device_name"].iloc[0] in fig.layout.title.text


# --------------------------------------------------------------------------- Fisher figure
def test_fisher_speedups_are_ratios_of_medians(fisher_table):
    speedups = fisher_speedups(fisher_table)
    assert list(speedups["arch"]) == ["mlp", "lenet3"]
    assert list(speedups["p"]) == [1000, 500]
    np.testing.assert_allclose(speedups["speedup"], [6.0, 6.0])
    np.testing.assert_allclose(
        fisher_speedups(fisher_table, fast="exact")["speedup"], [3.0, 3.0]
    )
    assert fisher_speedups(fisher_table[fisher_table["method"] != "fd"]).empty


def test_fisher_figure_groups_dots_per_architecture(fisher_table):
    fig = fisher_cost_figure(fisher_table)
    assert [t.name for t in fig.data] == ["fd", "exact", "autograd"]
    assert fig.layout.scattermode == "group"
    assert all(t.offsetgroup == t.name for t in fig.data)
    fd = _trace(fig, "fd")
    assert list(fd.x) == ["mlp<br>p = 1,000", "lenet3<br>p = 500"]
    np.testing.assert_allclose(fd.y, [0.01, 0.02])  # medians of (1, 1.2, 0.9) × base
    np.testing.assert_allclose(fd.error_y.array, [0.002, 0.004])
    np.testing.assert_allclose(fd.error_y.arrayminus, [0.001, 0.002])
    assert list(fd.text) == ["6.0×", "6.0×"]
    assert "6.0× faster than autograd" in fd.hovertext[0]
    assert list(_trace(fig, "autograd").text) == ["", ""]
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == FISHER_UNITS["seconds"][1]
    assert "measured on Test CPU (cpu)" in fig.layout.title.text


def test_fisher_figure_forward_units_and_method_choice(fisher_table):
    fig = fisher_cost_figure(
        fisher_table, unit="forward passes", methods=["fd", "exact"], log_axis=False
    )
    assert [t.name for t in fig.data] == ["fd", "exact"]
    np.testing.assert_allclose(_trace(fig, "exact").y, [2.0, 4.0])  # 2 × base / 0.01
    assert list(_trace(fig, "fd").text) == ["", ""]  # no autograd drawn: no speed-up text
    assert fig.layout.yaxis.type == "linear"
    assert fig.layout.yaxis.title.text == FISHER_UNITS["forward passes"][1]


def test_fisher_figure_rejects_bad_input(fisher_table):
    with pytest.raises(ValueError, match="lacks the columns"):
        fisher_cost_figure(fisher_table.drop(columns="arch"))
    with pytest.raises(ValueError, match="no rows"):
        fisher_cost_figure(fisher_table.iloc[:0])
    with pytest.raises(ValueError, match="unit must be one of"):
        fisher_cost_figure(fisher_table, unit="fit seconds")
    with pytest.raises(ValueError, match="not in the table"):
        fisher_cost_figure(fisher_table, methods=["fd-central"])
    with pytest.raises(ValueError, match="DataFrame"):
        fisher_speedups([1, 2])
