"""Fisher-vector products: cost and accuracy of fd / exact / autograd (Figure 2, right).

For each network on a batch of n random 32x32 inputs (float32, eval mode, BatchNorm
statistics calibrated on random batches so the deep networks see normalized activations),
this times :func:`ntkcore.fisher.fisher_vp` for k vectors at once with

* ``fd``        the finite-difference KL gradient of Eq. 5 (default automatic step),
* ``fd-central`` the same with central differences,
* ``exact``     Jᵀ Λ (J v) by forward-mode then reverse-mode products,
* ``autograd``  the double-backward Hessian of the detached KL (the 2021 reference),

and reports the cost *per vector* in seconds and in forward-pass equivalents (time of the
method divided by k and by the time of one plain ``torch.no_grad`` forward pass of the
network on the same batch), the ratios autograd/fd and exact/fd, and the relative error
``max_j ‖F̂ v_j − F v_j‖ / ‖F v_j‖`` of each method against a reference: ``exact`` on a
float64 copy of the network (``--reference float64``, the default) or float32 ``exact``
(``--reference exact32``). The likelihood defaults to ``categorical`` (CIFAR-10 logits).

On CUDA the benchmark runs in full float32 (TF32 off for matmuls and convolutions), so
the methods are compared at one precision; ``fisher_vp(method="fd")`` turns TF32 off for
its own passes in any case.

Timing: median of r runs after a warm-up, CUDA-synchronized. ``--clock cpu`` measures the
CPU time of this process instead of wall time, which stays meaningful on a machine shared
with other jobs (use it with ``--threads 1``).

Usage::

    python benchmarks/fisher.py --quick                       # CPU, a few minutes
    python benchmarks/fisher.py --device cuda                 # one GPU, batch 256, < 2 min
    python benchmarks/fisher.py --models preresnet20,wrn16-4 --batch 64 --vectors 4
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ntkcore import zoo
from ntkcore.fisher import default_eps, fisher_vp
from ntkcore.linearization import Linearization

MODELS = ("mlp", "alexnet", "preresnet20", "preresnet56", "preresnet110", "wrn16-4")
METHODS = ("fd", "fd-central", "exact", "autograd")
NUM_CLASSES = 10
SWEEP = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # multiples of the default step for --sweep


@dataclass
class Row:
    model: str
    params: int
    batch: int
    vectors: int
    forward_s: float
    fd_s: float
    fd_central_s: float
    exact_s: float
    autograd_s: float
    fd_fwd: float
    fd_central_fwd: float
    exact_fwd: float
    autograd_fwd: float
    autograd_over_fd: float
    exact_over_fd: float
    eps: float
    err_fd: float
    err_fd_central: float
    err_exact: float
    err_autograd: float
    reference: str
    sweep_forward: tuple[float, ...] = ()
    sweep_central: tuple[float, ...] = ()


# --------------------------------------------------------------------------- models
def build(name: str, device: torch.device, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A freshly initialized zoo network (seeded) and its per-sample input shape."""
    torch.manual_seed(seed)
    if name == "mlp":
        # a 4-hidden-layer tanh MLP on flattened 32x32x3 images, ~1M parameters
        model = zoo.create(
            "mlp", in_features=3 * 32 * 32, out_features=NUM_CLASSES, width=256, depth=4
        )
        shape: tuple[int, ...] = (3 * 32 * 32,)
    elif name == "alexnet":
        model = zoo.create("alexnet", num_classes=NUM_CLASSES)
        shape = (3, 32, 32)
    else:
        model = zoo.create(name, num_classes=NUM_CLASSES, in_channels=3, in_size=32)
        shape = (3, 32, 32)
    return model.to(device), shape


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, shape: tuple[int, ...], batch: int, seed: int) -> None:
    """Set BatchNorm running statistics to the averages over 4 random batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for _ in range(4):
        model(torch.randn((batch, *shape), generator=g).to(device))
    model.eval()


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int, clock: str) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if clock == "cpu":
            t0 = time.process_time()
            fn()
            _sync(device)
            times.append(time.process_time() - t0)
        else:
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_err(a: Tensor, ref: Tensor) -> float:
    a, ref = a.double(), ref.double()
    return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


# --------------------------------------------------------------------------- one model
def run_model(name: str, args: argparse.Namespace, device: torch.device) -> Row:
    model, shape = build(name, device, args.seed)
    calibrate_batchnorm(model, shape, args.batch, args.seed)
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(args.seed + 2)
    x = torch.randn((args.batch, *shape), generator=g).to(device)
    lin = Linearization(model)
    p = lin.num_params
    v = torch.randn(args.vectors, p, generator=g).to(device)
    lik = args.likelihood

    def forward() -> Tensor:
        with torch.no_grad():
            return model(x)

    calls: dict[str, Callable[[], Tensor]] = {
        "fd": lambda: fisher_vp(lin, x, v, likelihood=lik, method="fd"),
        "fd-central": lambda: fisher_vp(lin, x, v, likelihood=lik, method="fd", central=True),
        "exact": lambda: fisher_vp(lin, x, v, likelihood=lik, method="exact"),
        "autograd": lambda: fisher_vp(lin, x, v, likelihood=lik, method="autograd"),
    }
    t_fwd = measure(forward, device, max(args.repeats, 5), args.clock)
    seconds = {
        m: measure(fn, device, args.repeats, args.clock) / args.vectors for m, fn in calls.items()
    }
    results = {m: fn() for m, fn in calls.items()}

    if args.reference == "float64":
        model64 = copy.deepcopy(model).double()
        # chunks of 64 points bound the memory of the float64 products
        ref = fisher_vp(
            Linearization(model64, chunk_size=64),
            x.double(),
            v.double(),
            likelihood=lik,
            method="exact",
        )
        del model64
    else:
        ref = results["exact"]
    theta_norm = float(lin.parameter_vector().double().norm())
    sweeps: dict[bool, tuple[float, ...]] = {False: (), True: ()}
    if args.sweep:
        for central in (False, True):
            base = default_eps(theta_norm, lin.dtype, central)
            sweeps[central] = tuple(
                rel_err(fisher_vp(lin, x, v, likelihood=lik, eps=c * base, central=central), ref)
                for c in SWEEP
            )
    row = Row(
        model=name,
        params=p,
        batch=args.batch,
        vectors=args.vectors,
        forward_s=t_fwd,
        fd_s=seconds["fd"],
        fd_central_s=seconds["fd-central"],
        exact_s=seconds["exact"],
        autograd_s=seconds["autograd"],
        fd_fwd=seconds["fd"] / t_fwd,
        fd_central_fwd=seconds["fd-central"] / t_fwd,
        exact_fwd=seconds["exact"] / t_fwd,
        autograd_fwd=seconds["autograd"] / t_fwd,
        autograd_over_fd=seconds["autograd"] / seconds["fd"],
        exact_over_fd=seconds["exact"] / seconds["fd"],
        eps=default_eps(theta_norm, lin.dtype),
        err_fd=rel_err(results["fd"], ref),
        err_fd_central=rel_err(results["fd-central"], ref),
        err_exact=rel_err(results["exact"], ref),
        err_autograd=rel_err(results["autograd"], ref),
        reference=args.reference,
        sweep_forward=sweeps[False],
        sweep_central=sweeps[True],
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------- reporting
def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model_name = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model_name}, {torch.get_num_threads()} threads"


def markdown(rows: list[Row]) -> str:
    head = (
        "| model | p | per-vector s: fd / fd-central / exact / autograd "
        "| fwd-equiv: fd / fd-central / exact / autograd | autograd/fd | exact/fd "
        "| rel. error: fd / fd-central / exact / autograd |\n"
        "|---|---:|---|---|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r.model} | {r.params:,} "
            f"| {r.fd_s:.3g} / {r.fd_central_s:.3g} / {r.exact_s:.3g} / {r.autograd_s:.3g} "
            f"| {r.fd_fwd:.2f} / {r.fd_central_fwd:.2f} / {r.exact_fwd:.2f} / "
            f"{r.autograd_fwd:.2f} "
            f"| {r.autograd_over_fd:.1f}x | {r.exact_over_fd:.2f}x "
            f"| {r.err_fd:.1e} / {r.err_fd_central:.1e} / {r.err_exact:.1e} / "
            f"{r.err_autograd:.1e} |"
        )
    return head + "\n".join(lines) + "\n"


def sweep_markdown(rows: list[Row]) -> str:
    """Relative error of fd against the reference for multiples of the default step."""
    cols = " | ".join(f"{c:g}ε" for c in SWEEP)
    out = [f"| model | differences | {cols} |", "|---|---|" + "---:|" * len(SWEEP)]
    for r in rows:
        for label, errs in (("forward", r.sweep_forward), ("central", r.sweep_central)):
            out.append(f"| {r.model} | {label} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="data points n (default 256 on cuda, 32 on cpu, 8 with --quick)",
    )
    parser.add_argument(
        "--vectors", type=int, default=None, help="vectors k per call (default 8; 2 with --quick)"
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated zoo names from {', '.join(MODELS)}",
    )
    parser.add_argument("--likelihood", default="categorical", choices=["gaussian", "categorical"])
    parser.add_argument(
        "--reference",
        default="float64",
        choices=["float64", "exact32"],
        help="reference for the errors: float64 exact, or float32 exact",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per method (median; default 3, 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU run")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also report the fd error for multiples of the default step",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="output stem for .csv and .md (default benchmarks/results/fisher-<device>)",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda requested but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.batch is None:
        args.batch = 8 if args.quick else (256 if device.type == "cuda" else 32)
    if args.vectors is None:
        args.vectors = 2 if args.quick else 8
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.batch < 1 or args.vectors < 1 or args.repeats < 1:
        parser.error("--batch, --vectors and --repeats must be positive")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Fisher-vector products on {machine(device)}, torch {torch.__version__}, {stamp}")
    print(
        f"# batch {args.batch}, {args.vectors} vectors, likelihood {args.likelihood}, "
        f"float32, reference {args.reference}, clock {args.clock}",
        flush=True,
    )
    rows = []
    for name in names:
        t0 = time.perf_counter()
        row = run_model(name, args, device)
        rows.append(row)
        print(
            f"{name:>13s}: p={row.params:,}  fwd {row.forward_s:.3g}s  "
            f"fd {row.fd_fwd:.2f}  central {row.fd_central_fwd:.2f}  exact {row.exact_fwd:.2f}"
            f"  autograd {row.autograd_fwd:.2f} fwd-equiv/vector | err fd {row.err_fd:.1e} "
            f"central {row.err_fd_central:.1e} exact {row.err_exact:.1e} autograd "
            f"{row.err_autograd:.1e}  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    table = markdown(rows)
    if args.sweep:
        table += "\nfd error against the reference for multiples of the default step ε:\n\n"
        table += sweep_markdown(rows)
    print()
    print(table)

    stem = (
        Path(args.out)
        if args.out
        else (Path(__file__).resolve().parent / "results" / f"fisher-{device.type}")
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    k: (" ".join(f"{e:.3e}" for e in val) if isinstance(val, tuple) else val)
                    for k, val in asdict(r).items()
                }
            )
    header = (
        f"Machine: {machine(device)}; torch {torch.__version__}; {stamp}\n\n"
        f"Batch {args.batch}, {args.vectors} vectors per call, likelihood "
        f"{args.likelihood}, float32, errors against {args.reference} exact.\n\n"
    )
    stem.with_suffix(".md").write_text(header + table)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
