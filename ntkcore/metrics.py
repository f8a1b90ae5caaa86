"""Test metrics for predictive distributions: error, log-likelihood, calibration."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["coverage", "gaussian_nll", "mse"]


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
