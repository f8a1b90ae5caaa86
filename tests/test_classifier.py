"""The linearized GLM classifier (ntkcore.adapt_classifier, Eq. 4) against independent references.

References, written here without ntkcore:

* a dense float64 GLM from explicit ``torch.func.jacrev`` Jacobians (tests/models.py):
  the MAP by Newton's method with the explicit Hessian Σᵢ Jᵢᵀ(diag πᵢ − πᵢπᵢᵀ)Jᵢ + I/s²,
  the Laplace covariance as the explicit inverse of that Hessian, the latent covariance
  J* H⁻¹ J*ᵀ and the probit predictive softmax(μ/√(1 + π/8 σ²));
* scikit-learn's multinomial ``LogisticRegression`` (L2, C = s²) on explicit last-layer
  features, for the MAP;
* self-normalized importance sampling of the exact GLM posterior (proposal: the exact
  Laplace Gaussian inflated ×1.5), for the VI moments;
* laplace-torch's GLM predictive (skipped where laplace-torch is not installed).
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ntkcore import Linearization, adapt_classifier, last_layers
from ntkcore.classifier import probit_softmax
from tests.models import dense_jacobian, dense_output, make_mlp

S2 = 0.7  # prior variance of the tests
CLASSES = 3


# ------------------------------------------------------------------------- problem
def _problem(n: int = 24, seed: int = 0, hidden: int = 6):
    """A tanh MLP (2 → hidden → hidden → 3 logits, float64) and labelled inputs.

    The labels come from a noisy argmax of a random linear map, so no class is separable.
    """
    torch.manual_seed(seed)
    model = make_mlp(2, hidden, CLASSES, depth=2).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    scores = x @ torch.randn(2, CLASSES, generator=g, dtype=torch.float64)
    y = (scores + 0.8 * torch.randn(n, CLASSES, generator=g, dtype=torch.float64)).argmax(-1)
    return model, x, y


def _test_inputs(m: int = 9, seed: int = 5) -> Tensor:
    return 1.3 * torch.randn(m, 2, generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)


# ------------------------------------------------------------------------- dense reference
def _softmax_fisher(logits: Tensor) -> Tensor:
    """diag(π) − ππᵀ per row, written out: (n, o, o)."""
    pi = torch.softmax(logits, -1)
    return torch.diag_embed(pi) - pi.unsqueeze(-1) * pi.unsqueeze(-2)


class DenseGLM:
    """The categorical GLM g = m + J w, w ~ N(0, s² I), from explicit Jacobians."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, s2: float, mean: str,
                 names=None) -> None:
        self.model, self.names = model, names
        self.jac = dense_jacobian(model, x, names)  # (n, o, p)
        self.offset = dense_output(model, x) if mean == "network" else torch.zeros(
            x.shape[0], CLASSES, dtype=torch.float64
        )
        self.mean = mean
        self.y, self.s2 = y, s2
        self.onehot = torch.nn.functional.one_hot(y, CLASSES).double()

    def logits(self, w: Tensor) -> Tensor:
        return self.offset + torch.einsum("nap,p->na", self.jac, w)

    def objective(self, w: Tensor) -> float:
        g = self.logits(w)
        return float(-(g.log_softmax(-1) * self.onehot).sum() + 0.5 * w @ w / self.s2)

    def gradient(self, w: Tensor) -> Tensor:
        g = self.logits(w)
        return torch.einsum("nap,na->p", self.jac, g.softmax(-1) - self.onehot) + w / self.s2

    def hessian(self, w: Tensor) -> Tensor:
        lam = _softmax_fisher(self.logits(w))
        p = self.jac.shape[-1]
        return torch.einsum("nap,nab,nbq->pq", self.jac, lam, self.jac) + torch.eye(
            p, dtype=torch.float64
        ) / self.s2

    def map(self) -> Tensor:
        """Newton's method with the explicit Hessian and step halving, to ‖∇‖ < 1e-12."""
        w = torch.zeros(self.jac.shape[-1], dtype=torch.float64)
        for _ in range(100):
            grad = self.gradient(w)
            if float(grad.norm()) < 1e-12:
                break
            step = -torch.linalg.solve(self.hessian(w), grad)
            t = 1.0
            while self.objective(w + t * step) > self.objective(w) + 1e-4 * t * grad @ step:
                t /= 2
            w = w + t * step
        return w

    def latent(self, x_test: Tensor, w: Tensor, cov: Tensor):
        jt = dense_jacobian(self.model, x_test, self.names)
        mean = torch.einsum("map,p->ma", jt, w)
        if self.mean == "network":
            mean = mean + dense_output(self.model, x_test)
        return mean, torch.einsum("map,pq,mbq->mab", jt, cov, jt)


# ------------------------------------------------------------------------- MAP and Laplace
@pytest.mark.parametrize("strategy", ["dense", "matrix-free"])
@pytest.mark.parametrize("mean", ["network", "zero"])
def test_map_and_laplace_match_dense_newton_and_explicit_inverse(mean, strategy):
    model, x, y = _problem()
    ref = DenseGLM(model, x, y, S2, mean)
    w_ref = ref.map()
    cov_ref = torch.linalg.inv(ref.hessian(w_ref))
    clf = adapt_classifier(
        model, x, y, method="laplace", prior_variance=S2, mean=mean, strategy=strategy,
        rank=10_000,  # matrix-free: a sketch of full rank, so the covariance is exact
    )
    d = clf.diagnostics
    assert d["strategy"] == strategy and d["converged"]
    assert d["exact_covariance"]
    # MAP: float64 products, Newton to a decrement of 1e-12·(1 + |L|)
    torch.testing.assert_close(clf.weights, w_ref, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(clf.covariance.to_dense(), cov_ref, rtol=1e-7, atol=1e-10)
    x_test = _test_inputs()
    mean_ref, lat_ref = ref.latent(x_test, w_ref, cov_ref)
    latent = clf.predict_latent(x_test)
    torch.testing.assert_close(latent.mean, mean_ref, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(latent.covariance, lat_ref, rtol=1e-7, atol=1e-10)
    var = lat_ref.diagonal(dim1=-2, dim2=-1)
    probit_ref = torch.softmax(mean_ref / torch.sqrt(1 + math.pi / 8 * var), -1)
    torch.testing.assert_close(clf.predict_proba(x_test), probit_ref, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(
        clf.predict_proba(x_test, link="map"), torch.softmax(mean_ref, -1), rtol=1e-7, atol=1e-10
    )
