"""Plotly figures for classification with the linearized network (Figure 4, Table 1).

The tables are those of :func:`ntkcore.experiments.classification.classification` (``main``:
one row per architecture × model × method with accuracy, NLL and ECE; ``reliability``: 15
equal-width confidence bins per method) and of
:func:`~ntkcore.experiments.classification.unsupervised_transfer` (one row per feature set ×
method).

* :func:`classification_metrics_figure` — accuracy, NLL and ECE per method (Figure 4: the
  network against the Bayesian GLM on its Jacobian, Eq. 4, with the finite-NTK and
  linearized-NN mean functions); a dot chart for one architecture, lines against the
  architecture (Figure 4's depth sweep) for several.
* :func:`reliability_figure` — the reliability diagram (Guo et al., 2017): mean accuracy
  against mean confidence per bin, one trace per method, the diagonal of perfect calibration,
  and the number of test points per bin underneath.
* :func:`calibration_summary` — mean confidence, accuracy and their gap per method (positive:
  over-confident), from the bins.
* :func:`transfer_figure` — accuracy, NLL and ECE per feature set (Table 1: the GLM on the
  Jacobian of the top k layers or of all layers of an unsupervised network, against a linear
  classifier on its activations).

The functions only arrange numbers: they select rows, and sum counts and count-weighted bin
means. Every trace is named after its method (:func:`classification_label`,
:func:`transfer_label`); traces of the second and third panels add the metric in brackets
(``"finite NTK · MAP [NLL]"``) and those of the count panel ``[count]``, so that every name in
a figure is unique.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "CLASSIFICATION_METRICS",
    "TRACE_DIAGONAL",
    "calibration_summary",
    "classification_label",
    "classification_labels",
    "classification_metrics_figure",
    "reliability_figure",
    "transfer_figure",
    "transfer_label",
]

#: ``column -> axis title`` of the metric panels (arrows: which way is better).
CLASSIFICATION_METRICS: Mapping[str, str] = {
    "accuracy": "accuracy ↑",
    "nll": "NLL ↓",
    "ece": "ECE ↓",
}
#: Name of the diagonal (perfect calibration) of :func:`reliability_figure`.
TRACE_DIAGONAL = "perfect calibration"

_MODEL_LABELS = {"network": "network", "finite-ntk": "finite NTK", "linearized-nn": "linearized NN"}
_METHOD_LABELS = {"map": "MAP", "laplace": "Laplace", "vi": "VI"}
_FEATURE_LABELS = {"activations": "activations", "all": "all"}
_TRANSFER_METHODS = {"linear": "linear classifier", "map": "finite NTK · MAP",
                     "vi": "finite NTK · VI"}  # fmt: skip
# Paper colours: network green, finite NTK blue, linearized NN orange; darker for richer
# posteriors (MAP → Laplace → VI).
_COLOURS = {
    "network": "#2ca02c",
    "finite NTK · MAP": "#6baed6",
    "finite NTK · Laplace": "#2171b5",
    "finite NTK · VI": "#08306b",
    "linearized NN · MAP": "#fdae6b",
    "linearized NN · Laplace": "#e6550d",
    "linearized NN · VI": "#a63603",
    "linear classifier": "#7f7f7f",
}
_PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#d62728")
_SYMBOLS = {"network": "star", "map": "circle", "laplace": "square", "vi": "diamond",
            "linear": "triangle-up"}  # fmt: skip
_DASHES = {"network": "solid", "map": "dot", "laplace": "dash", "vi": "solid", "linear": "solid"}
_MAIN_COLUMNS = ("arch", "model", "method", "accuracy", "nll", "ece")
_BIN_COLUMNS = ("arch", "model", "method", "bin", "lower", "upper", "confidence", "accuracy",
                "count")  # fmt: skip
_TRANSFER_COLUMNS = ("features", "method", "accuracy", "nll", "ece")


# --------------------------------------------------------------------------- labels
def classification_label(model: str, method: str) -> str:
    """The display name of one row of the Figure 4 tables: ``"network"`` or
    ``"<model> · <method>"``, e.g. ``"finite NTK · Laplace"``.

    Raises
    ------
    ValueError
        For a model or method the experiment does not produce.
    """
    if model == "network" or method == "network":
        if (model, method) != ("network", "network"):
            raise ValueError(f"'network' is both a model and a method, got {model!r}/{method!r}")
        return "network"
    if model not in _MODEL_LABELS:
        raise ValueError(f"unknown model {model!r}; expected one of {tuple(_MODEL_LABELS)}")
    if method not in _METHOD_LABELS:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(_METHOD_LABELS)}")
    return f"{_MODEL_LABELS[model]} · {_METHOD_LABELS[method]}"


def classification_labels(table: pd.DataFrame) -> list[str]:
    """The labels of a Figure 4 table's rows, in table order, each once."""
    table = _check_table(table, ("model", "method"), "classification table")
    return list(dict.fromkeys(
        classification_label(m, k) for m, k in zip(table["model"], table["method"], strict=True)
    ))  # fmt: skip


def transfer_label(method: str) -> str:
    """The display name of a Table 1 method: ``linear`` (a classifier on the activations),
    ``map`` or ``vi`` (the finite-NTK GLM)."""
    if method not in _TRANSFER_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(_TRANSFER_METHODS)}")
    return _TRANSFER_METHODS[method]


def _feature_label(features: str) -> str:
    if features in _FEATURE_LABELS:
        return _FEATURE_LABELS[features]
    if features.startswith("top-") and features[4:].isdigit():
        return f"top {int(features[4:])}"
    raise ValueError(f"unknown feature set {features!r} (activations, top-k or all)")


def _feature_order(features: str) -> float:
    if features == "activations":
        return -1.0
    if features == "all":
        return math.inf
    return float(features[4:])


# --------------------------------------------------------------------------- checks
def _check_table(table: object, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}")
    if table.empty:
        raise ValueError(f"{what} has no rows")
    return table


def _with_labels(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["label"] = [
        classification_label(m, k) for m, k in zip(out["model"], out["method"], strict=True)
    ]
    return out


def _select(present: Sequence[str], methods: Sequence[str] | None) -> list[str]:
    """``present`` restricted to ``methods`` (labels), in ``present``'s order."""
    if methods is None:
        return list(present)
    if isinstance(methods, str):
        raise ValueError(f"methods must be a sequence of labels, got {methods!r}")
    unknown = [m for m in methods if m not in present]
    if unknown:
        raise ValueError(f"methods {unknown} are not in the table (it has {list(present)})")
    return [m for m in present if m in methods]


def _single(table: pd.DataFrame, column: str, what: str) -> None:
    if column in table.columns and table[column].nunique() > 1:
        raise ValueError(
            f"{what} mixes several values of {column!r} ({sorted(table[column].unique())}); "
            "select one first"
        )


def _colour(label: str, index: int) -> str:
    return _COLOURS.get(label, _PALETTE[index % len(_PALETTE)])


def _fmt(value: object, spec: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    return format(number, spec) if math.isfinite(number) else "–"


def _panel_name(label: str, metric: str, first: bool) -> str:
    return label if first else f"{label} [{CLASSIFICATION_METRICS[metric].split()[0]}]"


# --------------------------------------------------------------------------- Figure 4
def classification_metrics_figure(
    table: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    height: int = 400,
) -> go.Figure:
    """Accuracy, NLL and ECE of the network and the linearized GLMs (Figure 4).

    Parameters
    ----------
    table : pandas.DataFrame
        The ``main`` table of :func:`ntkcore.experiments.classification.classification`
        (columns ``arch, model, method, accuracy, nll, ece``; ``seconds``, ``prior_variance``
        and ``num_params`` are shown on hover when present), one dataset and seed.
    methods : sequence of str, optional
        Labels (:func:`classification_label`) to draw; default all, in table order.
    title : str, optional
        Replaces the default title.
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Three panels (accuracy, NLL, ECE). With one architecture, one dot per method (x: the
        methods); with several, one line per method against the architecture (x: the
        architectures in table order, e.g. Figure 4's depths). Traces of the first panel are
        named after the methods; the others add ``[NLL]`` / ``[ECE]``.

    Raises
    ------
    ValueError
        If ``table`` is not a non-empty DataFrame with those columns, mixes datasets or seeds,
        repeats an (architecture, method) pair, or ``methods`` names a label not in it.
    """
    table = _with_labels(_check_table(table, _MAIN_COLUMNS, "classification table"))
    for column in ("dataset", "seed"):
        _single(table, column, "classification table")
    if table.duplicated(["arch", "label"]).any():
        raise ValueError("classification table repeats an (arch, model, method) row")
    shown = _select(list(dict.fromkeys(table["label"])), methods)
    archs = list(dict.fromkeys(table["arch"]))
    by_arch = len(archs) > 1
    metrics = list(CLASSIFICATION_METRICS)
    fig = make_subplots(
        rows=1, cols=len(metrics), horizontal_spacing=0.07, column_widths=[0.4, 0.3, 0.3],
        subplot_titles=[CLASSIFICATION_METRICS[m] for m in metrics],
    )  # fmt: skip
    for index, label in enumerate(shown):
        rows = table[table["label"] == label].set_index("arch").reindex(archs).dropna(
            subset=["accuracy"]
        )
        method = str(rows["method"].iloc[0])
        colour = _colour(label, index)
        for col, metric in enumerate(metrics, start=1):
            values = rows[metric].astype(float).to_numpy()
            hover = [
                f"<b>{label}</b> · {arch}<br>accuracy {_fmt(r.accuracy, '.3f')} · "
                f"NLL {_fmt(r.nll, '.3f')} · ECE {_fmt(r.ece, '.3f')}"
                + (f"<br>s² = {_fmt(r.prior_variance, 'g')}" if "prior_variance" in rows
                   and np.isfinite(float(r.prior_variance)) else "")
                + (f" · p = {int(r.num_params):,}" if "num_params" in rows else "")
                + (f"<br>{_fmt(r.seconds, '.2f')} s" if "seconds" in rows else "")
                for arch, r in rows.iterrows()
            ]  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=list(rows.index) if by_arch else [label] * len(values),
                    y=values,
                    name=_panel_name(label, metric, col == 1),
                    legendgroup=label,
                    showlegend=col == 1,
                    mode="lines+markers" if by_arch else "markers",
                    line={"color": colour, "width": 2, "dash": _DASHES.get(method, "solid")},
                    marker={"color": colour, "size": 12 if by_arch else 14,
                            "symbol": _SYMBOLS.get(method, "circle"),
                            "line": {"color": "white", "width": 1}},  # fmt: skip
                    hovertext=hover,
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for col in range(1, len(metrics) + 1):
        fig.update_xaxes(
            type="category",
            categoryorder="array",
            categoryarray=archs if by_arch else shown,
            showticklabels=by_arch,
            title="architecture" if by_arch else None,
            row=1,
            col=col,
        )
        fig.update_yaxes(gridcolor="#e5e5e5", row=1, col=col)
    dataset = str(table["dataset"].iloc[0]) if "dataset" in table.columns else None
    default_title = "Network vs linearized GLM" + (
        f" · {archs[0]}" if not by_arch else "" ) + (f" on {dataset}" if dataset else "")
    fig.update_layout(
        title=title if title is not None else default_title,
        height=height,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.08 if not by_arch else -0.2,
                "xanchor": "left", "x": 0},  # fmt: skip
        hovermode="closest",
        plot_bgcolor="white",
    )
    return fig


def _bins(reliability: pd.DataFrame, arch: str | None) -> tuple[pd.DataFrame, str]:
    table = _check_table(reliability, _BIN_COLUMNS, "reliability table")
    for column in ("dataset", "seed"):
        _single(table, column, "reliability table")
    archs = list(dict.fromkeys(table["arch"]))
    if arch is None:
        if len(archs) > 1:
            raise ValueError(f"reliability table holds several architectures {archs}: pass arch")
        arch = archs[0]
    elif arch not in archs:
        raise ValueError(f"arch {arch!r} is not in the reliability table (it has {archs})")
    table = _with_labels(table[table["arch"] == arch])
    counts = pd.to_numeric(table["count"], errors="coerce")
    if counts.isna().any() or (counts < 0).any():
        raise ValueError("reliability counts must be non-negative numbers")
    if table.duplicated(["label", "bin"]).any():
        raise ValueError("reliability table repeats a (model, method, bin) row")
    return table, arch


def reliability_figure(
    reliability: pd.DataFrame,
    *,
    arch: str | None = None,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    height: int = 600,
) -> go.Figure:
    """The reliability diagram: accuracy against confidence per bin, one trace per method.

    Parameters
    ----------
    reliability : pandas.DataFrame
        The ``reliability`` table of :func:`ntkcore.experiments.classification.classification`
        (columns ``arch, model, method, bin, lower, upper, confidence, accuracy, count``):
        equal-width bins of the top-class probability; ``confidence`` and ``accuracy`` are
        the bin's mean confidence and fraction correct (NaN when empty).
    arch : str, optional
        The architecture to draw (required when the table holds several).
    methods : sequence of str, optional
        Labels (:func:`classification_label`) to draw; default all, in table order.
    title : str, optional
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
        Top: :data:`TRACE_DIAGONAL`, then one trace per method through its non-empty bins
        (x: mean confidence, y: accuracy; points below the diagonal are over-confident).
        Bottom: test points per bin (bars, log scale), traces ``"<label> [count]"``.

    Raises
    ------
    ValueError
        If the table lacks columns, is empty, mixes datasets or seeds, holds several
        architectures and ``arch`` is not given, or ``methods`` names a label not in it.
    """
    table, arch = _bins(reliability, arch)
    shown = _select(list(dict.fromkeys(table["label"])), methods)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05
    )
    fig.add_trace(
        go.Scatter(
            x=[0.0, 1.0], y=[0.0, 1.0], name=TRACE_DIAGONAL, mode="lines",
            line={"color": "#555555", "width": 1.5, "dash": "dash"}, hoverinfo="skip",
        ),
        row=1, col=1,
    )  # fmt: skip
    for index, label in enumerate(shown):
        rows = table[table["label"] == label].sort_values("bin")
        method = str(rows["method"].iloc[0])
        colour = _colour(label, index)
        full = rows[rows["count"].astype(float) > 0]
        total = float(rows["count"].astype(float).sum())
        hover = [
            f"<b>{label}</b><br>confidence in ({r.lower:.2f}, {r.upper:.2f}]: "
            f"{int(r.count):,} of {total:,.0f} test points<br>mean confidence "
            f"{r.confidence:.3f} · accuracy {r.accuracy:.3f}"
            for r in full.itertuples()
        ]
        # marker area ∝ count: the bins that carry the ECE stand out
        sizes = 6 + 18 * np.sqrt(full["count"].astype(float).to_numpy() / max(total, 1.0))
        fig.add_trace(
            go.Scatter(
                x=full["confidence"].astype(float).to_numpy(),
                y=full["accuracy"].astype(float).to_numpy(),
                name=label,
                legendgroup=label,
                mode="lines+markers",
                line={"color": colour, "width": 2.5 if method == "network" else 1.5,
                      "dash": _DASHES.get(method, "solid")},
                marker={"color": colour, "size": sizes, "symbol": _SYMBOLS.get(method, "circle"),
                        "line": {"color": "white", "width": 1}},  # fmt: skip
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        centres = 0.5 * (rows["lower"].astype(float) + rows["upper"].astype(float))
        fig.add_trace(
            go.Bar(
                x=centres.to_numpy(),
                y=rows["count"].astype(float).to_numpy(),
                name=f"{label} [count]",
                legendgroup=label,
                showlegend=False,
                marker={"color": colour},
                hovertemplate=f"<b>{label}</b><br>confidence bin centre %{{x:.2f}}: "
                "%{y:,} points<extra></extra>",
            ),
            row=2,
            col=1,
        )
    width = float((table["upper"] - table["lower"]).astype(float).median())
    fig.update_xaxes(range=[0.0, 1.0], gridcolor="#e5e5e5", row=1, col=1)
    fig.update_xaxes(range=[0.0, 1.0], title="confidence (top-class probability)",
                     gridcolor="#e5e5e5", row=2, col=1)  # fmt: skip
    fig.update_yaxes(range=[-0.04, 1.06], title="accuracy in the bin", gridcolor="#e5e5e5",
                     row=1, col=1)  # fmt: skip
    # decades only: Plotly labels a log axis's minor ticks with bare digits ("2 5"), which
    # readers take for counts
    top = max(1.0, float(table["count"].astype(float).max()))
    decades = [10**k for k in range(int(math.floor(math.log10(top))) + 1)]
    fig.update_yaxes(type="log", title="points", gridcolor="#e5e5e5", tickvals=decades,
                     ticktext=[f"{v:,}" for v in decades],
                     range=[math.log10(0.7), math.log10(top * 1.5)], row=2, col=1)  # fmt: skip
    fig.add_annotation(x=0.78, y=0.3, text="below the diagonal:<br>over-confident",
                       showarrow=False, font={"color": "#777777", "size": 12},
                       xref="x", yref="y")  # fmt: skip
    fig.add_annotation(x=0.22, y=0.75, text="above:<br>under-confident", showarrow=False,
                       font={"color": "#777777", "size": 12}, xref="x", yref="y")
    fig.update_layout(
        title=title if title is not None else f"Reliability diagram · {arch}"
        f"<br><sup>{round(1 / width) if width > 0 else '?'} equal-width bins; "
        "marker size ∝ points in the bin</sup>",
        height=height,
        barmode="group",
        bargap=0.1,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0},
        hovermode="closest",
        plot_bgcolor="white",
    )
    return fig


def calibration_summary(reliability: pd.DataFrame) -> pd.DataFrame:
    """Mean confidence against accuracy per method, from the reliability bins.

    The bins partition the test points, so the count-weighted means of the bins' mean
    confidence and accuracy are the overall mean confidence and accuracy.

    Returns
    -------
    pandas.DataFrame
        One row per (``arch``, ``model``, ``method``), in table order: ``label``, ``points``,
        ``mean_confidence``, ``accuracy``, ``gap`` (mean confidence − accuracy: positive is
        over-confident, negative under-confident) and ``ece`` (Σ_b (n_b / n) |acc_b − conf_b|).
    """
    table = _with_labels(_check_table(reliability, _BIN_COLUMNS, "reliability table"))
    rows = []
    for (arch, model, method), group in table.groupby(
        ["arch", "model", "method"], sort=False
    ):
        counts = group["count"].astype(float).to_numpy()
        total = counts.sum()
        if total <= 0:
            raise ValueError(f"no test points in the bins of {arch} {model} {method}")
        full = counts > 0
        conf = group["confidence"].astype(float).to_numpy()[full]
        acc = group["accuracy"].astype(float).to_numpy()[full]
        weights = counts[full] / total
        rows.append({
            "arch": arch, "model": model, "method": method,
            "label": classification_label(model, method), "points": int(total),
            "mean_confidence": float(weights @ conf), "accuracy": float(weights @ acc),
            "gap": float(weights @ (conf - acc)), "ece": float(weights @ np.abs(acc - conf)),
        })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Table 1
def transfer_figure(
    table: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    height: int = 400,
) -> go.Figure:
    """Accuracy, NLL and ECE per feature set of the unsupervised-transfer experiment (Table 1).

    Parameters
    ----------
    table : pandas.DataFrame
        The table of :func:`ntkcore.experiments.classification.unsupervised_transfer`
        (columns ``features, method, accuracy, nll, ece``; ``num_params`` and ``seconds`` on
        hover when present), one dataset and seed.
    methods : sequence of str, optional
        Labels (:func:`transfer_label`) to draw; default all, in table order.
    title : str, optional
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
        Three panels of grouped bars, x: the feature sets (``activations``, then the
        Jacobian of the ``top 1``, …, or of ``all`` layers), one trace per method named by
        :func:`transfer_label` (``[NLL]`` / ``[ECE]`` added in the second and third panels).

    Raises
    ------
    ValueError
        If the table lacks columns, is empty, mixes datasets or seeds, repeats a (features,
        method) pair, or ``methods`` names a label not in it.
    """
    table = _check_table(table, _TRANSFER_COLUMNS, "transfer table").copy()
    for column in ("dataset", "seed"):
        _single(table, column, "transfer table")
    table["label"] = [transfer_label(m) for m in table["method"]]
    table["feature_label"] = [_feature_label(f) for f in table["features"]]
    if table.duplicated(["features", "label"]).any():
        raise ValueError("transfer table repeats a (features, method) row")
    shown = _select(list(dict.fromkeys(table["label"])), methods)
    order = sorted(dict.fromkeys(table["features"]), key=_feature_order)
    categories = [_feature_label(f) for f in order]
    metrics = list(CLASSIFICATION_METRICS)
    fig = make_subplots(
        rows=1, cols=len(metrics), horizontal_spacing=0.07, column_widths=[0.4, 0.3, 0.3],
        subplot_titles=[CLASSIFICATION_METRICS[m] for m in metrics],
    )  # fmt: skip
    for index, label in enumerate(shown):
        rows = table[table["label"] == label]
        rows = rows.assign(_order=rows["features"].map(_feature_order)).sort_values("_order")
        colour = _colour(label, index)
        hover = [
            f"<b>{label}</b> · {r.feature_label}<br>accuracy {_fmt(r.accuracy, '.3f')} · "
            f"NLL {_fmt(r.nll, '.3f')} · ECE {_fmt(r.ece, '.3f')}"
            + (f"<br>p = {int(r.num_params):,}" if "num_params" in rows else "")
            + (f" · {_fmt(r.seconds, '.2f')} s" if "seconds" in rows else "")
            for r in rows.itertuples()
        ]
        for col, metric in enumerate(metrics, start=1):
            fig.add_trace(
                go.Bar(
                    x=rows["feature_label"].to_list(),
                    y=rows[metric].astype(float).to_numpy(),
                    name=_panel_name(label, metric, col == 1),
                    legendgroup=label,
                    showlegend=col == 1,
                    marker={"color": colour},
                    hovertext=hover,
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for col in range(1, len(metrics) + 1):
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=categories,
                         tickangle=-30, row=1, col=col)  # fmt: skip
        fig.update_yaxes(gridcolor="#e5e5e5", row=1, col=col)
    dataset = str(table["dataset"].iloc[0]) if "dataset" in table.columns else None
    fig.update_layout(
        title=title if title is not None else "Classifiers on an unsupervised network"
        + (f" · {dataset}" if dataset else ""),
        height=height,
        barmode="group",
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
        hovermode="closest",
        plot_bgcolor="white",
    )
    return fig
