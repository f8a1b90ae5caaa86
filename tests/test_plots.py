"""Tests of ``ntkcore.plots``: figure structure, band geometry and input validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from ntkcore.plots import (
    TRACE_CONTEXT,
    TRACE_MEAN,
    TRACE_NETWORK,
    TRACE_SOURCE,
    TRACE_TRUTH,
    band_trace_name,
    posterior_band_figure,
)


def _trace(fig: go.Figure, name: str) -> go.Scatter:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected exactly one trace named {name!r}, got {len(matches)}"
    return matches[0]


@pytest.fixture
def unsorted_posterior() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A posterior evaluated at shuffled inputs, with known per-point variances."""
    rng = np.random.default_rng(0)
    x = rng.permutation(np.linspace(-5.0, 5.0, 31))
    mean = np.sin(x)
    variance = 0.1 + 0.05 * x**2
    return x, mean, variance


def test_all_traces_present_with_stable_names(unsorted_posterior):
    x, mean, variance = unsorted_posterior
    fig = posterior_band_figure(
        x,
        mean,
        variance,
        context=(x[:5], mean[:5]),
        truth=(x, np.sin(x)),
        network=(x, np.cos(x)),
        source=(x[5:9], mean[5:9]),
    )
    names = [t.name for t in fig.data]
    # Bottom to top: band under everything, points on top.
    assert names == [
        "±2σ",
        TRACE_TRUTH,
        TRACE_NETWORK,
        TRACE_MEAN,
        TRACE_SOURCE,
        TRACE_CONTEXT,
    ]
    assert [TRACE_CONTEXT, TRACE_TRUTH, TRACE_MEAN, TRACE_NETWORK] == [
        "context",
        "true function",
        "posterior mean",
        "network",
    ]
    assert _trace(fig, TRACE_NETWORK).line.dash == "dash"
    assert _trace(fig, TRACE_CONTEXT).mode == "markers"
    # The figure serializes to the JSON spec Streamlit ships to the browser.
    assert '"posterior mean"' in fig.to_json()


def test_optional_traces_absent_when_not_given(unsorted_posterior):
    fig = posterior_band_figure(*unsorted_posterior)
    assert [t.name for t in fig.data] == ["±2σ", TRACE_MEAN]


def test_band_is_mean_plus_minus_n_std_sigma_sorted_by_x(unsorted_posterior):
    x, mean, variance = unsorted_posterior
    for n_std in (1.0, 2.0, 3.0):
        fig = posterior_band_figure(x, mean, variance, n_std=n_std)
        band = _trace(fig, band_trace_name(n_std))
        assert band.fill == "toself"
        m = x.size
        # Independent reference: sort with Python, bounds with math.sqrt.
        ref = sorted(zip(x.tolist(), mean.tolist(), variance.tolist(), strict=True))
        xs_ref = [r[0] for r in ref]
        upper_ref = [r[1] + n_std * r[2] ** 0.5 for r in ref]
        lower_ref = [r[1] - n_std * r[2] ** 0.5 for r in ref]
        np.testing.assert_allclose(band.x[:m], xs_ref)
        np.testing.assert_allclose(band.x[m:], xs_ref[::-1])
        np.testing.assert_allclose(band.y[:m], upper_ref, rtol=1e-12)
        np.testing.assert_allclose(band.y[m:], lower_ref[::-1], rtol=1e-12)
        mean_trace = _trace(fig, TRACE_MEAN)
        np.testing.assert_allclose(mean_trace.x, xs_ref)
        np.testing.assert_allclose(mean_trace.y, [r[1] for r in ref])
        np.testing.assert_allclose(mean_trace.customdata, [r[2] ** 0.5 for r in ref])
    assert band_trace_name(2.0) == "±2σ"
    assert band_trace_name(1.5) == "±1.5σ"


def test_line_traces_sorted_points_kept_in_order():
    x = np.array([2.0, -1.0, 0.5])
    fig = posterior_band_figure(
        x,
        x,
        np.zeros(3),
        truth=(x, 10 * x),
        network=(x, -x),
        context=(x, x + 1),
    )
    np.testing.assert_array_equal(_trace(fig, TRACE_TRUTH).x, [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(_trace(fig, TRACE_TRUTH).y, [-10.0, 5.0, 20.0])
    np.testing.assert_array_equal(_trace(fig, TRACE_NETWORK).y, [1.0, -0.5, -2.0])
    np.testing.assert_array_equal(_trace(fig, TRACE_CONTEXT).x, [2.0, -1.0, 0.5])
    np.testing.assert_array_equal(_trace(fig, TRACE_CONTEXT).y, [3.0, 0.0, 1.5])


def test_accepts_tensors_column_vectors_and_pandas():
    x = torch.linspace(-1, 1, 7, dtype=torch.float32).reshape(-1, 1)
    mean = (2 * x).requires_grad_()  # a tensor still attached to a graph
    variance = torch.full((7, 1), 0.25, dtype=torch.float64)
    frame = pd.DataFrame({"x": x[:, 0].numpy(), "y": 3 * x[:, 0].numpy()})
    fig = posterior_band_figure(x, mean, variance, context=(frame["x"], frame[["y"]]))
    np.testing.assert_allclose(_trace(fig, TRACE_MEAN).y, 2 * x[:, 0].numpy(), rtol=1e-6)
    band = _trace(fig, "±2σ")
    np.testing.assert_allclose(band.y[:7], 2 * x[:, 0].numpy() + 1.0, rtol=1e-6)
    np.testing.assert_allclose(_trace(fig, TRACE_CONTEXT).y, frame["y"].to_numpy())


def test_multi_output_selects_column():
    x = np.linspace(0, 1, 4)
    mean = np.stack([x, 10 * x], axis=1)
    variance = np.stack([np.zeros(4), np.full(4, 4.0)], axis=1)
    fig = posterior_band_figure(x, mean, variance, output=1, context=(x, mean))
    np.testing.assert_allclose(_trace(fig, TRACE_MEAN).y, 10 * x)
    np.testing.assert_allclose(_trace(fig, "±2σ").y[:4], 10 * x + 4.0)
    np.testing.assert_allclose(_trace(fig, TRACE_CONTEXT).y, 10 * x)
    with pytest.raises(ValueError, match="output=2 is out of range"):
        posterior_band_figure(x, mean, variance, output=2)


def test_y_range_fits_data_not_band_unless_asked():
    x = np.linspace(-1.0, 1.0, 5)
    variance = np.full(5, 100.0)  # band ±20, far wider than the data
    fig = posterior_band_figure(x, x, variance, context=(x, 2 * x), truth=(x, -3 * x))
    # Data span [-3, 3] (truth), margin 10% of the span.
    assert tuple(fig.layout.yaxis.range) == pytest.approx((-3.6, 3.6))
    assert fig.layout.yaxis.autorange is None
    fig_all = posterior_band_figure(x, x, variance, y_range="all")
    assert fig_all.layout.yaxis.range is None
    fig_fixed = posterior_band_figure(x, x, variance, y_range=(-1, 2))
    assert tuple(fig_fixed.layout.yaxis.range) == (-1.0, 2.0)
    # A constant curve still gets a non-empty range.
    low, high = posterior_band_figure(x, np.full(5, 4.0), np.zeros(5)).layout.yaxis.range
    assert low < 4.0 < high


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variance": -np.ones(3)}, "variance must be non-negative"),
        ({"mean": np.array([0.0, np.nan, 0.0])}, "mean contains non-finite"),
        ({"mean": np.zeros(4)}, "same number of points"),
        ({"x": np.zeros((3, 2))}, "scalar inputs"),
        ({"variance": np.zeros((3, 1, 1))}, r"shape \(m,\) or \(m, o\)"),
        ({"n_std": 0.0}, "n_std must be a positive"),
        ({"context": (np.zeros(3), np.zeros(2))}, "context x and y must have the same length"),
        ({"truth": np.zeros(3)}, r"truth must be an \(x, y\) pair"),
        ({"network": (np.zeros(2), np.array([1.0, np.inf]))}, "network y contains non-finite"),
        ({"x": ["a", "b", "c"]}, "x must be numeric"),
        ({"x": np.zeros(0), "mean": np.zeros(0), "variance": np.zeros(0)}, "x is empty"),
        ({"y_range": "tight"}, "y_range must be"),
        ({"y_range": (1.0, 0.0)}, "low < high"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"x": np.arange(3.0), "mean": np.zeros(3), "variance": np.ones(3)} | kwargs
    x, mean, variance = args.pop("x"), args.pop("mean"), args.pop("variance")
    with pytest.raises(ValueError, match=match):
        posterior_band_figure(x, mean, variance, **args)
