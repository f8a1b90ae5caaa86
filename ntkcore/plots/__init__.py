"""Plotly figures shared by the app and notebooks.

Functions take plain arrays, tensors or DataFrames and return a ``plotly.graph_objects.Figure``
whose traces have stable names; they do no numerics beyond square roots of variances and
sorting.
"""

from ntkcore.plots.images import image_strip_figure
from ntkcore.plots.regression import (
    TRACE_CLICK,
    TRACE_CONTEXT,
    TRACE_MEAN,
    TRACE_NETWORK,
    TRACE_SOURCE,
    TRACE_TRUTH,
    band_trace_name,
    posterior_band_figure,
)

__all__ = [
    "TRACE_CLICK",
    "TRACE_CONTEXT",
    "TRACE_MEAN",
    "TRACE_NETWORK",
    "TRACE_SOURCE",
    "TRACE_TRUTH",
    "band_trace_name",
    "image_strip_figure",
    "posterior_band_figure",
]
