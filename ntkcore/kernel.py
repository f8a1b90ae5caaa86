r"""GPyTorch integration: the finite NTK as a ``gpytorch`` kernel, mean and exact GP.

The finite-NTK GP of Maddox et al. (2021), Section 3, is the degenerate Gaussian process
with the kernel of the trained network's Jacobian,

    k(x, x') = s² J(x)ᵀ J(x')     (paper's p × n·o convention; ``s²·J(x) J(x')ᵀ`` here),

and prior mean m(x) = f(x; θ) (the linearized network of Eq. 1) or m(x) = 0; its
posterior is Eq. 3 in function space and Eq. 2 in weight space (Section 3.1). This module
exposes it to GPyTorch:

* :class:`FiniteNTKKernel` — a :class:`gpytorch.kernels.Kernel` returning a lazy
  :class:`~ntkcore.operators.ntk_kernel_operator.NTKKernelLinearOperator` (matrix-free
  products, exact diagonal, lazy slicing) times a learnable prior variance s².
* :class:`NetworkMean` — the prior mean m(x) = f(x; θ).
* :class:`ParameterSpacePredictionStrategy` — test-time inference in *weight space*
  (Eq. 2) through :func:`ntkcore.adapt` with ``strategy="parameter"``; selected with
  ``FiniteNTKKernel(..., prediction="parameter")``.
* :class:`FiniteNTKGP` — a ready-made :class:`gpytorch.models.ExactGP` wiring them up.

Design of the parameter-space prediction. GPyTorch asks the kernel of the training
covariance for its prediction strategy (``Kernel.prediction_strategy``). Its own
``LinearPredictionStrategy`` forms the p × p scatter matrix of the kernel root, which
cannot hold p ≈ 10⁶, and the default strategy works in function space (an n·o × n·o
solve). :class:`ParameterSpacePredictionStrategy` instead fits the weight-space posterior
once with :func:`ntkcore.adapt` (Nyström-preconditioned CG on JᵀJ + (σ²/s²) I_p with
Jacobian products only) and answers ``model(x_test)`` from it: the mean
m(x*) + J(x*) w̄ by one jvp and the covariance as the lazy operator
s² J* J*ᵀ − R Rᵀ with R = s J* Fᵀ the cached rank-r posterior factor. Neither an
(n·o × n·o) kernel matrix nor a (p × p) matrix is ever allocated. This replaces the
2021 reference's ``LinearPredictionStrategy``; it plugs into any ``ExactGP`` whose
covariance module is a :class:`FiniteNTKKernel` (optionally wrapped in a
:class:`gpytorch.kernels.ScaleKernel`) with a homoskedastic Gaussian likelihood.
"""

from __future__ import annotations

import math
from typing import Any

import gpytorch
import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from gpytorch.kernels import Kernel
from gpytorch.lazy import LazyEvaluatedKernelTensor
from gpytorch.likelihoods import (
    GaussianLikelihood,
    Likelihood,
    MultitaskGaussianLikelihood,
)
from gpytorch.means import Mean, ZeroMean
from gpytorch.models import ExactGP
from gpytorch.models.exact_prediction_strategies import DefaultPredictionStrategy
from linear_operator.operators import (
    ConstantMulLinearOperator,
    LinearOperator,
    MatmulLinearOperator,
    RootLinearOperator,
    ZeroLinearOperator,
)
from torch import Tensor, nn

from ntkcore.linearization import Linearization
from ntkcore.operators.ntk_kernel_operator import NTKKernelLinearOperator
from ntkcore.parameters import ParameterFilter
from ntkcore.posterior import Posterior, adapt, as_linearization

__all__ = [
    "FiniteNTKGP",
    "FiniteNTKKernel",
    "NetworkMean",
    "ParameterSpacePredictionStrategy",
]

PREDICTIONS = ("function", "parameter")
_PARAMETER_OPTIONS = ("tol", "max_iter", "rank", "seed")


def _validate_input_shape(input_shape: Any) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape must be a tuple of positive ints, got {input_shape!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    return shape


def _network_inputs(
    x: Tensor, lin: Linearization, input_shape: tuple[int, ...] | None, name: str
) -> Tensor:
    """GPyTorch's flat ``(n, d)`` inputs → the network's ``(n, *input_shape)``, detached."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"{name} must have shape (n, d) (flat feature vectors; batched GPs are not "
            f"supported), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no data points (shape {tuple(x.shape)})")
    if input_shape is not None:
        d = math.prod(input_shape)
        if x.shape[-1] != d:
            raise ValueError(
                f"{name} has {x.shape[-1]} features per point but input_shape="
                f"{input_shape} needs {d}"
            )
        x = x.reshape(x.shape[0], *input_shape)
    x = x.detach()
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
        x = x.to(device=lin.device, dtype=lin.dtype)
    else:
        x = x.to(device=lin.device)
    return x


def _same_inputs(x1: Tensor, x2: Tensor | None) -> bool:
    return x2 is None or x2 is x1 or (x1.shape == x2.shape and torch.equal(x1, x2))


class FiniteNTKKernel(Kernel):
    r"""The finite neural tangent kernel k(x, x') = s² J(x)ᵀ J(x') as a GPyTorch kernel.

    The covariance of the finite-NTK GP (Section 3 of Maddox et al., 2021, with the
    posterior of Eq. 3, Section 3.1): a trained network linearized at its weights θ,
    with a Gaussian prior N(0, s² I_p) on the linear weights. ``forward`` returns a lazy
    :class:`~ntkcore.operators.ntk_kernel_operator.NTKKernelLinearOperator` scaled by s²
    (products through one batched vjp and one batched jvp, never forming J), and the
    exact diagonal s² ‖J(x_i)‖² for ``diag=True``.

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
        The trained network (wrapped in a :class:`~ntkcore.linearization.Linearization`
        at its current weights, which are snapshot) or a Linearization. The network is
        **not** registered as a submodule: its weights are not GP hyperparameters and
        optimizers over ``gp.parameters()`` leave them alone.
    params : None, str, iterable of str or callable, optional
        Which parameters to linearize (see :func:`ntkcore.parameters.select_parameters`);
        only when ``model_or_lin`` is a module.
    prior_variance : float
        Initial s², the prior variance of the linearized weights, a learnable positive
        hyperparameter (``raw_prior_variance`` under ``prior_variance_constraint``), like
        a ``ScaleKernel`` outputscale. The paper uses 1.
    input_shape : tuple of int, optional
        Shape of one network input. GPyTorch passes flat feature vectors ``(n, d)``;
        with ``input_shape`` they are reshaped to ``(n, *input_shape)`` (d must equal
        its product), e.g. ``(1, 28, 28)`` for images flattened to 784 features.
    chunk_size : int, optional
        Data points per chunk of every Jacobian product (bounds peak memory); only when
        ``model_or_lin`` is a module.
    prediction : {"function", "parameter"}
        Test-time inference inside :class:`gpytorch.models.ExactGP`. ``"function"``:
        GPyTorch's default strategy (Cholesky or CG on the n·o × n·o kernel, LOVE with
        ``fast_pred_var``). ``"parameter"``: :class:`ParameterSpacePredictionStrategy`,
        weight-space CG via ``ntkcore.adapt(strategy="parameter")`` (Eq. 2), for many
        training points.
    parameter_options : dict, optional
        ``tol``, ``max_iter``, ``rank``, ``seed`` forwarded to :func:`ntkcore.adapt` by the
        parameter-space strategy.
    prior_variance_constraint : gpytorch.constraints.Interval, optional
        Constraint of s²; default :class:`gpytorch.constraints.Positive`.

    Notes
    -----
    Networks with o > 1 outputs give a multitask kernel of size (n·o × n·o),
    sample-major (GPyTorch's interleaved convention, ``num_outputs_per_input = o``); use
    it with :class:`gpytorch.distributions.MultitaskMultivariateNormal` and a
    :class:`gpytorch.likelihoods.MultitaskGaussianLikelihood` with ``rank=0,
    has_task_noise=False`` (i.i.d. noise, as in :func:`ntkcore.adapt`) — or simply
    :class:`FiniteNTKGP`. The kernel is not differentiable with respect to its inputs
    (they are detached); gradients flow to s² (and to the likelihood's noise).

    Examples
    --------
    >>> kernel = FiniteNTKKernel(net, prior_variance=1.0)              # doctest: +SKIP
    >>> class GP(gpytorch.models.ExactGP):                             # doctest: +SKIP
    ...     def __init__(self, x, y, likelihood):
    ...         super().__init__(x, y, likelihood)
    ...         self.mean_module = gpytorch.means.ZeroMean()
    ...         self.covar_module = kernel
    ...     def forward(self, x):
    ...         return gpytorch.distributions.MultivariateNormal(
    ...             self.mean_module(x), self.covar_module(x))
    """

    has_lengthscale = False

    def __init__(
        self,
        model_or_lin: nn.Module | Linearization,
        *,
        params: ParameterFilter = None,
        prior_variance: float = 1.0,
        input_shape: tuple[int, ...] | None = None,
        chunk_size: int | None = None,
        prediction: str = "function",
        parameter_options: dict[str, Any] | None = None,
        prior_variance_constraint: Interval | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {}
        if params is not None:
            kw["params"] = params
        if chunk_size is not None:
            kw["chunk_size"] = chunk_size
        lin = as_linearization(model_or_lin, **kw)
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        options = dict(parameter_options or {})
        unknown = sorted(set(options) - set(_PARAMETER_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown parameter_options {unknown}; allowed: {list(_PARAMETER_OPTIONS)}"
            )
        if prior_variance_constraint is None:
            prior_variance_constraint = Positive()
        if not isinstance(prior_variance_constraint, Interval):
            raise ValueError(
                "prior_variance_constraint must be a gpytorch.constraints.Interval, got "
                f"{type(prior_variance_constraint).__name__}"
            )
        # Plain attribute (not a submodule): the network's weights are not hyperparameters.
        self._linearization = lin
        self.input_shape = _validate_input_shape(input_shape)
        self.prediction = prediction
        self.parameter_options = options
        self.register_parameter(
            "raw_prior_variance",
            nn.Parameter(torch.zeros((), dtype=lin.dtype, device=lin.device)),
        )
        self.register_constraint("raw_prior_variance", prior_variance_constraint)
        self.prior_variance = prior_variance

    # ------------------------------------------------------------------ hyperparameter
    @property
    def linearization(self) -> Linearization:
        """The :class:`~ntkcore.linearization.Linearization` defining J(x)."""
        return self._linearization

    @property
    def prior_variance(self) -> Tensor:
        """s², the prior variance of the linearized weights (0-dim tensor)."""
        return self.raw_prior_variance_constraint.transform(self.raw_prior_variance)

    @prior_variance.setter
    def prior_variance(self, value: float | Tensor) -> None:
        v = torch.as_tensor(value, dtype=self.raw_prior_variance.dtype).detach()
        if v.numel() != 1 or not torch.isfinite(v).all() or float(v) <= 0:
            raise ValueError(f"prior_variance must be a positive finite number, got {value!r}")
        v = v.reshape(()).to(self.raw_prior_variance.device)
        self.initialize(raw_prior_variance=self.raw_prior_variance_constraint.inverse_transform(v))

    # ------------------------------------------------------------------ kernel
    def network_inputs(self, x: Tensor, name: str = "x") -> Tensor:
        """Flat GPyTorch inputs ``(n, d)`` → network inputs ``(n, *input_shape)``."""
        return _network_inputs(x, self._linearization, self.input_shape, name)

    def num_outputs_per_input(self, x1: Tensor, x2: Tensor) -> int:
        """o, the network outputs per data point (rows of the kernel per input)."""
        return self._linearization.output_dim(self.network_inputs(x1[:1], "x1"))

    def forward(
        self,
        x1: Tensor,
        x2: Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> LinearOperator | Tensor:
        """The kernel matrix s² J(x1) J(x2)ᵀ (lazy), or its diagonal with ``diag=True``.

        Parameters
        ----------
        x1, x2 : Tensor
            Flat inputs of shape (n1, d) and (n2, d).
        diag : bool
            Return the exact diagonal s² ‖J(x1_i)‖² (rows sample-major when o > 1), or for
            x2 ≠ x1 (same n) the paired values s² J(x1_i)·J(x2_i).
        last_dim_is_batch : bool
            Not supported (raises ValueError).

        Returns
        -------
        LinearOperator or Tensor
            ``(n1·o, n2·o)`` operator, or ``(n1·o,)`` tensor for ``diag=True``.
        """
        if last_dim_is_batch:
            raise ValueError("FiniteNTKKernel does not support last_dim_is_batch=True")
        lin = self._linearization
        a = self.network_inputs(x1, "x1")
        same = _same_inputs(x1, x2)
        b = a if same else self.network_inputs(x2, "x2")
        s2 = self.prior_variance.to(lin.dtype)
        if diag:
            if same:
                values = lin.ntk_diag(a).reshape(-1)
            else:
                if a.shape[0] != b.shape[0]:
                    raise ValueError(
                        f"diag=True needs x1 and x2 with the same number of points, got "
                        f"{a.shape[0]} and {b.shape[0]}"
                    )
                values = torch.cat(
                    [
                        (ja * jb).sum(-1).reshape(-1)
                        for (_, ja), (_, jb) in zip(
                            lin.jacobian_blocks(a), lin.jacobian_blocks(b), strict=True
                        )
                    ]
                )
            return s2 * values
        op = NTKKernelLinearOperator(a, None if same else b, linearization=lin)
        return ConstantMulLinearOperator(op, s2)

    def prediction_strategy(
        self,
        train_inputs: tuple[Tensor, ...],
        train_prior_dist: MultivariateNormal,
        train_labels: Tensor,
        likelihood: Likelihood,
    ) -> DefaultPredictionStrategy:
        """GPyTorch's default strategy, or weight-space inference for ``prediction="parameter"``."""
        if self.prediction == "parameter":
            return ParameterSpacePredictionStrategy(
                train_inputs, train_prior_dist, train_labels, likelihood, **self.parameter_options
            )
        return super().prediction_strategy(train_inputs, train_prior_dist, train_labels, likelihood)

    def extra_repr(self) -> str:
        return (
            f"{self._linearization!r}, input_shape={self.input_shape}, "
            f"prediction={self.prediction!r}"
        )


class NetworkMean(Mean):
    r"""The prior mean m(x) = f(x; θ) of the linearized network (Eq. 1).

    With it the finite-NTK GP equals ``ntkcore.adapt(..., mean="network")``.

    Parameters
    ----------
    linearization : Linearization
        Evaluated at its snapshot weights θ, in eval mode.
    input_shape : tuple of int, optional
        Shape of one network input (flat GPyTorch inputs are reshaped to it).
    """

    def __init__(
        self, linearization: Linearization, input_shape: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(linearization, Linearization):
            raise ValueError(
                f"linearization must be a Linearization, got {type(linearization).__name__}"
            )
        self._linearization = linearization
        self.input_shape = _validate_input_shape(input_shape)

    def forward(self, x: Tensor) -> Tensor:
        """f(x; θ): shape (n,) for one output, (n, o) otherwise."""
        out = self._linearization(_network_inputs(x, self._linearization, self.input_shape, "x"))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


# --------------------------------------------------------------------------- strategy
def _unwrap_kernel_matrix(covar: Any, what: str) -> tuple[NTKKernelLinearOperator, float]:
    """(finite-NTK operator, total scale) of a covariance made by :class:`FiniteNTKKernel`.

    Accepts the lazily evaluated kernel tensor, constant multiples (the kernel's own s²
    and any enclosing ``ScaleKernel`` outputscale) and the operator itself.
    """
    if isinstance(covar, LazyEvaluatedKernelTensor):
        covar = covar.evaluate_kernel()
    scale = 1.0
    while isinstance(covar, ConstantMulLinearOperator):
        constant = covar.expanded_constant
        if constant.numel() != 1:
            raise ValueError(f"{what}: batched kernel scales are not supported")
        scale *= float(constant.detach())
        covar = covar.base_linear_op
    if not isinstance(covar, NTKKernelLinearOperator):
        raise ValueError(
            f"{what} is a {type(covar).__name__}; parameter-space prediction needs the "
            "covariance module to be a FiniteNTKKernel (optionally inside a ScaleKernel), "
            "not a sum or product with other kernels"
        )
    return covar, scale * covar.scale


def _homoskedastic_noise(likelihood: Likelihood) -> float:
    """σ² of a Gaussian likelihood with i.i.d. noise, else ValueError."""
    if isinstance(likelihood, GaussianLikelihood):
        noise = likelihood.noise
    elif isinstance(likelihood, MultitaskGaussianLikelihood):
        if likelihood.has_task_noise or likelihood.rank != 0 or not likelihood.has_global_noise:
            raise ValueError(
                "parameter-space prediction needs i.i.d. noise: use "
                "MultitaskGaussianLikelihood(num_tasks, rank=0, has_task_noise=False)"
            )
        noise = likelihood.noise
    else:
        raise ValueError(
            "parameter-space prediction needs a GaussianLikelihood (or a "
            f"MultitaskGaussianLikelihood with global noise only), got {type(likelihood).__name__}"
        )
    if noise.numel() != 1:
        raise ValueError(
            f"parameter-space prediction needs one noise variance, the likelihood has "
            f"{noise.numel()} (heteroskedastic or batched noise is not supported)"
        )
    return float(noise.detach())


class ParameterSpacePredictionStrategy(DefaultPredictionStrategy):
    r"""ExactGP prediction in weight space for the finite-NTK GP (Eq. 2).

    Created by :meth:`FiniteNTKKernel.prediction_strategy` when the kernel has
    ``prediction="parameter"``. On the first prediction it fits
    ``ntkcore.adapt(lin, X, y − m(X), mean="zero", noise_variance=σ²,
    prior_variance=s², strategy="parameter")`` — CG on (JᵀJ + (σ²/s²) I_p) with
    Jacobian-vector products (Eq. 2), with σ² from the likelihood, s² from the kernel
    (times any ``ScaleKernel`` outputscale) and m(X) from the model's mean module — and
    then answers each ``model(x_test)`` with

    * mean  m(x*) + J(x*) w̄                                (one batched jvp),
    * covariance  s² J* J*ᵀ − R Rᵀ,  R = s·J* Fᵀ               (lazy; r jvps),

    where w̄ and the rank-r factor F (Σ = s²(I − FᵀF)) are the posterior's. Variances
    use the exact NTK diagonal; they are exact when ``rank >= min(n·o, p)`` and otherwise
    the Galerkin upper bound of :func:`ntkcore.adapt` (never below the exact variance,
    never above the prior). No (n·o × n·o) or (p × p) matrix is formed. The posterior
    is refitted when σ² or s² changed since the last fit (GPyTorch's own caches are
    invalidated only by ``model.train()``); ``posterior.diagnostics`` reports the CG
    iterations, residuals and convergence.

    Parameters
    ----------
    train_inputs, train_prior_dist, train_labels, likelihood
        As for :class:`gpytorch.models.exact_prediction_strategies.DefaultPredictionStrategy`.
    tol, max_iter, rank, seed
        Forwarded to :func:`ntkcore.adapt`.

    Notes
    -----
    Fantasy updates (``get_fantasy_model``) are not supported. Gradients of the
    predictions with respect to hyperparameters are not tracked (the fit is detached).
    """

    def __init__(
        self,
        train_inputs: tuple[Tensor, ...],
        train_prior_dist: MultivariateNormal,
        train_labels: Tensor,
        likelihood: Likelihood,
        *,
        tol: float | None = None,
        max_iter: int = 1000,
        rank: int = 256,
        seed: int = 0,
    ) -> None:
        _homoskedastic_noise(likelihood)  # fail early on an unsupported likelihood
        super().__init__(train_inputs, train_prior_dist, train_labels, likelihood)
        self._options: dict[str, Any] = {
            "tol": tol,
            "max_iter": max_iter,
            "rank": rank,
            "seed": seed,
        }
        self._posterior: Posterior | None = None

    @property
    def posterior(self) -> Posterior:
        """The weight-space :class:`~ntkcore.posterior.Posterior` (fitted on first use)."""
        op, s2 = _unwrap_kernel_matrix(
            self.train_prior_dist.lazy_covariance_matrix, "the training covariance"
        )
        sigma2 = _homoskedastic_noise(self.likelihood)
        post = self._posterior
        if (
            post is None
            or post.noise_variance != sigma2
            or post.prior_variance != s2
            or post.linearization is not op.linearization
        ):
            with torch.no_grad():
                mean = self.train_prior_dist.mean.reshape(-1)
                resid = (self.train_labels.reshape(-1) - mean).to(op.dtype)
            n = op.x1.shape[0]
            post = adapt(
                op.linearization,
                op.x1,
                resid.reshape(n, -1),
                noise_variance=sigma2,
                prior_variance=s2,
                mean="zero",
                strategy="parameter",
                **self._options,
            )
            self._posterior = post
        return post

    def _latent_mean(self, x_star: Tensor, lin: Linearization) -> Tensor:
        post = self.posterior
        return lin.jvp(x_star, post.weights.to(lin.dtype)).reshape(-1)

    def _covariance_root(self, x_star: Tensor, lin: Linearization) -> tuple[Tensor, str]:
        post = self.posterior
        factor, form = post.covariance_factor()
        factor = factor.to(lin.dtype)  # shape: (r, p)
        root = lin.jvp(x_star, factor).reshape(factor.shape[0], -1).mT  # shape: (m·o, r)
        return math.sqrt(post.prior_variance) * root, form

    def exact_prediction(
        self,
        test_mean: Tensor,
        test_test_covar: LinearOperator | Tensor,
        test_train_covar: LinearOperator | Tensor,
    ) -> tuple[Tensor, LinearOperator]:
        """Posterior mean and (lazy) covariance of the latent f at the test points."""
        return (
            self.exact_predictive_mean(test_mean, test_train_covar),
            self.exact_predictive_covar(test_test_covar, test_train_covar),
        )

    def exact_predictive_mean(
        self, test_mean: Tensor, test_train_covar: LinearOperator | Tensor
    ) -> Tensor:
        """m(x*) + J(x*) w̄; the test inputs are read from the test–train kernel."""
        op, _ = _unwrap_kernel_matrix(test_train_covar, "the test-train covariance")
        latent = self._latent_mean(op.x1, op.linearization)
        return test_mean + latent.to(test_mean.dtype).reshape(test_mean.shape)

    def exact_predictive_covar(
        self, test_test_covar: LinearOperator | Tensor, test_train_covar: LinearOperator | Tensor
    ) -> LinearOperator:
        """s² J* J*ᵀ − R Rᵀ as a lazy operator (diagonal: exact NTK diagonal − ‖R_i‖²)."""
        if gpytorch.settings.skip_posterior_variances.on():
            return ZeroLinearOperator(
                *test_test_covar.shape, dtype=test_test_covar.dtype, device=test_test_covar.device
            )
        op, s2 = _unwrap_kernel_matrix(test_test_covar, "the test-test covariance")
        if not op.square:
            raise ValueError("the test-test covariance must be square")
        post = self.posterior
        if not math.isclose(s2, post.prior_variance, rel_tol=1e-12):
            raise ValueError(
                f"the test kernel's prior variance ({s2}) differs from the training "
                f"kernel's ({post.prior_variance})"
            )
        root, form = self._covariance_root(op.x1, op.linearization)
        if form == "direct":  # Σ = s² FᵀF
            return RootLinearOperator(root)
        prior = ConstantMulLinearOperator(op, torch.tensor(s2 / op.scale, dtype=op.dtype))
        return prior + MatmulLinearOperator(root, -root.mT)

    def get_fantasy_strategy(self, *args: Any, **kwargs: Any) -> DefaultPredictionStrategy:
        raise NotImplementedError(
            "fantasy updates are not supported by parameter-space prediction; use "
            'FiniteNTKKernel(..., prediction="function")'
        )


# --------------------------------------------------------------------------- model
def _set_noise(likelihood: GaussianLikelihood | MultitaskGaussianLikelihood, value: float) -> None:
    """Set σ² in the likelihood's own dtype (a Python float would pass through float32)."""
    dtype, device = likelihood.raw_noise.dtype, likelihood.raw_noise.device
    v = torch.as_tensor(value, dtype=dtype, device=device).detach()
    if v.numel() != 1 or not torch.isfinite(v).all() or float(v) <= 0:
        raise ValueError(f"noise_variance must be a positive finite number, got {value!r}")
    likelihood.noise = v
    got = likelihood.noise.detach()
    if not torch.isfinite(got).all() or not torch.allclose(got, v, rtol=1e-6, atol=0.0):
        raise ValueError(
            f"noise_variance={value!r} is outside the likelihood's noise constraint "
            "(GaussianLikelihood requires > 1e-4 by default)"
        )


class FiniteNTKGP(ExactGP):
    r"""An exact GPyTorch GP with the finite-NTK kernel (Section 3; posterior Eq. 3).

    ``forward(x)`` is N(m(x), s² J(x) J(x)ᵀ) with m = 0 (``mean="zero"``, the finite
    NTK) or m = f(·; θ) (``mean="network"``, the linearized network of Eq. 1). In eval
    mode ``gp(x_test)`` is the posterior of the latent f, equal to
    ``ntkcore.adapt(model, x, y, mean=..., noise_variance=σ², prior_variance=s²)``;
    ``gp.likelihood(gp(x_test))`` adds the noise. Hyperparameters σ² (the likelihood's
    noise) and s² (``gp.covar_module.prior_variance``) train through
    :class:`gpytorch.mlls.ExactMarginalLogLikelihood` as usual.

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
        The trained network (weights snapshot) or its linearization.
    train_x : Tensor
        Flat training inputs, shape (n, d) (see ``input_shape``).
    train_y : Tensor
        Targets, shape (n,) for one output or (n, o).
    likelihood : gpytorch.likelihoods.Likelihood, optional
        Default: ``GaussianLikelihood()`` for o = 1, and
        ``MultitaskGaussianLikelihood(o, rank=0, has_task_noise=False)`` (i.i.d. noise)
        for o > 1. Converted to the network's dtype and device.
    mean : {"zero", "network"}
        Prior mean.
    noise_variance : float, optional
        Initial σ² of the default likelihood.
    params, prior_variance, input_shape, chunk_size, prediction, parameter_options
        As for :class:`FiniteNTKKernel`. ``prediction="parameter"`` predicts through
        weight-space CG (:class:`ParameterSpacePredictionStrategy`).
    """

    def __init__(
        self,
        model_or_lin: nn.Module | Linearization,
        train_x: Tensor,
        train_y: Tensor,
        likelihood: Likelihood | None = None,
        *,
        mean: str = "zero",
        noise_variance: float | None = None,
        params: ParameterFilter = None,
        prior_variance: float = 1.0,
        input_shape: tuple[int, ...] | None = None,
        chunk_size: int | None = None,
        prediction: str = "function",
        parameter_options: dict[str, Any] | None = None,
    ) -> None:
        if mean not in ("zero", "network"):
            raise ValueError(f"mean must be 'zero' or 'network', got {mean!r}")
        kernel = FiniteNTKKernel(
            model_or_lin,
            params=params,
            prior_variance=prior_variance,
            input_shape=input_shape,
            chunk_size=chunk_size,
            prediction=prediction,
            parameter_options=parameter_options,
        )
        lin = kernel.linearization
        if not isinstance(train_x, Tensor) or not isinstance(train_y, Tensor):
            raise ValueError("train_x and train_y must be torch tensors")
        xs = kernel.network_inputs(train_x, "train_x")
        o = lin.output_dim(xs)
        n = xs.shape[0]
        expected = ((n,), (n, 1)) if o == 1 else ((n, o),)
        if tuple(train_y.shape) not in expected:
            raise ValueError(
                f"train_y must have shape {' or '.join(map(str, expected))} for a network "
                f"with o={o} outputs and n={n} points, got {tuple(train_y.shape)}"
            )
        train_y = train_y.detach().to(device=lin.device, dtype=lin.dtype)
        if o == 1:
            train_y = train_y.reshape(n)
        if not torch.isfinite(train_y).all():
            raise ValueError("train_y contains non-finite values (nan or inf)")
        if likelihood is None:
            likelihood = (
                GaussianLikelihood()
                if o == 1
                else MultitaskGaussianLikelihood(num_tasks=o, rank=0, has_task_noise=False)
            )
            likelihood = likelihood.to(device=lin.device, dtype=lin.dtype)
            if noise_variance is not None:
                _set_noise(likelihood, noise_variance)
        elif noise_variance is not None:
            raise ValueError("pass noise_variance only with the default likelihood")
        else:
            likelihood = likelihood.to(device=lin.device, dtype=lin.dtype)
        train_x = train_x.detach().to(device=lin.device, dtype=lin.dtype)
        super().__init__(train_x, train_y, likelihood)
        self.num_outputs = o
        self.covar_module = kernel
        self.mean_module: Mean = (
            NetworkMean(lin, kernel.input_shape) if mean == "network" else ZeroMean()
        )

    @property
    def linearization(self) -> Linearization:
        return self.covar_module.linearization

    def forward(self, x: Tensor) -> MultivariateNormal:
        """The prior N(m(x), s² J(x) J(x)ᵀ) on flat inputs x of shape (n, d)."""
        covar = self.covar_module(x)
        mean = self.mean_module(x)
        if self.num_outputs == 1:
            return MultivariateNormal(mean, covar)
        if mean.dim() == 1:  # ZeroMean gives (n,)
            mean = mean.unsqueeze(-1).expand(-1, self.num_outputs)
        return MultitaskMultivariateNormal(mean, covar, interleaved=True)
