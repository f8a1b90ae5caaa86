"""Tests of ``ntkcore.plots.curves``: adaptation curves (Figures 6, 7) and per-task win rates.

Tables are written out by hand with known values, so every plotted number (means, sample
standard deviations, extremes, win counts) is checked against an aggregation done here in
plain Python; one test draws a real (tiny) ``fast_adaptation`` run.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from ntkcore.plots import (
    CURVE_METRICS,
    SPREADS,
    TRACE_NOMINAL,
    adaptation_curves_figure,
    curve_summary,
    win_rate_figure,
    win_rates,
)

#: method -> n_context -> MSE of tasks 0, 1, 2.
MSE = {
    "ntk": {5: [0.5, 0.2, 0.8], 20: [0.05, 0.02, 0.11]},
    "no-retrain": {5: [1.0, 1.0, 1.0], 20: [1.0, 1.0, 1.0]},
    "last-layer": {5: [0.4, 0.3, 0.9], 20: [0.06, 0.01, 0.11]},
}
#: NLL per task: negative values make a log axis impossible.
NLL = {"ntk": [-1.0, -0.5, 0.2], "no-retrain": [2.0, 2.0, 2.0], "last-layer": [3.0, -0.2, 8.0]}
COVERAGE = {"ntk": [0.95, 0.9, 1.0], "no-retrain": [0.2, 0.3, 0.25], "last-layer": [0.99, 0.9, 0.8]}


def _trace(fig: go.Figure, name: str) -> go.BaseTraceType:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return matches[0]


@pytest.fixture
def table() -> pd.DataFrame:
    rows = []
    for method, by_n in MSE.items():
        for n, values in by_n.items():
            for task, value in enumerate(values):
                rows.append({
                    "method": method, "n_context": n, "task": task, "seed": 0, "mse": value,
                    "nll": NLL[method][task] + (0.0 if n == 5 else -1.0),
                    "coverage95": COVERAGE[method][task], "seconds": 0.01 * (task + 1),
                })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- summary
def test_curve_summary_is_the_hand_computed_aggregation(table):
    summary = curve_summary(table, "MSE").set_index(["method", "n_context"])
    assert list(summary.index.get_level_values(0).unique()) == list(MSE)  # table order
    for method, by_n in MSE.items():
        for n, values in by_n.items():
            row = summary.loc[(method, n)]
            assert row["tasks"] == 3
            assert row["mean"] == pytest.approx(sum(values) / 3, rel=1e-12)
            assert row["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)  # ddof = 1
            assert (row["min"], row["max"]) == (min(values), max(values))


def test_curve_summary_leaves_out_non_finite_values(table):
    table.loc[(table["method"] == "ntk") & (table["n_context"] == 5) & (table["task"] == 2),
              "mse"] = math.nan  # fmt: skip
    row = curve_summary(table, "MSE").set_index(["method", "n_context"]).loc[("ntk", 5)]
    assert row["tasks"] == 2 and row["mean"] == pytest.approx((0.5 + 0.2) / 2)


# --------------------------------------------------------------------------- curves figure
def test_lines_are_the_means_with_min_max_error_bars(table):
    fig = adaptation_curves_figure(table, metric="MSE", spread="min–max")
    assert [t.name for t in fig.data] == list(MSE)
    for method, by_n in MSE.items():
        trace = _trace(fig, method)
        assert list(trace.customdata) == [5, 20]  # the true context sizes
        for i, values in enumerate(by_n.values()):
            mean = sum(values) / 3
            assert trace.y[i] == pytest.approx(mean, rel=1e-12)
            assert trace.error_y.array[i] == pytest.approx(max(values) - mean, rel=1e-9)
            assert trace.error_y.arrayminus[i] == pytest.approx(mean - min(values), rel=1e-9)
    assert fig.layout.yaxis.type == "log"  # MSE > 0: log by default
    assert list(fig.layout.xaxis.tickvals) == [5, 20]


def test_methods_sit_side_by_side_within_two_percent_of_the_axis(table):
    fig = adaptation_curves_figure(table)
    xs = np.array([_trace(fig, m).x for m in MSE], dtype=float)  # shape: (methods, sizes)
    assert len({tuple(row) for row in xs}) == 3  # every method at its own offset
    np.testing.assert_allclose(xs.mean(0), [5, 20], rtol=1e-12)  # centred on the true n
    assert np.abs(xs - [5, 20]).max() <= 0.02 * (20 - 5) + 1e-12
    logged = adaptation_curves_figure(table, log_x=True)
    ratios = np.array([_trace(logged, m).x for m in MSE], dtype=float) / [5, 20]
    assert fig.layout.xaxis.type == "linear" and logged.layout.xaxis.type == "log"
    assert np.abs(np.log10(ratios)).max() <= 0.02 * math.log10(20 / 5) + 1e-12


def test_std_bars_are_one_sample_standard_deviation(table):
    fig = adaptation_curves_figure(table, metric="MSE", spread="± 1 std", y_scale="linear")
    values = MSE["last-layer"][20]
    trace = _trace(fig, "last-layer")
    assert trace.error_y.array[1] == pytest.approx(statistics.stdev(values), rel=1e-9)
    assert trace.error_y.arrayminus[1] == pytest.approx(statistics.stdev(values), rel=1e-9)


def test_std_bar_below_zero_on_a_log_axis_stops_at_the_best_task(table):
    values = MSE["ntk"][5]  # mean 0.5, std 0.3: mean − std > 0
    fig = adaptation_curves_figure(table, metric="MSE", spread="± 1 std", y_scale="log")
    assert _trace(fig, "ntk").error_y.arrayminus[0] == pytest.approx(statistics.stdev(values))
    spread = table.copy()
    spread.loc[(spread["method"] == "ntk") & (spread["n_context"] == 5), "mse"] = [0.01, 0.02, 3.0]
    fig = adaptation_curves_figure(spread, metric="MSE", spread="± 1 std", y_scale="log")
    mean = (0.01 + 0.02 + 3.0) / 3  # std 1.72 > mean
    assert _trace(fig, "ntk").error_y.arrayminus[0] == pytest.approx(mean - 0.01)
    assert "mean − std ≤ 0" in _trace(fig, "ntk").hovertext[0]


def test_negative_nll_gives_a_linear_axis_and_log_is_refused(table):
    fig = adaptation_curves_figure(table, metric="NLL")  # values within [−2, 8]
    assert fig.layout.yaxis.type == "linear" and fig.layout.meta["y_scale"] == "linear"
    expected = sum(NLL["last-layer"]) / 3
    assert _trace(fig, "last-layer").y[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="cannot be drawn on a log axis"):
        adaptation_curves_figure(table, metric="NLL", y_scale="log")
    with pytest.raises(ValueError, match="y_scale must be one of"):
        adaptation_curves_figure(table, metric="NLL", y_scale="logit")


def _symlog(value: float) -> float:
    return math.copysign(math.log10(1 + abs(value)), value)


def test_nll_spanning_decades_and_zero_is_drawn_on_a_symmetric_log_axis(table):
    """Overconfident point estimates have NLLs of 10⁶ while good fits are negative."""
    rows = (table["method"] == "last-layer") & (table["n_context"] == 5)
    table.loc[rows, "nll"] = [2e5, 1e6, 3e6]
    fig = adaptation_curves_figure(table, metric="NLL")
    assert fig.layout.meta["y_scale"] == "symlog" and fig.layout.yaxis.type == "linear"
    assert "symmetric log" in fig.layout.yaxis.title.text
    mean = (2e5 + 1e6 + 3e6) / 3
    trace = _trace(fig, "last-layer")
    assert trace.y[0] == pytest.approx(_symlog(mean), rel=1e-12)
    assert trace.error_y.array[0] == pytest.approx(_symlog(3e6) - _symlog(mean), rel=1e-9)
    assert trace.error_y.arrayminus[0] == pytest.approx(_symlog(mean) - _symlog(2e5), rel=1e-9)
    ntk = _trace(fig, "ntk")  # NLLs −1, −0.5, 0.2 at n = 5
    assert ntk.y[0] == pytest.approx(_symlog((-1.0 - 0.5 + 0.2) / 3), rel=1e-12)
    assert "mean NLL 1.4e+06" in trace.hovertext[0]  # the hover gives the NLL itself
    labels = dict(zip(fig.layout.yaxis.ticktext, fig.layout.yaxis.tickvals, strict=True))
    assert labels["0"] == 0 and labels["1"] == pytest.approx(_symlog(1))
    assert labels["10⁶"] == pytest.approx(_symlog(1e6))
    assert labels["-1"] == pytest.approx(-_symlog(1))
    linear = adaptation_curves_figure(table, metric="NLL", y_scale="linear")
    assert _trace(linear, "last-layer").y[0] == pytest.approx(mean)


def test_coverage_has_the_nominal_line_and_a_unit_axis(table):
    fig = adaptation_curves_figure(table, metric="95% coverage")
    nominal = _trace(fig, TRACE_NOMINAL)
    assert list(nominal.y) == [0.95, 0.95] and list(nominal.x) == [5, 20]
    assert fig.layout.yaxis.type == "linear" and list(fig.layout.yaxis.range) == [-0.02, 1.04]


def test_one_task_has_no_error_bars_and_methods_can_be_chosen(table):
    one = table[table["task"] == 1]
    fig = adaptation_curves_figure(one, methods=["last-layer", "ntk"])
    assert [t.name for t in fig.data] == ["ntk", "last-layer"]  # table order
    assert all(t.error_y.array is None for t in fig.data)
    assert list(_trace(fig, "ntk").y) == [0.2, 0.02]
    assert "one task" in fig.layout.title.text


def test_log_ticks_are_labelled_1_2_5_not_plotlys_minor_digits(table):
    fig = adaptation_curves_figure(table, metric="MSE")
    ticks = list(fig.layout.yaxis.tickvals)
    assert all(float(f"{t:.0e}"[0]) in (1, 2, 5) for t in ticks)
    labels = dict(zip(ticks, fig.layout.yaxis.ticktext, strict=True))
    assert labels[0.01] == "0.01" and labels[1.0] == "1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "accuracy"}, "metric must be one of"),
        ({"spread": "iqr"}, "spread must be one of"),
        ({"methods": ["ntk", "ablr"]}, r"methods \['ablr'\] are not in the table"),
        ({"methods": "ntk"}, "must be a sequence of method names"),
    ],
)
def test_bad_options_are_refused(table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adaptation_curves_figure(table, **kwargs)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([{"method": "ntk"}], "must be a pandas DataFrame"),
        (pd.DataFrame({"method": ["ntk"], "n_context": [5]}), "lacks the columns"),
        (pd.DataFrame(columns=["method", "n_context", "task", "mse", "nll", "coverage95",
                               "seconds"]), "has no rows"),  # fmt: skip
    ],
)
def test_bad_tables_are_refused(bad, message):
    for call in (adaptation_curves_figure, curve_summary, win_rates):
        with pytest.raises(ValueError, match=message):
            call(bad)


def test_all_nan_metric_is_refused(table):
    table["seconds"] = math.nan
    with pytest.raises(ValueError, match="no finite seconds values"):
        adaptation_curves_figure(table, metric="seconds")


# --------------------------------------------------------------------------- win rates
def test_win_rates_count_tasks_where_the_reference_is_better(table):
    rates = win_rates(table, reference="ntk", metric="MSE").set_index(["baseline", "n_context"])
    assert list(rates.index.get_level_values(0).unique()) == ["no-retrain", "last-layer"]
    for baseline in ("no-retrain", "last-layer"):
        for n in (5, 20):
            ours, theirs = MSE["ntk"][n], MSE[baseline][n]
            wins = sum(a < b for a, b in zip(ours, theirs, strict=True))
            ties = sum(a == b for a, b in zip(ours, theirs, strict=True))
            row = rates.loc[(baseline, n)]
            assert (row["wins"], row["ties"], row["tasks"]) == (wins, ties, 3)
            assert row["win_rate"] == pytest.approx((wins + ties / 2) / 3)
    # last layer at n = 20: 0.05 vs 0.06 (win), 0.02 vs 0.01 (loss), 0.11 vs 0.11 (tie)
    assert rates.loc[("last-layer", 20), "win_rate"] == pytest.approx(1.5 / 3)


def test_coverage_wins_go_to_the_one_closer_to_95_percent(table):
    rates = win_rates(table, metric="95% coverage").set_index(["baseline", "n_context"])
    # ntk 0.95, 0.9, 1.0 vs last-layer 0.99, 0.9, 0.8: |−0| < |0.04|, tie, |0.05| < |0.15|
    assert rates.loc[("last-layer", 5), ["wins", "ties"]].tolist() == [2, 1]
    assert rates.loc[("no-retrain", 5), "wins"] == 3


def test_win_rates_pair_rows_by_task_and_seed(table):
    shuffled = table.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(win_rates(shuffled), win_rates(table))
    other_seed = table.assign(seed=1, mse=table["mse"][::-1].to_numpy())
    both = win_rates(pd.concat([table, other_seed]))
    assert set(both["tasks"]) == {6}


def test_win_rates_refuse_a_missing_reference_or_a_single_method(table):
    with pytest.raises(ValueError, match="reference 'ablr' is not in the table"):
        win_rates(table, reference="ablr")
    with pytest.raises(ValueError, match="no method besides 'ntk'"):
        win_rates(table[table["method"] == "ntk"])
    with pytest.raises(ValueError, match="metric must be one of"):
        win_rates(table, metric="R2")


def test_win_rate_figure_shows_the_rates_and_counts(table):
    rates = win_rates(table)
    fig = win_rate_figure(rates, reference="ntk")
    (heatmap,) = fig.data
    assert heatmap.name == "ntk win rate"
    assert list(heatmap.y) == ["no-retrain", "last-layer"] and list(heatmap.x) == ["5", "20"]
    z = np.asarray(heatmap.z, dtype=float)
    assert z[0].tolist() == [1.0, 1.0]
    assert z[1, 1] == pytest.approx(0.5)
    assert heatmap.text[1][1] == "1.5/3" and heatmap.text[0][0] == "3/3"
    assert (heatmap.zmin, heatmap.zmax) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("rates", "must be a pandas DataFrame"),
        (pd.DataFrame({"baseline": ["x"]}), "lacks the columns"),
        (pd.DataFrame(columns=["baseline", "n_context", "wins", "ties", "tasks", "win_rate"]),
         "has no rows"),  # fmt: skip
    ],
)
def test_bad_win_rate_tables_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        win_rate_figure(bad)


def test_metrics_and_spreads_are_the_documented_ones():
    assert tuple(CURVE_METRICS) == ("MSE", "NLL", "95% coverage", "seconds")
    assert [c for c, _ in CURVE_METRICS.values()] == ["mse", "nll", "coverage95", "seconds"]
    assert SPREADS == ("min–max", "± 1 std")


def test_a_real_fast_adaptation_table_is_drawn(ntkcore_cache, monkeypatch):
    """The library's own table: traces are its methods and the lines its per-size means."""
    from ntkcore.experiments.fast_adaptation import fast_adaptation

    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = fast_adaptation(dataset="sinusoids", methods=("ntk", "no-retrain"),
                                context_sizes=(5, 10), tasks=(0, 1))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    fig = adaptation_curves_figure(table)
    assert [t.name for t in fig.data] == ["ntk", "no-retrain"]
    assert fig.layout.title.text.startswith("sinusoids: MSE vs number of context points")
    for method in ("ntk", "no-retrain"):
        expected = [table[(table["method"] == method) & (table["n_context"] == n)]["mse"].mean()
                    for n in (5, 10)]  # fmt: skip
        np.testing.assert_allclose(_trace(fig, method).y, expected, rtol=1e-12)
    rates = win_rates(table)
    assert rates["tasks"].tolist() == [2, 2]
