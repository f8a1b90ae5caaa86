"""The Gauss–Newton matrix J(x)ᵀJ(x) (p × p) as a ``linear_operator.LinearOperator``."""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.linearization import Linearization
from ntkcore.operators._base import LinearizationOperator


class GaussNewtonLinearOperator(LinearizationOperator):
    r"""``scale · J(x)ᵀ J(x)``, shape (p, p): n times the Gaussian-likelihood Fisher.

    The weight-space Gram matrix of Eq. 2 (the paper writes it J Jᵀ in its p × n·o
    convention). ``_matmul`` is one batched jvp then one batched vjp; ``_diagonal`` is
    the exact column-wise sum of squares of the per-sample Jacobians.
    """

    def __init__(self, x: Tensor, *, linearization: Linearization, scale: float = 1.0) -> None:
        super().__init__(x, linearization=linearization, scale=float(scale))
        self.x = x
        self.linearization = linearization
        self.scale = float(scale)
        self._diag_cache: Tensor | None = None

    def _size(self) -> torch.Size:
        p = self.linearization.num_params
        return torch.Size((p, p))

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        at_x = self._products_at(self.x)
        jv = at_x.jvp(r.mT)  # shape: (k, n, o)
        out = self.scale * at_x.vjp(jv).mT  # shape: (p, k)
        return out.squeeze(-1) if vector else out

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        return self._matmul(rhs)

    def _transpose_nonbatch(self) -> GaussNewtonLinearOperator:
        return self

    def _diagonal(self) -> Tensor:
        if self._diag_cache is None:
            total = torch.zeros(
                self.linearization.num_params, dtype=self.dtype, device=self.device
            )
            for _, block in self.linearization.jacobian_blocks(self.x):
                total += block.square().sum(dim=(0, 1))
            self._diag_cache = self.scale * total
        return self._diag_cache

    def to_dense(self) -> Tensor:
        p = self.linearization.num_params
        out = torch.zeros(p, p, dtype=self.dtype, device=self.device)
        for _, block in self.linearization.jacobian_blocks(self.x):
            b = block.reshape(-1, p)
            out += b.mT @ b
        return self.scale * out
