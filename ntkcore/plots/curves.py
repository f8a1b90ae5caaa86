"""Adaptation curves: error against the number of context points, per method (Figures 6, 7).

:func:`adaptation_curves_figure` draws the tidy table of
:func:`ntkcore.experiments.fast_adaptation.fast_adaptation` (one row per method × context
size × target task × seed) as one line per method — the mean over target tasks of the chosen
metric at each context size — with error bars showing the spread over tasks (the range from
the best to the worst task, or ± one sample standard deviation). Means over a handful of tasks
can hide that one method wins on most tasks and loses badly on a few, so
:func:`win_rates` and :func:`win_rate_figure` count, for each context size, on how many tasks
a reference method (the finite NTK) beats each other method.

The functions only aggregate what the table holds (means, standard deviations, extremes and
counts over tasks); :func:`curve_summary` and :func:`win_rates` return the numbers the
figures draw. Traces are named after the methods (the ``method`` column), the 95 % line of
the coverage plot :data:`TRACE_NOMINAL`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ntkcore.plots.timing import _log_ticks  # 1-2-5 ticks: Plotly labels minor ticks "2 … 9"

__all__ = [
    "CURVE_METRICS",
    "SPREADS",
    "TRACE_NOMINAL",
    "Y_SCALES",
    "adaptation_curves_figure",
    "curve_summary",
    "win_rate_figure",
    "win_rates",
]

#: ``metric -> (column, axis title)``: what the curves and the win rates can show.
CURVE_METRICS: Mapping[str, tuple[str, str]] = {
    "MSE": ("mse", "test MSE"),
    "NLL": ("nll", "test NLL (mean per test point)"),
    "95% coverage": ("coverage95", "test targets inside mean ± 1.96 sd"),
    "seconds": ("seconds", "fit + predict (seconds)"),
}
#: Error bars: the range over tasks, or ± one sample standard deviation (ddof = 1).
SPREADS = ("min–max", "± 1 std")
#: The dashed line at the nominal coverage of the coverage plot.
TRACE_NOMINAL = "nominal 0.95"
#: y axis scales of :func:`adaptation_curves_figure`.
Y_SCALES = ("auto", "linear", "log", "symlog")
#: Coverage is better the closer it is to this.
NOMINAL_COVERAGE = 0.95

_REQUIRED = ("method", "n_context", "task", "mse", "nll", "coverage95", "seconds")
# Fixed colours so a method looks the same in every figure: the NTK blue and the RBF GP
# yellow and ABLR grey as in the paper's Figure 6.
_STYLE: dict[str, tuple[str, str, str]] = {  # method -> (colour, dash, marker)
    "ntk": ("#1f5fbf", "solid", "circle"),
    "ntk-linearized": ("#6fa8ff", "dash", "circle-open"),
    "no-retrain": ("#222222", "dot", "x"),
    "last-layer": ("#2ca02c", "solid", "square"),
    "last-layer-6x": ("#1b6e1b", "dash", "square-open"),
    "fine-tune": ("#d62728", "solid", "diamond"),
    "rbf-gp": ("#e0a100", "solid", "triangle-up"),
    "ablr": ("#7f7f7f", "solid", "star"),
    "ablr-scratch": ("#7f7f7f", "dash", "star-open"),
}
_PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _style(method: str, index: int) -> tuple[str, str, str]:
    return _STYLE.get(method, (_PALETTE[index % len(_PALETTE)], "solid", "circle"))


def _check_table(table: object) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"the curves table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"the curves table lacks the columns {missing}")
    if table.empty:
        raise ValueError("the curves table has no rows")
    return table


def _check_metric(metric: str) -> tuple[str, str]:
    if metric not in CURVE_METRICS:
        raise ValueError(f"metric must be one of {tuple(CURVE_METRICS)}, got {metric!r}")
    return CURVE_METRICS[metric]


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


def _task_keys(table: pd.DataFrame) -> list[str]:
    return ["task", "seed"] if "seed" in table.columns else ["task"]


def curve_summary(
    table: pd.DataFrame, metric: str = "MSE", methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per method and context size: mean, sample std, min and max of ``metric`` over tasks.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of ``fast_adaptation`` (columns ``method, n_context, task, mse, nll,
        coverage95, seconds``; ``seed`` when present counts as part of the task).
    metric : {"MSE", "NLL", "95% coverage", "seconds"}
        :data:`CURVE_METRICS`.
    methods : sequence of str, optional
        Methods to keep (default all, in the table's order).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, n_context, tasks, mean, std, min, max`` (``std`` with ddof = 1, NaN
        for one task), methods in the table's order and context sizes ascending. Rows whose
        value is not finite are left out and counted in ``tasks`` only when finite.

    Raises
    ------
    ValueError
        For a table that is not a non-empty DataFrame with those columns, an unknown metric
        or method, or no finite value of the metric.
    """
    table = _check_table(table)
    column, _ = _check_metric(metric)
    shown = _methods(table, methods)
    values = pd.to_numeric(table[column], errors="coerce")
    rows = table.assign(_value=values)[np.isfinite(values) & table["method"].isin(shown)]
    if rows.empty:
        raise ValueError(f"the table has no finite {metric} values for methods {shown}")
    grouped = rows.groupby(["method", "n_context"], sort=False)["_value"]
    summary = grouped.agg(tasks="count", mean="mean", std="std", min="min", max="max")
    summary = summary.reset_index()
    order = {m: i for i, m in enumerate(shown)}
    summary = summary.sort_values(
        ["method", "n_context"], key=lambda c: c.map(order) if c.name == "method" else c
    )
    summary["n_context"] = summary["n_context"].astype(int)
    summary["tasks"] = summary["tasks"].astype(int)
    return summary.reset_index(drop=True)[["method", "n_context", "tasks", "mean", "std", "min",
                                           "max"]]  # fmt: skip


def _bar_ends(point: pd.Series, spread: str) -> tuple[float, float]:
    if spread == "min–max":
        return float(point["min"]), float(point["max"])
    std = float(point["std"]) if math.isfinite(float(point["std"])) else 0.0
    return float(point["mean"]) - std, float(point["mean"]) + std


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "–"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _tick_label(value: float) -> str:
    """``0.05``, ``2``, ``300`` as written; outside [10⁻³, 10⁴) ``2×10⁻⁵`` / ``10⁻⁵``."""
    if 1e-3 <= value < 1e4:
        return f"{value:g}"
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent, 2)
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def _symlog(values: np.ndarray) -> np.ndarray:
    """sign(v) · log₁₀(1 + |v|): logarithmic beyond ±1, nearly linear around 0."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log10(1.0 + np.abs(values))


def _symlog_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (transformed) and labels (values) 0, ±0.5, ±1, ±3, ±10, … within range."""
    values = [0.0, 0.5, -0.5]
    for k in range(0, 13):
        for m in (1, 3):
            values += [m * 10.0**k, -m * 10.0**k]
    inside = sorted(v for v in values if low <= v <= high)
    if len(inside) > 10:  # keep decades (and ±0.5, which tell the sign near 0) only
        inside = [v for v in inside if abs(v) <= 1 or math.log10(abs(v)).is_integer()]
    return [float(_symlog(np.array([v]))[0]) for v in inside], [
        f"{v:g}" if abs(v) < 1e4 else ("−" if v < 0 else "") + _tick_label(abs(v))
        for v in inside
    ]


def _dodge(sizes: Sequence[int], count: int, log_x: bool):
    """``f(x, i)``: method ``i``'s x positions, shifted so that error bars of ``count`` methods
    at the same context size sit side by side (±2 % of the axis span in all; the hover and the
    ticks keep the true n)."""
    if count < 2 or len(sizes) < 2:
        return lambda x, i: np.asarray(x, dtype=float)
    if log_x:
        span = math.log10(max(sizes) / min(sizes))
        return lambda x, i: np.asarray(x, float) * 10 ** (0.04 * span * (i / (count - 1) - 0.5))
    span = max(sizes) - min(sizes)
    return lambda x, i: np.asarray(x, float) + 0.04 * span * (i / (count - 1) - 0.5)


def adaptation_curves_figure(
    table: pd.DataFrame,
    *,
    metric: str = "MSE",
    spread: str = "min–max",
    methods: Sequence[str] | None = None,
    log_x: bool = False,
    y_scale: str = "auto",
    title: str | None = None,
    height: int = 480,
) -> go.Figure:
    """Mean ``metric`` over target tasks against the number of context points (Figure 7).

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of ``fast_adaptation`` (see :func:`curve_summary`).
    metric : {"MSE", "NLL", "95% coverage", "seconds"}
        What the y axis shows (:data:`CURVE_METRICS`).
    spread : {"min–max", "± 1 std"}
        The error bar at each point: from the best to the worst task, or the mean ± one
        sample standard deviation over tasks (:data:`SPREADS`). No bars for a single task.
        The methods' points at one context size are drawn side by side (shifted by up to
        ±2 % of the axis span) so that their bars do not hide each other.
    methods : sequence of str, optional
        Methods to draw (default all, in the table's order).
    log_x : bool
        Logarithmic context-points axis.
    y_scale : {"auto", "linear", "log", "symlog"}
        The y axis (:data:`Y_SCALES`). ``log`` needs positive values; ``symlog`` draws
        sign(v) · log₁₀(1 + |v|), logarithmic beyond ±1 and nearly linear around 0, with
        ticks labelled in the metric's own values — for NLLs, which are negative for
        good probabilistic fits and reach 10⁶ for overconfident point estimates with few
        points. ``auto``: log for MSE, NLL and seconds when every drawn value is positive;
        for an NLL with values ≤ 0, symlog when some |value| exceeds 30 and linear
        otherwise; linear for coverage. On a log axis a ``± 1 std`` bar whose lower end is
        not positive is drawn down to the best task's value instead (the hover says so).
    title : str, optional
        Replaces the default title (which names the table's ``dataset`` when it has one).
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        One line per method, named after it, with its error bars (``error_y``) when there
        are several tasks and the true context sizes in ``customdata``; then
        :data:`TRACE_NOMINAL` for coverage. On a symlog axis the traces' y values are
        transformed (the hover gives the metric's values) and ``layout.meta`` is
        ``{"y_scale": "symlog"}``; otherwise ``layout.meta`` names the scale used too.

    Raises
    ------
    ValueError
        For a malformed table, an unknown metric, spread, method or y scale, or
        ``y_scale="log"`` with values that are not positive.
    """
    column, y_title = _check_metric(metric)
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS}, got {spread!r}")
    summary = curve_summary(table, metric, methods)
    shown = list(dict.fromkeys(summary["method"]))
    lows, highs = zip(*(_bar_ends(p, spread) for _, p in summary.iterrows()), strict=True)
    drawn = np.concatenate([summary["mean"].to_numpy(float), summary["min"].to_numpy(float)])
    if y_scale not in Y_SCALES:
        raise ValueError(f"y_scale must be one of {Y_SCALES}, got {y_scale!r}")
    if y_scale == "auto":
        if metric == "95% coverage":
            y_scale = "linear"
        elif (drawn > 0).all():
            y_scale = "log"
        else:
            ends = np.abs(np.concatenate([drawn, np.asarray(highs, float)]))
            y_scale = "symlog" if metric == "NLL" and ends.max() > 30 else "linear"
    elif y_scale == "log" and not (drawn > 0).all():
        raise ValueError(f"{metric} has values <= 0: it cannot be drawn on a log axis")
    log_y, symlog = y_scale == "log", y_scale == "symlog"
    several = int(summary["tasks"].max()) > 1

    fig = go.Figure()
    offsets = _dodge(sorted(set(summary["n_context"])), len(shown), log_x)
    for index, method in enumerate(shown):
        points = summary[summary["method"] == method]
        colour, dash, symbol = _style(method, index)
        x = points["n_context"].to_numpy()
        mean = points["mean"].to_numpy(float)
        low = np.array([lows[i] for i in points.index], dtype=float)
        high = np.array([highs[i] for i in points.index], dtype=float)
        clipped = np.zeros(len(points), dtype=bool)
        if log_y:
            clipped = low <= 0
            low = np.where(clipped, points["min"].to_numpy(float), low)
        hover = [
            f"<b>{method}</b><br>{n} context points<br>mean {metric} {_fmt(m)} over {t} "
            f"task{'s' if t != 1 else ''}<br>"
            + (
                f"best {_fmt(lo)} · worst {_fmt(hi)}"
                if metric in ("MSE", "NLL", "seconds")
                else f"min {_fmt(lo)} · max {_fmt(hi)}"
            )
            + (f"<br>sample std {_fmt(sd)}" if t > 1 else "")
            + ("<br>(bar's lower end: the best task; mean − std ≤ 0)" if c else "")
            for n, m, t, lo, hi, sd, c in zip(
                x, mean, points["tasks"], points["min"], points["max"], points["std"], clipped,
                strict=True,
            )
        ]  # fmt: skip
        shown_mean, shown_low, shown_high = (
            (_symlog(mean), _symlog(low), _symlog(high)) if symlog else (mean, low, high)
        )
        fig.add_trace(
            go.Scatter(
                x=offsets(x, index),
                y=shown_mean,
                name=method,
                mode="lines+markers",
                line={"color": colour, "width": 3 if method == "ntk" else 2, "dash": dash},
                marker={"color": colour, "size": 9 if method == "ntk" else 8, "symbol": symbol},
                error_y=(
                    {
                        "type": "data",
                        "symmetric": False,
                        "array": shown_high - shown_mean,
                        "arrayminus": shown_mean - shown_low,
                        "color": colour,
                        "thickness": 1.5,
                        "width": 5,
                    }
                    if several
                    else None
                ),
                customdata=x,
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if metric == "95% coverage":
        fig.add_trace(
            go.Scatter(
                x=[summary["n_context"].min(), summary["n_context"].max()],
                y=[NOMINAL_COVERAGE, NOMINAL_COVERAGE],
                name=TRACE_NOMINAL,
                mode="lines",
                line={"color": "#555555", "width": 1.5, "dash": "dash"},
                hoverinfo="skip",
            )
        )
    n_tasks = int(summary["tasks"].max())
    bars = (
        f"bars: {'best to worst task' if spread == 'min–max' else '± 1 sample std'}"
        if several
        else "one task: no spread"
    )
    datasets = list(dict.fromkeys(table["dataset"])) if "dataset" in table.columns else []
    where = f"{datasets[0]}: " if len(datasets) == 1 else ""
    fig.update_layout(
        title={
            "text": title
            or f"{where}{metric} vs number of context points<br><sup>mean over {n_tasks} "
            f"target task{'s' if n_tasks != 1 else ''}; {bars}</sup>",
        },
        height=height,
        template="plotly_white",
        hovermode="closest",
        meta={"y_scale": y_scale},
        legend={"title": {"text": "method"}},
        margin={"l": 70, "r": 20, "t": 80, "b": 60},
    )
    sizes = sorted(set(summary["n_context"]))
    fig.update_xaxes(
        title="context points n",
        type="log" if log_x else "linear",
        tickvals=sizes,
        ticktext=[str(s) for s in sizes],
    )
    scale_note = {"log": " (log scale)", "symlog": " (symmetric log scale)"}.get(y_scale, "")
    y_axis: dict = {"title": y_title + scale_note, "type": "log" if log_y else "linear"}
    ends = np.concatenate([np.asarray(lows, float), np.asarray(highs, float), drawn])
    ends = ends[np.isfinite(ends)]
    if log_y:
        ticks = _log_ticks(ends[ends > 0].tolist())
        y_axis |= {"tickvals": ticks, "ticktext": [_tick_label(t) for t in ticks]}
    elif symlog:
        tickvals, ticktext = _symlog_ticks(float(ends.min()), float(ends.max()))
        y_axis |= {"tickvals": tickvals, "ticktext": ticktext, "zeroline": True}
    elif metric == "95% coverage":
        y_axis["range"] = [-0.02, 1.04]
    fig.update_yaxes(**y_axis)
    return fig


def _better(metric: str, reference: pd.Series, other: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(reference strictly better, tie) per row; coverage: closer to 0.95 is better."""
    if metric == "95% coverage":
        reference = (reference - NOMINAL_COVERAGE).abs()
        other = (other - NOMINAL_COVERAGE).abs()
    return reference < other, reference == other


def win_rates(
    table: pd.DataFrame, *, reference: str = "ntk", metric: str = "MSE"
) -> pd.DataFrame:
    """On how many target tasks ``reference`` beats each other method, per context size.

    Rows of the two methods are paired by context size and task (and seed). "Beats" means a
    lower MSE, NLL or time, or a 95 % coverage closer to 0.95; a tie counts as half a win.

    Returns
    -------
    pandas.DataFrame
        Columns ``baseline, n_context, wins, ties, tasks, win_rate`` with
        ``win_rate = (wins + ties / 2) / tasks``; baselines in the table's order.

    Raises
    ------
    ValueError
        For a malformed table, an unknown metric, a ``reference`` not in the table, or a table
        without another method.
    """
    table = _check_table(table)
    column, _ = _check_metric(metric)
    present = list(dict.fromkeys(table["method"]))
    if reference not in present:
        raise ValueError(f"reference {reference!r} is not in the table (it has {present})")
    others = [m for m in present if m != reference]
    if not others:
        raise ValueError(f"the table has no method besides {reference!r} to compare with")
    keys = ["n_context", *_task_keys(table)]
    values = table.assign(_value=pd.to_numeric(table[column], errors="coerce"))
    ref = values[values["method"] == reference][[*keys, "_value"]]
    rows = []
    for other in others:
        paired = ref.merge(
            values[values["method"] == other][[*keys, "_value"]], on=keys,
            suffixes=("_ref", "_other"),
        )  # fmt: skip
        paired = paired[np.isfinite(paired["_value_ref"]) & np.isfinite(paired["_value_other"])]
        wins, ties = _better(metric, paired["_value_ref"], paired["_value_other"])
        for n, group in paired.assign(_win=wins, _tie=ties).groupby("n_context", sort=True):
            count = len(group)
            rows.append({
                "baseline": other,
                "n_context": int(n),
                "wins": int(group["_win"].sum()),
                "ties": int(group["_tie"].sum()),
                "tasks": count,
                "win_rate": (group["_win"].sum() + 0.5 * group["_tie"].sum()) / count,
            })
    return pd.DataFrame(rows, columns=["baseline", "n_context", "wins", "ties", "tasks",
                                       "win_rate"])  # fmt: skip


def win_rate_figure(
    rates: pd.DataFrame, *, reference: str = "ntk", title: str | None = None,
    height: int | None = None,
) -> go.Figure:  # fmt: skip
    """Heatmap of :func:`win_rates`: baselines × context sizes, each cell "wins/tasks".

    Blue: the reference wins on most tasks; red: the baseline does; white: even. One trace,
    named ``"<reference> win rate"``.

    Raises
    ------
    ValueError
        For a table without the columns of :func:`win_rates` or without rows.
    """
    if not isinstance(rates, pd.DataFrame):
        raise ValueError(f"rates must be a pandas DataFrame, got {type(rates).__name__}")
    missing = [c for c in ("baseline", "n_context", "wins", "ties", "tasks", "win_rate")
               if c not in rates.columns]  # fmt: skip
    if missing:
        raise ValueError(f"rates lacks the columns {missing} (use win_rates(...))")
    if rates.empty:
        raise ValueError("rates has no rows")
    baselines = list(dict.fromkeys(rates["baseline"]))
    sizes = sorted(set(int(n) for n in rates["n_context"]))
    grid = rates.pivot(index="baseline", columns="n_context", values="win_rate")
    grid = grid.reindex(index=baselines, columns=sizes)
    labels = rates.assign(
        label=[
            f"{w + t / 2:g}/{n}" for w, t, n in zip(rates["wins"], rates["ties"], rates["tasks"],
                                                     strict=True)
        ]
    ).pivot(index="baseline", columns="n_context", values="label").reindex(
        index=baselines, columns=sizes
    )  # fmt: skip
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(float),
            x=[str(n) for n in sizes],
            y=baselines,
            text=labels.fillna("").to_numpy(),
            texttemplate="%{text}",
            textfont={"size": 14},
            zmin=0.0,
            zmax=1.0,
            colorscale="RdBu",
            colorbar={"title": {"text": "win rate"}, "tickformat": ".0%"},
            name=f"{reference} win rate",
            hovertemplate=f"{reference} beats %{{y}} on %{{text}} tasks with %{{x}} context "
            "points<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title or f"Tasks on which {reference} beats each method"},
        height=height or max(240, 140 + 44 * len(baselines)),
        template="plotly_white",
        margin={"l": 110, "r": 20, "t": 60, "b": 50},
    )
    fig.update_xaxes(title="context points n", type="category", tickfont={"size": 13})
    fig.update_yaxes(autorange="reversed", tickfont={"size": 13})
    return fig
