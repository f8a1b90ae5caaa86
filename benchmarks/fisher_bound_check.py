"""Per-vector cost of ``fisher_vp(method="fd")`` one-shot vs on ``lin.at(x)`` (CPU time).

A short check of the JacobianAt path of ``fisher_vp`` (see RESULTS.md, "Fisher-vector
products"): the cached forward pass at θ and pullback replace the pass every one-shot call
starts with, which matters for CG in weight space (one vector per iteration):

    taskset -c 0,1 python benchmarks/fisher_bound_check.py
"""

from __future__ import annotations

import torch
from check_cases import cases

from ntkcore import Linearization
from ntkcore.experiments.clock import forward_seconds, time_call
from ntkcore.fisher import fisher_vp


def main() -> None:
    torch.set_num_threads(1)
    for name, model, x in cases(resnet_batch=32):
        lin = Linearization(model)
        t_fwd = forward_seconds(model, x, repeats=5, clock="cpu").mean
        at_x = lin.at(x, cache="pullback")
        for k in (1, 8):
            v = torch.randn(k, lin.num_params)
            fns = {
                "one-shot": lambda v=v, lin=lin, x=x: fisher_vp(
                    lin, x, v, likelihood="categorical"
                ),
                "lin.at(x)": lambda v=v, at_x=at_x: fisher_vp(
                    at_x, None, v, likelihood="categorical"
                ),
            }
            cost = {}
            for label, fn in fns.items():  # CPU time, mean of 3 after a warm-up
                timing = time_call(fn, device="cpu", repeats=3, clock="cpu")
                cost[label] = timing.mean / k / t_fwd
            a, b = fns["one-shot"](), fns["lin.at(x)"]()
            diff = float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())
            print(
                f"{name} k={k}: fd forward passes per vector, one-shot {cost['one-shot']:.2f}"
                f" | lin.at(x) {cost['lin.at(x)']:.2f} (max relative difference {diff:.1e})"
            )


if __name__ == "__main__":
    main()
