"""Per-vector cost of Jᵀu and the NTK matvec (forward-pass equivalents, CPU time).

A short check of the CPU pullback loop in ``Linearization.vjp`` (see RESULTS.md):

    taskset -c 0,1 python benchmarks/vjp_loop_check.py
"""

from __future__ import annotations

from functools import partial

import torch
from check_cases import cases

from ntkcore import Linearization
from ntkcore.experiments.clock import forward_seconds, time_call


def main() -> None:
    torch.set_num_threads(1)
    print("| model | k | Jᵀu fwd/vector | NTK matvec fwd/vector |")
    print("|---|---:|---:|---:|")
    for name, model, x in cases(resnet_batch=64):
        lin = Linearization(model)
        t_fwd = forward_seconds(model, x, repeats=5, clock="cpu").mean
        o = lin.output_dim(x)
        lin.ntk_vp(x, torch.randn(2, x.shape[0], o))  # warm-up
        for k in (1, 8, 32):
            u = torch.randn(k, x.shape[0], o)
            # one CPU-time call each (the warm-up above initializes both paths)
            once = {"device": "cpu", "repeats": 1, "clock": "cpu", "warmup": False}
            t_vjp = time_call(partial(lin.vjp, x, u), **once).best / k
            t_ntk = time_call(partial(lin.ntk_vp, x, u), **once).best / k
            print(f"| {name} | {k} | {t_vjp / t_fwd:.2f} | {t_ntk / t_fwd:.2f} |")


if __name__ == "__main__":
    main()
