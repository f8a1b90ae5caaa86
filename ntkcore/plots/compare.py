"""Plotly figures comparing the finite-NTK posteriors of several networks on one 1-D task.

Figure 3 of Maddox et al. (AISTATS 2021) sets the linearized-network posterior
p(f* | y) (Eq. 3, mean and ±2σ band) of several architectures side by side — ReLU MLPs of
widths 5 to 5,000, untrained and trained; tanh MLPs with the same parameter count but
differently shaped layers — on the same data, with the network's own prediction dashed.
Two views:

* :func:`comparison_grid_figure`: one :func:`~ntkcore.plots.posterior_band_figure` panel per
  network, all on the same x and y ranges (:func:`shared_y_range`), titled with the network
  and its parameter count p;
* :func:`comparison_overlay_figure`: every network's posterior mean and band on one plot,
  one colour per network.

Like the rest of :mod:`ntkcore.plots`, these arrange numbers already computed (each
network's predictive mean and variance at the same test inputs); they do no numerics beyond
square roots of variances, sorting and axis limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ntkcore.plots.regression import (
    _BLUE,
    _PURPLE,
    _TRUTH,
    TRACE_CONTEXT,
    TRACE_NETWORK,
    TRACE_TRUTH,
    Pair,
    _check_finite,
    _column,
    _inputs,
    _pair,
    _sorted_pair,
    band_trace_name,
    posterior_band_figure,
)

__all__ = [
    "COMPARISON_COLOURS",
    "ComparisonPanel",
    "comparison_grid_figure",
    "comparison_overlay_figure",
    "overlay_trace_names",
    "panel_title",
    "shared_y_range",
]

#: One colour per network in the overlay (blue, red, green, brown, then again); the context
#: points keep the purple of the single-network figure and the true function its dark grey.
COMPARISON_COLOURS = (_BLUE, "#d62728", "#2ca02c", "#8c564b", "#17becf", "#bcbd22")

ArrayLike = Any


@dataclass(frozen=True)
class ComparisonPanel:
    """One network's predictive on the shared test inputs.

    Attributes
    ----------
    label : str
        What the network is, e.g. ``"ReLU 5000, untrained"`` (unique within a comparison:
        the overlay names its traces after it).
    x : array-like, shape (m,) or (m, 1)
        Test inputs.
    mean, variance : array-like, shape (m,) or (m, 1)
        Latent predictive mean and variance of f* at ``x`` (``Posterior.predict``, Eq. 3).
    network : array-like, shape (m,) or (m, 1), optional
        The network's own prediction f(x; θ) at ``x``.
    num_params : int, optional
        Parameter count p (the width of the Jacobian), shown in the title.
    note : str, optional
        A short text for the title's second line, after p (e.g. ``"test MSE 0.12"``).
    """

    label: str
    x: ArrayLike
    mean: ArrayLike
    variance: ArrayLike
    network: ArrayLike | None = None
    num_params: int | None = None
    note: str | None = None


def panel_title(label: str, num_params: int | None = None, note: str | None = None) -> str:
    """``"ReLU 5000, untrained<br>p = 15,001 · test MSE 0.1"``: the network on the first line,
    its parameter count and ``note`` on the second."""
    details = [f"p = {num_params:,}"] if num_params is not None else []
    details += [note] if note else []
    return label if not details else f"{label}<br>{' · '.join(details)}"


@dataclass(frozen=True)
class _Curves:
    label: str
    x: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    network: np.ndarray | None
    num_params: int | None
    note: str | None


def _curves(panels: Sequence[ComparisonPanel]) -> list[_Curves]:
    """Validate the panels and return them as sorted float64 arrays."""
    if isinstance(panels, ComparisonPanel) or not isinstance(panels, Sequence) or not panels:
        raise ValueError("panels must be a non-empty sequence of ComparisonPanel")
    out: list[_Curves] = []
    labels: set[str] = set()
    for i, panel in enumerate(panels):
        if not isinstance(panel, ComparisonPanel):
            raise ValueError(f"panels[{i}] must be a ComparisonPanel, got {type(panel).__name__}")
        if not isinstance(panel.label, str) or not panel.label:
            raise ValueError(f"panels[{i}].label must be a non-empty string")
        if panel.label in labels:
            raise ValueError(f"panel labels must be unique; {panel.label!r} appears twice")
        labels.add(panel.label)
        x = _inputs(panel.x, f"{panel.label}: x")
        mean = _column(panel.mean, f"{panel.label}: mean", 0)
        variance = _column(panel.variance, f"{panel.label}: variance", 0)
        arrays = {"x": x, "mean": mean, "variance": variance}
        if panel.network is not None:
            arrays["network"] = _column(panel.network, f"{panel.label}: network", 0)
        for name, array in arrays.items():
            if array.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{panel.label}: {name} has {array.shape[0]} points, x has {x.shape[0]}"
                )
            _check_finite(array, f"{panel.label}: {name}")
        if x.shape[0] == 0:
            raise ValueError(f"{panel.label}: x is empty: nothing to plot")
        if np.any(variance < 0):
            raise ValueError(f"{panel.label}: variance must be non-negative")
        num_params = panel.num_params
        if num_params is not None and (
            isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1
        ):
            raise ValueError(f"{panel.label}: num_params must be a positive int or None")
        if panel.note is not None and not isinstance(panel.note, str):
            raise ValueError(f"{panel.label}: note must be a string or None")
        order = np.argsort(x, kind="stable")
        network = arrays.get("network")
        out.append(
            _Curves(
                panel.label,
                x[order],
                mean[order],
                variance[order],
                None if network is None else network[order],
                num_params,
                panel.note,
            )
        )
    return out


def context_marker_size(count: int) -> int:
    """Marker size for ``count`` context points: large for a few, small for hundreds."""
    return 9 if count <= 30 else 6 if count <= 100 else 4


def _check_n_std(n_std: float) -> None:
    if not (isinstance(n_std, int | float) and math.isfinite(n_std) and n_std > 0):
        raise ValueError(f"n_std must be a positive finite number, got {n_std!r}")


def _y_range(
    curves: Sequence[_Curves],
    context: Pair | None,
    truth: Pair | None,
    show_network: bool,
) -> tuple[float, float]:
    shown = [c.mean for c in curves]
    if show_network:
        shown += [c.network for c in curves if c.network is not None]
    for pair, name in ((context, "context"), (truth, "truth")):
        if pair is not None:
            shown.append(_pair(pair, name, 0)[1])
    low = min(float(v.min()) for v in shown if v.size)
    high = max(float(v.max()) for v in shown if v.size)
    margin = 0.1 * (high - low) or 0.1 * max(abs(low), 1.0)
    return low - margin, high + margin


def shared_y_range(
    panels: Sequence[ComparisonPanel],
    *,
    context: Pair | None = None,
    truth: Pair | None = None,
    show_network: bool = True,
) -> tuple[float, float]:
    """One vertical range for every panel: all posterior means, network predictions (when
    drawn), context points and the true function, with a 10% margin.

    Bands are left out on purpose, as in ``posterior_band_figure(y_range="data")``: far from
    the data an untrained wide network's band can be orders of magnitude wider than the
    function, and would flatten every curve.
    """
    return _y_range(_curves(panels), context, truth, show_network)


def _resolve_range(
    y_range: str | tuple[float, float],
    curves: Sequence[_Curves],
    context: Pair | None,
    truth: Pair | None,
    show_network: bool,
) -> tuple[float, float]:
    if isinstance(y_range, str):
        if y_range != "data":
            raise ValueError(f'y_range must be "data" or a (low, high) pair, got {y_range!r}')
        return _y_range(curves, context, truth, show_network)
    if not (
        isinstance(y_range, Sequence)
        and len(y_range) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in y_range)
        and y_range[0] < y_range[1]
    ):
        raise ValueError(f"y_range must be a (low, high) pair with low < high, got {y_range!r}")
    return float(y_range[0]), float(y_range[1])


def comparison_grid_figure(
    panels: Sequence[ComparisonPanel],
    *,
    context: Pair | None = None,
    truth: Pair | None = None,
    show_network: bool = True,
    n_std: float = 2.0,
    columns: int | None = None,
    height: int | None = None,
    y_range: str | tuple[float, float] = "data",
) -> go.Figure:
    """One posterior-band panel per network on shared axes, in one figure (Figure 3's rows).

    Each panel holds the traces of :func:`~ntkcore.plots.posterior_band_figure` for one
    network; all panels share (and zoom together along) the same x and y ranges.

    Parameters
    ----------
    panels : sequence of ComparisonPanel
        The networks' predictives (the x range spans all their test inputs).
    context : (x, y) pair, optional
        The points every posterior was conditioned on (drawn in every panel).
    truth : (x, y) pair, optional
        The true function, for synthetic tasks.
    show_network : bool
        Draw each network's own prediction (dashed).
    n_std : float
        Half-width of the bands in posterior standard deviations.
    columns : int, optional
        Panels per row (default: all in one row).
    height : int, optional
        Figure height in pixels (default 440 per row of panels).
    y_range : "data" or (float, float)
        ``"data"``: :func:`shared_y_range`; a pair: explicit limits.

    Returns
    -------
    plotly.graph_objects.Figure
        Subplots titled :func:`panel_title`, in the order given. The first panel's traces
        carry the plain names of :func:`posterior_band_figure` (``"posterior mean"``,
        ``"±2σ"``, ``"network"``, ``"context"``, ``"true function"``) and make the legend;
        the other panels' traces are named ``"<name> · <label>"`` and share the legend group
        of their plain name, so one legend click hides a curve in every panel.

    Raises
    ------
    ValueError
        For an empty or malformed panel list, duplicate labels, shapes that disagree,
        non-finite values, negative variances or a bad ``n_std``, ``columns`` or ``y_range``.
    """
    _check_n_std(n_std)
    curves = _curves(panels)
    if columns is None:
        columns = len(curves)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    columns = min(columns, len(curves))
    rows = math.ceil(len(curves) / columns)
    y_lim = _resolve_range(y_range, curves, context, truth, show_network)
    x_lim = (min(float(c.x[0]) for c in curves), max(float(c.x[-1]) for c in curves))
    fig = make_subplots(
        rows=rows,
        cols=columns,
        shared_xaxes="all",
        shared_yaxes="all",
        subplot_titles=[panel_title(c.label, c.num_params, c.note) for c in curves],
        horizontal_spacing=0.05 if columns > 1 else 0.0,
        vertical_spacing=0.12 if rows > 1 else 0.0,
    )
    for i, c in enumerate(curves):
        single = posterior_band_figure(
            c.x,
            c.mean,
            c.variance,
            context=context,
            truth=truth,
            network=(c.x, c.network) if show_network and c.network is not None else None,
            n_std=n_std,
            y_range=y_lim,
        )
        for trace in single.data:
            name = trace.name
            trace.legendgroup = name
            if name == TRACE_CONTEXT:
                trace.marker.size = context_marker_size(len(trace.x))
            if i > 0:
                trace.name = f"{name} · {c.label}"
                trace.showlegend = False
            fig.add_trace(trace, row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(range=list(x_lim), title_text="x", row=rows)
    fig.update_yaxes(range=list(y_lim))
    fig.update_yaxes(title_text="y", col=1)
    fig.update_annotations(font={"size": 13})
    fig.update_layout(
        height=440 * rows if height is None else height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.16 / rows, "xanchor": "left",
                "x": 0},  # fmt: skip
        hovermode="closest",
    )
    return fig


def overlay_trace_names(label: str, n_std: float = 2.0) -> dict[str, str]:
    """Names of one network's traces in :func:`comparison_overlay_figure`."""
    return {
        "mean": label,
        "band": f"{label} {band_trace_name(n_std)}",
        "network": f"{label} ({TRACE_NETWORK})",
    }


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def comparison_overlay_figure(
    panels: Sequence[ComparisonPanel],
    *,
    context: Pair | None = None,
    truth: Pair | None = None,
    show_network: bool = True,
    n_std: float = 2.0,
    height: int | None = 500,
    y_range: str | tuple[float, float] = "data",
    title: str | None = None,
) -> go.Figure:
    """Every network's posterior mean and band on one plot, one colour per network.

    Parameters are those of :func:`comparison_grid_figure`.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces, bottom to top: every band (named ``"<label> ±2σ"``), the true function,
        every network prediction (``"<label> (network)"``, dashed), every posterior mean
        (named ``label``), the context points. A network's traces share a legend group, so
        one click on the legend hides or shows them together.
    """
    _check_n_std(n_std)
    curves = _curves(panels)
    y_lim = _resolve_range(y_range, curves, context, truth, show_network)
    colours = [COMPARISON_COLOURS[i % len(COMPARISON_COLOURS)] for i in range(len(curves))]
    fig = go.Figure()
    for c, colour in zip(curves, colours, strict=True):
        std = np.sqrt(c.variance)
        upper, lower = c.mean + n_std * std, c.mean - n_std * std
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([c.x, c.x[::-1]]),
                y=np.concatenate([upper, lower[::-1]]),
                name=overlay_trace_names(c.label, n_std)["band"],
                legendgroup=c.label,
                showlegend=False,
                mode="lines",
                fill="toself",
                fillcolor=_rgba(colour, 0.13),
                line={"width": 1, "color": _rgba(colour, 0.45)},
                hoverinfo="skip",
            )
        )
    if truth is not None:
        tx, ty = _sorted_pair(*_pair(truth, "truth", 0))
        fig.add_trace(
            go.Scatter(
                x=tx,
                y=ty,
                name=TRACE_TRUTH,
                mode="lines",
                line={"color": _TRUTH, "width": 1.5, "dash": "dot"},
            )
        )
    if show_network:
        for c, colour in zip(curves, colours, strict=True):
            if c.network is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=c.x,
                    y=c.network,
                    name=overlay_trace_names(c.label, n_std)["network"],
                    legendgroup=c.label,
                    showlegend=False,
                    mode="lines",
                    line={"color": colour, "width": 1.5, "dash": "dash"},
                    hovertemplate="x = %{x:.3f}<br>f(x; θ) = %{y:.3f}<extra>"
                    + c.label
                    + " network</extra>",
                )
            )
    for c, colour in zip(curves, colours, strict=True):
        fig.add_trace(
            go.Scatter(
                x=c.x,
                y=c.mean,
                name=overlay_trace_names(c.label, n_std)["mean"],
                legendgroup=c.label,
                mode="lines",
                line={"color": colour, "width": 2.5},
                customdata=np.sqrt(c.variance),
                hovertemplate="x = %{x:.3f}<br>mean = %{y:.3f}<br>σ = %{customdata:.3f}"
                "<extra>" + c.label + "</extra>",
            )
        )
    if context is not None:
        cx, cy = _pair(context, "context", 0)
        fig.add_trace(
            go.Scatter(
                x=cx,
                y=cy,
                name=TRACE_CONTEXT,
                mode="markers",
                marker={
                    "color": _PURPLE,
                    "size": context_marker_size(cx.shape[0]),
                    "line": {"color": "white", "width": 1},
                },
            )
        )
    x_lim = (min(float(c.x[0]) for c in curves), max(float(c.x[-1]) for c in curves))
    fig.update_layout(
        title=title,
        height=height,
        xaxis_title="x",
        yaxis_title="y",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
        hovermode="closest",
    )
    fig.update_xaxes(range=list(x_lim))
    fig.update_yaxes(range=list(y_lim))
    return fig
