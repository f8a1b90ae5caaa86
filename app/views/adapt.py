"""Adapt: few-shot transfer of a trained network to a new task by finite-NTK GP inference.

A source network from the model zoo (trained once on the task's source data, cached on disk)
is linearized around its trained weights; the linearization is a Gaussian process whose kernel
is the Gram matrix of the network's Jacobian (Maddox et al., 2021, Eq. 1-3). Conditioning it
on a few target points adapts the network in closed form. The posterior is live: every widget
change recomputes it (it takes milliseconds for the zoo's small networks).

The page only wires widgets to the library: the numerics live in ``ntkcore``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch

import ntkcore
from app import common
from app.compute import LIGHT
from ntkcore import data, metrics, zoo
from ntkcore.plots import image_strip_figure, posterior_band_figure
from ntkcore.posterior import MEANS, STRATEGIES

PAGE = "adapt"
HEADING = "Adapt a trained network to a new task"
#: Regression tasks the page offers (classification lives on its own page).
TASKS = tuple(
    name
    for name in ("sinusoids", "linear-to-sine", "toy-gap", "spatial", "faces-rotation")
    if name in data.available()
)
LAST_RESULT_KEY = "adapt.last_result"
ADDED_KEY = "adapt.added_points"
SEEN_SELECTION_KEY = "adapt.seen_selection"
FIGURE_KEY = "adapt_figure"


def _log_grid(low: int, high: int, per_decade: int = 4) -> tuple[float, ...]:
    """1, 1.8, 3.2, 5.6 × 10^k for k in [low, high]: variances on a log scale."""
    steps = [10 ** (i / per_decade) for i in range(per_decade)]
    grid = [float(f"{m * 10.0**k:.2g}") for k in range(low, high) for m in steps]
    return (*grid, float(10.0**high))


NOISE_VARIANCES = _log_grid(-6, 1)
PRIOR_VARIANCES = _log_grid(-4, 2)


def _nearest(grid: tuple[float, ...], value: float) -> float:
    return min(grid, key=lambda g: abs(math.log(g) - math.log(value)))


@dataclass(frozen=True)
class Settings:
    dataset: str
    preset_id: str
    seed: int
    n_context: int
    noise_variance: float
    prior_variance: float
    mean: str
    strategy: str
    show_source: bool


def _sidebar() -> Settings:
    sidebar = st.sidebar
    sidebar.header("Task")
    dataset = sidebar.selectbox(
        "Source → target task",
        TASKS,
        key="dataset",
        bind="query-params",
        format_func=lambda n: f"{n}",
        help="The network is trained on the task's source data and adapted to its target.",
    )
    presets = zoo.presets_for(dataset)
    if not presets:
        sidebar.error(f"No pretrained architecture is registered for {dataset!r}.")
        st.stop()
    ids = [p.id for p in presets]
    if st.session_state.get("arch") not in ids:
        st.session_state["arch"] = ids[0]
    preset_id = sidebar.selectbox(
        "Pretrained architecture",
        ids,
        key="arch",
        bind="query-params",
        format_func=lambda i: zoo.preset(i).description,
        help="Zoo networks whose input fits the task, trained on its source data.",
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
    pool = common.task(dataset, int(seed)).target[0].shape[0]
    default_n = min(20, pool)
    n_context = sidebar.slider(
        "Context points",
        min_value=1,
        max_value=min(pool, 200),
        value=default_n,
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
    show_source = sidebar.checkbox(
        "Show source data",
        value=False,
        key="show_source",
        bind="query-params",
        help="What the network was trained on.",
    )
    return Settings(
        dataset=str(dataset),
        preset_id=str(preset_id),
        seed=int(seed),
        n_context=int(n_context),
        noise_variance=float(noise_variance),
        prior_variance=float(prior_variance),
        mean=str(mean),
        strategy=str(strategy),
        show_source=bool(show_source),
    )


def _fit_hyperparameters(s: Settings) -> None:
    """Button callback: set σ² and s² to the marginal-likelihood maximizers (on the grid)."""
    lin = common.linearization(s.preset_id)
    x, y = _context(s)
    with LIGHT.hold():
        fit = ntkcore.fit_hyperparameters(lin, x, y, mean=s.mean)
    st.session_state["noise_variance"] = _nearest(NOISE_VARIANCES, fit.noise_variance)
    st.session_state["prior_variance"] = _nearest(PRIOR_VARIANCES, fit.prior_variance)
    st.session_state["adapt.fit_note"] = (
        f"Marginal likelihood maximized at σ² = {fit.noise_variance:.3g}, "
        f"s² = {fit.prior_variance:.3g} (log p(y) = {fit.log_marginal_likelihood:.1f} on "
        f"{fit.num_points} points); the sliders show the nearest grid values."
    )


def _added_points(s: Settings) -> list[tuple[float, float]]:
    return st.session_state.setdefault(ADDED_KEY, {}).setdefault((s.dataset, s.seed), [])


def _take_click(s: Settings) -> None:
    """Turn a click on the figure's click grid into an added context point (once per click)."""
    event = st.session_state.get(FIGURE_KEY)
    points = (event or {}).get("selection", {}).get("points", [])
    clicked = [(float(p["x"]), float(p["y"])) for p in points if "x" in p and "y" in p]
    seen = st.session_state.get(SEEN_SELECTION_KEY)
    if clicked and clicked != seen:
        _added_points(s).extend(clicked)
    st.session_state[SEEN_SELECTION_KEY] = clicked


def _context(s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    task = common.task(s.dataset, s.seed)
    x, y = task.context(s.n_context)
    added = _added_points(s) if len(task.meta.input_shape) == 1 else []
    if added:
        extra = torch.tensor(added, dtype=x.dtype)
        x = torch.cat([x, extra[:, :1]])
        y = torch.cat([y, extra[:, 1:]])
    return x, y


@dataclass(frozen=True)
class Result:
    """What one adaptation produced (arrays in NumPy), for the figure and the cards."""

    settings: Settings
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
    num_params: int


def _adapt(s: Settings) -> Result:
    """Condition the finite-NTK GP on the context and predict at the task's test inputs."""
    task = common.task(s.dataset, s.seed)
    lin = common.linearization(s.preset_id)
    x_context, y_context = _context(s)
    x_test, y_test = task.test
    with LIGHT.hold():
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
        {
            "method": "network (no retraining)",
            "MSE": metrics.mse(network, y_test),
            "NLL": float("nan"),
            "95% coverage": float("nan"),
        },
    ]
    return Result(
        settings=s,
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
        num_params=lin.num_params,
    )


def _figure(result: Result) -> Any:
    s = result.settings
    task = common.task(s.dataset, s.seed)
    shape = task.meta.input_shape
    if len(shape) == 1 and shape[0] == 1:
        return posterior_band_figure(
            result.x_test,
            result.mean,
            result.variance,
            context=(result.x_context, result.y_context),
            truth=None if result.truth is None else (result.x_test, result.truth),
            network=(result.x_test, result.network),
            source=task.source if s.show_source else None,
            click_grid=40,
        )
    if len(shape) == 3:
        count = 8
        transform = task.meta.transform
        scale, shift = float(transform.get("y_std", 1.0)), float(transform.get("y_mean", 0.0))
        units = transform.get("y_units", "")
        images = task.test[0][:count, 0].numpy()
        titles = [
            f"true {shift + scale * float(t):.0f}{units[:3] if units == 'degrees' else ''} · "
            f"pred {shift + scale * float(m):.0f} ± {2 * scale * math.sqrt(float(v)):.0f}"
            for t, m, v in zip(
                result.y_test[:count, 0], result.mean[:count, 0], result.variance[:count, 0],
                strict=True,
            )
        ]
        return image_strip_figure(images, titles)
    return None


def _cards(result: Result) -> None:
    diag = result.diagnostics
    st.metric("Solve time", f"{1e3 * diag['seconds']:.0f} ms", help="Time spent in adapt().")
    st.metric("Strategy", str(diag["strategy"]), help=str(diag.get("reason", "")))
    if diag.get("iterations"):
        st.metric(
            "CG", f"{diag['iterations']} it.", f"residual {diag['residual']:.1e}",
            delta_color="off",
        )
    st.metric("Parameters p", f"{result.num_params:,}")
    if diag.get("converged") is False:
        st.warning("The solver did not reach its tolerance: the posterior is approximate.")


st.title(HEADING)
st.markdown(
    "A network trained on a **source** task is linearized around its trained weights: "
    "the linear model is a Gaussian process whose kernel is the Gram matrix of the network's "
    "Jacobian (the *finite NTK*). Conditioning it on a few points of a **target** task adapts "
    "the network in closed form — no gradient steps — with uncertainty (Maddox et al., "
    "*Fast Adaptation with Linearized Neural Networks*, AISTATS 2021, Eq. 1–3). "
    "Every change below recomputes the posterior live."
)

settings = _sidebar()
st.sidebar.button(
    "Fit σ², s² by marginal likelihood",
    on_click=_fit_hyperparameters,
    args=(settings,),
    help="Maximize log p(y) of the context points over σ² and s² (exact, dense).",
    icon=":material/auto_fix_high:",
)
if note := st.session_state.get("adapt.fit_note"):
    st.sidebar.caption(note)

_take_click(settings)
try:
    result: Result | None = _adapt(settings)
except ValueError as err:
    st.error(f"Cannot adapt with these settings: {err}")
    result = st.session_state.get(LAST_RESULT_KEY)
    if result is not None:
        st.caption("Showing the last result that worked.")
else:
    st.session_state[LAST_RESULT_KEY] = result

if result is not None:
    plot_col, cards_col = st.columns([4, 1], gap="medium")
    with plot_col:
        figure = _figure(result)
        if figure is not None:
            st.plotly_chart(
                figure,
                key=FIGURE_KEY,
                on_select="rerun",
                selection_mode="points",
                config={"displaylogo": False},
            )
        s = result.settings
        added = _added_points(s)
        if figure is not None and len(common.task(s.dataset, s.seed).meta.input_shape) == 1:
            left, right = st.columns([3, 1])
            left.caption(
                f"Click anywhere on the plot to add a context point ({len(added)} added)."
            )
            if added and right.button("Clear added points", icon=":material/delete:"):
                added.clear()
                st.rerun()
        st.dataframe(
            result.scores,
            hide_index=True,
            column_config={
                "MSE": st.column_config.NumberColumn(format="%.3g"),
                "NLL": st.column_config.NumberColumn(format="%.3g"),
                "95% coverage": st.column_config.NumberColumn(format="%.2f"),
            },
        )
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

task = data.load({s.dataset!r}, seed={s.seed})
model = zoo.preset({s.preset_id!r}).load()
x, y = task.context({s.n_context})
post = ntkcore.adapt(model, x, y, noise_variance={s.noise_variance:g},
                     prior_variance={s.prior_variance:g}, mean={s.mean!r}, strategy={s.strategy!r})
pred = post.predict(task.test[0])
print(post.diagnostics["strategy"], pred.mean[:5, 0], pred.variance[:5, 0])
"""
    )
