"""Fisher-vector products: cost and accuracy of fd / exact / autograd (Figure 2, right).

For each network on a batch of n random 32x32 inputs (float32, eval mode, BatchNorm
statistics calibrated on random batches so the deep networks see normalized activations),
this times :func:`ntkcore.fisher.fisher_vp` for k vectors at once with

* ``fd``              the finite-difference KL gradient of Eq. 5 (default step rule;
  the perturbed passes replay the activation pattern at θ, ``kinks="frozen"``),
* ``fd-central``      the same with (compensated) central differences,
* ``fd-live``, ``fd-central-live``  both with ``kinks="live"`` (every pass decides its
  own ReLU / max-pool pattern, as the 2021 reference did) at the live-kink step rule,
* ``fd-auto``         forward differences, step chosen per call (``eps="auto"``,
  :func:`ntkcore.fisher.calibrate_eps`; the calibration is included in the time),
* ``fd-central-auto`` central differences with ``eps="auto"``,
* ``exact``           Jᵀ Λ (J v) by forward-mode then reverse-mode products,
* ``autograd``        the double-backward Hessian of the detached KL (the 2021 reference),

and reports the cost *per vector* in seconds and in forward-pass equivalents (time of the
method divided by k and by the time of one plain ``torch.no_grad`` forward pass of the
network on the same batch), the ratios autograd/fd and exact/fd, and the relative error
``max_j ‖F̂ v_j − F v_j‖ / ‖F v_j‖`` of each method against float32 ``exact`` (the goal's
reference: issue 3 asks for fd within 1e-3 of it) and, unless ``--reference exact32``,
against ``exact`` on a float64 copy of the network. The likelihood defaults to
``categorical`` (CIFAR-10 logits).

On CUDA the benchmark runs in full float32 (TF32 off for matmuls and convolutions), so
the methods are compared at one precision; ``fisher_vp(method="fd")`` turns TF32 off for
its own passes in any case.

The networks, inputs, methods and clocks are ``ntkcore.experiments.fisher_cost`` and
``ntkcore.experiments.clock`` (shared with the library's ``fisher-products`` experiment and
the app's Timing page); this script adds the step-size diagnostics and the reports.

Timing: median of r runs after a warm-up, CUDA-synchronized. ``--clock cpu`` measures the
CPU time of this process instead of wall time, which stays meaningful on a machine shared
with other jobs (use it with ``--threads 1``).

Usage::

    python benchmarks/fisher.py --quick                       # CPU, a few minutes
    python benchmarks/fisher.py --device cuda                 # one GPU, batch 256, < 2 min
    python benchmarks/fisher.py --models preresnet20,wrn16-4 --batch 64 --vectors 4
    python benchmarks/fisher.py --quick --likelihood gaussian --reference exact32
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ntkcore.experiments.clock import forward_seconds
from ntkcore.experiments.fisher_cost import (
    FISHER_METHODS,
    fisher_case,
    fisher_reference,
    relative_error,
    time_fisher_method,
)
from ntkcore.experiments.machine import (
    describe_machine,
    device_label,
    git_commit,
    write_json,
)
from ntkcore.fisher import calibrate_eps, default_eps, fisher_vp

MODELS = ("mlp", "alexnet", "preresnet20", "preresnet56", "preresnet110", "wrn16-4")
METHODS = FISHER_METHODS
SWEEP = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # multiples of the forward rule, --sweep


@dataclass
class Row:
    model: str
    params: int
    batch: int
    vectors: int
    likelihood: str
    forward_s: float
    seconds: dict[str, float]  # per vector, by method
    errors32: dict[str, float]  # against float32 exact
    errors64: dict[str, float]  # against float64 exact (empty with --reference exact32)
    eps: float  # the forward-difference rule
    eps_central: float  # the central-difference rule
    eps_auto: float  # calibrated, forward
    eps_central_auto: float  # calibrated, central
    sweep_forward: tuple[float, ...] = ()
    sweep_central: tuple[float, ...] = ()

    def fwd(self, method: str) -> float:
        """Per-vector cost of ``method`` in forward-pass equivalents."""
        return self.seconds[method] / self.forward_s

    def flat(self) -> dict[str, object]:
        """One CSV record."""
        out: dict[str, object] = {
            k: getattr(self, k)
            for k in ("model", "params", "batch", "vectors", "likelihood", "forward_s")
        }
        for m in METHODS:
            out[f"{m}_s"] = self.seconds[m]
            out[f"{m}_fwd"] = self.fwd(m)
        for m in METHODS:
            out[f"err32_{m}"] = self.errors32[m]
            out[f"err64_{m}"] = self.errors64.get(m, float("nan"))
        for k in ("eps", "eps_central", "eps_auto", "eps_central_auto"):
            out[k] = getattr(self, k)
        out["sweep_forward"] = " ".join(f"{e:.3e}" for e in self.sweep_forward)
        out["sweep_central"] = " ".join(f"{e:.3e}" for e in self.sweep_central)
        return out


# --------------------------------------------------------------------------- one model
def run_model(name: str, args: argparse.Namespace, device: torch.device) -> Row:
    """Time every method on one network (``ntkcore.experiments.fisher_cost``) and add the
    step-size diagnostics: calibrated steps and, with ``--sweep``, the error per step."""
    case = fisher_case(
        name, batch=args.batch, vectors=args.vectors, device=device, seed=args.seed
    )
    lin, x, v, lik = case.lin, case.x, case.v, args.likelihood
    p = case.p
    t_fwd = forward_seconds(case.model, x, repeats=max(args.repeats, 5), clock=args.clock).median
    seconds: dict[str, float] = {}
    results: dict[str, Tensor] = {}
    for m in METHODS:
        timing, results[m] = time_fisher_method(
            case, m, likelihood=lik, repeats=args.repeats, clock=args.clock
        )
        seconds[m] = timing.median / args.vectors
    errors32 = {m: relative_error(out, results["exact"]) for m, out in results.items()}
    errors64: dict[str, float] = {}
    ref = results["exact"]
    if args.reference == "float64":
        ref = fisher_reference(case, likelihood=lik, float64=True)
        errors64 = {m: relative_error(out, ref) for m, out in results.items()}
    theta_norm = float(lin.parameter_vector().double().norm())
    probe = v[int(torch.argmax(v.double().norm(dim=-1)))]
    eps_auto = {
        c: calibrate_eps(lin, x, likelihood=lik, central=c, probe=probe).eps for c in (False, True)
    }
    sweeps: dict[bool, tuple[float, ...]] = {False: (), True: ()}
    if args.sweep:
        base = default_eps(theta_norm, lin.dtype)  # both sweeps on the forward rule's grid
        for central in (False, True):
            sweeps[central] = tuple(
                relative_error(
                    fisher_vp(lin, x, v, likelihood=lik, eps=c * base, central=central), ref
                )
                for c in SWEEP
            )
    row = Row(
        model=name,
        params=p,
        batch=args.batch,
        vectors=args.vectors,
        likelihood=lik,
        forward_s=t_fwd,
        seconds=seconds,
        errors32=errors32,
        errors64=errors64,
        eps=default_eps(theta_norm, lin.dtype),
        eps_central=default_eps(theta_norm, lin.dtype, central=True),
        eps_auto=eps_auto[False],
        eps_central_auto=eps_auto[True],
        sweep_forward=sweeps[False],
        sweep_central=sweeps[True],
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------- reporting
def machine(device: torch.device) -> str:
    """The device's label, e.g. ``NVIDIA H200 (cuda)`` or ``AMD EPYC (cpu, 1 thread)``."""
    return device_label(device)


def markdown(rows: list[Row]) -> str:
    """A cost table and an error table."""
    names = " / ".join(METHODS)
    out = [
        f"Cost per vector in forward-pass equivalents ({names}); ratios of seconds:",
        "",
        "| model | p | forward s | fwd-equiv per vector | autograd/fd | exact/fd |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        fe = " / ".join(f"{r.fwd(m):.2f}" for m in METHODS)
        out.append(
            f"| {r.model} | {r.params:,} | {r.forward_s:.3g} | {fe} "
            f"| {r.seconds['autograd'] / r.seconds['fd']:.1f}x "
            f"| {r.seconds['exact'] / r.seconds['fd']:.2f}x |"
        )
    fd_methods = ("fd", "fd-central", "fd-live", "fd-central-live", "fd-auto", "fd-central-auto")
    out += [
        "",
        "Relative error against float32 `exact` [against float64 `exact`]; steps ε of the "
        "rule (forward, central) and calibrated (forward, central):",
        "",
        "| model | " + " | ".join(fd_methods) + " | exact | autograd | ε rule | ε auto |",
        "|---|" + "---:|" * (len(fd_methods) + 2) + "---|---|",
    ]
    for r in rows:

        def cell(m: str, r: Row = r) -> str:
            e64 = f" [{r.errors64[m]:.1e}]" if m in r.errors64 else ""
            return f"{r.errors32[m]:.1e}{e64}"

        cells = [cell(m) for m in fd_methods]
        cells.append(f"[{r.errors64['exact']:.1e}]" if r.errors64 else "0")
        cells.append(cell("autograd"))
        out.append(
            f"| {r.model} | " + " | ".join(cells) + f" | {r.eps:.2e}, {r.eps_central:.2e} "
            f"| {r.eps_auto:.2e}, {r.eps_central_auto:.2e} |"
        )
    return "\n".join(out) + "\n"


def sweep_markdown(rows: list[Row]) -> str:
    """Relative error of fd against the reference for multiples of the forward-rule step."""
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
        help="errors against float32 exact always; float64 adds float64 exact (slow on CPU)",
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
        fe = " ".join(f"{m} {row.fwd(m):.2f}" for m in METHODS)
        errs = " ".join(f"{m} {row.errors32[m]:.1e}" for m in METHODS)
        print(
            f"{name:>13s}: p={row.params:,}  fwd {row.forward_s:.3g}s | fwd-equiv/vector: {fe}"
            f" | err vs exact32: {errs}  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    table = markdown(rows)
    if args.sweep:
        table += "\nfd error against the reference for multiples of the forward rule's step ε:\n\n"
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
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].flat()))
        writer.writeheader()
        for r in rows:
            writer.writerow(r.flat())
    header = (
        f"Machine: {machine(device)}; torch {torch.__version__}; {stamp}; "
        f"git commit {git_commit() or 'unknown'}\n\n"
        f"Batch {args.batch}, {args.vectors} vectors per call, likelihood "
        f"{args.likelihood}, float32, reference {args.reference}, clock {args.clock}.\n\n"
    )
    stem.with_suffix(".md").write_text(header + table)
    write_json(stem.with_suffix(".json"), [r.flat() for r in rows], meta=describe_machine(device))
    print(f"wrote {stem.with_suffix('.csv')}, {stem.with_suffix('.md')} and .json (machine, "
          "git commit)")
    return rows


if __name__ == "__main__":
    main()
