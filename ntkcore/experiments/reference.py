"""A reference-style finite-NTK GP pipeline, written as the 2021 code did it (baseline only).

This module reproduces, for timing comparisons (``ntkcore.experiments.timing``: the
``reference-style`` method of the Figure 2 experiments and :func:`~ntkcore.experiments.timing.
reference_comparison`, run by ``benchmarks/scaling.py --sweeps reference``), how the code
accompanying Maddox et al. (2021) (``finite_ntk.lazy.NeuralTangent`` on GPyTorch) computed a
finite-NTK GP posterior. It is deliberately *not* the ntkcore engine and shares no code with it
(it imports nothing from ``ntkcore``; ``tests/test_timing.py`` checks it against the dense
float64 GP posterior written out in the test):

* **per-column loops** — the kernel's ``matmul`` loops in Python over the right-hand-side
  columns, re-running the network's forward pass on the training inputs for every column
  (as ``NeuralTangent._matmul`` did);
* **J v by double backward** — Jᵀ u is one ``autograd.grad`` call ("Jacvec"), and J v is the
  double-backward trick ("Rop"): g(w) = Jᵀ w is linear in a dummy w, so J v = ∂(g(w)·v)/∂w;
* **unpreconditioned conjugate gradients** on (J Jᵀ + c I), batched over columns like
  GPyTorch's ``linear_cg`` (but every product still loops over the columns);
* **LOVE-style predictive variances** (GPyTorch's ``fast_pred_var``, the reference's best
  case): r Lanczos iterations on (J Jᵀ + c I) give a root R with (J Jᵀ + c I)⁻¹ ≈ R Rᵀ, the
  cross-covariance K(X*, X) R is r more looped products, and the prior diagonal
  ||J(x*_i)||² is one backward pass per test point (``NeuralTangent.diag``).

Model and notation as in :mod:`ntkcore.posterior`: latent g(x) = m(x) + J(x) w with
w ~ N(0, s² I), y = g(x) + ε, ε ~ N(0, σ² I), c = σ²/s², r = y − m(X). With
α = (J Jᵀ + c I)⁻¹ r (Eq. 3 of the paper):

    mean(x*) = m(x*) + J* Jᵀ α,       var(x*) = s² (||J*||² − ||(J* Jᵀ R)||²_rows).

Only models with one output per data point (o = 1) are supported, as in the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ReferenceNTK",
    "ReferencePipeline",
    "ReferenceProducts",
    "ReferenceResult",
    "lanczos",
    "reference_cg",
]


def _flatten(tensors: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten_like(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vector[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


def _jacvec(out: Tensor, params: list[Tensor], u: Tensor) -> tuple[Tensor, ...]:
    """Jᵀ u: one backward pass through a retained graph ("Jacvec" of the reference)."""
    return torch.autograd.grad(out, params, u, retain_graph=True)


def _rop(out: Tensor, params: list[Tensor], v: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """J v by double backward ("Rop" of the reference): ∂/∂w [ (Jᵀ w) · v ]."""
    w = torch.ones_like(out, requires_grad=True)
    g = torch.autograd.grad(out, params, w, create_graph=True)
    (jv,) = torch.autograd.grad(g, w, v, retain_graph=True)
    return jv


class ReferenceNTK:
    """The finite NTK J Jᵀ as the reference's ``NeuralTangent`` multiplied it.

    Parameters
    ----------
    model : nn.Module
        Network with one output per data point; evaluated in eval mode.
    x : Tensor
        Training inputs, shape (n, *input_shape).
    """

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        self.model = model.eval()
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no parameters that require grad")
        self.x = x
        self.products = 0  # kernel columns multiplied (one J Jᵀ v each)

    def _out(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            out = self.model(x)
        if out.dim() > 2 or (out.dim() == 2 and out.shape[1] != 1):
            raise ValueError(
                f"the reference-style pipeline supports one output per point, got output "
                f"shape {tuple(out.shape)}"
            )
        return out.reshape(-1)

    def matmul(self, rhs: Tensor) -> Tensor:
        """J Jᵀ V for V of shape (n, k), one column at a time (forward re-run per column)."""
        cols = []
        norms = rhs.norm(dim=0)
        for j in range(rhs.shape[1]):
            if float(norms[j]) == 0.0:
                cols.append(torch.zeros_like(rhs[:, j]))
                continue
            v = rhs[:, j] / norms[j]  # the reference normalized each column
            self.model.zero_grad(set_to_none=True)
            out = self._out(self.x)
            z = _jacvec(out, self.params, v)
            cols.append(_rop(out, self.params, z).detach() * norms[j])
            self.products += 1
        return torch.stack(cols, dim=1)

    def cross_matmul(self, x_star: Tensor, rhs: Tensor) -> Tensor:
        """K(X*, X) V = J(X*) J(X)ᵀ V for V of shape (n, k), one column at a time."""
        cols = []
        for j in range(rhs.shape[1]):
            self.model.zero_grad(set_to_none=True)
            out = self._out(self.x)
            z = _jacvec(out, self.params, rhs[:, j])
            out_star = self._out(x_star)
            cols.append(_rop(out_star, self.params, z).detach())
            self.products += 1
        return torch.stack(cols, dim=1)

    def diag(self, x_star: Tensor) -> Tensor:
        """||J(x*_i)||² for every test point, one backward pass per point."""
        vals = torch.empty(x_star.shape[0], dtype=x_star.dtype, device=x_star.device)
        for i in range(x_star.shape[0]):
            self.model.zero_grad(set_to_none=True)
            out = self._out(x_star[i : i + 1]).sum()
            g = torch.autograd.grad(out, self.params)
            vals[i] = _flatten(g).square().sum()
        return vals


class ReferenceProducts:
    """Jacobian products one vector at a time with plain autograd (the 2021 style).

    The baseline of ``benchmarks/products.py``: J v by double backward (:func:`_rop`), Jᵀ u
    by one backward pass (:func:`_jacvec`), J Jᵀ u by both, in a Python loop over the k
    vectors. It is given its best case: the forward graph is built once per call and shared
    by the k vectors (the pipeline's :class:`ReferenceNTK` re-runs it per column, as the 2021
    kernel did).

    Parameters
    ----------
    model : nn.Module
        The network, already in eval mode, on the target device and dtype.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no parameters that require grad")

    def _output(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out.reshape(out.shape[0], -1)

    def jvp(self, x: Tensor, vectors: Tensor) -> Tensor:
        """J v for each row of ``vectors`` (k, p); returns (k, n, o)."""
        out = self._output(x)
        return torch.stack(
            [_rop(out, self.params, _unflatten_like(v, self.params)).detach() for v in vectors]
        )

    def vjp(self, x: Tensor, cotangents: Tensor) -> Tensor:
        """Jᵀ u for each u in ``cotangents`` (k, n, o); returns (k, p)."""
        out = self._output(x)
        return torch.stack([_flatten(_jacvec(out, self.params, u)).detach() for u in cotangents])

    def ntk_vp(self, x: Tensor, cotangents: Tensor) -> Tensor:
        """J Jᵀ u for each u in ``cotangents`` (k, n, o); returns (k, n, o)."""
        out = self._output(x)
        return torch.stack(
            [_rop(out, self.params, _jacvec(out, self.params, u)).detach() for u in cotangents]
        )


def reference_cg(
    matmul: Any, rhs: Tensor, *, tol: float, max_iter: int
) -> tuple[Tensor, int]:
    """Unpreconditioned conjugate gradients on A X = B, all columns together.

    Stops when every column's recursive relative residual ||r_k|| / ||b|| is at most ``tol``
    or after ``max_iter`` iterations. Returns the solution and the number of iterations.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    bnorm = rhs.norm(dim=0).clamp_min(torch.finfo(rhs.dtype).tiny)
    rs = (r * r).sum(0)
    it = 0
    while it < max_iter and bool(((rs.sqrt() / bnorm) > tol).any()):
        ap = matmul(p)
        alpha = rs / (p * ap).sum(0).clamp_min(torch.finfo(rhs.dtype).tiny)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(0)
        p = r + (rs_new / rs.clamp_min(torch.finfo(rhs.dtype).tiny)) * p
        rs = rs_new
        it += 1
    return x, it


def lanczos(matmul: Any, start: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` Lanczos iterations with full reorthogonalization from ``start`` (n,).

    Returns Q (n, k) with orthonormal columns and the tridiagonal T = Qᵀ A Q (k, k), k <= steps
    (fewer if an invariant subspace is found).
    """
    n = start.shape[0]
    steps = min(steps, n)
    q = start / start.norm()
    basis = [q]
    alphas, betas = [], []
    for k in range(steps):
        w = matmul(q.unsqueeze(1)).squeeze(1)
        alpha = torch.dot(w, q)
        qs = torch.stack(basis, dim=1)
        w = w - qs @ (qs.mT @ w)
        w = w - qs @ (qs.mT @ w)  # twice is enough (Giraud et al., 2005)
        alphas.append(alpha)
        beta = w.norm()
        if k == steps - 1 or float(beta) <= 1e-10 * float(alpha.abs()):
            break
        betas.append(beta)
        q = w / beta
        basis.append(q)
    qs = torch.stack(basis, dim=1)
    t = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return qs, t


@dataclass
class ReferenceResult:
    """Mean, variance and what the reference-style pipeline did."""

    mean: Tensor
    variance: Tensor
    diagnostics: dict[str, Any] = field(default_factory=dict)


class ReferencePipeline:
    """Fit and predict with the reference-style finite-NTK GP (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Network with one output per point.
    x, y : Tensor
        Training inputs (n, ...) and targets (n,) or (n, 1).
    noise_variance, prior_variance : float
        σ² and s².
    mean : {"network", "zero"}
        Prior mean, as in :func:`ntkcore.adapt`.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        noise_variance: float,
        prior_variance: float = 1.0,
        mean: str = "zero",
    ) -> None:
        if mean not in ("network", "zero"):
            raise ValueError(f"mean must be 'network' or 'zero', got {mean!r}")
        if noise_variance <= 0 or prior_variance <= 0:
            raise ValueError("noise_variance and prior_variance must be positive")
        self.kernel = ReferenceNTK(model, x)
        self.model = model
        self.x = x
        self.y = y.reshape(-1)
        if self.y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {self.y.shape[0]} values for {x.shape[0]} inputs")
        self.sigma2 = float(noise_variance)
        self.s2 = float(prior_variance)
        self.c = self.sigma2 / self.s2
        self.mean_type = mean
        self.alpha: Tensor | None = None
        self.diagnostics: dict[str, Any] = {}

    def _system(self, v: Tensor) -> Tensor:
        return self.kernel.matmul(v) + self.c * v

    def _prior_mean(self, x: Tensor) -> Tensor:
        if self.mean_type == "zero":
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        with torch.no_grad():
            return self.model(x).reshape(-1)

    def fit(self, *, tol: float, max_iter: int = 10_000) -> dict[str, Any]:
        """Solve (J Jᵀ + c I) α = r by unpreconditioned CG; record the true residual."""
        t0 = time.perf_counter()
        resid = (self.y - self._prior_mean(self.x)).unsqueeze(1)
        start = self.kernel.products
        alpha, iters = reference_cg(self._system, resid, tol=tol, max_iter=max_iter)
        seconds = time.perf_counter() - t0
        true = float((resid - self._system(alpha)).norm() / resid.norm())  # not timed
        self.alpha = alpha
        self.diagnostics.update(
            iterations=iters,
            residual=true,
            converged=true <= tol,
            tolerance=tol,
            fit_seconds=seconds,
            fit_products=self.kernel.products - start - 1,
        )
        return self.diagnostics

    def predict(self, x_star: Tensor, *, rank: int) -> ReferenceResult:
        """Mean (one looped cross product) and LOVE variances with a rank-``rank`` root."""
        if self.alpha is None:
            raise ValueError("call fit() before predict()")
        t0 = time.perf_counter()
        start = self.kernel.products
        mean = self._prior_mean(x_star) + self.kernel.cross_matmul(x_star, self.alpha)[:, 0]
        t_mean = time.perf_counter() - t0
        # LOVE: Lanczos on (J Jᵀ + c I) from r, T = V Θ Vᵀ, root R = Q V Θ^{-1/2}.
        resid = self.y - self._prior_mean(self.x)
        q, t = lanczos(self._system, resid, rank)
        theta, vecs = torch.linalg.eigh(t)
        root = q @ (vecs / theta.clamp_min(torch.finfo(t.dtype).tiny).sqrt())
        cross = self.kernel.cross_matmul(x_star, root)  # shape: (m, k)
        prior = self.kernel.diag(x_star)
        var = (self.s2 * (prior - cross.square().sum(1))).clamp_min(0.0)
        seconds = time.perf_counter() - t0
        self.diagnostics.update(
            predict_seconds=seconds,
            predict_mean_seconds=t_mean,
            variance_rank=int(q.shape[1]),
            predict_products=self.kernel.products - start,
        )
        return ReferenceResult(mean.detach(), var.detach(), dict(self.diagnostics))
