"""Memory budgets: how much memory a device has free, and how many bytes the engine
lets one batched product or one cache hold there."""

from __future__ import annotations

import os

import torch

__all__ = ["available_memory", "cache_budget", "product_budget"]

# Saved activations (bytes) that one batched product may keep alive on the CPU, as
# k vectors × points per chunk × activation bytes per point. Measured with
# benchmarks/products.py (1 thread): PreResNet-20 (1.45 MiB per point) costs 2.2 forward
# passes per vector for J v at k × chunk ≈ 128 (186 MiB) and 6.9 unchunked at
# k × n = 32 × 64 (2.9 GiB); the MLP 784-512-512-10 (4 KiB per point) is fastest
# unchunked (32 MiB at k × n = 32 × 256) and slower when chunked (re-reading the k·p
# tangent weights per chunk).
CPU_PRODUCT_BYTES = 192 * 2**20


def available_memory(device: torch.device | str) -> int:
    """Bytes free on ``device``: ``cudaMemGetInfo`` on CUDA, ``MemAvailable`` otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def product_budget(device: torch.device | str) -> int:
    """Bytes of saved activations one batched Jacobian product may hold at once.

    CPU: :data:`CPU_PRODUCT_BYTES` (larger working sets run slower per vector, see its
    comment). Accelerators: an eighth of the free memory (large batches run faster).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return CPU_PRODUCT_BYTES
    return max(1, available_memory(device) // 8)


def cache_budget(device: torch.device | str) -> int:
    """Bytes a cache of forward passes (:class:`ntkcore.JacobianAt`) may hold: a quarter
    of the free memory."""
    return max(1, available_memory(device) // 4)
