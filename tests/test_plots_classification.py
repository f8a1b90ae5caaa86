"""Tests of ``ntkcore.plots.classification``: Figure 4's metric panels and reliability diagram,
the calibration summary, and Table 1's transfer figure.

Tables are written out here with known numbers (the columns of
``ntkcore.experiments.classification``), so every plotted value is checked against a number in
the test; the calibration summary is checked against mean confidence and accuracy computed
with numpy from raw probabilities; one slow test draws a real (tiny) run of the experiment.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from ntkcore.experiments.classification import ECE_BINS, _reliability_rows
from ntkcore.plots import (
    TRACE_DIAGONAL,
    calibration_summary,
    classification_label,
    classification_labels,
    classification_metrics_figure,
    reliability_figure,
    transfer_figure,
    transfer_label,
)


def _trace(fig: go.Figure, name: str) -> go.BaseTraceType:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return matches[0]


ROWS = [  # model, method, accuracy, nll, ece
    ("network", "network", 0.906, 0.313, 0.026),
    ("finite-ntk", "map", 0.917, 0.306, 0.017),
    ("finite-ntk", "laplace", 0.918, 0.569, 0.284),
    ("linearized-nn", "vi", 0.919, 0.311, 0.017),
]


def _main(archs: tuple[str, ...] = ("lenet3",)) -> pd.DataFrame:
    rows = []
    for depth, arch in enumerate(archs):
        for model, method, acc, nll, ece in ROWS:
            rows.append({
                "arch": arch, "dataset": "mnist", "seed": 0, "model": model, "method": method,
                "accuracy": acc - 0.01 * depth, "nll": nll + 0.1 * depth, "ece": ece,
                "seconds": 1.5, "prior_variance": math.nan if method == "network" else 0.1,
                "num_params": 1210,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _bins(model: str, method: str, arch: str = "lenet3") -> list[dict]:
    """Three non-empty bins of five: (count, confidence, accuracy) written out."""
    filled = {2: (10, 0.5, 0.4), 3: (30, 0.7, 0.8), 4: (60, 0.95, 0.9)}
    rows = []
    for b in range(5):
        count, conf, acc = filled.get(b, (0, math.nan, math.nan))
        rows.append({"arch": arch, "dataset": "mnist", "seed": 0, "model": model,
                     "method": method, "bin": b, "lower": b / 5, "upper": (b + 1) / 5,
                     "confidence": conf, "accuracy": acc, "count": count})  # fmt: skip
    return rows


def _reliability(archs: tuple[str, ...] = ("lenet3",)) -> pd.DataFrame:
    return pd.DataFrame(
        [row for arch in archs for model, method, *_ in ROWS
         for row in _bins(model, method, arch)]
    )  # fmt: skip


# --------------------------------------------------------------------------- labels
def test_labels_name_model_and_method():
    assert classification_label("network", "network") == "network"
    assert classification_label("finite-ntk", "map") == "finite NTK · MAP"
    assert classification_label("linearized-nn", "laplace") == "linearized NN · Laplace"
    assert classification_label("finite-ntk", "vi") == "finite NTK · VI"
    assert classification_labels(_main()) == [
        "network", "finite NTK · MAP", "finite NTK · Laplace", "linearized NN · VI"
    ]
    assert transfer_label("linear") == "linear classifier"
    assert transfer_label("map") == "finite NTK · MAP"
    for bad in (("network", "map"), ("finite-ntk", "network"), ("rbf", "map"),
                ("finite-ntk", "ep")):  # fmt: skip
        with pytest.raises(ValueError):
            classification_label(*bad)
    with pytest.raises(ValueError, match="unknown method"):
        transfer_label("svm")


# --------------------------------------------------------------------------- metrics figure
def test_metrics_figure_one_arch_is_a_dot_per_method_with_the_table_values():
    table = _main()
    fig = classification_metrics_figure(table)
    labels = classification_labels(table)
    names = [t.name for t in fig.data]
    assert len(names) == len(set(names)) == 3 * len(labels)
    for label, (_, _, acc, nll, ece) in zip(labels, ROWS, strict=True):
        for name, value in ((label, acc), (f"{label} [NLL]", nll), (f"{label} [ECE]", ece)):
            trace = _trace(fig, name)
            assert list(trace.x) == [label]
            assert list(trace.y) == pytest.approx([value], rel=1e-12)
            assert trace.mode == "markers"
        assert _trace(fig, label).showlegend
        assert not _trace(fig, f"{label} [NLL]").showlegend
    # panels: accuracy, NLL, ECE
    assert [a.text for a in fig.layout.annotations] == ["accuracy ↑", "NLL ↓", "ECE ↓"]
    assert _trace(fig, "finite NTK · MAP [ECE]").xaxis == "x3"


def test_metrics_figure_several_archs_draws_lines_against_depth():
    archs = ("preresnet20", "preresnet56", "preresnet110")
    fig = classification_metrics_figure(_main(archs))
    trace = _trace(fig, "finite NTK · Laplace [NLL]")
    assert list(trace.x) == list(archs)
    assert list(trace.y) == pytest.approx([0.569, 0.669, 0.769], rel=1e-12)
    assert trace.mode == "lines+markers"
    assert list(fig.layout.xaxis.categoryarray) == list(archs)


def test_metrics_figure_methods_filter_and_keep_table_order():
    fig = classification_metrics_figure(_main(), methods=["linearized NN · VI", "network"])
    assert [t.name for t in fig.data if t.showlegend] == ["network", "linearized NN · VI"]


@pytest.mark.parametrize(
    ("table", "kwargs", "match"),
    [
        ([1, 2], {}, "must be a pandas DataFrame"),
        (_main().drop(columns="ece"), {}, r"lacks the columns \['ece'\]"),
        (_main().iloc[:0], {}, "has no rows"),
        (pd.concat([_main(), _main().iloc[:1]]), {}, "repeats"),
        (_main().assign(dataset=["mnist", "mnist", "fashion-mnist", "mnist"]), {}, "dataset"),
        (_main(), {"methods": ["finite NTK · VI"]}, "not in the table"),
        (_main(), {"methods": "network"}, "sequence"),
        (_main().assign(model="rbf"), {}, "network"),
    ],
)
def test_metrics_figure_rejects_bad_input(table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics_figure(table, **kwargs)


# --------------------------------------------------------------------------- reliability
def test_reliability_figure_draws_nonempty_bins_and_counts():
    fig = reliability_figure(_reliability())
    diagonal = _trace(fig, TRACE_DIAGONAL)
    assert list(diagonal.x) == [0.0, 1.0] and list(diagonal.y) == [0.0, 1.0]
    names = [t.name for t in fig.data]
    assert len(names) == len(set(names))
    for label in classification_labels(_main()):
        trace = _trace(fig, label)
        # the three non-empty bins, in bin order; empty ones are not drawn
        assert list(trace.x) == pytest.approx([0.5, 0.7, 0.95])
        assert list(trace.y) == pytest.approx([0.4, 0.8, 0.9])
        counts = _trace(fig, f"{label} [count]")
        assert isinstance(counts, go.Bar)
        assert list(counts.x) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])  # bin centres
        assert list(counts.y) == [0, 0, 10, 30, 60]
        assert counts.yaxis == "y2" and not counts.showlegend
        # marker area grows with the count
        sizes = np.asarray(trace.marker.size)
        assert np.all(np.diff(sizes) > 0)
    assert fig.layout.yaxis2.type == "log"
    assert list(fig.layout.yaxis2.tickvals) == [1, 10]  # decades up to the largest count
    assert 10 ** fig.layout.yaxis2.range[1] > 60  # the tallest bar is not cut off


def test_reliability_figure_picks_one_arch_and_filters_methods():
    archs = ("preresnet20", "preresnet56")
    table = _reliability(archs)
    with pytest.raises(ValueError, match="pass arch"):
        reliability_figure(table)
    with pytest.raises(ValueError, match="not in the reliability table"):
        reliability_figure(table, arch="lenet3")
    fig = reliability_figure(table, arch="preresnet56", methods=["finite NTK · MAP"])
    assert [t.name for t in fig.data] == [
        TRACE_DIAGONAL, "finite NTK · MAP", "finite NTK · MAP [count]"
    ]
    assert "preresnet56" in fig.layout.title.text


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ("bins", "must be a pandas DataFrame"),
        (_reliability().drop(columns="count"), "lacks the columns"),
        (_reliability().iloc[:0], "has no rows"),
        (_reliability().assign(count=-1), "non-negative"),
        (pd.concat([_reliability(), _reliability().iloc[:1]]), "repeats"),
        (_reliability().assign(seed=range(len(_reliability()))), "seed"),
    ],
)
def test_reliability_figure_rejects_bad_input(table, match):
    with pytest.raises(ValueError, match=match):
        reliability_figure(table)


# --------------------------------------------------------------------------- calibration
def test_calibration_summary_matches_numpy_on_raw_probabilities():
    """The bins of the experiment's own binning, summarised, give the mean confidence,
    accuracy and ECE computed directly from the probabilities."""
    g = torch.Generator().manual_seed(3)
    n, classes = 400, 10
    logits = 3.0 * torch.randn(n, classes, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[:150] = logits[:150].argmax(-1)  # some right, most wrong: over-confident
    probs = torch.softmax(logits, -1)
    rows = _reliability_rows(probs, labels, arch="a", model="finite-ntk", method="vi")
    rows += _reliability_rows(
        torch.softmax(0.1 * logits, -1), labels, arch="a", model="network", method="network"
    )
    summary = calibration_summary(pd.DataFrame(rows)).set_index("label")
    for label, p in (("finite NTK · VI", probs), ("network", torch.softmax(0.1 * logits, -1))):
        p = p.numpy()
        confidence = p.max(1)
        correct = (p.argmax(1) == labels.numpy()).astype(float)
        assert summary.loc[label, "points"] == n
        assert summary.loc[label, "mean_confidence"] == pytest.approx(confidence.mean(), 1e-12)
        assert summary.loc[label, "accuracy"] == pytest.approx(correct.mean(), rel=1e-12)
        assert summary.loc[label, "gap"] == pytest.approx(
            confidence.mean() - correct.mean(), abs=1e-12
        )
        # ECE written out: 15 equal-width bins (b/15, (b+1)/15]
        index = np.clip(np.ceil(confidence * ECE_BINS) - 1, 0, ECE_BINS - 1).astype(int)
        ece = sum(
            (index == b).sum() / n * abs(correct[index == b].mean() - confidence[index == b].mean())
            for b in range(ECE_BINS) if (index == b).any()
        )
        assert summary.loc[label, "ece"] == pytest.approx(ece, abs=1e-12)
    assert summary.loc["finite NTK · VI", "gap"] > 0.2  # sharp and mostly wrong
    assert summary.loc["network", "gap"] < 0  # flat probabilities: under-confident


def test_calibration_summary_rejects_bins_without_points():
    with pytest.raises(ValueError, match="no test points"):
        calibration_summary(_reliability().assign(count=0))


# --------------------------------------------------------------------------- Table 1
def _transfer() -> pd.DataFrame:
    rows = [  # deliberately out of order: the figure sorts activations, top-k, all
        ("all", "vi", 0.819, 0.601, 0.067),
        ("top-2", "map", 0.823, 0.631, 0.098),
        ("activations", "linear", 0.626, 1.069, 0.069),
        ("all", "map", 0.822, 0.600, 0.067),
        ("top-1", "map", 0.738, 0.861, 0.103),
    ]
    return pd.DataFrame([
        {"features": f, "method": m, "accuracy": a, "nll": n, "ece": e, "seconds": 1.0,
         "prior_variance": 1.0, "num_params": 100, "dataset": "mnist", "seed": 0}
        for f, m, a, n, e in rows
    ])  # fmt: skip


def test_transfer_figure_bars_per_feature_set():
    fig = transfer_figure(_transfer())
    assert list(fig.layout.xaxis.categoryarray) == ["activations", "top 1", "top 2", "all"]
    mapped = _trace(fig, "finite NTK · MAP")
    assert list(mapped.x) == ["top 1", "top 2", "all"]
    assert list(mapped.y) == pytest.approx([0.738, 0.823, 0.822])
    assert list(_trace(fig, "finite NTK · MAP [NLL]").y) == pytest.approx([0.861, 0.631, 0.600])
    assert list(_trace(fig, "linear classifier [ECE]").y) == pytest.approx([0.069])
    assert list(_trace(fig, "finite NTK · VI").x) == ["all"]
    assert all(isinstance(t, go.Bar) for t in fig.data)
    shown = transfer_figure(_transfer(), methods=["linear classifier"])
    assert {t.name for t in shown.data} == {
        "linear classifier", "linear classifier [NLL]", "linear classifier [ECE]"
    }


@pytest.mark.parametrize(
    ("table", "kwargs", "match"),
    [
        (None, {}, "must be a pandas DataFrame"),
        (_transfer().drop(columns="features"), {}, "lacks the columns"),
        (_transfer().assign(features="middle"), {}, "unknown feature set"),
        (_transfer().assign(method="svm"), {}, "unknown method"),
        (pd.concat([_transfer(), _transfer().iloc[:1]]), {}, "repeats"),
        (_transfer(), {"methods": ["finite NTK · Laplace"]}, "not in the table"),
    ],
)
def test_transfer_figure_rejects_bad_input(table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        transfer_figure(table, **kwargs)


# --------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_figures_draw_a_real_tiny_run(ntkcore_cache, monkeypatch):
    from ntkcore.experiments.classification import classification

    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tables = classification(
            methods=("network", "map", "laplace"), means=("zero",), n_train=40, n_test=80
        )
    finally:
        torch.set_num_threads(threads)
    main, reliability = tables.main, tables["reliability"]
    fig = classification_metrics_figure(main)
    for row in main.itertuples():
        label = classification_label(row.model, row.method)
        assert list(_trace(fig, label).y) == pytest.approx([row.accuracy], rel=1e-12)
    diagram = reliability_figure(reliability)
    summary = calibration_summary(reliability).set_index("label")
    for row in main.itertuples():
        label = classification_label(row.model, row.method)
        assert sum(_trace(diagram, f"{label} [count]").y) == 80
        assert summary.loc[label, "accuracy"] == pytest.approx(row.accuracy, abs=1e-12)
        assert summary.loc[label, "ece"] == pytest.approx(row.ece, abs=1e-12)
