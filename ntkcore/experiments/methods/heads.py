"""The read-out layer ``head`` of a zoo network: its input features and a readout module.

Every zoo architecture ends in a linear layer named ``head`` (``ntkcore.zoo`` convention);
ABLR uses its input as features, and the last-layer baselines retrain it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["HeadFeatures", "HeadReadout", "find_head"]

_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def find_head(network: nn.Module) -> nn.Module:
    """The unique submodule named ``head`` (or ``<prefix>.head``); ``ValueError`` otherwise."""
    heads = [m for name, m in network.named_modules() if name == "head" or name.endswith(".head")]
    if len(heads) != 1:
        raise ValueError(
            f"expected exactly one read-out submodule named 'head' (the zoo convention); "
            f"{type(network).__name__} has {len(heads)}"
        )
    return heads[0]


class HeadFeatures(nn.Module):
    """The input of a network's ``head``: its last hidden features, shape (n, D).

    Wraps (does not copy) the network; the features are captured by a forward pre-hook on
    ``head`` during an ordinary forward pass, so any zoo architecture works unchanged.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.head = find_head(network)

    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            self.network(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1)


class HeadReadout(nn.Module):
    """``head(φ)[:, :columns]``: a network's output computed from its head's input features.

    Shares ``head`` (training it trains the network's head). Use :meth:`matches` to check
    that a network's output really is this function of its features.
    """

    def __init__(self, head: nn.Module, columns: int) -> None:
        super().__init__()
        self.head = head
        self.columns = int(columns)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(features)[:, : self.columns]

    @classmethod
    def of(cls, network: nn.Module, x: Tensor) -> tuple[HeadReadout, Tensor] | None:
        """``(readout, φ(x))`` when network(x) equals readout(φ(x)) at ``x`` (to 1e-5
        relative) and no layer behaves differently in training mode (BatchNorm, Dropout),
        else None (then training the readout would not be training the network's head)."""
        if any(isinstance(m, _MODE_DEPENDENT) for m in network.modules()):
            return None
        features = HeadFeatures(network)
        with torch.no_grad():
            phi = features(x)
            out = network(x)
            readout = cls(features.head, out.shape[1])
            again = readout(phi)
        if again.shape != out.shape:
            return None
        scale = out.abs().max().clamp_min(1.0)
        if not bool(((again - out).abs().max() <= 1e-5 * scale).item()):
            return None
        return readout, phi
