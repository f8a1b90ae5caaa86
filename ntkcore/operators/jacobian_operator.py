"""The Jacobian J(x) of a linearized network as a ``linear_operator.LinearOperator``."""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.linearization import Linearization
from ntkcore.operators._base import LinearizationOperator


class JacobianLinearOperator(LinearizationOperator):
    r"""J(x) of shape (n·o, p), or Jᵀ of shape (p, n·o) with ``transpose=True``.

    Products go through :meth:`Linearization.jvp` / :meth:`Linearization.vjp`
    (batched over right-hand sides); J is never formed.

    Parameters
    ----------
    x : Tensor
        Inputs, shape ``(n, *input_shape)``.
    linearization : Linearization
        The linearized network.
    transpose : bool
        Represent Jᵀ instead of J.
    """

    def __init__(
        self, x: Tensor, *, linearization: Linearization, transpose: bool = False
    ) -> None:
        super().__init__(x, linearization=linearization, transpose=transpose)
        self.x = x
        self.linearization = linearization
        self.transposed = transpose
        self._n = x.shape[0]
        self._o = linearization.output_dim(x)

    def _size(self) -> torch.Size:
        rows, cols = self._n * self._o, self.linearization.num_params
        return torch.Size((cols, rows) if self.transposed else (rows, cols))

    def _jacobian_times(self, rhs: Tensor) -> Tensor:
        # rhs shape: (p, k) -> (n·o, k)
        out = self._products_at(self.x).jvp(rhs.mT)  # shape: (k, n, o)
        return out.reshape(rhs.shape[-1], -1).mT

    def _jacobian_t_times(self, rhs: Tensor) -> Tensor:
        # rhs shape: (n·o, k) -> (p, k)
        u = rhs.mT.reshape(rhs.shape[-1], self._n, self._o)
        return self._products_at(self.x).vjp(u).mT

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._jacobian_t_times(r) if self.transposed else self._jacobian_times(r)
        return out.squeeze(-1) if vector else out

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._jacobian_times(r) if self.transposed else self._jacobian_t_times(r)
        return out.squeeze(-1) if vector else out

    def _transpose_nonbatch(self) -> JacobianLinearOperator:
        return JacobianLinearOperator(
            self.x, linearization=self.linearization, transpose=not self.transposed
        )

    def to_dense(self) -> Tensor:
        jac = self.linearization.jacobian(self.x).reshape(-1, self.linearization.num_params)
        return jac.mT if self.transposed else jac
