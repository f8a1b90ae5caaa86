"""ntkcore: transfer learning with linearized neural networks.

Finite-NTK Gaussian processes after Maddox, Tang, Moreno, Wilson and Damianou,
*Fast Adaptation with Linearized Neural Networks* (AISTATS 2021).
"""

from ntkcore.classifier import LinearizedClassifier, adapt_classifier
from ntkcore.hyperparameters import HyperparameterFit, fit_hyperparameters
from ntkcore.jacobian_at import JacobianAt
from ntkcore.linearization import Linearization
from ntkcore.parameters import ParameterLayout, last_layers, select_parameters
from ntkcore.posterior import Posterior, Prediction, adapt, choose_strategy
from ntkcore.similarity import compare_jacobians, jacobian_similarity, ntk_eigenvalues

__all__ = [
    "HyperparameterFit",
    "JacobianAt",
    "Linearization",
    "fit_hyperparameters",
    "Posterior",
    "Prediction",
    "adapt",
    "adapt_classifier",
    "LinearizedClassifier",
    "choose_strategy",
    "ParameterLayout",
    "last_layers",
    "select_parameters",
    "compare_jacobians",
    "jacobian_similarity",
    "ntk_eigenvalues",
]
__version__ = "0.1.0"

# GPyTorch-facing names load gpytorch on first use only (importing it costs ~1 s).
_LAZY = {
    "FiniteNTKKernel": "ntkcore.kernel",
    "FiniteNTKGP": "ntkcore.kernel",
    "NetworkMean": "ntkcore.kernel",
    "fisher_vp": "ntkcore.fisher",
    "calibrate_eps": "ntkcore.fisher",
    "StepCalibration": "ntkcore.fisher",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ntkcore' has no attribute {name!r}")
