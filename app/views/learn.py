"""Learn: a workshop tour of linearized networks, each idea with a live mini-demo.

Sections follow Maddox et al. (AISTATS 2021), Section 3: the linearization (Eq. 1) along a line
in parameter space, the finite NTK J Jᵀ, the posterior in weight and in function space
(Eq. 2–3) with the numbers of the running example, when each space is cheaper, and the
finite-difference Fisher-vector product (Eq. 5). Exercises at the top fill the widgets.

Every section recomputes live (cached per input in ``st.cache_data``); its computation and its
figure (built and serialized) hold the light compute slot, one section at a time, as the Adapt
page does (``app/compute.py``). Only the timing measurement of section 4 runs behind a button,
under the heavy slot. The numerics live in
``ntkcore.experiments.tour`` and the figures in ``ntkcore.plots.tour``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

import ntkcore
from app import common
from app.compute import LIGHT, last_record, run_heavy, show_record_status
from app.learn_content import (
    COST_PARAMS,
    DEFAULT_NETWORK,
    EXERCISES,
    FD_POINTS,
    FD_SCHEMES,
    FD_STEPS,
    KERNEL_SCALES,
    LAYER_LABELS,
    LAYERS,
    LINE_GRID,
    LINE_RANGES,
    N_GRID,
    NETWORKS,
    NOISE_VARIANCES,
    P_GRID,
    PRIOR_MEANS,
    PRIOR_VARIANCES,
    TASK_DEFAULTS,
    THRESHOLDS,
    TIMING_N,
)
from ntkcore.experiments import tour
from ntkcore.plots import posterior_band_figure
from ntkcore.plots.tour import (
    fd_error_figure,
    kernel_heatmap_figure,
    linearization_path_figure,
    linearized_function_figure,
    space_cost_figure,
    with_test_point,
)

PAGE = "learn"
#: Section number -> its header's anchor (the exercises link to them).
SECTION_ANCHORS = {1: "linearization", 2: "kernel", 3: "posterior", 4: "spaces", 5: "fisher"}
HEADING = "Learn: linearized networks, one idea at a time"


# ------------------------------------------------------------------------ callbacks
def _network_defaults(net_id: str) -> dict[str, Any]:
    return dict(TASK_DEFAULTS[NETWORKS[net_id].dataset])


def _on_network_change() -> None:
    """A new running example: reset the posterior widgets to its task's defaults."""
    net_id = st.session_state.get("net", DEFAULT_NETWORK)
    for key, value in _network_defaults(net_id).items():
        st.session_state[key] = value


def _load_exercise() -> None:
    """Fill the widgets with the chosen exercise's settings (the exercise selector's callback)."""
    name = st.session_state.get("exercise")
    if name not in EXERCISES:
        return
    settings = EXERCISES[name].settings
    net_id = settings.get("net", st.session_state.get("net", DEFAULT_NETWORK))
    st.session_state["net"] = net_id
    for key, value in {**_network_defaults(net_id), **settings}.items():
        st.session_state[key] = value


def _fit_hyperparameters(net_id: str, seed: int, n: int, mean: str) -> None:
    """Button callback: σ², s² at the marginal-likelihood maximum (nearest grid values)."""
    lin = _linearization(net_id)
    x, y = _task(net_id, seed).context(n)
    with LIGHT.hold():
        fit = ntkcore.fit_hyperparameters(lin, x, y, mean=mean)
    st.session_state["post_noise"] = _nearest(NOISE_VARIANCES, fit.noise_variance)
    st.session_state["post_prior"] = _nearest(PRIOR_VARIANCES, fit.prior_variance)
    st.session_state["learn.fit_note"] = (
        f"Marginal likelihood maximized at σ² = {fit.noise_variance:.3g}, "
        f"s² = {fit.prior_variance:.3g}; the sliders show the nearest grid values."
    )


def _nearest(grid: tuple[float, ...], value: float) -> float:
    return min(grid, key=lambda g: abs(math.log(g) - math.log(value)))


# -------------------------------------------------------------------------- loaders
@st.cache_resource(max_entries=4, show_spinner=False)
def _initial_linearization(preset_id: str) -> ntkcore.Linearization:
    return ntkcore.Linearization(tour.initial_network(preset_id))


def _linearization(net_id: str) -> ntkcore.Linearization:
    net = NETWORKS[net_id]
    if net.trained:
        return common.linearization(net.preset_id)
    return _initial_linearization(net.preset_id)


def _task(net_id: str, seed: int) -> Any:
    return common.task(NETWORKS[net_id].dataset, int(seed))


def _grid(net_id: str, seed: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced inputs over the task's test range, shape (count, 1)."""
    x_test = _task(net_id, seed).test[0]
    return torch.linspace(float(x_test.min()), float(x_test.max()), count)[:, None]


def _x_range(net_id: str, seed: int) -> tuple[float, float]:
    x_test = _task(net_id, seed).test[0]
    return float(x_test.min()), float(x_test.max())


# ---------------------------------------------------------------- cached computations
@st.cache_data(max_entries=32, show_spinner=False)
def _path(net_id: str, seed: int, layers: str, max_alpha: float, line_seed: int,
          _lin: ntkcore.Linearization) -> tour.LinearizationPath:
    return tour.linearization_path(
        _lin, _grid(net_id, seed, LINE_GRID), alphas=np.linspace(-max_alpha, max_alpha, 41),
        layers=LAYERS[layers], seed=int(line_seed),
    )


@st.cache_data(max_entries=32, show_spinner=False)
def _kernel(net_id: str, seed: int, points: int, normalize: bool,
            _lin: ntkcore.Linearization) -> tour.KernelMatrix:
    return tour.kernel_matrix(_lin, _grid(net_id, seed, points), normalize=normalize)


@st.cache_data(max_entries=32, show_spinner=False)
def _posterior(net_id: str, seed: int, n: int, noise: float, prior: float, mean: str,
               x_star: float, _lin: ntkcore.Linearization
               ) -> tuple[tour.PosteriorNumbers, pd.DataFrame, pd.DataFrame]:
    """The numbers at x*, the band on the test grid and the context points (picklable)."""
    task = _task(net_id, seed)
    x, y = task.context(n)
    x_test, _ = task.test
    numbers = tour.posterior_numbers(
        _lin, x, y, torch.tensor([x_star]), noise_variance=noise, prior_variance=prior,
        mean=mean,
    )
    post = ntkcore.adapt(_lin, x, y, noise_variance=noise, prior_variance=prior, mean=mean)
    pred = post.predict(x_test)
    with torch.no_grad():
        network = _lin(x_test)
    truth = task.meta.target_function
    band = pd.DataFrame(
        {
            "x": x_test[:, 0].numpy().astype(float),
            "posterior_mean": pred.mean[:, 0].numpy().astype(float),
            "posterior_variance": pred.variance[:, 0].numpy().astype(float),
            "network": network[:, 0].numpy().astype(float),
            "true_function": (
                np.asarray(truth(x_test), dtype=float)[:, 0] if truth is not None else np.nan
            ),
        }
    ).sort_values("x", ignore_index=True)
    context = pd.DataFrame({"x": x[:, 0].numpy().astype(float),
                            "y": y[:, 0].numpy().astype(float)})
    return numbers, band, context


@st.cache_data(max_entries=16, show_spinner=False)
def _costs(p: int, outputs: int) -> pd.DataFrame:
    return tour.space_costs(N_GRID, [p], outputs=outputs)


@st.cache_data(max_entries=16, show_spinner=False)
def _fd(net_id: str, seed: int, n: int, scheme: str,
        _lin: ntkcore.Linearization) -> pd.DataFrame:
    task = _task(net_id, seed)
    x = torch.cat([task.target[0], task.test[0]])[:n]
    return tour.fd_fisher_error(_lin, x, FD_STEPS, schemes=FD_SCHEMES[scheme])


# ------------------------------------------------------------------------- formatting
def _fmt(value: float, digits: int = 4) -> str:
    """A number for LaTeX: ``digits`` significant digits, ×10^k outside [1e-3, 1e5)."""
    value = float(value)
    if value == 0:
        return "0"
    if 1 <= abs(value) < 1e5:
        decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
        return f"{value:.{decimals}f}"
    if 1e-3 <= abs(value) < 1:
        return f"{value:.{digits}g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return rf"{mantissa}\times 10^{{{int(exponent)}}}"


def _int(value: int) -> str:
    return f"{int(value):,}".replace(",", "{,}")


def _bmatrix(rows: np.ndarray, more_rows: bool, more_cols: bool) -> str:
    lines = []
    for row in np.atleast_2d(rows):
        cells = [_fmt(v, 3) for v in row]
        if more_cols:
            cells.append(r"\cdots")
        lines.append(" & ".join(cells))
    if more_rows:
        width = np.atleast_2d(rows).shape[1] + int(more_cols)
        lines.append(" & ".join([r"\vdots"] * width))
    return r"\begin{bmatrix}" + r" \\ ".join(lines) + r"\end{bmatrix}"


# ------------------------------------------------------------------------------ page
st.title(HEADING)
st.markdown(
    "A trained network, expanded to first order around its weights θ, becomes a linear model "
    "in its parameters — a Gaussian process whose kernel is the Gram matrix of the network's "
    "Jacobian, the *finite neural tangent kernel* (Maddox et al., *Fast Adaptation with "
    "Linearized Neural Networks*, AISTATS 2021, Section 3). Each section below takes one "
    "step of that argument and lets you poke at it; every change recomputes live. The "
    "running example (network and task) is chosen in the sidebar."
)

# Sidebar: the running example.
sidebar = st.sidebar
sidebar.header("Running example")
net_id = sidebar.selectbox(
    "Network",
    tuple(NETWORKS),
    index=tuple(NETWORKS).index(DEFAULT_NETWORK),
    format_func=lambda k: NETWORKS[k].label,
    key="net",
    bind="query-params",
    on_change=_on_network_change,
    help="A zoo network trained on its task's source data, or the same architecture at the "
    "initialization its training started from.",
)
seed = int(
    sidebar.number_input(
        "Target task (seed)", min_value=0, max_value=1_000_000, value=1, step=1,
        key="task_seed", bind="query-params",
        help="Draws the target task's data (context points, test grid).",
    )
)
lin = _linearization(net_id)
task = _task(net_id, seed)
theta_norm = float(lin.parameter_vector().norm())
sidebar.caption(
    f"p = {lin.num_params:,} parameters, ‖θ‖ = {theta_norm:.1f}. "
    f"Task: {task.meta.description}"
)

# (f) Exercises: a preset selector that fills the widgets.
with st.container(border=True):
    st.subheader("Exercises", anchor="exercises")
    exercise = st.selectbox(
        "Load an exercise (fills the widgets below)",
        ("none", *EXERCISES),
        format_func=lambda k: "— choose an exercise —" if k == "none" else EXERCISES[k].title,
        key="exercise",
        bind="query-params",
        on_change=_load_exercise,
    )
    if exercise in EXERCISES:
        chosen = EXERCISES[exercise]
        st.markdown(f"**{chosen.title}.** {chosen.question}")
        st.markdown(f"[Go to section {chosen.section} ↓](#{SECTION_ANCHORS[chosen.section]})")
        with st.expander("What to look for"):
            st.markdown(chosen.look_for)
    else:
        st.caption(
            "Six short exercises, each a starting point for one section: "
            + " · ".join(e.title for e in EXERCISES.values())
            + ". Loading one changes the widgets; you can share the page's URL to share the view."
        )

# ------------------------------------------------------------ 1. the linearization
st.header("1. A network and its linearization (Eq. 1)", anchor="linearization")
st.markdown(
    r"Eq. 1 replaces the network near its trained weights θ by its first-order Taylor "
    r"expansion, $f(x;\theta') \approx f(x;\theta) + J(x)(\theta'-\theta)$ with $J$ the "
    r"Jacobian in the parameters. Walk along a straight line $\theta' = \theta + \alpha d$ "
    r"in parameter space ($d$ a random direction of unit length): for each input the "
    r"linearization is a straight line in α (dashed), the network bends away from it (solid). "
    r"The right panel shows the share of the network's change that the linearization misses."
)
c1, c2, c3, c4 = st.columns(4)
layers = c1.radio(
    "Direction d moves",
    tuple(LAYERS),
    format_func=LAYER_LABELS.get,
    key="line_layers",
    bind="query-params",
    help="Which parameters the random direction changes (the others stay at θ).",
)
max_alpha = c2.select_slider(
    "Largest step |α|", LINE_RANGES, value=10.0, format_func=lambda v: f"{v:g}",
    key="line_range", bind="query-params",
    help="α runs over 41 steps in [−|α|, |α|]; compare with ‖θ‖ in the sidebar.",
)
threshold = c3.select_slider(
    "Error threshold", THRESHOLDS, value=0.1, format_func=lambda v: f"{v:.0%}",
    key="line_threshold", bind="query-params",
    help="Where the linearization 'breaks': the relative error reaches this value.",
)
line_seed = int(
    c4.number_input("Direction (seed)", min_value=0, max_value=10_000, value=0, step=1,
                    key="line_seed", bind="query-params", help="Draws the random direction d.")
)
with LIGHT.hold():
    path = _path(net_id, seed, layers, float(max_alpha), line_seed, lin)
    breaks = path.breaking_alpha(float(threshold))
    st.plotly_chart(
        linearization_path_figure(
            path.curves, path.errors, points=[10, 20, 30], threshold=float(threshold),
            breaking_alpha=breaks,
        ),
        key="learn_path_figure",
        config={"displaylogo": False},
    )
m1, m2, m3 = st.columns(3)
m1.metric("‖θ‖", f"{path.theta_norm:.2f}",
          help="Euclidean norm of the weights θ the network is linearized at.")
if breaks is None:
    m2.metric(f"Breaks at ({threshold:.0%} error)", f"not within ±{max_alpha:g}")
else:
    m2.metric(f"Breaks at ({threshold:.0%} error)", f"|α| = {breaks:.3g}",
              f"{breaks / path.theta_norm:.1%} of ‖θ‖", delta_color="off", delta_arrow="off")
m3.metric("Largest relative error", f"{np.nanmax(path.errors['relative_error']):.2%}",
          help=f"Over α in ±{max_alpha:g}; d moves {len(path.direction_params)} tensors: "
          + ", ".join(path.direction_params))
at_fraction = st.slider(
    "Show the whole function at α = (fraction of the largest step)",
    min_value=-1.0, max_value=1.0, value=0.5, step=0.05, key="line_at", bind="query-params",
    help="A view-only control: picks one α of the line above.",
)
with LIGHT.hold():
    st.plotly_chart(
        linearized_function_figure(path.curves, float(at_fraction) * float(max_alpha)),
        key="learn_function_figure",
        config={"displaylogo": False},
    )
d1, d2 = st.columns(2)
with d1:
    common.download_csv(path.curves, "learn-linearization-path.csv", "CSV of the curves")
with d2:
    common.download_csv(path.errors, "learn-linearization-errors.csv", "CSV of the errors")
common.reproduce(
    f"""
import numpy as np
from ntkcore import data, zoo
from ntkcore.experiments import tour
from ntkcore.plots.tour import linearization_path_figure

model = {"zoo.preset(" + repr(NETWORKS[net_id].preset_id) + ").load()"
         if NETWORKS[net_id].trained
         else "tour.initial_network(" + repr(NETWORKS[net_id].preset_id) + ")"}
x_test = data.load({NETWORKS[net_id].dataset!r}, seed={seed}).test[0]
x = np.linspace(float(x_test.min()), float(x_test.max()), {LINE_GRID})[:, None]
path = tour.linearization_path(model, x, alphas=np.linspace(-{max_alpha:g}, {max_alpha:g}, 41),
                               layers={LAYERS[layers]!r}, seed={line_seed})
print(path.breaking_alpha({threshold:g}), path.theta_norm)
linearization_path_figure(path.curves, path.errors, points=[10, 20, 30]).show()
"""
)

# ------------------------------------------------------------------ 2. the kernel
st.header("2. The finite NTK: the kernel J Jᵀ", anchor="kernel")
st.markdown(
    r"With a Gaussian prior on the linearized weights, $w \sim \mathcal N(0, s^2 I_p)$, the "
    r"linear model $f(x) = J(x)\,w$ is a Gaussian process with kernel "
    r"$k(x, x') = s^2 J(x) J(x')^\top$ — a kernel with only p features, built from the trained "
    r"network. The heatmap shows it on evenly spaced probe inputs: a large entry means an "
    r"observation at x moves the prediction at x′. The cosine view divides by "
    r"$\sqrt{k(x,x)\,k(x',x')}$ so that distant, large-gradient inputs do not drown the rest."
)
k1, k2 = st.columns(2)
lo_probe, hi_probe = _x_range(net_id, seed)
kernel_points = k1.slider("Probe points", min_value=5, max_value=61, value=25, step=1,
                          key="kernel_points", bind="query-params")
kernel_scale = k2.radio(
    "Show", KERNEL_SCALES,
    format_func={"cosine": "cosine similarity of the Jacobians",
                 "kernel": "the kernel J Jᵀ itself"}.get,
    key="kernel_scale", bind="query-params", horizontal=True,
)
heat_col, read_col = st.columns([3, 2], gap="large")
with LIGHT.hold():
    kernel = _kernel(net_id, seed, int(kernel_points), kernel_scale == "cosine", lin)
    heat_col.plotly_chart(
        kernel_heatmap_figure(kernel, height=480),
        key="learn_kernel_figure",
        config={"displaylogo": False},
    )
with read_col:
    st.markdown(
        f"**How to read it.** Row x, column x′ of the {kernel.values.shape[0]} × "
        f"{kernel.values.shape[0]} matrix for the {NETWORKS[net_id].label} "
        f"(inputs from {lo_probe:g} to {hi_probe:g}). The diagonal is k(x, x) = ‖J(x)‖², the "
        "prior variance at x up to s². A block of similar colour is a group of inputs the "
        "network treats alike: conditioning on one of them moves the others. Switch the "
        "network in the sidebar to see how training reshaped the kernel."
    )
common.download_csv(kernel.tidy(), "learn-kernel.csv", "CSV of the kernel")
common.reproduce(
    f"""
import torch
from ntkcore import zoo
from ntkcore.experiments import tour
from ntkcore.plots.tour import kernel_heatmap_figure

model = {"zoo.preset(" + repr(NETWORKS[net_id].preset_id) + ").load()"
         if NETWORKS[net_id].trained
         else "tour.initial_network(" + repr(NETWORKS[net_id].preset_id) + ")"}
lo, hi = {_x_range(net_id, seed)[0]:g}, {_x_range(net_id, seed)[1]:g}
kernel = tour.kernel_matrix(model, torch.linspace(lo, hi, {int(kernel_points)})[:, None],
                            normalize={kernel_scale == "cosine"})
kernel_heatmap_figure(kernel).show()
"""
)

# --------------------------------------------------------------- 3. the posterior
st.header("3. The posterior, in weight or function space (Eq. 2–3)", anchor="posterior")
st.markdown(
    r"Observe $n$ points $y = m(X) + J w + \varepsilon$ with noise "
    r"$\varepsilon \sim \mathcal N(0, \sigma^2 I)$ and prior mean $m$ (zero: the finite NTK; "
    r"or the network itself). The predictive distribution at a new input $x^*$ is Gaussian, "
    r"and there are two ways to write it: Eq. 2 solves a $p\times p$ system in weight space, "
    r"Eq. 3 an $n\times n$ system in function space (Woodbury's identity turns one into the "
    r"other). The numbers below are those of the current example and agree to rounding."
)
lo, hi = _x_range(net_id, seed)
defaults = _network_defaults(net_id)
if not lo <= float(st.session_state.get("post_x", defaults["post_x"])) <= hi:
    st.session_state["post_x"] = defaults["post_x"]
p1, p2, p3 = st.columns(3)
post_n = p1.slider("Context points n", min_value=1, max_value=50, value=defaults["post_n"],
                   key="post_n", bind="query-params")
post_x = p1.slider("Test input x*", min_value=lo, max_value=hi, value=float(defaults["post_x"]),
                   step=(hi - lo) / 120, format="%.2f", key="post_x", bind="query-params")
post_noise = p2.select_slider("Noise variance σ²", NOISE_VARIANCES,
                              value=defaults["post_noise"], format_func=lambda v: f"{v:g}",
                              key="post_noise", bind="query-params")
post_prior = p2.select_slider("Prior variance s²", PRIOR_VARIANCES,
                              value=defaults["post_prior"], format_func=lambda v: f"{v:g}",
                              key="post_prior", bind="query-params")
post_mean = p3.radio("Prior mean m", PRIOR_MEANS, key="post_mean",
                     bind="query-params", horizontal=True,
                     help="zero: the finite NTK. network: m(x) = f(x; θ), the linearized network.")
p3.button(
    "Fit σ², s² by marginal likelihood",
    on_click=_fit_hyperparameters, args=(net_id, seed, int(post_n), str(post_mean)),
    icon=":material/auto_fix_high:",
)
if note := st.session_state.get("learn.fit_note"):
    p3.caption(note)
with LIGHT.hold():
    nums, band, context = _posterior(net_id, seed, int(post_n), float(post_noise),
                                     float(post_prior), str(post_mean), float(post_x), lin)
    figure = posterior_band_figure(
        band["x"], band["posterior_mean"], band["posterior_variance"],
        context=(context["x"], context["y"]),
        truth=(band["x"], band["true_function"]) if band["true_function"].notna().all() else None,
        network=(band["x"], band["network"]),
        height=420,
    )
    with_test_point(figure, float(post_x), float(nums.function_space_mean[0]),
                    float(nums.function_space_variance[0]))
    st.plotly_chart(figure, key="learn_posterior_figure", config={"displaylogo": False})

c = nums.noise_variance / nums.prior_variance
k = nums.kernel_block.shape[0]
more = nums.n * nums.outputs > k
st.markdown(
    "**The numbers.** " + (
        f"n = {nums.n}, o = {nums.outputs}, p = {nums.num_params:,}, "
        f"σ² = {nums.noise_variance:g}, s² = {nums.prior_variance:g}, so c = σ²/s² = {c:.4g}. "
        f"J is the n·o × p Jacobian at the context inputs, J* = J(x*) at x* = "
        f"{float(post_x):.3g}, r = y − m(X) the residual. Their first entries:"
    ).replace("*", "\\*")
)
# One equation per line, each short enough for a narrow window (KaTeX does not wrap).
st.latex(r"K = J J^\top = " + _bmatrix(nums.kernel_block, more, more))
st.latex(
    r"k_* = J J_*^\top = " + _bmatrix(nums.cross_kernel[:, None], more, False)
    + r",\qquad r = " + _bmatrix(nums.residual[:, None], more, False)
)
mean_term = r"m(x^*) + " if nums.mean_type == "network" else ""
st.latex(
    r"\text{(1)}\quad\begin{aligned} f(x^*;\theta') &\approx f(x^*;\theta) "
    r"+ J_*(\theta' - \theta) \\ "
    rf"f(x^*;\theta) &= {_fmt(nums.network_star[0])},\quad \lVert J_*\rVert = "
    rf"{_fmt(nums.jacobian_norm_star[0])} \\ s^2 \lVert J_*\rVert^2 &= "
    rf"{_fmt(nums.prior_variance * nums.jacobian_norm_star[0] ** 2)}"
    r"\quad\text{(prior variance at } x^*\text{)}\end{aligned}"
)
st.markdown(
    f"**Weight space (Eq. 2)**, a p × p = {nums.num_params:,} × {nums.num_params:,} system:"
)
st.latex(
    r"\text{(2)}\quad\begin{aligned} \mu_* &= " + mean_term
    + r"J_*\,(J^\top J + c\,I_p)^{-1} J^\top r = "
    + _fmt(nums.weight_space_mean[0])
    + r" \\ \sigma_*^2 &= \sigma^2 J_*\,(J^\top J + c\,I_p)^{-1} J_*^\top = "
    + _fmt(nums.weight_space_variance[0]) + r"\end{aligned}"
)
st.markdown(
    f"**Function space (Eq. 3)**, an n·o × n·o = {nums.n * nums.outputs} × "
    f"{nums.n * nums.outputs} system:"
)
st.latex(
    r"\text{(3)}\quad\begin{aligned} \mu_* &= " + mean_term
    + r"k_*^\top (K + c\,I_{n})^{-1} r = "
    + _fmt(nums.function_space_mean[0])
    + r" \\ \sigma_*^2 &= s^2\big(J_* J_*^\top - k_*^\top (K + c\,I_n)^{-1} k_*\big) = "
    + _fmt(nums.function_space_variance[0]) + r"\end{aligned}"
)
solver = (
    "a Cholesky factorization" if nums.weight_space_method == "cholesky"
    else f"conjugate gradients (a p × p Cholesky would cost {nums.num_params**3 / 3:.2g} "
    "multiply–adds on a live page)"
)
st.caption((
    f"Eq. 2 solved its {nums.num_params:,} × {nums.num_params:,} system by {solver}, Eq. 3 "
    f"its {nums.n * nums.outputs} × {nums.n * nums.outputs} one by a Cholesky factorization. "
    f"The library's "
    f"`ntkcore.adapt` (strategy “{nums.engine_strategy}”, float32) gives "
    f"μ* = {nums.engine_mean[0]:.4g}, σ*² = {nums.engine_variance[0]:.4g}; the diamond on "
    "the plot is x* with μ* ± 2σ*. Notation: J here is the engine's n·o × p Jacobian; the "
    "paper writes its transpose. The paper prints Eq. 3's variance with a leading σ²; with "
    "the prior N(0, I) of its Section 3, Woodbury's identity gives no such factor, and the "
    "two variances above agree only without it."
).replace("*", "\\*"))
n1, n2 = st.columns(2)
with n1:
    common.download_csv(band, "learn-posterior-band.csv", "CSV of the band")
with n2:
    common.download_csv(nums.table(), "learn-posterior-numbers.csv", "CSV of the numbers")
common.reproduce(
    f"""
import torch
import ntkcore
from ntkcore import data, zoo
from ntkcore.experiments import tour

model = {"zoo.preset(" + repr(NETWORKS[net_id].preset_id) + ").load()"
         if NETWORKS[net_id].trained
         else "tour.initial_network(" + repr(NETWORKS[net_id].preset_id) + ")"}
task = data.load({NETWORKS[net_id].dataset!r}, seed={seed})
x, y = task.context({int(post_n)})
numbers = tour.posterior_numbers(model, x, y, torch.tensor([{float(post_x):g}]),
                                 noise_variance={float(post_noise):g},
                                 prior_variance={float(post_prior):g}, mean={str(post_mean)!r})
print(numbers.table())
post = ntkcore.adapt(model, x, y, noise_variance={float(post_noise):g},
                     prior_variance={float(post_prior):g}, mean={str(post_mean)!r})
pred = post.predict(task.test[0])
"""
)

# ------------------------------------------------------- 4. function vs parameter space
st.header("4. Function space or parameter space: which is cheaper?", anchor="spaces")
st.markdown(
    r"Both equations start from the same Jacobian $J$, $N \times p$ with $N = n\cdot o$ "
    r"(points × outputs). Function space (Eq. 3) forms the $N\times N$ matrix $J J^\top$ and "
    r"factorizes it: $N^2 p + N^3/3$ multiply–adds. Parameter space (Eq. 2) forms the "
    r"$p\times p$ matrix $J^\top J$: $N p^2 + p^3/3$. The counts are mirror images, so the smaller "
    r"dimension wins — usually function space, since networks have more parameters than a "
    r"new task has points. The left panel is this flop count (a model, not a measurement); "
    r"the hover names the strategy the engine's own cost model, `ntkcore.choose_strategy`, "
    r"picks (exact `dense` while the Jacobian fits in memory, else matrix-free conjugate "
    r"gradients in the smaller space). **Run the measurement** times the two explicit "
    r"solves, and `ntkcore.adapt`, on this machine with the running example's network."
)
p_options = tuple(sorted({*P_GRID, lin.num_params}))
if st.session_state.get("cost_p") not in (None, *p_options):
    st.session_state["cost_p"] = lin.num_params
s1, s2 = st.columns(2)
cost_p = s1.select_slider(
    "Parameters p", p_options, value=lin.num_params, format_func=lambda v: f"{v:,}",
    key="cost_p", bind="query-params",
    help=f"The running example has p = {lin.num_params:,}.",
)
cost_linearize = s2.radio(
    "Measure with the example network, linearizing",
    tuple(COST_PARAMS), format_func={"all": "all layers", "last": "the last layer only"}.get,
    key="cost_linearize", bind="query-params", horizontal=True,
)
timing_lin = (
    lin if cost_linearize == "all"
    else ntkcore.Linearization(lin.model, params=COST_PARAMS[cost_linearize])
)
pool_x = torch.cat([task.source[0], task.target[0], task.test[0]])
pool_y = torch.cat([task.source[1], task.target[1], task.test[1]])
timing_n = tuple(n for n in TIMING_N if n <= pool_x.shape[0])
timing_inputs = {"net": net_id, "seed": seed, "linearize": cost_linearize, "n": timing_n,
                 "noise": float(post_noise), "prior": float(post_prior)}
if st.button("Run the measurement", icon=":material/timer:", key="cost_run",
             help="Times both explicit solves and ntkcore.adapt for n up to "
             f"{timing_n[-1]} (a few seconds)."):
    run_heavy(
        PAGE,
        f"Timing both solves for n = {timing_n[0]}…{timing_n[-1]} (p = {timing_lin.num_params:,})",
        lambda progress, device: tour.space_timings(
            timing_lin, pool_x, pool_y, timing_n, noise_variance=float(post_noise),
            prior_variance=float(post_prior), progress=progress,
        ),
        inputs=timing_inputs,
        device=torch.device("cpu"),
    )
record = last_record(PAGE)
fresh = show_record_status(PAGE, record, timing_inputs)
timings = record.result if record is not None and fresh else None
with LIGHT.hold():
    costs = _costs(int(cost_p), 1)
    st.plotly_chart(
        space_cost_figure(costs, timings),
        key="learn_cost_figure",
        config={"displaylogo": False},
    )
picks = (
    costs[costs["space"] == "function"][["n", "engine_strategy", "engine_reason"]]
    .loc[lambda t: t["n"].isin([1, 10, 100, 1_000, 10_000, 100_000, 1_000_000])]
    .rename(columns={"n": "n (o = 1)", "engine_strategy": "engine picks",
                     "engine_reason": "why (ntkcore.choose_strategy)"})
)
st.table(picks, hide_index=True)
if timings is not None:
    st.caption(
        "Measured: median of 3 runs per solve, float64, on the CPU of the machine serving this "
        "page (shared with other users: times include its load). The two solves give the same "
        f"weights to {timings['weights_difference'].max():.0e} relative."
    )
t1, t2 = st.columns(2)
with t1:
    common.download_csv(costs, "learn-space-costs.csv", "CSV of the cost model")
with t2:
    if timings is not None:
        common.download_csv(timings, "learn-space-timings.csv", "CSV of the timings")
common.reproduce(
    f"""
from ntkcore.experiments import tour
from ntkcore.plots.tour import space_cost_figure

costs = tour.space_costs(n_values=[10, 100, 1000, 10000, 100000], p_values=[{int(cost_p)}])
print(costs[["n", "space", "flops", "cheaper", "engine_strategy"]])
# measured: tour.space_timings(model_or_linearization, x_pool, y_pool, n_values=[16, 64, 256],
#                              noise_variance=..., prior_variance=...)
space_cost_figure(costs).show()
"""
)

# --------------------------------------------------- 5. the finite-difference Fisher
st.header("5. The finite-difference Fisher trick (Eq. 5)", anchor="fisher")
st.markdown(
    r"Solving in parameter space with conjugate gradients needs products $J^\top J v$, which "
    r"for a Gaussian likelihood are $n$ times a Fisher-vector product $F v$. Eq. 5 gets $F v$ "
    r"from the gradient of a KL divergence between the network at θ and at $\theta + \varepsilon "
    r"v$: one extra forward and one backward pass instead of a double backward. Its error "
    r"against the exact product is a U in ε: rounding (∝ 1/ε) on the left, truncation on "
    r"the right. ReLU networks add a third error: units whose sign flips between θ and "
    r"θ + εv. The engine *freezes* the activation pattern recorded at θ (the ★ mark each "
    r"scheme's automatic step); *live* kinks re-decide every ReLU, as the paper's code did."
)
f1, f2 = st.columns(2)
fd_n = f1.select_slider("Data points n", FD_POINTS, value=64, key="fd_n", bind="query-params")
fd_scheme = f2.radio(
    "Differences", tuple(FD_SCHEMES),
    format_func={"forward": "forward (Eq. 5)", "central": "central",
                 "both": "forward and central"}.get,
    index=2, key="fd_scheme", bind="query-params", horizontal=True,
)
with LIGHT.hold():
    fd = _fd(net_id, seed, int(fd_n), str(fd_scheme), lin)
    st.plotly_chart(fd_error_figure(fd), key="learn_fd_figure", config={"displaylogo": False})
auto = fd[fd["step"] == "automatic"].set_index(["kinks", "scheme"])["relative_error"]
st.caption(
    f"Median over 4 random directions v of ‖F v (fd) − F v‖ / ‖F v‖, float32 network, exact "
    f"product in float64; {NETWORKS[net_id].label}, n = {int(fd_n)}. At the automatic steps: "
    + "; ".join(f"{kinks}, {scheme}: {value:.1e}" for (kinks, scheme), value in auto.items())
    + ". Where frozen and live kinks give the same error (small ε; every ε for the tanh "
    "network) the red curve hides the blue one."
)
common.download_csv(fd, "learn-fd-fisher-error.csv", "CSV of the errors")
common.reproduce(
    f"""
import numpy as np
import torch
from ntkcore import data, zoo
from ntkcore.experiments import tour
from ntkcore.plots.tour import fd_error_figure

model = {"zoo.preset(" + repr(NETWORKS[net_id].preset_id) + ").load()"
         if NETWORKS[net_id].trained
         else "tour.initial_network(" + repr(NETWORKS[net_id].preset_id) + ")"}
task = data.load({NETWORKS[net_id].dataset!r}, seed={seed})
x = torch.cat([task.target[0], task.test[0]])[:{int(fd_n)}]
table = tour.fd_fisher_error(model, x, np.logspace(-7, 0, 15), kinks=("frozen", "live"),
                             schemes={FD_SCHEMES[str(fd_scheme)]!r})
fd_error_figure(table).show()
"""
)
