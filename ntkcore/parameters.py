"""Flattening between a module's named parameters and one vector in R^p.

The linearization of Eq. 1 of the paper treats the trained weights θ as one vector of
length p. Its coordinates follow ``model.named_parameters()`` order (tied parameters
appear once, under their first name), each tensor flattened in row-major order.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ParameterFilter = None | str | Iterable[str] | Callable[[str, nn.Parameter], bool]


@dataclass(frozen=True)
class ParameterLayout:
    """Names, shapes and offsets of the linearized parameters inside the flat vector.

    Parameters
    ----------
    names : tuple of str
        Parameter names in ``named_parameters()`` order.
    shapes : tuple of torch.Size
        Shape of each parameter tensor.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def num_params(self) -> int:
        """p, the length of the flat parameter vector."""
        return sum(self.numels)

    def slices(self) -> dict[str, slice]:
        """The slice of the flat vector holding each named parameter."""
        out, start = {}, 0
        for name, numel in zip(self.names, self.numels, strict=True):
            out[name] = slice(start, start + numel)
            start += numel
        return out

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenate named tensors into flat vectors.

        Parameters
        ----------
        tensors : mapping of str to Tensor
            One tensor per parameter name, each of shape ``(*batch, *shape)``.

        Returns
        -------
        Tensor
            Shape ``(*batch, p)``.
        """
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"flatten: missing tensors for parameters {missing}")
        parts = []
        batch_shape = None
        for name, shape in zip(self.names, self.shapes, strict=True):
            t = tensors[name]
            nd = len(shape)
            if tuple(t.shape[t.dim() - nd :]) != tuple(shape):
                raise ValueError(
                    f"flatten: tensor for {name!r} has shape {tuple(t.shape)}, "
                    f"expected trailing shape {tuple(shape)}"
                )
            b = t.shape[: t.dim() - nd]
            if batch_shape is None:
                batch_shape = b
            elif b != batch_shape:
                raise ValueError(
                    f"flatten: inconsistent batch shapes {tuple(batch_shape)} and {tuple(b)}"
                )
            parts.append(t.reshape(*b, -1))
        return torch.cat(parts, dim=-1)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split flat vectors of shape ``(*batch, p)`` into named tensors (views)."""
        p = self.num_params
        if vector.shape[-1:] != (p,):
            raise ValueError(
                f"unflatten: expected a vector with last dimension p={p}, got shape "
                f"{tuple(vector.shape)}"
            )
        batch = vector.shape[:-1]
        chunks = torch.split(vector, list(self.numels), dim=-1)
        return {
            name: c.reshape(tuple(batch) + tuple(shape))
            for name, shape, c in zip(self.names, self.shapes, chunks, strict=True)
        }


def select_parameters(model: nn.Module, params: ParameterFilter = None) -> list[str]:
    """Names of the parameters to linearize, in ``named_parameters()`` order.

    Parameters
    ----------
    model : nn.Module
        The network.
    params : None, str, iterable of str, or callable
        ``None`` selects every parameter with ``requires_grad``. A string or an iterable
        of strings selects parameters whose name matches any of the shell-style patterns
        (``fnmatch``; a pattern without wildcards also matches as a prefix, so
        ``"layers.2"`` selects ``layers.2.weight`` and ``layers.2.bias``). A callable
        ``(name, parameter) -> bool`` selects where it returns True.

    Returns
    -------
    list of str
        The selected names; raises ``ValueError`` if none is selected.
    """
    named = list(model.named_parameters())
    if not named:
        raise ValueError(
            f"the model ({type(model).__name__}) has no parameters: nothing to linearize"
        )
    if params is None:
        chosen = [n for n, p in named if p.requires_grad]
    elif callable(params):
        chosen = [n for n, p in named if params(n, p)]
    else:
        if isinstance(params, str):
            patterns = [params]
        else:
            try:
                patterns = list(params)
            except TypeError:
                raise ValueError(
                    "params must be None, a name pattern, an iterable of patterns or a "
                    f"callable (name, parameter) -> bool; got {params!r}"
                ) from None
        if not patterns or not all(isinstance(q, str) for q in patterns):
            raise ValueError(f"params must be patterns (str), got {params!r}")

        def matches(name: str) -> bool:
            for q in patterns:
                if fnmatch.fnmatchcase(name, q):
                    return True
                if not any(ch in q for ch in "*?[") and (
                    name == q or name.startswith(q.rstrip(".") + ".")
                ):
                    return True
            return False

        chosen = [n for n, _ in named if matches(n)]
    if not chosen:
        raise ValueError(
            f"params={params!r} selects no parameter; available: {[n for n, _ in named]}"
        )
    return chosen


def last_layers(model: nn.Module, k: int) -> list[str]:
    """Names of the parameters of the last ``k`` modules that own parameters.

    "Top layers" in the paper's sense: ``Linearization(model, params=last_layers(model, 1))``
    linearizes only the final layer (a Bayesian last-layer model).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    owners: list[str] = []
    for mod_name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            owners.append(mod_name)
    if not owners:
        raise ValueError(f"the model ({type(model).__name__}) has no parameters")
    keep = set(owners[-k:])
    names = []
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        if owner in keep:
            names.append(name)
    return names
