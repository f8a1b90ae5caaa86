"""Recorded activation patterns (:mod:`ntkcore.kinks`) against hand-written references.

The replayed network at θ' must equal the *piecewise-linear network with the pieces of θ*,
written out here with explicit masks and window arithmetic (no ntkcore code); at θ it must
equal the real network bit for bit, and its Jacobian at θ must be the real Jacobian
(dense float64 ``jacrev``). Then the point of it all: finite-difference Fisher products of
ReLU / max-pooling networks with frozen kinks are an order of magnitude more accurate in
float32 than with live kinks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp

from ntkcore.fisher import default_eps, fisher_vp
from ntkcore.kinks import ActivationPattern, PatternMismatch
from ntkcore.linearization import Linearization
from tests.test_fisher import ReLUBatchNormCNN, _with_bn_statistics


class KinkZoo(nn.Module):
    """Every replayed operation once: ReLU (module, in place, functional, method),
    leaky ReLU, ReLU6, hardtanh, threshold, max-pooling with and without indices,
    adaptive max-pooling; input (n, 2, 8, 8), 3 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.LeakyReLU(0.1)
        self.act3 = nn.ReLU6()
        self.act4 = nn.Threshold(0.2, -0.5)
        self.head = nn.Linear(4 * 2 * 2 + 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.act1(self.c1(x)))  # (n, 4, 4, 4)
        h = self.act2(self.c2(h))
        h, _ = F.max_pool2d(h, 2, return_indices=True)  # (n, 4, 2, 2)
        g = F.adaptive_max_pool2d(self.act3(3 * h), 1).flatten(1)  # (n, 4)
        h = F.hardtanh(self.act4(h), -0.3, 0.4).flatten(1)
        out = torch.cat([h.relu(), torch.relu(g)], dim=1)
        return F.relu(self.head(out)) + self.head(out).relu_() * 0.5


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _perturbed(params: dict[str, Tensor], scale: float, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()
    }


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ replay semantics
def test_replay_at_theta_is_bitwise_the_network():
    torch.manual_seed(0)
    model = KinkZoo().eval()
    x = torch.randn(6, 2, 8, 8)
    pattern = ActivationPattern()
    with torch.no_grad(), pattern.recording():
        recorded = model(x)
    # relu (module in place), max_pool, leaky, max_pool with indices, relu6 (hardtanh),
    # adaptive max, threshold, hardtanh, Tensor.relu, torch.relu, F.relu, Tensor.relu_
    assert [r.kind for r in pattern.records] == [
        "relu", "max_pool2d", "leaky_relu", "max_pool2d", "hardtanh",
        "adaptive_max_pool2d", "threshold", "hardtanh", "relu", "relu", "relu", "relu",
    ]  # fmt: skip
    with torch.no_grad():
        plain = model(x)
        with pattern.replaying():
            replayed = model(x)
    assert torch.equal(recorded, plain)
    assert torch.equal(replayed, plain)
    assert pattern.nbytes > 0


def test_replayed_mlp_is_the_network_with_the_masks_of_theta():
    model = _mlp().double().eval()
    x = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = _params(model)
    far = _perturbed(theta, 0.3, seed=2)  # far enough to flip many units
    pattern = ActivationPattern()
    with torch.no_grad(), pattern.recording():
        model(x)
    with torch.no_grad():
        h1 = x @ theta["0.weight"].T + theta["0.bias"]
        m1 = h1 > 0
        h2 = (h1 * m1) @ theta["2.weight"].T + theta["2.bias"]
        m2 = h2 > 0
    # the reference: the same affine maps at θ', ReLUs replaced by the masks of θ
    with torch.no_grad():
        z1 = x @ far["0.weight"].T + far["0.bias"]
        z2 = (z1 * m1) @ far["2.weight"].T + far["2.bias"]
        expected = (z2 * m2) @ far["4.weight"].T + far["4.bias"]
        with pattern.replaying():
            got = functional_call(model, far, (x,))
        live = functional_call(model, far, (x,))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert (live - expected).abs().max() > 1e-3  # the pattern did change: a real test


def test_replayed_max_pooling_takes_the_argmax_of_theta():
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 2, 3, padding=1).double()
    model = nn.Sequential(conv, nn.MaxPool2d(2), nn.Flatten()).eval()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    theta = _params(model)
    far = _perturbed(theta, 0.5, seed=4)
    pattern = ActivationPattern()
    with torch.no_grad(), pattern.recording():
        model(x)
    with torch.no_grad():
        # windows of the pre-pooling maps at θ and θ' by explicit unfolding (n, c, 3, 3, 4)
        def windows(params: dict[str, Tensor]) -> Tensor:
            z = F.conv2d(x, params["0.weight"], params["0.bias"], padding=1)
            return z.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)

        choice = windows(theta).argmax(-1, keepdim=True)
        expected = windows(far).gather(-1, choice).squeeze(-1).flatten(1)
        with pattern.replaying():
            got = functional_call(model, far, (x,))
        live = functional_call(model, far, (x,))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.equal(live, expected)


def test_replayed_jacobian_at_theta_is_the_jacobian():
    """d/dε f_replayed(θ + εv) at ε = 0 equals J(θ) v from dense float64 jacrev."""
    torch.manual_seed(5)
    model = KinkZoo().double().eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    theta = _params(model)
    names = list(theta)
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(theta)
    dense = torch.cat([jac[k].reshape(*jac[k].shape[:2], -1) for k in names], dim=-1)
    v = {k: torch.randn_like(t) for k, t in theta.items()}
    flat_v = torch.cat([v[k].reshape(-1) for k in names])
    pattern = ActivationPattern()
    with torch.no_grad(), pattern.recording():
        model(x)
    with pattern.replaying():
        _, tangent = jvp(lambda p: functional_call(model, p, (x,)), (theta,), (v,))
    torch.testing.assert_close(tangent, dense @ flat_v, rtol=1e-10, atol=1e-12)


def test_in_place_replay_writes_into_its_input():
    relu = nn.ReLU(inplace=True)
    z = torch.tensor([[-1.0, 2.0, 0.5]])
    pattern = ActivationPattern()
    with pattern.recording():
        relu(z.clone())
    z2 = torch.tensor([[3.0, -4.0, 0.25]])  # the pattern of z: off, on, on
    with pattern.replaying():
        out = relu(z2)
    assert out is z2
    assert torch.equal(z2, torch.tensor([[0.0, -4.0, 0.25]]))


class Branchy(nn.Module):
    """Data-dependent control flow: a second ReLU only for inputs with a positive sum."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.lin(x))
        if x.sum() > 0:
            h = torch.relu(self.lin(h))
        return h


def test_a_different_sequence_of_kinks_is_refused():
    model = Branchy()
    pattern = ActivationPattern()
    with torch.no_grad(), pattern.recording():
        model(torch.ones(2, 3))
    with pytest.raises(PatternMismatch, match="recorded kinked operations; use kinks='live'"):
        with torch.no_grad(), pattern.replaying():
            model(-torch.ones(2, 3))
    with pytest.raises(ValueError, match="kinked operation 0"):
        with torch.no_grad(), pattern.replaying():
            torch.relu(torch.ones(5))
    empty = ActivationPattern()
    with torch.no_grad(), empty.recording():
        model(-torch.ones(2, 3))
    with pytest.raises(PatternMismatch, match="more often"):
        with torch.no_grad(), empty.replaying():
            model(torch.ones(2, 3))


# ------------------------------------------------------------------ Fisher products
def _cnn_case() -> tuple[Linearization, Tensor, Tensor]:
    torch.manual_seed(3)
    model = _with_bn_statistics(ReLUBatchNormCNN(), 4)
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    lin = Linearization(model)
    v = torch.randn(4, lin.num_params, generator=torch.Generator().manual_seed(7))
    return lin, x, v


def _rel_err(a: Tensor, ref: Tensor) -> float:
    a, ref = a.double(), ref.double()
    return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


@pytest.mark.parametrize("likelihood", ["gaussian", "categorical"])
def test_frozen_kinks_make_float32_fd_more_accurate(likelihood):
    """Same step, same float32 passes: replaying the pattern removes the kink crossings.
    Measured: live 1.3e-3 vs frozen 1.2e-5 (central, 64x the live forward rule)."""
    lin, x, v = _cnn_case()
    exact = fisher_vp(lin, x, v, likelihood=likelihood, method="exact")
    theta_norm = float(lin.parameter_vector().double().norm())
    eps = 16 * default_eps(theta_norm, torch.float32, kinks="live")
    kwargs = {"likelihood": likelihood, "eps": eps, "central": True}
    frozen = _rel_err(fisher_vp(lin, x, v, kinks="frozen", **kwargs), exact)
    live = _rel_err(fisher_vp(lin, x, v, kinks="live", **kwargs), exact)
    assert frozen <= 1e-4
    assert live >= 10 * frozen
    # the default steps of each treatment
    assert _rel_err(fisher_vp(lin, x, v, likelihood=likelihood), exact) <= 1e-3
    assert _rel_err(fisher_vp(lin, x, v, likelihood=likelihood, central=True), exact) <= 1e-4


def test_frozen_fd_through_jacobian_at_records_once():
    lin, x, v = _cnn_case()
    at_x = lin.at(x, cache="pullback")
    patterns = at_x.activation_patterns()
    assert at_x.activation_patterns() is patterns  # kept with the cache
    assert sum(len(p) for _, p in patterns) == 2 * len(patterns)  # two ReLUs per chunk
    one_shot = fisher_vp(lin, x, v, likelihood="categorical", central=True)
    bound = fisher_vp(at_x, None, v, likelihood="categorical", central=True)
    torch.testing.assert_close(bound, one_shot, rtol=1e-5, atol=1e-7)
    exact = fisher_vp(lin, x, v, likelihood="categorical", method="exact")
    assert _rel_err(bound, exact) <= 1e-4
    # without a cache nothing is kept
    none = lin.at(x, cache="none")
    assert none.activation_patterns() is not none.activation_patterns()


def test_frozen_fd_in_float64_matches_exact():
    """With frozen kinks the float64 forward difference has the O(ε) truncation of a
    smooth function even across kinks a long step would cross."""
    torch.manual_seed(0)
    model = KinkZoo().double().eval()
    x = torch.randn(16, 2, 8, 8, dtype=torch.float64)
    lin = Linearization(model)
    v = torch.randn(2, lin.num_params, dtype=torch.float64)
    exact = fisher_vp(lin, x, v, likelihood="categorical", method="exact")
    for central, tol in ((False, 1e-5), (True, 1e-8)):
        got = fisher_vp(lin, x, v, likelihood="categorical", eps=1e-6, central=central)
        assert _rel_err(got, exact) <= tol


def test_kinks_option_is_validated():
    lin, x, v = _cnn_case()
    with pytest.raises(ValueError, match="kinks must be one of"):
        fisher_vp(lin, x, v, kinks="frozen-ish")
    with pytest.raises(ValueError, match="kinks must be one of"):
        default_eps(1.0, torch.float32, kinks=None)
    # control flow on the parameters: θ + εv takes the other branch (bias[0] = 0, v < 0)
    model = ParameterBranch()
    lin = Linearization(model)
    x, v = torch.randn(4, 3), -torch.ones(lin.num_params)
    with pytest.raises(ValueError, match="use kinks='live'"):
        fisher_vp(lin, x, v)
    # live kinks do not replay: the same call goes through
    assert torch.isfinite(fisher_vp(lin, x, v, kinks="live")).all()


class ParameterBranch(nn.Module):
    """A second ReLU only while ``lin.bias[0] >= 0`` (0 at construction)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.bias[0] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.lin(x))
        if float(self.lin.bias[0]) >= 0.0:
            h = torch.relu(self.lin(h))
        return h


@pytest.mark.parametrize(
    ("op", "reference"),
    [
        # reference(z2, z): the piece chosen by z, evaluated at z2
        (lambda t: F.leaky_relu(t, 0.2), lambda z2, z: torch.where(z > 0, z2, 0.2 * z2)),
        (lambda t: F.hardtanh(t, -0.5, 0.5),
         lambda z2, z: torch.where(z < -0.5, -0.5, torch.where(z > 0.5, 0.5, z2))),
        (lambda t: F.relu6(t), lambda z2, z: torch.where(z < 0, 0.0, torch.where(z > 6, 6.0, z2))),
        (lambda t: F.threshold(t, 0.3, -2.0), lambda z2, z: torch.where(z > 0.3, z2, -2.0)),
        (lambda t: torch.relu_(t.clone()), lambda z2, z: torch.where(z > 0, z2, 0.0)),
    ],
)  # fmt: skip
def test_elementwise_pieces_follow_the_recorded_input(op, reference):
    g = torch.Generator().manual_seed(8)
    z = 4 * torch.randn(200, generator=g, dtype=torch.float64)
    z2 = 4 * torch.randn(200, generator=g, dtype=torch.float64)  # most pieces differ
    pattern = ActivationPattern()
    with pattern.recording():
        torch.testing.assert_close(op(z), reference(z, z))
    with pattern.replaying():
        got = op(z2)
    torch.testing.assert_close(got, reference(z2, z), rtol=0, atol=0)
    assert not torch.equal(got, op(z2))  # the live op differs: the pattern matters
