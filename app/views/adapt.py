"""Adapt: few-shot transfer of a trained network to a new task by finite-NTK GP inference.

A source network (a zoo preset trained once on the task's source data and cached on disk, an
uploaded model, or an MLP trained on uploaded source data) is linearized around its trained
weights; the linearization is a Gaussian process whose kernel is the Gram matrix of the
network's Jacobian (Maddox et al., 2021, Eq. 1-3). Conditioning it on a few target points adapts
the network in closed form. The posterior is live: every widget change recomputes it (it takes
milliseconds for the zoo's small networks), under the app's light compute slot.

The page only wires widgets to the library: the numerics live in ``ntkcore``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

import ntkcore
from app import common, uploads
from app.compute import HEAVY, LIGHT, last_record, run_heavy, show_record_status
from ntkcore import data, metrics, zoo
from ntkcore.experiments import ProgressSteps, methods
from ntkcore.plots import (
    image_strip_figure,
    parity_figure,
    posterior_band_figure,
    spatial_maps_figure,
)
from ntkcore.posterior import MEANS, STRATEGIES
from ntkcore.variance import accuracy_label

PAGE = "adapt"
HEADING = "Adapt a trained network to a new task"
#: Regression tasks of ``ntkcore.data`` the page offers (classification has its own page).
TASKS = tuple(
    name
    for name in ("sinusoids", "linear-to-sine", "toy-gap", "spatial", "faces-rotation")
    if name in data.available()
)
USER_DATA = "your data (CSV)"
UPLOADED_MODEL = "uploaded model"
MLP_INIT = "MLP at initialization"
MLP_SOURCE = "MLP trained on your source data"
PRECISIONS = ("float32", "float64")
#: Baselines the page can overlay: label -> method of ntkcore.experiments.methods.
BASELINES = {
    "ABLR": "ablr",
    "last-layer retraining": "last-layer",
    "RBF GP": "rbf-gp",
    "full fine-tuning": "fine-tune",
}
LAST_RESULT_KEY = "adapt.last_result"
ADDED_KEY = "adapt.added_points"
SEEN_SELECTION_KEY = "adapt.seen_selection"
FIGURE_KEY = "adapt_figure"
#: Test images drawn in the strip of an image task.
STRIP_IMAGES = 8
#: Number formats of the scores table.
SCORE_FORMATS = {"MSE": ".3g", "NLL": ".3g", "95% coverage": ".2f"}


def _log_grid(low: int, high: int, per_decade: int = 4) -> tuple[float, ...]:
    """1, 1.8, 3.2, 5.6 × 10^k for k in [low, high): variances on a log scale."""
    steps = [10 ** (i / per_decade) for i in range(per_decade)]
    grid = [float(f"{m * 10.0**k:.2g}") for k in range(low, high) for m in steps]
    return (*grid, float(10.0**high))


NOISE_VARIANCES = _log_grid(-6, 1)
PRIOR_VARIANCES = _log_grid(-4, 2)


def _nearest(grid: tuple[float, ...], value: float) -> float:
    return min(grid, key=lambda g: abs(math.log(g) - math.log(value)))


@dataclass(frozen=True)
class Settings:
    """Every input of one adaptation (the page's widgets)."""

    dataset: str
    arch: str
    seed: int
    n_context: int
    noise_variance: float
    prior_variance: float
    mean: str
    strategy: str
    show_source: bool
    precision: str = "float32"
    baselines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """What the page adapts: a task, the network's linearization and how to name them."""

    key: tuple[Any, ...]  # identifies task and network (added points are kept per key)
    task: data.Task
    lin: ntkcore.Linearization
    task_code: str  # Python that rebuilds the task, for "Reproduce in Python"
    model_code: str
    source: tuple[str, str] | None = None  # (dataset, preset) for the baselines, zoo tasks only


# ----------------------------------------------------------------------------- widgets
def _architectures(dataset: str, task: data.Task | None) -> list[str]:
    if dataset == USER_DATA:
        options = [MLP_INIT, UPLOADED_MODEL]
        if task is not None and task.has_source:
            options.insert(1, MLP_SOURCE)
        return options
    return [p.id for p in zoo.presets_for(dataset)] + [UPLOADED_MODEL]


def _arch_label(option: str) -> str:
    if option in (UPLOADED_MODEL, MLP_INIT, MLP_SOURCE):
        return option
    return f"{option}: {zoo.preset(option).description}"


def _task_widgets() -> tuple[str, int]:
    """The task picker and the target seed (first: the upload panel depends on them)."""
    sidebar = st.sidebar
    sidebar.header("Task")
    dataset = sidebar.selectbox(
        "Source → target task",
        (*TASKS, USER_DATA),
        key="dataset",
        bind="query-params",
        help="The network is trained on the task's source data and adapted to its target.",
    )
    seed = sidebar.number_input(
        "Target task (seed)",
        min_value=0,
        max_value=1_000_000,
        value=1,
        step=1,
        key="seed",
        bind="query-params",
        help="Draws the target task (function, map pool or faces) and its context order.",
    )
    return str(dataset), int(seed)


def _sidebar(dataset: str, seed: int, user: uploads.UserData | None) -> Settings:
    sidebar = st.sidebar
    task = _task(dataset, seed, user)
    options = _architectures(str(dataset), task)
    if st.session_state.get("arch") not in options:
        st.session_state["arch"] = options[0]
    arch = sidebar.selectbox(
        "Network",
        options,
        key="arch",
        bind="query-params",
        format_func=_arch_label,
        help="Zoo networks whose input fits the task, trained on its source data; or yours.",
    )
    pool = task.target[0].shape[0] if task is not None else 200
    n_context = sidebar.slider(
        "Context points",
        min_value=1,
        max_value=min(pool, 200),
        value=min(20, pool),
        key="n_context",
        bind="query-params",
        help="Target observations the posterior is conditioned on (the first n of the pool).",
    )
    sidebar.header("Gaussian process")
    noise_variance = sidebar.select_slider(
        "Noise variance σ²",
        options=NOISE_VARIANCES,
        value=1e-3,
        format_func=lambda v: f"{v:g}",
        key="noise_variance",
        bind="query-params",
        help="Observation noise of the target data (log scale).",
    )
    prior_variance = sidebar.select_slider(
        "Prior variance s²",
        options=PRIOR_VARIANCES,
        value=1e-2,
        format_func=lambda v: f"{v:g}",
        key="prior_variance",
        bind="query-params",
        help="Prior variance of the linearized weights, w ~ N(0, s² I) (log scale).",
    )
    mean = sidebar.radio(
        "Prior mean",
        options=MEANS,
        index=MEANS.index("zero"),
        horizontal=True,
        key="mean",
        bind="query-params",
        help="zero: the finite NTK alone. network: m(x) = f(x; θ), the linearized network.",
    )
    strategy = sidebar.selectbox(
        "Solver strategy",
        options=STRATEGIES,
        index=STRATEGIES.index("auto"),
        key="strategy",
        bind="query-params",
        help="dense: explicit kernel; function: CG with Jacobian products (Eq. 3); "
        "parameter: CG in weight space (Eq. 2); auto: chosen from the problem size.",
    )
    precision = sidebar.radio(
        "Precision",
        PRECISIONS,
        horizontal=True,
        key="precision",
        bind="query-params",
        help="float64 runs a float64 copy of the network: slower, but exact to ~1e-12 where "
        "float32 products stop near 1e-4 (small σ², ill-conditioned kernels).",
    )
    show_source = sidebar.checkbox(
        "Show source data",
        value=False,
        key="show_source",
        bind="query-params",
        help="What the network was trained on.",
    )
    baselines = sidebar.multiselect(
        "Baselines",
        list(BASELINES),
        default=[],
        key="baselines",
        bind="query-params",
        disabled=dataset == USER_DATA or arch == UPLOADED_MODEL,
        help="The paper's comparisons, fit on the same context points (zoo networks only): "
        "ABLR (Bayesian linear regression on the network's learned last-layer features), "
        "retraining the last layer or all layers for the source budget, an RBF GP with "
        "hyperparameters fit on the source. Retraining takes about a second per change.",
    )
    return Settings(
        dataset=str(dataset),
        arch=str(arch),
        seed=int(seed),
        n_context=int(n_context),
        noise_variance=float(noise_variance),
        prior_variance=float(prior_variance),
        mean=str(mean),
        strategy=str(strategy),
        show_source=bool(show_source),
        precision=str(precision),
        baselines=tuple(str(b) for b in baselines)
        if dataset != USER_DATA and arch != UPLOADED_MODEL
        else (),
    )


def _task(dataset: str, seed: int, user: uploads.UserData | None) -> data.Task | None:
    if dataset != USER_DATA:
        return common.task(dataset, seed)
    return None if user is None else uploads.user_task(user, seed)


# ----------------------------------------------------------------------------- the problem
def _problem(s: Settings, user: uploads.UserData | None) -> Problem | None:
    """The task and network of the current settings, in the chosen precision; ``None`` (with
    a message) until the user has uploaded, trained or chosen what is missing."""
    problem = _problem_float32(s, user)
    if problem is None or s.precision == "float32":
        return problem
    key = ("float64", problem.key)
    cached = st.session_state.get(f"{PAGE}.float64")
    if cached is None or cached[0] != key:
        try:
            lin64 = ntkcore.Linearization(copy.deepcopy(problem.lin.model).to(torch.float64))
        except (ValueError, RuntimeError, TypeError) as err:
            st.error(f"This network cannot run in float64: {err}")
            return None
        cached = (key, lin64)
        st.session_state[f"{PAGE}.float64"] = cached
    return dataclasses.replace(
        problem, key=key, lin=cached[1], model_code=problem.model_code + "\nmodel = model.double()"
    )


def _problem_float32(s: Settings, user: uploads.UserData | None) -> Problem | None:
    task = _task(s.dataset, s.seed, user)
    if task is None:
        st.info("Upload a CSV file and choose its columns to adapt to your own data.")
        return None
    if s.dataset == USER_DATA:
        task_code = (
            f"task = data.from_csv({user.name!r}, x_columns={list(user.x_columns)!r}, "
            f"y_column={user.y_column!r}, domain_column={user.domain_column!r}, "
            f"seed={s.seed})"
        )
        task_key: tuple[Any, ...] = (USER_DATA, user.digest, user.x_columns, user.y_column)
    else:
        task_code = f"task = data.load({s.dataset!r}, seed={s.seed})"
        task_key = (s.dataset,)
    task_key += (s.seed,)
    if s.arch == UPLOADED_MODEL:
        model = uploads.model_panel(PAGE, task)
        if model is None:
            st.info("Upload a model file (see “Your model” above) to adapt it.")
            return None
        return Problem(
            (*task_key, model.digest), task, model.linearization, task_code,
            f"model = zoo.load_model({model.name!r})",
        )  # fmt: skip
    if s.arch == MLP_INIT:
        return Problem(
            (*task_key, MLP_INIT), task, _init_linearization(task, user.digest), task_code,
            "with zoo.seeded(0):\n    model = zoo.create('mlp', in_features="
            f"{task.meta.input_shape[0]}, out_features=1, width=64, depth=2, activation='tanh')",
        )  # fmt: skip
    if s.arch == MLP_SOURCE:
        lin = _source_trained(task, user)
        if lin is None:
            return None
        return Problem(
            (*task_key, MLP_SOURCE), task, lin, task_code,
            "model = zoo.pretrained('mlp', 'your-data', task=task, width=64, depth=2, "
            "activation='tanh', epochs=1000, lr=1e-2)",
        )  # fmt: skip
    lin = common.linearization(s.arch)
    mean_only = ".mean_model()" if hasattr(common.preset_model(s.arch), "mean_model") else ""
    return Problem(
        (*task_key, s.arch), task, lin, task_code,
        f"model = zoo.preset({s.arch!r}).load(){mean_only}", source=(s.dataset, s.arch),
    )  # fmt: skip


def _init_linearization(task: data.Task, digest: str) -> ntkcore.Linearization:
    key = f"{PAGE}.init_lin"
    cached = st.session_state.get(key)
    if cached is None or cached[0] != digest:
        cached = (digest, ntkcore.Linearization(uploads.untrained_mlp(task)))
        st.session_state[key] = cached
    return cached[1]


def _train_on_source(task: data.Task, digest: str, *, progress, device) -> nn.Module:
    steps = ProgressSteps(progress, [1])
    return zoo.pretrained(
        "mlp", f"your-data-{digest}", task=task, width=64, depth=2, activation="tanh",
        epochs=1000, lr=1e-2, progress=steps.start("training on your source rows"),
    )  # fmt: skip


def _source_trained(task: data.Task, user: uploads.UserData) -> ntkcore.Linearization | None:
    inputs = {"data": user.digest, "x": list(user.x_columns), "y": user.y_column}
    record = last_record(f"{PAGE}.train")
    if st.button("Train the MLP on your source rows", type="primary", icon=":material/play_arrow:"):
        record = run_heavy(
            f"{PAGE}.train",
            f"Training a tanh MLP (2 × 64) on {task.sizes['source']} source rows",
            lambda progress, device: _train_on_source(
                task, user.digest, progress=progress, device=device
            ),
            inputs=inputs,
            device=torch.device("cpu"),
        )
    if not show_record_status(f"{PAGE}.train", record, inputs):
        st.info("Press the button to train a network on your source data first (seconds).")
        return None
    key = f"{PAGE}.trained_lin"
    cached = st.session_state.get(key)
    if cached is None or cached[0] is not record.result:
        cached = (record.result, ntkcore.Linearization(record.result))
        st.session_state[key] = cached
    return cached[1]


def _fit_hyperparameters(lin: ntkcore.Linearization, x: torch.Tensor, y: torch.Tensor,
                         mean: str) -> None:  # fmt: skip
    """Button callback: set σ² and s² to the marginal-likelihood maximizers (on the grid)."""
    with LIGHT.hold():
        fit = ntkcore.fit_hyperparameters(lin, x, y, mean=mean)
    st.session_state["noise_variance"] = _nearest(NOISE_VARIANCES, fit.noise_variance)
    st.session_state["prior_variance"] = _nearest(PRIOR_VARIANCES, fit.prior_variance)
    st.session_state["adapt.fit_note"] = (
        f"Marginal likelihood maximized at σ² = {fit.noise_variance:.3g}, "
        f"s² = {fit.prior_variance:.3g} (log p(y) = {fit.log_marginal_likelihood:.1f} on "
        f"{fit.num_points} points); the sliders show the nearest grid values."
    )


# ----------------------------------------------------------------------------- clicks
def _is_curve(task: data.Task) -> bool:
    return tuple(task.meta.input_shape) == (1,)


def _added_points(problem: Problem) -> list[tuple[float, float]]:
    return st.session_state.setdefault(ADDED_KEY, {}).setdefault(problem.key, [])


def _take_click(problem: Problem) -> None:
    """Turn a click on the figure's click grid into an added context point (once per click)."""
    event = st.session_state.get(FIGURE_KEY)
    points = (event or {}).get("selection", {}).get("points", [])
    clicked = [(float(p["x"]), float(p["y"])) for p in points if "x" in p and "y" in p]
    if clicked and clicked != st.session_state.get(SEEN_SELECTION_KEY):
        _added_points(problem).extend(clicked)
    st.session_state[SEEN_SELECTION_KEY] = clicked


def _context(problem: Problem, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = problem.task.context(n)
    added = _added_points(problem) if _is_curve(problem.task) else []
    if added:
        extra = torch.tensor(added, dtype=x.dtype)
        x = torch.cat([x, extra[:, :1]])
        y = torch.cat([y, extra[:, 1:]])
    return x, y


# ----------------------------------------------------------------------------- adapting
@dataclass(frozen=True)
class Result:
    """What one adaptation produced (arrays in NumPy), for the figure and the cards."""

    settings: Settings
    problem: Problem
    x_context: np.ndarray
    y_context: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    network: np.ndarray
    truth: np.ndarray | None
    scores: list[dict[str, Any]]
    diagnostics: dict[str, Any]
    band: dict[str, Any]  # the prediction's variance diagnostics (accuracy of the band)
    num_params: int
    baseline_means: dict[str, np.ndarray]
    grid_mean: np.ndarray | None  # spatial tasks: posterior at every map location
    grid_variance: np.ndarray | None  # of y (noise included)


@st.cache_resource(show_spinner=False)
def _prepared_baselines() -> set[tuple[str, str, str]]:
    """(dataset, preset, method) whose source-side fit this server has done."""
    return set()


def _prepare_baselines(s: Settings, problem: Problem) -> None:
    """Do the chosen baselines' source-side work (seconds: ABLR's feature learning, the RBF
    GP's hyperparameters) once per server, under the heavy slot, with a status line;
    ``methods.prepared`` keeps the result for every session."""
    if problem.source is None:
        return
    dataset, preset_id = problem.source
    done = _prepared_baselines()
    for label in s.baselines:
        key = (dataset, preset_id, BASELINES[label])
        if key in done:
            continue
        with st.status(f"Preparing {label} on the source task (once per server)…") as status:
            with HEAVY.hold():
                methods.prepared(BASELINES[label], methods.cached_source(dataset, preset_id))
            status.update(label=f"{label} prepared on the source task", state="complete")
        done.add(key)


def _baseline(problem: Problem, label: str) -> methods.Method:
    """An unfitted baseline prepared on the problem's zoo source network (cached)."""
    dataset, preset_id = problem.source
    return methods.prepared(BASELINES[label], methods.cached_source(dataset, preset_id))


def _adapt(s: Settings, problem: Problem) -> Result:
    """Condition the finite-NTK GP on the context and predict at the task's test inputs."""
    task, lin = problem.task, problem.lin
    x_context, y_context = _context(problem, s.n_context)
    x_test, y_test = task.test
    post = ntkcore.adapt(
        lin,
        x_context,
        y_context,
        noise_variance=s.noise_variance,
        prior_variance=s.prior_variance,
        mean=s.mean,
        strategy=s.strategy,
    )
    pred = post.predict(x_test)
    with torch.no_grad():
        network = lin(x_test)
    if not (torch.isfinite(pred.mean).all() and torch.isfinite(pred.variance).all()):
        raise ValueError(
            "the posterior has non-finite values at these settings (try a larger noise "
            "variance σ² or float64)"
        )
    truth = None
    if task.meta.target_function is not None:
        truth = np.asarray(task.meta.target_function(x_test), dtype=np.float64)
    sigma2 = s.noise_variance
    scores = [
        {
            "method": "finite NTK" if s.mean == "zero" else "linearized network",
            "MSE": metrics.mse(pred.mean, y_test),
            "NLL": metrics.gaussian_nll(pred.mean, pred.variance, y_test, sigma2),
            "95% coverage": metrics.coverage(pred.mean, pred.variance, y_test, 2.0, sigma2),
        },
    ]
    # The network as a point method: its predictive variance is its mean squared residual on
    # the context points (how ntkcore.experiments.methods scores point methods).
    with torch.no_grad():
        network_context = lin(lin.prepare_inputs(x_context))
    network_var = methods.residual_variance(network_context, y_context.to(network_context))
    predictives = {"network (no retraining)": (network, network_var.expand_as(network))}
    for label in s.baselines:
        method = _baseline(problem, label)
        predictives[label] = method.fit(x_context, y_context).predict(x_test)
    baseline_means = {}
    for label, (mean_y, var_y) in predictives.items():
        if not (torch.isfinite(mean_y).all() and torch.isfinite(var_y).all()):
            raise ValueError(f"{label} predicted non-finite values at these settings")
        scores.append(
            {
                "method": label,
                "MSE": metrics.mse(mean_y, y_test),
                "NLL": metrics.gaussian_nll(mean_y, var_y, y_test),
                "95% coverage": metrics.coverage(mean_y, var_y, y_test, 2.0),
            }
        )
        if label in BASELINES:
            baseline_means[label] = mean_y.double().numpy()
    grid_mean = grid_var = None
    if task.meta.name == "spatial":
        grid = data.map_grid(task)
        grid_pred = post.predict(grid.x)
        grid_mean, grid_var = grid_pred.mean.numpy(), grid_pred.variance.numpy() + sigma2
    return Result(
        settings=s,
        problem=problem,
        x_context=x_context.numpy(),
        y_context=y_context.numpy(),
        x_test=x_test.numpy(),
        y_test=y_test.numpy(),
        mean=pred.mean.numpy(),
        variance=pred.variance.numpy(),
        network=network.numpy(),
        truth=truth,
        scores=scores,
        diagnostics=dict(post.diagnostics),
        band={k: v for k, v in pred.diagnostics.items() if k.startswith("variance_")},
        num_params=lin.num_params,
        baseline_means=baseline_means,
        grid_mean=grid_mean,
        grid_variance=grid_var,
    )


# ----------------------------------------------------------------------------- drawing
def _figure(result: Result) -> Any:
    s, task = result.settings, result.problem.task
    shape = tuple(task.meta.input_shape)
    if shape == (1,):
        return posterior_band_figure(
            result.x_test,
            result.mean,
            result.variance,
            context=(result.x_context, result.y_context),
            truth=None if result.truth is None else (result.x_test, result.truth),
            network=(result.x_test, result.network),
            source=task.source if s.show_source and task.has_source else None,
            baselines={k: (result.x_test, v) for k, v in result.baseline_means.items()},
            click_grid=40,
        )
    if result.grid_mean is not None:
        grid = data.map_grid(task)
        mean, sd = grid.to_physical(
            torch.from_numpy(result.grid_mean), torch.from_numpy(result.grid_variance)
        )
        context = np.zeros(grid.x.shape[0], dtype=bool)
        context[grid.pool[: s.n_context]] = True
        table = pd.DataFrame(
            {"lon": grid.lon, "lat": grid.lat, "source": grid.source, "target": grid.target,
             "mean": mean, "std": sd, "context": context}
        )  # fmt: skip
        return spatial_maps_figure(table, units=grid.units)
    if len(shape) == 3:
        count = STRIP_IMAGES
        transform = task.meta.transform
        scale, shift = float(transform.get("y_std", 1.0)), float(transform.get("y_mean", 0.0))
        degrees = "°" if transform.get("y_units") == "degrees" else ""
        images = task.test[0][:count, 0].numpy()
        titles = [
            f"true {shift + scale * float(t):.0f}{degrees}<br>pred "
            f"{shift + scale * float(m):.0f}{degrees} ± {2 * scale * math.sqrt(float(v)):.0f}"
            f"{degrees}"
            for t, m, v in zip(
                result.y_test[:count, 0], result.mean[:count, 0], result.variance[:count, 0],
                strict=True,
            )
        ]  # fmt: skip
        return image_strip_figure(images, titles, height=170)
    return parity_figure(result.y_test, result.mean, result.variance + s.noise_variance)


def _cards(result: Result) -> None:
    diag = result.diagnostics
    st.metric("Solve time", f"{1e3 * diag['seconds']:.0f} ms", help="Time spent in adapt().")
    st.metric("Strategy", str(diag["strategy"]), help=str(diag.get("reason", "")))
    if diag.get("iterations"):
        st.metric(
            "CG", f"{diag['iterations']} it.", f"residual {diag['residual']:.1e}",
            delta_color="off",
        )  # fmt: skip
    st.metric("Parameters p", f"{result.num_params:,}")
    band = result.band
    if band.get("variance_method"):
        st.metric(
            "Band accuracy",
            accuracy_label(band),
            help="How close the ±2σ band's variances are to the exact posterior variances: "
            + str(band.get("variance_accuracy", "")),
        )
        st.caption(f"Band: {band.get('variance_accuracy', '')}.")
        if band.get("variance_converged") is False:
            st.warning("The band's variance correction stopped before its target accuracy.")
    if diag.get("converged") is False:
        st.warning("The solver did not reach its tolerance: the posterior is approximate.")


def _show(result: Result) -> None:
    s, problem = result.settings, result.problem
    plot_col, cards_col = st.columns([4, 1], gap="medium")
    with plot_col:
        figure = _figure(result)
        st.plotly_chart(
            figure,
            key=FIGURE_KEY,
            on_select="rerun" if _is_curve(problem.task) else "ignore",
            selection_mode="points",
            config={"displaylogo": False},
        )
        if _is_curve(problem.task):
            added = _added_points(problem)
            left, right = st.columns([3, 1])
            left.caption(f"Click anywhere on the plot to add a context point ({len(added)} added).")
            if added and right.button("Clear added points", icon=":material/delete:"):
                added.clear()
                st.rerun()
        elif result.grid_mean is not None:
            st.caption(
                f"Whole maps in {data.map_grid(problem.task).units}: the target map's truth, "
                "the posterior mean conditioned on the purple context cells (the rest of the "
                "target map is the test set), and the posterior standard deviation of y "
                "(noise included), which shrinks near the context cells."
            )
        elif len(problem.task.meta.input_shape) == 3:
            st.caption(
                f"The first {STRIP_IMAGES} of the target task's held-out test images, each "
                "with its true value and the posterior mean ± 2 latent standard deviations "
                "(σ² not added); the scores below cover every test image."
            )
        elif len(problem.task.meta.input_shape) == 1:
            st.caption(
                "Inputs have several columns: each test point is drawn at its true value "
                "(x) and its predictive mean ± 2 standard deviations of y (y)."
            )
        st.markdown(common.markdown_table(result.scores, SCORE_FORMATS))
        st.caption(
            f"Scores on the target task's {result.y_test.shape[0]} held-out test points; "
            f"n = {result.x_context.shape[0]} context points. NLL and coverage score y "
            f"(latent variance + σ²)."
        )
    with cards_col:
        _cards(result)
    common.reproduce(
        f"""
import ntkcore
from ntkcore import data, zoo

{problem.task_code}
{problem.model_code}
x, y = task.context({s.n_context})
post = ntkcore.adapt(model, x, y, noise_variance={s.noise_variance:g},
                     prior_variance={s.prior_variance:g}, mean={s.mean!r}, strategy={s.strategy!r})
pred = post.predict(task.test[0])
print(post.diagnostics["strategy"], pred.mean[:5, 0], pred.variance[:5, 0])
"""
    )


# ----------------------------------------------------------------------------- the page
st.title(HEADING)
st.markdown(
    "A network trained on a **source** task is linearized around its trained weights: "
    "the linear model is a Gaussian process whose kernel is the Gram matrix of the network's "
    "Jacobian (the *finite NTK*). Conditioning it on a few points of a **target** task adapts "
    "the network in closed form — no gradient steps — with uncertainty (Maddox et al., "
    "*Fast Adaptation with Linearized Neural Networks*, AISTATS 2021, Eq. 1–3). "
    "Every change below recomputes the posterior live."
)

chosen_dataset, chosen_seed = _task_widgets()
user_data = uploads.data_panel(PAGE) if chosen_dataset == USER_DATA else None
settings = _sidebar(chosen_dataset, chosen_seed, user_data)
problem = _problem(settings, user_data)
if problem is not None:
    _take_click(problem)
    x_fit, y_fit = _context(problem, settings.n_context)
    st.sidebar.button(
        "Fit σ², s² by marginal likelihood",
        on_click=_fit_hyperparameters,
        args=(problem.lin, x_fit, y_fit, settings.mean),
        help="Maximize log p(y) of the context points over σ² and s² (exact, dense).",
        icon=":material/auto_fix_high:",
    )
    if note := st.session_state.get("adapt.fit_note"):
        st.sidebar.caption(note)
    # Computing and drawing (building and serializing the figure) hold the light slot: at
    # most one session runs this Python-heavy part at a time, so the server's event loop keeps
    # its share of the GIL however many sessions are busy (app/compute.py).
    _prepare_baselines(settings, problem)
    with LIGHT.hold():
        try:
            result: Result | None = _adapt(settings, problem)
        except ValueError as err:
            st.error(f"Cannot adapt with these settings: {err}")
            result = st.session_state.get(LAST_RESULT_KEY)
            if result is not None:
                st.caption("Showing the last result that worked.")
        else:
            st.session_state[LAST_RESULT_KEY] = result
        if result is not None:
            _show(result)
