"""Plotly maps of the spatial transfer task: source, target, posterior mean and uncertainty.

The paper's malaria experiment (Maddox et al., 2021, Section 5, Figure 7a) adapts a network
trained on one map to a later one. These figures draw a tidy map table (one row per location:
``lon, lat, source, target, mean, std, context``, as ``ntkcore.experiments.fast_adaptation.
spatial_maps`` returns it) as four panels that share their axes: the two true maps share one
colour scale with the posterior mean, the posterior standard deviation has its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["MAP_PANELS", "TRACE_MAP_CONTEXT", "spatial_maps_figure"]

#: Panel column -> title.
MAP_PANELS = {
    "source": "source map (training data)",
    "target": "target map (truth)",
    "mean": "posterior mean",
    "std": "posterior standard deviation",
}
TRACE_MAP_CONTEXT = "context points"
_REQUIRED = ("lon", "lat", "source", "target", "mean", "std", "context")


def _grid(table: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(lon axis, lat axis, values[lat, lon]) when the locations form a full regular grid."""
    lons, lats = np.unique(table["lon"]), np.unique(table["lat"])
    if lons.size * lats.size != len(table):
        return None
    values = np.full((lats.size, lons.size), np.nan)
    i = np.searchsorted(lats, table["lat"].to_numpy())
    j = np.searchsorted(lons, table["lon"].to_numpy())
    values[i, j] = table[column].to_numpy()
    return lons, lats, values


def spatial_maps_figure(
    table: pd.DataFrame,
    *,
    units: str = "",
    panels: Sequence[str] = tuple(MAP_PANELS),
    height: int = 620,
) -> go.Figure:
    """Draw a spatial map table as a 2 × 2 grid of maps (or fewer panels).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per location with columns ``lon, lat, source, target, mean, std, context``.
        Locations on a full regular grid are drawn as heatmaps, others as coloured points.
    units : str
        Units of the values, for the colour bars.
    panels : sequence of str
        Which of :data:`MAP_PANELS` to draw, in order.

    Returns
    -------
    plotly.graph_objects.Figure
        One trace per panel, named by its :data:`MAP_PANELS` title, and a trace
        :data:`TRACE_MAP_CONTEXT` marking the context locations on the posterior-mean panel.

    Raises
    ------
    ValueError
        For missing columns, an unknown panel, an empty table or non-finite coordinates or
        predictions.
    """
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"the map table lacks columns {missing}; it has {list(table.columns)}")
    unknown = [p for p in panels if p not in MAP_PANELS]
    if unknown or not panels:
        raise ValueError(f"panels must be among {list(MAP_PANELS)}, got {list(panels)}")
    if table.empty:
        raise ValueError("the map table is empty: nothing to draw")
    for column in ("lon", "lat", "mean", "std"):
        if not np.all(np.isfinite(table[column].to_numpy(dtype=np.float64))):
            raise ValueError(f"column {column!r} has non-finite values")
    if (table["std"] < 0).any():
        raise ValueError("standard deviations must be non-negative")

    values = pd.concat([table[c] for c in ("source", "target", "mean") if c in panels])
    low, high = (float(np.nanmin(values)), float(np.nanmax(values))) if len(values) else (0, 1)
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + 1) // 2
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[MAP_PANELS[p] for p in panels],
        shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.12, vertical_spacing=0.1,
    )  # fmt: skip
    label = f" ({units})" if units else ""
    for k, panel in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        is_std = panel == "std"
        scale = {
            "colorscale": "Magma" if is_std else "RdYlBu_r",
            "zmin": None if is_std else low,
            "zmax": None if is_std else high,
        }
        # One colour bar for the shared value scale (beside the first panel using it) and one
        # for the standard deviation.
        first_value_panel = next(p for p in panels if p != "std") if panel != "std" else None
        show_bar = is_std or panel == first_value_panel
        bar = {
            "title": {"text": ("σ" if is_std else "value") + label, "side": "right"},
            "len": 0.42 if rows > 1 else 0.9,
            "y": 1 - (row - 0.5) / rows,
            "x": 0.44 if col == 1 and cols > 1 else 1.0,
            "thickness": 12,
        }
        grid = _grid(table, panel)
        hover = (
            f"lon %{{x:.1f}}, lat %{{y:.1f}}: %{{z:.2f}}{label}"
            f"<extra>{MAP_PANELS[panel]}</extra>"
        )
        if grid is not None:
            lons, lats, z = grid
            trace = go.Heatmap(
                x=lons, y=lats, z=z, name=MAP_PANELS[panel], showscale=show_bar,
                colorbar=bar, hovertemplate=hover, **scale,
            )  # fmt: skip
        else:
            trace = go.Scatter(
                x=table["lon"], y=table["lat"], mode="markers", name=MAP_PANELS[panel],
                marker={"color": table[panel], "colorscale": scale["colorscale"],
                        "cmin": scale["zmin"], "cmax": scale["zmax"], "size": 6,
                        "showscale": show_bar, "colorbar": bar},
                hovertemplate=hover.replace("%{z", "%{marker.color"),
            )  # fmt: skip
        fig.add_trace(trace, row=row, col=col)
        if panel == "mean":
            ctx = table[table["context"].astype(bool)]
            fig.add_trace(
                go.Scatter(
                    x=ctx["lon"], y=ctx["lat"], mode="markers", name=TRACE_MAP_CONTEXT,
                    marker={"color": "#7b2cbf", "size": 7, "line": {"color": "white", "width": 1}},
                    hovertemplate="context point<extra></extra>",
                ),
                row=row, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text="longitude", row=rows)
    fig.update_yaxes(title_text="latitude", col=1)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False
    )
    return fig
