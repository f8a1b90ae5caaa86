"""Fisher-vector products of a trained network (Section 3.2, Eq. 5 of Maddox et al., 2021).

For data ``x_1..x_n`` and a likelihood ``p(y | f)`` on the network outputs, the Fisher
information of the parameters is the generalized Gauss–Newton matrix

    F(θ) = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ ,     Jᵢ = ∂f(xᵢ; θ)/∂θ  (o × p),

with Λᵢ the Fisher of the likelihood in output space at f(xᵢ; θ). :func:`fisher_vp` returns
F v without forming F or J, by one of three methods:

``"fd"``
    The paper's finite-difference KL gradient (Eq. 5). Because
    KL(p(y|θ) ‖ p(y|θ')) = ½ (θ'−θ)ᵀ F (θ'−θ) + O(‖θ'−θ‖³), its gradient in θ' at
    θ' = θ + εv, J(θ')ᵀ g with g = ∇_{f'} D(f(θ) ‖ f')|_{f'=f(θ+εv)}, is ε F v + O(ε²).
    We evaluate the same output-space KL gradient g (one extra forward pass per vector,
    accumulated in float64) and pull it back through J(θ)ᵀ rather than J(θ')ᵀ. The two
    differ by O(ε²), the order of Eq. 5's own error; the pullback at θ is one reverse pass
    shared by all vectors and batched over them with ``vmap`` (one backward per vector).
    Measured against the pullback at θ': the same or smaller error, 1.35x less time per
    vector (PreResNet-20, CPU). Because J(θ)ᵀ is linear, central differences combine the
    two passes in output space and still need one backward per vector.
``"exact"``
    Jᵀ Λ (J v): a forward-mode Jacobian-vector product, the output-space Fisher, and a
    reverse-mode vector-Jacobian product, all batched over vectors.
``"autograd"``
    The Hessian-vector product of the detached KL, ∇_θ[(∇_θ KL(p(y|θ̄) ‖ p(y|θ)))·v] with
    θ̄ = stop_gradient(θ), by double backward. This is what the 2021 reference code did; at
    θ' = θ the gradient of the KL vanishes, so its Hessian is exactly F. It is kept as the
    baseline of the timing benchmark (``benchmarks/fisher.py``).

Output-space Fishers Λ(f) and KL divergences D(f ‖ f') of the supported likelihoods
(``"gaussian"``, ``"categorical"``, ``"heteroscedastic"``) are one class each in
:mod:`ntkcore.likelihoods`, shared with the Fisher operator and the classifier; ``likelihood``
takes a name or a :class:`~ntkcore.likelihoods.Likelihood`.

Step size and error of ``"fd"``
-------------------------------
Each vector is normalized to unit norm before the perturbation (the result is scaled back),
so one step serves all vectors. Three errors compete in float32 (measured term by term,
``benchmarks/RESULTS.md``, "Fisher-vector products"):

* Rounding of the perturbation: θ + εv is stored in float32, which moves coordinate i by
  up to u|θᵢ| (u the unit roundoff, 2⁻²⁴), a direction error ≈ u‖θ‖/ε. The offset actually
  applied, δ = fl(θ + εv) − θ, is known exactly (computed in float64). Central differences
  use it: the second point is fl(θ − tδ − t(t+1)ε r) with r = v − δ/ε and t = 2, weighted
  α = t/((1+t)ε) and β = −α/t², so that αδ₁ + βδ₂ = v up to the second point's own
  rounding divided by t(t+1) = 6, and the quadratic terms αδ₁δ₁ᵀ + βδ₂δ₂ᵀ still cancel.
  Same cost as symmetric central differences; forward differences keep this error.
* Rounding of the forward passes, ≈ u‖f‖/(ε‖Jv‖) in the difference.
* Truncation: O(ε) for forward and O(ε²) for central differences on smooth functions. A
  ReLU network is not smooth: a unit whose pre-activation lies within ε|∂z| of zero
  contributes a secant instead of a tangent, a fraction ∝ ε of the units do, and their
  errors add like a random walk — ≈ O(ε^{1/2}) whatever the scheme. Against rounding ∝ 1/ε
  that left 1.6–2.8e-3 on CIFAR CNNs at n = 32 (``kinks="live"``, the 2021 reference's
  behaviour).

``kinks="frozen"`` (default) removes the crossings: the pass at θ records its activation
pattern — ReLU signs, max-pooling argmaxes (:mod:`ntkcore.kinks`) — and the perturbed passes
replay it, so they evaluate a smooth (piecewise-polynomial, locally polynomial) function
with the same value and Jacobian at θ. Truncation is then O(ε) / O(ε²), which allows
10–100x longer steps and so 10–100x less rounding. Steps (:func:`default_eps`): with frozen
kinks ε = min(1.5 u^{1/2} max(1, ‖θ‖), 6 (u(1 + ‖θ‖))^{1/2}) forward (each weight moves by
~1e-4 of its size, less on large deep networks) and 0.5 u^{1/3} max(1, ‖θ‖) central (~2e-3);
with live kinks 1.5 (u(1 + ‖θ‖))^{1/2} and 0.15 (u(1 + ‖θ‖))^{1/3}. ``eps="auto"``
(:func:`calibrate_eps`) measures 8 candidate steps on a few points instead. Measured in
float32 against float32 ``exact`` (CIFAR-sized inputs, categorical; a 1M-parameter tanh MLP,
AlexNet, PreResNet-20/56/110, WRN-16-4; ``benchmarks/RESULTS.md``): frozen forward
differences 3.5e-4–9.3e-4 at n = 32 on the CPU (PreResNet-110: 1.2e-3) and 3.8e-4–7.0e-4
at n = 256 on an H200 (the MLP: 1.1e-3); frozen central differences 2.2e-5–1.7e-4 everywhere; live
kinks 1.0e-3–4.4e-2. On PreResNet-56/110 float32 ``exact`` is itself 0.6–4.6e-3 from
float64. Replaying needs static control flow (the same kinked operations in the same
order); a network that branches on its parameters raises ``ValueError`` and should use
``kinks="live"``. On CUDA the finite-difference passes run with TF32 off (restored after).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from ntkcore.distributed.reduction import DataReduction
from ntkcore.distributed.shards import prepare_shard
from ntkcore.jacobian_at import JacobianAt
from ntkcore.kinks import ActivationPattern
from ntkcore.likelihoods import LIKELIHOODS, Likelihood
from ntkcore.likelihoods import likelihood as make_likelihood
from ntkcore.linearization import Linearization, as_linearization, as_real_tensor, chunk_slices

__all__ = [
    "KINKS",
    "LIKELIHOODS",
    "METHODS",
    "StepCalibration",
    "calibrate_eps",
    "default_eps",
    "fisher_sum_vp",
    "fisher_vp",
    "output_fisher",
    "output_kl",
]

# Constants of the automatic step (module docstring), (kinks, central) -> C; set from
# measurements (benchmarks/RESULTS.md, "Frozen activation patterns"). Frozen kinks (and
# smooth networks): ε = min(C u^{1/2} max(1, ‖θ‖), 4 × the live forward rule) forward and
# C u^{1/3} max(1, ‖θ‖) central — the best forward steps of eight networks (‖θ‖ = 7..156)
# follow the first term up to ‖θ‖ ≈ 20 and the second beyond (PreResNet-56/110 want
# 0.3–0.4x the first), the central ones lie in a broad minimum around C = 0.5. Live
# kinks: ε = C (u (1 + ‖θ‖))^{1/2 or 1/3}.
_FROZEN_FORWARD_CAP = 4.0
_STEP_CONSTANTS = {
    ("frozen", False): 1.5,
    ("frozen", True): 0.5,
    ("live", False): 1.5,
    ("live", True): 0.15,
}
# Central differences evaluate θ + εv and θ − _CENTRAL_RATIO·εv (compensated; see _fd_points).
_CENTRAL_RATIO = 2.0
# Step calibration (eps="auto"): data points used, and the candidate steps as powers of two
# times the forward-difference rule.
_CALIBRATION_POINTS = 16
_CALIBRATION_POWERS = tuple(range(-2, 6))
_CALIBRATION_SLACK = 1.25

#: Methods accepted by :func:`fisher_vp`.
METHODS: tuple[str, ...] = ("fd", "exact", "autograd")
#: Treatments of ReLU / max-pooling kinks by ``method="fd"`` (:mod:`ntkcore.kinks`).
KINKS: tuple[str, ...] = ("frozen", "live")


# ---------------------------------------------------------------------------- output space
def output_kl(
    f: Tensor, f_prime: Tensor, likelihood: str | Likelihood = "gaussian", *,
    scale_floor: float = 0.0,
) -> Tensor:
    """Per-point KL divergence D(p(y | f) ‖ p(y | f')) between output-space likelihoods.

    Parameters
    ----------
    f, f_prime : Tensor
        Network outputs of shape ``(..., o)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        See :mod:`ntkcore.likelihoods` for the formulas.
    scale_floor : float
        σ₀ of the heteroscedastic likelihood, σ = softplus(s) + σ₀.

    Returns
    -------
    Tensor
        Shape ``(...)``: the divergence summed over the outputs of each point.
    """
    return make_likelihood(likelihood, scale_floor=scale_floor).kl(f, f_prime)


def output_fisher(
    f: Tensor, likelihood: str | Likelihood = "gaussian", *, scale_floor: float = 0.0
) -> Tensor:
    """The output-space Fisher Λ(f) of each point, explicit, shape ``(..., o, o)``.

    Parameters
    ----------
    f : Tensor
        Network outputs, shape ``(..., o)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        See :mod:`ntkcore.likelihoods`.
    scale_floor : float
        σ₀ of the heteroscedastic likelihood.
    """
    return make_likelihood(likelihood, scale_floor=scale_floor).fisher(f)


# ---------------------------------------------------------------------------- validation
def _check_v(lin: Linearization, v: object) -> Tensor:
    v = as_real_tensor(v, "v")
    p = lin.num_params
    if v.dim() not in (1, 2) or v.shape[-1] != p:
        raise ValueError(f"v must have shape ({p},) or (k, {p}), got {tuple(v.shape)}")
    if v.shape[0] == 0:
        raise ValueError(f"v must hold at least one vector, got shape {tuple(v.shape)}")
    if v.is_complex():
        raise ValueError(f"v must be real, got dtype {v.dtype}")
    v = v.to(device=lin.device, dtype=lin.dtype)
    if not torch.isfinite(v).all():
        raise ValueError("v contains non-finite values (nan or inf)")
    return v


def _check_eps(eps: object) -> float | str | None:
    if eps is None or eps == "auto":
        return eps  # type: ignore[return-value]
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        raise ValueError(f"eps must be a positive float, 'auto' or None, got {eps!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive float, 'auto' or None, got {eps!r}")
    return float(eps)


@contextlib.contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """Turn TF32 off for CUDA matmuls and convolutions for the duration (restored after).

    A TF32 product keeps 10 mantissa bits (unit roundoff 2⁻¹¹): the difference of two
    TF32 forward passes a relative step ε ≈ 1e-3 apart would be mostly rounding noise.
    """
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def _check_kinks(kinks: object) -> str:
    if not isinstance(kinks, str) or kinks not in KINKS:
        raise ValueError(f"kinks must be one of {list(KINKS)}, got {kinks!r}")
    return kinks


def default_eps(
    theta_norm: float, dtype: torch.dtype, central: bool = False, kinks: str = "frozen"
) -> float:
    """The automatic finite-difference step of ``method="fd"`` for unit-norm directions.

    Parameters
    ----------
    theta_norm : float
        ‖θ‖, the Euclidean norm of the linearized parameters.
    dtype : torch.dtype
        The parameters' floating-point type (sets the unit roundoff u).
    central : bool
        Step for central instead of forward differences.
    kinks : {"frozen", "live"}
        Whether the perturbed passes replay the activation pattern at θ (longer steps) or
        re-decide every ReLU (short steps; see the module docstring).

    Returns
    -------
    float
        ε; see the module docstring for the rule and its justification.
    """
    kinks = _check_kinks(kinks)
    u = torch.finfo(dtype).eps / 2
    power = 1.0 / 3.0 if central else 0.5
    constant = _STEP_CONSTANTS[(kinks, bool(central))]
    live = constant * (u * (1.0 + float(theta_norm))) ** power
    if kinks == "live":
        return live
    # frozen: each parameter moves by ~C u^power of itself (scale-invariant) ...
    step = constant * u**power * max(1.0, float(theta_norm))
    if not central:
        # ... but no further than 4x the live forward rule: large, deep networks want
        # relatively shorter forward steps (their truncation grows with depth; the two
        # rules cross at ‖θ‖ ≈ 18)
        step = min(step, _FROZEN_FORWARD_CAP * live)
    return step


def _recording(pattern: ActivationPattern | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if pattern is None else pattern.recording()


def _replaying(pattern: ActivationPattern | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if pattern is None else pattern.replaying()


# ---------------------------------------------------------------------------- methods
def _fvp_chunk_exact(fwd, theta, xc, tangents, lik: Likelihood, weights):
    """Σ_{i in chunk} Jᵢᵀ Λᵢ Jᵢ V scaled by ``weights`` (one per vector), shape (k, p)."""
    f, pullback = vjp(lambda th: fwd(th, xc), theta)

    def one(t: Mapping[str, Tensor]) -> Tensor:
        return jvp(lambda th: fwd(th, xc), (theta,), (t,))[1]

    jv = vmap(one)(tangents)  # (k, c, o)
    u = lik.fisher_product(f.detach().double(), jv.double())
    u = u * weights[:, None, None]
    (g,) = vmap(pullback)(u.to(f.dtype))
    return g


def _fd_points(
    theta_flat: Tensor, theta_wide: Tensor, u: Tensor, eps: float, central: bool
) -> tuple[list[Tensor], tuple[float, ...]]:
    """Perturbed parameter vectors of one unit direction ``u`` and the weights of their passes.

    Forward differences: θ₁ = fl(θ + εu), weight 1/ε. Central differences (compensated,
    module docstring): θ₁ as above with its exact offset δ₁ = θ₁ − θ and rounding residual
    r₁ = u − δ₁/ε (both in float64), and θ₂ = fl(θ − tδ₁ − t(t+1)ε r₁) with t = 2;
    weights α = t / ((1 + t)ε) and β = −α/t², so that αδ₁ + βδ₂ = u up to the rounding of
    θ₂ divided by t(1 + t), and αδ₁δ₁ᵀ + βδ₂δ₂ᵀ = O(ε² ‖r₁‖) (second order).
    """
    p1 = theta_flat.add(u, alpha=eps)
    if not central:
        return [p1], (1.0 / eps,)
    t = _CENTRAL_RATIO
    # θ − tδ₁ − t(t+1)ε r₁ = (1 − t²)θ + t²θ₁ − t(t+1)ε u, in float64 (exact up to the last
    # term's rounding, far below float32's)
    p2 = p1.to(theta_wide.dtype, copy=True).mul_(t * t).add_(theta_wide, alpha=1.0 - t * t)
    p2 = p2.add_(u.to(theta_wide.dtype), alpha=-t * (t + 1) * eps).to(theta_flat.dtype)
    alpha = t / ((1.0 + t) * eps)
    return [p1, p2], (alpha, -alpha / t**2)


@dataclass(frozen=True)
class _FdScheme:
    """One ``fd`` product's settings: the step, the difference scheme and the likelihood."""

    lin: Linearization
    theta_flat: Tensor  # shape: (p,), the parameters' dtype
    theta_wide: Tensor  # shape: (p,), float64
    eps: float | str | None  # the step; None / "auto" until _fd_setup resolves it
    central: bool
    likelihood: Likelihood

    @classmethod
    def at(cls, lin, eps, central, likelihood: Likelihood) -> _FdScheme:
        theta_flat = lin.parameter_vector()
        wide = theta_flat.to(torch.float64)
        return cls(lin, theta_flat, wide, eps, central, likelihood)

    @property
    def theta_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.theta_wide))

    def output_grad(self, f0: Tensor, xc: Tensor, u: Tensor, pattern) -> Tensor:
        """Σ_passes weight · ∇_{f'} KL(f(θ) ‖ f(θ_pass)) ≈ Λ J u for one unit direction,
        float64, shape (c, o). With a recorded ``pattern`` (frozen kinks) the perturbed
        passes replay it."""
        lin = self.lin
        points, weights = _fd_points(self.theta_flat, self.theta_wide, u, self.eps, self.central)
        g = None
        for point, w in zip(points, weights, strict=True):
            with _replaying(pattern):
                f_point = lin.functional_forward(lin.unflatten(point), xc)
            gs = self.likelihood.kl_grad(f0, f_point.double()) * w
            g = gs if g is None else g + gs
        return g


def _fvp_chunk_fd(scheme: _FdScheme, theta, xc, unit, weights, kinks):
    """Finite-difference KL gradient of one chunk, pulled back through J(θ)ᵀ (see fd)."""
    fwd = scheme.lin.functional_forward
    pattern = ActivationPattern() if kinks == "frozen" else None
    with _recording(pattern):  # the pass at θ records the activation pattern
        f, pullback = vjp(lambda th: fwd(th, xc), theta)
    f0 = f.detach().double()
    with torch.no_grad():
        # One plain forward pass per perturbed θ. (A vmap over perturbed weights batches
        # inputs *and* weights of every convolution, which runs as a grouped convolution:
        # 2.2x slower per vector than this loop for PreResNet-20 on a CPU.)
        g = torch.stack([scheme.output_grad(f0, xc, u, pattern) for u in unit])
        cot = (g * weights[:, None, None]).to(f.dtype)
    (out,) = vmap(pullback)(cot)
    return out


def _fvp_chunk_autograd(fwd, lin, xc, v, lik: Likelihood, scale):
    """Double backward of the detached KL (the 2021 reference), one vector at a time."""
    start = lin.unflatten(lin.parameter_vector())
    theta = {k: t.detach().requires_grad_(True) for k, t in start.items()}
    params = list(theta.values())
    with torch.enable_grad():
        f = fwd(theta, xc)
        kl = lik.kl(f.detach().double(), f.double())
        grads = torch.autograd.grad(kl.sum() * scale, params, create_graph=True)
        g_flat = torch.cat([t.reshape(-1) for t in grads])
        rows = []
        for vi in v:
            hv = torch.autograd.grad(g_flat @ vi, params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in hv]))
    return torch.stack(rows)


def _fd_setup(lin, v, eps, central, lik: Likelihood, kinks, scale: float):
    """The scheme, unit directions and per-vector weights of ``fd`` for a batch ``v``
    (``eps`` a float or None: ``"auto"`` is resolved by :func:`_calibrated` first)."""
    norms = torch.linalg.vector_norm(v, dim=-1, dtype=torch.float64)
    inverse = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    unit = v * inverse.to(v.dtype)[:, None]
    scheme = _FdScheme.at(lin, eps, central, lik)
    if eps is None:
        scheme = replace(scheme, eps=default_eps(scheme.theta_norm, lin.dtype, central, kinks))
    # the pass weights hold 1/ε; scale back the unit directions (and by 1/n for a mean)
    return scheme, unit, norms * scale


def _fisher_vp_at(at_x, v, lik: Likelihood, method, eps, central, kinks, scale: float):
    """``scale`` Σᵢ Jᵢᵀ Λᵢ Jᵢ v for a batch ``v`` (k, p) through the cached forward pass
    and pullback of a :class:`~ntkcore.jacobian_at.JacobianAt`: the pass at θ that every
    ``fd`` or ``exact`` product starts with is not repeated, nor (frozen kinks) its
    activation pattern, recorded once per ``JacobianAt`` (validated inputs; no points:
    zeros)."""
    lin, x, n = at_x.linearization, at_x.x, at_x.n
    f0 = at_x.output.double()  # shape: (n, o)
    if method == "exact":
        jv = at_x.jvp(v).double()  # shape: (k, n, o)
        cot = lik.fisher_product(f0, jv) * scale
    else:
        scheme, unit, weights = _fd_setup(lin, v, eps, central, lik, kinks, scale)
        if kinks == "frozen":
            chunks = at_x.activation_patterns()
        else:
            chunks = [(s, None) for s in chunk_slices(n, lin.chunk_size)]

        def passes() -> Tensor:
            with torch.no_grad():
                parts = [
                    torch.stack([scheme.output_grad(f0[s], x[s], u, pattern) for u in unit])
                    for s, pattern in chunks
                ]  # each of shape (k, c, o)
            if not parts:  # no points on this rank
                return f0.new_zeros(len(unit), 0, f0.shape[-1])
            return torch.cat(parts, dim=1)

        cot = lin.evaluate(passes, x) * weights[:, None, None]
    return at_x.vjp(cot.to(lin.dtype))


def _fisher_vp(lin, x, v, lik: Likelihood, method, eps, central, chunk, kinks, scale: float):
    """``scale`` Σᵢ Jᵢᵀ Λᵢ Jᵢ v for a batch ``v`` of shape (k, p); validated inputs (no
    points: zeros)."""
    fwd = lin.functional_forward
    n = x.shape[0]
    theta = lin.unflatten(lin.parameter_vector())
    if method == "exact":
        tangents = lin.unflatten(v)
        weights = torch.full((v.shape[0],), scale, dtype=torch.float64, device=v.device)
    elif method == "fd":
        scheme, unit, weights = _fd_setup(lin, v, eps, central, lik, kinks, scale)
    parts = []
    for s in chunk_slices(n, chunk):
        xc = x[s]
        if method == "exact":
            fn = lambda xc=xc: lin.flatten(  # noqa: E731
                _fvp_chunk_exact(fwd, theta, xc, tangents, lik, weights)
            )
        elif method == "fd":
            fn = lambda xc=xc: lin.flatten(  # noqa: E731
                _fvp_chunk_fd(scheme, theta, xc, unit, weights, kinks)
            )
        else:
            fn = lambda xc=xc: _fvp_chunk_autograd(  # noqa: E731
                fwd, lin, xc, v, lik, scale
            )
        parts.append(lin.evaluate(fn, xc).detach())
    if len(parts) == 1:
        return parts[0].to(v.dtype)
    total = torch.zeros(v.shape, dtype=torch.float64, device=v.device)
    for part in parts:  # chunk sums accumulated in float64
        total += part
    return total.to(v.dtype)


# ---------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class StepCalibration:
    """Result of :func:`calibrate_eps`.

    Attributes
    ----------
    eps : float
        The chosen step (the candidate with the smallest measured error).
    central : bool
        Whether the steps are for (compensated) central differences.
    candidates : tuple of float
        The steps tried: :func:`default_eps` (forward rule) times 2^-2 .. 2^5.
    errors : tuple of float
        ‖Jᵀ(ĝ(ε) − Λ J v̂)‖ / ‖Jᵀ Λ J v̂‖ on the calibration points for each candidate,
        where ĝ(ε) is the finite-difference KL gradient in output space and J v̂ the
        forward-mode product (exact to float rounding).
    points : int
        Data points used.
    kinks : {"frozen", "live"}
        Whether the steps are for passes that replay the activation pattern at θ.
    """

    eps: float
    central: bool
    candidates: tuple[float, ...]
    errors: tuple[float, ...]
    points: int
    kinks: str = "frozen"


def _calibrate(
    scheme: _FdScheme, x: Tensor, probe: Tensor, points: int, kinks: str
) -> StepCalibration:
    """Pick ε from a grid by the output-space error on ``points`` points (validated inputs;
    ``scheme`` gives everything but the step)."""
    lin, central, lik = scheme.lin, scheme.central, scheme.likelihood
    fwd = lin.functional_forward
    xm = x[:points]
    theta_norm = scheme.theta_norm
    theta = lin.unflatten(scheme.theta_flat)
    norm = torch.linalg.vector_norm(probe, dtype=torch.float64)
    if not norm > 0:  # no direction to calibrate on: the rule
        gen = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.randn(probe.shape, generator=gen, dtype=torch.float64)
        norm = torch.linalg.vector_norm(probe)
    unit = (probe.to(torch.float64) / norm).to(device=lin.device, dtype=lin.dtype)
    base = default_eps(theta_norm, lin.dtype, False, kinks)
    candidates = tuple(base * 2.0**j for j in _CALIBRATION_POWERS)
    pattern = ActivationPattern() if kinks == "frozen" else None

    def run() -> Tensor:
        with _recording(pattern):
            f, pullback = vjp(lambda th: fwd(th, xm), theta)
        with torch.no_grad():
            jv = jvp(lambda th: fwd(th, xm), (theta,), (lin.unflatten(unit),))[1]
            f0 = f.detach().double()
            cots = [lik.fisher_product(f0, jv.double())]
            for eps in candidates:
                cots.append(replace(scheme, eps=eps).output_grad(f0, xm, unit, pattern))
        # compare in parameter space, Jᵀ(ĝ − Λ J v̂): the error the products will have
        # (the output-space error weights the components differently and picks steps up
        # to 4x too short on AlexNet and PreResNet-20)
        (pulled,) = vmap(pullback)(torch.stack(cots).to(f.dtype))
        pulled = lin.flatten(pulled).detach().double()
        ref = pulled[0]
        return torch.linalg.vector_norm(pulled[1:] - ref, dim=-1) / torch.linalg.vector_norm(ref)

    with _full_float32(lin.device):
        errors = lin.evaluate(run, xm).cpu()
    found = tuple(errors.tolist())
    if not torch.isfinite(errors).all():
        # Λ J v̂ = 0 on these points (or a non-finite pass): no information, keep the rule.
        rule = default_eps(theta_norm, lin.dtype, central, kinks)
        return StepCalibration(rule, central, candidates, found, xm.shape[0], kinks)
    # The largest step within _CALIBRATION_SLACK of the smallest error: the estimate from one
    # direction on a few points is noisy, and below the optimum the rounding error grows
    # like 1/ε, above it the truncation only like ε^{1/2}..ε^2.
    best = max(i for i, e in enumerate(found) if e <= _CALIBRATION_SLACK * errors.min())
    return StepCalibration(candidates[best], central, candidates, found, xm.shape[0], kinks)


def _calibrated(
    scheme: _FdScheme, x: Tensor, probe: Tensor, points: int, kinks: str,
    reduction: DataReduction,
) -> StepCalibration:
    """:func:`_calibrate` on the first ``points`` points of the data in global order.

    Under a process group (collective) those points may lie on several ranks (or none on
    the lowest ones, which may be empty): every rank contributes its first ``points`` rows
    to one all-gather (at most ``points`` rows per rank; simpler than finding which ranks
    hold them, and as cheap: an all-gather of variable-size rows pads to the largest
    anyway), the concatenation in rank order is cut to ``points`` — the rows one process
    would use on the concatenated data. Rank 0 alone calibrates on them with its
    ``probe`` and broadcasts the step and the measured errors, so every rank uses the
    same ε, bit for bit, even where ``probe`` or the float arithmetic of the ranks'
    devices differ; one process on the concatenated data chooses the same ε (same rows,
    same probe, same arithmetic).
    """
    if not reduction.distributed:
        return _calibrate(scheme, x, probe, points, kinks)
    first = reduction.gather_rows(x[:points].contiguous(), "calibration points")[:points]
    found: StepCalibration | None = None
    error: Exception | None = None
    if reduction.rank == 0:
        try:
            found = _calibrate(scheme, first, probe, points, kinks)
        except Exception as err:  # every rank must learn of it
            error = err
    reduction.check(error, "eps='auto' calibration on rank 0")
    k = len(_CALIBRATION_POWERS)
    # shape: (1 + k,): the step, then the error of each candidate
    values = torch.zeros(1 + k, dtype=torch.float64, device=first.device)
    if found is not None:
        values.copy_(torch.tensor([found.eps, *found.errors], dtype=torch.float64))
    values = reduction.broadcast_(values, 0, "calibrated eps").cpu()
    base = default_eps(scheme.theta_norm, scheme.lin.dtype, False, kinks)
    return StepCalibration(
        float(values[0]), scheme.central, tuple(base * 2.0**j for j in _CALIBRATION_POWERS),
        tuple(values[1:].tolist()), int(first.shape[0]), kinks,
    )


def calibrate_eps(
    model_or_lin: nn.Module | Linearization,
    x: Tensor,
    *,
    likelihood: str | Likelihood = "gaussian",
    central: bool = False,
    kinks: str = "frozen",
    probe: Tensor | None = None,
    points: int = _CALIBRATION_POINTS,
    scale_floor: float = 0.0,
    process_group: object = None,
) -> StepCalibration:
    """Choose the step of ``fisher_vp(method="fd")`` for a network and data by measurement.

    The error of the finite-difference product in float32 is rounding ∝ 1/ε plus
    truncation, whose order depends on the network: O(ε) (forward) or O(ε²) (central) on
    smooth networks and with frozen kinks, but ≈ O(ε^{1/2}) where ReLU or max-pool kinks
    are crossed (``kinks="live"``; the crossings add up like a random walk). No single rule
    fits every network (module docstring); this function measures instead. On the first
    ``points`` data points and one unit direction v̂ it compares the output-space KL
    gradient ĝ(ε) of every candidate step — the forward-difference rule
    :func:`default_eps` times 2^-2, 2^-1, …, 2^5 — with Λ J v̂ from a forward-mode
    Jacobian-vector product by their relative error in parameter space,
    ‖Jᵀ(ĝ(ε) − Λ J v̂)‖ / ‖Jᵀ Λ J v̂‖ (the products' own error on those points), and
    returns the largest step whose error is within 1.25x of the smallest (the estimate is
    noisy, and below the optimum the error grows fastest). Cost on ``points`` points: one
    ``jvp``, 9 (central: 17) forward passes and one reverse pass batched over 9 cotangents.

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
        The network or its linearization.
    x : Tensor
        Inputs ``(n, *input_shape)``; the first ``points`` are used.
    likelihood : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        The likelihood of the products the step is for (:func:`ntkcore.likelihoods.likelihood`).
    central : bool
        Calibrate for central differences.
    kinks : {"frozen", "live"}
        Calibrate for passes that replay the activation pattern at θ (the default of
        :func:`fisher_vp`) or re-decide it.
    probe : Tensor, optional
        Direction ``(p,)`` (normalized here); default a seeded standard normal vector.
    points : int
        Data points used (at most n).
    scale_floor : float
        σ₀ of the heteroscedastic likelihood.
    process_group : torch.distributed.ProcessGroup, optional
        ``x`` is this rank's shard of data split across the group (collective; a shard may
        be empty): the first ``points`` points of the concatenated shards are gathered and
        rank 0 calibrates on them with its ``probe``; every rank returns the same step,
        the one a single process chooses on the concatenated data — what
        ``fisher_vp(..., eps="auto", process_group=...)`` uses.

    Returns
    -------
    StepCalibration
        The chosen ``eps`` with the candidates and their measured errors.
    """
    lik = make_likelihood(likelihood, scale_floor=scale_floor)
    if not isinstance(central, bool):
        raise ValueError(f"central must be a bool, got {central!r}")
    kinks = _check_kinks(kinks)
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be a positive int, got {points!r}")
    lin = as_linearization(model_or_lin)
    reduction = DataReduction(process_group)
    x = prepare_shard(lin, x, reduction, "calibrate_eps' input validation")
    error: Exception | None = None
    try:
        lik.check_outputs(lin.output_dim(x))
        if probe is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            probe = torch.randn(lin.num_params, generator=gen, dtype=torch.float64)
        probe = _check_v(lin, probe)
        if probe.dim() != 1:
            raise ValueError(
                f"probe must have shape ({lin.num_params},), got {tuple(probe.shape)}"
            )
    except Exception as err:  # every rank must learn of it (no-op on one process)
        error = err
    reduction.check(error, "calibrate_eps' input validation")
    assert probe is not None
    scheme = _FdScheme.at(lin, None, central, lik)
    return _calibrated(scheme, x, probe, points, kinks, reduction)


# ---------------------------------------------------------------------------- public entry
def _local_fisher_vp(lin, x, at_x, v, lik: Likelihood, method, eps, central, chunk, kinks,
                     scale: float) -> Tensor:
    """``scale`` Σᵢ Jᵢᵀ Λᵢ Jᵢ v over this process's points for ``v`` of shape (k, p)
    (validated inputs, ``eps`` a float or None): through the cached passes of ``at_x``
    when it has them."""
    precision = _full_float32(lin.device) if method == "fd" else contextlib.nullcontext()
    with precision:
        if at_x is not None and at_x.cache != "none":
            return _fisher_vp_at(at_x, v, lik, method, eps, central, kinks, scale)
        return _fisher_vp(lin, x, v, lik, method, eps, central, chunk, kinks, scale)


def fisher_sum_vp(
    at_x: JacobianAt, v: Tensor, *, likelihood: str | Likelihood = "gaussian",
    method: str = "fd",
) -> Tensor:
    """Σᵢ Jᵢᵀ Λᵢ Jᵢ v over the points of ``at_x`` (n F v, not divided by n), shape of ``v``.

    One shard's term of a sum over data shards (the weight-space products JᵀJ v of
    :class:`ntkcore.strategies.products.TrainingProducts`): zeros when ``at_x`` holds no
    points, where a mean would divide by zero. ``method`` ``"fd"`` (default step) or
    ``"exact"``; local (no process group).
    """
    lik = make_likelihood(likelihood)
    if method not in ("fd", "exact"):
        raise ValueError(f"method must be 'fd' or 'exact', got {method!r}")
    lin = at_x.linearization
    v = _check_v(lin, v)
    vb = v if v.dim() == 2 else v.unsqueeze(0)
    out = _local_fisher_vp(lin, at_x.x, at_x, vb, lik, method, None, False, lin.chunk_size,
                           "frozen", 1.0)
    return out if v.dim() == 2 else out[0]


def fisher_vp(
    model_or_lin: nn.Module | Linearization | JacobianAt,
    x: Tensor | None,
    v: Tensor,
    *,
    likelihood: str | Likelihood = "gaussian",
    method: str = "fd",
    eps: float | str | None = None,
    central: bool = False,
    kinks: str = "frozen",
    chunk_size: int | None = None,
    scale_floor: float = 0.0,
    process_group: object = None,
) -> Tensor:
    """Fisher-vector products F v, F = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ (Eq. 5 of Maddox et al., 2021).

    Parameters
    ----------
    model_or_lin : nn.Module, Linearization or JacobianAt
        The trained network, or its :class:`~ntkcore.linearization.Linearization` (which
        selects the parameters θ; a module is wrapped with all its parameters). The network
        is evaluated in eval mode. A :class:`~ntkcore.jacobian_at.JacobianAt`
        (``lin.at(x)``, with ``x=None`` here) reuses its cached forward pass at θ and its
        pullback, so repeated products at the same inputs (CG in weight space) save the
        pass at θ that each call otherwise starts with (not for ``"autograd"``).
    x : Tensor or None
        Inputs, shape ``(n, *input_shape)``; ``None`` with a ``JacobianAt``.
    v : Tensor
        Parameter-space vectors, shape ``(p,)`` or ``(k, p)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        The likelihood whose output-space Fisher Λ defines F (:mod:`ntkcore.likelihoods`;
        a name is resolved by :func:`ntkcore.likelihoods.likelihood`).
    method : {"fd", "exact", "autograd"}
        Finite-difference KL gradient (Eq. 5), Jᵀ Λ J v by forward then reverse mode, or
        double backward of the detached KL (the 2021 reference baseline).
    eps : float or "auto", optional
        Step of ``"fd"`` for unit-norm directions; default :func:`default_eps`. ``"auto"``
        chooses it per call by :func:`calibrate_eps` on the first 16 points and the
        largest row of ``v`` (one ``jvp`` and 8, central 16, forward passes on those
        points); to reuse a calibration across calls, pass ``calibrate_eps(...).eps``.
    central : bool
        ``"fd"`` only: compensated central differences (two perturbed forward passes,
        still one backward pass per vector; error O(ε²) on smooth networks and with frozen
        kinks; module docstring).
    kinks : {"frozen", "live"}
        ``"fd"`` only. ``"frozen"`` (default): the perturbed passes replay the activation
        pattern (ReLU signs, max-pooling argmaxes) recorded in the pass at θ
        (:mod:`ntkcore.kinks`), so no unit crosses its kink and the difference has the
        truncation error of a smooth function; nothing changes for smooth networks.
        ``"live"``: every pass decides its own pattern, as the 2021 reference did.
    chunk_size : int, optional
        Data points per chunk (bounds memory); default the Linearization's ``chunk_size``.
    scale_floor : float
        σ₀ ≥ 0 of the heteroscedastic likelihood, σ = softplus(s) + σ₀.
    process_group : torch.distributed.ProcessGroup, optional
        ``x`` is this rank's shard of data split across the group (collective: every
        rank calls with the same ``v``): F is the mean over all ranks' points,
        (1/n) Σ_r Σ_{i in shard r} Jᵢᵀ Λᵢ Jᵢ v, one all-reduce of the (k, p) result in
        float64 (:mod:`ntkcore.distributed`). A shard may be empty (as long as some rank
        holds a point). ``eps="auto"`` calibrates on the first 16 points of the
        concatenated shards, on rank 0, and broadcasts the step (two more collectives;
        :func:`calibrate_eps`): the same ε as one process on the concatenated data.

    Returns
    -------
    Tensor
        F v with the shape of ``v``, in the parameters' dtype.

    Raises
    ------
    ValueError
        For an unknown likelihood or method, options that do not apply to the method,
        malformed ``x`` or ``v``, or outputs that do not fit the likelihood.
    """
    lik = make_likelihood(likelihood, scale_floor=scale_floor)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    eps = _check_eps(eps)
    if not isinstance(central, bool):
        raise ValueError(f"central must be a bool, got {central!r}")
    kinks = _check_kinks(kinks)
    if method != "fd" and (eps is not None or central):
        raise ValueError(f"eps and central apply to method='fd' only, got method={method!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    reduction = DataReduction(process_group)
    at_x = None
    if isinstance(model_or_lin, JacobianAt):
        at_x = model_or_lin
        if x is not None:
            raise ValueError("x must be None when the products are a JacobianAt (bound to x)")
        if method == "autograd":
            raise ValueError("method='autograd' needs a model or Linearization, not a JacobianAt")
        lin, x = at_x.linearization, at_x.x
    else:
        lin = as_linearization(model_or_lin)
        # a rank may hold no points: it learns o from the others (ntkcore.distributed.shards)
        x = prepare_shard(lin, x, reduction, "fisher_vp's input validation")
    error: Exception | None = None
    try:
        v = _check_v(lin, v)
        lik.check_outputs(lin.output_dim(x))
    except Exception as err:  # every rank must learn of it (no-op on one process)
        error = err
    reduction.check(error, "fisher_vp's input validation")
    chunk = chunk_size if chunk_size is not None else lin.chunk_size
    batched = v.dim() == 2
    vb = v if batched else v.unsqueeze(0)
    # F is the mean over all ranks' points: each rank sums its own, scaled by 1/n (global)
    n_total = reduction.sum_int(x.shape[0], "number of points")
    if n_total == 0:  # a JacobianAt of no points (x itself was checked above)
        raise ValueError("the Fisher is a mean over data points, and x holds none")
    if method == "fd" and eps == "auto":
        # the first points of the global order and the largest row of v (collective)
        probe = vb[int(torch.argmax(torch.linalg.vector_norm(vb, dim=-1, dtype=torch.float64)))]
        scheme = _FdScheme.at(lin, None, central, lik)
        eps = _calibrated(scheme, x, probe, _CALIBRATION_POINTS, kinks, reduction).eps
    out = _local_fisher_vp(lin, x, at_x, vb, lik, method, eps, central, chunk, kinks,
                           1.0 / n_total)
    if reduction.distributed:
        total = reduction.sum_(out.to(torch.float64).contiguous(), "Fisher-vector products")
        out = total.to(out.dtype)
    return out if batched else out[0]
