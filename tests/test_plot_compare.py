"""Tests of ``ntkcore.plots.compare``: the grid and overlay figures of several posteriors."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from ntkcore.plots import (
    TRACE_CONTEXT,
    TRACE_MEAN,
    TRACE_NETWORK,
    TRACE_TRUTH,
    ComparisonPanel,
    band_trace_name,
    comparison_grid_figure,
    comparison_overlay_figure,
    overlay_trace_names,
    panel_title,
    shared_y_range,
)
from ntkcore.plots.compare import COMPARISON_COLOURS, context_marker_size


def _by_name(fig: go.Figure) -> dict[str, go.Scatter]:
    names = [t.name for t in fig.data]
    assert len(names) == len(set(names)), f"trace names must be unique: {names}"
    return {t.name: t for t in fig.data}


@pytest.fixture
def panels() -> list[ComparisonPanel]:
    """Three posteriors at shuffled inputs with known means, variances and networks."""
    rng = np.random.default_rng(1)
    x = rng.permutation(np.linspace(-3.0, 3.0, 25))
    return [
        ComparisonPanel("narrow", x, np.sin(x), 0.1 + 0.0 * x, network=0.5 * x, num_params=16),
        ComparisonPanel("wide", x, np.cos(x), 0.2 + 0.1 * x**2, network=-x, num_params=15001),
        ComparisonPanel("deep", x, 3.0 + x, 0.05 + 0.0 * x, network=None, note="test MSE 0.5"),
    ]


CONTEXT = ([-1.0, 0.0, 2.0], [0.5, -4.0, 1.0])
TRUTH = (np.linspace(-3, 3, 7), np.linspace(-3, 3, 7) ** 2)


def test_panel_title_states_parameter_count_and_note():
    assert panel_title("ReLU 5000, untrained", 15001) == "ReLU 5000, untrained<br>p = 15,001"
    assert panel_title("a", 16, "test MSE 0.1") == "a<br>p = 16 · test MSE 0.1"
    assert panel_title("a") == "a"


def test_shared_y_range_covers_means_networks_context_and_truth(panels):
    # Independent reference: min and max over every shown value, written out by hand.
    values = []
    for p in panels:
        values += list(p.mean)
        if p.network is not None:
            values += list(p.network)
    values += CONTEXT[1] + list(TRUTH[1])
    low, high = min(values), max(values)
    pad = 0.1 * (high - low)
    assert shared_y_range(panels, context=CONTEXT, truth=TRUTH) == pytest.approx(
        (low - pad, high + pad), rel=1e-12
    )
    # Without networks (the "wide" network goes down to -3) the range shrinks.
    without = shared_y_range(panels, show_network=False)
    means = [v for p in panels for v in p.mean]
    pad = 0.1 * (max(means) - min(means))
    assert without == pytest.approx((min(means) - pad, max(means) + pad), rel=1e-12)


def test_grid_has_one_panel_per_network_on_shared_axes(panels):
    fig = comparison_grid_figure(panels, context=CONTEXT, truth=TRUTH)
    traces = _by_name(fig)
    # The first panel carries the plain names (and the legend); the others are suffixed.
    plain = ["±2σ", TRACE_TRUTH, TRACE_NETWORK, TRACE_MEAN, TRACE_CONTEXT]
    assert [t.name for t in fig.data[:5]] == plain
    assert all(traces[name].showlegend is not False for name in plain)
    for p in panels[1:]:
        assert traces[f"{TRACE_MEAN} · {p.label}"].showlegend is False
        assert traces[f"{TRACE_MEAN} · {p.label}"].legendgroup == TRACE_MEAN
    # "deep" has no network: no network trace in its panel.
    assert f"{TRACE_NETWORK} · deep" not in traces
    # Each panel's traces sit on its own axes; all axes share one x and one y range.
    assert traces[TRACE_MEAN].xaxis == "x" and traces[f"{TRACE_MEAN} · deep"].xaxis == "x3"
    y_lim = shared_y_range(panels, context=CONTEXT, truth=TRUTH)
    layout = fig.layout
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        assert tuple(layout[axis].range) == pytest.approx(y_lim)
    for axis in ("xaxis", "xaxis2", "xaxis3"):
        assert tuple(layout[axis].range) == pytest.approx((-3.0, 3.0))
    assert layout.yaxis2.matches == "y" and layout.xaxis3.matches == "x"
    titles = [a.text for a in layout.annotations]
    assert titles == [
        "narrow<br>p = 16",
        "wide<br>p = 15,001",
        "deep<br>test MSE 0.5",
    ]


def test_grid_bands_are_each_networks_mean_plus_minus_two_sigma(panels):
    fig = comparison_grid_figure(panels)
    traces = _by_name(fig)
    for i, p in enumerate(panels):
        suffix = "" if i == 0 else f" · {p.label}"
        band = traces[band_trace_name(2.0) + suffix]
        ref = sorted(zip(p.x.tolist(), p.mean.tolist(), p.variance.tolist(), strict=True))
        m = len(ref)
        np.testing.assert_allclose(band.x[:m], [r[0] for r in ref])
        np.testing.assert_allclose(band.y[:m], [r[1] + 2 * math.sqrt(r[2]) for r in ref])
        np.testing.assert_allclose(band.y[m:], [r[1] - 2 * math.sqrt(r[2]) for r in ref][::-1])
        np.testing.assert_allclose(traces[TRACE_MEAN + suffix].y, [r[1] for r in ref])


def test_grid_columns_wrap_into_rows(panels):
    fig = comparison_grid_figure(panels, columns=2, show_network=False)
    assert _by_name(fig)[f"{TRACE_MEAN} · deep"].xaxis == "x3"
    assert fig.layout.yaxis3.domain[1] < fig.layout.yaxis.domain[0]  # second row below
    assert fig.layout.height == 880
    assert not any(t.name.startswith(TRACE_NETWORK) for t in fig.data)


def test_overlay_draws_every_network_in_its_own_colour(panels):
    fig = comparison_overlay_figure(panels, context=CONTEXT, truth=TRUTH)
    traces = _by_name(fig)
    for i, p in enumerate(panels):
        names = overlay_trace_names(p.label)
        mean = traces[names["mean"]]
        order = np.argsort(p.x)
        np.testing.assert_allclose(mean.x, p.x[order])
        np.testing.assert_allclose(mean.y, np.asarray(p.mean)[order])
        np.testing.assert_allclose(mean.customdata, np.sqrt(np.asarray(p.variance)[order]))
        assert mean.line.color == COMPARISON_COLOURS[i]
        band = traces[names["band"]]
        np.testing.assert_allclose(
            band.y[: len(order)], np.asarray(p.mean)[order] + 2 * np.sqrt(p.variance[order])
        )
        assert {mean.legendgroup, band.legendgroup} == {p.label}
        assert (names["network"] in traces) == (p.network is not None)
    assert [t.name for t in fig.data][-1] == TRACE_CONTEXT
    assert tuple(fig.layout.yaxis.range) == pytest.approx(
        shared_y_range(panels, context=CONTEXT, truth=TRUTH)
    )
    assert len({t.line.color for t in fig.data if t.name in [p.label for p in panels]}) == 3


def test_context_markers_shrink_with_many_points(panels):
    x = np.linspace(-3, 3, 300)
    fig = comparison_grid_figure(panels[:1], context=(x, x))
    assert _by_name(fig)[TRACE_CONTEXT].marker.size == context_marker_size(300) == 4
    assert context_marker_size(10) == 9


def test_accepts_tensors_and_column_vectors():
    x = torch.linspace(-1, 1, 5).reshape(-1, 1)
    panel = ComparisonPanel("t", x, 2 * x, torch.full((5, 1), 0.25), network=x, num_params=3)
    fig = comparison_overlay_figure([panel])
    np.testing.assert_allclose(_by_name(fig)["t"].y, 2 * x[:, 0].numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": ""}, "label must be a non-empty string"),
        ({"variance": -np.ones(4)}, "variance must be non-negative"),
        ({"mean": np.array([0.0, 1.0, np.nan, 2.0])}, "non-finite"),
        ({"mean": np.zeros(3)}, "mean has 3 points, x has 4"),
        ({"network": np.zeros(5)}, "network has 5 points, x has 4"),
        ({"num_params": 0}, "num_params must be a positive int"),
        ({"note": 3}, "note must be a string"),
    ],
)
def test_bad_panels_raise(change, message):
    base = {"label": "a", "x": np.arange(4.0), "mean": np.zeros(4), "variance": np.ones(4)}
    with pytest.raises(ValueError, match=message):
        comparison_grid_figure([ComparisonPanel(**(base | change))])


def test_bad_arguments_raise(panels):
    with pytest.raises(ValueError, match="non-empty sequence"):
        comparison_grid_figure([])
    with pytest.raises(ValueError, match="non-empty sequence"):
        comparison_overlay_figure(panels[0])
    with pytest.raises(ValueError, match="unique"):
        comparison_overlay_figure([panels[0], panels[0]])
    with pytest.raises(ValueError, match="n_std"):
        comparison_grid_figure(panels, n_std=0)
    with pytest.raises(ValueError, match="columns"):
        comparison_grid_figure(panels, columns=0)
    with pytest.raises(ValueError, match="y_range"):
        comparison_overlay_figure(panels, y_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="y_range"):
        comparison_grid_figure(panels, y_range="all")
    with pytest.raises(ValueError, match="ComparisonPanel"):
        comparison_grid_figure([{"label": "a"}])
