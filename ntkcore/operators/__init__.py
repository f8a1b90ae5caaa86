"""Matrices of the linearized network as ``linear_operator`` LinearOperators."""

from ntkcore.operators.fisher_operator import FisherLinearOperator
from ntkcore.operators.gauss_newton_operator import GaussNewtonLinearOperator
from ntkcore.operators.jacobian_operator import JacobianLinearOperator
from ntkcore.operators.ntk_kernel_operator import NTKKernelLinearOperator
from ntkcore.operators.ntk_operator import NTKLinearOperator

__all__ = [
    "FisherLinearOperator",
    "GaussNewtonLinearOperator",
    "JacobianLinearOperator",
    "NTKKernelLinearOperator",
    "NTKLinearOperator",
]
