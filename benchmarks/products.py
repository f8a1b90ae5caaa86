"""Per-vector cost of Jacobian products: ntkcore's engine vs the 2021 reference style.

For a network f(x; θ) on a batch x of n points, this measures, for k vectors at once,

* ``jvp``     J v      (v in R^p)          — ``Linearization.jvp``
* ``vjp``     Jᵀ u     (u in R^{n·o})      — ``Linearization.vjp``
* ``ntk_vp``  J (Jᵀ u) (the finite-NTK matrix-vector product of a CG iteration)

each twice: one-shot (``Linearization.jvp`` etc., a forward pass per call) and bound to
the fixed batch (``Linearization.at(x)``, a :class:`ntkcore.JacobianAt` that keeps the
forward pass and the traced tangent program across calls, as ``adapt``'s solvers use it;
its one-time setup is reported separately in forward-pass equivalents),

and reports the cost *per vector* in seconds and in forward-pass equivalents (the time
of one plain forward pass of the network on the same batch, ``torch.no_grad``, timed
right before and after each figure; the smaller of the two is used). Beside
each engine figure it times a reference-style implementation
(``ntkcore.experiments.reference.ReferenceProducts``), as the code
accompanying Maddox et al. (2021) did it: one vector (column) at a time in a Python loop,
Jᵀ u by one backward pass, and J v by the double-backward trick g(w) = Jᵀ w with
``create_graph=True``, then J v = ∂(g(w)·v)/∂w. The reference is given its best case:
the forward graph is built once per call and shared by the k vectors.

``--diagnose`` adds what-if variants that show where the engine's time goes: the same
``torch.func`` transforms without the engine's input checks; a pullback
(``torch.func.vjp``) and a linearized forward (``torch.func.linearize``) built once and
reused across calls (as a CG solver on fixed x could); and chunking over data.

Timing: best of r runs after a warm-up, CUDA-synchronized. ``--clock cpu`` measures the
CPU time of this process instead of wall time, which stays meaningful on a machine
shared with other jobs (use it with ``--threads 1``).

Usage::

    python benchmarks/products.py                      # CPU, float32, both models
    python benchmarks/products.py --quick              # smaller batch, k in {1, 8}
    python benchmarks/products.py --device cuda --diagnose
    python benchmarks/products.py --threads 1 --clock cpu   # on a busy machine
    python benchmarks/products.py --markdown           # tables for benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, linearize, vjp, vmap

from ntkcore import zoo
from ntkcore.experiments.clock import Timing, clock_function, synchronize, time_call
from ntkcore.experiments.machine import describe_machine
from ntkcore.experiments.reference import ReferenceProducts as ReferenceStyle
from ntkcore.linearization import Linearization

OPS = ("jvp", "vjp", "ntk_vp")


def timed(
    fn: Callable[[], object], device: torch.device, repeats: int, budget: float, clock: str
) -> Timing:
    """Best-of-r time of ``fn`` after one warm-up call (``ntkcore.experiments.clock.
    time_call``: CUDA-synchronized; stops once ``budget`` seconds are spent, after at least
    two timed runs). The minimum is reported: on a shared machine it is the least disturbed
    estimate of the intrinsic cost; the median is kept alongside."""
    return time_call(fn, device=device, repeats=repeats, clock=clock, budget=budget)


# --------------------------------------------------------------------------- what-ifs
class FuncProducts:
    """The engine's algorithm written directly with ``torch.func``, plus cached variants.

    Diagnostic only (``--diagnose``), built independently of the engine's internals:

    * ``jvp``/``vjp``/``ntk_vp`` — the same transforms as ``Linearization`` (``vmap`` of
      ``jvp``; ``vjp`` then ``vmap`` of the pullback) without input validation or
      chunking, to show the engine's bookkeeping overhead;
    * ``cached_vjp`` — the pullback closure of ``torch.func.vjp`` built once for this x
      and reused (a CG solver on fixed x could keep it), so Jᵀu costs no forward pass;
    * ``linearized_jvp`` — ``torch.func.linearize`` built once, so J v costs only the
      tangent pass.
    """

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.theta = {n: p.detach() for n, p in named}
        self.x = x

        def f(th: dict[str, Tensor]) -> Tensor:
            out = functional_call(model, th, (x,))
            return out.reshape(out.shape[0], -1)

        self.f = f
        _, self._pullback = vjp(f, self.theta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.fx chatter while tracing
            try:
                _, self._lin_jvp = linearize(f, self.theta)
                self.linearize_error = ""
            except Exception as err:  # noqa: BLE001 - reported, not hidden
                self._lin_jvp = None
                self.linearize_error = f"{type(err).__name__}: {err}"[:200]

    def _unflatten(self, v: Tensor) -> dict[str, Tensor]:
        parts = torch.split(v, self.numels, dim=-1)
        batch = v.shape[:-1]
        return {
            n: c.reshape((*batch, *s))
            for n, s, c in zip(self.names, self.shapes, parts, strict=True)
        }

    def _flatten(self, g: dict[str, Tensor], batch: tuple[int, ...]) -> Tensor:
        return torch.cat([g[n].reshape(*batch, -1) for n in self.names], dim=-1)

    def _map(self, fn: Callable, arg: object, batched: bool) -> object:
        return vmap(fn)(arg) if batched else fn(arg)

    def jvp(self, v: Tensor) -> Tensor:
        def one(t: dict[str, Tensor]) -> Tensor:
            return jvp(self.f, (self.theta,), (t,))[1]

        return self._map(one, self._unflatten(v), v.dim() == 2)

    def vjp(self, u: Tensor) -> Tensor:
        _, pullback = vjp(self.f, self.theta)
        (g,) = self._map(pullback, u, u.dim() == 3)
        return self._flatten(g, tuple(u.shape[:-2]))

    def ntk_vp(self, u: Tensor) -> Tensor:
        return self.jvp(self.vjp(u))

    def cached_vjp(self, u: Tensor) -> Tensor:
        (g,) = self._map(self._pullback, u, u.dim() == 3)
        return self._flatten(g, tuple(u.shape[:-2]))

    def linearized_jvp(self, v: Tensor) -> Tensor:
        if self._lin_jvp is None:
            raise RuntimeError(self.linearize_error)
        return self._map(self._lin_jvp, self._unflatten(v), v.dim() == 2)


# --------------------------------------------------------------------------- models
@dataclass
class Workload:
    name: str
    model: nn.Module
    x: Tensor
    description: str


def build_workloads(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list:
    g = torch.Generator().manual_seed(0)
    out: list[Workload] = []
    for name in args.models:
        torch.manual_seed(0)
        if name == "mlp":
            n = args.n_mlp
            model = zoo.create(
                "mlp", in_features=784, out_features=10, width=512, depth=2, activation="tanh"
            )
            x = torch.randn(n, 784, generator=g)
            desc = "MLP 784-512-512-10, tanh"
        elif name == "preresnet20":
            n = args.n_resnet
            model = zoo.create("preresnet20", num_classes=10)
            x = torch.randn(n, 3, 32, 32, generator=g)
            desc = "PreResNet-20, 10 classes, 3x32x32 inputs"
            # non-trivial BatchNorm statistics (eval mode uses them)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.2, 0.2, generator=g)
                        m.running_var.uniform_(0.5, 1.5, generator=g)
        else:
            raise ValueError(f"unknown model {name!r}; choose from mlp, preresnet20")
        model = model.to(device=device, dtype=dtype).eval()
        out.append(Workload(name, model, x.to(device=device, dtype=dtype), desc))
    return out


# --------------------------------------------------------------------------- run
@dataclass
class Row:
    model: str
    op: str
    k: int
    variant: str  # "engine", "reference", or a diagnostic variant
    seconds: float  # for all k vectors
    per_vector_s: float
    per_vector_fwd: float  # per_vector_s / forward_s
    repeats: int
    forward_s: float  # the forward-pass baseline timed next to this figure


@dataclass
class Report:
    machine: dict
    command: str
    forward_s: dict = field(default_factory=dict)
    num_params: dict = field(default_factory=dict)
    batch: dict = field(default_factory=dict)
    max_rel_err: dict = field(default_factory=dict)
    setup_fwd: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run(args: argparse.Namespace) -> Report:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # full float32 unless asked otherwise, so engine and reference agree to float32
        # rounding and the cross-check below is meaningful
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    info = describe_machine(device)
    info["clock"] = args.clock
    if device.type == "cuda":
        info["tf32"] = args.tf32
    report = Report(info, " ".join(["python", *sys.argv]))
    for wl in build_workloads(args, device, dtype):
        bench_workload(wl, args, device, dtype, report)
    return report


def bench_workload(
    wl: Workload, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, report: Report
) -> None:
    """Time every product and variant on one model; append rows to ``report``."""
    clock = args.clock
    lin = Linearization(wl.model, chunk_size=None)
    ref = ReferenceStyle(wl.model)
    x = wl.x
    n, p = x.shape[0], lin.num_params
    o = lin.output_dim(x)
    report.num_params[wl.name] = p
    report.batch[wl.name] = n

    def forward() -> Tensor:
        with torch.no_grad():
            return wl.model(x)

    t_fwd = timed(forward, device, max(10, args.repeats), args.budget, clock).best
    report.forward_s[wl.name] = t_fwd
    log(f"\n== {wl.name}: {wl.description}; p={p:,}, n={n}, o={o}, {args.dtype}, {device}")
    log(f"   one forward pass (no grad): {t_fwd * 1e3:.2f} ms ({args.clock} time)")

    # correctness cross-check of what is being timed
    gen = torch.Generator(device="cpu").manual_seed(1)
    V = torch.randn(2, p, generator=gen).to(device, dtype)
    U = torch.randn(2, n, o, generator=gen).to(device, dtype)
    errs = {
        "jvp": rel_err(lin.jvp(x, V), ref.jvp(x, V)),
        "vjp": rel_err(lin.vjp(x, U), ref.vjp(x, U)),
        "ntk_vp": rel_err(lin.ntk_vp(x, U), ref.ntk_vp(x, U)),
    }
    report.max_rel_err[wl.name] = errs
    log("   engine vs reference rel. error: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))

    now = clock_function(clock)
    t0 = now()
    at_x = lin.at(x)
    synchronize(device)
    report.setup_fwd[wl.name] = (now() - t0) / t_fwd
    report.cache[wl.name] = at_x.cache
    log(f"   lin.at(x): cache={at_x.cache!r}, setup {report.setup_fwd[wl.name]:.1f} forward passes")

    func = FuncProducts(wl.model, x) if args.diagnose else None
    if func is not None and func.linearize_error:
        log(f"   torch.func.linearize unavailable: {func.linearize_error}")
    chunk = args.diag_chunk or max(1, n // 4)
    chunked = Linearization(wl.model, chunk_size=chunk) if args.diagnose else None

    for k in args.ks:
        V = torch.randn(k, p, generator=gen).to(device, dtype)
        U = torch.randn(k, n, o, generator=gen).to(device, dtype)
        # k = 1 uses the unbatched call, as a CG iteration on one right-hand side would
        v1 = V[0] if k == 1 else V
        u1 = U[0] if k == 1 else U
        variants: dict[str, dict[str, Callable[[], object]]] = {
            "engine": {
                "jvp": lambda v=v1: lin.jvp(x, v),
                "vjp": lambda u=u1: lin.vjp(x, u),
                "ntk_vp": lambda u=u1: lin.ntk_vp(x, u),
            },
            "engine at(x)": {
                "jvp": lambda v=v1: at_x.jvp(v),
                "vjp": lambda u=u1: at_x.vjp(u),
                "ntk_vp": lambda u=u1: at_x.ntk_vp(u),
            },
            "reference": {
                "jvp": lambda V=V: ref.jvp(x, V),
                "vjp": lambda U=U: ref.vjp(x, U),
                "ntk_vp": lambda U=U: ref.ntk_vp(x, U),
            },
        }
        if func is not None:
            variants["torch.func, no checks"] = {
                "jvp": lambda v=v1: func.jvp(v),
                "vjp": lambda u=u1: func.vjp(u),
                "ntk_vp": lambda u=u1: func.ntk_vp(u),
            }
            variants["cached pullback"] = {
                "vjp": lambda u=u1: func.cached_vjp(u),
                "ntk_vp": lambda u=u1: func.jvp(func.cached_vjp(u)),
            }
            if not func.linearize_error:
                variants["cached pullback + linearize"] = {
                    "jvp": lambda v=v1: func.linearized_jvp(v),
                    "ntk_vp": lambda u=u1: func.linearized_jvp(func.cached_vjp(u)),
                }
        if chunked is not None:
            variants[f"engine chunk={chunked.chunk_size}"] = {
                "jvp": lambda v=v1: chunked.jvp(x, v),
                "vjp": lambda u=u1: chunked.vjp(x, u),
                "ntk_vp": lambda u=u1: chunked.ntk_vp(x, u),
            }
        for op in OPS:
            line = []
            for variant, fns in variants.items():
                if op not in fns:
                    continue
                # The forward baseline is re-timed around every figure and the ratio
                # taken to the smaller of the two adjacent timings: on a machine shared
                # with other jobs the speed drifts, and adjacent timings drift together.
                before = timed(forward, device, args.repeats, args.budget / 4, clock).best
                t = timed(fns[op], device, args.repeats, args.budget, clock)
                after = timed(forward, device, args.repeats, args.budget / 4, clock).best
                base = min(before, after)
                t_fwd = min(t_fwd, base)
                per = t.best / k
                row = Row(wl.name, op, k, variant, t.best, per, per / base, t.repeats, base)
                report.rows.append(row)
                line.append(f"{variant} {row.per_vector_fwd:.2f} fwd ({per * 1e3:.1f} ms)")
            log(f"   k={k:<3d} {op:<6s} per vector: " + " | ".join(line))
    report.forward_s[wl.name] = t_fwd


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- output
def _row(report: Report, model: str, op: str, k: int, variant: str) -> Row | None:
    for r in report.rows:
        if (r.model, r.op, r.k, r.variant) == (model, op, k, variant):
            return r
    return None


def summary(report: Report, args: argparse.Namespace) -> str:
    """Markdown tables: per-vector cost and speed-ups, then the goal checks."""
    lines = []
    for model in args.models:
        p, n = report.num_params[model], report.batch[model]
        t_fwd = report.forward_s[model]
        lines += [
            f"**{model}** — p = {p:,}, n = {n}, one forward pass = {t_fwd * 1e3:.2f} ms "
            "(fastest of the baselines timed next to each figure)",
            "",
            "| op | k | engine: fwd-equiv / vector | engine: ms / vector "
            "| reference: fwd-equiv / vector | reference: ms / vector | speed-up |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for op in OPS:
            for k in args.ks:
                e, r = _row(report, model, op, k, "engine"), _row(report, model, op, k, "reference")
                if e is None or r is None:
                    continue
                lines.append(
                    f"| {op} | {k} | {e.per_vector_fwd:.2f} | {e.per_vector_s * 1e3:.2f} "
                    f"| {r.per_vector_fwd:.2f} | {r.per_vector_s * 1e3:.2f} "
                    f"| {r.seconds / e.seconds:.2f}× |"
                )
        extra = sorted(
            {r.variant for r in report.rows if r.model == model} - {"engine", "reference"}
        )
        if extra:
            lines += [
                "",
                "| op | k | " + " | ".join(f"{v}: fwd-equiv / vector" for v in extra) + " |",
                "|---|---:|" + "---:|" * len(extra),
            ]
            for op in OPS:
                for k in args.ks:
                    cells = []
                    for v in extra:
                        r = _row(report, model, op, k, v)
                        cells.append("—" if r is None else f"{r.per_vector_fwd:.2f}")
                    lines.append(f"| {op} | {k} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Goals (" + report.machine.get("cpu", "?") + "):")
    for model in args.models:
        for variant, what in (
            ("engine at(x)", "bound to x, as in CG"),
            ("engine", "one-shot"),
        ):
            ntk = [_row(report, model, "ntk_vp", k, variant) for k in args.ks]
            worst = max(r.per_vector_fwd for r in ntk if r is not None)
            lines.append(
                f"- {model}: NTK matvec <= 5 forward passes per vector ({what}): worst over "
                f"k = {worst:.2f} → {'met' if worst <= 5 else 'MISSED'}"
            )
        if model in report.setup_fwd:
            lines.append(
                f"  (lin.at(x) setup, once per x: {report.setup_fwd[model]:.1f} forward "
                f"passes, cache={report.cache[model]!r})"
            )
        batched = [k for k in args.ks if k > 1]
        for k in batched:
            e, r = (
                _row(report, model, "jvp", k, "engine"),
                _row(report, model, "jvp", k, "reference"),
            )
            if e and r:
                s = r.seconds / e.seconds
                lines.append(
                    f"- {model}: batched J v (k={k}, one-shot) >= 1.5× faster than reference: "
                    f"{s:.2f}× → {'met' if s >= 1.5 else 'MISSED'}"
                )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true", help="small batches, k in {1, 8}, 2 runs")
    ap.add_argument("--models", default="mlp,preresnet20", help="comma-separated subset")
    ap.add_argument("--ks", default=None, help="comma-separated k values (default 1,8,32)")
    ap.add_argument("--n-mlp", type=int, default=None, help="MLP batch size (default 256)")
    ap.add_argument("--n-resnet", type=int, default=None, help="ResNet batch (default 64)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed runs per figure (5; 20 on cuda)"
    )
    ap.add_argument("--budget", type=float, default=None, help="seconds per figure (4)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall time, or CPU time of this process (robust on a busy machine)",
    )
    ap.add_argument("--diagnose", action="store_true", help="add what-if variants")
    ap.add_argument(
        "--diag-chunk", type=int, default=0, help="chunk_size of the chunked variant (n/4)"
    )
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (default off)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = ap.parse_args(argv)
    quick = args.quick
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.ks = [int(k) for k in (args.ks or ("1,8" if quick else "1,8,32")).split(",")]
    if any(k < 1 for k in args.ks):
        ap.error("--ks must be positive integers")
    cuda = args.device.startswith("cuda")
    args.n_mlp = args.n_mlp or (64 if quick else (1024 if cuda else 256))
    args.n_resnet = args.n_resnet or (16 if quick else (256 if cuda else 64))
    args.repeats = args.repeats or (2 if quick else (20 if cuda else 5))
    args.budget = args.budget if args.budget is not None else (1.0 if quick else 4.0)
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    report = run(args)
    text = summary(report, args)
    log("\n" + (text if args.markdown else text[text.index("Goals") :]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**asdict(report), "rows": [asdict(r) for r in report.rows]}, fh, indent=1)
    log(f"\nmachine: {json.dumps(report.machine)}")
    log(f"total benchmark time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
