"""Stochastic Lanczos quadrature for log-determinants of shifted PSD systems."""

from __future__ import annotations

from collections.abc import Callable

import torch
from linear_operator.utils.lanczos import lanczos_tridiag
from torch import Tensor


def logdet_slq(
    matmul: Callable[[Tensor], Tensor],
    dim: int,
    *,
    num_probes: int = 16,
    num_iter: int = 40,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    r"""Estimate log|S| for symmetric positive definite S with Rademacher probes.

    log|S| = tr(log S) ≈ (d / m) Σ_z Σ_j τ_{zj}² log θ_{zj}, where θ, τ are the Ritz
    values and first components of the Ritz vectors of the Lanczos tridiagonalization
    started at z / ||z|| (Ubaru, Chen & Saad, 2017). Uses ``linear_operator``'s Lanczos.

    Returns
    -------
    estimate : float
    standard_error : float
        Of the mean over probes.
    """
    z = torch.randint(0, 2, (dim, num_probes), generator=generator, dtype=torch.int64)
    z = (2 * z - 1).to(dtype=dtype, device=device)
    _, t_mat = lanczos_tridiag(
        matmul,
        max_iter=min(num_iter, dim),
        dtype=dtype,
        device=device,
        matrix_shape=torch.Size((dim, dim)),
        init_vecs=z,
    )
    # t_mat shape: (num_probes, k, k)
    evals, evecs = torch.linalg.eigh(t_mat.to(torch.float64))
    evals = evals.clamp_min(torch.finfo(torch.float64).tiny)
    per_probe = dim * (evecs[..., 0, :].square() * evals.log()).sum(-1)  # shape: (num_probes,)
    est = float(per_probe.mean())
    se = float(per_probe.std() / num_probes**0.5) if num_probes > 1 else float("nan")
    return est, se
