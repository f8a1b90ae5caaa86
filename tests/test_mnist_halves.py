"""The ``half`` option of the MNIST-like loaders: MNIST1 or MNIST2 as the source split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkcore import data


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_half_two_swaps_the_halves_and_keeps_the_test_set(name):
    first, second = data.load(name, seed=3), data.load(name, seed=3, half=2)
    e1, e2 = first.meta.extra, second.meta.extra
    # same partition: the halves trade places, the test set is the same images in the same order
    assert set(e2["source_index"].tolist()) == set(e1["target_index"].tolist())
    assert set(e2["target_index"].tolist()) == set(e1["source_index"].tolist())
    assert torch.equal(e2["test_index"], e1["test_index"])
    assert torch.equal(second.test[0], first.test[0])
    assert not set(e2["source_index"].tolist()) & set(e1["source_index"].tolist())
    # balanced: 200 images of every class in the new source
    assert np.array_equal(np.bincount(second.source[1].numpy(), minlength=10), np.full(10, 200))
    assert second.meta.params["half"] == 2 and first.meta.params["half"] == 1
    assert "source = second half" in second.meta.description


def test_source_order_of_half_two_does_not_depend_on_seed():
    # the seeding convention: the source split never depends on the target seed
    a, b = data.load("mnist", seed=0, half=2), data.load("mnist", seed=7, half=2)
    assert torch.equal(a.source[0], b.source[0]) and torch.equal(a.source[1], b.source[1])
    assert not torch.equal(a.target[1], b.target[1])  # the pool is reordered by seed


def test_half_is_validated():
    with pytest.raises(ValueError, match="half"):
        data.load("mnist", half=3)
    with pytest.raises(ValueError, match="half"):
        data.load("mnist", half=True)
    with pytest.raises(ValueError, match="split='halves'"):
        data.load("mnist", split="classes", half=2)
    assert data.info("fashion-mnist-32")["options"]["half"] == 1
