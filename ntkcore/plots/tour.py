"""Plotly figures of the Learn page's tour (``ntkcore.experiments.tour``).

One figure per idea of Maddox et al. (AISTATS 2021): the network against its linearization
along a line in parameter space (Eq. 1), the finite NTK J Jᵀ as a heatmap, a test point on a
posterior band (Eq. 2–3), the cost of solving in function vs parameter space, and the error
of the finite-difference Fisher-vector product against its step (Eq. 5).

The functions take the tidy tables (or small dataclasses) the tour helpers return and only
arrange them: they select rows, sort and take square roots of variances; every trace has a
stable name (the ``TRACE_*`` constants and the ``*_trace_name`` functions) so that apps and
tests can find it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ntkcore.plots.regression import ArrayLike, _to_numpy

__all__ = [
    "TRACE_BREAK",
    "TRACE_CROSSOVER",
    "TRACE_ENGINE",
    "TRACE_JACOBIAN",
    "TRACE_KERNEL",
    "TRACE_LIN_FUNCTION",
    "TRACE_NET_MOVED",
    "TRACE_NET_TRAINED",
    "TRACE_RELATIVE_ERROR",
    "TRACE_TEST_POINT",
    "TRACE_THRESHOLD",
    "fd_error_figure",
    "fd_trace_name",
    "kernel_heatmap_figure",
    "linearization_path_figure",
    "linearized_function_figure",
    "path_trace_names",
    "space_cost_figure",
    "space_trace_name",
    "with_test_point",
]

TRACE_RELATIVE_ERROR = "relative error"
TRACE_THRESHOLD = "threshold"
TRACE_BREAK = "breaks here"
TRACE_NET_TRAINED = "network at θ"
TRACE_NET_MOVED = "network at θ + αd"
TRACE_LIN_FUNCTION = "linearization at θ + αd"
TRACE_KERNEL = "finite NTK"
TRACE_TEST_POINT = "test point x*"
TRACE_CROSSOVER = "n·o = p"
TRACE_ENGINE = "ntkcore.adapt (auto)"
TRACE_JACOBIAN = "Jacobian J (shared)"

# One colour per probe input; frozen / live kinks; function / parameter space.
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
_KINK_COLOURS = {"frozen": "#1f77b4", "live": "#d62728"}
_SCHEME_DASH = {"forward": "solid", "central": "dash"}
_SPACE_COLOURS = {"function": "#1f77b4", "parameter": "#ff7f0e"}
_SPACE_LABELS = {"function": "function space (n·o × n·o)", "parameter": "parameter space (p × p)"}
_GREY = "#6c757d"


def _require(table: Any, columns: Sequence[str], name: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{name} is empty: nothing to plot")
    return table


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return values


def _point_label(rows: pd.DataFrame, point: int) -> str:
    if "x" in rows.columns:
        return f"x = {float(rows['x'].iloc[0]):.3g}"
    return f"point {point}"


def path_trace_names(label: str) -> tuple[str, str]:
    """Names of the network and linearization traces of one probe input, e.g. ``"x = 2"``."""
    return f"network, {label}", f"linearization, {label}"


def linearization_path_figure(
    curves: pd.DataFrame,
    errors: pd.DataFrame,
    *,
    points: Sequence[int] | None = None,
    output: int = 0,
    threshold: float | None = 0.1,
    breaking_alpha: float | None = None,
    height: int = 420,
) -> go.Figure:
    """f(x; θ + αd) against its linearization along α (left) and the relative error (right).

    Parameters
    ----------
    curves, errors : DataFrame
        ``LinearizationPath.curves`` (columns ``alpha``, ``point``, ``output``, ``network``,
        ``linearized``, optional ``x``) and ``LinearizationPath.errors`` (``alpha``,
        ``relative_error``; NaN where α = 0 is skipped).
    points : sequence of int, optional
        Probe points (values of ``point``) to draw; default up to three spread over the set.
    output : int
        Which output to draw.
    threshold : float, optional
        Relative error drawn as a horizontal line (trace ``TRACE_THRESHOLD``).
    breaking_alpha : float, optional
        |α| at which the error reaches the threshold: vertical lines at ±α (``TRACE_BREAK``).
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Left panel: per point, ``path_trace_names(label)`` (solid network, dashed straight
        linearization, same colour). Right panel: ``TRACE_RELATIVE_ERROR`` on a log axis.

    Raises
    ------
    ValueError
        For missing columns, empty tables, unknown points or outputs, non-finite values.
    """
    curves = _require(curves, ("alpha", "point", "output", "network", "linearized"), "curves")
    errors = _require(errors, ("alpha", "relative_error"), "errors")
    if output not in set(curves["output"]):
        raise ValueError(f"output={output} is not in curves (outputs {sorted(set(curves.output))})")
    rows = curves[curves["output"] == output]
    available = sorted(set(int(p) for p in rows["point"]))
    if points is None:
        count = min(3, len(available))
        picks = np.linspace(0, len(available) - 1, count + 2)[1:-1] if count == 3 else range(count)
        points = [available[int(round(i))] for i in picks]
    unknown = [p for p in points if p not in available]
    if unknown or not points:
        raise ValueError(f"points must be among the curves' points {available}, got {points!r}")
    if threshold is not None and not (isinstance(threshold, int | float) and threshold > 0):
        raise ValueError(f"threshold must be a positive number or None, got {threshold!r}")

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Along the line θ + α d", "Share of the change missed"),
        horizontal_spacing=0.12,
    )
    for i, point in enumerate(points):
        sel = rows[rows["point"] == point].sort_values("alpha")
        alpha = _finite(sel["alpha"].to_numpy(dtype=float), "alpha")
        net = _finite(sel["network"].to_numpy(dtype=float), "network")
        lin = _finite(sel["linearized"].to_numpy(dtype=float), "linearized")
        colour = _PALETTE[i % len(_PALETTE)]
        net_name, lin_name = path_trace_names(_point_label(sel, point))
        fig.add_trace(
            go.Scatter(x=alpha, y=net, name=net_name, mode="lines", legendgroup=str(point),
                       line={"color": colour, "width": 2.5}),
            row=1, col=1,
        )
        fig.add_trace(
            go.Scatter(x=alpha, y=lin, name=lin_name, mode="lines", legendgroup=str(point),
                       line={"color": colour, "width": 2, "dash": "dash"}),
            row=1, col=1,
        )
    err = errors.sort_values("alpha")
    keep = np.isfinite(err["relative_error"].to_numpy(dtype=float))
    err = err[keep]
    if err.empty:
        raise ValueError("errors has no finite relative error (only α = 0?)")
    fig.add_trace(
        go.Scatter(
            x=err["alpha"], y=err["relative_error"], name=TRACE_RELATIVE_ERROR,
            mode="lines+markers", line={"color": "#222222", "width": 2}, marker={"size": 5},
            hovertemplate="α = %{x:.3g}<br>relative error = %{y:.2%}<extra></extra>",
        ),
        row=1, col=2,
    )
    a_min, a_max = float(err["alpha"].min()), float(err["alpha"].max())
    if threshold is not None:
        fig.add_trace(
            go.Scatter(x=[a_min, a_max], y=[threshold, threshold], mode="lines",
                       name=TRACE_THRESHOLD, line={"color": _GREY, "dash": "dot"},
                       hovertemplate=f"{threshold:.0%}<extra>threshold</extra>"),
            row=1, col=2,
        )
    if breaking_alpha is not None:
        if not math.isfinite(breaking_alpha) or breaking_alpha <= 0:
            raise ValueError(f"breaking_alpha must be positive, got {breaking_alpha!r}")
        low = float(np.nanmin(err["relative_error"]))
        high = float(np.nanmax(err["relative_error"]))
        xs, ys = [], []
        for a in (-breaking_alpha, breaking_alpha):
            xs += [a, a, None]
            ys += [low, high, None]
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name=TRACE_BREAK,
                       line={"color": "#e0b000", "width": 1.5, "dash": "dashdot"},
                       hoverinfo="skip"),
            row=1, col=2,
        )
    fig.update_xaxes(title_text="step α along d (‖d‖ = 1)", row=1, col=1)
    fig.update_xaxes(title_text="step α", row=1, col=2)
    fig.update_yaxes(title_text="f(x)", row=1, col=1)
    # Percent ticks (1-2-5 per decade) while the errors are readable as percentages, powers
    # of ten when they reach rounding level (a last-layer direction is exact).
    ticks = (
        {"dtick": "D2", "tickformat": ".2~%"}
        if float(err["relative_error"].min()) >= 1e-3
        else {"dtick": 1, "exponentformat": "power"}
    )
    fig.update_yaxes(title_text="relative error", type="log", row=1, col=2, **ticks)
    fig.update_annotations(font_size=13)
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.24, "xanchor": "left", "x": 0},
        hovermode="closest",
    )
    return fig


def linearized_function_figure(
    curves: pd.DataFrame, alpha: float, *, output: int = 0, height: int = 360
) -> go.Figure:
    """The whole function x ↦ f(x; θ + αd) and its linearization at one step α.

    Parameters
    ----------
    curves : DataFrame
        ``LinearizationPath.curves`` with an ``x`` column (scalar inputs); α = 0 must be on
        the grid for the trained network's trace.
    alpha : float
        The step; the nearest α of the table is drawn (and named in the title).
    output : int
        Which output to draw.
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces ``TRACE_NET_TRAINED`` (when α = 0 is on the grid), ``TRACE_NET_MOVED`` and
        ``TRACE_LIN_FUNCTION``, sorted by x.

    Raises
    ------
    ValueError
        Without an ``x`` column, for an unknown output, or a non-finite α.
    """
    curves = _require(curves, ("alpha", "x", "output", "network", "linearized"), "curves")
    if not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    rows = curves[curves["output"] == output]
    if rows.empty:
        raise ValueError(f"output={output} is not in curves")
    grid = np.unique(rows["alpha"].to_numpy(dtype=float))
    chosen = float(grid[np.argmin(np.abs(grid - alpha))])
    fig = go.Figure()
    base = rows[rows["alpha"] == 0.0].sort_values("x")
    if not base.empty:
        fig.add_trace(go.Scatter(x=base["x"], y=base["network"], name=TRACE_NET_TRAINED,
                                 mode="lines", line={"color": _GREY, "width": 2, "dash": "dot"}))
    sel = rows[rows["alpha"] == chosen].sort_values("x")
    fig.add_trace(go.Scatter(x=sel["x"], y=_finite(sel["network"].to_numpy(float), "network"),
                             name=TRACE_NET_MOVED, mode="lines",
                             line={"color": "#1f77b4", "width": 2.5}))
    fig.add_trace(go.Scatter(x=sel["x"],
                             y=_finite(sel["linearized"].to_numpy(float), "linearized"),
                             name=TRACE_LIN_FUNCTION, mode="lines",
                             line={"color": "#d62728", "width": 2, "dash": "dash"}))
    fig.update_layout(
        title=f"The whole function at α = {chosen:.3g}",
        height=height,
        xaxis_title="x",
        yaxis_title="f(x)",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
    )
    return fig


def kernel_heatmap_figure(
    values: ArrayLike | Any,
    labels: Sequence[str] | None = None,
    *,
    inputs: ArrayLike | None = None,
    normalized: bool | None = None,
    title: str | None = None,
    height: int = 480,
) -> go.Figure:
    """A heatmap of a kernel matrix such as the finite NTK J Jᵀ (row 0 on top).

    Parameters
    ----------
    values : array-like (N, N) or KernelMatrix
        The matrix; a ``KernelMatrix`` (``ntkcore.experiments.tour``) brings its labels,
        its scalar ``inputs`` (when it has one output) and its ``normalized`` flag.
    labels : sequence of str, optional
        Row/column labels of a categorical axis (default ``0..N-1``).
    inputs : array-like (N,), optional
        Increasing scalar inputs: numeric axes in x instead of categories (ticks stay
        readable however many probe points there are).
    normalized : bool, optional
        Cosine-normalized entries in [−1, 1]: a diverging scale centred on 0 with fixed
        limits. Default: the KernelMatrix's flag, else False.
    title : str, optional
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Heatmap`` trace named ``TRACE_KERNEL``, square cells.

    Raises
    ------
    ValueError
        For a non-square or empty matrix, non-finite entries, a label or input count that
        differs, or inputs that do not increase.
    """
    if hasattr(values, "values") and hasattr(values, "labels") and not isinstance(
        values, pd.DataFrame
    ):
        labels = values.labels if labels is None else labels
        if inputs is None and getattr(values, "inputs", None) is not None and getattr(
            values, "outputs", 1
        ) == 1:
            inputs = values.inputs
        normalized = values.normalized if normalized is None else normalized
        values = values.values
    matrix = _to_numpy(values, "values")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"values must be a non-empty square matrix, got {matrix.shape}")
    _finite(matrix, "values")
    size = matrix.shape[0]
    labels = [str(i) for i in range(size)] if labels is None else [str(v) for v in labels]
    if len(labels) != size:
        raise ValueError(f"got {len(labels)} labels for a {size} × {size} matrix")
    if inputs is not None:
        coords = _finite(_to_numpy(inputs, "inputs").reshape(-1), "inputs")
        if coords.shape[0] != size:
            raise ValueError(f"got {coords.shape[0]} inputs for a {size} × {size} matrix")
        if size > 1 and not np.all(np.diff(coords) > 0):
            raise ValueError("inputs must be strictly increasing")
        axis: list[Any] = coords.tolist()
        axis_type = "linear"
    else:
        axis, axis_type = labels, "category"
    scale: dict[str, Any] = (
        {"colorscale": "RdBu_r", "zmid": 0.0, "zmin": -1.0, "zmax": 1.0}
        if normalized
        else {"colorscale": "Viridis"}
    )
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=axis,
            y=axis,
            name=TRACE_KERNEL,
            colorbar={"title": {"text": "cos" if normalized else "k(x, x′)"}},
            hovertemplate="x = %{y}<br>x′ = %{x}<br>k = %{z:.4g}<extra></extra>",
            **scale,
        )
    )
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"title": "x′", "type": axis_type, "constrain": "domain"},
        yaxis={"title": "x", "type": axis_type, "autorange": "reversed", "scaleanchor": "x",
               "constrain": "domain"},
    )
    return fig


def with_test_point(
    fig: go.Figure, x_star: float, mean: float, variance: float, *, n_std: float = 2.0
) -> go.Figure:
    """Add the test input x* with its predictive mean ± ``n_std``σ to a posterior figure.

    Returns the same figure with one more trace, ``TRACE_TEST_POINT`` (a marker with an error
    bar), drawn on top.

    Raises
    ------
    ValueError
        For non-finite numbers, a negative variance or a non-positive ``n_std``.
    """
    values = (x_star, mean, variance, n_std)
    if not all(isinstance(v, int | float | np.floating) and math.isfinite(v) for v in values):
        raise ValueError(f"x_star, mean, variance and n_std must be finite numbers, got {values}")
    if variance < 0 or n_std <= 0:
        raise ValueError(f"need variance >= 0 and n_std > 0, got {variance} and {n_std}")
    half = n_std * math.sqrt(variance)
    fig.add_trace(
        go.Scatter(
            x=[float(x_star)],
            y=[float(mean)],
            name=TRACE_TEST_POINT,
            mode="markers",
            marker={"color": "#e0b000", "size": 13, "symbol": "diamond",
                    "line": {"color": "black", "width": 1}},
            error_y={"type": "constant", "value": half, "color": "#e0b000", "thickness": 2,
                     "width": 8},
            hovertemplate=f"x* = %{{x:.3g}}<br>mean = %{{y:.4g}} ± {half:.3g}<extra></extra>",
        )
    )
    return fig


def fd_trace_name(kinks: str, scheme: str, step: str = "grid") -> str:
    """Trace name of one fd-error curve, e.g. ``"frozen kinks, forward"``."""
    base = f"{kinks} kinks, {scheme}"
    return base if step == "grid" else f"automatic step ({base})"


def fd_error_figure(table: pd.DataFrame, *, height: int = 440) -> go.Figure:
    """Relative error of the finite-difference Fisher product against its step ε (log-log).

    Parameters
    ----------
    table : DataFrame
        ``fd_fisher_error`` output: ``kinks``, ``scheme``, ``eps``, ``step``,
        ``relative_error`` (and optionally ``relative_error_min``/``_max`` for the hover).

    Returns
    -------
    plotly.graph_objects.Figure
        One line per kinks × scheme (``fd_trace_name``; frozen blue, live red, forward solid,
        central dashed) and a star per automatic step (``fd_trace_name(..., "automatic")``).

    Raises
    ------
    ValueError
        For missing columns, an empty table, or non-positive steps or errors.
    """
    table = _require(table, ("kinks", "scheme", "eps", "step", "relative_error"), "table")
    for column in ("eps", "relative_error"):
        values = _finite(table[column].to_numpy(dtype=float), column)
        if np.any(values <= 0):
            raise ValueError(f"{column} must be positive on a log axis")
    fig = go.Figure()
    groups = table[["kinks", "scheme"]].drop_duplicates().itertuples(index=False)
    for kinks, scheme in groups:
        sel = table[(table["kinks"] == kinks) & (table["scheme"] == scheme)]
        colour = _KINK_COLOURS.get(kinks, _GREY)
        grid = sel[sel["step"] == "grid"].sort_values("eps")
        if not grid.empty:
            fig.add_trace(
                go.Scatter(
                    x=grid["eps"], y=grid["relative_error"], name=fd_trace_name(kinks, scheme),
                    mode="lines+markers", legendgroup=f"{kinks}-{scheme}",
                    line={"color": colour, "width": 2, "dash": _SCHEME_DASH.get(scheme)},
                    marker={"size": 5},
                    hovertemplate="ε = %{x:.2g}<br>relative error = %{y:.2e}<extra>"
                    + fd_trace_name(kinks, scheme) + "</extra>",
                )
            )
        auto = sel[sel["step"] == "automatic"]
        if not auto.empty:
            fig.add_trace(
                go.Scatter(
                    x=auto["eps"], y=auto["relative_error"],
                    name=fd_trace_name(kinks, scheme, "automatic"),
                    mode="markers", legendgroup=f"{kinks}-{scheme}", showlegend=True,
                    marker={"color": colour, "size": 15, "symbol": "star",
                            "line": {"color": "black", "width": 1}},
                    hovertemplate="automatic ε = %{x:.2g}<br>relative error = %{y:.2e}"
                    "<extra></extra>",
                )
            )
    fig.update_layout(
        height=height,
        xaxis={"title": "finite-difference step ε", "type": "log", "exponentformat": "power"},
        yaxis={"title": "‖F v (fd) − F v‖ / ‖F v‖", "type": "log", "exponentformat": "power"},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "v", "yanchor": "top", "y": 1, "xanchor": "left", "x": 1.02},
        hovermode="closest",
    )
    return fig


def space_trace_name(space: str, measured: bool = False) -> str:
    """Trace name of a cost curve: ``"function space (n·o × n·o)"`` (+ ``", measured"``)."""
    base = _SPACE_LABELS.get(space, str(space))
    return f"{base}, measured" if measured else base


def space_cost_figure(
    costs: pd.DataFrame,
    timings: pd.DataFrame | None = None,
    *,
    p: int | None = None,
    height: int = 420,
) -> go.Figure:
    """Cost of solving in function vs parameter space against n (log-log).

    Parameters
    ----------
    costs : DataFrame
        ``space_costs`` output (``n``, ``p``, ``outputs``, ``space``, ``flops``,
        ``engine_strategy``).
    timings : DataFrame, optional
        ``space_timings`` output (``n``, ``p``, ``method``, ``seconds``): a right-hand panel
        of measured seconds.
    p : int, optional
        Which p of ``costs`` to draw (needed when it holds several).
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
        Left: ``space_trace_name(space)`` flop counts and ``TRACE_CROSSOVER`` (n·o = p);
        hover shows the engine's pick. Right (with timings): ``space_trace_name(space,
        True)``, ``TRACE_ENGINE`` and ``TRACE_JACOBIAN``.

    Raises
    ------
    ValueError
        For missing columns, empty tables, an ambiguous or unknown p, non-positive values.
    """
    costs = _require(costs, ("n", "p", "outputs", "space", "flops", "engine_strategy"), "costs")
    ps = sorted(set(int(v) for v in costs["p"]))
    if p is None:
        if len(ps) != 1:
            raise ValueError(f"costs holds several p {ps}: choose one with p=")
        p = ps[0]
    if p not in ps:
        raise ValueError(f"p={p} is not in costs (p values {ps})")
    rows = costs[costs["p"] == p]
    cols = 2 if timings is not None else 1
    titles = ["Flop count of forming and factorizing the system"]
    if timings is not None:
        timings = _require(timings, ("n", "p", "method", "seconds"), "timings")
        titles.append(f"Measured on this machine (p = {int(timings['p'].iloc[0]):,})")
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.1)
    o = int(rows["outputs"].iloc[0])
    for space in ("function", "parameter"):
        sel = rows[rows["space"] == space].sort_values("n")
        if sel.empty:
            continue
        flops = _finite(sel["flops"].to_numpy(dtype=float), "flops")
        if np.any(flops <= 0):
            raise ValueError("flops must be positive on a log axis")
        fig.add_trace(
            go.Scatter(
                x=sel["n"] * o, y=flops, name=space_trace_name(space), mode="lines",
                line={"color": _SPACE_COLOURS[space], "width": 2.5},
                customdata=sel["engine_strategy"],
                hovertemplate="n·o = %{x}<br>%{y:.3g} multiply–adds"
                "<br>engine picks: %{customdata}<extra>" + space + " space</extra>",
            ),
            row=1, col=1,
        )
    low, high = float(rows["flops"].min()), float(rows["flops"].max())
    fig.add_trace(
        go.Scatter(x=[p * 1.0, p * 1.0], y=[low, high], name=TRACE_CROSSOVER, mode="lines",
                   line={"color": _GREY, "dash": "dot"}, hoverinfo="skip"),
        row=1, col=1,
    )
    fig.update_xaxes(title_text="n·o (context points × outputs)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="multiply–adds", type="log", exponentformat="power",
                     row=1, col=1)
    if timings is not None:
        styles = {
            "function": (space_trace_name("function", True), _SPACE_COLOURS["function"], "solid"),
            "parameter": (
                space_trace_name("parameter", True), _SPACE_COLOURS["parameter"], "solid"
            ),
            "engine": (TRACE_ENGINE, "#2ca02c", "dash"),
            "jacobian": (TRACE_JACOBIAN, _GREY, "dot"),
        }
        for method, (name, colour, dash) in styles.items():
            sel = timings[timings["method"] == method].sort_values("n")
            if sel.empty:
                continue
            seconds = _finite(sel["seconds"].to_numpy(dtype=float), "seconds")
            if np.any(seconds <= 0):
                raise ValueError("seconds must be positive on a log axis")
            fig.add_trace(
                go.Scatter(x=sel["n"], y=seconds, name=name, mode="lines+markers",
                           line={"color": colour, "dash": dash, "width": 2},
                           hovertemplate="n = %{x}<br>%{y:.3g} s<extra>" + name + "</extra>"),
                row=1, col=2,
            )
        outputs = int(timings["outputs"].iloc[0]) if "outputs" in timings.columns else 1
        tp = int(timings["p"].iloc[0]) / outputs  # the crossover n·o = p, in n
        fig.add_trace(
            go.Scatter(x=[tp, tp], y=[float(timings["seconds"].min()),
                                      float(timings["seconds"].max())],
                       name=f"{TRACE_CROSSOVER} (measured)", mode="lines", showlegend=False,
                       line={"color": _GREY, "dash": "dot"}, hoverinfo="skip"),
            row=1, col=2,
        )
        fig.update_xaxes(title_text="n (context points)", type="log", row=1, col=2)
        fig.update_yaxes(title_text="seconds", type="log", exponentformat="power", row=1, col=2)
    fig.update_annotations(font_size=13)
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
        hovermode="closest",
    )
    return fig
