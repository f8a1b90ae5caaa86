"""The adaptation methods of ``ntkcore.experiments.methods`` against independent references.

* ``ntk`` / ``ntk-linearized``: scikit-learn's ``GaussianProcessRegressor`` on the finite-NTK
  Gram matrix s² J Jᵀ built from a dense float64 ``torch.func.jacrev`` Jacobian, and
  ``KernelRidge(kernel="precomputed")`` for the mean (the third-party cross-check of issue 9
  §8); with ``hyper="marginal-likelihood"``, scikit-learn's own type-II maximum likelihood.
* ``ablr``: Bayesian linear regression written out with NumPy (Bishop 3.53–3.59) and the
  marginal likelihood as a multivariate normal density from SciPy.
* ``rbf-gp``: scikit-learn's GPR with the same fixed RBF hyperparameters.
* point methods: the explicit residual variance; retraining touches only what it should.

All on small float64 networks; tolerances are stated per assertion.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from torch import nn

from ntkcore import data, fit_hyperparameters, zoo
from ntkcore.experiments import methods
from ntkcore.experiments.methods import base as methods_base
from ntkcore.experiments.methods.ablr import blr_log_marginal_likelihood
from tests.models import dense_jacobian

F64 = torch.float64


class PrecomputedGram(Kernel):
    """A scikit-learn kernel reading a precomputed Gram matrix; X holds row indices."""

    def __init__(self, gram: np.ndarray) -> None:
        self.gram = gram

    def __call__(self, X, Y=None, eval_gradient=False):  # noqa: N803 - sklearn's signature
        i = np.asarray(X)[:, 0].astype(int)
        j = i if Y is None else np.asarray(Y)[:, 0].astype(int)
        k = self.gram[np.ix_(i, j)]
        if eval_gradient:
            return k, np.empty((len(i), len(i), 0))
        return k

    def diag(self, X):  # noqa: N803
        i = np.asarray(X)[:, 0].astype(int)
        return np.diag(self.gram)[i]

    def is_stationary(self) -> bool:
        return False


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one thread is fastest (and far faster on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def source() -> methods.Source:
    """A float64 tanh MLP (2 × 12) trained briefly on a 40-point sinusoid."""
    task = data.load("sinusoids", seed=3, n_source=40, n_target=30, n_test=25, dtype=F64)
    with zoo.seeded(0):
        model = zoo.create("mlp", width=12, depth=2, activation="tanh").to(F64)
    zoo.train(model, *task.source, loss="mse", epochs=300, lr=1e-2)
    return methods.Source(model=model, task=task, training={"epochs": 40, "lr": 1e-2},
                          name="test-mlp")


def _indices(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=float)[:, None]


# ----------------------------------------------------------------------------- ntk
@pytest.mark.parametrize("name", ["ntk", "ntk-linearized"])
def test_ntk_matches_sklearn_gpr_on_the_dense_finite_ntk_gram(source, name):
    sigma2, s2 = 0.05, 0.7
    x, y = source.task.context(12)
    xt, _ = source.task.test
    mean, var = methods.create(name, source, noise_variance=sigma2,
                               prior_variance=s2).fit(x, y).predict(xt)
    n, m = x.shape[0], xt.shape[0]
    jac = dense_jacobian(source.model, torch.cat([x, xt])).reshape(n + m, -1).numpy()
    gram = s2 * jac @ jac.T  # the prior covariance of f: s² J Jᵀ
    with torch.no_grad():
        prior_mean = (source.model(torch.cat([x, xt])).numpy()[:, 0] if name == "ntk-linearized"
                      else np.zeros(n + m))
    resid = y.numpy()[:, 0] - prior_mean[:n]
    gpr = GaussianProcessRegressor(PrecomputedGram(gram), alpha=sigma2, optimizer=None)
    mu, sd = gpr.fit(_indices(n), resid).predict(_indices(m, n), return_std=True)
    # float64 throughout: agreement to ~1e-9 relative; 1e-7 leaves room for the engine's
    # eigendecomposition route.
    np.testing.assert_allclose(mean.numpy()[:, 0], mu + prior_mean[n:], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(var.numpy()[:, 0], sd**2 + sigma2, rtol=1e-7, atol=1e-10)
    # The mean once more by kernel ridge regression, λ = σ²/s², on J Jᵀ.
    kr = KernelRidge(kernel="precomputed", alpha=sigma2 / s2)
    kr.fit(gram[:n, :n] / s2, resid)
    np.testing.assert_allclose(mean.numpy()[:, 0], kr.predict(gram[n:, :n] / s2)
                               + prior_mean[n:], rtol=1e-7, atol=1e-9)


def test_ntk_marginal_likelihood_mode_matches_sklearn_type2_ml(source):
    x, y = source.task.context(25)
    method = methods.create("ntk", source, hyper="marginal-likelihood").fit(x, y)
    hyper = method.hyperparameters
    assert hyper["hyper"] == "marginal-likelihood"
    jac = dense_jacobian(source.model, x).reshape(x.shape[0], -1).numpy()
    kernel = (ConstantKernel(1.0, (1e-8, 1e8)) * PrecomputedGram(jac @ jac.T)
              + WhiteKernel(0.1, (1e-6, 1e4)))
    gpr = GaussianProcessRegressor(kernel, alpha=0.0, n_restarts_optimizer=0, random_state=0)
    gpr.fit(_indices(x.shape[0]), y.numpy()[:, 0])
    s2_ref = gpr.kernel_.k1.k1.constant_value
    sigma2_ref = gpr.kernel_.k2.noise_level
    # Both maximize the same exact log marginal likelihood (L-BFGS vs L-BFGS-B in log
    # space): optimum values agree to 1e-6 relative, the maximizers to 2e-3.
    ours = method.posterior.log_marginal_likelihood()
    assert ours == pytest.approx(gpr.log_marginal_likelihood_value_, rel=1e-6, abs=1e-6)
    assert hyper["prior_variance"] == pytest.approx(s2_ref, rel=2e-3)
    assert hyper["noise_variance"] == pytest.approx(sigma2_ref, rel=2e-3)


def test_ntk_fixed_hyperparameters_come_from_the_source_marginal_likelihood(source):
    method = methods.create("ntk", source)
    linearized = methods.create("ntk-linearized", source)
    x, y = source.task.source
    ref = fit_hyperparameters(source.model, x, y, mean="zero")
    hyper = method.hyperparameters
    assert hyper["hyper"] == "fixed" and hyper["chosen_by"] == "source marginal likelihood"
    assert hyper["noise_variance"] == pytest.approx(ref.noise_variance, rel=1e-9)
    assert hyper["prior_variance"] == pytest.approx(ref.prior_variance, rel=1e-9)
    # the linearized network shares the zero-mean source fit (see the NTK docstring)
    assert linearized.hyperparameters["prior_variance"] == hyper["prior_variance"]


# ----------------------------------------------------------------------------- ablr
@pytest.mark.parametrize("features", [4, 25])  # weight space (D < n) and data space (D > n)
def test_blr_log_marginal_likelihood_is_the_gaussian_density(features):
    gen = torch.Generator().manual_seed(1)
    phi = torch.randn(15, features, generator=gen, dtype=F64)
    y = torch.randn(15, 2, generator=gen, dtype=F64)
    alpha, beta = 0.7, 3.0
    cov = phi.numpy() @ phi.numpy().T / alpha + np.eye(15) / beta
    ref = sum(multivariate_normal(np.zeros(15), cov).logpdf(y.numpy()[:, a]) for a in range(2))
    ours = blr_log_marginal_likelihood(phi, y, torch.tensor(alpha, dtype=F64),
                                       torch.tensor(beta, dtype=F64))
    assert float(ours) == pytest.approx(ref, rel=1e-12)


@pytest.fixture(scope="module")
def ablr(source) -> methods.ABLR:
    return methods.create("ablr", source, steps=20)


def test_ablr_posterior_is_explicit_bayesian_linear_regression(source, ablr):
    x, y = source.task.context(10)
    xt, _ = source.task.test
    mean, var = ablr.clone().fit(x, y).predict(xt)
    alpha, beta = ablr.precisions
    phi, phi_t = ablr.features(x).numpy(), ablr.features(xt).numpy()
    # Bishop (2006), Eq. 3.53-3.59: S⁻¹ = αI + βΦᵀΦ, m = βSΦᵀy, σ²(x) = 1/β + φᵀSφ
    s_inv = alpha * np.eye(phi.shape[1]) + beta * phi.T @ phi
    s = np.linalg.inv(s_inv)
    m = beta * s @ phi.T @ y.numpy()
    np.testing.assert_allclose(mean.numpy(), phi_t @ m, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var.numpy()[:, 0], 1 / beta + np.einsum("id,de,ie->i", phi_t, s,
                                                                       phi_t), rtol=1e-8)


def test_ablr_features_are_the_head_input_plus_a_constant(source, ablr):
    x, _ = source.task.context(5)
    with torch.no_grad():
        body = source.model.body(x)
    fresh = methods.create("ablr", source, steps=0)
    np.testing.assert_allclose(fresh.features(x).numpy(),
                               torch.cat([body, torch.ones(5, 1, dtype=F64)], 1).numpy(),
                               rtol=1e-12)
    # feature learning moved the features (20 steps), the source network is untouched
    assert not np.allclose(ablr.features(x).numpy(), fresh.features(x).numpy())
    with torch.no_grad():
        assert torch.equal(source.model.body(x), body)


def test_ablr_precisions_maximize_the_source_marginal_likelihood(source):
    ablr0 = methods.create("ablr", source, steps=0)
    x, y = source.task.source
    phi = ablr0.features(x)
    log_prec = torch.tensor([math.log(p) for p in ablr0.precisions], dtype=F64,
                            requires_grad=True)
    lml = blr_log_marginal_likelihood(phi, y.to(F64), log_prec[0].exp(), log_prec[1].exp())
    (grad,) = torch.autograd.grad(lml, log_prec)
    # a stationary point of the source LML in (log α, log β) (L-BFGS, strong Wolfe)
    assert grad.abs().max() < 1e-4 * abs(float(lml.detach())) + 1e-4
    assert ablr0.hyperparameters["source_log_marginal_likelihood"] == pytest.approx(
        float(lml.detach()), rel=1e-9)


# ----------------------------------------------------------------------------- rbf-gp
def test_rbf_gp_matches_sklearn_with_the_same_fixed_hyperparameters(source):
    method = methods.create("rbf-gp", source)
    h = method.hyperparameters
    x, y = source.task.context(15)
    xt, _ = source.task.test
    mean, var = method.fit(x, y).predict(xt)
    kernel = (ConstantKernel(h["outputscale"], "fixed") * RBF(h["lengthscale"], "fixed")
              + WhiteKernel(h["noise_variance"], "fixed"))
    gpr = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None)
    gpr.fit(x.numpy(), y.numpy()[:, 0] - h["constant_mean"])
    mu, sd = gpr.predict(xt.numpy(), return_std=True)  # WhiteKernel: std includes the noise
    np.testing.assert_allclose(mean.numpy()[:, 0], mu + h["constant_mean"], rtol=1e-7,
                               atol=1e-9)
    np.testing.assert_allclose(var.numpy()[:, 0], sd**2, rtol=1e-6, atol=1e-10)


def test_rbf_gp_source_fit_is_a_stationary_point_of_sklearns_marginal_likelihood(source):
    h = methods.create("rbf-gp", source).hyperparameters
    x, y = source.task.source
    kernel = (ConstantKernel(h["outputscale"]) * RBF(h["lengthscale"])
              + WhiteKernel(h["noise_variance"], (1e-7, 1e5)))
    gpr = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None)
    gpr.fit(x.numpy(), y.numpy()[:, 0] - h["constant_mean"])
    lml, grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    # gradient w.r.t. log outputscale, log lengthscale, log noise vanishes at GPyTorch's
    # optimum (constant mean held at its fitted value)
    assert np.abs(grad).max() < 1e-3 * max(1.0, abs(lml))


# ----------------------------------------------------------------------------- point methods
def test_no_retrain_is_the_network_with_its_context_residual_variance(source):
    x, y = source.task.context(8)
    xt, _ = source.task.test
    mean, var = methods.create("no-retrain", source).fit(x, y).predict(xt)
    with torch.no_grad():
        np.testing.assert_array_equal(mean.numpy(), source.model(xt).numpy())
        resid = float(((source.model(x) - y) ** 2).mean())
    np.testing.assert_allclose(var.numpy(), np.full((xt.shape[0], 1), resid), rtol=1e-12)


def test_residual_variance_is_floored():
    y = torch.ones(4, 1, dtype=F64)
    assert float(methods.residual_variance(y, y)) == methods.VARIANCE_FLOOR


@pytest.mark.parametrize("name", ["last-layer", "last-layer-6x"])
def test_last_layer_trains_only_the_head_for_its_budget(source, name):
    x, y = source.task.context(10)
    method = methods.create(name, source).fit(x, y)
    net = method._network
    before = dict(source.model.named_parameters())
    for pname, p in net.named_parameters():
        same = torch.equal(p, before[pname])
        assert same != pname.startswith("head."), pname
    hyper = method.hyperparameters
    assert hyper["epochs"] == 40 * (6 if name == "last-layer-6x" else 1)
    assert hyper["steps"] == hyper["epochs"]  # full batch: one step per epoch
    assert hyper["trained_on"] == "cached head features"
    # the source network is untouched and its parameters still require grad
    assert all(p.requires_grad for p in source.model.parameters())


def test_last_layer_on_cached_features_equals_training_the_whole_network(source):
    x, y = source.task.context(10)
    xt, _ = source.task.test
    fast = methods.create("last-layer", source).fit(x, y)
    slow = methods.create("last-layer", source, cached_features=False).fit(x, y)
    assert slow.hyperparameters["trained_on"] == "network"
    # same optimizer trajectory; float64 rounding differs only in the order of operations
    np.testing.assert_allclose(fast.predict(xt)[0].numpy(), slow.predict(xt)[0].numpy(),
                               rtol=1e-9, atol=1e-11)


def test_head_readout_refuses_a_network_that_transforms_its_head_output(source):
    class Doubled(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return 2.0 * self.net(x)

    x, _ = source.task.context(4)
    assert methods.HeadReadout.of(copy.deepcopy(source.model), x) is not None
    assert methods.HeadReadout.of(Doubled(copy.deepcopy(source.model)), x) is None


def test_fine_tune_trains_every_layer(source):
    x, y = source.task.context(10)
    method = methods.create("fine-tune", source).fit(x, y)
    before = dict(source.model.named_parameters())
    assert all(not torch.equal(p, before[n]) for n, p in method._network.named_parameters())
    assert method.hyperparameters["trained"] == "all layers"


# ----------------------------------------------------------------------------- interface
def test_life_cycle_errors_and_clone(source):
    method = methods.get("ntk")(noise_variance=0.1, prior_variance=1.0)
    x, y = source.task.context(5)
    with pytest.raises(ValueError, match="not prepared"):
        method.fit(x, y)
    method.prepare(source)
    with pytest.raises(ValueError, match="not fitted"):
        method.predict(x)
    method.fit(x, y)
    twin = method.clone()
    with pytest.raises(ValueError, match="not fitted"):
        twin.predict(x)
    assert twin._lin is method._lin  # the prepared state is shared, the fit is not
    with pytest.raises(ValueError, match="context_y must have shape"):
        method.fit(x, y[:3])
    with pytest.raises(ValueError, match="must have shape"):
        method.fit(x.reshape(5, 1, 1), y)
    with pytest.raises(ValueError, match="non-finite"):
        method.fit(x, y * float("nan"))
    with pytest.raises(ValueError, match="unknown method"):
        methods.create("gp-of-dreams")
    with pytest.raises(ValueError, match="hyper must be one of"):
        methods.create("ntk", hyper="guess")
    with pytest.raises(ValueError, match="both noise_variance and prior_variance"):
        methods.create("ntk", noise_variance=0.1)


def test_classification_sources_are_refused():
    task = data.load("mnist", n_source=20, n_target=10, n_test=10)
    with zoo.seeded(0):
        model = zoo.create("lenet3", in_size=28)
    with pytest.raises(ValueError, match="regression"):
        methods.Source(model=model, task=task)


def test_a_user_method_plugs_into_the_registry(source):
    @methods.register
    class ContextMean(methods.Method):
        """Predicts the context mean with the context variance."""

        name = "test-context-mean"
        kind = "point"

        @property
        def hyperparameters(self):
            return {"hyper": "none"}

        def _fit(self, x, y):
            self._mean, self._var = y.mean(0), y.var(0)

        def _predict(self, x):
            return (self._mean.expand(x.shape[0], -1).clone(),
                    self._var.expand(x.shape[0], -1).clone())

    try:
        x, y = source.task.context(6)
        mean, var = methods.create("test-context-mean", source).fit(x, y).predict(x)
        assert torch.allclose(mean, y.mean(0).expand(6, 1))
        assert "test-context-mean" in methods.available()
    finally:
        methods_base._REGISTRY.pop("test-context-mean")


def test_prepared_cache_returns_fresh_clones_of_one_preparation(source):
    a = methods.prepared("ntk", source, noise_variance=0.1, prior_variance=1.0)
    b = methods.prepared("ntk", source, noise_variance=0.1, prior_variance=1.0)
    c = methods.prepared("ntk", source, noise_variance=0.2, prior_variance=1.0)
    assert a is not b and a._lin is b._lin  # one preparation, two clones
    assert c._lin is not a._lin  # other options, other preparation
    x, y = source.task.context(5)
    a.fit(x, y)
    with pytest.raises(ValueError, match="not fitted"):
        b.predict(x)
