"""The Fisher information F (p × p) of a likelihood as a ``linear_operator.LinearOperator``."""

from __future__ import annotations

import torch
from torch import Tensor

from ntkcore.fisher import METHODS, fisher_vp
from ntkcore.likelihoods import Likelihood
from ntkcore.likelihoods import likelihood as make_likelihood
from ntkcore.linearization import Linearization
from ntkcore.operators._base import LinearizationOperator


class FisherLinearOperator(LinearizationOperator):
    r"""F = (1/n) Σᵢ Jᵢᵀ Λᵢ Jᵢ, shape (p, p), applied through :func:`ntkcore.fisher_vp`.

    For the Gaussian likelihood F = JᵀJ / n (Section 3.2: J Jᵀ ∝ F in the paper's
    convention). ``method="fd"`` uses the finite-difference KL gradient of Eq. 5, so the
    operator is then symmetric only to that approximation's accuracy.

    Parameters
    ----------
    x : Tensor
        Inputs, shape (n, *input_shape).
    linearization : Linearization
    likelihood : {"gaussian", "categorical", "heteroscedastic"} or Likelihood
        Resolved by :func:`ntkcore.likelihoods.likelihood` (names validated here).
    method : {"fd", "exact", "autograd"}
    """

    def __init__(
        self,
        x: Tensor,
        *,
        linearization: Linearization,
        likelihood: str | Likelihood = "gaussian",
        method: str = "exact",
    ) -> None:
        lik = make_likelihood(likelihood)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        super().__init__(x, linearization=linearization, likelihood=lik, method=method)
        self.x = x
        self.linearization = linearization
        self.likelihood = lik
        self.method = method

    def _size(self) -> torch.Size:
        p = self.linearization.num_params
        return torch.Size((p, p))

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        r = rhs.unsqueeze(-1) if vector else rhs
        out = fisher_vp(
            self.linearization, self.x, r.mT, likelihood=self.likelihood, method=self.method
        ).mT  # shape: (p, k)
        return out.squeeze(-1) if vector else out

    def _diagonal(self) -> Tensor:
        """Exact diagonal (1/n) Σᵢ diag(Jᵢᵀ Λᵢ Jᵢ) from per-sample Jacobians, shape (p,)."""
        lin = self.linearization
        total = torch.zeros(lin.num_params, dtype=self.dtype, device=self.device)
        for rows, block in lin.jacobian_blocks(self.x):  # block shape: (c, o, p)
            lam = self.likelihood.fisher(lin(self.x[rows]))  # shape: (c, o, o)
            total += torch.einsum("cap,cab,cbp->p", block, lam, block)
        return total / self.x.shape[0]

    def _t_matmul(self, rhs: Tensor) -> Tensor:
        return self._matmul(rhs)

    def _transpose_nonbatch(self) -> FisherLinearOperator:
        return self
