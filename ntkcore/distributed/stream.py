"""Streaming: training data kept in host memory or on disk, moved to the device a shard at
a time (issue 13, §3).

:class:`StreamedJacobian` stands where :class:`ntkcore.JacobianAt` stands for the
matrix-free strategies (``adapt(..., stream=points)``): each product loops over shards of
``x`` — a host tensor, or one backed by a ``numpy`` memory map of a ``.npy`` file —, moves
the shard to the network's device, and adds its Jᵀu into one p-vector: the same shard loop
as the reduction across ranks (:class:`~ntkcore.distributed.DataReduction`), one level
down. Nothing of size n·p, n·r or a cached forward pass is kept, so n is bounded by the
disk, not the device: the strategies then work in weight space as for sharded data
(p-vectors; the n·o vectors J v and the residual live on the device, 4–8 bytes per
observation). The price: every product re-runs the forward pass of every shard.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ntkcore.linearization import Linearization, chunk_slices

__all__ = ["StreamedJacobian"]


class StreamedJacobian:
    """J(x) at fixed inputs kept off the device, applied a shard at a time.

    Parameters
    ----------
    linearization : Linearization
    x : Tensor
        Inputs, shape (n, ...), on the host (any device; only shards are moved).
    shard_points : int
        Points moved to the device per step.

    Attributes
    ----------
    x, n, o, cache, cache_reason, setup_seconds
        As :class:`ntkcore.JacobianAt` (``cache`` is ``"streamed"``).
    """

    streamed = True

    def __init__(self, linearization: Linearization, x: Tensor, shard_points: int) -> None:
        if isinstance(shard_points, bool) or not isinstance(shard_points, int) or (
            shard_points < 1
        ):
            raise ValueError(f"stream must be a positive int, got {shard_points!r}")
        t0 = time.perf_counter()
        self.linearization = linearization
        self.x = x
        self.n = int(x.shape[0])
        # x[:1] is empty on a rank that holds no points: o was then learned from the
        # others (Linearization.set_output_dim), and the one shard is empty (every product
        # of an empty batch is empty or zero: Linearization.prepare_batch)
        self.o = linearization.output_dim(self._load(slice(0, 1)))
        self.shard_points = shard_points
        self._slices = chunk_slices(self.n, shard_points) or [slice(0, 0)]
        self.cache = "streamed"
        self.cache_reason = (
            f"x streamed to {linearization.device} in {len(self._slices)} shards of <= "
            f"{shard_points} points; no forward pass kept"
        )
        with torch.no_grad():  # validates every shard (finite values) on the way
            self._output = torch.cat([linearization(self._load(s)) for s in self._slices])
        self.setup_seconds = time.perf_counter() - t0

    def _load(self, s: slice) -> Tensor:
        return self.linearization.prepare_batch(self.x[s])

    def with_linearization(self, linearization: Linearization) -> StreamedJacobian:
        """The same stream for another linearization of the network (a float64 twin)."""
        return StreamedJacobian(linearization, self.x, self.shard_points)

    @property
    def output(self) -> Tensor:
        """f(x; θ), shape (n, o), on the device."""
        return self._output

    def jvp(self, v: Tensor) -> Tensor:
        """J V for V of shape (k, p): (k, n, o)."""
        lin = self.linearization
        return torch.cat([lin.jvp(self._load(s), v) for s in self._slices], dim=-2)

    def vjp(self, u: Tensor) -> Tensor:
        """Jᵀ U for U of shape (k, n, o): (k, p), summed over the shards."""
        lin = self.linearization
        total: Tensor | None = None
        for s in self._slices:
            g = lin.vjp(self._load(s), u[..., s, :])
            total = g if total is None else total.add_(g)
        assert total is not None
        return total
