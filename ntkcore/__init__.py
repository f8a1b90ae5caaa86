"""ntkcore: transfer learning with linearized neural networks.

Finite-NTK Gaussian processes after Maddox, Tang, Moreno, Wilson and Damianou,
*Fast Adaptation with Linearized Neural Networks* (AISTATS 2021).
"""

from ntkcore.linearization import Linearization
from ntkcore.posterior import Posterior, Prediction, adapt, choose_strategy
from ntkcore.parameters import ParameterLayout, last_layers, select_parameters

__all__ = [
    "Linearization",
    "Posterior",
    "Prediction",
    "adapt",
    "choose_strategy",
    "ParameterLayout",
    "last_layers",
    "select_parameters",
]
__version__ = "0.1.0"
