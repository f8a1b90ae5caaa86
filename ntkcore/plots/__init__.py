"""Plotly figures shared by the app and notebooks.

Functions take plain arrays, tensors or DataFrames and return a ``plotly.graph_objects.Figure``
whose traces have stable names; they do no numerics beyond square roots of variances and
sorting.
"""

from ntkcore.plots.compare import (
    ComparisonPanel,
    comparison_grid_figure,
    comparison_overlay_figure,
    overlay_trace_names,
    panel_title,
    shared_y_range,
)
from ntkcore.plots.images import image_strip_figure
from ntkcore.plots.regression import (
    TRACE_CLICK,
    TRACE_CONTEXT,
    TRACE_IDENTITY,
    TRACE_MEAN,
    TRACE_NETWORK,
    TRACE_PREDICTIONS,
    TRACE_SOURCE,
    TRACE_TRUTH,
    band_trace_name,
    parity_figure,
    posterior_band_figure,
)

__all__ = [
    "ComparisonPanel",
    "TRACE_CLICK",
    "TRACE_CONTEXT",
    "TRACE_IDENTITY",
    "TRACE_MEAN",
    "TRACE_NETWORK",
    "TRACE_PREDICTIONS",
    "TRACE_SOURCE",
    "TRACE_TRUTH",
    "band_trace_name",
    "comparison_grid_figure",
    "comparison_overlay_figure",
    "image_strip_figure",
    "overlay_trace_names",
    "panel_title",
    "parity_figure",
    "posterior_band_figure",
    "shared_y_range",
]
