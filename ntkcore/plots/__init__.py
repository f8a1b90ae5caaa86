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
from ntkcore.plots.maps import MAP_PANELS, TRACE_MAP_CONTEXT, spatial_maps_figure
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
from ntkcore.plots.similarity import (
    MEASURE_TITLES,
    TRACE_KERNEL,
    TRACE_OTHER_CLASSES,
    TRACE_SAME_CLASS,
    class_kernel_figure,
    ntk_spectra_figure,
    similarity_trace_name,
    similarity_violin_figure,
)
from ntkcore.plots.timing import (
    FISHER_UNITS,
    REFERENCE_TRACE,
    TIMING_UNITS,
    fisher_cost_figure,
    fisher_speedups,
    timing_figure,
    timing_growth,
)
from ntkcore.plots.tour import (
    fd_error_figure,
    kernel_heatmap_figure,
    linearization_path_figure,
    linearized_function_figure,
    space_cost_figure,
    with_test_point,
)

__all__ = [
    "ComparisonPanel",
    "MAP_PANELS",
    "TRACE_MAP_CONTEXT",
    "spatial_maps_figure",
    "FISHER_UNITS",
    "MEASURE_TITLES",
    "REFERENCE_TRACE",
    "TIMING_UNITS",
    "TRACE_CLICK",
    "TRACE_CONTEXT",
    "TRACE_IDENTITY",
    "TRACE_KERNEL",
    "TRACE_MEAN",
    "TRACE_NETWORK",
    "TRACE_OTHER_CLASSES",
    "TRACE_PREDICTIONS",
    "TRACE_SAME_CLASS",
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
    "class_kernel_figure",
    "fd_error_figure",
    "fisher_cost_figure",
    "fisher_speedups",
    "image_strip_figure",
    "kernel_heatmap_figure",
    "linearization_path_figure",
    "linearized_function_figure",
    "ntk_spectra_figure",
    "parity_figure",
    "posterior_band_figure",
    "similarity_trace_name",
    "similarity_violin_figure",
    "space_cost_figure",
    "timing_figure",
    "timing_growth",
    "with_test_point",
]
