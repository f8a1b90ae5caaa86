"""Per-vector cost of Jᵀu and the NTK matvec (forward-pass equivalents, CPU time).

A short check of the CPU pullback loop in ``Linearization.vjp`` (see RESULTS.md):

    taskset -c 0,1 python benchmarks/vjp_loop_check.py
"""

from __future__ import annotations

import time

import torch

from ntkcore import Linearization, zoo


def main() -> None:
    torch.set_num_threads(1)
    cases = [
        ("mlp", zoo.create("mlp", in_features=784, out_features=10, width=512, depth=2),
         torch.randn(256, 784)),
        ("preresnet20", zoo.create("preresnet20"), torch.randn(64, 3, 32, 32)),
    ]  # fmt: skip
    print("| model | k | Jᵀu fwd/vector | NTK matvec fwd/vector |")
    print("|---|---:|---:|---:|")
    for name, model, x in cases:
        model.eval()
        lin = Linearization(model)

        def forward(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        forward()
        t0 = time.process_time()
        for _ in range(5):
            forward()
        t_fwd = (time.process_time() - t0) / 5
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
