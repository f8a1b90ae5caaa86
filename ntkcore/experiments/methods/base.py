"""The interface every adaptation method implements, and the registry of methods.

A method adapts a trained source network (:class:`~ntkcore.experiments.methods.Source`) to
a few labelled points of a new target task and predicts a Gaussian for the targets at new
inputs. Its life cycle has three steps so that the expensive, target-independent work is
done once:

1. ``prepare(source)`` — everything that depends on the source only (hyperparameters fit on
   the source task, ABLR's features, the linearization's parameter snapshot). Idempotent for
   the same source object; :func:`create` returns a prepared method.
2. ``fit(context_x, context_y)`` — condition / retrain on the target's context points.
3. ``predict(x)`` — ``(mean, variance)`` of the predictive distribution of **y** at ``x``
   (observation noise included), each of shape (m, o).

``clone()`` gives an unfitted copy that shares the prepared source-side state, so one
prepared method (cached by the app) serves many contexts::

    ntk = methods.create("ntk", source)          # source-side work, once
    mean, var = ntk.clone().fit(x, y).predict(x_grid)

To add a method, subclass :class:`Method` (set ``name`` and ``kind``, implement
``_prepare``, ``_fit``, ``_predict`` and ``hyperparameters``) and :func:`register` it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from ntkcore.experiments.methods.source import Source

__all__ = [
    "METHODS",
    "VARIANCE_FLOOR",
    "Method",
    "available",
    "create",
    "get",
    "register",
    "residual_variance",
]

#: Smallest predictive variance a point method reports (targets are O(1): standardised or
#: physical units of order one), so that a network interpolating its context points still
#: has a finite NLL.
VARIANCE_FLOOR = 1e-6


class Method(ABC):
    """An adaptation method: prepare on the source, fit on context points, predict y.

    Class attributes
    ----------------
    name : str
        Registry name (the ``method`` column of the experiments' tables).
    rank : int
        Sort key of :func:`available` (the order of the experiments' tables).
    kind : {"bayesian", "point"}
        ``bayesian``: the predictive comes from a posterior (GP / Bayesian linear
        regression), variance = latent variance + noise variance. ``point``: a single
        function; its Gaussian predictive has the method's residual variance on the
        context points as a constant variance (see :func:`residual_variance`).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "point"
    #: Position in :func:`available` (then registration order).
    rank: ClassVar[int] = 100

    def __init__(self) -> None:
        self._source: Source | None = None
        self._fitted = False

    # ---------------------------------------------------------------- public interface
    @property
    def source(self) -> Source:
        if self._source is None:
            raise ValueError(f"method {self.name!r} is not prepared: call prepare(source)")
        return self._source

    @property
    def prepared(self) -> bool:
        return self._source is not None

    def prepare(self, source: Source) -> Self:
        """Do the source-side work once (a no-op when already prepared on ``source``)."""
        if not isinstance(source, Source):
            raise ValueError(f"prepare needs a Source, got {type(source).__name__}")
        if self._source is not source:
            self._prepare(source)
            self._source = source
            self._fitted = False
        return self

    def fit(self, context_x: Tensor, context_y: Tensor) -> Self:
        """Adapt to the target's context points; returns ``self``.

        Parameters
        ----------
        context_x : Tensor
            Shape (n, *input_shape), n >= 1.
        context_y : Tensor
            Shape (n,) for one output or (n, o).
        """
        x, y = self._check_context(context_x, context_y)
        self._fit(x, y)
        self._fitted = True
        return self

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance of y at ``x`` (noise included), each (m, o)."""
        if not self._fitted:
            raise ValueError(f"method {self.name!r} is not fitted: call fit(context_x, context_y)")
        x = self._check_inputs(x, "x")
        with torch.no_grad():
            mean, variance = self._predict(x)
        return mean.detach(), variance.detach()

    def clone(self) -> Self:
        """An unfitted copy sharing the prepared source-side state (cheap)."""
        twin = copy.copy(self)
        twin._fitted = False
        twin._reset()
        return twin

    @property
    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters in use (after ``prepare``, and after ``fit`` where fit sets
        them); always with the key ``hyper`` saying how they were chosen."""

    def __repr__(self) -> str:
        state = "fitted" if self._fitted else ("prepared" if self.prepared else "new")
        return f"{type(self).__name__}(name={self.name!r}, {state})"

    # ---------------------------------------------------------------- subclass hooks
    def _prepare(self, source: Source) -> None:  # noqa: B027 - optional hook
        """Source-side work; store the results on ``self``."""

    @abstractmethod
    def _fit(self, x: Tensor, y: Tensor) -> None:
        """Fit on validated context points: x (n, *input_shape), y (n, o)."""

    @abstractmethod
    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance of y), each (m, o), for validated inputs."""

    def _reset(self) -> None:  # noqa: B027 - optional hook
        """Drop the fit state on a clone (the fit must not be shared)."""

    # ---------------------------------------------------------------- validation
    def _check_inputs(self, x: Tensor, what: str) -> Tensor:
        source = self.source
        shape = tuple(source.task.input_shape)
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        if shape == (1,) and x.dim() == 1:
            x = x.unsqueeze(-1)  # a flat vector of scalar inputs
        if tuple(x.shape[1:]) != shape or x.shape[0] < 1:
            raise ValueError(
                f"{what} must have shape (n, {', '.join(map(str, shape))}) with n >= 1, got "
                f"{tuple(x.shape)}"
            )
        x = x.to(source.device, source.dtype)
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains non-finite values")
        return x

    def _check_context(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._check_inputs(x, "context_x")
        o = self.source.task.output_dim
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if y.dim() == 1 and o == 1:
            y = y.unsqueeze(-1)
        if y.shape != (x.shape[0], o):
            raise ValueError(
                f"context_y must have shape ({x.shape[0]},) or ({x.shape[0]}, {o}), got "
                f"{tuple(y.shape)}"
            )
        y = y.to(self.source.device, self.source.dtype)
        if not torch.isfinite(y).all():
            raise ValueError("context_y contains non-finite values")
        return x, y


def residual_variance(prediction: Tensor, y: Tensor) -> Tensor:
    """The Gaussian variance a point method reports: its mean squared residual on the context
    points, per output, floored at :data:`VARIANCE_FLOOR`. Shape (o,)."""
    return (y - prediction).square().mean(0).clamp_min(VARIANCE_FLOOR)


# -------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a :class:`Method` subclass to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise ValueError(f"register needs a Method subclass with a name, got {cls!r}")
    if cls.kind not in ("bayesian", "point"):
        raise ValueError(f"{cls.__name__}.kind must be 'bayesian' or 'point', got {cls.kind!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered methods, by ``rank`` then registration order."""
    order = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].rank, order[name]))


def get(name: str) -> type[Method]:
    """The method class registered as ``name`` (``ValueError`` listing the names)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {available()}")
    return _REGISTRY[name]


def create(name: str, source: Source | None = None, **options: Any) -> Method:
    """Instantiate method ``name`` with ``options``; prepared on ``source`` when given."""
    method = get(name)(**options)
    return method if source is None else method.prepare(source)


class _RegistryView(Mapping[str, type[Method]]):
    """Read-only live view of the registry (``METHODS["ntk"]``)."""

    def __getitem__(self, name: str) -> type[Method]:
        return get(name)

    def __iter__(self):
        return iter(available())

    def __len__(self) -> int:
        return len(_REGISTRY)


#: name -> Method class (read-only view).
METHODS: Mapping[str, type[Method]] = _RegistryView()
