"""Tests of ``ntkcore.plots.similarity``: figure structure, trace names, data placement and
input validation (no network is trained: the inputs are hand-made tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from ntkcore.experiments.similarity import ClassKernel
from ntkcore.plots import (
    TRACE_KERNEL,
    TRACE_OTHER_CLASSES,
    TRACE_SAME_CLASS,
    class_kernel_figure,
    ntk_spectra_figure,
    similarity_trace_name,
    similarity_violin_figure,
)


def _trace(fig: go.Figure, name: str):
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {len(matches)}"
    return matches[0]


@pytest.fixture
def similarities() -> pd.DataFrame:
    """The shape of ``jacobian_similarity(...)["main"]``: 3 pairs × 2 measures × 4 seeds."""
    rng = np.random.default_rng(0)
    rows = []
    centre = {
        ("kernel", "mnist1-mnist2"): 0.99,
        ("kernel", "mnist1-fashion"): 0.9,
        ("kernel", "mnist2-fashion"): 0.9,
        ("parameter", "mnist1-mnist2"): 0.85,
        ("parameter", "mnist1-fashion"): 0.35,
        ("parameter", "mnist2-fashion"): 0.34,
    }
    for seed in range(4):
        for (measure, pair), c in centre.items():
            a, b = pair.split("-")
            rows.append({"pair": pair, "dataset_a": a, "dataset_b": b, "seed_a": seed,
                         "seed_b": seed, "measure": measure,
                         "similarity": c + 0.005 * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_violins_one_per_pair_and_measure(similarities: pd.DataFrame):
    fig = similarity_violin_figure(similarities)
    names = [t.name for t in fig.data]
    pairs = ["mnist1-mnist2", "mnist1-fashion", "mnist2-fashion"]
    assert names == [similarity_trace_name(p, m) for m in ("kernel", "parameter") for p in pairs]
    for trace in fig.data:
        assert isinstance(trace, go.Violin)
        assert trace.spanmode == "hard" and trace.box.visible and trace.points == "all"
        assert trace.meanline.visible
    # Each violin holds exactly its rows, in the panel of its measure.
    violin = _trace(fig, similarity_trace_name("mnist1-fashion", "parameter"))
    expected = similarities.query("pair == 'mnist1-fashion' and measure == 'parameter'")
    np.testing.assert_array_equal(np.asarray(violin.y), expected["similarity"].to_numpy())
    np.testing.assert_array_equal(np.asarray(violin.customdata)[:, 0], expected["seed_a"])
    assert set(violin.x) == {"mnist1-fashion"}
    assert violin.xaxis == "x2" and _trace(fig, "mnist1-mnist2 · kernel").xaxis == "x"
    # Paper colours: MNIST1-MNIST2 blue, MNIST1-Fashion orange; equal per pair across panels.
    assert violin.line.color == _trace(fig, "mnist1-fashion · kernel").line.color == "#ff7f0e"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("kernel") and titles[1].startswith("parameter")
    assert tuple(fig.layout.yaxis.range) == (0.0, 1.02)


def test_violins_subset_and_fitted_axes(similarities: pd.DataFrame):
    fig = similarity_violin_figure(
        similarities, measures=["parameter"], pairs=["mnist2-fashion"], full_range=False
    )
    assert [t.name for t in fig.data] == ["mnist2-fashion · parameter"]
    assert fig.layout.yaxis.range is None
    assert len(fig.layout.annotations) == 1


def test_violins_reject_bad_input(similarities: pd.DataFrame):
    with pytest.raises(ValueError, match="DataFrame"):
        similarity_violin_figure(similarities.to_dict())
    with pytest.raises(ValueError, match="similarity"):
        similarity_violin_figure(similarities.drop(columns="similarity"))
    with pytest.raises(ValueError, match="no rows"):
        similarity_violin_figure(similarities.iloc[:0])
    bad = similarities.copy()
    bad.loc[3, "similarity"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        similarity_violin_figure(bad)
    bad.loc[3, "similarity"] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        similarity_violin_figure(bad)
    with pytest.raises(ValueError, match="measures"):
        similarity_violin_figure(similarities, measures=["cosine"])
    with pytest.raises(ValueError, match="pairs"):
        similarity_violin_figure(similarities, pairs=[])


@pytest.fixture
def spectra() -> pd.DataFrame:
    frames = []
    for model, dataset, scale in [("mnist1-s0", "mnist1", 3.0), ("mnist1-s1", "mnist1", 2.0),
                                  ("fashion-s0", "fashion", 5.0)]:  # fmt: skip
        eig = scale * 0.5 ** np.arange(6)
        eig[-1] = 0.0  # clamped rounding noise
        frames.append(pd.DataFrame({"model": model, "dataset": dataset, "seed": 0,
                                    "index": np.arange(6), "eigenvalue": eig}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_spectra_one_line_per_model_grouped_by_dataset(spectra: pd.DataFrame):
    fig = ntk_spectra_figure(spectra)
    assert [t.name for t in fig.data] == ["mnist1-s0", "mnist1-s1", "fashion-s0"]
    line = _trace(fig, "mnist1-s1")
    # 1-based index, largest first, the zero eigenvalue left out (a log axis cannot draw it).
    np.testing.assert_array_equal(line.x, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(line.y, 2.0 * 0.5 ** np.arange(5))
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.type == "linear"
    assert [t.legendgroup for t in fig.data] == ["mnist1", "mnist1", "fashion"]
    # One group title per training set; the same colour within a set.
    assert [t.legendgrouptitle.text for t in fig.data] == [
        "trained on mnist1", None, "trained on fashion"
    ]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color


def test_spectra_relative_log_x_and_subset(spectra: pd.DataFrame):
    fig = ntk_spectra_figure(spectra, models=["fashion-s0"], relative=True, log_x=True)
    (line,) = fig.data
    np.testing.assert_allclose(line.y, 0.5 ** np.arange(5))
    assert fig.layout.xaxis.type == "log"


def test_spectra_reject_bad_input(spectra: pd.DataFrame):
    with pytest.raises(ValueError, match="eigenvalue"):
        ntk_spectra_figure(spectra.drop(columns="eigenvalue"))
    bad = spectra.copy()
    bad.loc[0, "eigenvalue"] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        ntk_spectra_figure(bad)
    bad.loc[0, "eigenvalue"] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        ntk_spectra_figure(bad)
    with pytest.raises(ValueError, match="models"):
        ntk_spectra_figure(spectra, models=["mnist2-s0"])


@pytest.fixture
def kernel() -> ClassKernel:
    """Classes 0 (2 points), 1 (3 points), 3 (1 point), kernel values chosen by hand."""
    labels = np.array([0, 0, 1, 1, 1, 3])
    gram = np.full((6, 6), 0.2)
    gram[:2, :2] = 0.9
    gram[2:5, 2:5] = 0.7
    gram[2:5, 5] = gram[5, 2:5] = 0.4
    np.fill_diagonal(gram, 1.0)
    return ClassKernel(gram, labels, np.arange(6), ("zero", "one", "two", "three"))


def test_class_kernel_heatmap_boundaries_and_class_means(kernel: ClassKernel):
    fig = class_kernel_figure(kernel)
    assert [t.name for t in fig.data] == [TRACE_KERNEL, TRACE_SAME_CLASS, TRACE_OTHER_CLASSES]
    heatmap = _trace(fig, TRACE_KERNEL)
    np.testing.assert_array_equal(heatmap.z, kernel.gram)
    # Boundaries between classes at 1.5 and 4.5, vertical and horizontal.
    xs = sorted(s.x0 for s in fig.layout.shapes if s.x0 == s.x1)
    ys = sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1)
    assert xs == ys == [1.5, 4.5]
    # Class names at the blocks' centres; row 0 on top.
    assert list(fig.layout.xaxis.tickvals) == [0.5, 3.0, 5.0]
    assert list(fig.layout.xaxis.ticktext) == ["zero", "one", "three"]
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]
    # Same class: off-diagonal mean of the block (a single point: its diagonal value).
    same = _trace(fig, TRACE_SAME_CLASS)
    assert list(same.x) == ["zero", "one", "three"]
    np.testing.assert_allclose(same.y, [0.9, 0.7, 1.0])
    # Other classes: class 1's rows over the columns of classes 0 and 3: (6 × 0.2 + 3 × 0.4) / 9.
    other = _trace(fig, TRACE_OTHER_CLASSES)
    np.testing.assert_allclose(other.y, [0.2, (6 * 0.2 + 3 * 0.4) / 9, (2 * 0.2 + 3 * 0.4) / 5])


def test_class_kernel_names_default_to_labels(kernel: ClassKernel):
    unnamed = ClassKernel(kernel.gram, kernel.labels, kernel.order, None)
    assert list(class_kernel_figure(unnamed).layout.xaxis.ticktext) == ["0", "1", "3"]


def test_class_kernel_rejects_bad_input(kernel: ClassKernel):
    def variant(**changes) -> ClassKernel:
        fields = {"gram": kernel.gram, "labels": kernel.labels, "order": kernel.order,
                  "class_names": kernel.class_names, **changes}  # fmt: skip
        return ClassKernel(**fields)

    with pytest.raises(ValueError, match="square"):
        class_kernel_figure(variant(gram=kernel.gram[:, :5]))
    with pytest.raises(ValueError, match="non-finite"):
        class_kernel_figure(variant(gram=np.where(np.eye(6) > 0, np.nan, kernel.gram)))
    with pytest.raises(ValueError, match="sorted"):
        class_kernel_figure(variant(labels=kernel.labels[::-1].copy()))
    with pytest.raises(ValueError, match="integer labels"):
        class_kernel_figure(variant(labels=kernel.labels[:5]))
    with pytest.raises(ValueError, match="class names"):
        class_kernel_figure(variant(class_names=("a", "b")))
