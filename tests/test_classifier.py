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
import os
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ntkcore import Linearization, adapt_classifier, last_layers
from tests.models import dense_jacobian, dense_output, make_mlp

S2 = 0.7  # prior variance of the tests
CLASSES = 3


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these problems are tiny, and on the shared two-core machine
    two threads made the VI loop 15x slower (thread hand-offs on microsecond kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    # Laplace evidence: log p(y|w*) − ‖w*‖²/(2s²) − ½ log|I + s² GGN(w*)|
    ggn = ref.hessian(w_ref) - torch.eye(len(w_ref), dtype=torch.float64) / S2
    evidence = -ref.objective(w_ref) - 0.5 * torch.logdet(
        torch.eye(len(w_ref), dtype=torch.float64) + S2 * ggn
    )
    assert clf.log_marginal_likelihood() == pytest.approx(float(evidence), rel=1e-9)


# ------------------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize("strategy", ["dense", "matrix-free"])
def test_map_of_last_layer_matches_sklearn_logistic_regression(strategy):
    """Linearizing only the last layer of f(x) = W h(x) + b gives g(x) = W' h(x) + b' with
    mean='zero': multinomial logistic regression on the features [h(x), 1] with the L2
    penalty ‖w‖²/(2s²) on all weights, i.e. scikit-learn's C = s² without an intercept."""
    from sklearn.linear_model import LogisticRegression

    model, x, y = _problem(n=40, seed=3)
    names = last_layers(model, 1)
    lin = Linearization(model, params=names)
    clf = adapt_classifier(lin, x, y, method="map", prior_variance=S2, mean="zero",
                           strategy=strategy)
    with torch.no_grad():
        features = model[:-1](x)  # h(x), shape (n, hidden)
    design = torch.cat([features, torch.ones(len(x), 1, dtype=torch.float64)], 1).numpy()
    ref = LogisticRegression(C=S2, fit_intercept=False, tol=1e-12, max_iter=10_000)
    ref.fit(design, y.numpy())
    # flat weights follow named_parameters: weight (o × hidden, row-major), then bias (o)
    hidden = features.shape[1]
    weight = clf.weights[: CLASSES * hidden].reshape(CLASSES, hidden)
    bias = clf.weights[CLASSES * hidden :]
    ours = torch.cat([weight, bias[:, None]], 1).numpy()
    np.testing.assert_allclose(ours, ref.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        clf.predict_proba(x).numpy(), ref.predict_proba(design), rtol=1e-6, atol=1e-8
    )


# ------------------------------------------------------------------------- VI
def _importance_moments(model, x, y, s2, draws=100_000, seed=0):
    """Posterior mean and covariance of w by self-normalized importance sampling.

    Proposal: N(w*, 1.5² H⁻¹) from the dense reference (heavier than the posterior in every
    direction); returns the moments and the effective sample size."""
    ref = DenseGLM(model, x, y, s2, "zero")
    w_map = ref.map()
    cov = torch.linalg.inv(ref.hessian(w_map)) * 1.5**2
    chol = torch.linalg.cholesky(cov)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(draws, w_map.numel(), generator=g, dtype=torch.float64)
    w = w_map + z @ chol.mT
    logits = (w @ ref.jac.reshape(-1, w.shape[1]).mT).reshape(draws, -1, CLASSES)
    loglik = (logits.log_softmax(-1) * ref.onehot).sum((-1, -2))
    log_target = loglik - 0.5 * (w * w).sum(-1) / s2
    log_proposal = -0.5 * (z * z).sum(-1)
    logw = log_target - log_proposal
    weights = torch.softmax(logw, 0)
    mean = weights @ w
    centred = w - mean
    post_cov = (weights[:, None] * centred).mT @ centred
    ess = float(1.0 / (weights * weights).sum())
    return mean, post_cov, ess


def _tiny_problem():
    torch.manual_seed(11)
    model = make_mlp(2, 3, CLASSES, depth=1).double()  # p = 2·3 + 3 + 3·3 + 3 = 21
    g = torch.Generator().manual_seed(12)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(2, CLASSES, generator=g, dtype=torch.float64)
         + 0.7 * torch.randn(30, CLASSES, generator=g, dtype=torch.float64)).argmax(-1)
    return model, x, y


@pytest.mark.slow
def test_meanfield_and_lowrank_vi_against_importance_sampled_posterior():
    """Mean-field VI: means at the posterior mean and variances at the mean-field optimum
    1/(Σ⁻¹)_jj (exact for a Gaussian posterior; this one is close to Gaussian). Low-rank VI
    (rank 10 of p = 21) recovers more of the marginal variances diag(Σ), which mean-field
    VI underestimates. Tolerances: posterior means within 0.25 posterior standard
    deviations; mean-field variances within 35% of 1/(Σ⁻¹)_jj on average (stochastic
    optimization with 8 samples per step); reference from 1e5 importance draws."""
    model, x, y = _tiny_problem()
    s2 = 2.0
    mean_ref, cov_ref, ess = _importance_moments(model, x, y, s2)
    assert ess > 1_000  # the reference itself is reliable (standard errors ≈ 0.03 sd)
    sd_ref = cov_ref.diagonal().sqrt()
    mf_target = 1.0 / torch.linalg.inv(cov_ref).diagonal()
    runs = {}
    for family in ("meanfield", "lowrank"):
        clf = adapt_classifier(
            model, x, y, method="vi", prior_variance=s2, mean="zero", family=family,
            vi_rank=10, vi_steps=4000, vi_samples=8, vi_lr=1e-2, seed=1,
        )
        runs[family] = clf
        assert float(((clf.weights - mean_ref).abs() / sd_ref).max()) < 0.25
    var_mf = runs["meanfield"].covariance.variances()
    assert float((var_mf / mf_target).log().abs().mean().exp()) < 1.35
    var_lr = runs["lowrank"].covariance.variances()
    err_mf = float((var_mf / cov_ref.diagonal()).log().abs().mean())
    err_lr = float((var_lr / cov_ref.diagonal()).log().abs().mean())
    assert err_lr < err_mf


def test_vi_elbo_increases_and_predictions_are_probabilities():
    model, x, y = _problem(n=30, seed=4)
    clf = adapt_classifier(model, x, y, method="vi", prior_variance=S2, mean="network",
                           vi_steps=300, vi_samples=2, seed=0)
    trace = [value for _, value in clf.diagnostics["elbo_trace"]]
    assert len(trace) >= 10
    # averages over windows of steps: the last fifth beats the first fifth
    k = len(trace) // 5
    assert np.mean(trace[-k:]) > np.mean(trace[:k])
    for link in ("probit", "mc", "map"):
        probs = clf.predict_proba(_test_inputs(), link=link, samples=200)
        assert probs.shape == (9, CLASSES)
        torch.testing.assert_close(probs.sum(-1), torch.ones(9, dtype=torch.float64))


# ------------------------------------------------------------------------- laplace-torch
@pytest.mark.parametrize("link", ["probit", "mc"])
def test_laplace_glm_predictive_matches_laplace_torch(link):
    """laplace-torch linearizes around the network's own θ (it takes the trained network as
    the MAP): ``max_newton=0`` is that setting. Same prior precision 1/s², same Gauss–Newton
    Hessian Σᵢ JᵢᵀΛᵢJᵢ (curvlinops backend, full Hessian over all weights), same probit
    formula: covariances agree to 1e-7 (entries of order 0.1–0.7) and probit predictives to
    1e-6 (float64; the brief asked for 1e-3 in probabilities). The MC predictive is
    compared to our probit-free MC with 20,000 draws per point: agreement to 0.02."""
    try:
        import laplace
    except ImportError:  # installed by `make setup` (requirements-crosscheck.txt)
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: laplace-torch is missing (pip install --no-deps -r "
                        "requirements-crosscheck.txt)")
        pytest.skip("laplace-torch not installed")
    from torch.utils.data import DataLoader, TensorDataset

    model, x, y = _problem(n=30, seed=6)
    x_test = _test_inputs()
    clf = adapt_classifier(model, x, y, method="laplace", prior_variance=S2, mean="network",
                           max_newton=0, strategy="dense")
    torch.testing.assert_close(clf.weights, torch.zeros_like(clf.weights))
    la = laplace.Laplace(
        copy.deepcopy(model).eval(), "classification", subset_of_weights="all",
        hessian_structure="full", prior_precision=1.0 / S2,
        backend=laplace.curvature.CurvlinopsGGN,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        la.fit(DataLoader(TensorDataset(x, y), batch_size=len(x)))
        torch.testing.assert_close(
            la.posterior_covariance.double(), clf.covariance.to_dense(), rtol=1e-6, atol=1e-7
        )
        if link == "probit":
            ref = la(x_test, pred_type="glm", link_approx="probit").double()
            ours = clf.predict_proba(x_test, link="probit")
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        else:
            torch.manual_seed(0)
            ref = la(x_test, pred_type="glm", link_approx="mc", n_samples=20_000).double()
            ours = clf.predict_proba(x_test, link="mc", samples=20_000, seed=1)
            torch.testing.assert_close(ours, ref, rtol=0, atol=0.02)


def test_bad_input_raises_value_error():
    model, x, y = _problem(n=10)
    ok = {"method": "map", "prior_variance": S2}
    for kwargs, match in [
        ({"method": "ep"}, "method"),
        ({"mean": "prior"}, "mean"),
        ({"strategy": "cholesky"}, "strategy"),
        ({"family": "full"}, "family"),
        ({"prior_variance": 0.0}, "prior_variance"),
        ({"prior_variance": float("nan")}, "prior_variance"),
        ({"max_newton": -1}, "max_newton"),
        ({"vi_steps": 0}, "vi_steps"),
        ({"rank": 0}, "rank"),
        ({"batch_size": 0}, "batch_size"),
        ({"cache": "disk"}, "cache"),
        ({"initial_weights": torch.zeros(3)}, "initial_weights"),
    ]:
        with pytest.raises(ValueError, match=match):
            adapt_classifier(model, x, y, **{**ok, **kwargs})
    with pytest.raises(ValueError, match="integer class labels"):
        adapt_classifier(model, x, y.double(), **ok)
    with pytest.raises(ValueError, match="lie in"):
        adapt_classifier(model, x, y + CLASSES, **ok)
    with pytest.raises(ValueError, match="class labels, shape"):
        adapt_classifier(model, x, y[:-1], **ok)
    clf = adapt_classifier(model, x, y, **ok)
    with pytest.raises(ValueError, match="link"):
        clf.predict_proba(x, link="logit")
    with pytest.raises(ValueError, match="needs a posterior covariance"):
        clf.predict_proba(x, link="probit")
    with pytest.raises(ValueError, match="marginal likelihood needs"):
        clf.log_marginal_likelihood()
    with pytest.raises(ValueError, match="at least 2 outputs"):
        adapt_classifier(make_mlp(2, 4, 1).double(), x, torch.zeros(10, dtype=torch.long), **ok)
