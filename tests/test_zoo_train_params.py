"""``zoo.train(params=...)``: training a subset of a network's parameters (the last-layer
retraining baselines of ``ntkcore.experiments.methods`` use it)."""

from __future__ import annotations

import copy

import pytest
import torch

from ntkcore import zoo


def test_zoo_train_params_freezes_the_rest_and_matches_manual_freezing():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=gen)
    y = torch.randn(30, 2, generator=gen)
    with zoo.seeded(1):
        net = zoo.create("mlp", in_features=3, out_features=2, width=8, depth=2)
    manual = copy.deepcopy(net)
    start = copy.deepcopy(net.state_dict())
    zoo.train(net, x, y, loss="mse", epochs=25, lr=1e-2, params="head")
    for name, p in manual.named_parameters():
        p.requires_grad_(name.startswith("head."))
    zoo.train(manual, x, y, loss="mse", epochs=25, lr=1e-2)
    for name, p in net.named_parameters():
        assert p.requires_grad  # restored
        assert torch.equal(p, manual.state_dict()[name])  # bit-identical trajectory
        assert torch.equal(p, start[name]) != name.startswith("head."), name
    with pytest.raises(ValueError, match="selects no parameter"):
        zoo.train(net, x, y, loss="mse", epochs=1, params="nothing-like-this")


def test_zoo_train_params_restores_requires_grad_when_interrupted():
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    net = zoo.create("mlp", in_features=2, width=4, depth=1)
    net.body[0].bias.requires_grad_(False)  # a caller's own frozen parameter stays frozen

    def stop(fraction: float) -> None:
        if fraction > 0.1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.train(net, x, y, loss="mse", epochs=50, params="head", progress=stop)
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    assert flags == {"body.0.weight": True, "body.0.bias": False, "head.weight": True,
                     "head.bias": True}
