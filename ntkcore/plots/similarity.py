"""Plotly figures of Jacobian similarity across tasks (Maddox et al., 2021, Section 4).

* :func:`similarity_violin_figure` — Figure 5: the similarity of trained networks' Jacobians
  across seeds, one violin per pair of training sets, one panel per measure;
* :func:`ntk_spectra_figure` — Appendix E.1: the eigenvalues of every network's NTK Gram
  matrix on the probe images, one line per network, grouped by training set;
* :func:`class_kernel_figure` — one network's finite NTK on a probe batch with the points
  grouped by class (:func:`ntkcore.experiments.similarity.ntk_by_class`), and per class the
  mean kernel value with points of the same class and with points of other classes.

Inputs are the tidy tables of :func:`ntkcore.experiments.similarity.jacobian_similarity`
(``main``, ``spectra``); the functions only arrange them (filtering, sorting, per-class
means for the bar panel) and name every trace (``similarity_trace_name``, the ``TRACE_*``
constants) so that apps and tests can find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "MEASURE_TITLES",
    "TRACE_KERNEL",
    "TRACE_OTHER_CLASSES",
    "TRACE_SAME_CLASS",
    "class_kernel_figure",
    "ntk_spectra_figure",
    "similarity_trace_name",
    "similarity_violin_figure",
]

#: Panel titles of the two readings of sim(A, B) (see :mod:`ntkcore.similarity`).
MEASURE_TITLES = {
    "kernel": "kernel: cosine of the NTK Gram matrices J Jᵀ",
    "parameter": "parameter: cosine of the p × p matrices JᵀJ",
}
TRACE_KERNEL = "finite NTK"
TRACE_SAME_CLASS = "same class"
TRACE_OTHER_CLASSES = "other classes"

# Figure 5 of the paper: MNIST1-MNIST2 blue, MNIST1-FMNIST orange, MNIST2-FMNIST green.
_PAIR_COLOURS = {
    "mnist1-mnist2": "#1f77b4",
    "mnist1-fashion": "#ff7f0e",
    "mnist2-fashion": "#2ca02c",
}
_OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# Training sets in the spectra: the pair colours' datasets.
_DATASET_COLOURS = {"mnist1": "#1f77b4", "mnist2": "#17becf", "fashion": "#ff7f0e"}


def similarity_trace_name(pair: str, measure: str) -> str:
    """Name of the violin of ``pair`` under ``measure``, e.g. ``"mnist1-mnist2 · kernel"``."""
    return f"{pair} · {measure}"


def _require(table: Any, columns: Sequence[str], name: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{name} has no rows")
    return table


def _subset(values: Sequence[str] | None, present: list[str], what: str) -> list[str]:
    """``values`` (validated against ``present``) or ``present`` in order of appearance."""
    if values is None:
        return present
    if isinstance(values, str):
        values = [values]
    unknown = [v for v in values if v not in present]
    if unknown or not values:
        raise ValueError(f"{what} must be a non-empty subset of {present}, got {list(values)}")
    return list(values)


def _colours(keys: Sequence[str], known: dict[str, str]) -> dict[str, str]:
    others = iter(_OTHER_COLOURS * (1 + len(keys) // len(_OTHER_COLOURS)))
    return {k: known[k] if k in known else next(others) for k in keys}


def similarity_violin_figure(
    table: pd.DataFrame,
    *,
    measures: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
    full_range: bool = True,
    height: int = 420,
) -> go.Figure:
    """Violins of the similarity across seeds per pair of training sets (Figure 5).

    Parameters
    ----------
    table : DataFrame
        Columns ``pair``, ``measure``, ``similarity`` (one row per comparison), and
        optionally ``seed_a``, ``seed_b`` (shown on hover): the ``main`` table of
        ``jacobian_similarity``.
    measures, pairs : sequence of str, optional
        Which measures (one panel each, left to right) and pairs (violins, left to right)
        to draw; default all, in order of appearance.
    full_range : bool
        y axes from 0 to 1 (the range of both measures); else fitted to the data.
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Violin`` per (measure, pair) named :func:`similarity_trace_name`, with
        box, mean line and every point shown and the density cut at the extreme values
        (``spanmode="hard"``); colours by pair (the paper's: MNIST1-MNIST2 blue,
        MNIST1-Fashion orange, MNIST2-Fashion green).

    Raises
    ------
    ValueError
        For a table without the columns or rows, non-finite or out-of-range similarities,
        or measures / pairs that the table does not have.
    """
    table = _require(table, ("pair", "measure", "similarity"), "table")
    values = pd.to_numeric(table["similarity"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("similarity contains non-finite or non-numeric values")
    if np.any(values < -1e-9) or np.any(values > 1 + 1e-9):
        raise ValueError(
            f"similarities must lie in [0, 1], got [{values.min():.3g}, {values.max():.3g}]"
        )
    measures = _subset(measures, list(dict.fromkeys(table["measure"])), "measures")
    pairs = _subset(pairs, list(dict.fromkeys(table["pair"])), "pairs")
    colours = _colours(pairs, _PAIR_COLOURS)
    has_seeds = {"seed_a", "seed_b"} <= set(table.columns)
    titles = [MEASURE_TITLES.get(m, m) for m in measures]
    fig = make_subplots(rows=1, cols=len(measures), subplot_titles=titles,
                        horizontal_spacing=0.08)  # fmt: skip
    for col, measure in enumerate(measures, start=1):
        for pair in pairs:
            rows = table[(table["measure"] == measure) & (table["pair"] == pair)]
            if rows.empty:
                continue
            y = rows["similarity"].to_numpy(dtype=np.float64)
            extra: dict[str, Any] = {}
            if has_seeds:
                extra["customdata"] = rows[["seed_a", "seed_b"]].to_numpy()
                extra["hovertemplate"] = (
                    f"{pair} ({measure})<br>seed %{{customdata[0]}} vs seed "
                    "%{customdata[1]}: %{y:.4f}<extra></extra>"
                )
            fig.add_trace(
                go.Violin(
                    x=[pair] * len(y),
                    y=y,
                    name=similarity_trace_name(pair, measure),
                    legendgroup=pair,
                    showlegend=False,
                    box_visible=True,
                    meanline_visible=True,
                    points="all",
                    pointpos=0.0,
                    jitter=0.3,
                    spanmode="hard",
                    line_color=colours[pair],
                    fillcolor=colours[pair],
                    opacity=0.6,
                    marker={"size": 5, "color": colours[pair], "line": {"width": 0}},
                    **extra,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(categoryorder="array", categoryarray=pairs, row=1, col=col)
        fig.update_yaxes(
            title_text="similarity" if col == 1 else None,
            range=[0.0, 1.02] if full_range else None,
            row=1,
            col=col,
        )
    fig.update_annotations(font={"size": 13})
    fig.update_layout(
        height=height, margin={"l": 60, "r": 20, "t": 50, "b": 40}, violingap=0.25,
        hovermode="closest",
    )  # fmt: skip
    return fig


def ntk_spectra_figure(
    table: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    relative: bool = False,
    log_x: bool = False,
    height: int = 420,
) -> go.Figure:
    """Eigenvalues of each network's NTK Gram matrix against their index (Appendix E.1).

    Parameters
    ----------
    table : DataFrame
        Columns ``model``, ``dataset``, ``index`` (0 for the largest eigenvalue),
        ``eigenvalue``: the ``spectra`` table of ``jacobian_similarity``.
    models : sequence of str, optional
        Which networks to draw (default all, in order of appearance).
    relative : bool
        Divide each network's eigenvalues by its largest (λ_k / λ_1).
    log_x : bool
        Logarithmic index axis (the eigenvalue axis is always logarithmic).
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        One line per network, named by ``model``, coloured and grouped in the legend by
        ``dataset``. Eigenvalues that are exactly zero (clamped rounding noise) are left
        out: a log axis cannot show them.

    Raises
    ------
    ValueError
        For a table without the columns or rows, non-finite or negative eigenvalues, or
        models that the table does not have.
    """
    table = _require(table, ("model", "dataset", "index", "eigenvalue"), "table")
    values = pd.to_numeric(table["eigenvalue"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("eigenvalue contains non-finite or non-numeric values")
    if np.any(values < 0):
        raise ValueError(f"eigenvalues must be >= 0 (a Gram matrix), got min {values.min():.3g}")
    models = _subset(models, list(dict.fromkeys(table["model"])), "models")
    datasets = list(dict.fromkeys(table["dataset"]))
    colours = _colours(datasets, _DATASET_COLOURS)
    fig = go.Figure()
    titled: set[str] = set()
    for model in models:
        rows = table[table["model"] == model].sort_values("index")
        dataset = str(rows["dataset"].iloc[0])
        k = rows["index"].to_numpy(dtype=np.int64) + 1
        eig = rows["eigenvalue"].to_numpy(dtype=np.float64)
        if relative:
            eig = eig / eig.max() if eig.max() > 0 else eig
        keep = eig > 0
        fig.add_trace(
            go.Scatter(
                x=k[keep],
                y=eig[keep],
                mode="lines",
                name=str(model),
                legendgroup=dataset,
                legendgrouptitle_text=None if dataset in titled else f"trained on {dataset}",
                line={"color": colours[dataset], "width": 1.5},
                hovertemplate=f"{model}<br>k = %{{x}}: %{{y:.3g}}<extra></extra>",
            )
        )
        titled.add(dataset)
    fig.update_yaxes(
        type="log", title_text="λₖ / λ₁" if relative else "eigenvalue λₖ", exponentformat="power"
    )
    fig.update_xaxes(type="log" if log_x else "linear", title_text="index k (largest first)")
    fig.update_layout(
        height=height,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"groupclick": "toggleitem"},
        hovermode="closest",
    )
    return fig


def class_kernel_figure(
    kernel: Any,
    *,
    class_names: Sequence[str] | None = None,
    height: int = 520,
) -> go.Figure:
    """A network's finite NTK on probe points grouped by class, and per-class means.

    Parameters
    ----------
    kernel : ClassKernel
        From :func:`ntkcore.experiments.similarity.ntk_by_class`: ``gram`` (n, n) with the
        points sorted by class, ``labels`` (n,) sorted, ``class_names`` (optional).
    class_names : sequence of str, optional
        Names of the classes by label (default ``kernel.class_names``, else the labels).
    height : int
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        Left: a heatmap named :data:`TRACE_KERNEL` (row 0 on top) with lines at the class
        boundaries and the class names at the blocks' centres. Right: per class a, bars
        :data:`TRACE_SAME_CLASS` (the mean of the a-a block, its diagonal left out) and
        :data:`TRACE_OTHER_CLASSES` (the mean of a's rows over the other classes' columns).

    Raises
    ------
    ValueError
        For a kernel that is not square, non-finite values, labels that do not match or
        are not sorted, or too few class names.
    """
    gram = np.asarray(getattr(kernel, "gram", None), dtype=np.float64)
    labels = np.asarray(getattr(kernel, "labels", None))
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"kernel.gram must be a non-empty square matrix, got {gram.shape}")
    if not np.all(np.isfinite(gram)):
        raise ValueError("kernel.gram contains non-finite values")
    n = gram.shape[0]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"kernel.labels must be {n} integer labels, got {labels.shape}")
    if np.any(np.diff(labels) < 0):
        raise ValueError("kernel.labels must be sorted (the points grouped by class)")
    classes = np.unique(labels)
    names = class_names if class_names is not None else getattr(kernel, "class_names", None)
    if names is not None and len(names) <= int(classes.max()):
        raise ValueError(f"{len(names)} class names for labels up to {int(classes.max())}")
    name_of = {int(c): str(names[c]) if names is not None else str(c) for c in classes}
    starts = np.searchsorted(labels, classes)
    ends = np.append(starts[1:], n)
    centres = (starts + ends - 1) / 2.0
    same, other = [], []
    for s, e in zip(starts, ends, strict=True):
        block = gram[s:e, s:e]
        off_diagonal = block[~np.eye(e - s, dtype=bool)] if e - s > 1 else block.ravel()
        same.append(float(off_diagonal.mean()))
        rest = np.concatenate([gram[s:e, :s], gram[s:e, e:]], axis=1)
        other.append(float(rest.mean()) if rest.size else float("nan"))

    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.14,
        subplot_titles=["kernel between probe images, grouped by class",
                        "mean kernel value per class"],
    )  # fmt: skip
    label_grid = np.broadcast_to(labels[:, None], (n, n))
    fig.add_trace(
        go.Heatmap(
            z=gram,
            name=TRACE_KERNEL,
            colorscale="Viridis",
            customdata=np.stack([label_grid, label_grid.T], axis=-1),
            hovertemplate="class %{customdata[0]} × class %{customdata[1]}: "
            "%{z:.3f}<extra></extra>",
            colorbar={"x": 0.555, "len": 0.9, "thickness": 14},
        ),
        row=1,
        col=1,
    )
    for boundary in starts[1:] - 0.5:
        for axis in ("x", "y"):
            line = {"type": "line", "xref": "x", "yref": "y",
                    "line": {"color": "white", "width": 1.2}}  # fmt: skip
            if axis == "x":
                line.update(x0=boundary, x1=boundary, y0=-0.5, y1=n - 0.5)
            else:
                line.update(y0=boundary, y1=boundary, x0=-0.5, x1=n - 0.5)
            fig.add_shape(line)
    ticks = {"tickmode": "array", "tickvals": centres.tolist(),
             "ticktext": [name_of[int(c)] for c in classes], "showgrid": False}  # fmt: skip
    fig.update_xaxes(range=[-0.5, n - 0.5], constrain="domain", title_text="class",
                     **ticks, row=1, col=1)  # fmt: skip
    fig.update_yaxes(range=[n - 0.5, -0.5], scaleanchor="x", constrain="domain",
                     title_text="class", **ticks, row=1, col=1)  # fmt: skip
    bar_x = [name_of[int(c)] for c in classes]
    fig.add_trace(
        go.Bar(x=bar_x, y=same, name=TRACE_SAME_CLASS, marker_color="#1f77b4",
               hovertemplate="class %{x}, same class: %{y:.3f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=bar_x, y=other, name=TRACE_OTHER_CLASSES, marker_color="#bbbbbb",
               hovertemplate="class %{x}, other classes: %{y:.3f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(type="category", title_text="class", row=1, col=2)
    fig.update_yaxes(title_text="mean kernel value", row=1, col=2)
    fig.update_annotations(font={"size": 13})
    fig.update_layout(
        height=height, barmode="group", margin={"l": 50, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": -0.12},
    )  # fmt: skip
    return fig
