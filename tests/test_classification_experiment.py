"""experiments.classification (Figure 4) and unsupervised_transfer (Table 1) on small presets.

The paper's findings, in direction, on our data (fixed seeds):

* Figure 4: the GLM on the Jacobian classifies about as well as the network — here every
  linearized model (finite NTK and linearized NN, MAP / Laplace / VI) is within 5 accuracy
  points of the network (LeNet-3 on MNIST, last layer, 500 training images; measured gaps
  0.8–1.2 points, ``benchmarks/RESULTS.md``), and ECE is reported for every method.
  The paper's second finding (the linearization is *more over-confident*) is not tested:
  on our data the finite-NTK Laplace predictive is *under*-confident (ECE 0.28 against the
  network's 0.03), recorded in RESULTS.md and the module docstring instead.
* Table 1: the finite-NTK GLM on the Jacobian of all encoder layers beats the linear
  classifier on the encoder's activations (82% against 63% measured).
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from ntkcore.experiments import classification as exp
from ntkcore.experiments.registry import ExperimentTables

pytestmark = pytest.mark.slow

MAIN_COLUMNS = {
    "arch", "dataset", "seed", "model", "method", "accuracy", "nll", "ece", "seconds",
    "prior_variance", "link", "num_params", "n_train", "n_test", "layers",
}
RELIABILITY_COLUMNS = {
    "arch", "dataset", "seed", "model", "method", "bin", "lower", "upper", "confidence",
    "accuracy", "count",
}


@pytest.fixture(scope="module")
def small(ntkcore_cache) -> ExperimentTables:
    mp = pytest.MonkeyPatch()
    mp.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seen: list[float] = []
    try:
        result = exp.classification(preset="small", progress=lambda f, m: seen.append(f))
    finally:
        torch.set_num_threads(threads)
        mp.undo()
    assert seen[-1] == 1.0 and seen == sorted(seen)
    return result


def test_classification_tables_are_tidy(small):
    main = small.main
    assert MAIN_COLUMNS <= set(main.columns)
    assert set(small["reliability"].columns) == RELIABILITY_COLUMNS
    expected = {("network", "network")} | {
        (model, method) for model in ("finite-ntk", "linearized-nn")
        for method in ("map", "laplace", "vi")
    }
    assert set(zip(main.model, main.method, strict=True)) == expected
    assert len(main) == len(expected)
    assert main[["accuracy", "ece"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (main.nll > 0).all() and (main.seconds > 0).all()
    # every method's 15 bins hold all test points once
    counts = small["reliability"].groupby(["model", "method"])["count"].sum()
    assert (counts == main.n_test.iloc[0]).all()
    assert (small["reliability"].groupby(["model", "method"]).size() == 15).all()
    # the evidence chose exactly one s² per GLM mean, and the fits used it
    evidence = small["evidence"]
    assert (evidence.groupby("model")["chosen"].sum() == 1).all()
    chosen = evidence[evidence.chosen].set_index("model")["prior_variance"]
    for _, row in main[main.model != "network"].iterrows():
        assert row.prior_variance == chosen[row.model]


def test_linearized_accuracy_within_a_few_points_of_the_network(small):
    main = small.main.set_index(["model", "method"])
    network = main.loc[("network", "network"), "accuracy"]
    for model in ("finite-ntk", "linearized-nn"):
        for method in ("map", "laplace", "vi"):
            assert abs(main.loc[(model, method), "accuracy"] - network) < 0.05


def test_unsupervised_transfer_all_layers_beat_the_activation_baseline(ntkcore_cache,
                                                                      monkeypatch):
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = exp.unsupervised_transfer(preset="small", methods=("linear", "map"),
                                          layers=(1, 0))
    finally:
        torch.set_num_threads(threads)
    assert {"features", "method", "accuracy", "nll", "ece"} <= set(table.columns)
    assert list(zip(table.features, table.method, strict=True)) == [
        ("activations", "linear"), ("top-1", "map"), ("all", "map")
    ]
    rows = table.set_index("features")
    assert rows.loc["all", "accuracy"] > rows.loc["activations", "accuracy"]
    assert rows.loc["top-1", "num_params"] < rows.loc["all", "num_params"]


def test_bad_options_raise_value_errors():
    for kwargs, match in [
        ({"preset": "huge"}, "preset"),
        ({"methods": ("network", "ep")}, "methods"),
        ({"means": ("prior",)}, "means"),
        ({"link": "logit"}, "link"),
        ({"family": "full"}, "family"),
        ({"layers": -1}, "layers"),
        ({"dataset": "sinusoids"}, "not classification"),
    ]:
        with pytest.raises(ValueError, match=match):
            exp.classification(**kwargs)
    with pytest.raises(ValueError, match="prior_variance"):
        exp.unsupervised_transfer(prior_variance=-1.0)
    with pytest.raises(ValueError, match="layers"):
        exp.unsupervised_transfer(layers=(-2,))


def test_command_line_writes_the_tables(tmp_path, ntkcore_cache, repo_root):
    out = tmp_path / "classification.csv"
    env = {"NTKCORE_CACHE": str(ntkcore_cache), "PYTHONPATH": str(repo_root),
           "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "classification", "--preset", "small",
         "--methods", "network", "map", "--means", "network", "--prior-variance", "0.01",
         "--quiet", "--out", str(out)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    main = pd.read_csv(out)
    assert list(main.method) == ["network", "map"]
    assert set(pd.read_csv(tmp_path / "classification-reliability.csv").method) == {
        "network", "map"
    }
    assert "linearized-nn" in proc.stdout
