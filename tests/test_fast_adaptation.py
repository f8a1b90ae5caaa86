"""``experiments.fast_adaptation`` and ``experiments.spatial_maps``: tables, inputs, command line,
and the paper's findings (Section 5, Figures 6 and 7) in direction on our data.

The findings tests run on fixed seeds over several target tasks and assert what our data
show; where they contradict the paper the docstring says so and the contradicted claim is
not asserted (``benchmarks/RESULTS.md``, "Experiments: fast adaptation", has the numbers).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcore import data
from ntkcore.experiments import fast_adaptation as fa
from ntkcore.experiments import get, run


@pytest.fixture(autouse=True)
def _cache(ntkcore_cache, monkeypatch):
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small networks run fastest on one thread; on a shared machine two threads
    were up to 10x slower (the other thread's core busy elsewhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mean_mse(table: pd.DataFrame) -> pd.DataFrame:
    return table.pivot_table(index="n_context", columns="method", values="mse", aggfunc="mean")


def _wins(table: pd.DataFrame, better: str, worse: str) -> pd.Series:
    """Fraction of tasks, per context size, where ``better`` has the lower MSE."""
    per_task = table.pivot_table(index=["n_context", "task"], columns="method", values="mse")
    return (per_task[better] < per_task[worse]).groupby(level="n_context").mean()


# ----------------------------------------------------------------------------- the table
def test_table_has_one_row_per_method_size_and_task():
    table = fa.fast_adaptation(dataset="sinusoids", tasks=(0, 1), context_sizes=(5, 10),
                               methods=("ntk", "ntk-linearized", "no-retrain", "last-layer"))
    assert list(table.columns) == list(fa.COLUMNS)
    assert len(table) == 4 * 2 * 2
    assert set(table["method"]) == {"ntk", "ntk-linearized", "no-retrain", "last-layer"}
    assert sorted(set(table["n_context"])) == [5, 10] and sorted(set(table["task"])) == [0, 1]
    assert (table["dataset"] == "sinusoids").all() and (table["arch"] == "mlp").all()
    assert (table["source"] == "sinusoids-mlp").all() and (table["seed"] == 0).all()
    assert np.isfinite(table[["mse", "nll", "coverage95", "seconds"]].to_numpy()).all()
    assert table["coverage95"].between(0, 1).all() and (table["seconds"] >= 0).all()
    hyper = table.drop_duplicates("method").set_index("method")["hyper"]
    assert hyper.to_dict() == {"ntk": "fixed", "ntk-linearized": "fixed", "no-retrain": "none",
                               "last-layer": "source budget"}
    # the NTK rows state σ² and s²; the point methods their reported residual variance
    ntk = table[table["method"] == "ntk"]
    assert (ntk["noise_variance"] > 0).all() and (ntk["prior_variance"] > 0).all()
    assert table[table["method"] == "no-retrain"]["prior_variance"].isna().all()
    # different tasks are different targets
    assert ntk["mse"].nunique() == len(ntk)


def test_fit_hyper_fits_the_ntk_on_each_context():
    table = fa.fast_adaptation(dataset="sinusoids", tasks=(0,), context_sizes=(10, 30),
                               methods=("ntk",), fit_hyper=True)
    assert (table["hyper"] == "marginal-likelihood").all()
    assert table["noise_variance"].nunique() == 2  # one fit per context


def test_arch_may_name_another_preset_of_the_dataset():
    table = fa.fast_adaptation(dataset="sinusoids", arch="sinusoids-mlp-relu", tasks=(0,),
                               context_sizes=(5,), methods=("ntk", "no-retrain"))
    assert (table["source"] == "sinusoids-mlp-relu").all() and (table["arch"] == "mlp").all()
    default = fa.fast_adaptation(dataset="sinusoids", tasks=(0,), context_sizes=(5,),
                                 methods=("no-retrain",))
    assert default["mse"].iloc[0] != table[table["method"] == "no-retrain"]["mse"].iloc[0]


def test_registered_in_the_experiments_registry():
    assert get("fast-adaptation").function is fa.fast_adaptation
    assert get("spatial-maps").function is fa.spatial_maps


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ("ntk", "gp-of-dreams")}, "unknown method"),
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"dataset": "nowhere"}, "unknown dataset"),
        ({"context_sizes": (5, 101)}, "exceed the target pool"),
        ({"context_sizes": (0,)}, "ints >= 1"),
        ({"tasks": (-1,)}, "ints >= 0"),
        ({"preset": "medium"}, "preset must be one of"),
        ({"seed": -2}, "seed must be"),
        ({"arch": "no-such-net"}, "arch must be a zoo architecture"),
    ],
)
def test_bad_input_is_refused_before_any_work(options, message):
    calls = []
    with pytest.raises(ValueError, match=message):
        fa.fast_adaptation(progress=lambda f, m: calls.append(f), **options)
    assert calls == []


def test_bad_spatial_maps_input():
    with pytest.raises(ValueError, match=r"n_context must lie in \[1, 200\]"):
        fa.spatial_maps(n_context=201)
    with pytest.raises(ValueError, match="unknown method"):
        fa.spatial_maps(method="nope")


def test_progress_is_monotone_and_its_exceptions_propagate():
    seen = []
    fa.fast_adaptation(dataset="sinusoids", tasks=(0,), context_sizes=(5,),
                       methods=("no-retrain", "ntk"), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in seen)

    class Stop(Exception):
        pass

    def interrupt(fraction, message):
        if fraction > 0.5:
            raise Stop(message)

    with pytest.raises(Stop):
        fa.fast_adaptation(dataset="sinusoids", tasks=(0,), context_sizes=(5, 10),
                           methods=("no-retrain",), progress=interrupt)


@pytest.mark.slow
def test_command_line(tmp_path, repo_root, ntkcore_cache):
    out = tmp_path / "fa.csv"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "NTKCORE_CACHE": str(ntkcore_cache),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "fast-adaptation", "--preset", "small",
         "--tasks", "0", "--context-sizes", "5", "10", "--methods", "ntk", "no-retrain",
         "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=repo_root, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == list(fa.COLUMNS) and len(table) == 4
    assert "no-retrain" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "fast-adaptation", "--methods", "nope"],
        capture_output=True, text=True, env=env, cwd=repo_root, timeout=300,
    )
    assert bad.returncode == 2 and "unknown method" in bad.stderr


# ----------------------------------------------------------------------------- spatial maps
def test_spatial_maps_grid_units_and_consistency_with_the_table():
    table = fa.spatial_maps(n_context=50, task=0)
    assert list(table.columns) == list(fa.MAP_COLUMNS)
    assert len(table) == 37 * 49 == table[["lon", "lat"]].drop_duplicates().shape[0]
    assert table["lon"].between(-135.01, -44.99).all() and table["lat"].between(14.99, 60.01).all()
    assert int(table["context"].sum()) == 50
    # physical units: decadal-mean air temperature in kelvin; the 2090s are warmer
    for column in ("source", "target", "mean"):
        assert table[column].between(200, 330).all(), column
    assert (table["target"] - table["source"]).mean() > 1.0
    assert (table["std"] > 0).all()
    # the held-out cells' error is fast_adaptation's MSE for the same task, in kelvin²
    task = data.load("spatial", seed=0)
    test_cells = ~table["context"].to_numpy()
    pool = task.meta.extra["target_rows"].numpy()
    in_pool = np.zeros(len(table), dtype=bool)
    in_pool[pool] = True
    held_out = test_cells & ~in_pool
    err = ((table["mean"] - table["target"])[held_out] ** 2).mean()
    row = fa.fast_adaptation(dataset="spatial", tasks=(0,), context_sizes=(50,),
                             methods=("ntk",)).iloc[0]
    y_std = task.meta.transform["y_std"]
    assert err == pytest.approx(row["mse"] * y_std**2, rel=1e-4)


def test_spatial_maps_runs_through_the_registry():
    table = run("spatial-maps", n_context=10, method="no-retrain")
    assert int(table["context"].sum()) == 10 and (table["method"] == "no-retrain").all()


# ----------------------------------------------------------------------------- findings
@pytest.mark.slow
def test_sinusoids_ntk_beats_no_retraining_and_scratch_ablr_with_few_points():
    """Figure 6: "the finite NTK ... significantly outperforms ABLR", and adapting beats not
    retraining.

    Our data (source network ``sinusoids-mlp``; full preset, 10 target tasks): the NTK's
    mean test MSE is far below the unadapted network's at every context size (5.99 vs 14.2
    at 5 points, 0.0096 vs 14.2 at 50) and it wins on 80-100% of the tasks. Against ABLR
    with features learned from scratch (Perrone et al.'s and the reference script's setup,
    ``ablr-scratch``) the NTK's *mean* MSE is far lower with 5 points (5.99 vs 23.2); from
    10 points the two trade places task by task (10 points: 4.57 vs 4.28; 20: 0.71 vs 1.14;
    the NTK wins only 40-60% of the tasks) and from 50 points ABLR is better (0.0040 vs
    0.0096). These means rest on a few tasks where scratch ABLR fails: since ABLR's noise
    precision is capped at 1/noise_floor (noise-free sources drove it to infinity) its mean
    at 10 points fell from 12.5 to 4.28, so only the 5-point comparison is asserted. Against
    ABLR whose feature learning starts from the trained source network
    (``ablr``, the default) the NTK loses from 5 to 50 points (mean 4.37 vs 5.99 at 5,
    0.0046 vs 0.0096 at 50; it wins at 100). Only the mean comparisons that hold are
    asserted.
    """
    table = fa.fast_adaptation(dataset="sinusoids", tasks=tuple(range(10)),
                               context_sizes=(5, 10, 20, 50),
                               methods=("ntk", "no-retrain", "ablr-scratch"))
    mse = _mean_mse(table)
    assert (mse["ntk"] < 0.5 * mse["no-retrain"]).all(), mse
    assert (_wins(table, "ntk", "no-retrain").loc[[10, 20, 50]] >= 0.75).all()
    assert mse.loc[5, "ntk"] < 0.5 * mse.loc[5, "ablr-scratch"], mse


@pytest.mark.slow
def test_faces_ntk_beats_last_layer_retraining_from_50_points():
    """Figure 7b: "the NTK has the biggest advantage when there is a small amount of data".

    Our data (faces-rotation, LFW crops standing in for Olivetti; full preset, 10 target
    tasks; this test runs the first 4): from 50 context points the NTK's test MSE is about
    half of last-layer retraining's on every task (0.142 vs 0.283 at 50, 0.013 vs 0.275 at
    200). With 10 points the NTK is *worse* (0.35 vs 0.31, it wins on 3 of 10 tasks; at 25
    points 0.278 vs 0.297, 6 of 10): last-layer retraining for the source budget (40
    epochs, one step each with 10 points) barely moves the network, and the zero-mean NTK
    has not yet recovered the network's own prediction. The NTK's advantage *grows* with
    the number of points, against the paper's "biggest advantage with little data"; not
    asserted.
    """
    table = fa.fast_adaptation(dataset="faces-rotation", tasks=tuple(range(4)),
                               context_sizes=(10, 50), methods=("ntk", "last-layer"))
    mse = _mean_mse(table)
    assert mse.loc[50, "ntk"] < 0.6 * mse.loc[50, "last-layer"], mse
    assert _wins(table, "ntk", "last-layer").loc[50] >= 0.75
    # the NTK improves with more points; last-layer retraining hardly moves
    assert mse.loc[50, "ntk"] < 0.6 * mse.loc[10, "ntk"], mse


@pytest.mark.slow
def test_spatial_ntk_keeps_improving_with_more_context_points():
    """Figure 7a: "the NTK improves its accuracy ... as the number of [context] points
    increases, while re-training the last layer stagnates and only has marginally better
    performance than no-retraining at all".

    Our data (spatial, climate maps standing in for the malaria maps; full preset, 10
    target tasks): the NTK's mean test MSE falls at every step from 10 to 200 points (0.040,
    0.021, 0.013, 0.011, 0.0089 for 10, 25, 50, 100, 200) and is 7-30× below the unadapted
    network's (0.27). Last-layer retraining for the source budget does *not* stagnate on
    our data: it improves as fast (0.066, 0.024, 0.014, 0.010, 0.0089) and is level with the
    NTK — lower mean MSE for the NTK up to 50 points, but per task the NTK wins only 20-50%
    there (the mean is pulled by the few tasks where the retrained head fits 10 points
    badly). The improvement of last-layer retraining is asserted as measured, since it
    contradicts the paper; no ordering of the two is asserted.
    """
    table = fa.fast_adaptation(dataset="spatial", tasks=tuple(range(10)),
                               context_sizes=(10, 50, 200),
                               methods=("ntk", "last-layer", "no-retrain"))
    mse = _mean_mse(table)
    ntk, last = mse["ntk"], mse["last-layer"]
    assert ntk.loc[10] > ntk.loc[50] > ntk.loc[200], ntk
    assert ntk.loc[200] < 0.4 * ntk.loc[10]
    assert (ntk < 0.2 * mse["no-retrain"]).all(), mse
    assert (_wins(table, "ntk", "no-retrain") == 1.0).all()
    # the contradiction, as measured: last-layer retraining keeps improving too
    assert last.loc[200] < 0.2 * last.loc[10]
    assert last.loc[200] < 1.25 * ntk.loc[200]
