"""Solvers: preconditioned CG with diagnostics, Nyström preconditioning, SLQ log-dets."""

from ntkcore.solvers.cg import ConvergenceWarning, SolveInfo, conjugate_gradients
from ntkcore.solvers.nystrom import NystromApproximation, NystromPreconditioner
from ntkcore.solvers.slq import logdet_slq

__all__ = [
    "ConvergenceWarning",
    "NystromApproximation",
    "NystromPreconditioner",
    "SolveInfo",
    "conjugate_gradients",
    "logdet_slq",
]
