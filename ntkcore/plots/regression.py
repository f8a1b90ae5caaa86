"""Plotly figures for 1-D regression posteriors.

The finite-NTK Gaussian process of Maddox et al. (AISTATS 2021, Eq. 1-3) gives, at test
inputs ``x*``, a Gaussian latent predictive ``p(f* | y) = N(mean, variance)``. The functions
here draw such a predictive together with the data it was conditioned on, the network's own
prediction and, for synthetic tasks, the true target function, in the style of the paper's
Figure 6 (source points orange, context points purple, posterior blue).

These functions only arrange numbers that are already computed: they accept NumPy arrays,
torch tensors, pandas Series/single-column DataFrames or sequences, and perform no numerics
beyond the square root of the variances, sorting by ``x`` and the extremes for axis limits.
Every trace has a stable ``name`` (the ``TRACE_*`` constants and :func:`band_trace_name`) so
that apps and tests can find it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = [
    "TRACE_CONTEXT",
    "TRACE_MEAN",
    "TRACE_NETWORK",
    "TRACE_SOURCE",
    "TRACE_TRUTH",
    "TRACE_CLICK",
    "TRACE_IDENTITY",
    "TRACE_PREDICTIONS",
    "band_trace_name",
    "parity_figure",
    "posterior_band_figure",
]

TRACE_CONTEXT = "context"
TRACE_SOURCE = "source"
TRACE_TRUTH = "true function"
TRACE_MEAN = "posterior mean"
TRACE_NETWORK = "network"
#: Invisible markers covering the plot area, so that a click anywhere selects a point (x, y).
TRACE_CLICK = "click to add a point"

# Baseline methods drawn as lines, in the order given (the paper's Figure 6 uses grey for ABLR
# and yellow for the RBF GP).
_BASELINE_COLOURS = ("#8c8c8c", "#e0b000", "#2ca02c", "#d62728", "#17becf", "#9467bd")

# Colours follow the paper's Figure 6: posterior blue, context purple, source orange.
_BLUE = "#1f77b4"
_BAND = "rgba(31, 119, 180, 0.22)"
_PURPLE = "#7b2cbf"
_ORANGE = "#ff7f0e"
_TRUTH = "#2b2b2b"
_NETWORK = "#6c757d"

ArrayLike = Any  # numpy array, torch tensor, pandas Series/DataFrame, or a sequence of floats
Pair = tuple[ArrayLike, ArrayLike] | Sequence[ArrayLike]


def band_trace_name(n_std: float = 2.0) -> str:
    """Name of the credible-band trace for ``n_std`` standard deviations, e.g. ``"±2σ"``."""
    return f"±{n_std:g}σ"


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    """Convert an array-like to a float64 NumPy array without importing torch or pandas."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "to_numpy"):  # pandas Series / DataFrame
        value = value.to_numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric array-like, got {type(value).__name__}") from err
    return array


def _column(value: ArrayLike, name: str, output: int) -> np.ndarray:
    """Return ``value`` as a 1-D array: (m,) as is, (m, 1) flattened, (m, o) column ``output``."""
    array = _to_numpy(value, name)
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        if array.shape[1] == 1:
            return array[:, 0]
        if not -array.shape[1] <= output < array.shape[1]:
            raise ValueError(
                f"output={output} is out of range for {name} with shape {tuple(array.shape)} "
                f"({array.shape[1]} outputs)"
            )
        return array[:, output]
    raise ValueError(f"{name} must have shape (m,) or (m, o), got {tuple(array.shape)}")


def _inputs(value: ArrayLike, name: str) -> np.ndarray:
    """Return scalar inputs of shape (m,) from (m,) or (m, 1); reject other shapes."""
    array = _to_numpy(value, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must hold scalar inputs of shape (m,) or (m, 1) for a 1-D regression "
            f"plot, got {tuple(array.shape)}"
        )
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def _pair(pair: Pair, name: str, output: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(x, y)`` pair and return it as two 1-D arrays of equal length."""
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"{name} must be an (x, y) pair, got {type(pair).__name__}")
    x = _inputs(pair[0], f"{name} x")
    y = _column(pair[1], f"{name} y", output)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} x and y must have the same length, got {x.shape[0]} and {y.shape[0]}"
        )
    _check_finite(x, f"{name} x")
    _check_finite(y, f"{name} y")
    return x, y


def _sorted_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def posterior_band_figure(
    x: ArrayLike,
    mean: ArrayLike,
    variance: ArrayLike,
    *,
    context: Pair | None = None,
    truth: Pair | None = None,
    network: Pair | None = None,
    source: Pair | None = None,
    n_std: float = 2.0,
    output: int = 0,
    title: str | None = None,
    height: int | None = 460,
    y_range: str | tuple[float, float] = "data",
    baselines: Mapping[str, Pair] | None = None,
    click_grid: int = 0,
) -> go.Figure:
    """Draw a 1-D regression posterior: mean, credible band, data and reference curves.

    Parameters
    ----------
    x : array-like, shape (m,) or (m, 1)
        Test inputs at which the predictive was evaluated; need not be sorted.
    mean, variance : array-like, shape (m,) or (m, o)
        Latent predictive mean and variance of ``f*`` at ``x`` (e.g. ``pred.mean`` and
        ``pred.variance`` from ``ntkcore.adapt(...).predict(x)``, Eq. 3 of the paper). For
        several outputs, column ``output`` is drawn.
    context : (x, y) pair, optional
        Target-task observations the posterior was conditioned on (trace ``"context"``).
    truth : (x, y) pair, optional
        The true target function on a grid, for synthetic tasks (trace ``"true function"``).
    network : (x, y) pair, optional
        The trained network's own prediction ``f(x; θ)`` (dashed trace ``"network"``).
    source : (x, y) pair, optional
        Source-task training data (trace ``"source"``).
    n_std : float, default 2.0
        Half-width of the band in posterior standard deviations (trace ``band_trace_name``).
    output : int, default 0
        Which output column to draw when arrays have shape (m, o).
    title : str, optional
        Figure title.
    height : int or None, default 460
        Figure height in pixels; ``None`` leaves it to Plotly.
    y_range : {"data", "all"} or (float, float), default "data"
        Vertical axis range. ``"data"``: fit the curves and points with a 10% margin and let
        the band run off the plot where it is wider (far from the data a GP's band can be
        orders of magnitude wider than the function); ``"all"``: Plotly's autorange, band
        included; a pair: explicit limits.
    baselines : mapping of str to (x, y) pairs, optional
        Other methods' predictive means (e.g. ABLR, last-layer retraining, an RBF GP), one
        line each, named by their key.
    click_grid : int, default 0
        With ``n > 0``, an invisible ``n × n`` grid of markers spanning the plotted area
        (trace ``TRACE_CLICK``), so that a click anywhere selects a point with its (x, y):
        what an app needs to let users add observations by clicking.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces, bottom to top: band, true function, network, baselines, posterior mean,
        source, context, click grid. Only the traces whose data is given are present.

    Raises
    ------
    ValueError
        If shapes disagree, inputs are not scalar, values are not finite, a variance is
        negative, or ``n_std`` is not a positive finite number.
    """
    if not (isinstance(n_std, (int, float)) and math.isfinite(n_std) and n_std > 0):
        raise ValueError(f"n_std must be a positive finite number, got {n_std!r}")
    if isinstance(y_range, str):
        if y_range not in ("data", "all"):
            raise ValueError(
                f'y_range must be "data", "all" or a (low, high) pair, got {y_range!r}'
            )
    elif not (
        isinstance(y_range, Sequence)
        and len(y_range) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in y_range)
        and y_range[0] < y_range[1]
    ):
        raise ValueError(f"y_range must be a (low, high) pair with low < high, got {y_range!r}")
    xs = _inputs(x, "x")
    mu = _column(mean, "mean", output)
    var = _column(variance, "variance", output)
    if not xs.shape[0] == mu.shape[0] == var.shape[0]:
        raise ValueError(
            "x, mean and variance must have the same number of points, got "
            f"{xs.shape[0]}, {mu.shape[0]} and {var.shape[0]}"
        )
    if xs.shape[0] == 0:
        raise ValueError("x is empty: nothing to plot")
    for array, name in ((xs, "x"), (mu, "mean"), (var, "variance")):
        _check_finite(array, name)
    if np.any(var < 0):
        raise ValueError(
            f"variance must be non-negative, got minimum {var.min():.3g} "
            f"at x = {xs[np.argmin(var)]:.6g}"
        )

    order = np.argsort(xs, kind="stable")
    xs, mu, std = xs[order], mu[order], np.sqrt(var[order])
    upper, lower = mu + n_std * std, mu - n_std * std

    shown = [mu]  # y values the "data" range must show: everything but the band
    fig = go.Figure()
    # One closed polygon (upper edge left to right, lower edge back) filled to itself.
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([xs, xs[::-1]]),
            y=np.concatenate([upper, lower[::-1]]),
            name=band_trace_name(n_std),
            mode="lines",
            fill="toself",
            fillcolor=_BAND,
            line={"width": 0},
            hoverinfo="skip",
        )
    )
    if truth is not None:
        tx, ty = _sorted_pair(*_pair(truth, "truth", output))
        shown.append(ty)
        fig.add_trace(
            go.Scatter(
                x=tx,
                y=ty,
                name=TRACE_TRUTH,
                mode="lines",
                line={"color": _TRUTH, "width": 1.5, "dash": "dot"},
            )
        )
    if network is not None:
        nx, ny = _sorted_pair(*_pair(network, "network", output))
        shown.append(ny)
        fig.add_trace(
            go.Scatter(
                x=nx,
                y=ny,
                name=TRACE_NETWORK,
                mode="lines",
                line={"color": _NETWORK, "width": 2, "dash": "dash"},
            )
        )
    for i, (label, pair) in enumerate((baselines or {}).items()):
        bx, by = _sorted_pair(*_pair(pair, f"baseline {label!r}", output))
        shown.append(by)
        fig.add_trace(
            go.Scatter(
                x=bx,
                y=by,
                name=str(label),
                mode="lines",
                line={"color": _BASELINE_COLOURS[i % len(_BASELINE_COLOURS)], "width": 2},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=mu,
            name=TRACE_MEAN,
            mode="lines",
            line={"color": _BLUE, "width": 2.5},
            customdata=std,
            hovertemplate="x = %{x:.3f}<br>mean = %{y:.3f}<br>σ = %{customdata:.3f}"
            "<extra>posterior</extra>",
        )
    )
    if source is not None:
        sx, sy = _pair(source, "source", output)
        shown.append(sy)
        fig.add_trace(
            go.Scatter(
                x=sx,
                y=sy,
                name=TRACE_SOURCE,
                mode="markers",
                marker={"color": _ORANGE, "size": 5, "opacity": 0.55},
            )
        )
    if context is not None:
        cx, cy = _pair(context, "context", output)
        shown.append(cy)
        fig.add_trace(
            go.Scatter(
                x=cx,
                y=cy,
                name=TRACE_CONTEXT,
                mode="markers",
                marker={"color": _PURPLE, "size": 9, "line": {"color": "white", "width": 1}},
            )
        )

    fig.update_layout(
        title=title,
        height=height,
        xaxis_title="x",
        yaxis_title="y",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
        hovermode="closest",
    )
    if y_range == "data":
        low = min(float(v.min()) for v in shown if v.size)
        high = max(float(v.max()) for v in shown if v.size)
        margin = 0.1 * (high - low) or 0.1 * max(abs(low), 1.0)
        y_lim = (low - margin, high + margin)
    elif y_range == "all":
        y_lim = (
            float(min(lower.min(), *(v.min() for v in shown))),
            float(max(upper.max(), *(v.max() for v in shown))),
        )
    else:
        y_lim = (float(y_range[0]), float(y_range[1]))
    if y_range != "all":
        fig.update_yaxes(range=list(y_lim))
    if isinstance(click_grid, bool) or not isinstance(click_grid, int) or click_grid < 0:
        raise ValueError(f"click_grid must be a non-negative int, got {click_grid!r}")
    if click_grid:
        gx, gy = np.meshgrid(
            np.linspace(xs.min(), xs.max(), click_grid), np.linspace(*y_lim, click_grid)
        )
        fig.add_trace(
            go.Scatter(
                x=gx.ravel(),
                y=gy.ravel(),
                name=TRACE_CLICK,
                mode="markers",
                marker={"size": 12, "opacity": 0.0, "color": _PURPLE},
                showlegend=False,
                hovertemplate="click to add (%{x:.2f}, %{y:.2f})<extra></extra>",
            )
        )
    return fig


TRACE_PREDICTIONS = "predictions"
TRACE_IDENTITY = "y = x"


def parity_figure(
    y: ArrayLike,
    mean: ArrayLike,
    variance: ArrayLike,
    *,
    n_std: float = 2.0,
    output: int = 0,
    title: str | None = None,
    height: int | None = 460,
) -> go.Figure:
    """Predicted against true values with ±``n_std``·σ error bars, for inputs of any shape.

    What a posterior looks like when its inputs cannot be drawn on an axis (several input
    columns, images): points on the diagonal are exact, bars show the predictive spread.

    Parameters
    ----------
    y : array-like, shape (m,) or (m, o)
        True targets.
    mean, variance : array-like, shape (m,) or (m, o)
        Predictive mean and variance (column ``output`` is drawn).
    n_std : float
        Half-length of the error bars in standard deviations.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces ``TRACE_IDENTITY`` (the diagonal) and ``TRACE_PREDICTIONS``.

    Raises
    ------
    ValueError
        If lengths differ, values are not finite, or a variance is negative.
    """
    if not (isinstance(n_std, (int, float)) and math.isfinite(n_std) and n_std > 0):
        raise ValueError(f"n_std must be a positive finite number, got {n_std!r}")
    truth = _column(y, "y", output)
    mu = _column(mean, "mean", output)
    var = _column(variance, "variance", output)
    if not truth.shape[0] == mu.shape[0] == var.shape[0]:
        raise ValueError(
            f"y, mean and variance must have the same length, got {truth.shape[0]}, "
            f"{mu.shape[0]} and {var.shape[0]}"
        )
    if truth.shape[0] == 0:
        raise ValueError("y is empty: nothing to plot")
    for array, name in ((truth, "y"), (mu, "mean"), (var, "variance")):
        _check_finite(array, name)
    if np.any(var < 0):
        raise ValueError(f"variance must be non-negative, got minimum {var.min():.3g}")
    half = n_std * np.sqrt(var)
    low = float(min(truth.min(), (mu - half).min()))
    high = float(max(truth.max(), (mu + half).max()))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            name=TRACE_IDENTITY,
            mode="lines",
            line={"color": _TRUTH, "width": 1, "dash": "dot"},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=truth,
            y=mu,
            name=TRACE_PREDICTIONS,
            mode="markers",
            marker={"color": _BLUE, "size": 6, "opacity": 0.8},
            error_y={"type": "data", "array": half, "color": _BAND, "thickness": 1.5},
            hovertemplate="true %{x:.3f}<br>predicted %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=height,
        xaxis_title="true value",
        yaxis_title=f"predicted (mean ± {n_std:g}σ)",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
    )
    return fig
