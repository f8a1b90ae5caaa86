"""Fast adaptation (Algorithm 1) against its baselines: the paper's Figures 6 and 7.

:func:`fast_adaptation` trains (or loads from the zoo cache) one source network, then for
every target task and context size fits each method of
:mod:`ntkcore.experiments.methods` on the task's first ``n`` target points
(``Task.context(n)``) and scores its predictive distribution of y on the task's held-out
target points (``Task.test``). :func:`spatial_maps` gives the gridded posterior of the
``spatial`` task for the app's maps (Figure 7a's setting).

The paper's findings and what our data say are recorded in ``benchmarks/RESULTS.md``
("Experiments: fast adaptation"), and tested in direction in
``tests/test_fast_adaptation.py``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ntkcore import data
from ntkcore.data.spatial import map_grid
from ntkcore.experiments.methods import available as available_methods
from ntkcore.experiments.methods import cache
from ntkcore.experiments.methods.source import DEFAULT_PRESETS, Source, check_arch
from ntkcore.experiments.registry import Progress, ProgressSteps, check_preset, resolve_device
from ntkcore.metrics import coverage, gaussian_nll, mse

__all__ = ["COLUMNS", "DATASETS", "METHOD_NAMES", "MAP_COLUMNS", "fast_adaptation",
           "fast_adaptation_from_source", "preset_sizes", "spatial_maps"]

#: The regression transfer tasks (each adapts its zoo preset's network by default).
DATASETS = tuple(DEFAULT_PRESETS)
#: Every registered method, in table order.
METHOD_NAMES = (
    "ntk", "ntk-linearized", "no-retrain", "last-layer", "last-layer-6x", "fine-tune",
    "rbf-gp", "ablr", "ablr-scratch",
)
#: Columns of :func:`fast_adaptation`'s table.
COLUMNS = (
    "method", "n_context", "task", "seed", "mse", "nll", "coverage95", "seconds",
    "prepare_seconds", "hyper", "noise_variance", "prior_variance", "hyperparameters",
    "arch", "dataset", "source",
)
#: Columns of :func:`spatial_maps`' table.
MAP_COLUMNS = ("lon", "lat", "source", "target", "mean", "std", "context", "method",
               "n_context", "task")

# (context sizes, target task seeds) per preset and dataset. Small: <= 60 s on two CPU
# cores with the models cached (benchmarks/RESULTS.md has the measured times); full: the
# paper's context sizes (Figure 7: 10 to 200 points) and ten target tasks.
_SIZES: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "small": {
        "sinusoids": ((5, 20, 50), (0, 1)),
        "linear-to-sine": ((5, 20, 50), (0, 1)),
        "toy-gap": ((10, 50, 200), (0,)),
        "spatial": ((10, 50, 200), (0,)),
        "faces-rotation": ((10, 50, 200), (0,)),
    },
    "full": {
        "sinusoids": ((5, 10, 20, 50, 100), tuple(range(10))),
        "linear-to-sine": ((5, 10, 20, 50, 100), tuple(range(10))),
        "toy-gap": ((10, 25, 50, 100, 200, 300), tuple(range(10))),
        "spatial": ((10, 25, 50, 100, 200), tuple(range(10))),
        "faces-rotation": ((10, 25, 50, 100, 200), tuple(range(10))),
    },
}
# Source-side options per preset and dataset (method -> keywords). ABLR's feature learning
# on the toy-gap network (514 features, 300 points, float64 marginal likelihood) costs
# ~20 ms CPU a step: the small preset takes 300 steps instead of the source budget's
# 1,500 (the ``hyperparameters`` column records the steps taken).
_SHORT_ABLR = {"ablr": {"steps": 300}, "ablr-scratch": {"steps": 300}}
_OPTIONS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "small": {"toy-gap": _SHORT_ABLR},
    "full": {},
}
# Relative cost of one fit, for the progress bar.
_COST = {"last-layer": 3.0, "last-layer-6x": 12.0, "fine-tune": 5.0}


def preset_sizes(dataset: str, preset: str = "small") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(context sizes, target task seeds)`` that :func:`fast_adaptation` uses for ``dataset``
    when ``context_sizes`` / ``tasks`` are left empty (what an app's preset selector fills in).

    Raises
    ------
    ValueError
        For an unknown dataset or preset.
    """
    return _SIZES[check_preset(preset)][_check_dataset(dataset)]


def _int_tuple(name: str, values: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(values, int | np.integer) and not isinstance(values, bool):
        values = (values,)
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of ints, got {values!r}") from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
            raise ValueError(f"{name} must hold ints >= {minimum}, got {values!r}")
    return tuple(dict.fromkeys(int(v) for v in items))


def _method_names(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    names = tuple(dict.fromkeys(methods))
    unknown = [m for m in names if m not in available_methods()]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or names}; available: {available_methods()}")
    return names


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r} for fast_adaptation (regression transfer tasks); "
            f"available: {list(DATASETS)}"
        )
    return dataset


def _method_options(name: str, dataset: str, preset: str, fit_hyper: bool) -> dict[str, Any]:
    options = dict(_OPTIONS[preset].get(dataset, {}).get(name, {}))
    if name in ("ntk", "ntk-linearized"):
        options["hyper"] = "marginal-likelihood" if fit_hyper else "fixed"
    return options


def _hyper_columns(hyper: dict[str, Any]) -> dict[str, Any]:
    return {
        "hyper": str(hyper.get("hyper", "")),
        "noise_variance": float(hyper.get("noise_variance", math.nan)),
        "prior_variance": float(hyper.get("prior_variance", math.nan)),
        "hyperparameters": json.dumps(hyper, sort_keys=True, default=str),
    }


def fast_adaptation(
    *,
    dataset: str = "sinusoids",
    arch: str | None = None,
    methods: tuple[str, ...] = METHOD_NAMES,
    context_sizes: tuple[int, ...] = (),
    tasks: tuple[int, ...] = (),
    fit_hyper: bool = False,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    r"""Adapt one source network to target tasks with every method; score on held-out data.

    Algorithm 1 of the paper: the network is trained once on the source task; each target
    task then gets each method fit on its context points. Point methods (``no-retrain``,
    ``last-layer``, ``last-layer-6x``, ``fine-tune``) are scored as the Gaussian whose
    variance is their mean squared residual on the context points; Bayesian methods
    (``ntk``, ``ntk-linearized``, ``rbf-gp``, ``ablr``, ``ablr-scratch``) with their
    predictive of y (latent variance plus noise). See :mod:`ntkcore.experiments.methods`.

    Parameters
    ----------
    dataset : str
        ``sinusoids``, ``linear-to-sine``, ``toy-gap`` (Figure 6's setting), ``spatial``
        (the heteroscedastic network's mean output; Figure 7a) or ``faces-rotation``
        (LeNet-3; Figure 7b).
    arch : str, optional
        Source network: a zoo preset id of the dataset (``zoo.presets_for(dataset)``, e.g.
        ``"sinusoids-mlp-relu"``) or a zoo architecture; default the dataset's preset
        (:data:`ntkcore.experiments.methods.DEFAULT_PRESETS`).
    methods : tuple of str
        Method names (default all).
    context_sizes : tuple of int
        Numbers of context points (each <= the task's target pool); empty: the preset's.
    tasks : tuple of int
        Target task seeds (``data.load(dataset, seed=task)``); empty: the preset's.
    fit_hyper : bool
        ``ntk``/``ntk-linearized`` hyperparameters: False — one (σ², s²) fit by marginal
        likelihood on the source task and transferred (column ``hyper`` = ``fixed``);
        True — fit by marginal likelihood on each context (``marginal-likelihood``).
    preset : {"small", "full"}
        ``small``: few tasks and context sizes, within a minute on two CPU cores with the
        networks cached; ``full``: the paper's context sizes, ten target tasks.
    seed : int
        Training seed of the source network (0: the zoo preset's cached network) and of the
        retraining baselines.
    progress : callable, optional
        ``progress(fraction, message)``.
    device : torch.device or str, optional
        Default: CPU for ``small``, the GPU (when present) for ``full``.

    Returns
    -------
    pandas.DataFrame
        One row per method × context size × task, columns :data:`COLUMNS`: ``mse``,
        ``nll`` (mean negative log density of each test target) and ``coverage95``
        (fraction of test targets within mean ± 1.96 sd) of the predictive of y;
        ``seconds`` (fit + predict), ``prepare_seconds`` (the method's source-side work,
        once per call; 0 when cached from an earlier call in this process); ``hyper`` (how
        the hyperparameters were chosen), ``noise_variance`` and ``prior_variance``
        (σ², s² for the NTK; 1/β, 1/α for ABLR; noise and output scale for the RBF GP;
        the reported residual variance for point methods), ``hyperparameters`` (all of
        them, JSON), ``arch``, ``dataset``, ``source`` (the source network's name).

    Raises
    ------
    ValueError
        Unknown dataset, architecture, method or preset; a context size outside
        [1, target pool size]; negative task seeds.
    """
    preset = check_preset(preset)
    dataset = _check_dataset(dataset)
    names = _method_names(methods)
    defaults = _SIZES[preset][dataset]
    sizes = _int_tuple("context_sizes", context_sizes or defaults[0], 1)
    task_seeds = _int_tuple("tasks", tasks or defaults[1], 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    check_arch(dataset, arch)
    dev = resolve_device(device, preset)
    # Load the target tasks first: bad context sizes fail before any training.
    targets = {}
    for t in task_seeds:
        task = data.load(dataset, seed=t)
        pool = task.sizes["target"]
        too_many = [n for n in sizes if n > pool]
        if too_many:
            raise ValueError(
                f"context size(s) {too_many} exceed the target pool of {dataset!r} "
                f"({pool} points)"
            )
        targets[t] = task

    steps = ProgressSteps(progress, [2.0, *_step_weights(names, len(task_seeds) * len(sizes))])
    source = cache.source(dataset, arch, seed=seed, device=dev,
                          progress=steps.start(f"source network for {dataset}"))
    options = {name: _method_options(name, dataset, preset, fit_hyper) for name in names}
    rows = _adapt_rows(source, targets, names, sizes, options, seed, steps, dev)
    steps.done()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def fast_adaptation_from_source(
    source: Source,
    targets: Mapping[int, data.Task] | Sequence[data.Task],
    *,
    methods: tuple[str, ...] = METHOD_NAMES,
    context_sizes: tuple[int, ...] = (5, 10, 20),
    fit_hyper: bool = False,
    seed: int = 0,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """:func:`fast_adaptation` for a source network and target tasks of your own.

    The same loop and table as :func:`fast_adaptation` (Algorithm 1: every method prepared
    once on ``source``, then fit on the first ``n`` points of each target task's pool and
    scored on its test split), for sources that are not a zoo preset of a built-in dataset —
    e.g. a network trained on an uploaded CSV file's source rows
    (:func:`ntkcore.experiments.methods.train_source`) and the file's target rows split
    with several seeds (``data.from_csv(..., seed=t)``).

    Parameters
    ----------
    source : Source
        The trained network, its source data and training budget; methods run on its device.
    targets : mapping of int to Task, or sequence of Task
        Target tasks keyed by the ``task`` column's value (a sequence is numbered 0, 1, ...).
        Each must be a regression task with the source's input shape and output size.
    methods : tuple of str
        Method names (see :mod:`ntkcore.experiments.methods`).
    context_sizes : tuple of int
        Numbers of context points, each at most every target's pool size.
    fit_hyper : bool
        As for :func:`fast_adaptation`.
    seed : int
        Recorded in the ``seed`` column and seeds the retraining baselines.
    method_options : mapping, optional
        Extra keywords per method name (e.g. ``{"ablr": {"steps": 300}}``).
    progress : callable, optional
        ``progress(fraction, message)``; messages name the method, task and context size.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, one row per method × context size × task; ``dataset`` is the
        source task's name, ``source`` the source's name.

    Raises
    ------
    ValueError
        Unknown methods; empty or non-int context sizes or a size above a target's pool; a
        target that is not a regression task fitting the source network; a bad seed.
    """
    if not isinstance(source, Source):
        raise ValueError(f"source must be a methods.Source, got {type(source).__name__}")
    names = _method_names(methods)
    sizes = _int_tuple("context_sizes", context_sizes, 1)
    if not sizes:
        raise ValueError("context_sizes must hold at least one size")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(targets, Mapping):
        numbered = dict(targets)
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        numbered = dict(enumerate(targets))
    else:
        raise ValueError(f"targets must be a mapping or sequence of Tasks, got {targets!r}")
    if not numbered:
        raise ValueError("targets must hold at least one task")
    shape, outputs = tuple(source.task.meta.input_shape), source.task.meta.output_dim
    for key, task in numbered.items():
        if isinstance(key, bool) or not isinstance(key, int | np.integer):
            raise ValueError(f"target keys must be ints (the task column), got {key!r}")
        if not isinstance(task, data.Task) or task.kind != "regression":
            raise ValueError(f"target {key} must be a regression ntkcore.data.Task, got {task!r}")
        if tuple(task.meta.input_shape) != shape or task.meta.output_dim != outputs:
            raise ValueError(
                f"target {key} has inputs {tuple(task.meta.input_shape)} and "
                f"{task.meta.output_dim} output(s); the source network takes {shape} and gives "
                f"{outputs}"
            )
        too_many = [n for n in sizes if n > task.sizes["target"]]
        if too_many:
            raise ValueError(
                f"context size(s) {too_many} exceed the target pool of target {key} "
                f"({task.sizes['target']} points)"
            )
    extra = dict(method_options or {})
    unknown = sorted(set(extra) - set(names))
    if unknown:
        raise ValueError(f"method_options for methods not run: {unknown} (methods: {names})")
    options = {}
    for name in names:
        options[name] = dict(extra.get(name, {}))
        if name in ("ntk", "ntk-linearized"):
            options[name].setdefault("hyper", "marginal-likelihood" if fit_hyper else "fixed")
    steps = ProgressSteps(progress, _step_weights(names, len(numbered) * len(sizes)))
    rows = _adapt_rows(source, {int(k): t for k, t in numbered.items()}, names, sizes, options,
                       seed, steps, source.device)
    steps.done()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _step_weights(names: tuple[str, ...], n_fits: int) -> list[float]:
    """Progress weights: one source-side fit per method, then every fit by its cost."""
    return [1.0] * len(names) + [_COST.get(name, 1.0) for _ in range(n_fits) for name in names]


def _adapt_rows(
    source: Source,
    targets: Mapping[int, data.Task],
    names: tuple[str, ...],
    sizes: tuple[int, ...],
    options: Mapping[str, Mapping[str, Any]],
    seed: int,
    steps: ProgressSteps,
    dev: torch.device,
) -> list[dict[str, Any]]:
    """Prepare every method on ``source``, fit each on every target and context size, score."""
    prepared, prepare_seconds = {}, {}
    for name in names:
        steps.start(f"{name}: source-side fit")
        t0 = time.perf_counter()
        method_options = dict(options.get(name, {}))
        if name in ("last-layer", "last-layer-6x", "fine-tune"):
            method_options["seed"] = seed
        prepared[name] = cache.prepared(name, source, **method_options)
        prepare_seconds[name] = time.perf_counter() - t0

    rows = []
    for t, task in targets.items():
        x_test, y_test = (v.to(dev) for v in task.test)
        for n in sizes:
            x, y = (v.to(dev) for v in task.context(n))
            for name in names:
                steps.start(f"{name}: task {t}, {n} context points")
                method = prepared[name].clone()
                t0 = time.perf_counter()
                mean, var = method.fit(x, y).predict(x_test)
                seconds = time.perf_counter() - t0
                rows.append({
                    "method": name,
                    "n_context": n,
                    "task": t,
                    "seed": seed,
                    "mse": mse(mean, y_test),
                    "nll": gaussian_nll(mean, var, y_test),
                    "coverage95": coverage(mean, var, y_test, num_std=1.96),
                    "seconds": seconds,
                    "prepare_seconds": prepare_seconds[name],
                    **_hyper_columns(method.hyperparameters),
                    "arch": source.arch,
                    "dataset": source.dataset,
                    "source": source.name,
                })
    return rows


def spatial_maps(
    *,
    n_context: int = 50,
    method: str = "ntk",
    task: int = 0,
    fit_hyper: bool = False,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    """Posterior mean and standard deviation of one method on the spatial task's grid.

    The ``spatial`` task (climate variant: 37 × 49 cells over North America, 1860s → 2090s
    decadal-mean air temperature; the offline stand-in for the paper's malaria maps): the
    source network's mean output is adapted to the first ``n_context`` points of target
    task ``task``'s pool and predicted at every grid cell.

    Parameters
    ----------
    n_context : int
        Context points, 1 to the pool size (200).
    method : str
        Any method of :mod:`ntkcore.experiments.methods` (default the finite NTK).
    task : int
        Target task seed (which cells form the pool).
    fit_hyper : bool
        As for :func:`fast_adaptation`.
    preset, seed, progress, device
        As for :func:`fast_adaptation` (both presets compute the same map).

    Returns
    -------
    pandas.DataFrame
        One row per grid cell, columns :data:`MAP_COLUMNS`, in **physical units**
        (``task.meta.transform`` inverted): ``lon``, ``lat`` in degrees; ``source`` and
        ``target`` the true source-time and target-time maps, ``mean`` the predictive
        mean and ``std`` the predictive standard deviation of the target-time value (of
        y, noise included), in the task's units (kelvin); ``context`` marks the cells
        given to the method.
    """
    preset = check_preset(preset)
    (method,) = _method_names(method)
    if isinstance(n_context, bool) or not isinstance(n_context, int | np.integer):
        raise ValueError(f"n_context must be an int, got {n_context!r}")
    (task_seed,) = _int_tuple("task", task, 0)
    dev = resolve_device(device, preset)
    loaded = data.load("spatial", seed=task_seed)
    pool = loaded.sizes["target"]
    if not 1 <= n_context <= pool:
        raise ValueError(f"n_context must lie in [1, {pool}] (the target pool), got {n_context}")
    steps = ProgressSteps(progress, [2.0, 1.0, 1.0])
    source = cache.source("spatial", seed=seed, device=dev,
                          progress=steps.start("source network for spatial"))
    steps.start(f"{method}: source-side fit")
    options = _method_options(method, "spatial", preset, fit_hyper)
    adapter = cache.prepared(method, source, **options)
    steps.start(f"{method}: {n_context} context points")

    grid = map_grid(loaded)
    x, y = (v.to(dev) for v in loaded.context(n_context))
    mean, var = adapter.fit(x, y).predict(grid.x.to(dev))
    mean_units, std_units = grid.to_physical(mean, var)
    context = np.zeros(grid.x.shape[0], dtype=bool)
    context[grid.pool[:n_context]] = True
    table = pd.DataFrame({
        "lon": grid.lon,
        "lat": grid.lat,
        "source": grid.source,
        "target": grid.target,
        "mean": mean_units,
        "std": std_units,
        "context": context,
        "method": method,
        "n_context": int(n_context),
        "task": task_seed,
    }, columns=list(MAP_COLUMNS))
    steps.done()
    return table

