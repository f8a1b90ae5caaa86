"""The finite NTK s²·J(x)J(x)ᵀ as a ``linear_operator.LinearOperator``."""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.linearization import Linearization
from ntkcore.operators._base import LinearizationOperator


class NTKLinearOperator(LinearizationOperator):
    r"""The finite NTK ``scale · J(x1) J(x2)ᵀ`` of shape (n1·o, n2·o), matrix-free.

    The kernel of the paper's degenerate GP (Section 3, k(x, x') = J(x)ᵀJ(x') in the
    paper's p × n·o convention). Rows are sample-major (i·o + a). ``_matmul`` is one
    batched vjp on ``x2`` and one batched jvp on ``x1``; ``_diagonal`` (square case)
    is the exact :meth:`Linearization.ntk_diag`, computed once and cached.

    Parameters
    ----------
    x1, x2 : Tensor
        Inputs; ``x2=None`` gives the square kernel on ``x1``.
    linearization : Linearization
    scale : float
        Prior variance s² of the weights (Eq. 1–3 use s² = 1).
    """

    def __init__(
        self,
        x1: Tensor,
        x2: Tensor | None = None,
        *,
        linearization: Linearization,
        scale: float = 1.0,
    ) -> None:
        x2_ = x1 if x2 is None else x2
        super().__init__(x1, x2_, linearization=linearization, scale=float(scale))
        self.x1, self.x2 = x1, x2_
        self.square = x2 is None or x2 is x1
        self.linearization = linearization
        self.scale = float(scale)
        self._o = linearization.output_dim(x1)
        self._diag_cache: Tensor | None = None

    def _size(self) -> torch.Size:
        return torch.Size((self.x1.shape[0] * self._o, self.x2.shape[0] * self._o))

    def _product(self, left: Tensor, right: Tensor, rhs: Tensor) -> Tensor:
        # rhs shape: (n_right·o, k) -> (n_left·o, k)
        k = rhs.shape[-1]
        u = rhs.mT.reshape(k, right.shape[0], self._o)
        w = self._products_at(right).vjp(u)  # shape: (k, p)
        out = self._products_at(left).jvp(w)  # shape: (k, n_left, o)
        return self.scale * out.reshape(k, -1).mT

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._product(self.x1, self.x2, r)
        return out.squeeze(-1) if vector else out

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = self._product(self.x2, self.x1, r)
        return out.squeeze(-1) if vector else out

    def _transpose_nonbatch(self) -> NTKLinearOperator:
        if self.square:
            return self
        return NTKLinearOperator(
            self.x2, self.x1, linearization=self.linearization, scale=self.scale
        )

    def _diagonal(self) -> Tensor:
        if not self.square:
            raise ValueError("the diagonal is defined for the square kernel (x2=None)")
        if self._diag_cache is None:
            self._diag_cache = self.scale * self.linearization.ntk_diag(self.x1).reshape(-1)
        return self._diag_cache

    def to_dense(self) -> Tensor:
        if self.square:
            return self.scale * self.linearization.ntk(self.x1)
        return self.scale * self.linearization.ntk(self.x1, self.x2)
