"""The transferred RBF Gaussian process (the yellow baseline of the paper's Figure 6)."""

from __future__ import annotations

from typing import Any

import gpytorch
import torch
from torch import Tensor

from ntkcore.experiments.methods.base import Method, register
from ntkcore.experiments.methods.source import Source

__all__ = ["RBFGP"]

_F64 = torch.float64
#: Above this many points GPyTorch would switch from Cholesky to CG; our problems are small.
_CHOLESKY_LIMIT = 100_000


class _ExactRBF(gpytorch.models.ExactGP):
    """Constant mean, scaled RBF kernel (ARD over input dimensions or one lengthscale)."""

    def __init__(self, x: Tensor, y: Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 ard_dims: int | None) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.RBFKernel(ard_num_dims=ard_dims)
        )

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _likelihood(noise_floor: float) -> gpytorch.likelihoods.GaussianLikelihood:
    return gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(noise_floor)
    )


@register
class RBFGP(Method):
    r"""Exact GP with an RBF kernel whose hyperparameters are fit on the source task.

    k(x, x') = c · exp(−‖(x − x') / ℓ‖² / 2), constant mean m, Gaussian noise σ² (GPyTorch
    ``ExactGP``, ``ScaleKernel(RBFKernel)``). :meth:`prepare` maximizes the exact log
    marginal likelihood over (m, c, ℓ, σ²) on the source data (at most
    ``max_source_points``, a seeded subset; L-BFGS in float64 from the median-distance
    lengthscale, c = var(y), σ² = var(y)/10); :meth:`fit` conditions a GP with these
    hyperparameters, unchanged, on the target's context points (the paper's "RBF GPs fit on
    the source task with the hyper-parameters shared across tasks"). :meth:`predict` returns
    the predictive of **y** (latent variance + σ²). Inputs are flattened (images become
    vectors); one output only.

    Parameters
    ----------
    ard : bool, optional
        One lengthscale per input dimension; default: when the input has at most 16
        dimensions (a shared lengthscale for images).
    max_source_points : int
    iterations : int
        L-BFGS iterations of the source fit.
    noise_floor : float
        Lower bound of σ².
    """

    name = "rbf-gp"
    rank = 50
    kind = "bayesian"

    def __init__(self, *, ard: bool | None = None, max_source_points: int = 500,
                 iterations: int = 100, noise_floor: float = 1e-6) -> None:
        super().__init__()
        if isinstance(max_source_points, bool) or not isinstance(max_source_points, int) or (
            max_source_points < 2
        ):
            raise ValueError(f"max_source_points must be an int >= 2, got {max_source_points!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        if not float(noise_floor) > 0:
            raise ValueError(f"noise_floor must be positive, got {noise_floor!r}")
        self.ard = ard
        self.max_source_points = max_source_points
        self.iterations = iterations
        self.noise_floor = float(noise_floor)
        self._state: dict[str, Tensor] | None = None
        self._values: dict[str, Any] = {}
        self._ard_dims: int | None = None
        self._gp: _ExactRBF | None = None

    # ------------------------------------------------------------------ source side
    def _prepare(self, source: Source) -> None:
        if source.task.output_dim != 1:
            raise ValueError(f"rbf-gp needs one output, the task has {source.task.output_dim}")
        x, y = source.task.source
        x = x.reshape(x.shape[0], -1).to(source.device, _F64)
        y = y.reshape(-1).to(source.device, _F64)
        if x.shape[0] > self.max_source_points:
            g = torch.Generator().manual_seed(source.seed)
            keep = torch.randperm(x.shape[0], generator=g)[: self.max_source_points]
            x, y = x[keep.to(x.device)], y[keep.to(y.device)]
        d = x.shape[1]
        ard = d <= 16 if self.ard is None else bool(self.ard)
        self._ard_dims = d if ard else None
        likelihood = _likelihood(self.noise_floor).to(source.device, _F64)
        gp = _ExactRBF(x, y, likelihood, self._ard_dims).to(source.device, _F64)
        # Start: median pairwise distance (per dimension with ARD), data scale and 10% noise.
        with torch.no_grad():
            probe = x[:256]
            if ard:
                ell = (probe[:, None, :] - probe[None, :, :]).abs().flatten(0, 1).median(0).values
            else:
                ell = torch.cdist(probe, probe).flatten().median().reshape(1)
            var_y = float(y.var()) if y.numel() > 1 else 1.0
            gp.covar_module.base_kernel.lengthscale = ell.clamp_min(1e-3).reshape(1, -1)
            gp.covar_module.outputscale = max(var_y, 1e-6)
            gp.likelihood.noise = max(0.1 * var_y, 10 * self.noise_floor)
            gp.mean_module.constant.fill_(float(y.mean()))
        gp.train()
        likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, gp)
        opt = torch.optim.LBFGS(gp.parameters(), lr=1.0, max_iter=self.iterations,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = -mll(gp(x), y)
            loss.backward()
            return loss

        with gpytorch.settings.max_cholesky_size(_CHOLESKY_LIMIT):
            opt.step(closure)
        self._state = {k: v.detach().clone() for k, v in gp.state_dict().items()
                       if not k.startswith("train_")}
        ell = gp.covar_module.base_kernel.lengthscale.detach().reshape(-1).tolist()
        self._values = {
            "lengthscale": ell[0] if len(ell) == 1 else ell,
            "outputscale": float(gp.covar_module.outputscale.detach()),
            "noise_variance": float(gp.likelihood.noise.detach()),
            "prior_variance": float(gp.covar_module.outputscale.detach()),
            "constant_mean": float(gp.mean_module.constant.detach()),
            "source_points": int(x.shape[0]),
        }

    # ------------------------------------------------------------------ target side
    def _reset(self) -> None:
        self._gp = None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hyper": "fixed", "chosen_by": "source marginal likelihood"}
        out.update(self._values)
        return out

    def _build(self, x: Tensor, y: Tensor) -> _ExactRBF:
        likelihood = _likelihood(self.noise_floor).to(x.device, _F64)
        gp = _ExactRBF(x, y, likelihood, self._ard_dims).to(x.device, _F64)
        gp.load_state_dict(self._state, strict=False)
        gp.eval()
        likelihood.eval()
        return gp

    def _fit(self, x: Tensor, y: Tensor) -> None:
        self._gp = self._build(x.reshape(x.shape[0], -1).to(_F64), y.reshape(-1).to(_F64))

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xf = x.reshape(x.shape[0], -1).to(_F64)
        with gpytorch.settings.max_cholesky_size(_CHOLESKY_LIMIT), \
                gpytorch.settings.fast_pred_var(False), \
                gpytorch.settings.skip_posterior_variances(False):
            pred = self._gp.likelihood(self._gp(xf))
            mean, var = pred.mean, pred.variance
        dtype = self.source.dtype
        return mean.reshape(-1, 1).to(dtype), var.reshape(-1, 1).to(dtype)
