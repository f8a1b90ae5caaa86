"""``data.map_grid``: the whole map of a ``spatial`` task, reassembled from its splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkcore import data
from ntkcore.data._files import read_csv
from ntkcore.data.spatial import CLIMATE_FILE


def test_map_grid_matches_the_shipped_file() -> None:
    task = data.load("spatial", seed=3)
    grid = data.map_grid(task)
    table = read_csv(CLIMATE_FILE)  # the file itself, independently of the task's splits
    assert grid.x.shape == (len(table), 2)
    np.testing.assert_allclose(grid.lon, table["lon"].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(grid.lat, table["lat"].to_numpy(), atol=1e-9)
    # float32 splits: kelvin values to ~1e-4 K
    np.testing.assert_allclose(grid.source, table["t1860"].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(grid.target, table["t2090"].to_numpy(), atol=1e-3)


def test_pool_indices_are_the_context_points_in_order() -> None:
    task = data.load("spatial", seed=5)
    grid = data.map_grid(task)
    x, y = task.context(7)
    torch.testing.assert_close(grid.x[grid.pool[:7]], x)
    np.testing.assert_allclose(
        grid.target[grid.pool[:7]], y[:, 0].double().numpy() * grid.y_std + grid.y_mean,
        rtol=1e-6,
    )


def test_to_physical_inverts_the_standardisation() -> None:
    grid = data.map_grid(data.load("spatial", seed=0))
    mean, sd = grid.to_physical(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 4.0]))
    np.testing.assert_allclose(mean, [grid.y_mean, grid.y_mean + grid.y_std])
    np.testing.assert_allclose(sd, [grid.y_std, 2 * grid.y_std])


def test_other_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="spatial"):
        data.map_grid(data.load("sinusoids", seed=0))
