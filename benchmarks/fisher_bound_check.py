"""Per-vector cost of ``fisher_vp(method="fd")`` one-shot vs on ``lin.at(x)`` (CPU time).

A short check of the JacobianAt path of ``fisher_vp`` (see RESULTS.md, "Fisher-vector
products"): the cached forward pass at θ and pullback replace the pass every one-shot call
starts with, which matters for CG in weight space (one vector per iteration):

    taskset -c 0,1 python benchmarks/fisher_bound_check.py
"""

from __future__ import annotations

import time

import torch
from check_cases import cases, forward_seconds

from ntkcore import Linearization
from ntkcore.fisher import fisher_vp


def main() -> None:
    torch.set_num_threads(1)
    for name, model, x in cases(resnet_batch=32):
        lin = Linearization(model)
        t_fwd = forward_seconds(model, x)
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
            for label, fn in fns.items():
                fn()
                t0 = time.process_time()
                for _ in range(3):
                    fn()
                cost[label] = (time.process_time() - t0) / 3 / k / t_fwd
            a, b = fns["one-shot"](), fns["lin.at(x)"]()
            diff = float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())
            print(
                f"{name} k={k}: fd forward passes per vector, one-shot {cost['one-shot']:.2f}"
                f" | lin.at(x) {cost['lin.at(x)']:.2f} (max relative difference {diff:.1e})"
            )


if __name__ == "__main__":
    main()
