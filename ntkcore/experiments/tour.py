"""Helpers of the app's Learn page: the ideas of the paper, each as a small computation.

A workshop tour of *Fast Adaptation with Linearized Neural Networks* (Maddox et al., AISTATS
2021) needs a few numbers that no experiment produces: the network and its linearization along
a line in parameter space (Eq. 1), the finite NTK J Jᵀ on a probe set, the predictive
distribution at one test point computed in weight space (Eq. 2) and in function space
(Eq. 3), when each of the two is cheaper, and the error of the finite-difference Fisher-vector
product (Eq. 5) as its step varies. The functions here return those numbers as tidy
DataFrames or small frozen dataclasses; ``ntkcore.plots.tour`` draws them.

These are page helpers, not registered experiments (none trains a model or runs for long);
every one takes a trained network (or a :class:`~ntkcore.Linearization` of it) and small
inputs, and runs in well under a second for the zoo's workshop MLPs on one CPU core, except
:func:`space_timings`, which times solves on purpose.

Notation (the engine's, ``ntkcore.posterior``): J is the N × p Jacobian of the n inputs'
o outputs, N = n·o, rows sample-major (row i·o + a); the paper writes its transpose
(p × N). The prior is w ~ N(0, s² I_p), the noise ε ~ N(0, σ² I_N), c = σ²/s².
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import ntkcore
from ntkcore.fisher import KINKS, LIKELIHOODS, default_eps, fisher_vp
from ntkcore.linearization import Linearization, as_linearization
from ntkcore.parameters import ParameterFilter, select_parameters
from ntkcore.posterior import MEANS
from ntkcore.zoo.presets import preset as _preset
from ntkcore.zoo.pretraining import load_task, resolve
from ntkcore.zoo.registry import create
from ntkcore.zoo.training import seeded

__all__ = [
    "SCHEMES",
    "SPACES",
    "KernelMatrix",
    "LinearizationPath",
    "PosteriorNumbers",
    "fd_fisher_error",
    "initial_network",
    "kernel_matrix",
    "linearization_path",
    "posterior_numbers",
    "space_costs",
    "space_timings",
]

_F64 = torch.float64
#: Finite-difference schemes of :func:`fd_fisher_error`: Eq. 5's forward difference, and the
#: engine's compensated central difference (``fisher_vp(..., central=True)``).
SCHEMES: tuple[str, ...] = ("forward", "central")
#: The two ways to solve the GP system (:func:`space_costs`, :func:`space_timings`).
SPACES: tuple[str, ...] = ("function", "parameter")
#: Above this p, :func:`posterior_numbers` solves the p × p system of Eq. 2 by conjugate
#: gradients instead of a Cholesky factorization: a float64 Cholesky of p = 3401 took 1.6 s
#: on the loaded 2-core build machine (p = 1537: 0.15 s), too slow for a live page.
MAX_CHOLESKY_PARAMS = 2500


# ----------------------------------------------------------------------------- helpers
def _lin(model: nn.Module | Linearization) -> Linearization:
    return as_linearization(model)


def _float64(lin: Linearization) -> Linearization:
    """A float64 copy of ``lin`` at the same θ (the model itself is not touched)."""
    if lin.dtype == _F64:
        return lin
    model = copy.deepcopy(lin.model).to(_F64)
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in lin.unflatten(lin.parameter_vector()).items():
            named[name].copy_(value.to(_F64))
    return Linearization(model, params=list(lin.parameter_names))


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    try:
        out = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {values!r}") from None
    if not out or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1
                      for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return [int(v) for v in out]


def _floats(name: str, values: Any, *, positive: bool = False) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {values!r}")
    if positive and np.any(array <= 0):
        raise ValueError(f"{name} must be positive, got {values!r}")
    return array


def _choices(name: str, values: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    try:
        out = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {list(allowed)}, got {values!r}") from None
    if not out or any(v not in allowed for v in out) or len(set(out)) != len(out):
        raise ValueError(
            f"{name} must be distinct values from {list(allowed)}, got {values!r}"
        )
    return out


def _scalar_inputs(x: Tensor) -> np.ndarray | None:
    """The inputs as floats when each is a scalar ((n,) or (n, 1)), else None."""
    if x.dim() == 1 or (x.dim() == 2 and x.shape[1] == 1):
        return x.reshape(-1).detach().cpu().to(_F64).numpy()
    return None


def _targets(y: Tensor, n: int, o: int) -> Tensor:
    y = torch.as_tensor(y)
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape != (n, o):
        raise ValueError(f"y must have shape ({n},) or ({n}, {o}), got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains non-finite values (nan or inf)")
    return y


def initial_network(preset_id: str) -> nn.Module:
    """The architecture of zoo preset ``preset_id`` at the initialization it was trained from.

    The zoo seeds the construction of a network with the preset's seed before training
    (``ntkcore.zoo.fetch``), so this is the trained network's own starting point: what the
    NTK of Jacot et al. linearizes, where the paper linearizes the trained network instead.

    Raises
    ------
    ValueError
        For an unknown preset.
    """
    spec = _preset(preset_id)
    task = load_task(spec.dataset, dict(spec.data_kw))
    r = resolve(spec.arch, spec.dataset, task, spec.seed, dict(spec.data_kw), **spec.hyper)
    with seeded(spec.seed):
        model = create(spec.arch, **r.arch_kwargs)
    return model.eval()


# -------------------------------------------------------------- (a) the linearization
@dataclass(frozen=True)
class LinearizationPath:
    """The network and its linearization along a line θ + α d in parameter space (Eq. 1).

    Attributes
    ----------
    curves : DataFrame
        One row per step α × input point × output: ``alpha``, ``point`` (index), ``x`` (the
        input, for scalar inputs only), ``output``, ``network`` = f(x; θ + α d),
        ``linearized`` = f(x; θ) + α J(x) d, ``difference`` = network − linearized.
    errors : DataFrame
        One row per α: ``alpha``, ``change_norm`` = ‖f(θ + α d) − f(θ)‖,
        ``error_norm`` = ‖f(θ + α d) − f_lin(α)‖ (norms over all points and outputs) and
        ``relative_error`` = error_norm / change_norm: the share of the network's change
        that the linearization misses (NaN at α = 0, where both vanish).
    theta_norm : float
        ‖θ‖, to relate α to the size of the weights.
    num_params : int
        p.
    direction : ndarray, shape (p,)
        d (float64).
    direction_params : tuple of str
        The parameters the direction d moves.
    """

    curves: pd.DataFrame
    errors: pd.DataFrame
    theta_norm: float
    num_params: int
    direction: np.ndarray
    direction_params: tuple[str, ...]

    def breaking_alpha(self, threshold: float = 0.1) -> float | None:
        """The smallest |α| at which the relative error reaches ``threshold`` (None: never).

        Raises
        ------
        ValueError
            If ``threshold`` is not a positive finite number.
        """
        threshold = _positive("threshold", threshold)
        rel = self.errors["relative_error"].to_numpy()
        alphas = np.abs(self.errors["alpha"].to_numpy())
        hit = np.isfinite(rel) & (rel >= threshold)
        return float(alphas[hit].min()) if hit.any() else None


def _direction(
    lin: Linearization,
    direction: Tensor | None,
    layers: ParameterFilter,
    seed: int,
) -> tuple[Tensor, tuple[str, ...]]:
    p = lin.num_params
    if direction is not None:
        if layers is not None:
            raise ValueError("give either a direction or layers to draw one on, not both")
        d = torch.as_tensor(direction)
        if d.shape != (p,):
            raise ValueError(f"direction must have shape ({p},), got {tuple(d.shape)}")
        d = d.to(_F64)
        if not torch.isfinite(d).all() or not d.abs().sum() > 0:
            raise ValueError("direction must be finite and non-zero")
        slices = lin.layout.slices()
        moved = tuple(n for n in lin.parameter_names if d[slices[n]].abs().sum() > 0)
        return d, moved
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if layers is None:
        moved = tuple(lin.parameter_names)
    else:
        chosen = set(select_parameters(lin.model, layers))
        moved = tuple(n for n in lin.parameter_names if n in chosen)
        if not moved:
            raise ValueError(
                f"layers={layers!r} selects none of the linearized parameters "
                f"{list(lin.parameter_names)}"
            )
    generator = torch.Generator().manual_seed(seed)
    d = torch.zeros(p, dtype=_F64)
    slices = lin.layout.slices()
    for name in moved:
        s = slices[name]
        d[s] = torch.randn(s.stop - s.start, generator=generator, dtype=_F64)
    return d / d.norm(), moved


def linearization_path(
    model: nn.Module | Linearization,
    x: Tensor,
    direction: Tensor | None = None,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    layers: ParameterFilter = None,
    seed: int = 0,
) -> LinearizationPath:
    r"""f(x; θ + α d) and its linearization f(x; θ) + α J(x) d along a line (Eq. 1).

    Eq. 1 replaces the network by its first-order Taylor expansion around the trained θ. Along
    a line θ + α d the expansion is a straight line in α for every input; the network bends
    away from it at a rate set by its curvature in direction d, so the relative error grows
    about linearly in |α| (the second-order remainder) until the linearization stops
    describing the network. Everything is evaluated in float64 (a copy of the network), so
    rounding does not hide the remainder at small α.

    Parameters
    ----------
    model : nn.Module or Linearization
        The trained network (all parameters linearized) or a Linearization selecting some.
    x : Tensor
        Inputs, shape (n, \*input_shape).
    direction : Tensor, optional
        d, shape (p,), used as given (α multiplies it). Default: a random Gaussian direction
        of unit norm on the parameters selected by ``layers`` (all by default).
    alphas : sequence of float, optional
        Steps α; default 41 values evenly spaced in [−5, 5].
    layers : str, sequence of str or callable, optional
        Parameter-name patterns (:func:`ntkcore.select_parameters`) the random direction
        lives on, e.g. ``"head"`` (the last layer: there the network is linear in its
        parameters and the linearization is exact) or ``"body.0"``.
    seed : int
        Seed of the random direction.

    Returns
    -------
    LinearizationPath

    Raises
    ------
    ValueError
        For malformed inputs, alphas or direction, or layers that select no parameter.
    """
    lin = _lin(model)
    d, moved = _direction(lin, direction, layers, seed)
    steps = _floats("alphas", np.linspace(-5.0, 5.0, 41) if alphas is None else alphas)
    lin64 = _float64(lin)
    x64 = lin64.prepare_inputs(x)
    theta = lin64.parameter_vector()  # shape: (p,)
    f0 = lin64(x64)  # shape: (n, o)
    jd = lin64.jvp(x64, d)  # shape: (n, o)
    n, o = f0.shape
    xs = _scalar_inputs(x64)
    rows: list[pd.DataFrame] = []
    errors = []
    with torch.no_grad():
        for alpha in steps:
            fa = lin64.evaluate(
                lambda a=alpha: lin64.functional_forward(lin64.unflatten(theta + a * d), x64),
                x64,
            )
            fl = f0 + alpha * jd
            change, error = float((fa - f0).norm()), float((fa - fl).norm())
            errors.append(
                {
                    "alpha": float(alpha),
                    "change_norm": change,
                    "error_norm": error,
                    "relative_error": error / change if change > 0 else float("nan"),
                }
            )
            table = {
                "alpha": np.full(n * o, float(alpha)),
                "point": np.repeat(np.arange(n), o),
                "output": np.tile(np.arange(o), n),
                "network": fa.reshape(-1).numpy(),
                "linearized": fl.reshape(-1).numpy(),
            }
            if xs is not None:
                table["x"] = np.repeat(xs, o)
            rows.append(pd.DataFrame(table))
    curves = pd.concat(rows, ignore_index=True)
    curves["difference"] = curves["network"] - curves["linearized"]
    order = ["alpha", "point", *(["x"] if xs is not None else []), "output", "network",
             "linearized", "difference"]
    return LinearizationPath(
        curves=curves[order],
        errors=pd.DataFrame(errors),
        theta_norm=float(theta.norm()),
        num_params=lin.num_params,
        direction=d.numpy(),
        direction_params=moved,
    )


# ------------------------------------------------------------------- (b) the kernel
@dataclass(frozen=True)
class KernelMatrix:
    """The finite NTK J Jᵀ on a probe set (sample-major: entry (i·o + a, j·o + b)).

    Attributes
    ----------
    values : ndarray, shape (N, N)
        The kernel in float64, or its normalized form k(x, x') / √(k(x, x) k(x', x')).
    labels : tuple of str
        One label per row: the input (scalar inputs) or its index, and the output when o > 1.
    inputs : ndarray or None
        The scalar inputs, shape (n,), when each input is a scalar.
    outputs : int
        o.
    normalized : bool
    """

    values: np.ndarray
    labels: tuple[str, ...]
    inputs: np.ndarray | None
    outputs: int
    normalized: bool

    def tidy(self) -> pd.DataFrame:
        """One row per entry: ``row``, ``column``, ``row_label``, ``column_label``, ``value``."""
        size = self.values.shape[0]
        rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        labels = np.asarray(self.labels, dtype=object)
        return pd.DataFrame(
            {
                "row": rows.ravel(),
                "column": cols.ravel(),
                "row_label": labels[rows.ravel()],
                "column_label": labels[cols.ravel()],
                "value": self.values.ravel(),
            }
        )


def kernel_matrix(
    model: nn.Module | Linearization, x: Tensor, *, normalize: bool = False
) -> KernelMatrix:
    r"""The finite NTK k(x, x') = J(x) J(x')ᵀ on a probe set (Section 3), in float64.

    Parameters
    ----------
    model : nn.Module or Linearization
        The network (all parameters) or a Linearization selecting the parameters.
    x : Tensor
        Probe inputs, shape (n, \*input_shape); keep n·o to a few hundred for a heatmap.
    normalize : bool
        Return the cosine similarity k(x, x') / √(k(x, x) k(x', x')) of the Jacobians
        (entries in [−1, 1]) instead of the kernel.

    Returns
    -------
    KernelMatrix

    Raises
    ------
    ValueError
        For malformed inputs, or ``normalize`` with a Jacobian row that is zero.
    """
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    lin64 = _float64(_lin(model))
    x64 = lin64.prepare_inputs(x)
    values = lin64.ntk(x64)  # shape: (n·o, n·o)
    n = x64.shape[0]
    o = values.shape[0] // n
    if normalize:
        diag = values.diagonal()
        if not bool((diag > 0).all()):
            raise ValueError("cannot normalize: a Jacobian row is zero (k(x, x) = 0)")
        scale = diag.rsqrt()
        values = values * scale[:, None] * scale[None, :]
    xs = _scalar_inputs(x64)
    base = [f"{v:.3g}" for v in xs] if xs is not None else [f"#{i}" for i in range(n)]
    labels = tuple(b if o == 1 else f"{b} · out {a}" for b in base for a in range(o))
    return KernelMatrix(values.numpy(), labels, xs, o, normalize)


# ------------------------------------------------------------- (c) the posterior
def _function_space_weights(jac: Tensor, resid: Tensor, c: float) -> Tensor:
    """w̄ = Jᵀ (J Jᵀ + c I_N)⁻¹ r: an N × N Cholesky solve (Eq. 3)."""
    gram = jac @ jac.T  # shape: (N, N)
    gram.diagonal().add_(c)
    chol = torch.linalg.cholesky(gram)
    return jac.T @ torch.cholesky_solve(resid[:, None], chol)[:, 0]


def _weight_space_weights(jac: Tensor, resid: Tensor, c: float) -> tuple[Tensor, Tensor]:
    """w̄ = (JᵀJ + c I_p)⁻¹ Jᵀ r: a p × p Cholesky solve (Eq. 2); also the factor."""
    gram = jac.T @ jac  # shape: (p, p)
    gram.diagonal().add_(c)
    chol = torch.linalg.cholesky(gram)
    return torch.cholesky_solve((jac.T @ resid)[:, None], chol)[:, 0], chol


@dataclass(frozen=True)
class PosteriorNumbers:
    """The numbers of Eq. 1–3 for one small example and one test point x*.

    With J (N × p) the Jacobian at the n context inputs, J* (o × p) at x*, r = y − m(X),
    c = σ²/s² (see the module docstring):

    * Eq. 1: f(x*; θ') ≈ f(x*; θ) + J*(θ' − θ);
    * Eq. 2 (weight space, a p × p system): mean m(x*) + J*(JᵀJ + c I_p)⁻¹ Jᵀ r,
      variance σ² J*(JᵀJ + c I_p)⁻¹ J*ᵀ;
    * Eq. 3 (function space, an N × N system): mean m(x*) + J* Jᵀ (J Jᵀ + c I_N)⁻¹ r,
      variance s² (J* J*ᵀ − J* Jᵀ (J Jᵀ + c I_N)⁻¹ J J*ᵀ).

    The paper prints Eq. 3's variance with a leading σ²; with the prior N(0, I) of its
    Section 3 (s² = 1), Woodbury's identity gives σ²(JᵀJ + σ² I)⁻¹ = I − Jᵀ(J Jᵀ + σ² I)⁻¹ J,
    without that factor, and the two variances here agree only without it.

    Attributes
    ----------
    n, outputs, num_params : int
        n, o and p.
    noise_variance, prior_variance : float
        σ² and s².
    mean_type : str
        ``"zero"`` (the finite NTK) or ``"network"`` (m = f(·; θ)).
    x_star : ndarray
        The test input, shape input_shape.
    network_star : ndarray, shape (o,)
        f(x*; θ).
    jacobian_norm_star : ndarray, shape (o,)
        ‖J*‖ per output; s² ‖J*‖² is the prior variance at x*.
    kernel_block : ndarray, shape (k, k)
        The top-left k × k block of J Jᵀ (k = min(3, N)).
    cross_kernel : ndarray, shape (k,)
        The first k entries of J J*ᵀ (first output of x*).
    residual : ndarray, shape (k,)
        The first k entries of r.
    weight_space_mean, weight_space_variance : ndarray, shape (o,)
        Eq. 2, float64; solved by Cholesky (p <= :data:`MAX_CHOLESKY_PARAMS`) or, above,
        by the engine's weight-space conjugate gradients in float64
        (``adapt(strategy="parameter")`` with a full-rank sketch).
    weight_space_method : str
        ``"cholesky"`` or ``"cg"``.
    function_space_mean, function_space_variance : ndarray, shape (o,)
        Eq. 3, float64, by Cholesky.
    engine_mean, engine_variance : ndarray, shape (o,)
        ``ntkcore.adapt(...).predict(x*)`` on the network in its own dtype.
    engine_strategy : str
        The strategy ``adapt`` chose.
    """

    n: int
    outputs: int
    num_params: int
    noise_variance: float
    prior_variance: float
    mean_type: str
    x_star: np.ndarray
    network_star: np.ndarray
    jacobian_norm_star: np.ndarray
    kernel_block: np.ndarray
    cross_kernel: np.ndarray
    residual: np.ndarray
    weight_space_mean: np.ndarray
    weight_space_variance: np.ndarray
    weight_space_method: str
    function_space_mean: np.ndarray
    function_space_variance: np.ndarray
    engine_mean: np.ndarray
    engine_variance: np.ndarray
    engine_strategy: str

    def table(self) -> pd.DataFrame:
        """The scalar numbers as a tidy table: ``quantity``, ``output``, ``value``."""
        rows: list[dict[str, Any]] = [
            {"quantity": "n", "output": -1, "value": self.n},
            {"quantity": "p", "output": -1, "value": self.num_params},
            {"quantity": "noise_variance", "output": -1, "value": self.noise_variance},
            {"quantity": "prior_variance", "output": -1, "value": self.prior_variance},
        ]
        for name in (
            "network_star",
            "jacobian_norm_star",
            "weight_space_mean",
            "weight_space_variance",
            "function_space_mean",
            "function_space_variance",
            "engine_mean",
            "engine_variance",
        ):
            values = getattr(self, name)
            rows += [{"quantity": name, "output": a, "value": float(v)}
                     for a, v in enumerate(values)]
        return pd.DataFrame(rows)


def posterior_numbers(
    model: nn.Module | Linearization,
    x: Tensor,
    y: Tensor,
    x_star: Tensor,
    *,
    noise_variance: float,
    prior_variance: float = 1.0,
    mean: str = "zero",
    max_cholesky_params: int = MAX_CHOLESKY_PARAMS,
) -> PosteriorNumbers:
    r"""The numbers of Eq. 1–3 for context (x, y) and one test input x* (float64).

    Parameters
    ----------
    model : nn.Module or Linearization
        The trained network, or a Linearization selecting its parameters.
    x : Tensor
        Context inputs, shape (n, \*input_shape).
    y : Tensor
        Context targets, shape (n,) or (n, o).
    x_star : Tensor
        One test input, shape input_shape or (1, \*input_shape).
    noise_variance, prior_variance : float
        σ² and s².
    mean : {"zero", "network"}
        The prior mean m: 0 (the finite NTK) or the network f(·; θ) (the linearized network).
    max_cholesky_params : int
        Solve Eq. 2 by a p × p Cholesky factorization up to this p, by conjugate gradients
        above (see :data:`MAX_CHOLESKY_PARAMS`).

    Returns
    -------
    PosteriorNumbers

    Raises
    ------
    ValueError
        For malformed inputs or hyperparameters, or an unknown ``mean``.
    """
    sigma2 = _positive("noise_variance", noise_variance)
    s2 = _positive("prior_variance", prior_variance)
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if isinstance(max_cholesky_params, bool) or not isinstance(max_cholesky_params, int):
        raise ValueError(f"max_cholesky_params must be an int, got {max_cholesky_params!r}")
    lin = _lin(model)
    lin64 = _float64(lin)
    x64 = lin64.prepare_inputs(x)
    xs = torch.as_tensor(x_star)
    if xs.dim() == x64.dim() - 1:
        xs = xs[None]
    if xs.dim() != x64.dim() or xs.shape[0] != 1 or xs.shape[1:] != x64.shape[1:]:
        raise ValueError(
            f"x_star must be one input of shape {tuple(x64.shape[1:])} (or with a leading 1), "
            f"got {tuple(xs.shape)}"
        )
    xs64 = lin64.prepare_inputs(xs)
    n = x64.shape[0]
    f_context = lin64(x64)  # shape: (n, o)
    o = f_context.shape[1]
    y64 = _targets(y, n, o).to(_F64)
    p = lin64.num_params
    c = sigma2 / s2

    jac = lin64.jacobian(x64).reshape(n * o, p)  # shape: (N, p)
    jac_star = lin64.jacobian(xs64).reshape(o, p)  # shape: (o, p)
    f_star = lin64(xs64)[0]  # shape: (o,)
    m_context = f_context if mean == "network" else torch.zeros_like(f_context)
    m_star = f_star if mean == "network" else torch.zeros_like(f_star)
    resid = (y64 - m_context).reshape(-1)  # shape: (N,)

    # Eq. 3: the N × N system.
    gram = jac @ jac.T
    system = gram.clone()
    system.diagonal().add_(c)
    chol_n = torch.linalg.cholesky(system)
    cross = jac @ jac_star.T  # shape: (N, o)
    f_mean = m_star + cross.T @ torch.cholesky_solve(resid[:, None], chol_n)[:, 0]
    solved = torch.cholesky_solve(cross, chol_n)  # shape: (N, o)
    f_var = s2 * (jac_star.square().sum(1) - (cross * solved).sum(0))

    # Eq. 2: the p × p system.
    if p <= max_cholesky_params:
        weights, chol_p = _weight_space_weights(jac, resid, c)
        w_mean = m_star + jac_star @ weights
        w_var = sigma2 * (jac_star * torch.cholesky_solve(jac_star.T, chol_p).T).sum(1)
        method = "cholesky"
    else:
        post = ntkcore.adapt(
            lin64, x64, y64, noise_variance=sigma2, prior_variance=s2, mean=mean,
            strategy="parameter", rank=min(n * o, p), tol=1e-10,
        )
        pred = post.predict(xs64)
        w_mean, w_var = pred.mean[0], pred.variance[0]
        method = "cg"

    engine = ntkcore.adapt(lin, x, _targets(y, n, o), noise_variance=sigma2,
                           prior_variance=s2, mean=mean)
    engine_pred = engine.predict(lin.prepare_inputs(xs))
    k = min(3, n * o)
    return PosteriorNumbers(
        n=n,
        outputs=o,
        num_params=p,
        noise_variance=sigma2,
        prior_variance=s2,
        mean_type=mean,
        x_star=xs64[0].numpy(),
        network_star=f_star.numpy(),
        jacobian_norm_star=jac_star.norm(dim=1).numpy(),
        kernel_block=gram[:k, :k].numpy(),
        cross_kernel=cross[:k, 0].numpy(),
        residual=resid[:k].numpy(),
        weight_space_mean=w_mean.detach().to(_F64).numpy(),
        weight_space_variance=w_var.detach().to(_F64).numpy(),
        weight_space_method=method,
        function_space_mean=f_mean.numpy(),
        function_space_variance=f_var.numpy(),
        engine_mean=engine_pred.mean[0].detach().to(_F64).numpy(),
        engine_variance=engine_pred.variance[0].detach().to(_F64).numpy(),
        engine_strategy=engine.strategy,
    )


# ---------------------------------------------------- (d) function vs parameter space
def space_costs(
    n_values: Sequence[int],
    p_values: Sequence[int],
    *,
    outputs: int = 1,
    dtype: torch.dtype = torch.float32,
    available_memory: int | None = None,
) -> pd.DataFrame:
    """When function space (Eq. 3) or parameter space (Eq. 2) is cheaper: a cost model.

    Both spaces start from the same explicit Jacobian J (N × p, N = n·o). Solving in
    function space forms J Jᵀ (N² p multiply–adds) and factorizes it (N³/3); parameter space
    forms JᵀJ (N p²) and factorizes that (p³/3). The counts are symmetric in N and p, so the
    cheaper space is the smaller dimension, and the memory of the system matrix (N² or p²
    float64 numbers) follows the same rule. Next to this flop count each row records what
    the engine's cost model, :func:`ntkcore.choose_strategy`, picks for the same sizes
    (``dense``, exact on the smaller Gram matrix, while it fits in memory, else
    matrix-free conjugate gradients in the smaller space).

    Parameters
    ----------
    n_values, p_values : sequence of int
        Numbers of context points n and of parameters p (every pair is a setting).
    outputs : int
        o, outputs per point.
    dtype : torch.dtype
        The network's dtype, for ``choose_strategy``.
    available_memory : int, optional
        Bytes for ``choose_strategy`` (default: what is free on the CPU now).

    Returns
    -------
    DataFrame
        One row per n × p × space: ``n``, ``p``, ``outputs``, ``space`` ("function" or
        "parameter"), ``system_size`` (N or p), ``flops`` (multiply–adds of forming and
        factorizing the system), ``system_bytes`` (float64), ``cheaper`` (this space's
        count is the smaller; both on a tie), ``engine_strategy`` and ``engine_reason``.
    """
    ns = _positive_ints("n_values", n_values)
    ps = _positive_ints("p_values", p_values)
    (o,) = _positive_ints("outputs", [outputs])
    rows = []
    for n in ns:
        for p in ps:
            big_n = n * o
            flops = {
                "function": big_n**2 * p + big_n**3 / 3,
                "parameter": big_n * p**2 + p**3 / 3,
            }
            strategy, reason = ntkcore.choose_strategy(
                big_n, p, dtype=dtype, available_memory=available_memory
            )
            for space in SPACES:
                size = big_n if space == "function" else p
                rows.append(
                    {
                        "n": n,
                        "p": p,
                        "outputs": o,
                        "space": space,
                        "system_size": size,
                        "flops": float(flops[space]),
                        "system_bytes": 8 * size * size,
                        "cheaper": flops[space] <= min(flops.values()),
                        "engine_strategy": strategy,
                        "engine_reason": reason,
                    }
                )
    return pd.DataFrame(rows)


def space_timings(
    model: nn.Module | Linearization,
    x: Tensor,
    y: Tensor,
    n_values: Sequence[int],
    *,
    noise_variance: float,
    prior_variance: float = 1.0,
    repeats: int = 3,
    progress: Callable[[float, str], None] | None = None,
) -> pd.DataFrame:
    """Measured seconds of the two explicit solves, and of ``ntkcore.adapt``, as n grows.

    For each n, the float64 Jacobian of the first n points is formed once (its time is the
    ``jacobian`` row); then the posterior weights w̄ are solved both ways, each the median
    of ``repeats`` runs: ``function`` forms J Jᵀ + c I_N and solves by Cholesky (Eq. 3),
    ``parameter`` forms JᵀJ + c I_p and solves by Cholesky (Eq. 2). ``engine`` times the
    whole ``ntkcore.adapt(..., strategy="auto")`` on the network in its own dtype, Jacobian
    included. Times are wall-clock on this machine and include its load.

    Parameters
    ----------
    model : nn.Module or Linearization
        The network, or a Linearization selecting the parameters (fixes p).
    x, y : Tensor
        A pool of inputs (n_max, \\*input_shape) and targets (n_max,) or (n_max, o).
    n_values : sequence of int
        Context sizes; each at most the pool size.
    noise_variance, prior_variance : float
        σ² and s².
    repeats : int
        Runs per solve (the median is reported).
    progress : callable, optional
        ``progress(fraction, message)`` after each n (exceptions propagate).

    Returns
    -------
    DataFrame
        One row per n × method: ``n``, ``p``, ``outputs``, ``method`` ("jacobian",
        "function", "parameter", "engine"), ``seconds``, ``system_size`` (N, p, or 0 for
        the Jacobian, the engine's N or p), ``engine_strategy`` and ``weights_difference``
        = ‖w̄_function − w̄_parameter‖ / ‖w̄_parameter‖ (the two solves agree).
    """
    sigma2 = _positive("noise_variance", noise_variance)
    s2 = _positive("prior_variance", prior_variance)
    ns = _positive_ints("n_values", n_values)
    (repeats,) = _positive_ints("repeats", [repeats])
    lin = _lin(model)
    lin64 = _float64(lin)
    pool = lin64.prepare_inputs(x)
    o = lin64.output_dim(pool)
    y_pool = _targets(y, pool.shape[0], o)
    if max(ns) > pool.shape[0]:
        raise ValueError(f"n_values go up to {max(ns)} but the pool has {pool.shape[0]} points")
    p, c = lin64.num_params, sigma2 / s2

    def median_seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), out

    rows = []
    for i, n in enumerate(ns):
        xn, yn = pool[:n], y_pool[:n]
        t_jac, jac = median_seconds(lambda xn=xn: lin64.jacobian(xn).reshape(-1, p))
        resid = yn.to(_F64).reshape(-1)
        t_fun, w_fun = median_seconds(
            lambda jac=jac, resid=resid: _function_space_weights(jac, resid, c)
        )
        t_par, (w_par, _) = median_seconds(
            lambda jac=jac, resid=resid: _weight_space_weights(jac, resid, c)
        )
        t_eng, post = median_seconds(
            lambda xn=xn, yn=yn: ntkcore.adapt(
                lin, xn, yn, noise_variance=sigma2, prior_variance=s2, mean="zero"
            )
        )
        difference = float((w_fun - w_par).norm() / w_par.norm().clamp_min(1e-300))
        strategy = post.strategy
        engine_size = n * o if strategy == "function" else p if strategy == "parameter" else min(
            n * o, p
        )
        for method, seconds, size in (
            ("jacobian", t_jac, 0),
            ("function", t_fun, n * o),
            ("parameter", t_par, p),
            ("engine", t_eng, engine_size),
        ):
            rows.append(
                {
                    "n": n,
                    "p": p,
                    "outputs": o,
                    "method": method,
                    "seconds": seconds,
                    "system_size": size,
                    "engine_strategy": strategy,
                    "weights_difference": difference,
                }
            )
        if progress is not None:
            progress((i + 1) / len(ns), f"n = {n}: solved in both spaces")
    return pd.DataFrame(rows)


# ----------------------------------------------------- (e) finite-difference Fisher
def fd_fisher_error(
    model: nn.Module | Linearization,
    x: Tensor,
    eps_values: Sequence[float] | np.ndarray,
    *,
    kinks: Sequence[str] = KINKS,
    schemes: Sequence[str] = ("forward",),
    likelihood: str = "gaussian",
    num_vectors: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Relative error of the finite-difference Fisher-vector product (Eq. 5) against ε.

    ``ntkcore.fisher_vp(method="fd", eps=ε)`` approximates F v by the gradient of a KL
    divergence at θ + εv, in the network's own dtype. Its error against the exact product
    (``method="exact"`` on a float64 copy of the network) is a U in ε: rounding (∝ 1/ε)
    on the left, truncation on the right — O(ε) for forward, O(ε²) for central differences
    of a smooth function. A ReLU network is not smooth: units whose pre-activation crosses
    zero between θ and θ + εv add an error that shrinks only like ε^{1/2}, unless the
    perturbed pass replays the activation pattern recorded at θ (``kinks="frozen"``, the
    engine's default; ``"live"`` re-decides every ReLU, as the paper's code did). For smooth
    (tanh) networks the two coincide.

    Parameters
    ----------
    model : nn.Module or Linearization
        The network (float32 for the usual picture) or a Linearization of it.
    x : Tensor
        Inputs the Fisher averages over, shape (n, \\*input_shape).
    eps_values : sequence of float
        Steps ε (positive) for unit-norm directions.
    kinks : sequence of {"frozen", "live"}
    schemes : sequence of {"forward", "central"}
        Eq. 5's forward difference and/or the compensated central difference.
    likelihood : {"gaussian", "categorical", "heteroscedastic"}
        The likelihood whose Fisher is taken (``ntkcore.fisher``).
    num_vectors : int
        Random Gaussian directions v (seeded); the summary is over them.
    seed : int
        Seed of the directions.

    Returns
    -------
    DataFrame
        One row per kinks × scheme × step: ``kinks``, ``scheme``, ``eps``, ``step``
        ("grid" for ``eps_values``, "automatic" for the engine's default step
        :func:`ntkcore.fisher.default_eps`), ``relative_error`` (median over the vectors of
        ‖F v_fd − F v‖ / ‖F v‖), ``relative_error_min``, ``relative_error_max``,
        ``num_vectors``.
    """
    steps = _floats("eps_values", eps_values, positive=True)
    kinds = _choices("kinks", kinks, KINKS)
    scheme_names = _choices("schemes", schemes, SCHEMES)
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}, got {likelihood!r}")
    (k,) = _positive_ints("num_vectors", [num_vectors])
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    lin = _lin(model)
    lin64 = _float64(lin)
    x_model = lin.prepare_inputs(x)
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(k, lin.num_params, generator=generator, dtype=_F64)  # shape: (k, p)
    exact = fisher_vp(lin64, lin64.prepare_inputs(x), v, likelihood=likelihood,
                      method="exact")
    exact_norm = exact.norm(dim=1)
    if not bool((exact_norm > 0).all()):
        raise ValueError("F v is zero for a direction: the Fisher is degenerate at these inputs")
    theta_norm = float(lin.parameter_vector().norm())
    v_model = v.to(lin.dtype)
    rows = []
    for kind in kinds:
        for scheme in scheme_names:
            central = scheme == "central"
            automatic = default_eps(theta_norm, lin.dtype, central=central, kinks=kind)
            for step, eps in [*(("grid", float(e)) for e in steps), ("automatic", automatic)]:
                approx = fisher_vp(lin, x_model, v_model, likelihood=likelihood, method="fd",
                                   eps=eps, central=central, kinks=kind).to(_F64)
                errors = ((approx - exact).norm(dim=1) / exact_norm).numpy()
                rows.append(
                    {
                        "kinks": kind,
                        "scheme": scheme,
                        "eps": eps,
                        "step": step,
                        "relative_error": float(np.median(errors)),
                        "relative_error_min": float(errors.min()),
                        "relative_error_max": float(errors.max()),
                        "num_vectors": k,
                    }
                )
    return pd.DataFrame(rows)
