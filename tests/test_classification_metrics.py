"""Classification metrics (accuracy, NLL, ECE, reliability bins) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcore import metrics

# Five points, three classes. Confidences (max prob) 0.5, 0.9, 0.34, 0.6, 0.95; predicted
# classes 0, 1, 2 (0.34 beats 0.33 twice), 1, 0; labels 0, 1, 0, 2, 0.
PROBS = torch.tensor(
    [
        [0.50, 0.30, 0.20],
        [0.05, 0.90, 0.05],
        [0.33, 0.33, 0.34],
        [0.10, 0.60, 0.30],
        [0.95, 0.03, 0.02],
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 1, 0, 2, 0])


def test_accuracy_and_nll_by_hand():
    assert metrics.accuracy(PROBS, LABELS) == pytest.approx(3 / 5)
    expected = -(math.log(0.5) + math.log(0.9) + math.log(0.33) + math.log(0.3)
                 + math.log(0.95)) / 5
    assert metrics.categorical_nll(PROBS, LABELS) == pytest.approx(expected, rel=1e-12)


def test_reliability_bins_and_ece_by_hand():
    """With 5 bins of width 0.2: (0.2, 0.4] holds 0.34 (wrong); (0.4, 0.6] holds 0.5 (right)
    and 0.6 (wrong); (0.8, 1.0] holds 0.9 and 0.95 (both right)."""
    bins = metrics.reliability_bins(PROBS, LABELS, bins=5)
    assert bins.count.tolist() == [0, 1, 2, 0, 2]
    assert bins.confidence[1].item() == pytest.approx(0.34)
    assert bins.confidence[2].item() == pytest.approx(0.55)
    assert bins.confidence[4].item() == pytest.approx(0.925)
    assert bins.accuracy[1:3].tolist() == [0.0, 0.5] and bins.accuracy[4].item() == 1.0
    assert math.isnan(bins.confidence[0].item()) and math.isnan(bins.accuracy[3].item())
    ece = (1 * 0.34 + 2 * abs(0.5 - 0.55) + 2 * abs(1.0 - 0.925)) / 5
    assert bins.ece == pytest.approx(ece, rel=1e-12)
    assert metrics.ece(PROBS, LABELS, bins=5) == pytest.approx(ece, rel=1e-12)
    torch.testing.assert_close(bins.lower, torch.linspace(0, 0.8, 5, dtype=torch.float64))


def test_ece_with_15_bins_matches_a_numpy_loop():
    """Guo et al.'s definition, written as a plain loop over the 15 bins (right-closed)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 10, size=400)
    conf, pred = probs.max(-1), probs.argmax(-1)
    edges = np.linspace(0, 1, 16)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean()
                                         - conf[inside].mean())
    got = metrics.ece(torch.tensor(probs), torch.tensor(labels))
    assert got == pytest.approx(total, rel=1e-10)


def test_edge_bins_and_bad_input():
    # a confidence of exactly 1 is in the last bin, 1/B exactly in the first
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    bins = metrics.reliability_bins(probs, torch.tensor([0, 1]), bins=2)
    assert bins.count.tolist() == [1, 1]
    for call, match in [
        (lambda: metrics.ece(PROBS, LABELS[:3]), "labels must have shape"),
        (lambda: metrics.ece(PROBS[:, :1], LABELS), "classes >= 2"),
        (lambda: metrics.ece(PROBS * 2, LABELS), "sum to 1"),
        (lambda: metrics.ece(PROBS, LABELS + 3), "lie in"),
        (lambda: metrics.ece(PROBS, LABELS.double()), "integer"),
        (lambda: metrics.ece(PROBS, LABELS, bins=0), "bins"),
        (lambda: metrics.accuracy(PROBS[:0], LABELS[:0]), "no predictions"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
