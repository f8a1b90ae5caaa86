"""Adapt: few-shot transfer of a trained network to a new sinusoid, by finite-NTK GP inference.

A three-layer tanh MLP (40 units) is trained once on a source sinusoid (``ntkcore.zoo`` preset
``sinusoids-mlp``). For a target sinusoid drawn from the same process (``ntkcore.data`` task
``sinusoids``, Kim et al., 2018) the page conditions the linearized network — a Gaussian
process whose kernel is the network's Jacobian Gram matrix (Maddox et al., 2021, Eq. 1-3) —
on a few target context points, and draws the posterior against the truth and the network.

The page only wires widgets to the library: the numerics live in ``ntkcore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import streamlit as st
import torch
from torch import nn

import ntkcore
from ntkcore import data, metrics, zoo
from ntkcore.plots import posterior_band_figure
from ntkcore.posterior import MEANS, STRATEGIES

SOURCE_PRESET = "sinusoids-mlp"
DATASET = "sinusoids"
NOISE_VARIANCES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
PRIOR_VARIANCES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
LAST_RESULT_KEY = "adapt.last_result"


@st.cache_resource(show_spinner="Training the source network (once per server)…")
def source_network() -> tuple[nn.Module, ntkcore.Linearization]:
    """The pretrained source MLP and its linearization, shared by every session."""
    model = zoo.preset(SOURCE_PRESET).load()
    return model, ntkcore.Linearization(model)


@st.cache_resource(show_spinner=False, max_entries=64)
def target_task(seed: int) -> data.Task:
    """The sinusoid transfer task whose target side is drawn with ``seed``."""
    return data.load(DATASET, seed=seed)


@dataclass(frozen=True)
class Result:
    """What one adaptation produced: the figure and the numbers shown beside it."""

    figure: go.Figure
    diagnostics: dict[str, Any]
    mse_posterior: float
    mse_network: float
    n_context: int
    num_params: int


def adapt_and_plot(
    seed: int,
    n_context: int,
    noise_variance: float,
    prior_variance: float,
    mean: str,
    strategy: str,
    show_source: bool,
) -> Result:
    """Condition the finite-NTK GP on the target context and build the figure.

    Raises
    ------
    ValueError
        From the library, for settings it rejects.
    """
    model, lin = source_network()
    task = target_task(seed)
    x_context, y_context = task.context(n_context)
    post = ntkcore.adapt(
        lin,
        x_context,
        y_context,
        noise_variance=noise_variance,
        prior_variance=prior_variance,
        mean=mean,
        strategy=strategy,
    )
    # The test inputs are an even grid over the input range: they also serve as the plot grid.
    x_test, y_test = task.test
    pred = post.predict(x_test)
    with torch.no_grad():
        network = model(x_test)
    truth = task.meta.target_function(x_test)
    figure = posterior_band_figure(
        x_test,
        pred.mean,
        pred.variance,
        context=(x_context, y_context),
        truth=(x_test, truth),
        network=(x_test, network),
        source=task.source if show_source else None,
    )
    return Result(
        figure=figure,
        diagnostics=dict(post.diagnostics),
        mse_posterior=metrics.mse(pred.mean, y_test),
        mse_network=metrics.mse(network, y_test),
        n_context=int(x_context.shape[0]),
        num_params=lin.num_params,
    )


def _sidebar() -> dict[str, Any]:
    """The page's controls; returns the keyword arguments of :func:`adapt_and_plot`."""
    sidebar = st.sidebar
    sidebar.header("Target task")
    seed = sidebar.number_input(
        "Target task (seed)",
        min_value=0,
        max_value=1_000_000,
        value=1,
        step=1,
        key="seed",
        help="Draws the target sinusoid's amplitude, frequency, phase and data.",
    )
    n_context = sidebar.slider(
        "Context points",
        min_value=1,
        max_value=50,
        value=20,
        key="n_context",
        help="Target observations the posterior is conditioned on (the first n of the pool).",
    )
    sidebar.header("Model")
    noise_variance = sidebar.select_slider(
        "Noise variance σ²",
        options=NOISE_VARIANCES,
        value=1e-3,
        format_func=lambda v: f"{v:g}",
        key="noise_variance",
        help="Observation noise of the target data (log scale).",
    )
    prior_variance = sidebar.select_slider(
        "Prior variance s²",
        options=PRIOR_VARIANCES,
        value=1e-2,
        format_func=lambda v: f"{v:g}",
        key="prior_variance",
        help="Prior variance of the linearized weights, w ~ N(0, s² I) (log scale).",
    )
    mean = sidebar.radio(
        "Prior mean",
        options=MEANS,
        index=MEANS.index("zero"),
        horizontal=True,
        key="mean",
        help="network: m(x) = f(x; θ), the linearized network. zero: the finite NTK alone.",
    )
    strategy = sidebar.selectbox(
        "Solver strategy",
        options=STRATEGIES,
        index=STRATEGIES.index("auto"),
        key="strategy",
        help="dense: explicit kernel; function: CG with Jacobian products; "
        "parameter: CG in weight space; auto: chosen from the problem size.",
    )
    show_source = sidebar.checkbox(
        "Show source data", value=False, key="show_source", help="What the network was trained on."
    )
    return {
        "seed": int(seed),
        "n_context": int(n_context),
        "noise_variance": float(noise_variance),
        "prior_variance": float(prior_variance),
        "mean": str(mean),
        "strategy": str(strategy),
        "show_source": bool(show_source),
    }


def _metrics(result: Result) -> None:
    diag = result.diagnostics
    st.metric(
        "Test MSE · posterior",
        f"{result.mse_posterior:.3g}",
        help="Mean squared error of the posterior mean on the target's held-out test points.",
    )
    st.metric(
        "Test MSE · network",
        f"{result.mse_network:.3g}",
        help="The source network's own error on the same points, without adaptation.",
    )
    st.metric("Solve time", f"{1e3 * diag['seconds']:.0f} ms", help="Time spent in adapt().")
    st.metric("Strategy", str(diag["strategy"]))
    if diag.get("converged") is False:
        st.warning("The solver did not reach its tolerance: the posterior is approximate.")


def _details(result: Result) -> None:
    diag = result.diagnostics
    details = [f"n = {result.n_context} context points, p = {result.num_params:,} parameters."]
    if diag.get("iterations"):
        details.append(f"CG: {diag['iterations']} iterations, residual {diag['residual']:.1e}.")
    if diag.get("reason"):
        details.append(f"Strategy: {diag['reason']}.")
    st.caption(" ".join(details))


st.title("Adapt a trained network to a new task")
st.markdown(
    "A three-layer tanh MLP was trained on **one** sinusoid. Linearizing it around its trained "
    "weights turns it into a Gaussian process whose kernel is the Gram matrix of the network's "
    "Jacobian (the *finite NTK*). Conditioning that GP on a few points of a **new** sinusoid "
    "adapts the network in closed form — no gradient steps — with calibrated uncertainty "
    "(Maddox et al., *Fast Adaptation with Linearized Neural Networks*, AISTATS 2021, Eq. 1–3)."
)

settings = _sidebar()
try:
    result: Result | None = adapt_and_plot(**settings)
except ValueError as err:
    st.error(f"Cannot adapt with these settings: {err}")
    result = st.session_state.get(LAST_RESULT_KEY)
    if result is not None:
        st.caption("Showing the last result that worked.")
else:
    st.session_state[LAST_RESULT_KEY] = result

if result is not None:
    plot_col, metrics_col = st.columns([4, 1], gap="medium")
    with plot_col:
        st.plotly_chart(result.figure, key="adapt_figure", config={"displaylogo": False})
        _details(result)
    with metrics_col:
        _metrics(result)
