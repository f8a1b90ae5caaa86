"""Per-vector cost of Jᵀu and the NTK matvec (forward-pass equivalents, CPU time).

A short check of the CPU pullback loop in ``Linearization.vjp`` (see RESULTS.md):

    taskset -c 0,1 python benchmarks/vjp_loop_check.py
"""

from __future__ import annotations

import time

import torch
from check_cases import cases, forward_seconds

from ntkcore import Linearization


def main() -> None:
    torch.set_num_threads(1)
    print("| model | k | Jᵀu fwd/vector | NTK matvec fwd/vector |")
    print("|---|---:|---:|---:|")
    for name, model, x in cases(resnet_batch=64):
        lin = Linearization(model)
        t_fwd = forward_seconds(model, x)
        o = lin.output_dim(x)
        lin.ntk_vp(x, torch.randn(2, x.shape[0], o))  # warm-up
        for k in (1, 8, 32):
            u = torch.randn(k, x.shape[0], o)
            t0 = time.process_time()
            lin.vjp(x, u)
            t_vjp = (time.process_time() - t0) / k
            t0 = time.process_time()
            lin.ntk_vp(x, u)
            t_ntk = (time.process_time() - t0) / k
            print(f"| {name} | {k} | {t_vjp / t_fwd:.2f} | {t_ntk / t_fwd:.2f} |")


if __name__ == "__main__":
    main()
