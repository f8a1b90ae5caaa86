"""True regression functions of the generated tasks, as small picklable callables.

Each maps ``x`` (a torch tensor, a NumPy array or a float) to an object of the same type and
shape, elementwise; for 1-D tasks an input of shape ``(n, 1)`` gives ``(n, 1)``, matching the
``y`` layout of :class:`ntkcore.data.Task`.  Being frozen dataclasses (not lambdas) they pickle,
compare by value and print their parameters, so a page can cache them and show the formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _sin(x: Any) -> Any:
    return torch.sin(x) if isinstance(x, torch.Tensor) else np.sin(x)


def _abs(x: Any) -> Any:
    return torch.abs(x) if isinstance(x, torch.Tensor) else np.abs(x)


@dataclass(frozen=True)
class Sinusoid:
    """``f(x) = amplitude * sin(frequency * x + phase)`` (Kim et al., 2018)."""

    amplitude: float
    frequency: float
    phase: float

    def __call__(self, x: Any) -> Any:
        return self.amplitude * _sin(self.frequency * x + self.phase)

    def formula(self) -> str:
        """Human-readable formula with the parameters filled in."""
        return f"{self.amplitude:.3g} sin({self.frequency:.3g} x + {self.phase:.3g})"


@dataclass(frozen=True)
class Line:
    """``f(x) = slope * x + intercept``."""

    slope: float
    intercept: float

    def __call__(self, x: Any) -> Any:
        return self.slope * x + self.intercept

    def formula(self) -> str:
        """Human-readable formula with the parameters filled in."""
        return f"{self.slope:.3g} x + {self.intercept:.3g}"


@dataclass(frozen=True)
class QuadraticAbs:
    """``f(x) = quadratic * x**2 + absolute * |x|`` (the reference's ReLU toy function)."""

    quadratic: float = 0.1
    absolute: float = 1.0

    def __call__(self, x: Any) -> Any:
        return self.quadratic * x * x + self.absolute * _abs(x)

    def formula(self) -> str:
        """Human-readable formula with the parameters filled in."""
        return f"{self.quadratic:.3g} x^2 + {self.absolute:.3g} |x|"


def kim_sinusoid(rng: np.random.Generator) -> Sinusoid:
    """Draw one sinusoid from the task distribution of Kim et al. (2018).

    Amplitude ``A ~ U[0.1, 5]``, phase ``b ~ U[0, 2 pi]``, frequency ``w ~ U[0.5, 2]`` (drawn in
    this order).  Observation noise (added by the caller) is ``N(0, (0.01 A)^2)``.
    """
    amplitude = float(rng.uniform(0.1, 5.0))
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    frequency = float(rng.uniform(0.5, 2.0))
    return Sinusoid(amplitude=amplitude, frequency=frequency, phase=phase)
