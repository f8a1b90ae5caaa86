"""Compare architectures: the finite-NTK posteriors of two to four networks on one task.

Every network is linearized around its weights — trained on the task's source data, or at a
seeded random initialization — and the resulting Gaussian process (kernel s² J(x) J(x')ᵀ,
Maddox et al., 2021, Eq. 1-3) is conditioned on the *same* points with the same σ², s² and
prior mean (or σ², s² per network, stated in the table). The panels share their axes, so the
architectures' inductive biases can be read side by side: Section 4 and Figure 3 of the paper
(ReLU MLPs of widths 5 to 5,000 untrained and trained; tanh MLPs with ~21,000 parameters in
differently shaped layers), which one click reproduces.

Compute model (app/compute.py): training a network that is not yet in the zoo's disk cache is
heavy work behind a button (``run_heavy``, progress bar naming the network); once the networks
exist the posteriors are live, computed under the light slot and cached per network and
settings (``st.cache_data``), so changing one column recomputes one panel. The grid/overlay
toggle lives in an ``st.fragment`` and only redraws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

import ntkcore
from app import common
from app.compute import LIGHT, run_heavy
from ntkcore import data, metrics, zoo
from ntkcore.experiments import ProgressSteps
from ntkcore.experiments.inductive_biases import (
    RELU_TRAINING,
    TANH_TRAINING,
    default_noise_variance,
)
from ntkcore.plots import (
    ComparisonPanel,
    comparison_grid_figure,
    comparison_overlay_figure,
)
from ntkcore.posterior import MEANS, STRATEGIES
from ntkcore.variance import accuracy_label

PAGE = "compare"
HEADING = "Compare architectures on the same task"
MAX_MODELS = 4
CUSTOM = "custom MLP"
ACTIVATIONS = ("relu", "tanh", "gelu")
#: Largest custom network offered (the live posterior of a 21k-parameter MLP takes ~0.3 s).
MAX_WIDTH = 10_000
MAX_DEPTH = 6
MAX_PARAMS = 60_000
COLUMN_NAMES = "ABCD"
#: Widget keys (and URL query parameters) carry this prefix: session state is shared by all
#: pages, and the Adapt page's "dataset" or "n_context" must not leak into this page.
KEY_PREFIX = "cmp_"
SET_KEY = KEY_PREFIX + "set"
FIGURE_KEY = "compare_figure"


def _key(name: str) -> str:
    """The session-state key and URL query parameter of widget ``name``."""
    return KEY_PREFIX + name


# ----------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskChoice:
    """A 1-D regression task the page offers: registry name and load options."""

    name: str
    options: Mapping[str, Any]
    description: str
    source_equals_target: bool  # toy-gap: one function, the target pool a fresh draw


TASKS: dict[str, TaskChoice] = {
    "toy-gap-relu": TaskChoice(
        "toy-gap", MappingProxyType({"variant": "relu"}),
        "Figure 3 left/centre: y = 0.1x² + |x| + noise, two clusters around ±5 and a gap "
        "between them; the test grid runs over [−15, 15].", True,
    ),
    "toy-gap-sine": TaskChoice(
        "toy-gap", MappingProxyType({"variant": "sine"}),
        "Figure 3 right: y = 1.5 sin(1.2x + 0.4) + noise, two clusters around ±4 and a gap; "
        "the test grid runs over [−10, 10].", True,
    ),
    "sinusoids": TaskChoice(
        "sinusoids", MappingProxyType({}),
        "Transfer between two random sinusoids (Kim et al., 2018): the networks are trained on "
        "the source sinusoid and conditioned on points of the target one.", False,
    ),
    "linear-to-sine": TaskChoice(
        "linear-to-sine", MappingProxyType({}),
        "Negative transfer: the networks are trained on a line and conditioned on points of a "
        "sinusoid.", False,
    ),
}  # fmt: skip
SPLITS = ("source", "target")
HYPER_MODES = ("shared", "network MSE", "marginal likelihood")


def _log_grid(low: int, high: int, per_decade: int = 4) -> tuple[float, ...]:
    """1, 1.8, 3.2, 5.6 × 10^k for k in [low, high): variances on a log scale."""
    steps = [10 ** (i / per_decade) for i in range(per_decade)]
    grid = [float(f"{m * 10.0**k:.2g}") for k in range(low, high) for m in steps]
    return (*grid, float(10.0**high))


NOISE_VARIANCES = _log_grid(-6, 2)
PRIOR_VARIANCES = _log_grid(-4, 3)


# ----------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class ModelSpec:
    """One column: a zoo preset or a custom MLP, trained on the source or at its init.

    ``layers`` (hidden units per layer), ``activation`` and ``seed`` describe custom MLPs;
    presets carry their own architecture and seed.
    """

    preset_id: str | None
    layers: tuple[int, ...] = ()
    activation: str = "relu"
    trained: bool = True
    seed: int = 0

    @property
    def key(self) -> str:
        return repr(self)

    @property
    def arch(self) -> str:
        return "mlp" if self.preset_id is None else zoo.preset(self.preset_id).arch

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """Constructor keywords (the task's input and output sizes aside)."""
        if self.preset_id is not None:
            names = zoo.spec(self.arch).defaults
            return {k: v for k, v in zoo.preset(self.preset_id).hyper.items() if k in names}
        # One hidden layer: an int width; several: one width per layer (as Figure 3's code).
        width: int | tuple[int, ...] = self.layers[0] if len(self.layers) == 1 else self.layers
        return {"width": width, "depth": len(self.layers), "activation": self.activation}

    @property
    def training(self) -> dict[str, Any]:
        """Training hyperparameters of a custom MLP: Figure 3's (Adam, full batch, cosine)."""
        return dict(TANH_TRAINING if self.activation == "tanh" else RELU_TRAINING)

    @property
    def init_seed(self) -> int:
        return self.seed if self.preset_id is None else zoo.preset(self.preset_id).seed

    @property
    def name(self) -> str:
        if self.preset_id is not None:
            return self.preset_id
        act = {"relu": "ReLU", "gelu": "GELU"}.get(self.activation, self.activation)
        return f"{act} {'-'.join(map(str, self.layers))}"

    @property
    def label(self) -> str:
        return f"{self.name}, {'trained' if self.trained else 'untrained'}"

    def num_params(self) -> int:
        kwargs = {**self.arch_kwargs, "in_features": 1, "out_features": 1}
        return zoo.info(self.arch, **kwargs).num_params

    def zoo_preset(self, task_choice: TaskChoice) -> zoo.Preset:
        """The trained network as a zoo preset (registered, or built here for a custom MLP):
        ``fetch`` trains and caches it, ``is_cached`` says whether that is done."""
        if self.preset_id is not None:
            return zoo.preset(self.preset_id)
        return zoo.Preset(
            f"custom-{self.name.replace(' ', '-')}-seed{self.seed}",
            "mlp",
            task_choice.name,
            self.name,
            MappingProxyType({**self.arch_kwargs, **self.training}),
            MappingProxyType({**task_choice.options, "source_seed": 0}),
            self.seed,
        )

    def code(self, task_choice: TaskChoice) -> str:
        """Python that builds this network (for "Reproduce in Python")."""
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.arch_kwargs.items())
        if not self.trained:
            return (
                f"with zoo.seeded({self.init_seed}):\n"
                f"    model = zoo.create({self.arch!r}, in_features=1, out_features=1, {kwargs})"
            )
        if self.preset_id is not None:
            return f"model = zoo.preset({self.preset_id!r}).load()"
        data_kw = {**task_choice.options, "source_seed": 0}
        training = ", ".join(f"{k}={v!r}" for k, v in self.training.items())
        return (
            f"model = zoo.pretrained('mlp', {task_choice.name!r}, {self.seed}, "
            f"data_kw={data_kw!r},\n                       {kwargs}, {training})"
        )


def parse_layers(text: str) -> tuple[int, ...]:
    """Hidden units per layer from ``"5000"``, ``"100-100-100"`` or ``"40x3"``.

    Raises
    ------
    ValueError
        For anything else, widths outside [1, MAX_WIDTH] or more than MAX_DEPTH layers.
    """
    text = str(text).strip().lower().replace(" ", "")
    try:
        if "x" in text:
            width, _, depth = text.partition("x")
            layers = (int(width),) * int(depth)
        else:
            layers = tuple(int(part) for part in text.split("-"))
    except ValueError:
        layers = ()
    if not layers:
        raise ValueError(
            f"hidden layers look like '500', '100-100-100' or '40x3', got {text!r}"
        )
    if not 1 <= len(layers) <= MAX_DEPTH:
        raise ValueError(f"between 1 and {MAX_DEPTH} hidden layers, got {len(layers)}")
    if any(not 1 <= w <= MAX_WIDTH for w in layers):
        raise ValueError(f"layer widths must be between 1 and {MAX_WIDTH:,}, got {text!r}")
    return layers


def _presets(choice: TaskChoice) -> list[str]:
    """Zoo presets trained on exactly this task's source data."""
    defaults = data.info(choice.name)["options"]
    wanted = {**defaults, **choice.options}
    return [
        p.id
        for p in zoo.presets_for(choice.name)
        if all({**defaults, **p.data_kw}.get(k) == wanted[k] for k in (*choice.options,
                                                                       "source_seed"))
    ]  # fmt: skip


# ----------------------------------------------------------------------------- sets
def _columns(arch: str | tuple[str, ...], layers: tuple[str, ...], activation: str,
             trained: bool | tuple[bool, ...]) -> dict[str, Any]:  # fmt: skip
    """Widget values of the first ``len(layers)`` columns."""
    count = len(layers)
    archs = (arch,) * count if isinstance(arch, str) else arch
    flags = (trained,) * count if isinstance(trained, bool) else trained
    values: dict[str, Any] = {"n_models": count}
    for i in range(1, count + 1):
        values |= {f"arch{i}": archs[i - 1], f"trained{i}": flags[i - 1]}
        if archs[i - 1] == CUSTOM:  # a zoo network has no layer or activation widgets
            values |= {f"layers{i}": layers[i - 1], f"act{i}": activation}
    return values


@dataclass(frozen=True)
class ComparisonSet:
    """A one-click comparison: a short button label, what it shows, and the widget values."""

    label: str
    help: str
    values: Mapping[str, Any]
    look_for: str = ""


#: Figure 3's GP: conditioned on the training data, prior mean zero, s² = 1, σ² = max(10⁻³,
#: the network's MSE on the data) (the reference notebook's rule).
_FIGURE3 = {"split": "source", "hyper": "network MSE", "prior_variance": 1.0, "mean": "zero",
            "net_seed": 0}  # fmt: skip
_WIDTHS = ("5", "50", "500", "5000")
#: One-click comparisons that fill the widgets: Figure 3's panels and the zoo's presets.
SETS: dict[str, ComparisonSet] = {
    "fig3-untrained": ComparisonSet(
        "Figure 3 left",
        "One-hidden-layer ReLU MLPs of widths 5, 50, 500 and 5,000 at their seeded "
        "initialization, conditioned on the 300 points of toy-gap (Figure 3 left).",
        {"dataset": "toy-gap-relu", "n_context": 300, **_FIGURE3,
         **_columns(CUSTOM, _WIDTHS, "relu", False)},
        "The paper observes that the band widens with the width (standard initialization "
        "scales the kernel with the number of units) and that with enough hidden units "
        "(5,000) even the untrained network's linearization predicts reasonably.",
    ),
    "fig3-trained": ComparisonSet(
        "Figure 3 centre",
        "The same four ReLU MLPs trained on the data (Figure 3 centre).",
        {"dataset": "toy-gap-relu", "n_context": 300, **_FIGURE3,
         **_columns(CUSTOM, _WIDTHS, "relu", True)},
        "The paper observes that trained networks have less predictive variance than "
        "untrained ones (Figure 3 left), especially around the training data they were fit "
        "on; σ² is each network's training error, so it shrinks too.",
    ),
    "fig3-tanh": ComparisonSet(
        "Figure 3 right",
        "Three-layer tanh MLPs with about 21,000 parameters each — 100-100-100, 10-1000-10 "
        "and 500-38-38 — trained on the sinusoid with a gap (Figure 3 right).",
        {"dataset": "toy-gap-sine", "n_context": 200, **_FIGURE3,
         **_columns(CUSTOM, ("100-100-100", "10-1000-10", "500-38-38"), "tanh", True)},
        "Same data, about the same number of parameters: the paper observes that the "
        "networks' predictions (dashed) differ, and their linearizations differ even more "
        "outside the data — in the gap and beyond ±6.",
    ),
    "trained-vs-untrained": ComparisonSet(
        "Init vs trained",
        "One ReLU MLP of width 500, at its initialization and after training: how training "
        "changes the kernel J Jᵀ.",
        {"dataset": "toy-gap-relu", "n_context": 300, **_FIGURE3,
         **_columns(CUSTOM, ("500", "500"), "relu", (False, True))},
        "Training moves the weights and with them the Jacobian J: compare the bands in the "
        "gap and beyond the data, and σ² (the network's error on the data).",
    ),
    "sinusoid-presets": ComparisonSet(
        "Zoo, sinusoids",
        "The zoo's three sinusoid networks (tanh 3×40, ReLU 2×100, GELU 1×1,000) adapted to "
        "20 points of a new sinusoid, σ² = 10⁻³, s² = 10⁻².",
        {"dataset": "sinusoids", "split": "target", "n_context": 20, "hyper": "shared",
         "noise_variance": 1e-3, "prior_variance": 1e-2, "mean": "zero",
         **_columns(("sinusoids-mlp", "sinusoids-mlp-relu", "sinusoids-mlp-gelu-wide"),
                    ("", "", ""), "relu", True)},
        "Transfer, as on the Adapt page but for three architectures at once: each network "
        "was trained on another sinusoid; compare how far from the 20 points each posterior "
        "follows the new function.",
    ),
}  # fmt: skip
DEFAULT_SET = "fig3-untrained"
DEFAULTS = SETS[DEFAULT_SET].values


def _matching_set_name() -> str | None:
    """The one-click comparison the widgets currently hold, if any."""
    for name, comparison in SETS.items():
        if all(st.session_state.get(_key(k), DEFAULTS.get(k)) == v
               for k, v in comparison.values.items()):  # fmt: skip
            return name
    return None


def _apply_chosen_set() -> None:
    """Pills callback: fill the widgets of the comparison just chosen."""
    if (name := st.session_state.get(SET_KEY)) is not None:
        _apply_set(name)


def _apply_set(name: str) -> None:
    """Fill every widget of a set (a callback: runs before the widgets are drawn)."""
    for key, value in SETS[name].values.items():
        st.session_state[_key(key)] = value
    st.session_state[f"{PAGE}.applied"] = SETS[name].label


def _arch_changed(i: int) -> None:
    """A preset is trained by definition: switching a column to one ticks "trained"."""
    if st.session_state.get(_key(f"arch{i}")) != CUSTOM:
        st.session_state[_key(f"trained{i}")] = True


# ----------------------------------------------------------------------------- widgets
@dataclass(frozen=True)
class Settings:
    """Every input shared by the panels."""

    dataset: str
    seed: int
    split: str
    n_context: int
    hyper: str
    noise_variance: float
    prior_variance: float
    mean: str
    strategy: str
    net_seed: int

    @property
    def choice(self) -> TaskChoice:
        return TASKS[self.dataset]


def _sidebar() -> Settings:
    sidebar = st.sidebar
    sidebar.header("Task and context")
    dataset = sidebar.selectbox(
        "Task", tuple(TASKS), key=_key("dataset"), bind="query-params",
        help="1-D regression tasks of ntkcore.data. toy-gap: Figure 3's data with a gap.",
    )  # fmt: skip
    choice = TASKS[str(dataset)]
    sidebar.caption(choice.description)
    seed = sidebar.number_input(
        "Target task (seed)", min_value=0, max_value=1_000_000, value=1, step=1, key=_key("seed"),
        bind="query-params",
        help="Draws the target task and its context order (toy-gap: the target pool and the "
        "noise of the test points).",
    )  # fmt: skip
    if not choice.source_equals_target:
        st.session_state[_key("split")] = "target"
    split = sidebar.radio(
        "Condition on", SPLITS, index=SPLITS.index(DEFAULTS["split"]), horizontal=True,
        key=_key("split"), bind="query-params", disabled=not choice.source_equals_target,
        help="source: the networks' own training data, as in Figure 3 (toy-gap only, where "
        "source and target share one function). target: the first n points of the target "
        "pool.",
    )  # fmt: skip
    task = common.task(choice.name, int(seed), **choice.options)
    pool = task.sizes[str(split)]
    default_n = min(DEFAULTS["n_context"], pool)
    if st.session_state.get(_key("n_context"), default_n) > pool:
        st.session_state[_key("n_context")] = pool
    n_context = sidebar.slider(
        "Context points n", min_value=1, max_value=pool, value=default_n, key=_key("n_context"),
        bind="query-params", help=f"The first n of the {pool} {split} points.",
    )  # fmt: skip
    sidebar.header("Gaussian process")
    hyper = sidebar.radio(
        "σ², s² for every network", HYPER_MODES, index=HYPER_MODES.index(DEFAULTS["hyper"]),
        key=_key("hyper"), bind="query-params",
        help="shared: the sliders below for every network. network MSE: σ² = max(10⁻³, the "
        "network's mean squared error on the context), s² from the slider (Figure 3's rule: "
        "an untrained network gets a large σ²). marginal likelihood: σ², s² fitted per network "
        "(ntkcore.fit_hyperparameters).",
    )  # fmt: skip
    noise_variance = sidebar.select_slider(
        "Noise variance σ²", options=NOISE_VARIANCES, value=1e-3,
        format_func=lambda v: f"{v:g}", key=_key("noise_variance"), bind="query-params",
        disabled=hyper != "shared", help="Observation noise (log scale); used when shared.",
    )  # fmt: skip
    prior_variance = sidebar.select_slider(
        "Prior variance s²", options=PRIOR_VARIANCES, value=DEFAULTS["prior_variance"],
        format_func=lambda v: f"{v:g}", key=_key("prior_variance"), bind="query-params",
        disabled=hyper == "marginal likelihood",
        help="Prior variance of the linearized weights, w ~ N(0, s² I) (log scale).",
    )  # fmt: skip
    mean = sidebar.radio(
        "Prior mean", MEANS, index=MEANS.index(DEFAULTS["mean"]), horizontal=True, key=_key("mean"),
        bind="query-params",
        help="zero: the finite NTK alone (Figure 3). network: m(x) = f(x; θ), the linearized "
        "network of Eq. 1.",
    )  # fmt: skip
    strategy = sidebar.selectbox(
        "Solver strategy", STRATEGIES, index=STRATEGIES.index("auto"), key=_key("strategy"),
        bind="query-params",
        help="dense: explicit kernel; function: CG with Jacobian products (Eq. 3); parameter: "
        "CG in weight space (Eq. 2); auto: chosen from the problem size, per network.",
    )  # fmt: skip
    sidebar.header("Custom networks")
    net_seed = sidebar.number_input(
        "Network seed", min_value=0, max_value=1_000_000, value=0, step=1, key=_key("net_seed"),
        bind="query-params",
        help="Seed of the custom MLPs' initialization and training (Figure 3: 0). Zoo "
        "networks keep their own seed.",
    )  # fmt: skip
    sidebar.caption(
        "Custom MLPs train with Adam, full batch, cosine schedule — ReLU/GELU 1,500 epochs at "
        "lr 10⁻², tanh 3,000 at 2·10⁻³ (Figure 3's settings) — and are kept in the zoo's disk "
        "cache for every session."
    )
    return Settings(
        dataset=str(dataset), seed=int(seed), split=str(split), n_context=int(n_context),
        hyper=str(hyper), noise_variance=float(noise_variance),
        prior_variance=float(prior_variance), mean=str(mean), strategy=str(strategy),
        net_seed=int(net_seed),
    )  # fmt: skip


def _column_widgets(i: int, presets: list[str], net_seed: int) -> ModelSpec | str:
    """The widgets of column ``i`` (1-based); a ModelSpec, or an error message."""
    options = [CUSTOM, *presets]
    if st.session_state.get(_key(f"arch{i}")) not in options:
        st.session_state[_key(f"arch{i}")] = CUSTOM
    default = DEFAULTS.get(f"layers{i}", "50")
    arch = st.selectbox(
        f"Network {COLUMN_NAMES[i - 1]}", options, key=_key(f"arch{i}"), bind="query-params",
        persist_state="page", on_change=_arch_changed, args=(i,),
        help="A custom MLP, or a zoo network trained on this task's source data.",
    )  # fmt: skip
    layers_text, activation = "", "relu"
    if arch == CUSTOM:
        layers_text = st.text_input(
            "Hidden layers", value=default, key=_key(f"layers{i}"), bind="query-params",
            persist_state="page",
            help="Units per hidden layer: '5000' (one layer), '100-100-100' or '40x3'.",
        )  # fmt: skip
        activation = st.segmented_control(
            "Activation", ACTIVATIONS, default="relu", required=True, key=_key(f"act{i}"),
            bind="query-params", persist_state="page",
        )  # fmt: skip
    trained = st.toggle(
        "trained", value=bool(DEFAULTS.get(f"trained{i}", False)),
        key=_key(f"trained{i}"), bind="query-params", persist_state="page",
        help="On: trained on the task's source data (Figure 3 centre and right). Off: the same "
        "network at its seeded random initialization (Figure 3 left).",
    )  # fmt: skip
    if arch != CUSTOM:
        return ModelSpec(str(arch), trained=bool(trained))
    try:
        layers = parse_layers(layers_text)
    except ValueError as err:
        return str(err)
    spec = ModelSpec(None, layers, str(activation), bool(trained), net_seed)
    if spec.num_params() > MAX_PARAMS:
        return f"{spec.num_params():,} parameters: the page offers up to {MAX_PARAMS:,}"
    return spec


# ----------------------------------------------------------------------------- models
@st.cache_resource(max_entries=32, show_spinner=False)
def _initial_model(key: str, _spec: ModelSpec) -> nn.Module:
    """The network at its seeded initialization (what the trained one starts from)."""
    with zoo.seeded(_spec.init_seed):
        model = zoo.create(_spec.arch, in_features=1, out_features=1, **_spec.arch_kwargs)
    return model.eval()


@st.cache_resource(max_entries=32, show_spinner=False)
def _trained_entry(key: str, task_key: str, _preset: zoo.Preset, _task: data.Task):
    # Only called once the weights are on disk: loading takes milliseconds.
    return _preset.fetch(task=_task)


@st.cache_resource(max_entries=32, show_spinner=False)
def _linearization(key: str, task_key: str, _model: nn.Module) -> ntkcore.Linearization:
    return ntkcore.Linearization(_model.mean_model() if hasattr(_model, "mean_model") else _model)


def _is_ready(spec: ModelSpec, choice: TaskChoice) -> bool:
    return not spec.trained or spec.zoo_preset(choice).is_cached()


def _train_missing(missing: list[ModelSpec], choice: TaskChoice, task: data.Task, *,
                   progress, device) -> list[str]:  # fmt: skip
    """Heavy work: train (and cache on disk) each network, the progress naming it."""
    weights = [s.num_params() * s.training["epochs"] + 1.0 for s in missing]
    steps = ProgressSteps(progress, weights)
    for j, spec in enumerate(missing, start=1):
        sub = steps.start(f"training {spec.name} ({j}/{len(missing)}, p = {spec.num_params():,})")
        spec.zoo_preset(choice).fetch(task=task, progress=sub, device=device)
    steps.done()
    return [s.label for s in missing]


# ----------------------------------------------------------------------------- posteriors
def _context(task: data.Task, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "target":
        return task.context(n)
    x, y = task.source
    return x[:n], y[:n]


@st.cache_data(max_entries=96, show_spinner=False)
def _panel(key: str, task_key: tuple, settings: tuple, _model: nn.Module,
           _lin: ntkcore.Linearization, _task: data.Task) -> dict[str, Any]:  # fmt: skip
    """One network's posterior and scores; cached by ``key`` (the network), ``task_key``
    (task, seed, split, n) and ``settings`` (σ², s² mode and values, mean, strategy)."""
    _, _, split, n = task_key
    hyper, noise_variance, prior_variance, mean, strategy = settings
    x, y = _context(_task, split, n)
    x_test, y_test = _task.test
    fit_note = ""
    if hyper == "marginal likelihood":
        fit = ntkcore.fit_hyperparameters(_lin, x, y, mean=mean)
        noise_variance, prior_variance = fit.noise_variance, fit.prior_variance
        fit_note = f"log p(y) = {fit.log_marginal_likelihood:.1f}"
    elif hyper == "network MSE":
        noise_variance = default_noise_variance(_lin, x, y)
    post = ntkcore.adapt(
        _lin, x, y, noise_variance=noise_variance, prior_variance=prior_variance, mean=mean,
        strategy=strategy,
    )  # fmt: skip
    pred = post.predict(x_test)
    with torch.no_grad():
        network = _lin(x_test)
    if not (torch.isfinite(pred.mean).all() and torch.isfinite(pred.variance).all()):
        raise ValueError("the posterior has non-finite values (try a larger σ²)")
    diag = post.diagnostics
    return {
        "mean": pred.mean[:, 0].double().numpy(),
        "variance": pred.variance[:, 0].double().numpy(),
        "network": network[:, 0].double().numpy(),
        "noise_variance": float(noise_variance),
        "prior_variance": float(prior_variance),
        "fit_note": fit_note,
        "mse": metrics.mse(pred.mean, y_test),
        "nll": metrics.gaussian_nll(pred.mean, pred.variance, y_test, noise_variance),
        "coverage": metrics.coverage(pred.mean, pred.variance, y_test, 2.0, noise_variance),
        "network_mse": metrics.mse(network, y_test),
        "seconds": float(diag["seconds"]),
        "strategy": str(diag["strategy"]),
        "reason": str(diag.get("reason", "")),
        "converged": diag.get("converged") is not False,
        "band": accuracy_label(pred.diagnostics),
    }



@dataclass(frozen=True)
class Column:
    """What one column shows: its network, and its result or why there is none."""

    index: int
    spec: ModelSpec | None
    label: str
    num_params: int | None
    result: dict[str, Any] | None
    train_loss: float | None
    message: str | None


def _compute(specs: list[ModelSpec | str], s: Settings, task: data.Task) -> list[Column]:
    choice = s.choice
    task_key = (s.dataset, s.seed, s.split, s.n_context)
    settings = (s.hyper, s.noise_variance, s.prior_variance, s.mean, s.strategy)
    columns = []
    for i, spec in enumerate(specs):
        label = spec.label if isinstance(spec, ModelSpec) else f"network {COLUMN_NAMES[i]}"
        if isinstance(spec, str):
            columns.append(Column(i, None, label, None, None, None, f"invalid: {spec}"))
            continue
        p = spec.num_params()
        if not _is_ready(spec, choice):
            columns.append(Column(i, spec, label, p, None, None, "not trained yet"))
            continue  # fmt: skip
        train_loss = None
        if spec.trained:
            entry = _trained_entry(spec.key, repr(choice), spec.zoo_preset(choice), task)
            model, train_loss = entry.model, float(entry.record.final_loss)
        else:
            model = _initial_model(spec.key, spec)
        lin = _linearization(spec.key, repr(choice), model)
        try:
            result = _panel(spec.key, task_key, settings, model, lin, task)
        except ValueError as err:
            columns.append(Column(i, spec, label, p, None, train_loss, f"cannot adapt: {err}"))
            continue
        columns.append(Column(i, spec, label, p, result, train_loss, None))
    return columns


# ----------------------------------------------------------------------------- output
def _panels(columns: list[Column], x_test: np.ndarray) -> list[ComparisonPanel]:
    return [
        ComparisonPanel(f"{COLUMN_NAMES[c.index]}: {c.label}", x_test, c.result["mean"],
                        c.result["variance"], network=c.result["network"],
                        num_params=c.num_params, note=f"test MSE {c.result['mse']:.3g}")
        for c in columns if c.result is not None
    ]  # fmt: skip


#: Score table columns: name -> (format, help).
TABLE_COLUMNS: dict[str, tuple[str | None, str]] = {
    "network": (None, "Column letter, network and whether it was trained."),
    "p": ("localized", "Parameters: the width of the Jacobian J (zoo.info(...).num_params)."),
    "trained": (None, "Trained on the source data, or at its seeded initialization."),
    "train loss": ("%.3g", "The network's MSE on the source data after training."),
    "σ²": ("%.3g", "Noise variance used for this network."),
    "s²": ("%.3g", "Prior variance of the linearized weights used for this network."),
    "MSE": ("%.3g", "Test MSE of the linearized posterior mean."),
    "NLL": ("%.3g", "Test negative log likelihood of y under the posterior (+ σ²)."),
    "coverage": ("%.2f", "Fraction of test points inside the posterior ±2σ (+ σ²) band."),
    "net MSE": ("%.3g", "Test MSE of the network itself, f(x; θ), without adaptation."),
    "ms": ("%.0f", "Solve time of ntkcore.adapt (milliseconds)."),
    "strategy": (None, "How the GP was solved (auto picks per network; hover the panel)."),
    "band": (None, "How close the band's variances are to the exact posterior variances: "
             "exact, or a certified relative error bound (block CG)."),
}


def _table(columns: list[Column]) -> pd.DataFrame:
    rows = []
    for c in columns:
        r = c.result or {}
        values = [
            f"{COLUMN_NAMES[c.index]}: {c.label}", c.num_params,
            None if c.spec is None else c.spec.trained, c.train_loss,
            r.get("noise_variance"), r.get("prior_variance"), r.get("mse"), r.get("nll"),
            r.get("coverage"), r.get("network_mse"), 1e3 * r["seconds"] if r else None,
            r.get("strategy", c.message or ""), r.get("band"),
        ]  # fmt: skip
        rows.append(dict(zip(TABLE_COLUMNS, values, strict=True)))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _curves_csv(columns: list[Column], x_test: np.ndarray, truth: np.ndarray | None
                ) -> pd.DataFrame:  # fmt: skip
    tables = []
    for c in columns:
        if c.result is None:
            continue
        std = np.sqrt(c.result["variance"])
        table = pd.DataFrame({
            "network": f"{COLUMN_NAMES[c.index]}: {c.label}", "parameters": c.num_params,
            "trained": c.spec.trained,
            "x": x_test, "network_prediction": c.result["network"], "mean": c.result["mean"],
            "std": std, "lower": c.result["mean"] - 2 * std, "upper": c.result["mean"] + 2 * std,
            "noise_variance": c.result["noise_variance"],
            "prior_variance": c.result["prior_variance"],
        })  # fmt: skip
        if truth is not None:
            table["truth"] = truth
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


@st.fragment
def _figures(columns: list[Column], x_test: np.ndarray, context: tuple[np.ndarray, np.ndarray],
             truth: np.ndarray | None) -> None:  # fmt: skip
    """Grid or overlay (view-only: switching redraws without recomputing)."""
    left, right = st.columns([2, 3])
    view = left.segmented_control(
        "View", ("grid", "overlay"), default="grid", required=True, key=_key("view"),
        bind="query-params",
        help="grid: one panel per network, shared axes. overlay: every posterior on one plot.",
    )  # fmt: skip
    show_network = right.toggle(
        "Show the networks' own predictions (dashed)", value=True, key=_key("show_network"),
        bind="query-params",
    )  # fmt: skip
    panels = _panels(columns, x_test)
    if not panels:
        st.info("No network to draw yet.")
        return
    truth_pair = None if truth is None else (x_test, truth)
    missing = [c for c in columns if c.result is None]
    with LIGHT.hold():
        if view == "overlay":
            figure = comparison_overlay_figure(
                panels, context=context, truth=truth_pair, show_network=bool(show_network)
            )
            caption = (
                "Solid lines: posterior means p(f* | y) (Eq. 3); shaded: ±2σ of the latent "
                "function (noise not added); dashed: each network's own prediction f(x; θ); "
                "purple: the context points. Click a legend entry to hide a network."
            )
        else:
            figure = comparison_grid_figure(
                panels, context=context, truth=truth_pair, show_network=bool(show_network)
            )
            caption = (
                "All panels share their x and y ranges (zoom one, zoom all). Solid: posterior "
                "mean p(f* | y) (Eq. 3); shaded: ±2σ of the latent function (noise not added), "
                "which may run off the plot far from the data; dashed: the network f(x; θ); "
                "purple: the context points."
            )
        st.plotly_chart(figure, key=FIGURE_KEY, config={"displaylogo": False})
    st.caption(caption)
    if missing:
        st.caption("Not drawn: " + "; ".join(
            f"{COLUMN_NAMES[c.index]}: {c.label} ({c.message})" for c in missing
        ))  # fmt: skip


def _reproduce(columns: list[Column], s: Settings) -> None:
    choice = s.choice
    options = "".join(f", {k}={v!r}" for k, v in choice.options.items())
    if s.split == "target":
        context = f"x, y = task.context({s.n_context})"
    else:
        context = f"x, y = task.source[0][:{s.n_context}], task.source[1][:{s.n_context}]"
    if s.hyper == "marginal likelihood":
        hyper = (
            f"    fit = ntkcore.fit_hyperparameters(lin, x, y, mean={s.mean!r})\n"
            "    noise, prior = fit.noise_variance, fit.prior_variance"
        )
    elif s.hyper == "network MSE":
        hyper = (
            "    noise = default_noise_variance(lin, x, y)  # max(1e-3, the network's MSE)\n"
            f"    prior = {s.prior_variance:g}"
        )
    else:
        hyper = f"    noise, prior = {s.noise_variance:g}, {s.prior_variance:g}"
    models = "\n".join(
        f"{c.spec.code(choice)}\nmodels[{COLUMN_NAMES[c.index] + ': ' + c.label!r}] = "
        "model.eval()"
        for c in columns if c.spec is not None
    )  # fmt: skip
    truth = ", truth=(x_test, task.meta.target_function(x_test))"
    common.reproduce(
        f"""
import ntkcore
from ntkcore import data, zoo
from ntkcore.experiments.inductive_biases import default_noise_variance
from ntkcore.plots import ComparisonPanel, comparison_grid_figure

task = data.load({choice.name!r}, seed={s.seed}{options})
{context}
x_test, y_test = task.test
models = {{}}
{models}
panels = []
for name, model in models.items():
    lin = ntkcore.Linearization(model)
{hyper}
    post = ntkcore.adapt(lin, x, y, noise_variance=noise, prior_variance=prior,
                         mean={s.mean!r}, strategy={s.strategy!r})
    pred = post.predict(x_test)
    panels.append(ComparisonPanel(name, x_test, pred.mean, pred.variance,
                                  network=lin(x_test).detach(), num_params=lin.num_params))
comparison_grid_figure(panels, context=(x, y){truth}).show()
"""
    )


# ----------------------------------------------------------------------------- the page
st.title(HEADING)
st.markdown(
    "Each network is **linearized** around its weights — trained on the task's source data, "
    "or untrained at a seeded initialization — and the linear model, a Gaussian process whose "
    "kernel is s² J(x) J(x′)ᵀ (the *finite NTK*), is conditioned on the **same** points with "
    "the same prior (Maddox et al., *Fast Adaptation with Linearized Neural Networks*, "
    "AISTATS 2021, Eq. 1–3 and Section 4). All panels share their axes: what differs between "
    "them is the architectures' inductive bias."
)

# The pills show which one-click comparison the widgets hold (none once one is changed).
st.session_state[SET_KEY] = _matching_set_name()
st.pills(
    "One-click comparisons — Figure 3 of the paper and more (they fill the widgets below)",
    tuple(SETS), format_func=lambda name: SETS[name].label, key=SET_KEY,
    on_change=_apply_chosen_set,
    help="Figure 3 left/centre: ReLU MLPs of widths 5 to 5,000, untrained and trained. Figure "
    "3 right: tanh MLPs with ~21,000 parameters in differently shaped layers. Init vs trained: "
    "one network before and after training. Zoo, sinusoids: the zoo's three sinusoid networks.",
)  # fmt: skip
n_models = st.radio(
    "Networks", (2, 3, 4), index=(2, 3, 4).index(DEFAULTS["n_models"]), horizontal=True,
    key=_key("n_models"), bind="query-params", help="How many networks to compare.",
)  # fmt: skip
if applied := st.session_state.pop(f"{PAGE}.applied", None):
    st.toast(f"Filled the widgets: {applied}")

settings = _sidebar()
choice = settings.choice
task = common.task(choice.name, settings.seed, **choice.options)
presets = _presets(choice)

widget_slots = st.columns(int(n_models), gap="small")
specs: list[ModelSpec | str] = []
for i, slot in enumerate(widget_slots, start=1):
    with slot, st.container(border=True):
        spec = _column_widgets(i, presets, settings.net_seed)
        if isinstance(spec, ModelSpec):
            ready = _is_ready(spec, choice)
            state = ("on disk" if ready else "to train") if spec.trained else "at init"
            st.caption(f"p = {spec.num_params():,} · {state}",
                       help="p: parameters. on disk: trained, in the zoo's cache. to train: "
                       "press “Train missing networks”. at init: untrained, seeded.")  # fmt: skip
        else:
            st.error(spec)
        specs.append(spec)

if (shown_name := _matching_set_name()) is not None:
    shown_set = SETS[shown_name]
    st.info(f"**{shown_set.label}.** {shown_set.help} {shown_set.look_for}",
            icon=":material/visibility:")  # fmt: skip
missing = [s for s in specs if isinstance(s, ModelSpec) and not _is_ready(s, choice)]
if missing:
    names = ", ".join(f"**{s.name}**" for s in missing)
    st.warning(
        f"{len(missing)} network(s) are not in the zoo's disk cache yet: {names}. Training "
        "takes seconds to a minute each on a CPU; afterwards every session loads them from disk."
    )
    if st.button(f"Train missing networks ({len(missing)})", type="primary",
                 icon=":material/play_arrow:", key="train-missing"):  # fmt: skip
        run_heavy(
            f"{PAGE}.train",
            f"Training {len(missing)} network(s) on {settings.dataset}",
            lambda progress, device: _train_missing(
                missing, choice, task, progress=progress, device=device
            ),
            inputs={"models": [s.key for s in missing], "task": repr(choice),
                    "cache": str(zoo.cache_root())},  # fmt: skip
            device=torch.device("cpu"),
        )
        st.rerun()

x_context, y_context = _context(task, settings.split, settings.n_context)
x_test_tensor, _ = task.test
x_test = x_test_tensor[:, 0].double().numpy()
truth = None
if task.meta.target_function is not None:
    truth = np.asarray(task.meta.target_function(x_test_tensor), dtype=np.float64)[:, 0]
# Posteriors (and, in the fragment, figures) hold the light slot: one Python-heavy run at a
# time, so the server's event loop keeps its share of the GIL (app/compute.py).
with LIGHT.hold():
    columns = _compute(specs, settings, task)
context = (x_context[:, 0].double().numpy(), y_context[:, 0].double().numpy())
_figures(columns, x_test, context, truth)

st.subheader("Parameters and scores")
table = _table(columns)
st.dataframe(
    table, hide_index=True,
    column_config={
        name: (st.column_config.NumberColumn(name, format=fmt, help=text) if fmt
               else st.column_config.Column(name, help=text))
        for name, (fmt, text) in TABLE_COLUMNS.items()
    },
)  # fmt: skip
hyper_text = {
    "shared": f"σ² = {settings.noise_variance:g} and s² = {settings.prior_variance:g} for "
    "every network",
    "network MSE": "σ² = max(10⁻³, each network's MSE on the context points) and "
    f"s² = {settings.prior_variance:g} (Figure 3's rule)",
    "marginal likelihood": "σ² and s² maximizing each network's log marginal likelihood "
    "of the context points",
}[settings.hyper]
st.caption(
    f"Conditioned on n = {settings.n_context} {settings.split} points with {hyper_text}; prior "
    f"mean {settings.mean}. Scores on the task's {x_test.shape[0]} held-out test points "
    f"(x over [{x_test.min():g}, {x_test.max():g}]"
    f"{', gap and far field included' if choice.source_equals_target else ''}); NLL and "
    "coverage score y (latent variance + σ²). Training loss: the network's MSE on the source "
    "data after training."
)
csv = _curves_csv(columns, x_test, truth)
if not csv.empty:
    common.download_csv(csv, "compare-curves.csv", "Download the curves (CSV)")
_reproduce(columns, settings)
