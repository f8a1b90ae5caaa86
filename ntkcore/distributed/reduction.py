r"""The reduction hook: sums over data points held by several processes.

Every quantity the inference strategies need from the training data is a sum over data
points: Jᵀu = Σᵢ Jᵢᵀuᵢ (hence JᵀJ v and the Fisher products), JᵀJ and Jᵀr of the dense
weight-space strategy, ‖r‖² of the marginal likelihood, the number of points N. With the
data sharded across the processes of a ``torch.distributed`` process group (one replica of
the network per process), each such sum is the local sum followed by one
``all_reduce``; everything built from the sums (CG iterates in weight space, the Nyström
sketch of JᵀJ, the covariance factor, Lanczos) is then computed identically on every rank.

:class:`DataReduction` is that hook. Without a process group (or with a group of one) it
is a no-op, so the single-process engine runs unchanged through it. Under a group it
wraps each collective so that a rank that raised, died or hangs ends the run with a
:class:`DistributedError` naming the collective on every other rank (after the process
group's timeout at the latest), never a silent hang, and counts what was communicated
(``calls``, ``bytes``, ``seconds``: the payload each rank hands to ``all_reduce``; a ring
all-reduce sends about 2 (W − 1)/W times that per rank).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["LOCAL", "DataReduction", "DistributedError"]

_MESSAGE_BYTES = 512  # per-rank error message sent by DataReduction.check


class DistributedError(RuntimeError):
    """A collective operation failed: another rank raised, died, or did not reach it
    within the process group's timeout."""


def _dist() -> Any:
    import torch.distributed as dist

    return dist


class DataReduction:
    """Sums over the data shards of a process group (a no-op on one process).

    Parameters
    ----------
    process_group : torch.distributed.ProcessGroup, optional
        The group whose ranks each hold a shard of the data (``None``: one process;
        ``torch.distributed.group.WORLD`` for the default group). The default process
        group must be initialized (``torch.distributed.init_process_group``, which
        ``torchrun`` scripts call; see :func:`ntkcore.distributed.init_from_env`).

    Attributes
    ----------
    rank, world_size : int
        This process's rank within the group and the group's size.
    calls, bytes : int
        Collectives run and their payload in bytes (what this rank contributed).
    seconds : float
        Wall time spent inside collectives (including waiting for slower ranks).
    """

    def __init__(self, process_group: Any = None) -> None:
        self.group = process_group
        self.rank, self.world_size = 0, 1
        self.backend: str | None = None
        if process_group is not None:
            dist = _dist()
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    "process_group was given but torch.distributed is not initialized; call "
                    "torch.distributed.init_process_group (or ntkcore.distributed."
                    "init_from_env) first, or pass process_group=None for one process"
                )
            if not isinstance(process_group, dist.ProcessGroup):
                raise ValueError(
                    "process_group must be a torch.distributed.ProcessGroup (e.g. "
                    f"torch.distributed.group.WORLD) or None, got {type(process_group).__name__}"
                )
            self.rank = dist.get_rank(process_group)
            self.world_size = dist.get_world_size(process_group)
            self.backend = str(dist.get_backend(process_group))
        self.calls = 0
        self.bytes = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------ basics
    @property
    def distributed(self) -> bool:
        """More than one process holds data: sums need a collective."""
        return self.world_size > 1

    def __repr__(self) -> str:
        if not self.distributed:
            return "DataReduction(local)"
        return f"DataReduction(rank={self.rank}, world_size={self.world_size}, {self.backend})"

    def _device(self, like: Tensor | None = None) -> torch.device:
        """Where small control tensors live: NCCL needs CUDA, Gloo takes the CPU."""
        if like is not None:
            return like.device
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _collective(self, what: str, fn: Callable[[], Any], nbytes: int) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # Gloo/NCCL raise RuntimeError subclasses
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {what} failed ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else err!r}). Another "
                "rank raised, died or did not reach this collective within the process "
                "group's timeout"
            ) from err
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.bytes += nbytes
        return out

    def stats(self) -> dict[str, float]:
        """Communication so far: ``calls``, ``bytes`` and ``seconds``."""
        return {"calls": self.calls, "bytes": self.bytes, "seconds": self.seconds}

    # ------------------------------------------------------------------ sums
    def sum_(self, tensor: Tensor, what: str = "sum over data shards") -> Tensor:
        """Σ over ranks of ``tensor``, in place (returned). ``tensor`` must be contiguous."""
        if not self.distributed:
            return tensor
        if not tensor.is_contiguous():
            raise ValueError("DataReduction.sum_ needs a contiguous tensor")
        dist = _dist()
        self._collective(
            f"all_reduce ({what}, shape {tuple(tensor.shape)})",
            lambda: dist.all_reduce(tensor, group=self.group),
            tensor.numel() * tensor.element_size(),
        )
        return tensor

    def sum(self, tensor: Tensor, what: str = "sum over data shards") -> Tensor:
        """Σ over ranks of ``tensor`` (a new tensor unless local)."""
        if not self.distributed:
            return tensor
        return self.sum_(tensor.contiguous().clone(), what)

    def _scalars(self, values: list[float] | list[int], dtype: torch.dtype, op: str,
                 what: str) -> Tensor:
        t = torch.tensor(values, dtype=dtype, device=self._device())
        if self.distributed:
            dist = _dist()
            reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                         "min": dist.ReduceOp.MIN}[op]
            self._collective(
                f"all_reduce {op} ({what})",
                lambda: dist.all_reduce(t, op=reduce_op, group=self.group),
                t.numel() * t.element_size(),
            )
        return t.cpu()

    def sum_float(self, value: float, what: str = "scalar sum") -> float:
        """Σ over ranks of a float64 scalar."""
        return float(self._scalars([float(value)], torch.float64, "sum", what)[0])

    def sum_int(self, value: int, what: str = "count") -> int:
        """Σ over ranks of an int."""
        return int(self._scalars([int(value)], torch.int64, "sum", what)[0])

    def min_int(self, value: int, what: str = "minimum") -> int:
        """The smallest value over ranks (memory caps: every rank must take the same)."""
        return int(self._scalars([int(value)], torch.int64, "min", what)[0])

    def any(self, flag: bool, what: str = "flag") -> bool:
        """True on every rank when ``flag`` is True on some rank."""
        return bool(self._scalars([int(bool(flag))], torch.int64, "max", what)[0])

    def gather_ints(self, values: list[int], what: str = "sizes") -> list[list[int]]:
        """Every rank's ``values`` (same length on every rank), in rank order."""
        local = torch.tensor(values, dtype=torch.int64, device=self._device())
        if not self.distributed:
            return [local.tolist()]
        dist = _dist()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        self._collective(
            f"all_gather ({what})",
            lambda: dist.all_gather(parts, local, group=self.group),
            local.numel() * 8,
        )
        return [p.cpu().tolist() for p in parts]

    def shared_int(self, value: int | None, what: str) -> int:
        """The non-negative int that the ranks holding one agree on (``None``: this rank has
        none, e.g. the outputs per point of a rank whose data shard is empty).

        Collective; every rank returns the same value or raises the same ``ValueError``
        (no rank has one, or two ranks disagree).
        """
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"{what} must be a non-negative int, got {value!r}")
        values = [v[0] for v in self.gather_ints([-1 if value is None else int(value)], what)]
        known = sorted({v for v in values if v >= 0})
        if not known:
            raise ValueError(
                f"{what}: no rank of the {self.world_size} holds a data point (every shard "
                "is empty); at least one point is needed"
                if self.distributed
                else f"{what} is unknown: x holds no points"
            )
        if len(known) > 1:
            raise ValueError(
                f"the ranks disagree on {what}: "
                + ", ".join(f"rank {r}: {v}" for r, v in enumerate(values) if v >= 0)
            )
        return known[0]

    def broadcast_(self, tensor: Tensor, src: int = 0, what: str = "values") -> Tensor:
        """Rank ``src``'s ``tensor`` on every rank, in place (returned); the other ranks
        pass a tensor of the same shape and dtype."""
        if not self.distributed:
            return tensor
        if not tensor.is_contiguous():
            raise ValueError("DataReduction.broadcast_ needs a contiguous tensor")
        dist = _dist()
        self._collective(
            f"broadcast ({what}, shape {tuple(tensor.shape)})",
            lambda: dist.broadcast(tensor, group_src=src, group=self.group),
            tensor.numel() * tensor.element_size(),
        )
        return tensor

    def gather_rows(self, tensor: Tensor, what: str = "rows") -> Tensor:
        """The concatenation over ranks (in rank order) of ``tensor`` along dim 0; the row
        counts may differ between ranks (other dimensions must agree)."""
        if not self.distributed:
            return tensor
        sizes = [s[0] for s in self.gather_ints([tensor.shape[0]], f"{what}: row counts")]
        top = max(sizes)
        padded = tensor.new_zeros((top, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        dist = _dist()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._collective(
            f"all_gather ({what}, shape {tuple(padded.shape)})",
            lambda: dist.all_gather(parts, padded, group=self.group),
            padded.numel() * padded.element_size(),
        )
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], 0)

    # ------------------------------------------------------------------ errors
    def check(self, error: BaseException | None, what: str) -> None:
        """Make a local failure everyone's: collective, call on every rank.

        Without a group, re-raises ``error``. Under a group, every rank learns which ranks
        failed in ``what`` and why, and raises (``ValueError`` when every failure was a
        ``ValueError``, else :class:`DistributedError`), so that no rank goes on into a
        collective the failed rank will never join.
        """
        if not self.distributed:
            if error is not None:
                raise error
            return
        failed = self._scalars(
            [1 if error is not None else 0, 1 if isinstance(error, ValueError) else 0],
            torch.int64, "sum", f"{what}: error flags",
        )
        n_failed, n_value = int(failed[0]), int(failed[1])
        if n_failed == 0:
            return
        text = "" if error is None else f"{type(error).__name__}: {error}"
        raw = text.encode("utf-8")[:_MESSAGE_BYTES]
        buf = torch.zeros(_MESSAGE_BYTES + 1, dtype=torch.uint8, device=self._device())
        buf[0] = 1 if error is not None else 0
        if raw:
            buf[1 : 1 + len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        dist = _dist()
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._collective(
            f"all_gather ({what}: error messages)",
            lambda: dist.all_gather(parts, buf, group=self.group),
            buf.numel(),
        )
        lines = []
        for r, part in enumerate(parts):
            part = part.cpu()
            if int(part[0]):
                msg = bytes(part[1:].tolist()).rstrip(b"\0").decode("utf-8", "replace")
                lines.append(f"rank {r}: {msg}")
        message = f"{what} failed on {n_failed} of {self.world_size} ranks; " + "; ".join(lines)
        kind = ValueError if n_value == n_failed else DistributedError
        if error is not None:
            raise kind(message) from error
        raise kind(message)


LOCAL = DataReduction(None)
"""The no-op reduction of one process (every sum is the local sum)."""
