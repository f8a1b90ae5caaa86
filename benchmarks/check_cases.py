"""Networks and the forward-pass clock shared by the short CPU checks
(``vjp_loop_check.py``, ``fisher_bound_check.py``)."""

from __future__ import annotations

import time

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


def forward_seconds(model: nn.Module, x: Tensor, repeats: int = 5) -> float:
    """CPU time of one ``no_grad`` forward pass (mean of ``repeats`` after a warm-up)."""
    with torch.no_grad():
        model(x)
        t0 = time.process_time()
        for _ in range(repeats):
            model(x)
    return (time.process_time() - t0) / repeats
