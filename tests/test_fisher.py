"""Fisher-vector products (:func:`ntkcore.fisher.fisher_vp`) against dense references.

The reference Fisher is assembled here without any ntkcore code: per-point Jacobians from
``torch.func.jacrev`` (:func:`tests.models.dense_jacobian`) and output-space Fishers Λᵢ taken
as the Hessian, at f' = f, of the KL divergence between ``torch.distributions`` objects
(Normal / Categorical), i.e. F = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ in float64. ``exact`` and ``autograd``
must match it to 1e-8 relative in float64, ``fd`` to its stated tolerances; float32 ``fd``
is checked against float32 ``exact`` on a tanh MLP and a ReLU/BatchNorm CNN.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal, kl_divergence
from torch.func import hessian

from ntkcore.fisher import (
    _fd_points,
    calibrate_eps,
    default_eps,
    fisher_vp,
    output_fisher,
    output_kl,
)
from ntkcore.linearization import Linearization
from tests.models import case, dense_jacobian, make_mlp, training_flags

RTOL = 1e-8
N = 6
METHODS = ["exact", "autograd", "fd"]
# float64 finite differences: forward O(ε) with ε ≈ 1e-7, central O(ε²) + rounding
FD64_RTOL = {False: 1e-5, True: 1e-7}
SCALE_FLOOR = 1e-3


# ------------------------------------------------------------------------- references
def _normal(f: Tensor) -> Normal:
    m = f.shape[-1] // 2
    return Normal(f[..., :m], nn.functional.softplus(f[..., m:]) + SCALE_FLOOR)


def reference_kl(f: Tensor, g: Tensor, likelihood: str) -> Tensor:
    """KL(p(y|f) ‖ p(y|g)) per point from torch.distributions, shape (n,)."""
    if likelihood == "gaussian":
        return kl_divergence(Normal(f, 1.0), Normal(g, 1.0)).sum(-1)
    if likelihood == "categorical":
        return kl_divergence(Categorical(logits=f), Categorical(logits=g))
    return kl_divergence(_normal(f), _normal(g)).sum(-1)


def reference_output_fisher(f: Tensor, likelihood: str) -> Tensor:
    """Λᵢ = ∇²_g KL(p(y|fᵢ) ‖ p(y|g)) at g = fᵢ, shape (n, o, o)."""
    blocks = []
    for fi in f:
        h = hessian(lambda g, fi=fi: reference_kl(fi[None], g[None], likelihood).sum())(fi)
        blocks.append(h)
    return torch.stack(blocks)


def dense_fisher(model: nn.Module, x: Tensor, likelihood: str, names=None) -> Tensor:
    """(1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ from jacrev Jacobians and KL Hessians, (p, p) float64."""
    jac = dense_jacobian(model, x, names)  # (n, o, p)
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        f = ref(x).reshape(x.shape[0], -1)
    lam = reference_output_fisher(f, likelihood)
    return torch.einsum("nap,nab,nbq->pq", jac, lam, jac) / x.shape[0]


def rel_err(a: Tensor, b: Tensor) -> float:
    """Largest relative error over the rows (vectors) of a batch."""
    a, b = a.double().reshape(-1, a.shape[-1]), b.double().reshape(-1, b.shape[-1])
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


# ------------------------------------------------------------------------- models
class HeteroscedasticNet(nn.Module):
    """tanh MLP with 2 targets: outputs (mean_1, mean_2, raw_scale_1, raw_scale_2)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_mlp(3, 7, 4, depth=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ReLUBatchNormCNN(nn.Module):
    """conv-BN-ReLU x2, global average pooling, 5 logits; input (n, 3, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)))
        return self.head(h.mean(dim=(-2, -1)))


def _with_bn_statistics(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
    return model


def _setup(name: str):
    """(model float64 train mode, inputs float64) for a named test network."""
    if name == "hetero":
        torch.manual_seed(5)
        model = HeteroscedasticNet().double()
        x = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        return model, x
    c = case(name)
    return c.build(), c.inputs(N)


# (network, likelihood): tanh MLP (2 outputs), BatchNorm CNN on images (3 outputs), a
# 2-target heteroscedastic net; gaussian also on the tied-weights/buffers net (4 outputs).
COMBOS = [
    ("mlp", "gaussian"),
    ("mlp", "categorical"),
    ("cnn_bn", "gaussian"),
    ("cnn_bn", "categorical"),
    ("tied_buffer", "gaussian"),
    ("hetero", "heteroscedastic"),
    ("hetero", "gaussian"),
]
_FISHERS: dict[tuple[str, str], Tensor] = {}


def _dense(name: str, likelihood: str) -> Tensor:
    key = (name, likelihood)
    if key not in _FISHERS:
        model, x = _setup(name)
        _FISHERS[key] = dense_fisher(model, x, likelihood)
    return _FISHERS[key]


def _vectors(p: int, k: int = 3, seed: int = 2) -> Tensor:
    return torch.randn(k, p, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _floor(likelihood: str) -> dict:
    return {"scale_floor": SCALE_FLOOR} if likelihood == "heteroscedastic" else {}


# ------------------------------------------------------------------------- output space
@pytest.mark.parametrize("likelihood", ["gaussian", "categorical", "heteroscedastic"])
def test_output_space_kl_and_fisher_match_torch_distributions(likelihood):
    g = torch.Generator().manual_seed(0)
    f = 1.5 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    f2 = f + 0.7 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    kw = _floor(likelihood)
    torch.testing.assert_close(
        output_kl(f, f2, likelihood, **kw), reference_kl(f, f2, likelihood), rtol=1e-12, atol=0
    )
    lam = output_fisher(f, likelihood, **kw)
    torch.testing.assert_close(lam, reference_output_fisher(f, likelihood), rtol=1e-10, atol=1e-14)


def test_heteroscedastic_fisher_closed_form():
    """Λ = diag(1/σ², 2 sigmoid(s)²/σ²), σ = softplus(s) + σ₀: the documented derivation."""
    f = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    lam = output_fisher(f, "heteroscedastic", scale_floor=0.1)
    s = f[:, 1]
    sigma = torch.log1p(torch.exp(s)) + 0.1
    expected = torch.zeros(2, 2, 2, dtype=torch.float64)
    expected[:, 0, 0] = 1 / sigma**2
    expected[:, 1, 1] = 2 * (1 / (1 + torch.exp(-s))) ** 2 / sigma**2
    torch.testing.assert_close(lam, expected, rtol=1e-14, atol=0)


# ------------------------------------------------------------------------- against dense F
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "likelihood"), COMBOS, ids=lambda c: str(c))
def test_matches_dense_fisher(name, likelihood, method):
    model, x = _setup(name)
    fisher = _dense(name, likelihood)
    v = _vectors(fisher.shape[0])
    out = fisher_vp(model, x, v, likelihood=likelihood, method=method, **_floor(likelihood))
    assert out.shape == v.shape and out.dtype == torch.float64
    tol = FD64_RTOL[False] if method == "fd" else RTOL
    assert rel_err(out, v @ fisher) <= tol


@pytest.mark.parametrize("cache", ["pullback", "linearized", "none"])
@pytest.mark.parametrize(("method", "central"), [("exact", False), ("fd", False), ("fd", True)])
@pytest.mark.parametrize(("name", "likelihood"), COMBOS, ids=lambda c: str(c))
def test_products_bound_to_x_match_dense_fisher(name, likelihood, method, central, cache):
    """fisher_vp on lin.at(x) (cached pass at θ and pullback) against the dense F."""
    model, x = _setup(name)
    fisher = _dense(name, likelihood)
    v = _vectors(fisher.shape[0])
    at_x = Linearization(model, chunk_size=4).at(x, cache=cache)
    kw = {"central": central} if method == "fd" else {}
    out = fisher_vp(
        at_x, None, v, likelihood=likelihood, method=method, **kw, **_floor(likelihood)
    )
    assert out.shape == v.shape and out.dtype == torch.float64
    tol = FD64_RTOL[central] if method == "fd" else RTOL
    assert rel_err(out, v @ fisher) <= tol
    assert rel_err(fisher_vp(at_x, None, v[0], likelihood=likelihood, method=method, **kw,
                             **_floor(likelihood))[None], v[:1] @ fisher) <= tol


def test_products_bound_to_x_bad_input():
    model, x = _setup("mlp")
    at_x = Linearization(model).at(x)
    v = _vectors(at_x.num_params)
    with pytest.raises(ValueError, match="x must be None"):
        fisher_vp(at_x, x, v)
    with pytest.raises(ValueError, match="autograd"):
        fisher_vp(at_x, None, v, method="autograd")


@pytest.mark.parametrize(("name", "likelihood"), COMBOS[:4] + COMBOS[5:6], ids=lambda c: str(c))
def test_fd_central_float64(name, likelihood):
    model, x = _setup(name)
    fisher = _dense(name, likelihood)
    v = _vectors(fisher.shape[0])
    out = fisher_vp(model, x, v, likelihood=likelihood, central=True, **_floor(likelihood))
    assert rel_err(out, v @ fisher) <= FD64_RTOL[True]


def test_fd_is_first_order_in_eps():
    """Forward differences: error ∝ ε (halving ε halves the error) above the noise floor."""
    model, x = _setup("mlp")
    fisher = _dense("mlp", "categorical")
    v = _vectors(fisher.shape[0], k=1)
    ref = v @ fisher
    errs = [
        rel_err(fisher_vp(model, x, v, likelihood="categorical", eps=e), ref) for e in (1e-3, 5e-4)
    ]
    assert 1.6 < errs[0] / errs[1] < 2.4
    central = [
        rel_err(fisher_vp(model, x, v, likelihood="categorical", eps=e, central=True), ref)
        for e in (1e-3, 5e-4)
    ]
    assert 3.2 < central[0] / central[1] < 4.8  # second order


@pytest.mark.parametrize("method", METHODS)
def test_parameter_subset(method):
    """A Linearization over some parameters gives the Fisher of that block."""
    model, x = _setup("cnn_bn")
    names = ["conv2.weight", "bn2.weight", "bn2.bias", "head.weight"]
    fisher = dense_fisher(model, x, "categorical", names)
    lin = Linearization(model, params=names)
    v = _vectors(lin.num_params)
    out = fisher_vp(lin, x, v, likelihood="categorical", method=method)
    assert rel_err(out, v @ fisher) <= (FD64_RTOL[False] if method == "fd" else RTOL)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_at_a_time_and_chunks(method):
    model, x = _setup("cnn_bn")
    lin = Linearization(model)
    v = _vectors(lin.num_params, k=3)
    batch = fisher_vp(lin, x, v, likelihood="categorical", method=method)
    single = torch.stack(
        [fisher_vp(lin, x, vi, likelihood="categorical", method=method) for vi in v]
    )
    assert single.shape == v.shape
    torch.testing.assert_close(batch, single, rtol=1e-12, atol=1e-15)
    chunked = fisher_vp(lin, x, v, likelihood="categorical", method=method, chunk_size=4)
    torch.testing.assert_close(chunked, batch, rtol=1e-11, atol=1e-15)


def test_exact_is_symmetric_and_linear():
    model, x = _setup("hetero")
    lin = Linearization(model)
    u, v = _vectors(lin.num_params, k=2)
    fu, fv, fsum = (
        fisher_vp(lin, x, w, likelihood="heteroscedastic", method="exact")
        for w in (u, v, u - 3 * v)
    )
    assert abs(float(u @ fv - v @ fu)) <= 1e-12 * float(u.norm() * fv.norm())
    torch.testing.assert_close(fsum, fu - 3 * fv, rtol=1e-12, atol=1e-14)


def test_fd_zero_vectors_and_scale():
    """Zero rows give zero; fd is scale-equivariant (v is normalized before perturbing)."""
    model, x = _setup("mlp")
    lin = Linearization(model)
    v = _vectors(lin.num_params, k=2)
    v[1] = 0
    out = fisher_vp(lin, x, v)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    torch.testing.assert_close(fisher_vp(lin, x, 1e6 * v[0]), 1e6 * out[0], rtol=1e-10, atol=0)
    assert torch.equal(
        fisher_vp(lin, x, torch.zeros(lin.num_params, dtype=torch.float64)),
        torch.zeros(lin.num_params, dtype=torch.float64),
    )


def test_model_untouched_and_no_grad_context():
    model, x = _setup("cnn_bn")
    flags = training_flags(model)
    before = copy.deepcopy(model.state_dict())
    v = _vectors(sum(p.numel() for p in model.parameters()), k=1)[0]
    with torch.no_grad():
        outs = [fisher_vp(model, x, v, method=m) for m in METHODS]
    assert training_flags(model) == flags
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k
    assert all(not o.requires_grad for o in outs)
    assert rel_err(outs[0], outs[1]) <= RTOL


# ------------------------------------------------------------------------- float32 accuracy
def _float32_case(kind: str):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    if kind == "tanh-mlp":
        model = make_mlp(10, 64, 4, depth=3)
        x = torch.randn(64, 10, generator=gen)
    else:
        model = _with_bn_statistics(ReLUBatchNormCNN(), 4)
        x = torch.randn(32, 3, 8, 8, generator=gen)
    return model, x


@pytest.mark.parametrize("likelihood", ["gaussian", "categorical"])
@pytest.mark.parametrize("kind", ["tanh-mlp", "relu-bn-cnn"])
def test_fd_float32_accuracy(kind, likelihood):
    """The default step meets 1e-3 relative error against float32 ``exact``."""
    model, x = _float32_case(kind)
    lin = Linearization(model)
    v = torch.randn(4, lin.num_params, generator=torch.Generator().manual_seed(7))
    exact = fisher_vp(lin, x, v, likelihood=likelihood, method="exact")
    fd = fisher_vp(lin, x, v, likelihood=likelihood)
    assert fd.dtype == torch.float32
    assert rel_err(fd, exact) <= 1e-3
    central = fisher_vp(lin, x, v, likelihood=likelihood, central=True)
    assert rel_err(central, exact) <= (3e-4 if kind == "tanh-mlp" else 1e-3)
    # the naive fixed step of the 2021 reference (ε = 1e-4) is measurably worse
    assert rel_err(fisher_vp(lin, x, v, likelihood=likelihood, eps=1e-4), exact) > rel_err(
        fd, exact
    )


def test_central_points_compensate_the_rounding_of_the_first():
    """θ₁ = fl(θ + εu) misses θ + εu by up to half an ulp of θ per coordinate; the second
    point θ₂ is placed so that αδ₁ + βδ₂ = u up to that error / t(t+1) (t = 2), while the
    quadratic terms still cancel (second order)."""
    gen = torch.Generator().manual_seed(11)
    p = 4000
    # BatchNorm-like weights near 1 next to small conv-like weights
    theta = torch.cat(
        [1 + 0.1 * torch.rand(p // 4, generator=gen), 0.05 * torch.randn(3 * p // 4, generator=gen)]
    )
    u = torch.randn(p, generator=gen)
    u = u / u.norm()
    eps = 1e-3
    wide = theta.double()
    (p1,), (w,) = _fd_points(theta, wide, u, eps, central=False)
    forward_miss = (w * (p1.double() - wide) - u.double()).norm()
    (q1, q2), (a, b) = _fd_points(theta, wide, u, eps, central=True)
    assert q1.dtype == q2.dtype == torch.float32 and torch.equal(q1, p1)
    d1, d2 = q1.double() - wide, q2.double() - wide
    central_miss = (a * d1 + b * d2 - u.double()).norm()
    assert forward_miss > 1e-4  # the rounding is real at this step ...
    assert central_miss < forward_miss / 4  # ... and compensated (theory: 1/6)
    z = torch.randn(p, generator=gen, dtype=torch.float64)
    quad = a * (d1 @ z) ** 2 + b * (d2 @ z) ** 2
    # cancelled up to O(‖r₁‖) relative (one point alone: relative 1)
    assert abs(quad) < 10 * float(forward_miss) * a * float(d1 @ z) ** 2


@pytest.mark.parametrize("central", [False, True])
def test_calibrate_eps_grid_and_choice(central):
    """The calibration tries the forward rule times 2^-2..2^5 and picks a step whose measured
    error is within 1.25x of the smallest; its errors track the products' actual errors."""
    model, x = _float32_case("tanh-mlp")
    lin = Linearization(model)
    rule = default_eps(float(lin.parameter_vector().double().norm()), torch.float32)
    cal = calibrate_eps(lin, x, likelihood="categorical", central=central)
    assert cal.central is central and cal.points == 16
    assert cal.candidates == pytest.approx([rule * 2.0**j for j in range(-2, 6)])
    errs = torch.tensor(cal.errors)
    assert torch.isfinite(errs).all() and (errs > 0).all()
    i = cal.candidates.index(cal.eps)
    assert cal.errors[i] <= 1.25 * min(cal.errors)
    assert all(e > 1.25 * min(cal.errors) for e in cal.errors[i + 1 :])
    # the rule sits near the measured optimum of this smooth network ...
    theta_norm = float(lin.parameter_vector().double().norm())
    assert 0.25 <= cal.eps / default_eps(theta_norm, torch.float32, central) <= 4
    # ... unlike the live-kink rule, tuned for ReLU crossings: rounding dominates at its
    # step here, and the calibration for live kinks chooses a longer one
    live = calibrate_eps(lin, x, likelihood="categorical", central=central, kinks="live")
    assert live.kinks == "live" and live.eps > default_eps(
        theta_norm, torch.float32, central, kinks="live"
    )
    # the calibration's own error estimate agrees with the products on all 64 points
    v = torch.randn(2, lin.num_params, generator=torch.Generator().manual_seed(9))
    exact = fisher_vp(lin, x, v, likelihood="categorical", method="exact")
    for e, est in ((cal.candidates[0], cal.errors[0]), (cal.eps, cal.errors[i])):
        actual = rel_err(
            fisher_vp(lin, x, v, likelihood="categorical", eps=e, central=central), exact
        )
        assert est / 4 < actual < 4 * est


@pytest.mark.parametrize("kind", ["tanh-mlp", "relu-bn-cnn"])
def test_fd_auto_step_float32(kind):
    """eps="auto" meets 1e-3 against float32 exact and is no worse than the rule (+ noise)."""
    model, x = _float32_case(kind)
    lin = Linearization(model)
    v = torch.randn(4, lin.num_params, generator=torch.Generator().manual_seed(7))
    exact = fisher_vp(lin, x, v, likelihood="categorical", method="exact")
    for central in (False, True):
        auto = rel_err(
            fisher_vp(lin, x, v, likelihood="categorical", eps="auto", central=central), exact
        )
        rule = rel_err(fisher_vp(lin, x, v, likelihood="categorical", central=central), exact)
        assert auto <= 1e-3 and auto <= 1.5 * rule
    if kind == "tanh-mlp":  # smooth: the calibrated central step is far more accurate
        assert auto <= 1e-4


def test_default_eps_rule():
    # frozen kinks (default): each parameter moves by ~C u^{1/2} (u^{1/3}) of itself
    assert default_eps(0.0, torch.float64) == pytest.approx(1.5 * 2.0**-26.5)
    assert default_eps(8.0, torch.float32) == pytest.approx(1.5 * 2.0**-12 * 8.0)
    assert default_eps(8.0, torch.float32, central=True) == pytest.approx(
        0.5 * 2.0 ** (-24 / 3) * 8.0
    )
    # live kinks: the shorter steps of the ReLU-crossing error model
    e32 = default_eps(8.0, torch.float32, kinks="live")
    assert e32 == pytest.approx(1.5 * (2.0**-24 * 9.0) ** 0.5)
    assert default_eps(8.0, torch.float32, central=True, kinks="live") > e32


# ------------------------------------------------------------------------- bad input
def _bad_calls():
    model, x = _setup("mlp")
    lin = Linearization(model)
    p = lin.num_params
    v = torch.zeros(p, dtype=torch.float64)
    odd = _setup("cnn_bn")
    return [
        ("likelihood", lambda: fisher_vp(lin, x, v, likelihood="poisson")),
        ("likelihood", lambda: fisher_vp(lin, x, v, likelihood=None)),
        ("method", lambda: fisher_vp(lin, x, v, method="hvp")),
        ("eps", lambda: fisher_vp(lin, x, v, eps=-1.0)),
        ("eps", lambda: fisher_vp(lin, x, v, eps=float("nan"))),
        ("eps", lambda: fisher_vp(lin, x, v, eps=True)),
        ("eps", lambda: fisher_vp(lin, x, v, eps="calibrate")),
        ("method='fd' only", lambda: fisher_vp(lin, x, v, method="exact", eps="auto")),
        ("points", lambda: calibrate_eps(lin, x, points=0)),
        ("probe", lambda: calibrate_eps(lin, x, probe=torch.zeros(2, p))),
        ("v must have shape", lambda: calibrate_eps(lin, x, probe=torch.zeros(p + 1))),
        ("central", lambda: fisher_vp(lin, x, v, central=1)),
        ("method='fd' only", lambda: fisher_vp(lin, x, v, method="exact", eps=1e-3)),
        ("method='fd' only", lambda: fisher_vp(lin, x, v, method="autograd", central=True)),
        ("chunk_size", lambda: fisher_vp(lin, x, v, chunk_size=0)),
        ("scale_floor", lambda: fisher_vp(lin, x, v, scale_floor=-1.0)),
        ("model_or_lin", lambda: fisher_vp("mlp", x, v)),
        (r"v must have shape", lambda: fisher_vp(lin, x, torch.zeros(p + 1))),
        (r"v must have shape", lambda: fisher_vp(lin, x, torch.zeros(2, 2, p))),
        (r"v must hold", lambda: fisher_vp(lin, x, torch.zeros(0, p))),
        ("non-finite", lambda: fisher_vp(lin, x, torch.full((p,), float("nan")))),
        ("non-finite", lambda: fisher_vp(lin, x.clone().fill_(float("inf")), v)),
        ("batch dimension", lambda: fisher_vp(lin, x[:0], v)),
        ("rejected", lambda: fisher_vp(lin, torch.zeros(3, 5), v)),
        (
            "even number of outputs",
            lambda: fisher_vp(
                odd[0],
                odd[1],
                torch.zeros(sum(t.numel() for t in odd[0].parameters())),
                likelihood="heteroscedastic",
            ),
        ),
        (
            "at least 2 outputs",
            lambda: fisher_vp(
                case("scalar_out").build(),
                case("scalar_out").inputs(3),
                torch.zeros(sum(t.numel() for t in case("scalar_out").build().parameters())),
                likelihood="categorical",
            ),
        ),
    ]


@pytest.mark.parametrize("index", range(26))
def test_bad_input_raises_value_error(index):
    calls = _bad_calls()
    assert len(calls) == 26
    match, call = calls[index]
    with pytest.raises(ValueError, match=match):
        call()


def test_tf32_is_turned_off_for_fd_on_cuda_and_restored():
    """The fd passes must not run in TF32 on CUDA; the user's flags come back after."""
    from ntkcore.fisher import _full_float32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        with _full_float32(torch.device("cuda")):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with _full_float32(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
