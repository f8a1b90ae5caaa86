"""CUDA correctness of the engine: the same products and posteriors on the GPU as on the CPU.

Skipped on machines without CUDA (CI has none); `benchmarks/gpu_check.sh` runs this file on
a GPU machine. References are float64 CPU computations with dense `torch.func.jacrev`
Jacobians; tolerances: 1e-10 relative in float64, 1e-4 in float32.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import ntkcore
from ntkcore.kinks import ActivationPattern

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    )
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.double()


def _dense_jacobian(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = dict(net.named_parameters())
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    n, o = x.shape[0], 3
    return torch.cat([jac[k].reshape(n, o, -1) for k in params], dim=-1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() - b.cpu()).norm() / b.norm())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_products_match_cpu_dense(dtype: torch.dtype, tol: float) -> None:
    net = _cnn().eval()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    jac = _dense_jacobian(net, x)  # shape: (n, o, p)
    lin = ntkcore.Linearization(net.to("cuda", dtype), chunk_size=4)
    assert lin.device.type == "cuda"
    xc = x.to("cuda", dtype)
    v = torch.randn(5, lin.num_params, dtype=torch.float64)
    u = torch.randn(5, 6, 3, dtype=torch.float64)
    assert _rel(lin.jvp(xc, v.to("cuda", dtype)), torch.einsum("nop,kp->kno", jac, v)) < tol
    assert _rel(lin.vjp(xc, u.to("cuda", dtype)), torch.einsum("nop,kno->kp", jac, u)) < tol
    assert _rel(lin.jacobian(xc), jac) < tol
    flat = jac.reshape(18, -1)
    assert _rel(lin.ntk(xc), flat @ flat.T) < tol
    assert _rel(lin.ntk_diag(xc), jac.square().sum(-1)) < tol


@pytest.mark.parametrize("strategy", ["dense", "function", "parameter"])
def test_adapt_on_cuda_matches_cpu(strategy: str) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    x, y, xs = torch.randn(40, 2), torch.randn(40, 2), torch.randn(7, 2)
    x, y, xs = x.double(), y.double(), xs.double()
    kw = dict(noise_variance=0.05, prior_variance=0.5, strategy=strategy, rank=256)
    cpu = ntkcore.adapt(net, x, y, **kw).predict(xs)
    gpu_post = ntkcore.adapt(net.to("cuda"), x.cuda(), y.cuda(), **kw)
    gpu = gpu_post.predict(xs.cuda())
    assert gpu.mean.device.type == "cuda"
    assert _rel(gpu.mean, cpu.mean) < 1e-8
    assert _rel(gpu.variance, cpu.variance) < 1e-8
    assert gpu_post.diagnostics["device"].startswith("cuda")


@pytest.mark.parametrize("cache", ["auto", "pullback", "linearized"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_jacobian_at_matches_cpu_dense(cache: str, dtype: torch.dtype, tol: float) -> None:
    """Cached products on the GPU (vectors batched with vmap in budget-sized groups)."""
    net = _cnn().eval()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    jac = _dense_jacobian(net, x)  # shape: (n, o, p)
    lin = ntkcore.Linearization(net.to("cuda", dtype), chunk_size=4)
    ops = lin.at(x.to("cuda", dtype), cache=cache)
    assert ops.cache == ("pullback" if cache == "auto" else cache)
    v = torch.randn(5, lin.num_params, dtype=torch.float64)
    u = torch.randn(5, 6, 3, dtype=torch.float64)
    for _ in range(2):
        assert _rel(ops.jvp(v.to("cuda", dtype)), torch.einsum("nop,kp->kno", jac, v)) < tol
        assert _rel(ops.vjp(u.to("cuda", dtype)), torch.einsum("nop,kno->kp", jac, u)) < tol
        assert _rel(ops.jvp(v[0].to("cuda", dtype)), torch.einsum("nop,p->no", jac, v[0])) < tol


@pytest.mark.parametrize("method", ["exact", "fd"])
def test_fisher_products_bound_to_x_match_cpu(method: str) -> None:
    """fisher_vp on lin.at(x) on the GPU against the dense float64 CPU Gauss–Newton."""
    net = _cnn().eval()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    jac = _dense_jacobian(net, x)  # shape: (n, o, p)
    lin = ntkcore.Linearization(net.to("cuda"))
    v = torch.randn(3, lin.num_params, dtype=torch.float64)
    out = ntkcore.fisher_vp(lin.at(x.cuda()), None, v.cuda(), method=method)
    expected = torch.einsum("nop,noq,kq->kp", jac, jac, v) / x.shape[0]  # gaussian: Λ = I
    assert _rel(out, expected) < (1e-5 if method == "fd" else 1e-10)


@pytest.mark.parametrize("central", [False, True])
def test_fd_with_frozen_kinks_in_float32_on_cuda(central: bool) -> None:
    """float32 fd on the GPU (pattern recorded and replayed on CUDA tensors, max-pooling
    included) against the dense float64 CPU Gauss–Newton; replay at θ is bitwise."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 3),
    ).double().eval()  # fmt: skip
    x = torch.randn(32, 3, 8, 8, dtype=torch.float64)
    jac = _dense_jacobian(net, x)
    v = torch.randn(2, jac.shape[-1], dtype=torch.float64)
    expected = torch.einsum("nop,noq,kq->kp", jac, jac, v) / x.shape[0]
    net32 = net.float().cuda()
    x32 = x.float().cuda()
    pattern = ActivationPattern()
    with torch.no_grad():
        with pattern.recording():
            plain = net32(x32)
        with pattern.replaying():
            replayed = net32(x32)
    assert pattern.records[0].pieces[0].is_cuda and torch.equal(replayed, plain)
    out = ntkcore.fisher_vp(net32, x32, v.float().cuda(), central=central)
    assert _rel(out, expected) < (1e-4 if central else 1e-3)
