"""The :class:`Task` container: a source data set, a target adaptation pool and a target test set.

A transfer task in the sense of Maddox et al. (2021, Section 3.3 and Algorithm 1): a network is
trained on ``source``; the finite-NTK Gaussian process built from its Jacobian is conditioned on
(a prefix of) the ``target`` pool; predictions are scored on ``test``, held out from the target
domain.  Shapes are validated on construction so every consumer can rely on them:

* ``x`` of every split: floating point, ``(n, *meta.input_shape)``, finite, ``n >= 1``; all splits
  share one dtype and device.
* regression ``y``: same dtype as ``x``, shape ``(n, meta.output_dim)``, finite.
* classification ``y``: ``torch.int64`` class labels of shape ``(n,)`` in ``[0, num_classes)``
  (what cross-entropy training expects); ``meta.output_dim == meta.num_classes`` logits.

A task may have **no source split** (``source=None``): target data only, for adapting a model
trained elsewhere (for instance one uploaded with :func:`ntkcore.zoo.load_model`).  Then
``task.has_source`` is ``False`` and reading ``task.source`` raises :class:`MissingSourceError`
(a ``ValueError`` that says so) instead of handing out ``None`` for a consumer to trip over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

KINDS = ("regression", "classification")
SPLITS = ("source", "target", "test")


class MissingSourceError(ValueError):
    """Raised when the source split of a task built from target data only is read."""


@dataclass(frozen=True, eq=False)
class TaskMeta(Mapping):
    """Description and provenance of a :class:`Task`.

    Fields are read as attributes (``meta.description``) or, for code that treats metadata as a
    dictionary, by key (``meta["description"]``, ``meta.get("num_classes")``, ``dict(meta)``).

    Attributes
    ----------
    name : str
        Registry name the task was loaded under (e.g. ``"sinusoids"``).
    description : str
        One-paragraph, user-facing description of the task and of its source -> target shift.
    kind : {"regression", "classification"}
        Learning problem.
    input_shape : tuple of int
        Shape of one input, ``x.shape[1:]``.
    output_dim : int
        Number of network outputs: regression targets per input, or class logits.
    num_classes : int or None
        Number of classes for classification, else ``None``.
    citation : str
        Where the task or its data come from (papers, packages).
    provenance : str
        Shipped files used, their origin and licence, or "generated on the fly".
    params : dict
        Construction parameters: the load options and, for generated tasks, the true parameters
        of the source and target functions.
    source_function, target_function : callable or None
        Noise-free true function of the source / target domain for generated tasks, mapping
        ``x`` of shape ``(n, *input_shape)`` (tensor or array) to ``(n, output_dim)``; lets a page
        draw the true curve.  ``None`` for real data.
    transform : dict
        Standardisation applied to inputs/targets, enough to map back to physical units (for
        instance ``y_mean``/``y_std``); empty when data are used as is.
    extra : dict
        Task-specific extras (grid shapes, indices into shipped files, identities, ...).
    """

    name: str
    description: str
    kind: Literal["regression", "classification"]
    input_shape: tuple[int, ...]
    output_dim: int
    num_classes: int | None = None
    citation: str = ""
    provenance: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    source_function: Callable[[Any], Any] | None = None
    target_function: Callable[[Any], Any] | None = None
    transform: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"meta.kind must be one of {KINDS}, got {self.kind!r}")
        shape = tuple(self.input_shape)
        if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"meta.input_shape must be positive ints, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if not isinstance(self.output_dim, int) or self.output_dim < 1:
            raise ValueError(f"meta.output_dim must be a positive int, got {self.output_dim!r}")
        if self.kind == "classification":
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ValueError(f"classification needs num_classes >= 2, got {self.num_classes!r}")
            if self.output_dim != self.num_classes:
                raise ValueError(
                    f"classification needs output_dim == num_classes, got "
                    f"{self.output_dim} and {self.num_classes}"
                )
        elif self.num_classes is not None:
            raise ValueError(f"regression tasks have num_classes=None, got {self.num_classes!r}")
        for name in ("source_function", "target_function"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"meta.{name} must be callable or None, got {type(value)}")

    # Mapping interface -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskMeta):
            return NotImplemented
        return all(_equal(self[k], other[k]) for k in self._keys())

    __hash__ = None  # type: ignore[assignment]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a.cpu(), b.cpu()))
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b, strict=True))
    return bool(a == b)


def _all_finite(t: Tensor) -> bool:
    """Whether every entry is finite (NumPy on CPU: far cheaper than torch's threaded kernel)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


@dataclass(frozen=True, eq=False, init=False)
class Task:
    """A source -> target transfer task.

    Parameters
    ----------
    source : (Tensor, Tensor) or None
        ``(x, y)`` the network is trained on; ``None`` for a task with target data only
        (``has_source`` is then ``False`` and reading :attr:`source` raises
        :class:`MissingSourceError`).
    target : (Tensor, Tensor)
        ``(x, y)`` adaptation pool from the target domain, in random order: every prefix
        ``target[0][:n]`` is a uniform random subset (see :meth:`context`).
    test : (Tensor, Tensor)
        ``(x, y)`` held out from the target domain, disjoint from the pool.
    meta : TaskMeta
        Description, shapes, provenance and (for generated tasks) the true functions.

    Raises
    ------
    ValueError
        If a split is not an ``(x, y)`` pair of tensors of the documented shapes and dtypes.
    """

    target: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    meta: TaskMeta
    source_pair: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    def __init__(
        self,
        source: tuple[Tensor, Tensor] | None,
        target: tuple[Tensor, Tensor],
        test: tuple[Tensor, Tensor],
        meta: TaskMeta,
    ) -> None:
        object.__setattr__(self, "source_pair", source)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "meta", meta)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.meta, TaskMeta):
            raise ValueError(f"meta must be a TaskMeta, got {type(self.meta).__name__}")
        first: tuple[str, Tensor] | None = None
        for split in self.splits:
            attribute = "source_pair" if split == "source" else split
            pair = getattr(self, attribute)
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                allowed = " (or None)" if split == "source" else ""
                raise ValueError(
                    f"{split} must be an (x, y) pair of tensors{allowed}, got {type(pair)}"
                )
            x, y = pair
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise ValueError(
                    f"{split} must hold tensors, got ({type(x).__name__}, {type(y).__name__})"
                )
            object.__setattr__(self, attribute, (x, y))
            self._check_split(split, x, y)
            if first is None:
                first = (split, x)
            elif x.dtype != first[1].dtype or x.device != first[1].device:
                raise ValueError(
                    f"all splits must share dtype and device: {first[0]} x is "
                    f"{first[1].dtype} on {first[1].device}, {split} x is {x.dtype} on {x.device}"
                )

    @property
    def has_source(self) -> bool:
        """Whether the task has a source split (``False`` for target data only)."""
        return self.source_pair is not None

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the splits present: ``("source", "target", "test")`` or the last two."""
        return SPLITS if self.has_source else SPLITS[1:]

    @property
    def source(self) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the source domain.

        Raises
        ------
        MissingSourceError
            If the task has no source split (``has_source`` is ``False``).
        """
        if self.source_pair is None:
            raise MissingSourceError(
                f"task {self.meta.name!r} has no source data (it holds target data only): a "
                f"model can be adapted to it but not trained on it; check task.has_source "
                f"before reading task.source"
            )
        return self.source_pair

    def _check_split(self, split: str, x: Tensor, y: Tensor) -> None:
        meta = self.meta
        expected = ("n", *meta.input_shape)
        if not x.is_floating_point():
            raise ValueError(f"{split} x must be floating point, got {x.dtype}")
        if x.ndim != 1 + len(meta.input_shape) or tuple(x.shape[1:]) != meta.input_shape:
            raise ValueError(f"{split} x must have shape {expected}, got {tuple(x.shape)}")
        n = x.shape[0]
        if n < 1:
            raise ValueError(f"{split} must hold at least one point, got x {tuple(x.shape)}")
        if not _all_finite(x):
            raise ValueError(f"{split} x contains non-finite values")
        if y.shape[0] != n:
            raise ValueError(
                f"{split} x and y disagree on the number of points: x {tuple(x.shape)}, "
                f"y {tuple(y.shape)}"
            )
        if meta.kind == "regression":
            if y.dtype != x.dtype:
                raise ValueError(f"{split} y must have x's dtype {x.dtype}, got {y.dtype}")
            if tuple(y.shape) != (n, meta.output_dim):
                raise ValueError(
                    f"{split} y must have shape (n, output_dim) = ({n}, {meta.output_dim}), "
                    f"got {tuple(y.shape)}"
                )
            if not _all_finite(y):
                raise ValueError(f"{split} y contains non-finite values")
        else:
            if y.dtype != torch.int64 or y.shape != (n,):
                raise ValueError(
                    f"{split} y must hold int64 class labels of shape ({n},), got "
                    f"{y.dtype} of shape {tuple(y.shape)}"
                )
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= meta.num_classes:
                raise ValueError(
                    f"{split} labels must lie in [0, {meta.num_classes}), got [{low}, {high}]"
                )

    @property
    def kind(self) -> str:
        """``"regression"`` or ``"classification"``."""
        return self.meta.kind

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return self.meta.input_shape

    @property
    def output_dim(self) -> int:
        """Number of network outputs."""
        return self.meta.output_dim

    @property
    def sizes(self) -> dict[str, int]:
        """Number of points per split (``source`` is 0 for a task without source data)."""
        return {
            split: int(getattr(self, split)[0].shape[0]) if split in self.splits else 0
            for split in SPLITS
        }

    def context(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` points of the target pool (a uniform random subset of it).

        Raises
        ------
        ValueError
            If ``n`` is not an int in ``[0, len(target pool)]``.
        """
        size = self.sizes["target"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= size:
            raise ValueError(f"n must be an int in [0, {size}] (the target pool size), got {n!r}")
        x, y = self.target
        return x[:n], y[:n]

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Task:
        """A copy with inputs (and regression targets) cast to ``dtype`` and moved to ``device``.

        Raises
        ------
        ValueError
            If ``dtype`` is not a floating-point dtype.
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")

        def convert(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            x = x.to(device=device, dtype=dtype)
            y = y.to(device=device, dtype=dtype if y.is_floating_point() else None)
            return x, y

        return Task(
            source=convert(*self.source_pair) if self.source_pair is not None else None,
            target=convert(*self.target),
            test=convert(*self.test),
            meta=self.meta,
        )
