"""ntkcore.metrics against scipy/numpy references."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ntkcore import metrics


def test_mse_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    m, y = rng.normal(size=(20, 1)), rng.normal(size=20)
    assert metrics.mse(torch.tensor(m), torch.tensor(y)) == pytest.approx(
        np.mean((m[:, 0] - y) ** 2), rel=1e-12
    )


def test_gaussian_nll_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    m, v, y = rng.normal(size=(30, 2)), rng.uniform(0.1, 2, size=(30, 2)), rng.normal(size=(30, 2))
    ref = -norm.logpdf(y, loc=m, scale=np.sqrt(v + 0.3)).mean()
    got = metrics.gaussian_nll(torch.tensor(m), torch.tensor(v), torch.tensor(y), 0.3)
    assert got == pytest.approx(ref, rel=1e-12)


def test_coverage_counts_inside_band() -> None:
    mean = torch.zeros(4, 1)
    var = torch.ones(4, 1)
    y = torch.tensor([0.0, 1.9, -2.1, 5.0])
    assert metrics.coverage(mean, var, y) == pytest.approx(0.5)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="do not match"):
        metrics.mse(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="positive"):
        metrics.gaussian_nll(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1))
