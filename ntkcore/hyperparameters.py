"""Type-II maximum likelihood for the noise and prior variances of the finite-NTK GP."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ntkcore.distributed.reduction import DataReduction
from ntkcore.distributed.shards import prepare_shard
from ntkcore.linearization import Linearization
from ntkcore.posterior import (
    MEANS,
    _validate_scalar,
    _validate_targets,
    as_linearization,
)
from ntkcore.strategies.dense import spectrum_over_shards

__all__ = ["HyperparameterFit", "fit_hyperparameters"]


@dataclass(frozen=True)
class HyperparameterFit:
    """Result of :func:`fit_hyperparameters`.

    Attributes
    ----------
    noise_variance, prior_variance : float
        The maximizers σ², s².
    log_marginal_likelihood : float
        At the maximizer, on the points used.
    num_points : int
        Data points used (a seeded random subset when n > ``max_points``).
    seconds : float
    """

    noise_variance: float
    prior_variance: float
    log_marginal_likelihood: float
    num_points: int
    seconds: float


def fit_hyperparameters(
    model_or_lin: nn.Module | Linearization,
    x: Tensor,
    y: Tensor,
    *,
    mean: str = "network",
    noise_variance: float | None = None,
    prior_variance: float = 1.0,
    min_noise_variance: float = 1e-6,
    max_points: int = 2000,
    seed: int = 0,
    process_group: object = None,
) -> HyperparameterFit:
    r"""Maximize the exact log marginal likelihood over σ² and s².

    log p(y) = −½ rᵀ(s² J Jᵀ + σ² I)⁻¹ r − ½ log|s² J Jᵀ + σ² I| − (N/2) log 2π is, for
    a fixed Jacobian, a closed-form function of (σ², s²) once the smaller Gram matrix is
    eigendecomposed (:class:`ntkcore.spectral.SpectralGram`): one eigendecomposition, then
    L-BFGS on (log σ², log s²) with exact gradients. Problems with more than
    ``max_points`` points are fit on a seeded random subset of that size.

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
    x, y : Tensor
        Target data, as for :func:`ntkcore.adapt`.
    mean : {"network", "zero"}
    noise_variance, prior_variance : float, optional
        Starting point; the default noise start is 10% of the residual variance.
    min_noise_variance : float
        Lower bound on σ² (σ² = min + exp(a)).
    max_points : int
        Subset size bound that keeps the eigendecomposition at O(min(N, p)³).
    seed : int
        Seed of the subset.
    process_group : torch.distributed.ProcessGroup, optional
        ``x``, ``y`` are this rank's shard of data split across the group (collective;
        :mod:`ntkcore.distributed`): the spectrum is that of all ranks' points (Jacobian
        rows all-gathered when n·o <= p, JᵀJ all-reduced otherwise), the random subset is
        the one a single process draws from the concatenated shards (each rank keeps
        the drawn indices that fall in its range), and every rank returns the same fit.
    """
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an int >= 2, got {max_points!r}")
    floor = _validate_scalar("min_noise_variance", min_noise_variance)
    s2_init = _validate_scalar("prior_variance", prior_variance)
    t0 = time.perf_counter()
    lin = as_linearization(model_or_lin)
    reduction = DataReduction(process_group)
    # a rank may hold no points: it learns o from the others (ntkcore.distributed.shards)
    x = prepare_shard(lin, x, reduction, "fit_hyperparameters' input validation")
    error: Exception | None = None
    try:
        y = _validate_targets(lin, x, y)
    except Exception as err:  # every rank must learn of it (no-op on one process)
        error = err
    reduction.check(error, "fit_hyperparameters' input validation")
    sizes = [s[0] for s in reduction.gather_ints([x.shape[0]], "shard sizes")]
    n, offset = sum(sizes), sum(sizes[: reduction.rank])
    if n > max_points:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
        if reduction.distributed:  # this rank's part of the same subset
            mine = (idx >= offset) & (idx < offset + x.shape[0])
            idx = idx[mine] - offset
        idx = idx.to(x.device)
        x, y = x[idx], y[idx]
    # a rank with no points, or none of whose points were drawn: empty rows (prepare_batch)
    resid = (y - lin(x)) if mean == "network" else y
    r = resid.reshape(-1).to(torch.float64)
    jac = lin.jacobian(x).reshape(-1, lin.num_params).to(torch.float64)
    spectral, _, _ = spectrum_over_shards(jac, r, reduction)
    if noise_variance is None and not reduction.distributed:
        sigma2_init = max(0.1 * float(r.var()) if r.numel() > 1 else 1.0, 10 * floor)
    elif noise_variance is None:
        r_sum = reduction.sum_float(float(r.sum()), "Σ r")
        r_sq = reduction.sum_float(float(r @ r), "‖r‖²")
        count = spectral.num_observations
        r_var = (r_sq - r_sum**2 / count) / (count - 1) if count > 1 else 1.0
        sigma2_init = max(0.1 * r_var if count > 1 else 1.0, 10 * floor)
    else:
        sigma2_init = _validate_scalar("noise_variance", noise_variance)
    raw_noise = torch.tensor(math.log(max(sigma2_init - floor, floor)), dtype=torch.float64)
    raw_prior = torch.tensor(math.log(s2_init), dtype=torch.float64)
    raw = torch.stack([raw_noise, raw_prior]).requires_grad_(True)
    opt = torch.optim.LBFGS([raw], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        opt.zero_grad()
        sigma2 = floor + raw[0].clamp(-40, 40).exp()
        s2 = raw[1].clamp(-40, 40).exp()
        loss = -spectral.log_marginal_likelihood(sigma2, s2) / spectral.num_observations
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        sigma2 = float(floor + raw[0].clamp(-40, 40).exp())
        s2 = float(raw[1].clamp(-40, 40).exp())
        lml = float(
            spectral.log_marginal_likelihood(
                torch.tensor(sigma2, dtype=torch.float64), torch.tensor(s2, dtype=torch.float64)
            )
        )
    return HyperparameterFit(
        noise_variance=sigma2,
        prior_variance=s2,
        log_marginal_likelihood=lml,
        num_points=min(n, max_points),
        seconds=time.perf_counter() - t0,
    )
