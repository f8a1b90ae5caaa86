"""Jacobian similarity (Section 4, Figure 5) and NTK spectra against dense float64 references.

References: explicit Jacobians from ``torch.func.jacrev`` (:func:`tests.models.dense_jacobian`),
then the paper's formula sim(A, B) = tr(AᵀBBᵀA) / (‖AAᵀ‖_F ‖BBᵀ‖_F) written out with the
matrices formed, A = J (n·o × p) for the ``kernel`` measure and A = Jᵀ (p × n·o, the paper's
own layout) for the ``parameter`` measure; eigenvalues from ``torch.linalg.eigvalsh`` of the
dense Gram matrix. Float64 networks: tolerance 1e-10 relative; float32: 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ntkcore
from ntkcore.similarity import _resident_plan, compare_jacobians, ntk_eigenvalues, ntk_gram
from tests.models import case, dense_jacobian, make_mlp

F64 = torch.float64


def _paper_formula(a: torch.Tensor, b: torch.Tensor) -> float:
    """tr(AᵀBBᵀA) / (‖AAᵀ‖_F ‖BBᵀ‖_F), every matrix formed explicitly."""
    numerator = torch.trace(a.mT @ b @ b.mT @ a)
    return float(numerator / (torch.linalg.norm(a @ a.mT) * torch.linalg.norm(b @ b.mT)))


def _jac(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    j = dense_jacobian(model, x)
    return j.reshape(-1, j.shape[-1])  # shape: (n·o, p)


def _pair(seed_a: int = 0, seed_b: int = 1, dtype=F64) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed_a)
    a = make_mlp(3, 8, 2, depth=2).to(dtype)
    torch.manual_seed(seed_b)
    b = make_mlp(3, 8, 2, depth=2).to(dtype)
    return a, b


def _inputs(n: int = 7, dtype=F64) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(5), dtype=dtype)


class Scaled(nn.Module):
    """The wrapped network's output times a constant (no parameters of its own)."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * self.net(x)


@pytest.mark.parametrize("measure", ["kernel", "parameter"])
def test_matches_the_dense_formula(measure):
    a, b = _pair()
    x = _inputs()
    ja, jb = _jac(a, x), _jac(b, x)
    expected = _paper_formula(ja, jb) if measure == "kernel" else _paper_formula(ja.mT, jb.mT)
    got = ntkcore.jacobian_similarity(a, b, x, measure=measure)
    assert got == pytest.approx(expected, rel=1e-10)
    # the kernel reading is the cosine of the NTK Gram matrices
    ka, kb = ja @ ja.mT, jb @ jb.mT
    cosine = float((ka * kb).sum() / (ka.norm() * kb.norm()))
    if measure == "kernel":
        assert got == pytest.approx(cosine, rel=1e-10)
    else:  # ‖J_A J_Bᵀ‖²_F over the same norms: a different number for unrelated networks
        assert got == pytest.approx(float((ja @ jb.mT).square().sum() / (ka.norm() * kb.norm())))
        assert abs(got - cosine) > 1e-3


def test_conv_net_with_batchnorm_float32():
    c = case("cnn_bn")
    a, b = c.build(torch.float32), copy.deepcopy(c.build(torch.float32))
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = c.inputs(6, dtype=torch.float32)
    ja = _jac(copy.deepcopy(a).double(), x.double())
    jb = _jac(copy.deepcopy(b).double(), x.double())
    for measure, (ra, rb) in {"kernel": (ja, jb), "parameter": (ja.mT, jb.mT)}.items():
        got = ntkcore.jacobian_similarity(a, b, x, measure=measure)
        assert got == pytest.approx(_paper_formula(ra, rb), rel=1e-5)


@pytest.mark.parametrize("measure", ["kernel", "parameter"])
def test_symmetric_one_for_identical_in_unit_interval_scale_invariant(measure):
    a, b = _pair(2, 3)
    x = _inputs(9)
    ab = ntkcore.jacobian_similarity(a, b, x, measure=measure)
    ba = ntkcore.jacobian_similarity(b, a, x, measure=measure)
    assert ab == pytest.approx(ba, rel=1e-12)
    assert 0.0 <= ab <= 1.0
    assert ab < 0.999  # two different random networks are not identical
    assert ntkcore.jacobian_similarity(a, copy.deepcopy(a), x, measure=measure) == (
        pytest.approx(1.0, rel=1e-12)
    )
    scaled = ntkcore.jacobian_similarity(a, Scaled(b, 7.5), x, measure=measure)
    assert scaled == pytest.approx(ab, rel=1e-10)


def test_unit_interval_over_many_pairs():
    x = _inputs(5)
    for seed in range(6):
        a, b = _pair(10 + seed, 20 + seed, dtype=torch.float32)
        for measure in ("kernel", "parameter"):
            value = ntkcore.jacobian_similarity(a, b, x.float(), measure=measure)
            assert 0.0 <= value <= 1.0


def test_different_architectures_are_rejected():
    a = make_mlp(3, 8, 2, depth=2).double()
    b = make_mlp(3, 9, 2, depth=2).double()
    with pytest.raises(ValueError, match="parameter shapes"):
        ntkcore.jacobian_similarity(a, b, _inputs())
    with pytest.raises(ValueError, match="measure"):
        ntkcore.jacobian_similarity(a, a, _inputs(), measure="cosine")
    with pytest.raises(ValueError, match="dtype"):
        ntkcore.jacobian_similarity(a, make_mlp(3, 8, 2, depth=2).float(), _inputs())
    with pytest.raises(ValueError, match="chunk_size"):
        ntkcore.jacobian_similarity(a, a, _inputs(), chunk_size=0)


def test_resident_and_blockwise_strategies_equal_the_dense_reference():
    nets = [_pair(s, s + 100)[0] for s in range(4)]
    x = _inputs(7)
    n_rows, p = 7 * 2, 122
    jacs = [_jac(net, x) for net in nets]
    grams = [j @ j.mT for j in jacs]
    kernel_ref = torch.stack([torch.stack([(ka * kb).sum() for kb in grams]) for ka in grams])
    cross_ref = torch.stack(
        [torch.stack([(ja @ jb.mT).square().sum() for jb in jacs]) for ja in jacs]
    )
    # a budget for the 4 Gram matrices, one product and exactly two cached Jacobians: the
    # least-recently-used cache evicts and recomputes
    two = 4 * n_rows**2 * 8 + n_rows**2 * 8 + 2 * n_rows * p * 8
    assert _resident_plan(4, n_rows, p, 8, two) == 2
    assert _resident_plan(4, n_rows, p, 8, two - 1) is None
    results = {
        "resident": compare_jacobians(nets, x),
        "resident, 2 cached": compare_jacobians(nets, x, max_bytes=two),
        "blockwise, 4 blocks": compare_jacobians(nets, x, chunk_size=2, keep_grams=True),
        "blockwise, 1 point per block": compare_jacobians(nets, x, max_bytes=1),
    }
    strategies = {name: r.strategy for name, r in results.items()}
    assert strategies == {"resident": "resident", "resident, 2 cached": "resident",
                          "blockwise, 4 blocks": "blockwise",
                          "blockwise, 1 point per block": "blockwise"}  # fmt: skip
    assert results["blockwise, 4 blocks"].points_per_block == 2
    assert results["blockwise, 1 point per block"].points_per_block == 1
    for name, result in results.items():
        torch.testing.assert_close(result.kernel_inner, kernel_ref, rtol=1e-10, atol=0,
                                   msg=name)  # fmt: skip
        torch.testing.assert_close(result.cross_sq, cross_ref, rtol=1e-10, atol=0, msg=name)
    assert results["blockwise, 1 point per block"].grams is None
    for name in ("resident", "blockwise, 4 blocks"):
        for got, ref in zip(results[name].grams, grams, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_seed_triangles_compute_each_jacobian_once(monkeypatch):
    """The experiment's pairs (three networks per seed) form triangles: with room for three
    Jacobians, each is computed once."""
    nets = [_pair(s, s + 100)[0] for s in range(7)]
    x = _inputs(5)
    jacs = [_jac(net, x) for net in nets]  # before the counting wrapper below
    calls = []
    for i, net in enumerate(nets):  # count the (traced) forward calls of every network
        original = net.forward
        net.forward = lambda x, original=original, i=i: (calls.append(i), original(x))[1]
    pairs = [(0, 2), (2, 4), (0, 4), (1, 3), (3, 5), (1, 5)]
    compare_jacobians([nets[6]], x)  # one network, one Jacobian: the calls that costs
    once = calls.count(6)
    rows, p = 10, 122
    three = 6 * rows**2 * 8 + rows**2 * 8 + 3 * rows * p * 8
    result = compare_jacobians(nets[:6], x, pairs=pairs, max_bytes=three)
    assert result.strategy == "resident"
    assert [calls.count(i) for i in range(6)] == [once] * 6
    for a, b in pairs:
        expected = (jacs[a] @ jacs[b].mT).square().sum()
        torch.testing.assert_close(result.cross_sq[a, b], expected, rtol=1e-10, atol=0)


def test_cross_terms_only_for_requested_pairs():
    nets = [_pair(s, s + 1)[0] for s in range(3)]
    result = compare_jacobians(nets, _inputs(4), pairs=[(0, 2)])
    sim = result.similarity("parameter")
    assert torch.isnan(sim[0, 1]) and torch.isnan(sim[1, 2])
    assert torch.isfinite(sim[0, 2]) and sim[0, 2] == sim[2, 0]
    torch.testing.assert_close(sim.diagonal(), torch.ones(3, dtype=F64))
    assert torch.isfinite(result.similarity("kernel")).all()
    with pytest.raises(ValueError, match="indexes outside"):
        compare_jacobians(nets, _inputs(4), pairs=[(0, 3)])


def test_ntk_gram_is_the_dense_gram():
    a, _ = _pair()
    x = _inputs(6)
    j = _jac(a, x)
    single = copy.deepcopy(a).float()
    torch.testing.assert_close(ntk_gram(single, x.float()), j @ j.mT, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ntk_gram(a, x, chunk_size=4), j @ j.mT, rtol=1e-12, atol=1e-12)


def test_eigenvalues_dense_function_space():
    a, _ = _pair()
    x = _inputs(8)  # N = 16 <= p = 122
    j = _jac(a, x)
    ref = torch.linalg.eigvalsh(j @ j.mT).flip(0).clamp_min(0)
    got = ntk_eigenvalues(a, x)
    assert got.shape == (16,)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ntk_eigenvalues(a, x, k=3, chunk_size=3), ref[:3], rtol=1e-10,
                               atol=0)  # fmt: skip


def test_eigenvalues_dense_weight_space_when_p_is_smaller():
    torch.manual_seed(3)
    net = make_mlp(2, 3, 1, depth=1).double()  # p = 13
    x = torch.randn(30, 2, dtype=F64)  # N = 30 > p
    j = _jac(net, x)
    ref = torch.linalg.eigvalsh(j @ j.mT).flip(0)[:13]
    got = ntk_eigenvalues(net, x)
    assert got.shape == (13,)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_eigenvalues_by_lanczos_when_the_gram_does_not_fit():
    a, _ = _pair()
    x = _inputs(20)  # N = 40
    j = _jac(a, x)
    ref = torch.linalg.eigvalsh(j @ j.mT).flip(0)
    got = ntk_eigenvalues(a, x, k=4, max_bytes=1000, tol=1e-12)
    torch.testing.assert_close(got, ref[:4], rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match="pass k"):
        ntk_eigenvalues(a, x, max_bytes=1000)
    with pytest.raises(ValueError, match="k must"):
        ntk_eigenvalues(a, x, k=0)
