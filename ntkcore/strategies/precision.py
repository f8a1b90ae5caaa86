r"""Mixed precision for the matrix-free solves: float64 residuals for float32 networks.

A solve in the network's own precision cannot resolve a relative residual much below
u·κ (u the unit roundoff, κ the condition number of J Jᵀ + cI): the products' rounding
errors scale with ‖J‖² while the smallest eigenvalue is c. Then CG on float32 products
stalls above ``tol`` (tanh MLP 8-128-128-1, n = 2,000, σ² = 1e-3, κ ≈ 6e6: relative
residual 2e-3 after 92 iterations) however well it is preconditioned. Iterative
refinement fixes that (Wilkinson; Carson & Higham, 2018, "Accelerating the solution of
linear systems by iterative refinement in three precisions"): the solution and the
residual b − A x live in float64 (products of a float64 copy of the linearization), each
correction A⁻¹r is solved in float32 by the preconditioned CG, x ← x + correction, until
the float64 residual meets ``tol`` (:func:`ntkcore.solvers.cg.conjugate_gradients` with
``residual_matmul`` and ``working_dtype``).

When it runs (``refinement="auto"``): when the sketch's condition estimate predicts a
stall, u·κ̂ / :data:`FLOOR_DIVISOR` > tol with κ̂ = (λ̂₁ + c)/c, or when a solve in the
working precision did not converge. Otherwise the solve stays entirely in float32 (what
keeps GPUs at float32 speed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ntkcore.strategies.products import TrainingProducts

__all__ = ["FLOOR_DIVISOR", "REFINEMENTS", "Precision", "float64_unavailable", "plan"]

REFINEMENTS = ("auto", "float64", "none")
_F64 = torch.float64
# The relative residual a working-precision CG reaches is about u·κ / FLOOR_DIVISOR:
# measured u·κ = 0.71 against a stall at 2e-3 (tanh MLP above, float32).
FLOOR_DIVISOR = 100.0


def float64_unavailable(device: torch.device) -> str | None:
    """None when float64 tensors work on ``device``, else why not (e.g. Apple MPS)."""
    try:
        torch.ones(1, dtype=_F64, device=device).sum().item()
    except (TypeError, RuntimeError) as err:
        return f"float64 is not available on {device.type} ({type(err).__name__}: {err})"
    return None


@dataclass
class Precision:
    """How one matrix-free solve handles precision.

    Attributes
    ----------
    working : torch.dtype
        The network's dtype: sketch, preconditioner, CG runs.
    residual : torch.dtype
        The dtype of the solution and of the residual checks (float64 when refining).
    reason : str
    condition_estimate : float
        κ̂ = (λ̂₁ + c)/c from the sketch.
    floor_estimate : float
        u·κ̂ / :data:`FLOOR_DIVISOR`, the predicted reachable residual of the working
        precision.
    products64 : TrainingProducts or None
        Float64 products at the training inputs (refining only).
    """

    working: torch.dtype
    residual: torch.dtype
    reason: str
    condition_estimate: float
    floor_estimate: float
    products64: TrainingProducts | None = None

    @property
    def refine(self) -> bool:
        return self.products64 is not None


def _float64_products(products: TrainingProducts, cache: str) -> TrainingProducts:
    """Float64 products at the training inputs for the few residual checks of a refined
    solve: the pullback cache only (n = 2,000, p = 17,793, 2 threads: 0.07 s to build
    against 2.5 s for the traced tangent program, which a handful of products does not
    repay)."""
    keep = "none" if cache == "none" else "pullback"
    return products.to_dtype(_F64, keep)


def plan(
    products: TrainingProducts,
    top_eigenvalue: float,
    c: float,
    tol: float,
    refinement: str,
    cache: str,
    *,
    stalled_at: float | None = None,
) -> Precision:
    """Decide whether the solve refines on float64 residuals (see the module docstring).

    ``stalled_at``: the residual at which a working-precision solve stopped above ``tol``
    (the second chance of ``refinement="auto"``).
    """
    dtype = products.dtype
    kappa = (max(top_eigenvalue, 0.0) + c) / c
    floor = torch.finfo(dtype).eps * kappa / FLOOR_DIVISOR
    keep = Precision(dtype, dtype, "", kappa, floor)
    if dtype == _F64:
        keep.reason = "float64 network"
        return keep
    if refinement == "none":
        keep.reason = "refinement='none'"
        return keep
    if refinement == "float64":
        why = "refinement='float64'"
    elif stalled_at is not None:
        why = (
            f"the {dtype} solve stopped at relative residual {stalled_at:.1e} > tol = {tol:.0e}"
        )
    elif floor > tol:
        why = (
            f"predicted {dtype} floor u·κ̂/{FLOOR_DIVISOR:g} = {floor:.1e} > tol = {tol:.0e} "
            f"(κ̂ = {kappa:.1e})"
        )
    else:
        keep.reason = (
            f"{dtype} suffices: predicted floor {floor:.1e} <= tol = {tol:.0e} (κ̂ = {kappa:.1e})"
        )
        return keep
    missing = float64_unavailable(products.device)
    if missing is not None:
        warnings.warn(
            f"{why}, but {missing}: the solve stays in {dtype} and may not reach tol",
            RuntimeWarning,
            stacklevel=4,
        )
        keep.reason = f"{why}; {missing}"
        return keep
    return Precision(
        dtype, _F64, f"{why}: refined on float64 residuals", kappa, floor,
        _float64_products(products, cache),
    )
