"""Plotly figures shared by the app and notebooks.

Functions take plain arrays, tensors or DataFrames and return a ``plotly.graph_objects.Figure``
whose traces have stable names; they do no numerics beyond square roots of variances and
sorting.
"""

from ntkcore.plots.regression import (
    TRACE_CONTEXT,
    TRACE_MEAN,
    TRACE_NETWORK,
    TRACE_SOURCE,
    TRACE_TRUTH,
    band_trace_name,
    posterior_band_figure,
)

__all__ = [
    "TRACE_CONTEXT",
    "TRACE_MEAN",
    "TRACE_NETWORK",
    "TRACE_SOURCE",
    "TRACE_TRUTH",
    "band_trace_name",
    "posterior_band_figure",
]
