"""The Jacobian J(x) of a linearized network as a ``linear_operator.LinearOperator``."""

from __future__ import annotations

import torch
from linear_operator.operators import LinearOperator
from torch import Tensor

from ntkcore.linearization import Linearization


class JacobianLinearOperator(LinearOperator):
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
        self.transpose = transpose
        self._n = x.shape[0]
        self._o = linearization.output_dim(x)

    def _size(self) -> torch.Size:
        rows, cols = self._n * self._o, self.linearization.num_params
        return torch.Size((cols, rows) if self.transpose else (rows, cols))

    @property
    def dtype(self) -> torch.dtype:
        return self.linearization.dtype

    @property
    def device(self) -> torch.device:
        return self.linearization.device

    def _jacobian_times(self, rhs: Tensor) -> Tensor:
        # rhs shape: (p, k) -> (n·o, k)
        out = self.linearization.jvp(self.x, rhs.mT)  # shape: (k, n, o)
        return out.reshape(rhs.shape[-1], -1).mT

    def _jacobian_t_times(self, rhs: Tensor) -> Tensor:
        # rhs shape: (n·o, k) -> (p, k)
        u = rhs.mT.reshape(rhs.shape[-1], self._n, self._o)
        return self.linearization.vjp(self.x, u).mT

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._jacobian_t_times(r) if self.transpose else self._jacobian_times(r)
        return out.squeeze(-1) if vector else out

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._jacobian_times(r) if self.transpose else self._jacobian_t_times(r)
        return out.squeeze(-1) if vector else out

    def _transpose_nonbatch(self) -> JacobianLinearOperator:
        return JacobianLinearOperator(
            self.x, linearization=self.linearization, transpose=not self.transpose
        )

    def to_dense(self) -> Tensor:
        jac = self.linearization.jacobian(self.x).reshape(-1, self.linearization.num_params)
        return jac.mT if self.transpose else jac

    def _expand_batch(self, batch_shape: torch.Size) -> LinearOperator:
        raise ValueError("JacobianLinearOperator does not support batch expansion")
