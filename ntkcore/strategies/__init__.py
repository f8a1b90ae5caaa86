"""Inference strategies of :func:`ntkcore.adapt` as a table of typed fit functions.

:data:`FITS` maps a strategy name to ``fit(problem: FitProblem) -> FitResult``. Add a
strategy by adding an entry (and, if ``strategy="auto"`` should pick it, a rule in
:func:`ntkcore.posterior.choose_strategy`).
"""

from ntkcore.strategies.base import FitFunction, FitOptions, FitProblem, FitResult
from ntkcore.strategies.dense import dense_spectrum, fit_dense
from ntkcore.strategies.iterative import fit_function_space, fit_parameter_space
from ntkcore.strategies.products import TrainingProducts

__all__ = [
    "FITS",
    "FitFunction",
    "FitOptions",
    "FitProblem",
    "FitResult",
    "TrainingProducts",
    "dense_spectrum",
    "fit_dense",
    "fit_function_space",
    "fit_parameter_space",
]

FITS: dict[str, FitFunction] = {
    "dense": fit_dense,
    "function": fit_function_space,
    "parameter": fit_parameter_space,
}
