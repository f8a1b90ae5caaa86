"""Figure 3 (inductive biases): ``model_curves`` against the explicit GP formula, and the
small preset's curves in the direction the paper reports.

Reference for the posterior: the finite-NTK GP written out with dense float64 ``jacrev``
Jacobians (:func:`tests.models.dense_jacobian`): K = s² J Jᵀ, mean m(x*) + K*ᵀ(K + σ²I)⁻¹
(y − m(x)), variance s²‖J*‖² − K*ᵀ(K + σ²I)⁻¹K*; tolerance 1e-8 relative (float64).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcore import data, zoo
from ntkcore.experiments import get
from ntkcore.experiments.inductive_biases import (
    CURVE_COLUMNS,
    RELU_TRAINING,
    default_noise_variance,
    inductive_biases,
    model_curves,
)
from tests.models import dense_jacobian, make_mlp


def _gp_reference(model, x, y, x_star, noise, prior, mean):
    j = dense_jacobian(model, x)[:, 0, :]  # shape: (n, p)
    j_star = dense_jacobian(model, x_star)[:, 0, :]  # shape: (m, p)
    with torch.no_grad():
        f, f_star = model(x)[:, 0], model(x_star)[:, 0]
    prior_mean, prior_mean_star = (f, f_star) if mean == "network" else (0 * f, 0 * f_star)
    k = prior * j @ j.mT
    k_star = prior * j @ j_star.mT  # shape: (n, m)
    system = k + noise * torch.eye(len(x), dtype=torch.float64)
    posterior_mean = prior_mean_star + k_star.mT @ torch.linalg.solve(system, y[:, 0] - prior_mean)
    variance = prior * j_star.square().sum(1) - (k_star * torch.linalg.solve(system, k_star)).sum(0)
    return posterior_mean, variance


@pytest.mark.parametrize("mean", ["zero", "network"])
def test_model_curves_match_the_explicit_gp_formula(mean):
    torch.manual_seed(0)
    model = make_mlp(1, 12, 1, depth=2).double()
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(6, 1, generator=g) - 3, torch.randn(6, 1, generator=g) + 3])
    x = x.double()
    y = torch.sin(x) + 0.1 * torch.randn(12, 1, generator=g, dtype=torch.float64)
    x_grid = torch.linspace(-6, 6, 25, dtype=torch.float64)[:, None].flip(0)  # unsorted input
    noise, prior = 0.05, 0.7
    table = model_curves(model, x, y, x_grid, noise_variance=noise, prior_variance=prior,
                         mean=mean)  # fmt: skip
    assert list(table.columns) == [*CURVE_COLUMNS, "noise_variance"]
    assert np.all(np.diff(table["x"]) > 0)  # sorted by x
    ref_mean, ref_var = _gp_reference(model, x, y, x_grid.flip(0), noise, prior, mean)
    np.testing.assert_allclose(table["mean"], ref_mean.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(table["std"] ** 2, ref_var.numpy(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(table["upper"] - table["mean"], 2 * table["std"], rtol=1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(table["network"], model(x_grid.flip(0))[:, 0].numpy())
    # at the training inputs: the posterior mean of the explicit formula again
    at_data = model_curves(model, x, y, x, noise_variance=noise, prior_variance=prior, mean=mean)
    ref_at_data, _ = _gp_reference(model, x, y, x[torch.argsort(x[:, 0])], noise, prior, mean)
    np.testing.assert_allclose(at_data["mean"], ref_at_data.numpy(), rtol=1e-8, atol=1e-10)


def test_default_noise_is_the_networks_error_floored():
    torch.manual_seed(0)
    model = make_mlp(1, 4, 1, depth=1).double()
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)[:, None]
    with torch.no_grad():
        y = model(x)
    assert default_noise_variance(model, x, y) == 1e-3  # a perfect fit hits the floor
    assert default_noise_variance(model, x, y + 2.0) == pytest.approx(4.0)
    assert model_curves(model, x, y + 2.0, x)["noise_variance"].iloc[0] == pytest.approx(4.0)


def test_model_curves_validates_inputs():
    model = make_mlp(1, 4, 2, depth=1).double()
    x = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="one output"):
        model_curves(model, x, torch.zeros(3), x)
    one = make_mlp(1, 4, 1, depth=1).double()
    with pytest.raises(ValueError, match=r"\(n, 1\)"):
        model_curves(one, torch.zeros(3, 2), torch.zeros(3), x)
    with pytest.raises(ValueError, match="mean"):
        model_curves(one, x, torch.zeros(3), x, mean="linear")


def test_mlp_per_layer_widths():
    net = zoo.create("mlp", width=(10, 1000, 10), depth=3, activation="tanh")
    assert [m.out_features for m in net.body if isinstance(m, torch.nn.Linear)] == [10, 1000, 10]
    counts = {(100, 100, 100): 20501, (10, 1000, 10): 21041, (500, 38, 38): 21559}
    for shape, count in counts.items():
        assert zoo.info("mlp", width=shape, depth=3).num_params == count
    with pytest.raises(ValueError, match="per-layer widths"):
        zoo.create("mlp", width=(10, 10), depth=3)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        zoo.create("mlp", width=(10, 0, 10), depth=3)


@pytest.fixture(scope="module")
def small(ntkcore_cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
        torch.set_num_threads(1)
        seen = []
        result = inductive_biases(progress=lambda f, m: seen.append(f))
    return result, seen


def _std(group: pd.DataFrame, region: np.ndarray) -> float:
    return float(group["std"].to_numpy()[region].mean())


@pytest.mark.slow
def test_small_preset_is_tidy(small):
    result, seen = small
    main, points = result.main, result["data"]
    assert {"panel", "task", "model", "trained", "width", "depth", "num_params",
            "noise_variance", *CURVE_COLUMNS} <= set(main.columns)  # fmt: skip
    assert set(main["model"]) == {"relu-5", "relu-50", "relu-500", "relu-5000",
                                  "tanh-100-100-100", "tanh-10-1000-10", "tanh-500-38-38"}
    assert len(main) == 7 * 2 * 200 and not main.isna().any().any()
    assert (main["lower"] <= main["mean"]).all() and (main["mean"] <= main["upper"]).all()
    params = main.groupby("model")["num_params"].first()
    assert params["relu-5000"] == 15001
    assert all(20_000 < params[m] < 22_000 for m in params.index if m.startswith("tanh"))
    assert set(points["task"]) == {"toy-gap-relu", "toy-gap-sine"}
    assert len(points) == 300 + 200
    assert seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.slow
def test_posterior_variance_grows_away_from_the_data(small):
    """Figure 3: the trained networks' bands are narrow at the data and widen in the gap
    (and, for ReLU networks, whose Jacobians grow linearly in |x|, in the far field)."""
    main = small[0].main
    for (model, trained), g in main.groupby(["model", "trained"]):
        if not trained:
            continue
        x = g["x"].to_numpy()
        centre = 5.0 if model.startswith("relu") else 4.0
        near = np.abs(np.abs(x) - centre) < 1.0
        gap = np.abs(x) < 0.5
        assert _std(g, gap) > 2 * _std(g, near), model
        if model.startswith("relu"):
            assert _std(g, np.abs(x) > 10) > 2 * _std(g, near), model


@pytest.mark.slow
def test_band_widens_with_width_at_standard_initialization(small):
    """Figure 3 left/centre: the predictive variance grows with the width (standard
    initialization scales the NTK with the number of hidden units)."""
    main = small[0].main
    relu = main[main["panel"] == "relu-width"]
    for trained in (False, True):
        g5 = relu[(relu["model"] == "relu-5") & (relu["trained"] == trained)]
        g5000 = relu[(relu["model"] == "relu-5000") & (relu["trained"] == trained)]
        gap = np.abs(g5["x"].to_numpy()) < 1.0
        assert _std(g5000, gap) > 3 * _std(g5, gap)


@pytest.mark.slow
def test_equal_size_tanh_shapes_agree_at_the_data_and_differ_away_from_it(small):
    """Figure 3 right: three trained tanh networks of about 21,000 parameters fit the same
    data, and their linearizations' means agree there but not in the gap or beyond."""
    main = small[0].main
    tanh = main[(main["panel"] == "tanh-shape") & main["trained"]]
    means = tanh.pivot(index="x", columns="model", values="mean")
    spread = (means.max(axis=1) - means.min(axis=1)).to_numpy()
    x = means.index.to_numpy()
    at_data = spread[np.abs(np.abs(x) - 4.0) < 1.0].mean()
    outside = spread[np.abs(x) > 7.0].mean()
    assert outside > 10 * at_data


@pytest.mark.slow
def test_trained_linearization_fits_the_training_data(ntkcore_cache, monkeypatch):
    """At the training inputs the posterior mean is close to the data: its residual is no
    larger than the network's own (the GP's noise is the network's error) and near the
    data's noise level (0.9)."""
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    task = data.load("toy-gap", variant="relu", source_seed=0)
    x, y = task.source
    net = zoo.pretrained("mlp", "toy-gap", 0, task=task,
                         data_kw={"variant": "relu", "source_seed": 0}, width=500, depth=1,
                         activation="relu", **RELU_TRAINING)  # fmt: skip
    table = model_curves(net, x, y, x)
    y_sorted = y[torch.argsort(x[:, 0]), 0].double().numpy()
    gp_rmse = float(np.sqrt(np.mean((table["mean"] - y_sorted) ** 2)))
    net_rmse = float(np.sqrt(np.mean((table["network"] - y_sorted) ** 2)))
    assert gp_rmse <= net_rmse * 1.01
    assert gp_rmse < 1.0


@pytest.mark.slow
def test_command_line_smoke(tmp_path, ntkcore_cache, repo_root):
    out = tmp_path / "curves.csv"
    env = {**os.environ, "NTKCORE_CACHE": str(ntkcore_cache), "PYTHONPATH": str(repo_root),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "inductive-biases", "--relu-widths", "5",
         "--tanh-shapes", "8-8-8", "--n-grid", "20", "--quiet", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(out)
    assert set(table["model"]) == {"relu-5", "tanh-8-8-8"} and len(table) == 2 * 2 * 20
    assert len(pd.read_csv(tmp_path / "curves-data.csv")) == 500
    assert "relu-5" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "inductive-biases", "--tanh-shapes", "8-x"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "100-100-100" in bad.stderr


def test_registered_and_options_validated():
    assert get("inductive-biases").function is inductive_biases
    with pytest.raises(ValueError, match="preset"):
        inductive_biases(preset="medium")
    with pytest.raises(ValueError, match="relu_widths"):
        inductive_biases(relu_widths=(0,))
    with pytest.raises(ValueError, match="nothing to draw"):
        inductive_biases(relu_widths=(), tanh_shapes=())
    with pytest.raises(ValueError, match="n_grid"):
        inductive_biases(n_grid=1)
