"""Output-space likelihoods (ntkcore.likelihoods) against torch.distributions and autograd.

KL divergences and explicit Fishers are checked in tests/test_fisher.py through
``output_kl``/``output_fisher``; here: the factory, log-densities and their gradients, the
Fisher factor L Lᵀ = Λ and the Hessian of the categorical NLL (= Λ, canonical link).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.distributions import Categorical, Normal
from torch.func import grad, hessian

from ntkcore.fisher import fisher_vp
from ntkcore.likelihoods import LIKELIHOODS, Heteroscedastic, Likelihood, likelihood
from tests.test_fisher import _setup, rel_err

FLOOR = 1e-3


def _outputs(seed: int = 0, n: int = 5, o: int = 4) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(n, o, generator=g, dtype=torch.float64)


def _targets(name: str, f: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(7)
    n, o = f.shape
    if name == "categorical":
        return torch.randint(0, o, (n,), generator=g)
    m = o // 2 if name == "heteroscedastic" else o
    return torch.randn(n, m, generator=g, dtype=torch.float64)


def _reference_log_prob(name: str, f: Tensor, y: Tensor) -> Tensor:
    if name == "gaussian":
        return Normal(f, 1.0).log_prob(y).sum(-1)
    if name == "categorical":
        return Categorical(logits=f).log_prob(y)
    m = f.shape[-1] // 2
    scale = torch.nn.functional.softplus(f[..., m:]) + FLOOR
    return Normal(f[..., :m], scale).log_prob(y).sum(-1)


def _make(name: str) -> Likelihood:
    return likelihood(name, scale_floor=FLOOR if name == "heteroscedastic" else 0.0)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_log_prob_and_its_gradient_match_torch_distributions(name):
    lik = _make(name)
    f = _outputs()
    y = _targets(name, f)
    torch.testing.assert_close(
        lik.log_prob(f, y), _reference_log_prob(name, f, y), rtol=1e-12, atol=1e-12
    )
    ref_grad = torch.stack(
        [
            grad(lambda fi, yi=yi: -_reference_log_prob(name, fi[None], yi[None]).sum())(fi)
            for fi, yi in zip(f, y, strict=True)
        ]
    )
    torch.testing.assert_close(lik.nll_grad(f, y), ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_fisher_factor_reproduces_fisher(name):
    """L Lᵀ = Λ, and the products L u, Lᵀ u agree with the explicit L."""
    lik = _make(name)
    f = _outputs(1)
    o = f.shape[-1]
    eye = torch.eye(o, dtype=f.dtype).expand(f.shape[0], o, o)
    # column j of L is L e_j: the products on unit vectors give Lᵀ's rows
    l_cols = lik.fisher_sqrt_product(f.unsqueeze(-2), eye)  # row j: L e_j
    factor = l_cols.transpose(-1, -2)  # L
    torch.testing.assert_close(factor @ factor.mT, lik.fisher(f), rtol=1e-12, atol=1e-14)
    lt_rows = lik.fisher_sqrt_product(f.unsqueeze(-2), eye, transpose=True)  # row j: Lᵀ e_j
    torch.testing.assert_close(lt_rows.transpose(-1, -2), factor.mT, rtol=1e-12, atol=1e-14)


def test_categorical_nll_hessian_is_its_fisher():
    """Canonical link: ∇²_f (−log p(y|f)) = diag(π) − ππᵀ for every label."""
    lik = likelihood("categorical")
    f = _outputs(2, n=3)
    for fi in f:
        for label in range(f.shape[-1]):
            h = hessian(lambda g, c=label: -Categorical(logits=g).log_prob(torch.tensor(c)))(fi)
            torch.testing.assert_close(h, lik.fisher(fi), rtol=1e-10, atol=1e-14)


def test_factory_validates_early_and_passes_instances_through():
    lik = likelihood("heteroscedastic", scale_floor=0.25)
    assert isinstance(lik, Heteroscedastic) and lik.scale_floor == 0.25
    assert likelihood(lik) is lik
    assert likelihood(lik, scale_floor=0.25) is lik
    assert likelihood("categorical") == likelihood("categorical")
    for bad, match in [
        (lambda: likelihood("poisson"), "likelihood must be one of"),
        (lambda: likelihood(None), "likelihood must be one of"),
        (lambda: likelihood("gaussian", scale_floor=-1.0), "scale_floor"),
        (lambda: likelihood("gaussian", scale_floor=float("nan")), "scale_floor"),
        (lambda: likelihood(lik, scale_floor=0.5), "conflicts"),
        (lambda: likelihood("categorical").check_outputs(1), "at least 2 outputs"),
        (lambda: likelihood("heteroscedastic").check_outputs(3), "even number"),
        (lambda: likelihood("categorical").check_targets(torch.zeros(3), 3, 4), "integer"),
        (lambda: likelihood("categorical").check_targets(torch.tensor([0, 4]), 2, 4), "lie in"),
        (lambda: likelihood("categorical").check_targets(torch.tensor([0, 1]), 3, 4), "shape"),
        (lambda: likelihood("gaussian").check_targets(torch.zeros(3, 2), 3, 1), "shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_fisher_vp_accepts_a_likelihood_object():
    """fisher_vp with an instance gives the products of the same name (no second path)."""
    model, x = _setup("mlp")
    p = sum(t.numel() for t in model.parameters())
    v = torch.randn(2, p, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    by_name = fisher_vp(model, x, v, likelihood="categorical", method="exact")
    by_object = fisher_vp(model, x, v, likelihood=likelihood("categorical"), method="exact")
    assert rel_err(by_object, by_name) == 0.0
