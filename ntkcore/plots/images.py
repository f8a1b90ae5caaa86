"""Plotly figures of image tasks: a strip of images with a caption each.

Used for the pose-regression task (faces rotated by θ; Maddox et al., 2021, Section 5, "Image
Pose Prediction") to show test images with their true and predicted angles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ntkcore.plots.regression import ArrayLike, _to_numpy

__all__ = ["image_strip_figure"]


def image_strip_figure(
    images: ArrayLike,
    titles: Sequence[str],
    *,
    height: int = 230,
    colorscale: str = "gray",
) -> go.Figure:
    """Draw grey-scale images side by side, each with a title above it.

    Parameters
    ----------
    images : array-like, shape (k, h, w)
        The images (any real range; each is drawn with its own min-max scaling).
    titles : sequence of str, length k
        One caption per image (e.g. "true 12°<br>pred 14 ± 3"; ``<br>`` breaks a line, and
        narrow images need it: captions longer than an image's width overlap).
    height : int
        Figure height in pixels.
    colorscale : str
        Plotly colour scale.

    Returns
    -------
    plotly.graph_objects.Figure
        One heatmap trace per image, named by its title, y axis flipped (row 0 on top).

    Raises
    ------
    ValueError
        For images that are not (k, h, w), non-finite pixels, or a title count that does
        not match.
    """
    array = _to_numpy(images, "images")
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"images must have shape (k, h, w), got {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("images contain non-finite values (NaN or inf)")
    if len(titles) != array.shape[0]:
        raise ValueError(f"got {len(titles)} titles for {array.shape[0]} images")
    k = array.shape[0]
    fig = make_subplots(rows=1, cols=k, subplot_titles=list(titles), horizontal_spacing=0.01)
    for i in range(k):
        fig.add_trace(
            go.Heatmap(
                z=array[i],
                colorscale=colorscale,
                showscale=False,
                name=str(titles[i]),
                hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(visible=False)
    # square pixels shrink each image inside its cell: pin it under its title
    fig.update_xaxes(constrain="domain")
    fig.update_yaxes(
        visible=False, autorange="reversed", scaleanchor="x", constrain="domain",
        constraintoward="top",
    )  # fmt: skip
    for i in range(1, k):
        fig.update_yaxes(scaleanchor=f"x{i + 1}", row=1, col=i + 1)
    fig.update_annotations(font={"size": 11})
    lines = max(str(t).count("<br>") + 1 for t in titles)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 16 + 16 * lines, "b": 0})
    return fig
