"""The paper's method: GP inference with the trained network's Jacobian as features.

``ntk`` is the finite NTK (prior mean 0) and ``ntk-linearized`` the linearized network
(prior mean f(x; θ)), both :func:`ntkcore.adapt` (Eq. 1–3, Algorithm 1).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ntkcore.experiments.methods.base import Method, register
from ntkcore.experiments.methods.source import Source
from ntkcore.hyperparameters import fit_hyperparameters
from ntkcore.linearization import Linearization
from ntkcore.posterior import Posterior, adapt

__all__ = ["NTK", "NTKLinearized"]

HYPER_MODES = ("fixed", "marginal-likelihood")


@register
class NTK(Method):
    r"""Finite-NTK GP adaptation, ``adapt(mean="zero")`` (Algorithm 1, Eq. 3).

    y = J(x) w + ε with w ~ N(0, s² I), ε ~ N(0, σ²), J the Jacobian of the source network
    at its trained weights. :meth:`predict` returns the predictive of **y**: the latent
    posterior variance of :meth:`ntkcore.Posterior.predict` plus σ².

    Parameters
    ----------
    hyper : {"fixed", "marginal-likelihood"}
        ``fixed``: one (σ², s²) for every target task — ``noise_variance`` and
        ``prior_variance`` when both are given, otherwise the maximizers of the exact log
        marginal likelihood of the zero-mean finite NTK on the *source* task
        (:func:`ntkcore.fit_hyperparameters` on at most ``max_source_points`` source
        points), computed once in :meth:`prepare` and transferred unchanged — the
        hyperparameter transfer of the paper's RBF baseline, applied to the NTK. Both
        ``ntk`` and ``ntk-linearized`` use the zero-mean fit: with the network as prior
        mean, the source residuals are ~0 and the source fit would send s² to 0.
        ``marginal-likelihood``: (σ², s²) maximize the log marginal likelihood of each
        target's context points (fit in :meth:`fit`).
    noise_variance, prior_variance : float, optional
        σ² and s² for ``hyper="fixed"`` (both or neither).
    max_source_points : int
        Source points used by the source-side fit (a seeded subset beyond that).
    strategy : str
        Passed to :func:`ntkcore.adapt` (``auto`` picks dense or matrix-free).
    """

    name = "ntk"
    rank = 10
    kind = "bayesian"
    mean = "zero"

    def __init__(
        self,
        *,
        hyper: str = "fixed",
        noise_variance: float | None = None,
        prior_variance: float | None = None,
        max_source_points: int = 256,
        strategy: str = "auto",
    ) -> None:
        super().__init__()
        if hyper not in HYPER_MODES:
            raise ValueError(f"hyper must be one of {HYPER_MODES}, got {hyper!r}")
        if (noise_variance is None) != (prior_variance is None):
            raise ValueError("give both noise_variance and prior_variance, or neither")
        if noise_variance is not None and hyper != "fixed":
            raise ValueError("noise_variance/prior_variance are for hyper='fixed'")
        for label, value in (("noise_variance", noise_variance),
                             ("prior_variance", prior_variance)):
            if value is not None and not (math.isfinite(float(value)) and float(value) > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        if isinstance(max_source_points, bool) or not isinstance(max_source_points, int) or (
            max_source_points < 2
        ):
            raise ValueError(f"max_source_points must be an int >= 2, got {max_source_points!r}")
        self.hyper = hyper
        self.max_source_points = max_source_points
        self.strategy = strategy
        self._given = (
            None if noise_variance is None else (float(noise_variance), float(prior_variance))
        )
        self._source_fit: tuple[float, float] | None = None
        self._lin: Linearization | None = None
        self._posterior: Posterior | None = None
        self._context_fit: tuple[float, float] | None = None

    def _prepare(self, source: Source) -> None:
        self._lin = Linearization(source.model)
        self._source_fit = None
        if self.hyper == "fixed" and self._given is None:
            x, y = source.source_data
            fit = fit_hyperparameters(self._lin, x, y, mean="zero",
                                      max_points=self.max_source_points, seed=source.seed)
            self._source_fit = (fit.noise_variance, fit.prior_variance)

    def _reset(self) -> None:
        self._posterior = None
        self._context_fit = None

    @property
    def variances(self) -> tuple[float, float]:
        """(σ², s²) in use."""
        if self.hyper == "marginal-likelihood":
            if self._context_fit is None:
                raise ValueError("hyper='marginal-likelihood': (σ², s²) are set by fit")
            return self._context_fit
        if self._given is not None:
            return self._given
        if self._source_fit is None:
            raise ValueError(f"method {self.name!r} is not prepared: call prepare(source)")
        return self._source_fit

    @property
    def hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hyper": self.hyper, "mean": self.mean}
        if self.hyper == "fixed":
            out["chosen_by"] = "given" if self._given is not None else "source marginal likelihood"
        else:
            out["chosen_by"] = "context marginal likelihood"
        try:
            sigma2, s2 = self.variances
        except ValueError:  # not prepared yet, or marginal likelihood before the first fit
            pass
        else:
            out.update(noise_variance=sigma2, prior_variance=s2)
        if self._posterior is not None:
            out["strategy"] = self._posterior.strategy
        return out

    @property
    def posterior(self) -> Posterior:
        """The :class:`ntkcore.Posterior` of the last fit."""
        if self._posterior is None:
            raise ValueError(f"method {self.name!r} is not fitted")
        return self._posterior

    def _fit(self, x: Tensor, y: Tensor) -> None:
        if self.hyper == "marginal-likelihood":
            fit = fit_hyperparameters(self._lin, x, y, mean=self.mean)
            self._context_fit = (fit.noise_variance, fit.prior_variance)
        sigma2, s2 = self.variances
        self._posterior = adapt(self._lin, x, y, noise_variance=sigma2, prior_variance=s2,
                                mean=self.mean, strategy=self.strategy)

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pred = self._posterior.predict(x)
        return pred.mean, pred.variance + self._posterior.noise_variance


@register
class NTKLinearized(NTK):
    """The linearized network, ``adapt(mean="network")``: prior mean f(x; θ) (Eq. 1).

    Same kernel, hyperparameters and options as :class:`NTK` (whose docstring explains the
    ``fixed`` source fit); only the prior mean differs, as in the paper's Section 3.
    """

    name = "ntk-linearized"
    rank = 11
    mean = "network"
