"""Plotly figures for the timing experiments (Figure 2 of Maddox et al., AISTATS 2021).

:func:`timing_figure` draws the tidy table of :func:`ntkcore.experiments.timing.timing_vs_n`
or :func:`~ntkcore.experiments.timing.timing_vs_p` (GP inference — ``adapt`` to a stated CG
residual, then predictive means and variances — against the number of points n or of
parameters p, Figure 2 left and centre) as log-log curves, one trace per method, with a
dashed line of slope one for linear scaling. :func:`fisher_cost_figure` draws the table of
:func:`~ntkcore.experiments.timing.fisher_products` (the per-vector cost of Fisher-vector
products by finite differences, Eq. 5, exactly and by autograd, Figure 2 right) as grouped
dots per architecture; :func:`fisher_speedups` gives the speed-up of one method over another
per architecture (the paper reports fd ≈ 30× faster than autograd on its GPU).

The functions only arrange measured numbers: medians and ranges over repeats, ratios of
medians, and the geometric centre that anchors the reference line. Rows that were not
measured (``status`` other than ``"ok"``, or a non-finite value) are left out of the curves;
points whose solver did not reach its tolerance are drawn as open markers and say so on hover.
Every trace is named after its method (the ``method`` column), so that apps and tests can
find it; the reference line is :data:`REFERENCE_TRACE` ``[sweep]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = [
    "FISHER_UNITS",
    "REFERENCE_TRACE",
    "TIMING_UNITS",
    "fisher_cost_figure",
    "fisher_speedups",
    "timing_figure",
    "timing_growth",
]

#: ``unit -> (column, axis title)`` of :func:`timing_figure`. ``forward passes`` is the
#: library's ``forward_equivalents``: the ``adapt`` call's time over one no-grad forward pass
#: of the network on the n training inputs.
TIMING_UNITS: Mapping[str, tuple[str, str]] = {
    "seconds": ("total_s", "adapt + predict (seconds)"),
    "fit seconds": ("fit_s", "adapt only (seconds)"),
    "forward passes": ("forward_equivalents", "adapt, in forward passes over the n points"),
}
#: ``unit -> (column, axis title)`` of :func:`fisher_cost_figure`.
FISHER_UNITS: Mapping[str, tuple[str, str]] = {
    "seconds": ("seconds_per_vector", "seconds per vector"),
    "forward passes": ("forward_equivalents_per_vector", "forward passes per vector"),
}
#: Name of the slope-one reference line of :func:`timing_figure`, by sweep.
REFERENCE_TRACE: Mapping[str, str] = {"n": "∝ n (linear)", "p": "∝ p (linear)"}

_SWEEP_AXIS = {"n": "data points n", "p": "parameters p"}
_SWEEP_TITLE = {"n": "Inference time vs number of points", "p": "Inference time vs model size"}
_TIMING_COLUMNS = (
    "sweep", "method", "n", "p", "status", "total_s", "fit_s", "predict_s",
    "forward_equivalents", "iterations", "residual", "converged",
)  # fmt: skip
_FISHER_COLUMNS = (
    "arch", "method", "p", "seconds_per_vector", "forward_equivalents_per_vector", "rel_error",
)  # fmt: skip
# Fixed colours so a method looks the same in every figure (fd green, as the paper's fast one).
_COLOURS = {
    "function": "#1f77b4",
    "parameter": "#ff7f0e",
    "parameter-fd": "#2ca02c",
    "reference-style": "#7f7f7f",
    "fd": "#2ca02c",
    "exact": "#ff7f0e",
    "autograd": "#d62728",
    "fd-central": "#17becf",
    "fd-live": "#bcbd22",
    "fd-central-live": "#8c564b",
    "fd-auto": "#9467bd",
    "fd-central-auto": "#e377c2",
}
_PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")
_SYMBOLS = {"function": "circle", "parameter": "square", "parameter-fd": "diamond",
            "reference-style": "triangle-up"}  # fmt: skip
_FISHER_SYMBOLS = {"fd": "diamond", "exact": "square", "autograd": "circle"}
_REFERENCE_COLOUR = "#555555"


def _colour(method: str, index: int) -> str:
    return _COLOURS.get(method, _PALETTE[index % len(_PALETTE)])


def _check_table(table: object, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}")
    if table.empty:
        raise ValueError(f"{what} has no rows")
    return table


def _check_unit(unit: str, units: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
    if unit not in units:
        raise ValueError(f"unit must be one of {tuple(units)}, got {unit!r}")
    return units[unit]


def _methods(table: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(table["method"]))
    if methods is None:
        return present
    if isinstance(methods, str):
        raise ValueError(f"methods must be a sequence of method names, got {methods!r}")
    unknown = [m for m in methods if m not in present]
    if unknown:
        raise ValueError(f"methods {unknown} are not in the table (it has {present})")
    return [m for m in present if m in methods]


def _device_label(table: pd.DataFrame, device: str | None) -> str | None:
    if device is not None:
        return device
    if "device_name" not in table.columns or "device" not in table.columns:
        return None
    pairs = table[["device_name", "device"]].drop_duplicates().itertuples(index=False)
    labels = [f"{name} ({dev})" for name, dev in pairs if name or dev]
    return " + ".join(labels) or None


def _title(base: str, device: str | None, title: str | None) -> str:
    if title is not None:
        return title
    return base if not device else f"{base}<br><sup>measured on {device}</sup>"


def _measured(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows with status ok and a finite, positive value in ``column``."""
    ok = table["status"].eq("ok") if "status" in table.columns else True
    values = pd.to_numeric(table[column], errors="coerce")
    return table[ok & np.isfinite(values) & (values > 0)]


def _failed(converged: object) -> bool:
    """Whether a ``converged`` cell says the solver missed its tolerance (None: unknown)."""
    if converged is None or (isinstance(converged, float) and math.isnan(converged)):
        return False
    return not bool(converged)


def _log_ticks(values: Sequence[float]) -> list[float]:
    """Ticks at 1, 2, 5 × 10^k covering ``values`` (Plotly's log axes label minor ticks with
    bare digits, "2 3 … 9", which readers take for values)."""
    values = [float(v) for v in values if np.isfinite(v) and v > 0]
    if not values:
        return []
    low, high = min(values), max(values)
    # about 4 to 10 ticks: finer steps within a decade, decades only beyond three
    span = high / low
    if span <= 10:
        mantissas: tuple[float, ...] = (1, 1.5, 2, 3, 4, 5, 6, 8)
    elif span <= 1000:
        mantissas = (1, 2, 5)
    else:
        mantissas = (1,)
    ticks = [
        float(f"{m * 10.0**k:.3g}")
        for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in mantissas
    ]
    inside = [t for t in ticks if low / 1.5 <= t <= high * 1.5]
    return inside if len(inside) >= 2 else ticks


def _tick_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def _fmt(value: object, spec: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    return format(number, spec) if math.isfinite(number) else "–"


def timing_figure(
    table: pd.DataFrame,
    *,
    unit: str = "seconds",
    methods: Sequence[str] | None = None,
    log_axes: bool = True,
    reference_slope: bool = True,
    device: str | None = None,
    title: str | None = None,
    height: int = 460,
) -> go.Figure:
    """Inference time against n or p, one trace per method (Figure 2, left and centre).

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`~ntkcore.experiments.timing.timing_vs_n` or ``timing_vs_p`` (one
        ``sweep``; columns ``sweep, method, n, p, status, total_s, fit_s, predict_s,
        forward_equivalents, iterations, residual, converged``). Repeats of a point are drawn
        as their median with a bar from the fastest to the slowest.
    unit : {"seconds", "fit seconds", "forward passes"}
        What the y axis shows (:data:`TIMING_UNITS`).
    methods : sequence of str, optional
        Methods to draw (default: all in the table, in its order).
    log_axes : bool
        Logarithmic x and y axes (the paper's Figure 2 is log-log).
    reference_slope : bool
        Add a dashed line of slope one through the geometric centre of the drawn points
        (:data:`REFERENCE_TRACE`; only for time units, where linear scaling means slope one
        on log-log axes).
    device : str, optional
        The device named in the title (default: the table's ``device_name (device)``).
    title : str, optional
        Replaces the default title.
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces named after the methods, then the reference line.

    Raises
    ------
    ValueError
        If ``table`` is not a non-empty DataFrame with those columns, mixes sweeps, or
        ``unit`` or ``methods`` are unknown.
    """
    table = _check_table(table, _TIMING_COLUMNS, "timing table")
    sweeps = list(dict.fromkeys(table["sweep"]))
    if len(sweeps) != 1 or sweeps[0] not in _SWEEP_AXIS:
        raise ValueError(f"timing table must hold one sweep, 'n' or 'p'; got {sweeps}")
    sweep = sweeps[0]
    other = "p" if sweep == "n" else "n"
    column, y_title = _check_unit(unit, TIMING_UNITS)
    shown = _methods(table, methods)
    measured = _measured(table, column)

    fig = go.Figure()
    centre_x: list[float] = []
    centre_y: list[float] = []
    for index, method in enumerate(shown):
        rows = measured[measured["method"] == method]
        if rows.empty:
            continue
        points = []
        for x_value, group in rows.groupby(sweep, sort=True):
            values = group[column].astype(float)
            points.append(
                {
                    "x": float(x_value),
                    "y": float(values.median()),
                    "low": float(values.min()),
                    "high": float(values.max()),
                    "other": group[other].iloc[0],
                    "total": group["total_s"].median(),
                    "fit": group["fit_s"].median(),
                    "predict": group["predict_s"].median(),
                    "forward": group["forward_equivalents"].median(),
                    "iterations": group["iterations"].median(),
                    "residual": group["residual"].max(),
                    "converged": not group["converged"].map(_failed).any(),
                    "repeats": len(group),
                }
            )
        x = np.array([pt["x"] for pt in points])
        y = np.array([pt["y"] for pt in points])
        centre_x += list(x)
        centre_y += list(y)
        colour = _colour(method, index)
        symbol = _SYMBOLS.get(method, "circle")
        hover = [
            f"<b>{method}</b><br>{sweep} = {pt['x']:,.0f} · {other} = {int(pt['other']):,}<br>"
            f"adapt + predict {_fmt(pt['total'], '.3g')} s "
            f"(adapt {_fmt(pt['fit'], '.3g')} s, predict {_fmt(pt['predict'], '.3g')} s)<br>"
            f"adapt = {_fmt(pt['forward'], ',.0f')} forward passes<br>"
            f"CG {_fmt(pt['iterations'], '.0f')} iterations, residual "
            f"{_fmt(pt['residual'], '.1e')}"
            + ("" if pt["converged"] else " — <b>did not converge</b>")
            + (f"<br>median of {pt['repeats']} repeats" if pt["repeats"] > 1 else "")
            for pt in points
        ]
        repeats = any(pt["repeats"] > 1 for pt in points)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=method,
                mode="lines+markers",
                line={"color": colour, "width": 2},
                marker={
                    "color": colour,
                    "size": 9,
                    "symbol": [symbol if pt["converged"] else f"{symbol}-open" for pt in points],
                    "line": {"color": colour, "width": 2},
                },
                error_y=(
                    {
                        "type": "data",
                        "symmetric": False,
                        "array": [pt["high"] - pt["y"] for pt in points],
                        "arrayminus": [pt["y"] - pt["low"] for pt in points],
                        "thickness": 1.2,
                        "width": 4,
                    }
                    if repeats
                    else None
                ),
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if reference_slope and unit != "forward passes" and len(set(centre_x)) > 1:
        # slope one on log-log axes through the geometric centre of the drawn points
        log_x, log_y = np.log(centre_x), np.log(centre_y)
        x_line = np.array([min(centre_x), max(centre_x)])
        y_line = np.exp(log_y.mean()) * x_line / np.exp(log_x.mean())
        fig.add_trace(
            go.Scatter(
                x=x_line,
                y=y_line,
                name=REFERENCE_TRACE[sweep],
                mode="lines",
                line={"color": _REFERENCE_COLOUR, "width": 1.5, "dash": "dash"},
                hoverinfo="skip",
            )
        )
    axis_type = "log" if log_axes else "linear"
    xaxis: dict = {"title": _SWEEP_AXIS[sweep], "type": axis_type}
    yaxis: dict = {"title": y_title, "type": axis_type}
    if log_axes and centre_x:
        # ticks at the measured sizes, and at 1-2-5 steps for the times
        x_ticks = sorted(set(centre_x))
        xaxis.update(tickvals=x_ticks, ticktext=[f"{v:,.0f}" for v in x_ticks])
        reference = [v for t in fig.data if t.name == REFERENCE_TRACE[sweep] for v in t.y]
        y_ticks = _log_ticks([*centre_y, *reference])
        yaxis.update(tickvals=y_ticks, ticktext=[_tick_text(v) for v in y_ticks])
    fig.update_layout(
        title=_title(_SWEEP_TITLE[sweep], _device_label(table, device), title),
        height=height,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0},
        hovermode="closest",
        xaxis=xaxis,
        yaxis=yaxis,
    )
    return fig


def timing_growth(table: pd.DataFrame, *, unit: str = "seconds") -> pd.DataFrame:
    """How much each method's cost grew across the sweep (what the curves' slopes say).

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of one sweep, as for :func:`timing_figure`.
    unit : str
        One of :data:`TIMING_UNITS`.

    Returns
    -------
    pandas.DataFrame
        One row per method with at least two measured sizes: ``method``, ``x_from``, ``x_to``
        (smallest and largest n or p measured), ``y_from``, ``y_to`` (medians over repeats
        there), ``x_ratio`` and ``y_ratio`` (linear scaling: ``y_ratio ≈ x_ratio``).
    """
    table = _check_table(table, _TIMING_COLUMNS, "timing table")
    sweeps = list(dict.fromkeys(table["sweep"]))
    if len(sweeps) != 1 or sweeps[0] not in _SWEEP_AXIS:
        raise ValueError(f"timing table must hold one sweep, 'n' or 'p'; got {sweeps}")
    column, _ = _check_unit(unit, TIMING_UNITS)
    measured = _measured(table, column)
    rows = []
    for method in dict.fromkeys(table["method"]):
        medians = (
            measured[measured["method"] == method].groupby(sweeps[0])[column].median().sort_index()
        )
        if len(medians) < 2:
            continue
        x_from, x_to = float(medians.index[0]), float(medians.index[-1])
        y_from, y_to = float(medians.iloc[0]), float(medians.iloc[-1])
        rows.append({"method": method, "x_from": x_from, "x_to": x_to, "y_from": y_from,
                     "y_to": y_to, "x_ratio": x_to / x_from, "y_ratio": y_to / y_from})
    return pd.DataFrame(
        rows, columns=["method", "x_from", "x_to", "y_from", "y_to", "x_ratio", "y_ratio"]
    )


def fisher_speedups(
    table: pd.DataFrame, *, fast: str = "fd", slow: str = "autograd"
) -> pd.DataFrame:
    """Speed-up of ``fast`` over ``slow`` per architecture: median time of ``slow`` / ``fast``.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`~ntkcore.experiments.timing.fisher_products`.
    fast, slow : str
        Methods to compare (the paper's Figure 2 right: ``fd`` against ``autograd``).

    Returns
    -------
    pandas.DataFrame
        Columns ``arch, p, speedup``, one row per architecture that has both methods, in the
        table's order (empty when none has).
    """
    table = _check_table(table, _FISHER_COLUMNS, "Fisher table")
    medians = table.groupby(["arch", "method"], sort=False)["seconds_per_vector"].median()
    rows = []
    for arch in dict.fromkeys(table["arch"]):
        if (arch, fast) in medians.index and (arch, slow) in medians.index:
            p = int(table.loc[table["arch"] == arch, "p"].iloc[0])
            rows.append({"arch": arch, "p": p,
                         "speedup": float(medians[(arch, slow)] / medians[(arch, fast)])})
    return pd.DataFrame(rows, columns=["arch", "p", "speedup"])


def fisher_cost_figure(
    table: pd.DataFrame,
    *,
    unit: str = "seconds",
    methods: Sequence[str] | None = None,
    log_axis: bool = True,
    device: str | None = None,
    title: str | None = None,
    height: int = 460,
) -> go.Figure:
    """Per-vector cost of Fisher-vector products per architecture (Figure 2, right).

    Grouped dots (bars would mislead on a log axis): one trace per method, one group per
    architecture (labelled with its parameter count), the dot at the median over repeats with
    a range from the fastest to the slowest. With both ``fd`` and ``autograd`` drawn, the
    ``fd`` dots carry the speed-up over ``autograd`` (:func:`fisher_speedups`) as text.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`~ntkcore.experiments.timing.fisher_products` (columns ``arch, method,
        p, seconds_per_vector, forward_equivalents_per_vector, rel_error``).
    unit : {"seconds", "forward passes"}
        :data:`FISHER_UNITS`: seconds per vector, or that over one forward pass of the network
        on the same batch.
    methods : sequence of str, optional
        Methods to draw (default: all in the table).
    log_axis : bool
        Logarithmic y axis (costs span orders of magnitude across architectures).
    device, title, height
        As in :func:`timing_figure`.

    Raises
    ------
    ValueError
        If ``table`` is not a non-empty DataFrame with those columns, or ``unit`` or
        ``methods`` are unknown.
    """
    table = _check_table(table, _FISHER_COLUMNS, "Fisher table")
    column, y_title = _check_unit(unit, FISHER_UNITS)
    shown = _methods(table, methods)
    archs = list(dict.fromkeys(table["arch"]))
    p_of = {a: int(table.loc[table["arch"] == a, "p"].iloc[0]) for a in archs}
    labels = {a: f"{a}<br>p = {p_of[a]:,}" for a in archs}
    speedups = (
        fisher_speedups(table).set_index("arch")["speedup"]
        if {"fd", "autograd"} <= set(shown)
        else pd.Series(dtype=float)
    )
    fig = go.Figure()
    drawn: list[float] = []
    for index, method in enumerate(shown):
        rows = table[table["method"] == method]
        values = pd.to_numeric(rows[column], errors="coerce")
        rows = rows[np.isfinite(values)]
        if rows.empty:
            continue
        groups = rows.groupby("arch", sort=False)
        arch_order = [a for a in archs if a in groups.groups]
        stats = [groups.get_group(a) for a in arch_order]
        y = np.array([float(g[column].median()) for g in stats])
        low = np.array([float(g[column].min()) for g in stats])
        high = np.array([float(g[column].max()) for g in stats])
        drawn += [*low, *high]
        text = [
            f"{speedups[a]:.1f}×" if method == "fd" and a in speedups.index else ""
            for a in arch_order
        ]
        hover = [
            f"<b>{method}</b> · {a} (p = {p_of[a]:,})<br>"
            f"{_fmt(g['seconds_per_vector'].median(), '.3g')} s per vector = "
            f"{_fmt(g['forward_equivalents_per_vector'].median(), '.3g')} forward passes<br>"
            f"relative error vs exact {_fmt(g['rel_error'].max(), '.1e')}"
            + (f"<br><b>{speedups[a]:.1f}× faster than autograd</b>" if t else "")
            + (f"<br>median of {len(g)} repeats" if len(g) > 1 else "")
            for a, g, t in zip(arch_order, stats, text, strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=[labels[a] for a in arch_order],
                y=y,
                name=method,
                mode="markers+text",
                offsetgroup=method,
                marker={"color": _colour(method, index), "size": 12,
                        "symbol": _FISHER_SYMBOLS.get(method, "circle")},
                error_y=(
                    {"type": "data", "symmetric": False, "array": high - y,
                     "arrayminus": y - low, "thickness": 1.2, "width": 4}
                    if any(len(g) > 1 for g in stats) else None
                ),
                text=text,
                textposition="middle left",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(
        title=_title(
            "Cost of one Fisher-vector product", _device_label(table, device), title
        ),
        scattermode="group",
        scattergap=0.5,
        height=height,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0},
        hovermode="closest",
        xaxis={"title": "architecture (CIFAR-sized inputs)"},
        yaxis={"title": y_title, "type": "log" if log_axis else "linear"},
    )
    if log_axis and drawn:
        y_ticks = _log_ticks(drawn)
        fig.update_yaxes(tickvals=y_ticks, ticktext=[_tick_text(v) for v in y_ticks])
    return fig
