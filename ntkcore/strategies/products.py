"""J and Jᵀ at the training inputs as maps on column blocks: what matrix-free fits use.

:class:`TrainingProducts` is the one place where the matrix-free strategies touch the
training data: every sum over data points (the reverse products Jᵀu = Σᵢ Jᵢᵀuᵢ, hence
JᵀJ v and the Fisher products) happens inside :meth:`TrainingProducts.vjp` and
:meth:`TrainingProducts.fisher_gram`. A distributed reduction hook (data sharded across
processes) wraps these two methods; everything above them works on column blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.fisher import fisher_vp
from ntkcore.jacobian_at import JacobianAt
from ntkcore.linearization import Linearization

__all__ = ["TrainingProducts"]


class TrainingProducts:
    """Column-block products with J = J(X) (N × p) at fixed training inputs X.

    Parameters
    ----------
    at_x : JacobianAt
        ``lin.at(x)``: keeps the forward pass (and, on the CPU, the traced tangent
        program) across the hundreds of products of a sketch, a solve and a factor.

    Attributes
    ----------
    n, o, p : int
        Data points, outputs and parameters; N = n·o.
    """

    def __init__(self, at_x: JacobianAt) -> None:
        self.at_x = at_x
        self.linearization: Linearization = at_x.linearization
        self.n, self.o = at_x.n, at_x.o
        self.p = self.linearization.num_params

    @property
    def num_observations(self) -> int:
        return self.n * self.o

    @property
    def dtype(self) -> torch.dtype:
        return self.linearization.dtype

    @property
    def device(self) -> torch.device:
        return self.linearization.device

    def jvp(self, v: Tensor) -> Tensor:
        """J V: (p, k) -> (N, k)."""
        return self.at_x.jvp(v.mT).reshape(v.shape[-1], -1).mT

    def vjp(self, u: Tensor) -> Tensor:
        """Jᵀ U (a sum over the data points): (N, k) -> (p, k)."""
        return self.at_x.vjp(u.mT.reshape(u.shape[-1], self.n, self.o)).mT

    def kernel(self, u: Tensor) -> Tensor:
        """J Jᵀ U: (N, k) -> (N, k)."""
        return self.jvp(self.vjp(u))

    def gram(self, v: Tensor) -> Tensor:
        """JᵀJ V: (p, k) -> (p, k)."""
        return self.vjp(self.jvp(v))

    def fisher_gram(self, v: Tensor) -> Tensor:
        """JᵀJ V = n F V with F by finite differences of the KL (Eq. 5), (p, k) -> (p, k)."""
        return self.n * fisher_vp(self.at_x, None, v.mT, likelihood="gaussian", method="fd").mT
