"""Shared plumbing of the operators built on a :class:`~ntkcore.Linearization`."""

from __future__ import annotations

from typing import Any

import torch
from linear_operator.operators import LinearOperator
from torch import Tensor

from ntkcore.jacobian_at import JacobianAt
from ntkcore.linearization import Linearization


class LinearizationOperator(LinearOperator):
    """Base class: dtype and device follow the linearized network; conversions refuse.

    ``linear_operator``'s ``.to(dtype)`` / ``.float()`` rebuild an operator from its
    tensor arguments, which would convert the inputs but not the network: the products
    would silently keep the network's dtype. Convert the network and build a new
    Linearization instead.
    """

    linearization: Linearization

    def _products_at(self, x: Tensor) -> JacobianAt:
        """Products at ``x`` that keep its forward pass (the ``vjp`` pullback) across the
        operator's matmuls (CG in GPyTorch: one forward pass fewer per matmul); without
        a cache when it would not fit in memory."""
        return self.linearization.at(x, cache="pullback", strict=False, reuse=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.linearization.dtype

    @property
    def device(self) -> torch.device:
        return self.linearization.device

    def _refuse(self, what: str) -> None:
        raise ValueError(
            f"{type(self).__name__} follows its network ({self.linearization.dtype} on "
            f"{self.linearization.device}) and cannot be converted to {what}: convert the "
            "model (model.to(...)) and build a new Linearization"
        )

    def to(self, *args: Any, **kwargs: Any) -> LinearizationOperator:
        device, dtype = self.device, self.dtype
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, (str, torch.device)):
                device = torch.device(a)
        if dtype != self.dtype or device != self.device:
            self._refuse(f"{dtype} on {device}")
        return self

    def type(self, dtype: torch.dtype) -> LinearizationOperator:
        if dtype != self.dtype:
            self._refuse(str(dtype))
        return self

    def _expand_batch(self, batch_shape: torch.Size) -> LinearOperator:
        raise ValueError(f"{type(self).__name__} does not support batch expansion")
