"""Test metrics for predictive distributions: error, log-likelihood, calibration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "categorical_nll",
    "coverage",
    "ece",
    "gaussian_nll",
    "mse",
    "reliability_bins",
]


def _pair(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    pred, y = torch.as_tensor(pred), torch.as_tensor(y)
    if y.dim() == pred.dim() - 1 and pred.shape[-1] == 1:
        y = y.unsqueeze(-1)
    if pred.shape != y.shape:
        raise ValueError(
            f"predictions of shape {tuple(pred.shape)} and targets of shape "
            f"{tuple(y.shape)} do not match"
        )
    if pred.numel() == 0:
        raise ValueError("no predictions to score")
    return pred, y.to(pred)


def mse(mean: Tensor, y: Tensor) -> float:
    """Mean squared error between predictive means (m, o) and targets (m,) or (m, o)."""
    mean, y = _pair(mean, y)
    return float((mean - y).square().mean())


def gaussian_nll(mean: Tensor, variance: Tensor, y: Tensor, noise_variance: float = 0.0) -> float:
    r"""Average negative log density of y under N(mean, variance + noise_variance).

    With the latent variance of :class:`ntkcore.Prediction` pass the observation noise σ²
    to score the predictive distribution of y (Eq. 3 plus noise).
    """
    mean, y = _pair(mean, y)
    variance = torch.as_tensor(variance).to(mean)
    if variance.shape != mean.shape:
        raise ValueError(
            f"variance shape {tuple(variance.shape)} != mean shape {tuple(mean.shape)}"
        )
    total = variance + float(noise_variance)
    if not bool((total > 0).all()):
        raise ValueError("predictive variance must be positive (add noise_variance)")
    nll = 0.5 * ((y - mean).square() / total + total.log() + math.log(2 * math.pi))
    return float(nll.mean())


def coverage(
    mean: Tensor, variance: Tensor, y: Tensor, num_std: float = 2.0, noise_variance: float = 0.0
) -> float:
    """Fraction of targets inside mean ± num_std·sqrt(variance + noise_variance)."""
    mean, y = _pair(mean, y)
    sd = (torch.as_tensor(variance).to(mean) + float(noise_variance)).clamp_min(0).sqrt()
    return float(((y - mean).abs() <= num_std * sd).to(torch.float64).mean())


# ---------------------------------------------------------------------------- classification
def _probabilities(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels)
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (m, classes >= 2), got {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(
            f"labels must have shape ({probs.shape[0]},) to match probs, got "
            f"{tuple(labels.shape)}"
        )
    if probs.shape[0] == 0:
        raise ValueError("no predictions to score")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    probs = probs.to(torch.float64)
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("probs must be finite and non-negative")
    if not torch.allclose(probs.sum(-1), torch.ones(probs.shape[0], dtype=torch.float64),
                          atol=1e-4):
        raise ValueError("each row of probs must sum to 1")
    return probs, labels.long().to(probs.device)


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of points whose most probable class is the label (ties: the lowest index)."""
    probs, labels = _probabilities(probs, labels)
    return float((probs.argmax(-1) == labels).to(torch.float64).mean())


def categorical_nll(probs: Tensor, labels: Tensor, *, floor: float = 1e-12) -> float:
    """Average −log p(label) of predictive class probabilities (m, classes).

    Probabilities are floored at ``floor`` so that one confident mistake gives a large but
    finite score.
    """
    probs, labels = _probabilities(probs, labels)
    picked = probs.gather(1, labels.unsqueeze(-1)).squeeze(-1).clamp_min(floor)
    return float(-picked.log().mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins of a reliability diagram (Guo et al., 2017).

    Attributes
    ----------
    lower, upper : Tensor
        Bin edges, shape (bins,): bin b holds confidences in (lower_b, upper_b] (the first
        also 0).
    confidence : Tensor
        Mean confidence (top-class probability) of the points in each bin; NaN if empty.
    accuracy : Tensor
        Fraction of those points classified correctly; NaN if empty.
    count : Tensor
        Points per bin (int64).
    """

    lower: Tensor
    upper: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor

    @property
    def ece(self) -> float:
        """Σ_b (count_b / m) |accuracy_b − confidence_b| over the non-empty bins."""
        full = self.count > 0
        weights = self.count[full].to(torch.float64) / self.count.sum()
        return float((weights * (self.accuracy[full] - self.confidence[full]).abs()).sum())


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> ReliabilityBins:
    """Bin predictions by confidence max_c p_c into ``bins`` equal-width bins of [0, 1].

    Bin b covers (b/B, (b+1)/B]; a confidence of exactly 0 falls in the first bin.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    probs, labels = _probabilities(probs, labels)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    # bin index: ceil(conf·B) − 1, clamped to [0, B − 1]
    index = (torch.ceil(confidence.cpu() * bins) - 1).clamp(0, bins - 1).long()
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence.cpu())
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct.cpu())
    denom = count.to(torch.float64)
    nan = torch.full((bins,), math.nan, dtype=torch.float64)
    return ReliabilityBins(
        lower=edges[:-1],
        upper=edges[1:],
        confidence=torch.where(count > 0, conf_sum / denom.clamp_min(1), nan),
        accuracy=torch.where(count > 0, acc_sum / denom.clamp_min(1), nan),
        count=count,
    )


def ece(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins (Guo et al.,
    2017; the paper's Figure 4 uses it): Σ_b (n_b/m) |acc_b − conf_b|."""
    return reliability_bins(probs, labels, bins).ece
