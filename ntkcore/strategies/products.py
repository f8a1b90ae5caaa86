"""J and Jᵀ at the training inputs as maps on column blocks: what matrix-free fits use.

:class:`TrainingProducts` is the one place where the matrix-free strategies touch the
training data: every sum over data points (the reverse products Jᵀu = Σᵢ Jᵢᵀuᵢ, hence
JᵀJ v and the Fisher products) happens inside :meth:`TrainingProducts.vjp` and
:meth:`TrainingProducts.fisher_gram`. A distributed reduction hook (data sharded across
processes) wraps these two methods; everything above them works on column blocks.

That hook is :class:`ntkcore.distributed.DataReduction`: with the data sharded across the
ranks of a process group, ``vjp`` and ``fisher_gram`` all-reduce their (p, k) results (one
all-reduce of k p-vectors per call), ``num_observations`` is the global N and
``local_observations`` the shard's. Function-space vectors (N rows) stay sharded: ``jvp``
and ``kernel`` act on this rank's rows only, and the strategies work in weight space
(p rows, replicated) when :attr:`TrainingProducts.sharded`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.distributed.reduction import LOCAL, DataReduction
from ntkcore.fisher import fisher_sum_vp
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
    reduction : DataReduction
        Sums over the data shards of a process group (default: one process, a no-op).
    num_observations : int, optional
        The global N when already known (saves a collective), else summed over ranks.

    Attributes
    ----------
    n, o, p : int
        Data points (this rank's), outputs and parameters; N = n·o.
    """

    def __init__(
        self,
        at_x: JacobianAt,
        reduction: DataReduction = LOCAL,
        *,
        num_observations: int | None = None,
    ) -> None:
        self.at_x = at_x
        self.linearization: Linearization = at_x.linearization
        self.n, self.o = at_x.n, at_x.o
        self.p = self.linearization.num_params
        self.reduction = reduction
        local = self.n * self.o
        if num_observations is None:
            num_observations = reduction.sum_int(local, "number of observations")
        self._num_observations = int(num_observations)

    def rebind(self, at_x: JacobianAt) -> TrainingProducts:
        """The same products (same reduction) at another :class:`JacobianAt` of the same
        inputs: a float64 twin of the linearization, another cache."""
        return type(self)(at_x, self.reduction, num_observations=self._num_observations)

    def to_dtype(self, dtype: torch.dtype, cache: str) -> TrainingProducts:
        """The same products on a copy of the linearization in ``dtype`` (float64 residuals
        and corrections), with the ``cache`` option for a new :class:`JacobianAt`."""
        twin = self.linearization.to_dtype(dtype)
        if getattr(self.at_x, "streamed", False):
            return self.rebind(self.at_x.with_linearization(twin))
        return self.rebind(twin.at(self.at_x.x, cache=cache, strict=False))

    @property
    def sharded(self) -> bool:
        """The training data is split across the ranks of a process group, or streamed
        through the device in shards (:class:`ntkcore.distributed.stream.StreamedJacobian`):
        the strategies then keep to p-vectors (weight space)."""
        return self.reduction.distributed or getattr(self.at_x, "streamed", False)

    @property
    def num_observations(self) -> int:
        """N = n·o over all ranks."""
        return self._num_observations

    @property
    def local_observations(self) -> int:
        """This rank's n·o (the rows of ``jvp`` and ``kernel``)."""
        return self.n * self.o

    @property
    def dtype(self) -> torch.dtype:
        return self.linearization.dtype

    @property
    def device(self) -> torch.device:
        return self.linearization.device

    def jvp(self, v: Tensor) -> Tensor:
        """J V: (p, k) -> (N, k) (this rank's rows when sharded)."""
        return self.at_x.jvp(v.mT).reshape(v.shape[-1], -1).mT

    def vjp(self, u: Tensor) -> Tensor:
        """Jᵀ U (a sum over the data points, all ranks'): (N, k) -> (p, k)."""
        out = self.at_x.vjp(u.mT.reshape(u.shape[-1], self.n, self.o))  # shape: (k, p)
        return self.reduction.sum_(out.contiguous(), "Jᵀu").mT

    def kernel(self, u: Tensor) -> Tensor:
        """J Jᵀ U: (N, k) -> (N, k) (this rank's rows of both when sharded)."""
        return self.jvp(self.vjp(u))

    def gram(self, v: Tensor) -> Tensor:
        """JᵀJ V: (p, k) -> (p, k)."""
        return self.vjp(self.jvp(v))

    def fisher_gram(self, v: Tensor) -> Tensor:
        """JᵀJ V = n F V with F by finite differences of the KL (Eq. 5), (p, k) -> (p, k)."""
        # Σ over this shard's points (zeros for a shard without points), then over ranks
        local = fisher_sum_vp(self.at_x, v.mT, likelihood="gaussian", method="fd")
        return self.reduction.sum_(local.contiguous(), "Fisher products").mT
