"""Tests of ``ntkcore.plots.tour``: figure structure, what each trace plots, bad input.

The tables are built by hand (not by the tour helpers), so each figure is checked against
numbers written in the test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from ntkcore.plots import posterior_band_figure
from ntkcore.plots.tour import (
    TRACE_BREAK,
    TRACE_CROSSOVER,
    TRACE_ENGINE,
    TRACE_JACOBIAN,
    TRACE_KERNEL,
    TRACE_LIN_FUNCTION,
    TRACE_NET_MOVED,
    TRACE_NET_TRAINED,
    TRACE_RELATIVE_ERROR,
    TRACE_TEST_POINT,
    TRACE_THRESHOLD,
    fd_error_figure,
    fd_trace_name,
    kernel_heatmap_figure,
    linearization_path_figure,
    linearized_function_figure,
    path_trace_names,
    space_cost_figure,
    space_trace_name,
    with_test_point,
)


def _trace(fig: go.Figure, name: str) -> go.BaseTraceType:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {len(matches)}"
    return matches[0]


def _names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


@pytest.fixture
def path_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """f(x; θ + αd) = x + α + α² x at four inputs; its linearization at α = 0 is x + α."""
    alphas = np.linspace(-2, 2, 9)
    xs = np.array([-1.0, 0.0, 0.5, 2.0])
    rows = []
    for a in alphas:
        for i, x in enumerate(xs):
            network = x + a + a**2 * x
            linearized = x + a
            rows.append({"alpha": a, "point": i, "x": x, "output": 0, "network": network,
                         "linearized": linearized, "difference": network - linearized})
    curves = pd.DataFrame(rows)
    errors = pd.DataFrame({
        "alpha": alphas,
        "relative_error": [np.nan if a == 0 else abs(a) / 3 for a in alphas],
    })
    return curves, errors


class TestLinearizationPathFigure:
    def test_structure_and_values(self, path_tables):
        curves, errors = path_tables
        fig = linearization_path_figure(curves, errors, points=[0, 3], threshold=0.25,
                                        breaking_alpha=1.0)
        net0, lin0 = path_trace_names("x = -1")
        net3, lin3 = path_trace_names("x = 2")
        assert _names(fig) == [net0, lin0, net3, lin3, TRACE_RELATIVE_ERROR, TRACE_THRESHOLD,
                               TRACE_BREAK]
        alphas = np.linspace(-2, 2, 9)
        np.testing.assert_allclose(_trace(fig, net3).y, 2 + alphas + 2 * alphas**2)
        np.testing.assert_allclose(_trace(fig, lin3).y, 2 + alphas)
        assert _trace(fig, lin3).line.dash == "dash"
        assert _trace(fig, net3).line.color == _trace(fig, lin3).line.color
        # α = 0 (NaN relative error) is left out of the error curve.
        err = _trace(fig, TRACE_RELATIVE_ERROR)
        np.testing.assert_allclose(err.x, alphas[alphas != 0])
        np.testing.assert_allclose(err.y, np.abs(alphas[alphas != 0]) / 3)
        assert fig.layout.yaxis2.type == "log"
        assert fig.layout.yaxis2.tickformat == ".2~%"  # errors of a few percent: percent ticks
        np.testing.assert_allclose(_trace(fig, TRACE_THRESHOLD).y, [0.25, 0.25])
        brk = _trace(fig, TRACE_BREAK)
        assert [v for v in brk.x if v is not None] == [-1.0, -1.0, 1.0, 1.0]

    def test_rounding_level_errors_get_power_ticks(self, path_tables):
        curves, errors = path_tables
        fig = linearization_path_figure(curves, errors.assign(relative_error=1e-15))
        assert fig.layout.yaxis2.exponentformat == "power" and fig.layout.yaxis2.dtick == 1

    def test_default_points_are_spread_and_labels_without_x(self, path_tables):
        curves, errors = path_tables
        fig = linearization_path_figure(curves.drop(columns="x"), errors, threshold=None)
        names = _names(fig)
        assert names[:2] == list(path_trace_names("point 1"))
        assert len(names) == 3 * 2 + 1 and TRACE_THRESHOLD not in names

    @pytest.mark.parametrize(
        ("change", "match"),
        [
            (lambda c, e: (c.drop(columns="network"), e), "missing column"),
            (lambda c, e: (c.iloc[:0], e), "curves is empty"),
            (lambda c, e: (c, e.assign(relative_error=np.nan)), "no finite relative error"),
            (lambda c, e: (c.assign(network=np.inf), e), "network contains non-finite"),
            (lambda c, e: ("table", e), "must be a pandas DataFrame"),
        ],
    )
    def test_bad_tables(self, path_tables, change, match):
        curves, errors = change(*path_tables)
        with pytest.raises(ValueError, match=match):
            linearization_path_figure(curves, errors)

    def test_bad_options(self, path_tables):
        curves, errors = path_tables
        with pytest.raises(ValueError, match="points must be among"):
            linearization_path_figure(curves, errors, points=[7])
        with pytest.raises(ValueError, match="output=1 is not in curves"):
            linearization_path_figure(curves, errors, output=1)
        with pytest.raises(ValueError, match="threshold must be"):
            linearization_path_figure(curves, errors, threshold=-0.1)
        with pytest.raises(ValueError, match="breaking_alpha must be positive"):
            linearization_path_figure(curves, errors, breaking_alpha=0.0)


class TestLinearizedFunctionFigure:
    def test_nearest_alpha_and_sorted_x(self, path_tables):
        curves, _ = path_tables
        fig = linearized_function_figure(curves.sample(frac=1.0, random_state=0), 0.9)
        assert _names(fig) == [TRACE_NET_TRAINED, TRACE_NET_MOVED, TRACE_LIN_FUNCTION]
        xs = np.array([-1.0, 0.0, 0.5, 2.0])
        np.testing.assert_allclose(_trace(fig, TRACE_NET_MOVED).x, xs)
        np.testing.assert_allclose(_trace(fig, TRACE_NET_MOVED).y, xs + 1 + xs)  # α = 1
        np.testing.assert_allclose(_trace(fig, TRACE_LIN_FUNCTION).y, xs + 1)
        np.testing.assert_allclose(_trace(fig, TRACE_NET_TRAINED).y, xs)
        assert "α = 1" in fig.layout.title.text

    def test_bad_input(self, path_tables):
        curves, _ = path_tables
        with pytest.raises(ValueError, match="missing column"):
            linearized_function_figure(curves.drop(columns="x"), 0.5)
        with pytest.raises(ValueError, match="alpha must be a finite number"):
            linearized_function_figure(curves, float("nan"))
        with pytest.raises(ValueError, match="output=3"):
            linearized_function_figure(curves, 0.5, output=3)


class TestKernelHeatmap:
    def test_matrix_labels_and_orientation(self):
        values = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 3.0]])
        fig = kernel_heatmap_figure(values, ["a", "b", "c"])
        heat = _trace(fig, TRACE_KERNEL)
        np.testing.assert_array_equal(np.asarray(heat.z), values)
        assert list(heat.x) == ["a", "b", "c"] and list(heat.y) == ["a", "b", "c"]
        assert fig.layout.yaxis.autorange == "reversed"  # row 0 on top, like a matrix
        assert heat.zmid is None

    def test_kernel_matrix_like_object_and_normalized_scale(self):
        class KernelLike:
            values = np.eye(2)
            labels = ("x0", "x1")
            normalized = True

        heat = _trace(kernel_heatmap_figure(KernelLike()), TRACE_KERNEL)
        assert list(heat.x) == ["x0", "x1"]
        assert (heat.zmin, heat.zmid, heat.zmax) == (-1.0, 0.0, 1.0)

    @pytest.mark.parametrize(
        ("values", "labels", "match"),
        [
            (np.ones((2, 3)), None, "square matrix"),
            (np.ones((0, 0)), None, "square matrix"),
            (np.array([[1.0, np.nan], [0.0, 1.0]]), None, "non-finite"),
            (np.eye(2), ["a"], "got 1 labels"),
        ],
    )
    def test_bad_input(self, values, labels, match):
        with pytest.raises(ValueError, match=match):
            kernel_heatmap_figure(values, labels)


class TestTestPoint:
    def test_marker_with_two_sigma_error_bar(self):
        fig = posterior_band_figure(np.linspace(0, 1, 5), np.zeros(5), np.ones(5))
        with_test_point(fig, 0.25, 1.5, 0.04)
        point = fig.data[-1]
        assert point.name == TRACE_TEST_POINT
        assert list(point.x) == [0.25] and list(point.y) == [1.5]
        assert point.error_y.value == pytest.approx(2 * 0.2)

    @pytest.mark.parametrize(
        "args", [(0.0, 1.0, -1.0), (float("nan"), 0.0, 1.0), (0.0, 0.0, 1.0, 0.0)]
    )
    def test_bad_input(self, args):
        with pytest.raises(ValueError):
            with_test_point(go.Figure(), *args[:3], n_std=args[3] if len(args) > 3 else 2.0)


@pytest.fixture
def fd_table() -> pd.DataFrame:
    rows = []
    for kinks in ("frozen", "live"):
        for scheme in ("forward", "central"):
            for eps in (1e-6, 1e-3, 1.0):
                rows.append({"kinks": kinks, "scheme": scheme, "eps": eps, "step": "grid",
                             "relative_error": 1e-3 / eps + eps * (2 if kinks == "live" else 1)})
            rows.append({"kinks": kinks, "scheme": scheme, "eps": 3e-3, "step": "automatic",
                         "relative_error": 0.5})
    return pd.DataFrame(rows)


class TestFdErrorFigure:
    def test_one_line_per_kinks_and_scheme_and_a_star_per_automatic_step(self, fd_table):
        fig = fd_error_figure(fd_table.sample(frac=1.0, random_state=1))
        expected = {fd_trace_name(k, s, step) for k in ("frozen", "live")
                    for s in ("forward", "central") for step in ("grid", "automatic")}
        assert set(_names(fig)) == expected and len(fig.data) == 8
        line = _trace(fig, fd_trace_name("live", "central"))
        np.testing.assert_allclose(line.x, [1e-6, 1e-3, 1.0])
        np.testing.assert_allclose(line.y, [1e3 + 2e-6, 1 + 2e-3, 1e-3 + 2])
        assert line.line.dash == "dash"
        assert _trace(fig, fd_trace_name("frozen", "forward")).line.dash == "solid"
        assert line.line.color != _trace(fig, fd_trace_name("frozen", "central")).line.color
        star = _trace(fig, fd_trace_name("live", "central", "automatic"))
        assert star.marker.symbol == "star" and list(star.x) == [3e-3]
        assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
        assert fd_trace_name("frozen", "forward") == "frozen kinks, forward"

    @pytest.mark.parametrize(
        ("change", "match"),
        [
            (lambda t: t.drop(columns="step"), "missing column"),
            (lambda t: t.iloc[:0], "table is empty"),
            (lambda t: t.assign(relative_error=0.0), "relative_error must be positive"),
            (lambda t: t.assign(eps=np.nan), "eps contains non-finite"),
        ],
    )
    def test_bad_input(self, fd_table, change, match):
        with pytest.raises(ValueError, match=match):
            fd_error_figure(change(fd_table))


@pytest.fixture
def costs() -> pd.DataFrame:
    rows = []
    for p in (100, 1000):
        for n in (10, 100, 1000):
            for space, flops in (("function", n * n * p + n**3 / 3),
                                 ("parameter", n * p * p + p**3 / 3)):
                rows.append({"n": n, "p": p, "outputs": 1, "space": space, "flops": flops,
                             "engine_strategy": "dense"})
    return pd.DataFrame(rows)


class TestSpaceCostFigure:
    def test_cost_curves_and_crossover(self, costs):
        fig = space_cost_figure(costs, p=100)
        assert _names(fig) == [space_trace_name("function"), space_trace_name("parameter"),
                               TRACE_CROSSOVER]
        line = _trace(fig, space_trace_name("parameter"))
        np.testing.assert_allclose(line.x, [10, 100, 1000])
        np.testing.assert_allclose(line.y, [n * 1e4 + 1e6 / 3 for n in (10, 100, 1000)])
        np.testing.assert_allclose(_trace(fig, TRACE_CROSSOVER).x, [100, 100])
        assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"

    def test_measured_panel(self, costs):
        timings = pd.DataFrame([
            {"n": n, "p": 100, "outputs": 1, "method": m, "seconds": s * n}
            for n in (16, 64) for m, s in (("jacobian", 1e-4), ("function", 1e-5),
                                           ("parameter", 2e-5), ("engine", 3e-5))
        ])
        fig = space_cost_figure(costs, timings, p=100)
        names = _names(fig)
        for name in (space_trace_name("function", True), space_trace_name("parameter", True),
                     TRACE_ENGINE, TRACE_JACOBIAN):
            assert name in names
        np.testing.assert_allclose(_trace(fig, TRACE_ENGINE).y, [3e-5 * 16, 3e-5 * 64])
        assert fig.layout.xaxis2.type == "log" and fig.layout.yaxis2.type == "log"
        assert len(set(names)) == len(names)  # unique names (the app's tests rely on it)

    def test_bad_input(self, costs):
        with pytest.raises(ValueError, match="several p"):
            space_cost_figure(costs)
        with pytest.raises(ValueError, match="p=7 is not in costs"):
            space_cost_figure(costs, p=7)
        with pytest.raises(ValueError, match="missing column"):
            space_cost_figure(costs.drop(columns="flops"), p=100)
        with pytest.raises(ValueError, match="flops must be positive"):
            space_cost_figure(costs.assign(flops=0.0), p=100)
        with pytest.raises(ValueError, match="timings is empty"):
            space_cost_figure(costs, costs.iloc[:0].assign(method=[], seconds=[]), p=100)
