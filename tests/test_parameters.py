"""Flattening layout and parameter selection (:mod:`ntkcore.parameters`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ntkcore.parameters import ParameterLayout, last_layers, select_parameters
from tests.models import CNNWithBatchNorm, TiedWithBuffer, make_mlp


def _layout() -> ParameterLayout:
    return ParameterLayout(
        names=("a", "b", "c"), shapes=(torch.Size([2, 3]), torch.Size([]), torch.Size([4]))
    )


# --------------------------------------------------------------------------- layout
def test_layout_sizes_and_slices() -> None:
    layout = _layout()
    assert layout.numels == (6, 1, 4)
    assert layout.num_params == 11
    assert layout.slices() == {"a": slice(0, 6), "b": slice(6, 7), "c": slice(7, 11)}


def test_flatten_is_row_major_concatenation_in_name_order() -> None:
    layout = _layout()
    a = torch.arange(6.0).reshape(2, 3)
    b = torch.tensor(-1.0)
    c = torch.tensor([10.0, 11.0, 12.0, 13.0])
    # dict order differs from layout order: the layout order wins
    flat = layout.flatten({"c": c, "a": a, "b": b})
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, -1, 10, 11, 12, 13]


def test_flatten_unflatten_round_trip_with_batch_dims() -> None:
    layout = _layout()
    v = torch.randn(2, 5, layout.num_params)
    parts = layout.unflatten(v)
    assert list(parts) == ["a", "b", "c"]
    assert parts["a"].shape == (2, 5, 2, 3)
    assert parts["b"].shape == (2, 5)
    assert parts["c"].shape == (2, 5, 4)
    assert torch.equal(parts["a"][1, 3], v[1, 3, :6].reshape(2, 3))
    assert torch.equal(layout.flatten(parts), v)


def test_unflatten_scalar_parameter_without_batch() -> None:
    """0-d parameters (e.g. a learnable temperature) unflatten to 0-d tensors."""
    layout = ParameterLayout(names=("t", "w"), shapes=(torch.Size([]), torch.Size([2])))
    parts = layout.unflatten(torch.tensor([3.0, 4.0, 5.0]))
    assert parts["t"].shape == () and parts["t"].item() == 3.0
    assert parts["w"].tolist() == [4.0, 5.0]


def test_unflatten_returns_views() -> None:
    layout = _layout()
    v = torch.zeros(3, layout.num_params)
    layout.unflatten(v)["c"][1, 2] = 7.0
    assert v[1, 9] == 7.0


def test_flatten_errors_name_the_problem() -> None:
    layout = _layout()
    good = {"a": torch.zeros(2, 3), "b": torch.zeros(()), "c": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"missing.*'b'"):
        layout.flatten({k: t for k, t in good.items() if k != "b"})
    with pytest.raises(ValueError, match=r"'a' has shape \(3, 2\), expected trailing shape"):
        layout.flatten({**good, "a": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="inconsistent batch shapes"):
        layout.flatten({"a": torch.zeros(5, 2, 3), "b": torch.zeros(4), "c": torch.zeros(5, 4)})


@pytest.mark.parametrize("shape", [(10,), (12,), (3, 12), ()])
def test_unflatten_rejects_wrong_length(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="p=11"):
        _layout().unflatten(torch.zeros(shape))


def test_layout_of_a_model_follows_named_parameters() -> None:
    model = CNNWithBatchNorm()
    names = select_parameters(model)
    named = dict(model.named_parameters())
    layout = ParameterLayout(tuple(names), tuple(named[n].shape for n in names))
    theta = layout.flatten({n: p.detach() for n, p in named.items()})
    assert torch.equal(theta, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))


# --------------------------------------------------------------------------- selection
def test_select_all_in_named_parameters_order() -> None:
    model = CNNWithBatchNorm()
    assert select_parameters(model) == [n for n, _ in model.named_parameters()]


def test_select_skips_frozen_parameters_by_default() -> None:
    model = make_mlp(3, 4, 2)
    model[2].bias.requires_grad_(False)
    assert select_parameters(model) == ["0.weight", "0.bias", "2.weight", "4.weight", "4.bias"]
    # explicit patterns may select frozen parameters
    assert select_parameters(model, "2") == ["2.weight", "2.bias"]


def test_tied_parameter_listed_once_under_first_name() -> None:
    model = TiedWithBuffer()
    assert select_parameters(model) == ["enc.weight", "enc.bias", "dec.bias"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("0", ["0.weight", "0.bias"]),
        ("0.", ["0.weight", "0.bias"]),
        ("1", ["1.weight", "1.bias"]),  # a prefix without wildcards matches whole components
        ("10", ["10.weight", "10.bias"]),
        ("1.weight", ["1.weight"]),
        ("*.bias", [f"{i}.bias" for i in range(11)]),
        ("1?.*", ["10.weight", "10.bias"]),
        ("[01].weight", ["0.weight", "1.weight"]),
        (["10.bias", "0.weight"], ["0.weight", "10.bias"]),  # model order, not list order
        (("1", "1.bias"), ["1.weight", "1.bias"]),  # no duplicates
        (lambda name, p: p.dim() == 2 and name < "1.", ["0.weight"]),
    ],
)
def test_select_by_patterns_and_callables(params: object, expected: list[str]) -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    assert select_parameters(model, params) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("params", ["nothing", ["x*", "y"], lambda n, p: False])
def test_select_nothing_raises_listing_available(params: object) -> None:
    with pytest.raises(ValueError, match=r"selects no parameter.*available.*'0\.weight'"):
        select_parameters(make_mlp(), params)  # type: ignore[arg-type]


@pytest.mark.parametrize("params", [[], [1], ["0", None]], ids=["empty", "int", "none-in-list"])
def test_select_malformed_patterns(params: object) -> None:
    with pytest.raises(ValueError, match="params must be patterns"):
        select_parameters(make_mlp(), params)  # type: ignore[arg-type]


def test_select_non_iterable_filter_is_a_value_error() -> None:
    """A filter that is neither None, str, iterable nor callable gets a ValueError."""
    with pytest.raises(ValueError, match="params"):
        select_parameters(make_mlp(), 3)  # type: ignore[arg-type]


def test_select_without_parameters() -> None:
    with pytest.raises(ValueError, match="has no parameters"):
        select_parameters(nn.ReLU())


# --------------------------------------------------------------------------- last_layers
def test_last_layers_of_mlp() -> None:
    model = make_mlp(3, 4, 2, depth=2)  # Linear 0, 2, 4
    assert last_layers(model, 1) == ["4.weight", "4.bias"]
    assert last_layers(model, 2) == ["2.weight", "2.bias", "4.weight", "4.bias"]
    assert last_layers(model, 99) == [n for n, _ in model.named_parameters()]


def test_last_layers_counts_modules_that_own_parameters() -> None:
    model = CNNWithBatchNorm()  # conv1, bn1, conv2 (no bias), bn2, head
    assert last_layers(model, 1) == ["head.weight", "head.bias"]
    assert last_layers(model, 3) == [
        "conv2.weight",
        "bn2.weight",
        "bn2.bias",
        "head.weight",
        "head.bias",
    ]


def test_last_layers_nested_and_root_parameters() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 3)))
            self.temperature = nn.Parameter(torch.ones(()))

    net = Net()
    # the root owns `temperature` and comes first in named_modules()
    assert last_layers(net, 1) == ["block.1.0.weight", "block.1.0.bias"]
    assert last_layers(net, 3) == [n for n, _ in net.named_parameters()]


@pytest.mark.parametrize("k", [0, -2])
def test_last_layers_needs_positive_k(k: int) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        last_layers(make_mlp(), k)


def test_last_layers_without_parameters() -> None:
    with pytest.raises(ValueError, match="has no parameters"):
        last_layers(nn.Sequential(nn.ReLU()), 1)
