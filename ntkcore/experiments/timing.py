"""Figure 2 of Maddox et al. (2021) as experiments: GP inference time vs n and vs p, and the
per-vector cost of Fisher-vector products.

Section 3.2 of the paper times finite-NTK GP inference with a ≈800,000-parameter five-layer
MLP for up to n = 100,000 points (Figure 2 left) and for n = 1,000 points as the model grows
to ≈10⁸ parameters (centre), in function space (CG on the n·o × n·o kernel J Jᵀ + (σ²/s²) I,
Eq. 3) and in parameter space (CG on the p × p matrix JᵀJ + (σ²/s²) I, Eq. 2, with exact
products or the finite-difference Fisher-vector products of Eq. 5), and compares the cost of
one Fisher-vector product by finite differences, exactly and by double-backward autograd on
CIFAR-sized networks (right).

Experiments (registered in :mod:`ntkcore.experiments.registry`)
-----------------------------------------------------------------
:func:`timing_vs_n`, :func:`timing_vs_p`
    One row per method × size × repeat: ``adapt`` to a stated relative residual (default
    1e-3, converged or not — every row says), then ``Posterior.predict`` of means **and**
    variances at the test points. Columns: ``sweep, method, n, p, hidden, repeat, status,
    fit_s, predict_s, total_s, cpu_s, sketch_s, iterations, residual, converged, forward_s,
    forward_equivalents, rank, sketch_rank, tol, dtype, test_points, peak_memory_mib,
    peak_memory_scope, device, device_name, seed, note``.
:func:`fisher_products`
    One row per architecture × method × repeat: ``arch, method, p, batch, vectors, repeat,
    seconds_per_vector, forward_s, forward_equivalents_per_vector, rel_error,
    rel_error_float64, likelihood, clock, device, device_name, seed``.

Every row names its ``device`` (``"cpu"``, ``"cuda"``) and ``device_name`` (the CPU model or
the GPU); ``DataFrame.attrs["machine"]`` holds :func:`~ntkcore.experiments.machine.
describe_machine`. Progress: ``progress(fraction, message)`` between points (exceptions it
raises propagate: the app interrupts a run that way). Points as they arrive:
``on_row(record)`` is called with each finished row's record (a dict with the DataFrame's
columns) right after it is measured, so a page can draw the curves while the sweep runs;
its exceptions propagate too.

Building blocks (shared with ``benchmarks/``)
---------------------------------------------
:mod:`ntkcore.experiments.figure2` — the problem (:class:`Figure2Problem`: the 2021 speed
notebook's MLP ``5 → h → 10h → h → 1`` with ELU at initialization, h = 200 giving p = 803,601;
x ~ N(0, I₅), y = sin(2 aᵀx) + 0.1 ε, zero prior mean, s² = 1 / mean diag J Jᵀ, σ² = 0.01)
and one timed fit + predict; :mod:`ntkcore.experiments.fisher_cost` — the Fisher cases;
:mod:`ntkcore.experiments.clock` — device-synchronized clocks, peak memory, forward-pass
equivalents; :mod:`ntkcore.experiments.machine` — machine description and git commit;
:mod:`ntkcore.experiments.reference` — the 2021 reference-style pipeline.

What is measured
----------------
``fit_s``: the whole ``adapt`` call (Nyström sketch — preconditioner and variance basis —,
preconditioned CG, variance factor); ``predict_s``: means and variances at ``test_points``
inputs; ``cpu_s``: process CPU time of both; ``sketch_s``: the sketch alone;
``forward_s``: one ``no_grad`` forward pass on the n training inputs (median of 3), and
``forward_equivalents`` = ``fit_s / forward_s``: the fit's cost in passes over the data.
Clocks are CUDA-synchronized (:mod:`ntkcore.experiments.clock`); peak memory is the CUDA
allocator's peak or the process's resident-set peak during fit + predict.
The ``reference-style`` method times the 2021 pipeline (:mod:`ntkcore.experiments.reference`:
per-column loops, J v by double backward, unpreconditioned CG, LOVE variances) on the same
problem. Speed goals are recorded in ``benchmarks/RESULTS.md``, not asserted here.

Presets
-------
``small`` (the app runs it live; under a minute on two CPU cores): n ∈ {250, 500, 1000, 2000}
at h = 16 (p = 5,409); h ∈ {8, 16, 32, 64} (p = 1,425 to 83,073) at n = 500; 200 test
points; ``rank="auto"``. Fisher: MLP, LeNet-3 and PreResNet-20 on 32 CIFAR-sized inputs,
4 vectors. ``full`` (``benchmarks/scaling.py --preset gpu``'s sweeps; GPU when present):
n ∈ {1,000, 10,000, 25,000, 50,000, 100,000} at h = 200 (p = 803,601); h ∈ {20, 63, 200,
632, 2236} (p up to 1.0·10⁸) at n = 1,000; 1,000 test points; Nyström rank 256. Fisher: MLP,
AlexNet, PreResNet-20/56/110 and WRN-16-4 on 256 inputs (32 on a CPU), 8 vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ntkcore import zoo
from ntkcore.experiments.clock import check_clock, forward_equivalents, forward_seconds
from ntkcore.experiments.figure2 import (
    LOVE_RANK,
    METHODS,
    REFERENCE_METHOD,
    Figure2Problem,
    RowCallback,
    TimingRow,
    rank_spec,
    run_timing_rows,
)
from ntkcore.experiments.fisher_cost import (
    FISHER_ARCHS,
    FISHER_METHODS,
    LIKELIHOODS,
    arch_kwargs,
    fisher_case,
    fisher_reference,
    full_float32,
    relative_error,
    time_fisher_method,
)
from ntkcore.experiments.machine import describe_machine, device_name
from ntkcore.experiments.registry import Progress, ProgressSteps, check_preset, resolve_device

_DTYPES = ("float32", "float64")

__all__ = [
    "FISHER_ARCHS",
    "FISHER_METHODS",
    "METHODS",
    "REFERENCE_METHOD",
    "Figure2Problem",
    "fisher_products",
    "preset_options",
    "timing_vs_n",
    "timing_vs_p",
]


# --------------------------------------------------------------------------- experiments
_EXPERIMENTS = ("timing-n", "timing-p", "fisher-products")


def preset_options(
    experiment: str, preset: str = "small", device: torch.device | str | None = None
) -> dict[str, Any]:
    """The option values a preset stands for, as keyword arguments of the experiment.

    >>> preset_options("timing-n")["sizes"]
    (250, 500, 1000, 2000)

    Parameters
    ----------
    experiment : {"timing-n", "timing-p", "fisher-products"}
        :func:`timing_vs_n`, :func:`timing_vs_p` or :func:`fisher_products`.
    preset : {"small", "full"}
    device : torch.device or str, optional
        As the experiment resolves it (the Fisher batch of ``full`` is 256 on a GPU, 32 on a
        CPU).

    Returns
    -------
    dict
        ``timing-n``: ``sizes, hidden, rank, test_points``; ``timing-p``: ``widths, n, rank,
        test_points``; ``fisher-products``: ``archs, batch, vectors, repeats``. Passing them
        explicitly gives the same run as the preset's defaults.
    """
    if experiment not in _EXPERIMENTS:
        raise ValueError(f"experiment must be one of {_EXPERIMENTS}, got {experiment!r}")
    preset = check_preset(preset)
    if experiment == "fisher-products":
        fisher = _FISHER_PRESETS[preset]
        dev = resolve_device(device, preset)
        return {
            "archs": fisher.archs,
            "batch": fisher.batch_cuda if dev.type == "cuda" else fisher.batch,
            "vectors": fisher.vectors,
            "repeats": fisher.repeats,
        }
    sweep = _SWEEP_PRESETS[preset]
    if experiment == "timing-n":
        points: dict[str, Any] = {"sizes": sweep.sizes, "hidden": sweep.hidden}
    else:
        points = {"widths": sweep.widths, "n": sweep.p_n}
    return {**points, "rank": sweep.rank, "test_points": sweep.test_points}


@dataclass(frozen=True)
class _SweepPreset:
    sizes: tuple[int, ...]  # n of the n sweep
    hidden: int  # h of the n sweep
    widths: tuple[int, ...]  # h of the p sweep
    p_n: int  # n of the p sweep
    rank: int | str
    test_points: int


_SWEEP_PRESETS = {
    "small": _SweepPreset(
        sizes=(250, 500, 1000, 2000), hidden=16, widths=(8, 16, 32, 64), p_n=500,
        rank="auto", test_points=200,
    ),
    "full": _SweepPreset(
        sizes=(1000, 10_000, 25_000, 50_000, 100_000), hidden=200,
        widths=(20, 63, 200, 632, 2236), p_n=1000, rank=256, test_points=1000,
    ),
}

_TIMING_COLUMNS = list(TimingRow("n", "function", 1, 1, 1, 1, 1.0).record())


def _positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of positive ints, got {values!r}")
    out = tuple(values)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return out


def _check_methods(methods: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty sequence from {tuple(allowed)}")
    bad = [m for m in methods if m not in allowed]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {tuple(allowed)}")
    return tuple(dict.fromkeys(methods))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _timing_sweep(
    sweep: str,
    *,
    preset: str,
    seed: int,
    progress: Progress | None,
    device: torch.device | str | None,
    points: tuple[tuple[int, int], ...],  # (n, hidden)
    methods: Sequence[str],
    repeats: int,
    rank: int | str | None,
    love_rank: int,
    tol: float,
    noise_variance: float,
    test_points: int | None,
    dtype: str,
    max_iter: int,
    budget_s: float | None,
    warm_up: bool,
    on_row: RowCallback | None,
) -> pd.DataFrame:
    settings = _SWEEP_PRESETS[preset]
    dev = resolve_device(device, preset)
    methods = _check_methods(methods, (*METHODS, REFERENCE_METHOD))
    repeats = _positive_int("repeats", repeats)
    rank = rank_spec(settings.rank if rank is None else rank)
    love_rank = _positive_int("love_rank", love_rank)
    tol = _positive_float("tol", tol)
    noise_variance = _positive_float("noise_variance", noise_variance)
    test_points = _positive_int(
        "test_points", settings.test_points if test_points is None else test_points
    )
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    max_iter = _positive_int("max_iter", max_iter)
    if budget_s is not None:
        budget_s = _positive_float("budget_s", budget_s)
    rows = [
        TimingRow(
            sweep, method, n, Figure2Problem(h).num_params, h,
            love_rank if method == REFERENCE_METHOD else rank, tol, dtype, repeat=r,
        )
        for n, h in points
        for method in methods
        for r in range(repeats)
    ]
    # cheapest first, so that a budget drops the most expensive rows
    rows.sort(key=lambda r: (r.n * r.p, methods.index(r.method), r.repeat))
    measured = run_timing_rows(
        rows, device=dev, noise_variance=noise_variance, test_points=test_points, seed=seed,
        max_iter=max_iter, budget=budget_s, warm=bool(warm_up), progress=progress,
        on_row=on_row,
    )
    name = device_name(dev)
    table = pd.DataFrame([r.record(name, seed) for r in measured], columns=_TIMING_COLUMNS)
    table.attrs["machine"] = describe_machine(dev)
    return table


def timing_vs_n(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    sizes: tuple[int, ...] = (),
    hidden: int | None = None,
    methods: tuple[str, ...] = METHODS,
    repeats: int = 1,
    rank: int | str | None = None,
    love_rank: int = LOVE_RANK,
    tol: float = 1e-3,
    noise_variance: float = 1e-2,
    test_points: int | None = None,
    dtype: str = "float32",
    max_iter: int = 5000,
    budget_s: float | None = None,
    warm_up: bool = True,
    on_row: RowCallback | None = None,
) -> pd.DataFrame:
    """GP inference time vs the number of points n (Figure 2, left).

    Parameters
    ----------
    preset : {"small", "full"}
        Sizes, width, rank and test points (module docstring); options below override them.
    seed : int
        Network weights, data (``seed + 1``) and Nyström sketch.
    progress : callable, optional
        ``progress(fraction, message)``, called before each point; its exceptions propagate.
    device : torch.device or str, optional
        Default: the CPU for ``small``, the GPU (when present) for ``full``.
    sizes : tuple of int
        n values; ``()`` takes the preset's.
    hidden : int, optional
        h of the MLP (p = 803,601 at h = 200); default the preset's.
    methods : tuple of str
        From ``function``, ``parameter``, ``parameter-fd`` (:data:`METHODS`) and
        ``reference-style`` (the 2021 pipeline; slow: per-column loops).
    repeats : int
        Timed runs per method and size (one row each, ``repeat`` column).
    rank : int or str, optional
        Nyström rank: an int, ``"auto"`` or ``"auto:TOL"`` (:func:`rank_spec`); default the
        preset's.
    love_rank : int
        Lanczos steps of ``reference-style``'s LOVE variances.
    tol : float
        Relative residual of CG (every row reports the true residual and ``converged``).
    noise_variance : float
        σ² (the prior variance of f at the data is 1).
    test_points : int, optional
        Inputs of ``predict`` (means and variances); default the preset's.
    dtype : {"float32", "float64"}
    max_iter : int
        CG iteration cap.
    budget_s : float, optional
        Skip points whose estimated time would overrun this many seconds (cheapest first;
        skipped rows stay in the table with their ``status``).
    warm_up : bool
        First run one small untimed fit per method (library and kernel initialization, which
        would otherwise inflate the first point).
    on_row : callable, optional
        ``on_row(record)`` with each finished row's record (the DataFrame's columns) as soon
        as it is measured, to draw points as they arrive; its exceptions propagate.

    Returns
    -------
    pandas.DataFrame
        One row per method × n × repeat (columns in the module docstring); the machine
        description in ``attrs["machine"]``.
    """
    preset = check_preset(preset)
    settings = _SWEEP_PRESETS[preset]
    sizes = _positive_ints("sizes", sizes) if sizes else settings.sizes
    hidden = settings.hidden if hidden is None else _positive_int("hidden", hidden)
    return _timing_sweep(
        "n", preset=preset, seed=seed, progress=progress, device=device,
        points=tuple((n, hidden) for n in sorted(sizes)), methods=methods, repeats=repeats,
        rank=rank, love_rank=love_rank, tol=tol, noise_variance=noise_variance,
        test_points=test_points, dtype=dtype, max_iter=max_iter, budget_s=budget_s,
        warm_up=warm_up, on_row=on_row,
    )


def timing_vs_p(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    widths: tuple[int, ...] = (),
    n: int | None = None,
    methods: tuple[str, ...] = METHODS,
    repeats: int = 1,
    rank: int | str | None = None,
    love_rank: int = LOVE_RANK,
    tol: float = 1e-3,
    noise_variance: float = 1e-2,
    test_points: int | None = None,
    dtype: str = "float32",
    max_iter: int = 5000,
    budget_s: float | None = None,
    warm_up: bool = True,
    on_row: RowCallback | None = None,
) -> pd.DataFrame:
    """GP inference time vs the number of parameters p at fixed n (Figure 2, centre).

    ``widths`` are the h values of the MLP ``5 → h → 10h → h → 1`` (p ≈ 20 h²; ``()`` takes
    the preset's), ``n`` the number of points (default the preset's: 500 small, 1,000 full).
    Every other option as in :func:`timing_vs_n`; one row per method × width × repeat.
    """
    preset = check_preset(preset)
    settings = _SWEEP_PRESETS[preset]
    widths = _positive_ints("widths", widths) if widths else settings.widths
    n = settings.p_n if n is None else _positive_int("n", n)
    return _timing_sweep(
        "p", preset=preset, seed=seed, progress=progress, device=device,
        points=tuple((n, h) for h in sorted(widths)), methods=methods, repeats=repeats,
        rank=rank, love_rank=love_rank, tol=tol, noise_variance=noise_variance,
        test_points=test_points, dtype=dtype, max_iter=max_iter, budget_s=budget_s,
        warm_up=warm_up, on_row=on_row,
    )


@dataclass(frozen=True)
class _FisherPreset:
    archs: tuple[str, ...]
    batch: int
    batch_cuda: int
    vectors: int
    repeats: int


_FISHER_PRESETS = {
    "small": _FisherPreset(("mlp", "lenet3", "preresnet20"), 32, 32, 4, 2),
    "full": _FisherPreset(
        ("mlp", "alexnet", "preresnet20", "preresnet56", "preresnet110", "wrn16-4"), 32, 256,
        8, 3,
    ),
}
_FISHER_COLUMNS = [
    "arch", "method", "p", "batch", "vectors", "repeat", "seconds_per_vector", "forward_s",
    "forward_equivalents_per_vector", "rel_error", "rel_error_float64", "likelihood", "clock",
    "device", "device_name", "seed",
]  # fmt: skip


def fisher_products(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    archs: tuple[str, ...] = (),
    methods: tuple[str, ...] = ("fd", "exact", "autograd"),
    batch: int | None = None,
    vectors: int | None = None,
    repeats: int | None = None,
    likelihood: str = "categorical",
    clock: str = "wall",
    float64_reference: bool = False,
    on_row: RowCallback | None = None,
) -> pd.DataFrame:
    """Per-vector cost of Fisher-vector products by finite differences, exactly and by
    autograd (Figure 2, right; Eq. 5).

    For each network (at initialization, BatchNorm statistics calibrated, eval mode, float32,
    TF32 off) on a batch of random 3×32×32 inputs, ``fisher_vp`` is timed for k vectors at
    once; a row's ``seconds_per_vector`` is one call's time / k, and
    ``forward_equivalents_per_vector`` divides it by one plain ``no_grad`` forward pass on the
    same batch (``forward_s``, median of at least 5). ``rel_error`` is
    max_j ‖F̂ v_j − F v_j‖ / ‖F v_j‖ against float32 ``exact`` (0 for ``exact`` itself, the
    reference); ``rel_error_float64`` against ``exact`` on a float64 copy (NaN unless
    ``float64_reference``).

    Parameters
    ----------
    preset : {"small", "full"}
        ``small``: MLP, LeNet-3, PreResNet-20, batch 32, 4 vectors, 2 repeats; ``full``: MLP,
        AlexNet, PreResNet-20/56/110, WRN-16-4, batch 256 on a GPU (32 on a CPU), 8 vectors,
        3 repeats.
    archs : tuple of str
        From :data:`FISHER_ARCHS`; ``()`` takes the preset's.
    methods : tuple of str
        From :data:`FISHER_METHODS`.
    batch, vectors, repeats : int, optional
        Inputs n, vectors k per call, timed calls per method; default the preset's.
    likelihood : {"categorical", "gaussian"}
        Output-space Fisher of the 10 outputs.
    clock : {"wall", "cpu"}
        Wall time or this process's CPU time (steadier on a shared machine).
    float64_reference : bool
        Also compare with float64 ``exact`` products (slow on a CPU).
    progress, on_row, seed, device
        As in :func:`timing_vs_n`.

    Returns
    -------
    pandas.DataFrame
        One row per architecture × method × repeat; ``attrs["machine"]`` describes the
        machine.
    """
    preset = check_preset(preset)
    settings = _FISHER_PRESETS[preset]
    dev = resolve_device(device, preset)
    archs = tuple(archs) if archs else settings.archs
    bad = [a for a in archs if a not in FISHER_ARCHS]
    if bad or isinstance(archs, str):
        raise ValueError(f"unknown architectures {bad}; choose from {FISHER_ARCHS}")
    methods = _check_methods(methods, FISHER_METHODS)
    default_batch = settings.batch_cuda if dev.type == "cuda" else settings.batch
    batch = _positive_int("batch", default_batch if batch is None else batch)
    vectors = _positive_int("vectors", settings.vectors if vectors is None else vectors)
    repeats = _positive_int("repeats", settings.repeats if repeats is None else repeats)
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    clock = check_clock(clock)
    name = device_name(dev)

    sizes = [zoo.info(a, **arch_kwargs(a)[0]).num_params for a in archs]
    weights: list[float] = []
    for p in sizes:
        weights += [0.5 * p] + [float(p)] * len(methods)
    steps = ProgressSteps(progress, weights)
    records: list[dict[str, Any]] = []
    for arch in archs:
        steps.start(f"{arch}: building, forward pass and reference ({name})")
        case = fisher_case(arch, batch=batch, vectors=vectors, device=dev, seed=seed)
        with full_float32(dev):
            t_fwd = forward_seconds(case.model, case.x, repeats=max(repeats, 5), clock=clock)
            ref32 = fisher_reference(case, likelihood=likelihood)
            ref64 = (
                fisher_reference(case, likelihood=likelihood, float64=True)
                if float64_reference else None
            )
        for method in methods:
            steps.start(f"{arch}: {method} ({name})")
            timing, out = time_fisher_method(
                case, method, likelihood=likelihood, repeats=repeats, clock=clock
            )
            err32 = relative_error(out, ref32)
            err64 = math.nan if ref64 is None else relative_error(out, ref64)
            for r, seconds in enumerate(timing.times):
                per_vector = seconds / case.vectors
                record = {
                    "arch": arch, "method": method, "p": case.p, "batch": case.batch,
                    "vectors": case.vectors, "repeat": r, "seconds_per_vector": per_vector,
                    "forward_s": t_fwd.median,
                    "forward_equivalents_per_vector": forward_equivalents(
                        per_vector, t_fwd.median
                    ),
                    "rel_error": err32, "rel_error_float64": err64, "likelihood": likelihood,
                    "clock": clock, "device": str(dev), "device_name": name, "seed": seed,
                }  # fmt: skip
                records.append(record)
                if on_row is not None:
                    on_row(dict(record))
        del case
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    steps.done(f"done ({name})")
    table = pd.DataFrame(records, columns=_FISHER_COLUMNS)
    table.attrs["machine"] = describe_machine(dev)
    return table
