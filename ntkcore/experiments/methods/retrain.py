"""Point baselines: the source network as is, and retraining some or all of its layers.

The paper's Section 5 (Figure 7a and Appendix E) compares the finite NTK with no
retraining, with retraining the last layer for the source training budget, and with six
times that budget. These methods predict one function; their Gaussian predictive has the
mean squared residual on the context points as variance (:func:`residual_variance`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore import zoo
from ntkcore.experiments.methods.base import Method, register, residual_variance
from ntkcore.experiments.methods.heads import HeadReadout
from ntkcore.experiments.methods.source import HEAD
from ntkcore.parameters import ParameterFilter

__all__ = ["FineTune", "LastLayer", "LastLayer6x", "NoRetrain"]


class _PointMethod(Method):
    """A method predicting one function ``self._network``; variance from the context fit."""

    kind = "point"

    def __init__(self) -> None:
        super().__init__()
        self._network: nn.Module | None = None
        self._variance: Tensor | None = None

    def _reset(self) -> None:
        self._network = None
        self._variance = None

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = self._network(x)
        return mean, self._variance.expand_as(mean)

    def _set_variance(self, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            self._variance = residual_variance(self._network(x), y)


@register
class NoRetrain(_PointMethod):
    """The source network unchanged: predictive N(f(x; θ), v), v its mean squared residual
    on the context points (per output, floored at ``VARIANCE_FLOOR``)."""

    name = "no-retrain"
    rank = 20

    @property
    def hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hyper": "none"}
        if self._variance is not None:
            out["noise_variance"] = float(self._variance.mean())
        return out

    def _fit(self, x: Tensor, y: Tensor) -> None:
        self._network = self.source.model
        self._set_variance(x, y)


class _Retrain(_PointMethod):
    """Retrain a copy of the source network on the context points by least squares.

    The optimizer, learning rate, schedule, weight decay and batch size are the source
    network's (``source.training``); the number of epochs is ``budget`` times the source
    epochs. With full-batch source training (the MLPs) an epoch is one step on all context
    points; with mini-batches (LeNet, batch 64) few context points make few steps per epoch:
    the budget is counted in epochs, as in the paper ("the same as the original training
    epochs").

    When only ``head`` is trained and the network's output is its head's output (or the
    first columns of it: the heteroscedastic network's mean), checked on the context points
    by :meth:`HeadReadout.of`, the features entering ``head`` are computed once and the head
    is trained on them: the same optimization as training the network with a frozen body
    (same steps, same data order; no BatchNorm or Dropout), without the body's forward pass
    at every step (measured under load, one thread: 0.25 s instead of 0.75 s for the faces
    LeNet on 50 images; on the small MLPs the per-step optimizer overhead dominates and
    the gain is ~15%).
    ``cached_features=False`` always runs the whole network.

    Parameters
    ----------
    budget : int, optional
        Multiple of the source epochs (default: the class's, 1 or 6).
    seed : int
        Seed of the data order (mini-batches).
    cached_features : bool
        Allow the cached-feature path for head-only training.
    """

    params: ParameterFilter = None
    budget: int = 1

    def __init__(self, *, budget: int | None = None, seed: int = 0,
                 cached_features: bool = True) -> None:
        super().__init__()
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
                raise ValueError(f"budget must be a positive int (epochs multiple), got {budget!r}")
            self.budget = budget
        self.seed = int(seed)
        self.cached_features = bool(cached_features)
        self._record: zoo.TrainRecord | None = None
        self._path: str | None = None

    def _reset(self) -> None:
        super()._reset()
        self._record = None
        self._path = None

    @property
    def training(self) -> dict[str, Any]:
        config = dict(self.source.training)
        config["epochs"] = int(config["epochs"]) * self.budget
        return config

    @property
    def hyperparameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hyper": "source budget", "budget": self.budget,
                               "trained": "all layers" if self.params is None else "head"}
        if self.prepared:
            out.update(self.training)
        if self._record is not None:
            out["steps"] = self._record.steps
            out["final_loss"] = self._record.final_loss
            out["trained_on"] = self._path
        if self._variance is not None:
            out["noise_variance"] = float(self._variance.mean())
        return out

    def _fit(self, x: Tensor, y: Tensor) -> None:
        network = copy.deepcopy(self.source.model)
        fast = None
        if self.params is HEAD and self.cached_features:
            fast = HeadReadout.of(network, x)
        if fast is not None:
            readout, features = fast
            _, self._record = zoo.train(readout, features, y, loss="mse", seed=self.seed,
                                        **self.training)
            self._path = "cached head features"
        else:
            network, self._record = zoo.train(network, x, y, loss="mse", seed=self.seed,
                                              params=self.params, **self.training)
            self._path = "network"
        self._network = network.eval()
        self._set_variance(x, y)


@register
class LastLayer(_Retrain):
    """Retrain the read-out layer ``head`` for the source budget (Figure 7a's baseline)."""

    name = "last-layer"
    rank = 30
    params = HEAD
    budget = 1


@register
class LastLayer6x(_Retrain):
    """Retrain ``head`` for six times the source budget (the paper's Appendix E comparison)."""

    name = "last-layer-6x"
    rank = 31
    params = HEAD
    budget = 6


@register
class FineTune(_Retrain):
    """Retrain every layer for the source budget."""

    name = "fine-tune"
    rank = 40
    params = None
    budget = 1
