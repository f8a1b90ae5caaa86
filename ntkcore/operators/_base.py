"""Shared plumbing of the operators built on a :class:`~ntkcore.Linearization`."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import torch
from linear_operator.operators import LinearOperator
from torch import Tensor

from ntkcore.jacobian_at import JacobianAt
from ntkcore.linearization import Linearization

# Inputs whose cached forward pass one linearization keeps for its operators (train and
# test inputs of a GPyTorch model).
_SHARED_PRODUCTS = 2


class LinearizationOperator(LinearOperator):
    """Base class: dtype and device follow the linearized network; conversions refuse.

    ``linear_operator``'s ``.to(dtype)`` / ``.float()`` rebuild an operator from its
    tensor arguments, which would convert the inputs but not the network: the products
    would silently keep the network's dtype. Convert the network and build a new
    Linearization instead.
    """

    linearization: Linearization

    def _products_at(self, x: Tensor) -> JacobianAt:
        """Products at ``x`` that keep its forward pass (the ``vjp`` pullback), shared by
        all operators on the same linearization and the same (unmodified) tensor ``x``.

        ``linear_operator`` rebuilds an operator from its arguments for every matmul, so
        the cache lives on the linearization, keyed by the identity and version counter
        of ``x`` and holding at most :data:`_SHARED_PRODUCTS` inputs (oldest dropped).
        Repeated matmuls (CG in GPyTorch) then skip one forward pass each; without a
        cache when it would not fit in memory.
        """
        shared: OrderedDict[int, tuple[weakref.ref, int, JacobianAt]] = (
            self.linearization.__dict__.setdefault("_operator_products", OrderedDict())
        )
        key = id(x)
        hit = shared.get(key)
        if hit is not None and hit[0]() is x and hit[1] == x._version:
            shared.move_to_end(key)
            return hit[2]
        products = self.linearization.at(x, cache="pullback", strict=False)
        shared[key] = (weakref.ref(x), x._version, products)
        while len(shared) > _SHARED_PRODUCTS:
            shared.popitem(last=False)
        return products

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
