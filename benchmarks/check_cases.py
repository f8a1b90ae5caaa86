"""Networks shared by the short CPU checks (``vjp_loop_check.py``, ``fisher_bound_check.py``);
their clocks and forward-pass unit come from ``ntkcore.experiments.clock``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ntkcore import zoo


def cases(resnet_batch: int) -> list[tuple[str, nn.Module, Tensor]]:
    """The MLP 784-512-512-10 on 256 points and PreResNet-20 on ``resnet_batch`` images,
    at initialization, in eval mode."""
    out = [
        ("mlp", zoo.create("mlp", in_features=784, out_features=10, width=512, depth=2),
         torch.randn(256, 784)),
        ("preresnet20", zoo.create("preresnet20"), torch.randn(resnet_batch, 3, 32, 32)),
    ]  # fmt: skip
    for _, model, _ in out:
        model.eval()
    return out
