"""FisherLinearOperator against a dense float64 Jᵀ Λ J / n built from jacrev Jacobians."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkcore import Linearization
from ntkcore.operators import FisherLinearOperator


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    params = dict(net.named_parameters())
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    jac = torch.cat([jac[k].reshape(9, 4, -1) for k in params], dim=-1)  # shape: (n, o, p)
    return net, x, jac


@pytest.mark.parametrize("likelihood", ["gaussian", "categorical"])
def test_fisher_operator_matches_dense(likelihood: str) -> None:
    net, x, jac = _setup()
    if likelihood == "gaussian":
        lam = torch.eye(4, dtype=torch.float64).expand(9, 4, 4)
    else:
        pi = torch.softmax(net(x), -1).detach()
        lam = torch.diag_embed(pi) - pi.unsqueeze(-1) * pi.unsqueeze(-2)
    dense = torch.einsum("nap,nab,nbq->pq", jac, lam, jac) / 9
    op = FisherLinearOperator(x, linearization=Linearization(net), likelihood=likelihood)
    v = torch.randn(op.shape[-1], 3, dtype=torch.float64)
    assert op.shape == dense.shape
    torch.testing.assert_close(op @ v, dense @ v, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(op.mT @ v, dense.mT @ v, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-8, atol=1e-12)


def test_fisher_operator_rejects_bad_options() -> None:
    net, x, _ = _setup()
    lin = Linearization(net)
    with pytest.raises(ValueError, match="likelihood"):
        FisherLinearOperator(x, linearization=lin, likelihood="poisson")
    with pytest.raises(ValueError, match="method"):
        FisherLinearOperator(x, linearization=lin, method="magic")
