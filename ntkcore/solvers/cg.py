"""Conjugate gradients with honest diagnostics, on top of ``linear_operator``'s CG."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from linear_operator.utils.linear_cg import linear_cg
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor


class ConvergenceWarning(UserWarning):
    """A solver stopped before reaching its tolerance."""


# Rounds of iterative refinement for inexact products (residual_matmul given). Each round
# shrinks the true residual by about (product error × its amplification by the system);
# measured on the weight-space systems of benchmarks/scaling.py with finite-difference
# Fisher products (ELU MLPs, p = 5k-83k, σ² = 1e-2): 1e-3..5e-3 after CG alone, below
# 1e-3 after one or two rounds.
_REFINEMENTS = 4
# Rounds of mixed-precision refinement (working_dtype given): a float32 correction gains
# ~1e-1..1e-3 per round at condition numbers 1e6..1e7 (tests/test_mixed_precision.py).
_MIXED_REFINEMENTS = 10


@dataclass(frozen=True)
class SolveInfo:
    """What a solve did.

    Attributes
    ----------
    iterations : int
        CG iterations (matrix products with the system, excluding the final check).
    residuals : Tensor
        True relative residual ||b − A x|| / ||b|| per right-hand side, recomputed with one
        extra product after CG returns (not CG's recursive estimate).
    converged : bool
        Every residual is at most the tolerance.
    tolerance : float
    refinements : int
        Rounds of iterative refinement (only with an inexact ``matmul`` and an exact
        ``residual_matmul``; their CG iterations are included in ``iterations``).
    residual_dtype : torch.dtype or None
        The dtype of the solution and of the residual check (the right-hand side's);
        with ``working_dtype`` the CG runs themselves are in that lower precision.
    """

    iterations: int
    residuals: Tensor
    converged: bool
    tolerance: float
    refinements: int = 0
    residual_dtype: torch.dtype | None = None

    @property
    def max_residual(self) -> float:
        return float(self.residuals.max()) if self.residuals.numel() else 0.0


def conjugate_gradients(
    matmul: Callable[[Tensor], Tensor],
    rhs: Tensor,
    *,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    tol: float = 1e-5,
    max_iter: int = 1000,
    what: str = "linear system",
    residual_matmul: Callable[[Tensor], Tensor] | None = None,
    working_dtype: torch.dtype | None = None,
    working_tol: float | None = None,
    refine_to: float | None = None,
) -> tuple[Tensor, SolveInfo]:
    r"""Solve A X = B for symmetric positive definite A given only products.

    Runs ``linear_operator.utils.linear_cg`` (preconditioned, all right-hand sides at
    once) and then measures the true relative residual of every column with one more
    product. If any residual exceeds ``tol`` a :class:`ConvergenceWarning` is issued —
    never a silently wrong answer.

    Parameters
    ----------
    matmul : callable
        ``matmul(V)`` = A V for V of shape (d, k).
    rhs : Tensor
        B, shape (d, k).
    preconditioner : callable, optional
        ``preconditioner(R)`` ≈ A⁻¹ R.
    tol : float
        Target relative residual per column.
    max_iter : int
        Iteration cap.
    residual_matmul : callable, optional
        The exact operator when ``matmul`` is an approximation of it (e.g.
        finite-difference Fisher products): the reported residuals are those of the exact
        system, and while they exceed ``tol`` the solution is corrected by iterative
        refinement — CG with ``matmul`` on the exact residual, x ← x + A_approx⁻¹ r — for up
        to 4 rounds (10 with ``working_dtype``; one exact product each), while each round
        lowers the residual.
    working_dtype : torch.dtype, optional
        Mixed-precision iterative refinement: the CG runs (``matmul``, ``preconditioner``)
        work in this dtype (e.g. float32) while the solution, the right-hand side and
        ``residual_matmul`` stay in ``rhs.dtype`` (float64); each correction is cast
        down, solved, cast up and added. Default: ``rhs.dtype`` (no casts).
    working_tol : float, optional
        The relative residual one CG run in the working precision can reach (with
        ``residual_matmul``): every run stops there at the latest and the refinement
        rounds bridge the rest to ``tol``. Default ``tol``.
    refine_to : float, optional
        Refinement rounds continue while a residual exceeds this (<= ``tol``; default
        ``tol``); convergence and the warning are judged against ``tol``.

    Returns
    -------
    solution : Tensor
        X, shape (d, k).
    info : SolveInfo
    """
    if rhs.dim() != 2:
        raise ValueError(f"rhs must have shape (d, k), got {tuple(rhs.shape)}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    calls = 0

    def counted(v: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return matmul(v)

    tiny = torch.finfo(rhs.dtype).tiny ** 0.5
    bnorm = rhs.norm(dim=0).clamp_min(tiny)
    check = matmul if residual_matmul is None else residual_matmul
    work = rhs.dtype if working_dtype is None else working_dtype
    floor = tol if working_tol is None else max(tol, float(working_tol))
    work_tiny = torch.finfo(work).tiny ** 0.5
    goal = tol if refine_to is None else min(tol, float(refine_to))

    def run(b: Tensor, guess: Tensor | None, budget: int, rel_tol: float) -> Tensor:
        with warnings.catch_warnings():
            # Our own ConvergenceWarning below reports the true residuals instead.
            warnings.simplefilter("ignore", NumericalWarning)
            # linear_cg stops on the mean residual; ask for a little more so that the
            # per-column check passes when the mean does.
            out = linear_cg(
                counted,
                b.to(work),
                tolerance=rel_tol * 0.5,
                eps=work_tiny,
                stop_updating_after=rel_tol * 1e-3,
                max_iter=budget,
                max_tridiag_iter=1,  # no Lanczos tridiagonalization is requested
                initial_guess=None if guess is None else guess.to(work),
                preconditioner=preconditioner,
            )
            return out.to(rhs.dtype)

    refinements = 0
    with torch.no_grad():
        x = run(rhs, None, max_iter, tol if residual_matmul is None else floor)
        iterations = max(calls - 1, 0)  # the first call forms the initial residual
        r = rhs - check(x)
        residuals = r.norm(dim=0) / bnorm
        # CG's recursively updated residual drifts from the true one in low precision:
        # restart once from the current solution with the iterations left (measured in
        # float32 at σ² = 1e-3: a stop at true residual 1.1e-3 became 1.1e-4 in 11 more).
        if residual_matmul is None and bool((residuals > tol).any()) and iterations < max_iter:
            calls = 0
            x = run(rhs, x, max_iter - iterations, tol)
            iterations += max(calls - 1, 0)
            residuals = (rhs - check(x)).norm(dim=0) / bnorm
        # Inexact products: iterative refinement on the exact residual.
        while (
            residual_matmul is not None
            and bool((residuals > goal).any())
            and iterations < max_iter
            and refinements < (_REFINEMENTS if working_dtype is None else _MIXED_REFINEMENTS)
        ):
            calls = 0
            # ask the correction for the accuracy that brings r to the goal (relative to r)
            rel = min(0.5, goal / max(float(residuals.max()), tiny))
            if working_tol is not None:  # no run in the working precision goes below it
                rel = max(rel, min(0.5, floor))
            x_new = x + run(r, None, max_iter - iterations, rel)
            iterations += max(calls - 1, 0)
            refinements += 1
            r_new = rhs - check(x_new)
            new = r_new.norm(dim=0) / bnorm
            if not float(new.max()) < float(residuals.max()):
                break  # the products' accuracy is exhausted: keep the better solution
            x, r, residuals = x_new, r_new, new
    converged = bool((residuals <= tol).all())
    if not converged:
        warnings.warn(
            f"CG on the {what} did not reach relative residual {tol:.1e} in {iterations} "
            f"iterations (max residual {float(residuals.max()):.2e}); results are "
            "approximate — raise max_iter, the preconditioner rank, or the noise variance",
            ConvergenceWarning,
            stacklevel=3,
        )
    return x, SolveInfo(
        iterations=iterations,
        residuals=residuals.cpu(),
        converged=converged,
        tolerance=tol,
        refinements=refinements,
        residual_dtype=rhs.dtype,
    )
