"""Output-space likelihoods p(y | f) of a network's outputs f: one small class each.

The Fisher information of the parameters of a network with likelihood p(y | f(x; θ)) is
the generalized Gauss–Newton matrix F = (1/n) Σᵢ Jᵢᵀ Λ(fᵢ) Jᵢ (Section 3.2 of Maddox et al.,
2021), and the finite-difference Fisher-vector product of Eq. 5 differentiates the KL
divergence D(p(y|f) ‖ p(y|f')) between two outputs. Everything that depends on the
likelihood lives here, behind one interface that :func:`ntkcore.fisher_vp`, the Fisher
operator (:class:`ntkcore.operators.FisherLinearOperator`) and the classifier
(:func:`ntkcore.adapt_classifier`, the GLM of Eq. 4) share:

``kl(f, f')``
    D(p(y | f) ‖ p(y | f')) per point, summed over the outputs.
``kl_grad(f, f')``
    ∇_{f'} D(p(y | f) ‖ p(y | f')) in closed form (the output-space part of Eq. 5).
``fisher_product(f, u)``
    Λ(f) u, the output-space Fisher applied to vectors; ``fisher(f)`` gives Λ(f) explicitly.
``fisher_sqrt_product(f, u, transpose=False)``
    L u (or Lᵀ u) for a factor Λ(f) = L Lᵀ: the GGN is then BᵀB with B = Lᵀ J, which is what
    a function-space sketch of the GGN needs.
``log_prob(f, y)``, ``nll_grad(f, y)``
    log p(y | f) per point and ∇_f (−log p(y | f)).
``check_outputs(o)``, ``check_targets(y, o)``
    ``ValueError`` for outputs or targets that do not fit the likelihood.

Formulas (o outputs per point):

``"gaussian"`` — y ~ N(f, I), unit variance:
    D = ½‖f − f'‖²,  Λ = I,  L = I.
``"categorical"`` — y ~ Categorical(π), π = softmax(f), targets are class labels:
    D = Σ_c π_c (log π_c − log π'_c),  ∇_{f'} D = π' − π,  Λ = diag(π) − ππᵀ,
    L = diag(√π) − π √πᵀ  [L Lᵀ = diag(π) − 2ππᵀ + π (√πᵀ√π) πᵀ = diag(π) − ππᵀ, as Σ π = 1].
    With the canonical (softmax) link the Hessian of −log p in f is Λ as well, which makes
    Newton's method on the GLM of Eq. 4 a Gauss–Newton method with the exact Hessian.
``"heteroscedastic"`` — o = 2m outputs: means μ = f[:m] and raw scales s = f[m:], with
    y_j ~ N(μ_j, σ_j²), σ_j = softplus(s_j) + σ₀ (σ₀ = ``scale_floor``):
    D = Σ_j log(σ'_j/σ_j) + (σ_j² + (μ_j − μ'_j)²) / (2σ'_j²) − ½.
    The Fisher of N(μ, σ²) in (μ, σ) is diag(1/σ², 2/σ²) [E(∂_μ log p)² = 1/σ²;
    E(∂_σ log p)² = E(−1/σ + (y−μ)²/σ³)² = (1 − 2 + 3)/σ² = 2/σ²; the cross term vanishes
    by symmetry]. With dσ/ds = sigmoid(s) =: σ'(s), in (μ, s): Λ = diag(1/σ², 2σ'(s)²/σ²),
    and L = Λ^{1/2} (diagonal).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LIKELIHOODS",
    "Categorical",
    "Gaussian",
    "Heteroscedastic",
    "Likelihood",
    "likelihood",
]

#: Names accepted by :func:`likelihood` (and by ``fisher_vp(likelihood=...)``).
LIKELIHOODS: tuple[str, ...] = ("gaussian", "categorical", "heteroscedastic")


def _check_scale_floor(scale_floor: object) -> float:
    if isinstance(scale_floor, bool) or not isinstance(scale_floor, int | float):
        raise ValueError(f"scale_floor must be a non-negative float, got {scale_floor!r}")
    if not math.isfinite(scale_floor) or scale_floor < 0:
        raise ValueError(f"scale_floor must be a non-negative float, got {scale_floor!r}")
    return float(scale_floor)


class Likelihood(ABC):
    """A likelihood p(y | f) on the o outputs f of one data point (module docstring).

    Every method is batched over leading dimensions: ``f`` has shape ``(..., o)``.
    """

    #: Registry name.
    name: str = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    # ------------------------------------------------------------------ checks
    def check_outputs(self, o: int) -> None:
        """``ValueError`` when a network with ``o`` outputs per point cannot carry this
        likelihood (any ``o`` >= 1 can by default)."""
        if o < 1:
            raise ValueError(f"a network needs at least one output, got o={o}")

    def check_targets(self, y: Tensor, n: int, o: int) -> Tensor:
        """Validated targets for ``n`` points and ``o`` outputs (``ValueError`` otherwise)."""
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if not y.is_floating_point():
            raise ValueError(f"the {self.name} likelihood needs float targets, got {y.dtype}")
        if y.dim() == 1 and self.target_dim(o) == 1:
            y = y.unsqueeze(-1)
        if tuple(y.shape) != (n, self.target_dim(o)):
            raise ValueError(
                f"y must have shape ({n}, {self.target_dim(o)}), got {tuple(y.shape)}"
            )
        if not torch.isfinite(y).all():
            raise ValueError("y contains non-finite values (nan or inf)")
        return y

    def target_dim(self, o: int) -> int:
        """Target values per point for ``o`` outputs."""
        return o

    # ------------------------------------------------------------------ divergence
    @abstractmethod
    def kl(self, f: Tensor, f_prime: Tensor) -> Tensor:
        """D(p(y | f) ‖ p(y | f')) per point, shape ``f.shape[:-1]``."""

    @abstractmethod
    def kl_grad(self, f: Tensor, f_prime: Tensor) -> Tensor:
        """∇_{f'} D(p(y | f) ‖ p(y | f')), shape of ``f_prime``."""

    # ------------------------------------------------------------------ Fisher
    @abstractmethod
    def fisher_product(self, f: Tensor, u: Tensor) -> Tensor:
        """Λ(f) u for outputs ``f`` of shape ``(n, o)`` and ``u`` of shape ``(..., n, o)``."""

    @abstractmethod
    def fisher_sqrt_product(self, f: Tensor, u: Tensor, *, transpose: bool = False) -> Tensor:
        """L u (``transpose=True``: Lᵀ u) for the factor Λ(f) = L Lᵀ of the module docstring;
        shapes as :meth:`fisher_product`."""

    def fisher(self, f: Tensor) -> Tensor:
        """The output-space Fisher Λ(f) of each point, explicit, shape ``(..., o, o)``."""
        self.check_outputs(f.shape[-1])
        eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
        eye = eye.expand(*f.shape, f.shape[-1])
        # Λ is symmetric: applying it to the unit vectors gives its rows.
        return self.fisher_product(f.unsqueeze(-2), eye)

    # ------------------------------------------------------------------ data fit
    @abstractmethod
    def log_prob(self, f: Tensor, y: Tensor) -> Tensor:
        """log p(y | f) per point, shape ``f.shape[:-1]`` (targets as :meth:`check_targets`)."""

    @abstractmethod
    def nll_grad(self, f: Tensor, y: Tensor) -> Tensor:
        """∇_f (−log p(y | f)), shape of ``f``."""


class Gaussian(Likelihood):
    """y ~ N(f, I): unit-variance Gaussian regression (Λ = I)."""

    name = "gaussian"

    def kl(self, f: Tensor, f_prime: Tensor) -> Tensor:
        return 0.5 * (f_prime - f).square().sum(-1)

    def kl_grad(self, f: Tensor, f_prime: Tensor) -> Tensor:
        return f_prime - f

    def fisher_product(self, f: Tensor, u: Tensor) -> Tensor:
        return u

    def fisher_sqrt_product(self, f: Tensor, u: Tensor, *, transpose: bool = False) -> Tensor:
        return u

    def log_prob(self, f: Tensor, y: Tensor) -> Tensor:
        return -0.5 * ((y - f).square() + math.log(2 * math.pi)).sum(-1)

    def nll_grad(self, f: Tensor, y: Tensor) -> Tensor:
        return f - y


class Categorical(Likelihood):
    """y ~ Categorical(softmax(f)): o ≥ 2 logits per point, integer class labels."""

    name = "categorical"

    def check_outputs(self, o: int) -> None:
        if o < 2:
            raise ValueError(
                f"the categorical likelihood needs at least 2 outputs (logits), got {o}"
            )

    def check_targets(self, y: Tensor, n: int, o: int) -> Tensor:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(
                f"the categorical likelihood needs integer class labels, got {y.dtype}"
            )
        if tuple(y.shape) != (n,):
            raise ValueError(f"y must hold {n} class labels, shape ({n},), got {tuple(y.shape)}")
        if n and (int(y.min()) < 0 or int(y.max()) >= o):
            raise ValueError(
                f"class labels must lie in [0, {o}) for {o} logits, got range "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        return y.long()

    def target_dim(self, o: int) -> int:
        return 1

    def kl(self, f: Tensor, f_prime: Tensor) -> Tensor:
        logp, logq = f.log_softmax(-1), f_prime.log_softmax(-1)
        return (logp.exp() * (logp - logq)).sum(-1)

    def kl_grad(self, f: Tensor, f_prime: Tensor) -> Tensor:
        return f_prime.softmax(-1) - f.softmax(-1)

    def fisher_product(self, f: Tensor, u: Tensor) -> Tensor:
        pi = f.softmax(-1)
        return pi * u - pi * (pi * u).sum(-1, keepdim=True)

    def fisher_sqrt_product(self, f: Tensor, u: Tensor, *, transpose: bool = False) -> Tensor:
        pi = f.softmax(-1)
        root = pi.sqrt()
        if transpose:  # Lᵀ u = √π ⊙ u − √π (πᵀu)
            return root * u - root * (pi * u).sum(-1, keepdim=True)
        return root * u - pi * (root * u).sum(-1, keepdim=True)  # L u = √π⊙u − π (√πᵀu)

    def log_prob(self, f: Tensor, y: Tensor) -> Tensor:
        index = y.long().expand(f.shape[:-1]).unsqueeze(-1)
        return f.log_softmax(-1).gather(-1, index).squeeze(-1)

    def nll_grad(self, f: Tensor, y: Tensor) -> Tensor:
        return f.softmax(-1) - F.one_hot(y.long(), f.shape[-1]).to(f.dtype)


class Heteroscedastic(Likelihood):
    """y_j ~ N(μ_j, σ_j²): outputs are m means then m raw scales, σ = softplus(s) + σ₀.

    Parameters
    ----------
    scale_floor : float
        σ₀ ≥ 0.
    """

    name = "heteroscedastic"

    def __init__(self, scale_floor: float = 0.0) -> None:
        self.scale_floor = _check_scale_floor(scale_floor)

    def __repr__(self) -> str:
        return f"Heteroscedastic(scale_floor={self.scale_floor!r})"

    def check_outputs(self, o: int) -> None:
        if o % 2:
            raise ValueError(
                "the heteroscedastic likelihood needs an even number of outputs (means, then "
                f"raw scales), got o={o}"
            )

    def target_dim(self, o: int) -> int:
        return o // 2

    def split(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, standard deviation and dσ/ds of outputs ``(..., 2m)``."""
        m = f.shape[-1] // 2
        mu, s = f[..., :m], f[..., m:]
        return mu, F.softplus(s) + self.scale_floor, torch.sigmoid(s)

    def kl(self, f: Tensor, f_prime: Tensor) -> Tensor:
        mu, sigma, _ = self.split(f)
        mu2, sigma2, _ = self.split(f_prime)
        kl = (
            torch.log(sigma2 / sigma)
            + (sigma.square() + (mu - mu2).square()) / (2 * sigma2.square())
            - 0.5
        )
        return kl.sum(-1)

    def kl_grad(self, f: Tensor, f_prime: Tensor) -> Tensor:
        mu, sigma, _ = self.split(f)
        mu2, sigma2, dsigma2 = self.split(f_prime)
        g_mu = (mu2 - mu) / sigma2.square()
        g_sigma = 1.0 / sigma2 - (sigma.square() + (mu - mu2).square()) / sigma2.pow(3)
        return torch.cat([g_mu, g_sigma * dsigma2], dim=-1)

    def _fisher_diagonal(self, f: Tensor) -> Tensor:
        _, sigma, dsigma = self.split(f)
        inv_var = sigma.square().reciprocal()
        return torch.cat([inv_var, 2 * dsigma.square() * inv_var], dim=-1)

    def fisher_product(self, f: Tensor, u: Tensor) -> Tensor:
        return u * self._fisher_diagonal(f)

    def fisher_sqrt_product(self, f: Tensor, u: Tensor, *, transpose: bool = False) -> Tensor:
        return u * self._fisher_diagonal(f).sqrt()

    def log_prob(self, f: Tensor, y: Tensor) -> Tensor:
        mu, sigma, _ = self.split(f)
        z = (y - mu) / sigma
        return -(0.5 * z.square() + sigma.log() + 0.5 * math.log(2 * math.pi)).sum(-1)

    def nll_grad(self, f: Tensor, y: Tensor) -> Tensor:
        mu, sigma, dsigma = self.split(f)
        g_mu = (mu - y) / sigma.square()
        g_sigma = 1.0 / sigma - (y - mu).square() / sigma.pow(3)
        return torch.cat([g_mu, g_sigma * dsigma], dim=-1)


_CLASSES: dict[str, type[Likelihood]] = {
    "gaussian": Gaussian,
    "categorical": Categorical,
    "heteroscedastic": Heteroscedastic,
}


def likelihood(name: str | Likelihood, *, scale_floor: float = 0.0) -> Likelihood:
    """The likelihood registered as ``name`` (a :class:`Likelihood` passes through).

    Parameters
    ----------
    name : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        See the module docstring.
    scale_floor : float
        σ₀ ≥ 0 of the heteroscedastic likelihood (validated for every name; it must be left
        at 0 or agree when ``name`` is already a :class:`Likelihood`).

    Raises
    ------
    ValueError
        For an unknown name or a negative or non-finite ``scale_floor``.
    """
    if isinstance(name, Likelihood):
        floor = _check_scale_floor(scale_floor)
        own = getattr(name, "scale_floor", 0.0)
        if floor not in (0.0, own):
            raise ValueError(
                f"scale_floor={floor} conflicts with the given likelihood {name!r}"
            )
        return name
    if not isinstance(name, str) or name not in _CLASSES:
        raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}, got {name!r}")
    floor = _check_scale_floor(scale_floor)
    if name == "heteroscedastic":
        return Heteroscedastic(floor)
    return _CLASSES[name]()
