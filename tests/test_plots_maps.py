"""``ntkcore.plots.spatial_maps_figure``: panels, values on the grid, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ntkcore.plots import MAP_PANELS, TRACE_MAP_CONTEXT, spatial_maps_figure


def _table(regular: bool = True) -> pd.DataFrame:
    lon, lat = np.meshgrid([-100.0, -99.0, -98.0], [40.0, 41.0])
    t = pd.DataFrame({"lon": lon.ravel(), "lat": lat.ravel()})
    t["source"] = np.arange(6.0)
    t["target"] = np.arange(6.0) + 10
    t["mean"] = np.arange(6.0) + 9.5
    t["std"] = np.linspace(0.1, 0.6, 6)
    t["context"] = [True, False, False, True, False, False]
    return t if regular else t.iloc[:5]


def test_four_heatmaps_share_one_value_scale_and_mark_the_context() -> None:
    t = _table()
    fig = spatial_maps_figure(t, units="K")
    names = [tr.name for tr in fig.data]
    titles = list(MAP_PANELS.values())
    assert names == [*titles[:3], TRACE_MAP_CONTEXT, titles[3]]
    source = fig.data[0]
    assert source.type == "heatmap"
    # z[lat index, lon index] holds the value of that location
    np.testing.assert_array_equal(np.asarray(source.z), t["source"].to_numpy().reshape(2, 3))
    for tr in fig.data[:3]:
        if tr.type == "heatmap":
            assert (tr.zmin, tr.zmax) == (0.0, 15.0)  # min and max over source/target/mean
    ctx = next(tr for tr in fig.data if tr.name == TRACE_MAP_CONTEXT)
    assert list(ctx.x) == [-100.0, -100.0] and list(ctx.y) == [40.0, 41.0]
    assert fig.data[-1].zmin is None  # the σ panel has its own scale


def test_irregular_locations_are_drawn_as_points() -> None:
    fig = spatial_maps_figure(_table(regular=False), panels=("target", "std"))
    assert [tr.type for tr in fig.data] == ["scatter", "scatter"]
    np.testing.assert_array_equal(fig.data[0].marker.color, np.arange(5.0) + 10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="std"), "lacks columns"),
        (lambda t: t.iloc[:0], "empty"),
        (lambda t: t.assign(mean=np.nan), "non-finite"),
        (lambda t: t.assign(std=-1.0), "non-negative"),
    ],
)
def test_bad_tables_are_refused(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        spatial_maps_figure(change(_table()))


def test_unknown_panel_is_refused() -> None:
    with pytest.raises(ValueError, match="panels"):
        spatial_maps_figure(_table(), panels=("elevation",))
