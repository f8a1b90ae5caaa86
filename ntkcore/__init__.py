"""ntkcore: transfer learning with linearized neural networks.

Finite-NTK Gaussian processes after Maddox, Tang, Moreno, Wilson and Damianou,
*Fast Adaptation with Linearized Neural Networks* (AISTATS 2021).
"""

from ntkcore.hyperparameters import HyperparameterFit, fit_hyperparameters
from ntkcore.linearization import Linearization
from ntkcore.parameters import ParameterLayout, last_layers, select_parameters
from ntkcore.posterior import Posterior, Prediction, adapt, choose_strategy

__all__ = [
    "HyperparameterFit",
    "Linearization",
    "fit_hyperparameters",
    "Posterior",
    "Prediction",
    "adapt",
    "choose_strategy",
    "ParameterLayout",
    "last_layers",
    "select_parameters",
]
__version__ = "0.1.0"
