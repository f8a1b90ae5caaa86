"""Figure 5 (Jacobian similarity) on the small preset, ``ntk_by_class`` against a dense
reference, and the command line.

The engine's similarity is tested against dense ``jacrev`` formulas in
``tests/test_similarity.py``; here the experiment's tables and the paper's finding in
direction: networks trained on the two MNIST halves are more similar to each other than
either is to a Fashion-MNIST network (whose head was retrained on MNIST1). Observed on the
small preset (3 seeds, 100 probes, seed 0): kernel measure 0.994–0.995 vs 0.891–0.914,
parameter measure 0.85–0.89 vs 0.34–0.39 (benchmarks/RESULTS.md).
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
from ntkcore.experiments.similarity import TRAINING, jacobian_similarity, ntk_by_class
from tests.models import dense_jacobian, make_mlp


@pytest.fixture(scope="module")
def small(ntkcore_cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
        torch.set_num_threads(1)
        seen = []
        result = jacobian_similarity(progress=lambda f, m: seen.append(f))
    return result, seen


@pytest.mark.slow
def test_small_preset_tables_are_tidy(small):
    result, seen = small
    main = result.main
    assert list(main.columns) == [
        "pair", "dataset_a", "dataset_b", "seed_a", "seed_b", "measure", "similarity"
    ]  # fmt: skip
    assert len(main) == 3 * 3 * 2  # pairs × seeds × measures
    assert set(main["pair"]) == {"mnist1-mnist2", "mnist1-fashion", "mnist2-fashion"}
    assert (main["seed_a"] == main["seed_b"]).all()  # pairing by seed
    assert main["similarity"].between(0.0, 1.0).all()
    spectra = result["spectra"]
    assert list(spectra.columns) == ["model", "dataset", "seed", "index", "eigenvalue"]
    assert spectra["model"].nunique() == 9
    for _, g in spectra.groupby("model"):
        values = g.sort_values("index")["eigenvalue"].to_numpy()
        assert len(values) == 1000  # min(n·o, p) = min(100 · 10, 34,622)
        assert (values >= 0).all() and (np.diff(values) <= 0).all()
    models = result["models"]
    assert len(models) == 9
    mnist = models[models["dataset"] != "fashion"]
    assert (mnist["mnist_accuracy"] > 0.85).all() and not mnist["retrained_head"].any()
    fashion = models[models["dataset"] == "fashion"]
    assert fashion["retrained_head"].all()
    assert (fashion["source_accuracy"] > 0.65).all()  # on Fashion-MNIST, before the head
    assert (fashion["mnist_accuracy"] > 0.3).all()  # the retrained head reads digits
    assert seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("measure", ["kernel", "parameter"])
def test_mnist_halves_are_more_similar_than_mnist_and_fashion(small, measure):
    """The paper's finding in direction: every MNIST1–MNIST2 similarity exceeds every
    MNIST–Fashion similarity (the violins do not overlap)."""
    main = small[0].main
    rows = main[main["measure"] == measure]
    halves = rows[rows["pair"] == "mnist1-mnist2"]["similarity"]
    across = rows[rows["pair"] != "mnist1-mnist2"]["similarity"]
    assert halves.min() > across.max()


@pytest.mark.slow
def test_ntk_by_class_shows_class_structure_after_training(ntkcore_cache, monkeypatch):
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    task = data.load("mnist")
    trained = zoo.pretrained("lenet3", "mnist", 0, task=task, data_kw={}, **TRAINING)
    with zoo.seeded(0):
        untrained = zoo.create("lenet3")
    x, y = task.test[0][:60], task.test[1][:60]

    def contrast(model) -> float:
        means = ntk_by_class(model, x, y).class_means()
        same = means["class_a"] == means["class_b"]
        return float(means[same]["mean"].mean() - means[~same]["mean"].mean())

    assert contrast(trained) > contrast(untrained) > -1.0
    assert contrast(trained) > 0.0


def test_ntk_by_class_against_dense_jacobians():
    torch.manual_seed(0)
    model = make_mlp(3, 6, 4, depth=2).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    y = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    j = dense_jacobian(model, x)  # shape: (n, o, p)
    trace = torch.einsum("iap,jap->ij", j, j)
    order = np.argsort(y.numpy(), kind="stable")
    raw = ntk_by_class(model, x, y, normalize=False)
    np.testing.assert_array_equal(raw.labels, [0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(raw.order, order)
    np.testing.assert_allclose(raw.gram, trace.numpy()[np.ix_(order, order)], rtol=1e-10)
    one = ntk_by_class(model, x, y, output=3, normalize=False)
    k3 = j[:, 3] @ j[:, 3].mT
    np.testing.assert_allclose(one.gram, k3.numpy()[np.ix_(order, order)], rtol=1e-10)
    normalized = ntk_by_class(model, x, y)
    np.testing.assert_allclose(np.diag(normalized.gram), 1.0, rtol=1e-12)
    d = np.sqrt(np.diag(raw.gram))
    np.testing.assert_allclose(normalized.gram, raw.gram / np.outer(d, d), rtol=1e-10)
    means = raw.class_means()
    assert len(means) == 9
    block = raw.gram[np.ix_([0, 1], [4, 5, 6])]
    row = means[(means["class_a"] == 0) & (means["class_b"] == 2)]
    assert float(row["mean"].iloc[0]) == pytest.approx(block.mean())
    with pytest.raises(ValueError, match="output"):
        ntk_by_class(model, x, y, output=4)
    with pytest.raises(ValueError, match="labels"):
        ntk_by_class(model, x, y.double())


def test_spectra_fall_back_to_the_top_eigenvalues_when_grams_are_not_kept(
    ntkcore_cache, monkeypatch
):
    # A probe set whose Gram matrices exceed the sweep budget is compared blockwise and the
    # Gram matrices are not kept: the spectra then hold the top 100 eigenvalues (Lanczos)
    # instead of failing after the comparison (found with --n-probe 1000 on the CPU).
    import ntkcore.similarity as similarity

    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    monkeypatch.setattr(similarity, "_CPU_SWEEP_BYTES", 16 * 2**20)
    torch.set_num_threads(1)
    tables = jacobian_similarity(seeds=2, n_probe=20, pairs=("mnist1-mnist2",))
    spectra = tables["spectra"]
    counts = spectra.groupby("model").size()
    assert len(counts) == 4 and (counts == 100).all()  # n·o = 200 rows, top 100 each
    top = spectra[spectra["index"] == 0]["eigenvalue"]
    assert (top > 0).all()
    assert tables["main"]["similarity"].between(0, 1 + 1e-6).all()


def test_options_are_validated_before_any_training():
    assert get("jacobian-similarity").function is jacobian_similarity
    for options, message in [
        ({"preset": "tiny"}, "preset"),
        ({"pairs": ("mnist1-cifar",)}, "pair"),
        ({"pairing": "random"}, "pairing"),
        ({"measures": ("cosine",)}, "measures"),
        ({"n_probe": 2001}, "n_probe"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": 1, "pairs": ("mnist1-mnist1",)}, "at least 2 seeds"),
    ]:
        with pytest.raises(ValueError, match=message):
            jacobian_similarity(**options, progress=_no_training)


def _no_training(fraction: float, message: str) -> None:
    if "training" in message:
        raise AssertionError(f"trained before validating: {message}")


@pytest.mark.slow
def test_command_line_smoke(tmp_path, ntkcore_cache, repo_root, small):
    # two of the small preset's (cached) seeds; the same-data pair needs no extra networks
    out = tmp_path / "sim.csv"
    env = {**os.environ, "NTKCORE_CACHE": str(ntkcore_cache), "PYTHONPATH": str(repo_root),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "jacobian-similarity", "--seeds", "2",
         "--n-probe", "12", "--pairs", "mnist1-mnist2", "mnist1-mnist1", "--pairing", "all",
         "--measures", "kernel", "--n-eigenvalues", "5", "--quiet", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(out)
    assert len(table) == 4 + 1  # 2 × 2 seed pairs across halves, 1 within MNIST1
    assert set(table["measure"]) == {"kernel"}
    spectra = pd.read_csv(tmp_path / "sim-spectra.csv")
    assert len(spectra) == 4 * 5
    assert "mnist1-mnist2" in run.stdout
