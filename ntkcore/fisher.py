"""Fisher-vector products of a trained network (Section 3.2, Eq. 5 of Maddox et al., 2021).

For data ``x_1..x_n`` and a likelihood ``p(y | f)`` on the network outputs, the Fisher
information of the parameters is the generalized Gauss–Newton matrix

    F(θ) = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ ,     Jᵢ = ∂f(xᵢ; θ)/∂θ  (o × p),

with Λᵢ the Fisher of the likelihood in output space at f(xᵢ; θ). :func:`fisher_vp` returns
F v without forming F or J, by one of three methods:

``"fd"``
    The paper's finite-difference KL gradient (Eq. 5). Because
    KL(p(y|θ) ‖ p(y|θ')) = ½ (θ'−θ)ᵀ F (θ'−θ) + O(‖θ'−θ‖³), its gradient in θ' at
    θ' = θ + εv is ε F v + O(ε²): one extra forward pass at θ + εv and one backward pass
    per vector. Vectors are batched with ``vmap``.
``"exact"``
    Jᵀ Λ (J v): a forward-mode Jacobian-vector product, the output-space Fisher, and a
    reverse-mode vector-Jacobian product, all batched over vectors.
``"autograd"``
    The Hessian-vector product of the detached KL, ∇_θ[(∇_θ KL(p(y|θ̄) ‖ p(y|θ)))·v] with
    θ̄ = stop_gradient(θ), by double backward. This is what the 2021 reference code did; at
    θ' = θ the gradient of the KL vanishes, so its Hessian is exactly F. It is kept as the
    baseline of the timing benchmark (``benchmarks/fisher.py``).

Output-space Fishers Λ(f) and KL divergences D(f ‖ f') of the supported likelihoods:

``"gaussian"`` — N(y; f, I), unit variance:
    D = ½‖f − f'‖²,  Λ = I.
``"categorical"`` — y ~ Categorical(π), π = softmax(f):
    D = Σ_c π_c (log π_c − log π'_c),  Λ = diag(π) − ππᵀ.
``"heteroscedastic"`` — o = 2m outputs: means μ = f[:m] and raw scales s = f[m:], with
    y_j ~ N(μ_j, σ_j²), σ_j = softplus(s_j) + σ₀ (σ₀ = ``scale_floor``, 0 by default):
    D = Σ_j log(σ'_j/σ_j) + (σ_j² + (μ_j − μ'_j)²) / (2σ'_j²) − ½.
    The Fisher of N(μ, σ²) in (μ, σ) is diag(1/σ², 2/σ²) [E(∂_μ log p)² = E(y−μ)²/σ⁴ =
    1/σ²; E(∂_σ log p)² = E(−1/σ + (y−μ)²/σ³)² = (1 − 2·1 + 3)/σ² = 2/σ²; the cross term
    E[(y−μ)/σ² · (−1/σ + (y−μ)²/σ³)] vanishes by symmetry]. With σ = softplus(s) + σ₀,
    dσ/ds = sigmoid(s) =: σ'(s), so in (μ, s)
    Λ = diag(1/σ², 2 σ'(s)²/σ²).

Step size of ``"fd"``
---------------------
Each vector is normalized to unit norm before the perturbation and the result is scaled
back, so one relative step serves all vectors. The default is

    ε = c · u^{1/2} · (1 + ‖θ‖)      (forward differences, c = 1),
    ε = c · u^{1/3} · (1 + ‖θ‖)      (central differences, c = 1),

with u the unit roundoff of the parameters' dtype. The perturbation θ + εv is stored in
the parameters' dtype, which moves each coordinate by up to u|θᵢ|: a relative error of about
u‖θ‖/ε in the direction; the float32 forward passes add noise of the same order. The
truncation error is O(ε) (forward) or O(ε²) (central) relative to the curvature scale of
the network, which for homogeneous layers scales like 1/‖θ‖. Balancing the two gives the
rules above; ``benchmarks/fisher.py`` and ``tests/test_fisher.py`` record the measured
errors. The KL and its output-space gradient are accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vjp, vmap

from ntkcore.linearization import Linearization

__all__ = ["LIKELIHOODS", "METHODS", "fisher_vp", "output_fisher", "output_kl"]

#: Likelihoods accepted by :func:`fisher_vp`.
LIKELIHOODS: tuple[str, ...] = ("gaussian", "categorical", "heteroscedastic")
#: Methods accepted by :func:`fisher_vp`.
METHODS: tuple[str, ...] = ("fd", "exact", "autograd")


# ---------------------------------------------------------------------------- output space
def _check_likelihood(likelihood: object) -> str:
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}, got {likelihood!r}")
    return likelihood


def _check_scale_floor(scale_floor: object) -> float:
    if isinstance(scale_floor, bool) or not isinstance(scale_floor, int | float):
        raise ValueError(f"scale_floor must be a non-negative float, got {scale_floor!r}")
    if not math.isfinite(scale_floor) or scale_floor < 0:
        raise ValueError(f"scale_floor must be a non-negative float, got {scale_floor!r}")
    return float(scale_floor)


def _check_output_dim(likelihood: str, o: int) -> None:
    if likelihood == "heteroscedastic" and o % 2:
        raise ValueError(
            "the heteroscedastic likelihood needs an even number of outputs (means, then raw "
            f"scales), got o={o}"
        )
    if likelihood == "categorical" and o < 2:
        raise ValueError(f"the categorical likelihood needs at least 2 outputs (logits), got {o}")


def _split_scale(f: Tensor, scale_floor: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, standard deviation and dσ/ds of heteroscedastic outputs ``(..., 2m)``."""
    m = f.shape[-1] // 2
    mu, s = f[..., :m], f[..., m:]
    return mu, F.softplus(s) + scale_floor, torch.sigmoid(s)


def output_kl(
    f: Tensor, f_prime: Tensor, likelihood: str = "gaussian", *, scale_floor: float = 0.0
) -> Tensor:
    """Per-point KL divergence D(p(y | f) ‖ p(y | f')) between output-space likelihoods.

    Parameters
    ----------
    f, f_prime : Tensor
        Network outputs of shape ``(..., o)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"}
        See the module docstring for the formulas.
    scale_floor : float
        σ₀ of the heteroscedastic likelihood, σ = softplus(s) + σ₀.

    Returns
    -------
    Tensor
        Shape ``(...)``: the divergence summed over the outputs of each point.
    """
    likelihood = _check_likelihood(likelihood)
    if likelihood == "gaussian":
        return 0.5 * (f_prime - f).square().sum(-1)
    if likelihood == "categorical":
        logp, logq = f.log_softmax(-1), f_prime.log_softmax(-1)
        return (logp.exp() * (logp - logq)).sum(-1)
    floor = _check_scale_floor(scale_floor)
    mu, sigma, _ = _split_scale(f, floor)
    mu2, sigma2, _ = _split_scale(f_prime, floor)
    kl = torch.log(sigma2 / sigma) + (sigma.square() + (mu - mu2).square()) / (
        2 * sigma2.square()
    ) - 0.5
    return kl.sum(-1)


def _kl_output_grad(f: Tensor, f_prime: Tensor, likelihood: str, scale_floor: float) -> Tensor:
    """∇_{f'} D(p(y|f) ‖ p(y|f')), closed form, shape of ``f_prime``."""
    if likelihood == "gaussian":
        return f_prime - f
    if likelihood == "categorical":
        return f_prime.softmax(-1) - f.softmax(-1)
    mu, sigma, _ = _split_scale(f, scale_floor)
    mu2, sigma2, dsigma2 = _split_scale(f_prime, scale_floor)
    g_mu = (mu2 - mu) / sigma2.square()
    g_sigma = 1.0 / sigma2 - (sigma.square() + (mu - mu2).square()) / sigma2.pow(3)
    return torch.cat([g_mu, g_sigma * dsigma2], dim=-1)


def _apply_output_fisher(f: Tensor, u: Tensor, likelihood: str, scale_floor: float) -> Tensor:
    """Λ(f) u for outputs ``f`` of shape ``(n, o)`` and ``u`` of shape ``(..., n, o)``."""
    if likelihood == "gaussian":
        return u
    if likelihood == "categorical":
        pi = f.softmax(-1)
        return pi * u - pi * (pi * u).sum(-1, keepdim=True)
    _, sigma, dsigma = _split_scale(f, scale_floor)
    inv_var = sigma.square().reciprocal()
    return u * torch.cat([inv_var, 2 * dsigma.square() * inv_var], dim=-1)


def output_fisher(f: Tensor, likelihood: str = "gaussian", *, scale_floor: float = 0.0) -> Tensor:
    """The output-space Fisher Λ(f) of each point, explicit, shape ``(..., o, o)``.

    Parameters
    ----------
    f : Tensor
        Network outputs, shape ``(..., o)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"}
        See the module docstring.
    scale_floor : float
        σ₀ of the heteroscedastic likelihood.
    """
    likelihood = _check_likelihood(likelihood)
    floor = _check_scale_floor(scale_floor)
    _check_output_dim(likelihood, f.shape[-1])
    eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
    eye = eye.expand(*f.shape, f.shape[-1])
    # Λ is symmetric: applying it to the unit vectors gives its rows.
    return _apply_output_fisher(f.unsqueeze(-2), eye, likelihood, floor)


# ---------------------------------------------------------------------------- validation
def _as_linearization(model_or_lin: object) -> Linearization:
    if isinstance(model_or_lin, Linearization):
        return model_or_lin
    if isinstance(model_or_lin, nn.Module):
        return Linearization(model_or_lin)
    raise ValueError(
        "model_or_lin must be a torch.nn.Module or an ntkcore Linearization, got "
        f"{type(model_or_lin).__name__}"
    )


def _check_x(lin: Linearization, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"x must have a leading batch dimension with at least one point, got shape "
            f"{tuple(x.shape)}"
        )
    if x.is_floating_point() or x.is_complex():
        x = x.to(device=lin.device, dtype=lin.dtype)
        if not torch.isfinite(x).all():
            raise ValueError("x contains non-finite values (nan or inf)")
    else:
        x = x.to(device=lin.device)
    return x


def _check_v(lin: Linearization, v: object) -> Tensor:
    if not isinstance(v, Tensor):
        v = torch.as_tensor(v)
    p = lin.num_params
    if v.dim() not in (1, 2) or v.shape[-1] != p:
        raise ValueError(f"v must have shape ({p},) or (k, {p}), got {tuple(v.shape)}")
    if v.shape[0] == 0:
        raise ValueError(f"v must hold at least one vector, got shape {tuple(v.shape)}")
    if not (v.is_floating_point() or v.dtype == torch.bool or not v.is_complex()):
        raise ValueError(f"v must be real, got dtype {v.dtype}")
    v = v.to(device=lin.device, dtype=lin.dtype)
    if not torch.isfinite(v).all():
        raise ValueError("v contains non-finite values (nan or inf)")
    return v


def _check_eps(eps: object) -> float | None:
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, int | float):
        raise ValueError(f"eps must be a positive float or None, got {eps!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive float or None, got {eps!r}")
    return float(eps)


def _chunks(n: int, chunk: int | None) -> list[slice]:
    c = n if chunk is None else chunk
    return [slice(i, min(i + c, n)) for i in range(0, n, c)]


# ---------------------------------------------------------------------------- functional model
def _functional(lin: Linearization) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """f(x; θ) as a pure function of named parameters, outputs flattened to ``(n, o)``.

    Uses the Linearization's snapshot of the fixed parameters and buffers (the same
    function that ``lin.jvp``/``lin.vjp`` differentiate), evaluated in eval mode by the
    caller through :func:`_evaluate`.
    """
    return lin._forward  # noqa: SLF001 — see the report: a public hook is requested


def _evaluate(lin: Linearization, fn: Callable[[], Tensor], x: Tensor) -> Tensor:
    """Run ``fn`` with the model in eval mode, translating model errors to ValueError."""
    return lin._call_model(fn, x)  # noqa: SLF001


def default_eps(theta_norm: float, dtype: torch.dtype, central: bool = False) -> float:
    """The automatic finite-difference step for unit-norm directions (module docstring)."""
    u = torch.finfo(dtype).eps / 2  # unit roundoff
    return (u ** (1 / 3) if central else math.sqrt(u)) * (1.0 + theta_norm)


# ---------------------------------------------------------------------------- methods
def _fvp_exact(lin, x, v, likelihood, floor, chunk):
    fwd = _functional(lin)
    theta = lin.unflatten(lin.parameter_vector())
    total = torch.zeros_like(v)
    n = x.shape[0]
    for s in _chunks(n, chunk):
        xc = x[s]
        with torch.no_grad():
            f = _evaluate(lin, lambda xc=xc: fwd(theta, xc), xc)
        jv = lin.jvp(xc, v)  # (k, c, o)
        u = _apply_output_fisher(f.double(), jv.double(), likelihood, floor) / n
        total += lin.vjp(xc, u.to(lin.dtype))
    return total


def _fvp_autograd(lin, x, v, likelihood, floor, chunk):
    fwd = _functional(lin)
    n = x.shape[0]
    total = torch.zeros_like(v)
    for s in _chunks(n, chunk):
        xc = x[s]

        def run(xc: Tensor = xc) -> Tensor:
            theta = {
                k: t.detach().requires_grad_(True)
                for k, t in lin.unflatten(lin.parameter_vector()).items()
            }
            params = list(theta.values())
            with torch.enable_grad():
                f = fwd(theta, xc)
                kl = output_kl(f.detach().double(), f.double(), likelihood, scale_floor=floor)
                loss = kl.sum() / n
                g = torch.autograd.grad(loss, params, create_graph=True)
                g_flat = torch.cat([t.reshape(-1) for t in g])
                out = []
                for vi in v:
                    hv = torch.autograd.grad(g_flat @ vi, params, retain_graph=True)
                    out.append(torch.cat([t.reshape(-1) for t in hv]))
            return torch.stack(out)

        total += _evaluate(lin, run, xc).detach()
    return total


def _fvp_fd(lin, x, v, likelihood, floor, chunk, eps, central, at_perturbed=True):
    fwd = _functional(lin)
    n = x.shape[0]
    theta_flat = lin.parameter_vector()
    theta = lin.unflatten(theta_flat)
    norms = torch.linalg.vector_norm(v, dim=-1)  # (k,)
    nonzero = norms > 0
    if not nonzero.any():
        return torch.zeros_like(v)
    vk = v[nonzero] / norms[nonzero, None]
    if eps is None:
        eps = default_eps(float(torch.linalg.vector_norm(theta_flat.double())), lin.dtype, central)
    steps = (eps, -eps) if central else (eps,)
    # perturbed parameter vectors, (len(steps) * k, p), in the parameters' dtype
    deltas = torch.cat([h * vk for h in steps], dim=0)
    total = torch.zeros(deltas.shape[0], v.shape[-1], dtype=torch.float64, device=v.device)
    for s in _chunks(n, chunk):
        xc = x[s]

        if at_perturbed:

            def run(xc: Tensor = xc) -> Tensor:
                with torch.no_grad():
                    f0 = fwd(theta, xc).double()

                def kl_at(theta_p: Mapping[str, Tensor]) -> Tensor:
                    fp = fwd(theta_p, xc)
                    return output_kl(f0, fp.double(), likelihood, scale_floor=floor).sum() / n

                def one(d: Tensor) -> Tensor:
                    tp = lin.unflatten(theta_flat + d)
                    return lin.flatten(grad(kl_at)(tp))

                return vmap(one)(deltas)
        else:

            def run(xc: Tensor = xc) -> Tensor:
                f0, pullback = vjp(lambda th: fwd(th, xc), theta)
                with torch.no_grad():
                    fp = vmap(lambda d: fwd(lin.unflatten(theta_flat + d), xc))(deltas)
                    cot = _kl_output_grad(f0.detach().double(), fp.double(), likelihood, floor)
                    cot = (cot / n).to(lin.dtype)
                (g,) = vmap(pullback)(cot)
                return lin.flatten(g)

        total += _evaluate(lin, run, xc).detach().double()
    k = vk.shape[0]
    if central:
        res = (total[:k] - total[k:]) / (2 * eps)
    else:
        res = total / eps
    out = torch.zeros_like(v)
    out[nonzero] = (res * norms[nonzero, None].double()).to(v.dtype)
    return out


# ---------------------------------------------------------------------------- public entry
def fisher_vp(
    model_or_lin: nn.Module | Linearization,
    x: Tensor,
    v: Tensor,
    *,
    likelihood: str = "gaussian",
    method: str = "fd",
    eps: float | None = None,
    central: bool = False,
    chunk_size: int | None = None,
    scale_floor: float = 0.0,
    _at_perturbed: bool = True,
) -> Tensor:
    """Fisher-vector products F v, F = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ (Eq. 5 of Maddox et al., 2021).

    Parameters
    ----------
    model_or_lin : nn.Module or Linearization
        The trained network, or its :class:`~ntkcore.linearization.Linearization` (which
        selects the parameters θ; a module is wrapped with all its parameters). The network
        is evaluated in eval mode.
    x : Tensor
        Inputs, shape ``(n, *input_shape)``.
    v : Tensor
        Parameter-space vectors, shape ``(p,)`` or ``(k, p)``.
    likelihood : {"gaussian", "categorical", "heteroscedastic"}
        The likelihood whose output-space Fisher Λ defines F (module docstring).
    method : {"fd", "exact", "autograd"}
        Finite-difference KL gradient (Eq. 5), Jᵀ Λ J v by forward then reverse mode, or
        double backward of the detached KL (the 2021 reference baseline).
    eps : float, optional
        Step of ``"fd"`` for unit-norm directions; default :func:`default_eps`.
    central : bool
        ``"fd"`` only: central differences (two perturbed passes per vector, error O(ε²)).
    chunk_size : int, optional
        Data points per chunk (bounds memory); default the Linearization's ``chunk_size``.
    scale_floor : float
        σ₀ ≥ 0 of the heteroscedastic likelihood, σ = softplus(s) + σ₀.

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
    likelihood = _check_likelihood(likelihood)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    eps = _check_eps(eps)
    if not isinstance(central, bool):
        raise ValueError(f"central must be a bool, got {central!r}")
    if method != "fd" and (eps is not None or central):
        raise ValueError(f"eps and central apply to method='fd' only, got method={method!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    floor = _check_scale_floor(scale_floor)
    lin = _as_linearization(model_or_lin)
    x = _check_x(lin, x)
    v = _check_v(lin, v)
    _check_output_dim(likelihood, lin.output_dim(x))
    chunk = chunk_size if chunk_size is not None else lin.chunk_size
    batched = v.dim() == 2
    vb = v if batched else v.unsqueeze(0)
    if method == "exact":
        out = _fvp_exact(lin, x, vb, likelihood, floor, chunk)
    elif method == "autograd":
        out = _fvp_autograd(lin, x, vb, likelihood, floor, chunk)
    else:
        out = _fvp_fd(lin, x, vb, likelihood, floor, chunk, eps, central, _at_perturbed)
    return out if batched else out[0]
