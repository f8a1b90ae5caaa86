"""Classification: the linearized network as a Bayesian classifier (Figure 4, Table 1).

Two experiments of ``ntkcore.experiments.classification``, each behind its own Run button:

* :func:`~ntkcore.experiments.classification.classification` (Figure 4): a trained network
  against the Bayesian GLM on its Jacobian (Eq. 4), with the finite-NTK (prior mean 0) and
  linearized-NN (prior mean = the network) models, fit by MAP, Laplace or VI; accuracy, NLL,
  ECE and reliability bins on held-out images. On a CPU: LeNet-3 on the shipped MNIST (or
  Fashion-MNIST) images; with a GPU also the paper's PreResNet depth sweep on the 32×32 set.
* :func:`~ntkcore.experiments.classification.unsupervised_transfer` (Table 1): the GLM on
  the Jacobian of the top k layers or of all layers of an autoencoder's encoder (trained
  without labels), against a linear classifier on its activations.

Runs go through :func:`app.compute.run_heavy` (one at a time for all sessions, on the GPU
when there is one; results cached process-wide by every option). Nothing runs on page load:
the page shows this session's last result (labelled when the widgets have changed since) or
says what Run will do. The methods shown are view-only controls in a fragment.

The page only wires widgets to the library: the numerics live in ``ntkcore`` and the figures
in ``ntkcore.plots``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app import common
from app.compute import (
    LIGHT,
    RESULTS,
    RunRecord,
    compute_device,
    last_record,
    run_heavy,
    show_record_status,
)
from ntkcore.experiments import classification as experiments
from ntkcore.plots import (
    calibration_summary,
    classification_label,
    classification_labels,
    classification_metrics_figure,
    reliability_figure,
    transfer_figure,
    transfer_label,
)

PAGE = "classification"
HEADING = "Classification with the linearized network"

DEVICE = compute_device()
HAS_GPU = DEVICE.type == "cuda"
#: Library presets the page offers (``full``: the paper's depth sweep, GPU only).
PRESETS = ("small", "full") if HAS_GPU else ("small",)
#: Option labels double as URL query values (Streamlit binds the formatted option): short.
PRESET_LABELS = {"small": "CPU (LeNet-3)", "full": "GPU (PreResNets)"}
SECTIONS = ("Network vs linearized GLM (Figure 4)", "Unsupervised transfer (Table 1)")

# --------------------------------------------------------------------------- options
DATASETS = {
    "small": ("mnist", "fashion-mnist"),
    "full": ("fashion-mnist-32",),
}
DATASET_LABELS = {
    "mnist": "MNIST digits (28×28)",
    "fashion-mnist": "Fashion-MNIST clothing (28×28)",
    "fashion-mnist-32": "Fashion-MNIST, 32×32 RGB (our CIFAR-10 stand-in)",
}
ARCHS = ("preresnet20", "preresnet56", "preresnet110")
METHOD_LABELS = {"network": "network", "map": "MAP", "laplace": "Laplace", "vi": "VI"}
MEAN_LABELS = {"zero": "finite NTK", "network": "linearized NN"}
LAYER_CHOICES = {"last": 1, "all": 0}
LAYER_LABELS = {"last": "last layer", "all": "all layers"}
TRAIN_SIZES = (20, 50, 100, 200, 500, 1000, 2000)
TEST_SIZES = (100, 250, 500, 1000)
PRIORS = ("evidence", "0.001", "0.01", "0.1", "1", "10")
LINKS = {"probit": "probit", "mc": "Monte Carlo"}
VI_STEPS = (50, 100, 150, 300, 1000, 2000)
SEEDS = (0, 99)

TRANSFER_DATASETS = ("mnist", "fashion-mnist")
TRANSFER_FEATURES = {1: "top 1 layer", 2: "top 2 layers", 3: "top 3 layers", 0: "all 4 layers"}
TRANSFER_METHODS = {"linear": "linear (activations)", "map": "MAP", "vi": "VI (all layers)"}
#: The ``features`` column of ``unsupervised_transfer`` as the table shows it.
TRANSFER_FEATURE_NAMES = {"activations": "activations", "top-1": "top 1 layer",
                          "top-2": "top 2 layers", "top-3": "top 3 layers",
                          "all": "all 4 layers"}  # fmt: skip
TRANSFER_PRIORS = ("0.1", "1", "10", "unit-logits")
#: The paper's Table 1 (CIFAR-10, BiGAN encoder; test accuracy %), by (features, method).
PAPER_TABLE1_VALUES = {("activations", "linear"): 62.87, ("top-1", "map"): 70.28,
                       ("top-2", "map"): 71.08, ("top-3", "map"): 70.64,
                       ("all", "map"): 72.65, ("all", "vi"): 71.89}  # fmt: skip
#: What the paper's Table 1 reports (CIFAR-10, BiGAN encoder; * from Mu et al., 2020).
PAPER_TABLE1 = (
    "activations 62.87 · top 1 layer 70.28* · top 2 layers 71.08* · top 3 layers 70.64* · "
    "all layers 72.65 · all layers (VI) 71.89"
)


def _defaults(preset: str) -> dict[str, Any]:
    """Widget key -> value that the preset selector fills in (the library's preset)."""
    if preset == "full":
        return {"f4_archs": list(ARCHS), "f4_dataset": "fashion-mnist-32", "f4_layers": "all",
                "f4_n_train": 2000, "f4_vi_steps": 2000, "t1_n_train": 2000,
                "t1_vi_steps": 2000}  # fmt: skip
    return {"f4_dataset": "mnist", "f4_layers": "last", "f4_n_train": 500, "f4_vi_steps": 300,
            "t1_n_train": 500, "t1_vi_steps": 150}  # fmt: skip


def _apply_preset() -> None:
    """Preset selector callback: fill the forms with the chosen preset's values."""
    st.session_state.update(_defaults(st.session_state.get("cls_preset", "small")))


def _labels(names: dict[Any, str]) -> Callable[[Any], str]:
    """A widget's ``format_func``: the display name of an option (the option itself if it
    has none, as AppTest passes labels back through it)."""
    return lambda value: names.get(value, str(value))


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """What one Run computes: the experiment function and every option of its call."""

    experiment: str  # "classification" or "unsupervised-transfer"
    options: dict[str, Any]  # keyword arguments of the experiment function (JSON-able)

    @property
    def page(self) -> str:
        """The :func:`run_heavy` page key: one last result per experiment."""
        return f"{PAGE}/{self.experiment}"

    @property
    def inputs(self) -> dict[str, Any]:
        """Everything the result depends on (the process-wide cache key)."""
        return {"experiment": self.experiment, "device": str(DEVICE), **self.options}

    @property
    def function_name(self) -> str:
        return "classification" if self.experiment == "classification" else (
            "unsupervised_transfer"
        )

    def call_text(self) -> str:
        """The exact library call, for the Reproduce expander."""
        args = []
        for key, value in self.options.items():
            shown = tuple(value) if isinstance(value, list) else value
            args.append(f"{key}={shown!r}")
        return f"{self.function_name}({', '.join(args)}, device={str(DEVICE)!r})"

    def run(self, *, progress: Callable[[float, str], None], device: torch.device) -> Any:
        # the module attribute, looked up at call time (tests count the calls)
        function = getattr(experiments, self.function_name)
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        return function(**options, progress=_plain_steps(progress), device=device)


def _plain_steps(progress: Callable[[float, str], None]) -> Callable[[float, str], None]:
    """The library's step names, said so that a cached network is not called "training"."""

    def report(fraction: float, message: str) -> None:
        if message.startswith("training "):
            network = message[len("training "):]
            message = f"{network}: loading it from the model cache (training it first if missing)"
        progress(fraction, message)

    return report


def _request_from(inputs: dict[str, Any]) -> Request:
    return Request(
        str(inputs["experiment"]),
        {k: v for k, v in inputs.items() if k not in ("experiment", "device")},
    )


def _run(request: Request, title: str) -> RunRecord | None:
    try:
        return run_heavy(request.page, title, request.run, inputs=request.inputs, device=DEVICE)
    except ValueError as err:  # options the library rejects
        st.error(f"Cannot run with these settings: {err}")
        return None


def _shown_record(request: Request, submitted: bool, title: str) -> RunRecord | None:
    """Run when asked; else this session's result for these inputs or its last one."""
    record = _run(request, title) if submitted else None
    if record is None:
        record = RESULTS.get(request.page, request.inputs) or last_record(request.page)
    show_record_status(request.page, record, request.inputs)
    return record


# --------------------------------------------------------------------------- Figure 4 form
def _figure4_form(preset: str) -> tuple[Request | None, bool]:
    """The options of ``classification``; returns (request, Run pressed)."""
    defaults = _defaults(preset)
    with st.form("form-figure4", border=True):
        if preset == "full":
            archs = st.multiselect(
                "Networks (Figure 4's depths)", ARCHS, default=defaults["f4_archs"], key="f4_archs",
                bind="query-params",
                help="Each is trained on the 2,000 source images on first use (cached).",
            )
        else:
            archs = ["lenet3"]
        dataset = st.selectbox(
            "Images", DATASETS[preset], key="f4_dataset", bind="query-params",
            help="The `ntkcore.data` task: " + "; ".join(
                f"{name}: {DATASET_LABELS[name]}" for name in DATASETS[preset]
            ) + ". The network is trained on its 2,000 source images (once, cached); the GLM "
            "is fit on the first n of them and every model is scored on the test images.",
        )
        methods = st.multiselect(
            "Methods", tuple(METHOD_LABELS), default=list(METHOD_LABELS), key="f4_methods",
            bind="query-params", format_func=_labels(METHOD_LABELS),
            help="network: the trained network's own softmax. MAP: the mode of the GLM's "
            "posterior (Newton–CG). Laplace: a Gaussian around it with the Gauss–Newton "
            "Hessian. VI: mean-field variational inference started at the MAP.",
        )
        means = st.multiselect(
            "GLM prior mean", tuple(MEAN_LABELS), default=list(MEAN_LABELS), key="f4_means",
            bind="query-params", format_func=_labels(MEAN_LABELS),
            help="Eq. 1: the finite NTK has prior mean 0 (logits J w); the linearized NN "
            "has the network's own logits as its mean (f(x) + J w).",
        )
        layers = st.radio(
            "Linearize", tuple(LAYER_CHOICES), key="f4_layers", bind="query-params",
            horizontal=True, format_func=_labels(LAYER_LABELS),
            help="Which parameters' Jacobian the GLM uses. LeNet-3: p = 1,210 (last layer) "
            "or 34,622 (all layers). See the cost note below the form.",
        )
        left, right = st.columns(2)
        n_train = left.select_slider(
            "Training images", TRAIN_SIZES, value=defaults["f4_n_train"], key="f4_n_train",
            bind="query-params",
            help="The GLM is fit on the first n source images (the network saw all 2,000).",
        )
        n_test = right.select_slider(
            "Test images", TEST_SIZES, value=1000, key="f4_n_test", bind="query-params",
        )
        prior = st.select_slider(
            "Prior variance s²", PRIORS, value="evidence", key="f4_prior", bind="query-params",
            help="'by the evidence': the largest Laplace evidence on the grid 0.01, 0.1, 1 "
            "(0.001 to 1 on the GPU preset), from the training images only; costs one "
            "Laplace fit per grid value. Or fix s².",
        )
        link = st.radio(
            "Predictive of Laplace and VI", tuple(LINKS), key="f4_link", bind="query-params",
            horizontal=True, format_func=_labels(LINKS),
            help="How the Gaussian over logits becomes class probabilities: the probit "
            "approximation softmax(κ ⊙ μ), κ = (1 + π/8 · σ²)^(-1/2), or Monte Carlo samples.",
        )
        left, right = st.columns(2)
        vi_steps = left.select_slider(
            "VI steps", VI_STEPS, value=defaults["f4_vi_steps"], key="f4_vi_steps",
            bind="query-params", help="Adam steps on the ELBO, starting at the MAP.",
        )
        seed = right.number_input(
            "Seed", min_value=SEEDS[0], max_value=SEEDS[1], value=0, step=1, key="f4_seed",
            bind="query-params",
            help="Seed 0 uses the cached zoo network; another seed trains a new one first "
            "(about 10 s for LeNet-3 on a CPU, then cached).",
        )
        submitted = st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", use_container_width=True
        )
    if not methods or not archs or (set(methods) - {"network"} and not means):
        st.warning("Choose at least one method" + (", one network" if preset == "full" else "")
                   + " and, for the GLM methods, one prior mean.")  # fmt: skip
        return None, False
    options = {
        "preset": preset,
        "dataset": str(dataset),
        "arch": [a for a in (ARCHS if preset == "full" else ("lenet3",)) if a in archs],
        "methods": [m for m in METHOD_LABELS if m in methods],
        "means": [m for m in MEAN_LABELS if m in means] or ["zero"],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "layers": LAYER_CHOICES[str(layers)],
        "prior_variance": None if prior == "evidence" else float(prior),
        "link": str(link),
        "vi_steps": int(vi_steps),
        "seed": int(seed),
    }
    return Request("classification", options), submitted


def _figure4_title(request: Request) -> str:
    o = request.options
    glm = [m for m in o["methods"] if m != "network"]
    what = f"{len(glm)} GLM method(s) × {len(o['means'])} mean(s)" if glm else "network only"
    return (
        f"Figure 4: {', '.join(o['arch'])} on {o['dataset']}, {what}, "
        f"{o['n_train']:,} training images"
    )


def _cost_note(preset: str) -> None:
    if preset == "full":
        st.caption(
            "**Cost (GPU preset).** All layers of each PreResNet, matrix-free (Newton–CG on "
            "Gauss–Newton products, a Nyström-sketched Laplace), VI on mini-batches of 256; "
            "each network trains first on first use. Not measured on a GPU here yet."
        )
        return
    st.caption(
        "**Cost (CPU).** *Last layer* (p = 1,210): a dense GLM; the default run (500 images, "
        "every method, s² by the evidence) took about 20 s of CPU time (70 s wall on a busy "
        "two-core machine). *All layers* (p = 34,622): matrix-free Newton–CG and a "
        "Nyström-sketched Laplace, about 10× more: MAP + Laplace at 500 images with a fixed "
        "s² took 80 s of CPU (10 min wall under load); the evidence search repeats the "
        "Laplace fit for each s², and VI adds its steps. For all layers on a CPU, fix s² "
        "and use ≤ 200 images."
    )
    if not HAS_GPU:
        st.caption(
            "The **GPU preset** (Figure 4's depth sweep: PreResNet-20/56/110 on the 32×32 "
            "images, all layers, all 2,000 training images) is offered only when a CUDA GPU "
            "is present: on this CPU, training the three networks and the all-layer GLMs "
            "would take hours."
        )


# --------------------------------------------------------------------------- Figure 4 view
def _figure4_cards(main: pd.DataFrame) -> None:
    """Headline numbers: the network against the best and the range of the GLMs."""
    network = main[main["method"] == "network"]
    glm = main[main["method"] != "network"]
    one_arch = main["arch"].nunique() == 1
    cols = st.columns(5)
    if len(network) and one_arch:
        cols[0].metric("Network accuracy", f"{network.iloc[0].accuracy:.1%}")
        cols[2].metric("Network ECE", f"{network.iloc[0].ece:.3f}")
    if len(glm):
        best = glm.loc[glm["accuracy"].idxmax()]
        delta = None
        if len(network) and one_arch:
            delta = f"{100 * (best.accuracy - network.iloc[0].accuracy):+.1f} pts"
        cols[1].metric("Best GLM accuracy", f"{best.accuracy:.1%}", delta=delta,
                       delta_color="off")  # fmt: skip
        cols[3].metric("Best GLM ECE", f"{glm['ece'].min():.3f}")
        cols[4].metric("Worst GLM ECE", f"{glm['ece'].max():.3f}")


def _calibration_text(summary: pd.DataFrame) -> str:
    """What this run's reliability bins say: which methods are over- or under-confident."""
    several = summary["arch"].nunique() > 1
    groups: dict[str, list[str]] = {"calibrated": [], "over": [], "under": []}
    for r in summary.itertuples():
        name = f"{r.label} ({r.arch})" if several else r.label
        if abs(r.gap) < 0.02:
            groups["calibrated"].append(name)
        else:
            groups["over" if r.gap > 0 else "under"].append(
                f"{name} (confidence {r.mean_confidence:.2f}, accuracy {r.accuracy:.2f})"
            )
    lines = [
        "**In this run** (mean confidence against accuracy on the test images):",
        "- calibrated on average (within 0.02): " + (", ".join(groups["calibrated"]) or "none"),
        "- **over**-confident: " + (", ".join(groups["over"]) or "none"),
        "- **under**-confident: " + (", ".join(groups["under"]) or "none"),
    ]
    return "\n".join(lines)


@st.fragment
def _figure4_view(main: pd.DataFrame, reliability: pd.DataFrame) -> None:
    """View-only controls and the two figures (a fragment: redraws, never re-runs)."""
    labels = classification_labels(main)
    shown = st.pills(
        "Methods shown", labels, selection_mode="multi", default=labels, key="f4_shown",
        bind="query-params", help="View only: nothing is recomputed.",
    )
    archs = list(dict.fromkeys(reliability["arch"]))
    arch = archs[0]
    if len(archs) > 1:
        arch = st.segmented_control(
            "Reliability diagram of", archs, default=archs[0], required=True,
            key="f4_reliability_arch", bind="query-params",
        )
    if not shown:
        st.info("Select at least one method to show.")
        return
    with LIGHT.hold():  # figures are Python-heavy work: one session at a time (compute.py)
        metrics = classification_metrics_figure(main, methods=shown)
        rel_labels = [m for m in shown if m in classification_labels(reliability)]
        diagram = reliability_figure(reliability, arch=arch, methods=rel_labels)
    st.plotly_chart(metrics, key="classification_metrics", config={"displaylogo": False})
    st.caption(
        "Each dot is one method scored on the test images (hover for s², p and seconds). "
        "Arrows say which way is better; NLL and ECE measure the quality of the predicted "
        "probabilities, not just the predicted class."
    )
    st.plotly_chart(diagram, key="classification_reliability", config={"displaylogo": False})
    st.caption(
        "Test images are binned by the model's top-class probability (its confidence); "
        "each point is one bin's mean confidence and its fraction classified correctly. A "
        "calibrated model lies on the diagonal; below it the model is over-confident, above "
        "it under-confident. The bars underneath count the images per bin (log scale): "
        "most fall in the last bin, so that bin dominates the ECE."
    )
    bins = reliability[reliability["arch"] == arch]
    common.download_csv(bins, f"classification-reliability-{arch}.csv",
                        label="Download the reliability bins (CSV)")  # fmt: skip


def _settings_caption(main: pd.DataFrame, inputs: dict[str, Any]) -> str:
    p = sorted(set(main.loc[main["method"] != "network", "num_params"]))
    prior = inputs.get("prior_variance")
    return (
        f"{int(main['n_train'].iloc[0]):,} training and {int(main['n_test'].iloc[0]):,} test "
        f"images of {inputs['dataset']} · linearized: {main['layers'].iloc[0]}"
        + (f" (p = {', '.join(f'{v:,}' for v in p)})" if p else "")
        + f" · s² {'by the evidence' if prior is None else f'= {prior:g}'} · "
        f"{LINKS[inputs['link']]} predictive · VI {inputs['vi_steps']} steps · seed "
        f"{inputs['seed']}"
    )


def _figure4_results(record: RunRecord) -> None:
    tables = record.result
    main: pd.DataFrame = tables.main
    reliability: pd.DataFrame = tables["reliability"]
    summary = calibration_summary(reliability)
    _figure4_cards(main)
    st.markdown(_calibration_text(summary))
    keys = ["arch", "model", "method"]
    shown = main.merge(summary[[*keys, "mean_confidence"]], on=keys, how="left")
    shown["method"] = [
        classification_label(m, k) for m, k in zip(shown.model, shown.method, strict=True)
    ]
    shown["prior_variance"] = [  # the network has no prior: a dash, not "None"
        "–" if pd.isna(v) else f"{v:g}" for v in shown["prior_variance"]
    ]
    columns = ["method", "accuracy", "nll", "ece", "mean_confidence", "seconds",
               "prior_variance", "num_params"]  # fmt: skip
    if main["arch"].nunique() > 1:
        columns.insert(0, "arch")
    st.caption(_settings_caption(main, dict(record.inputs)))
    st.dataframe(
        shown[columns], hide_index=True,
        column_config={
            "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
            "nll": st.column_config.NumberColumn("NLL", format="%.3f"),
            "ece": st.column_config.NumberColumn("ECE", format="%.3f"),
            "mean_confidence": st.column_config.NumberColumn(
                "mean confidence", format="%.3f",
                help="Average top-class probability: above the accuracy is over-confident."),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f",
                                                     help="fit + predict (VI includes its MAP)"),
            "prior_variance": st.column_config.TextColumn("s²"),
            "num_params": st.column_config.NumberColumn("p", format="%d",
                                                        help="parameters linearized"),
        },
    )  # fmt: skip
    common.download_csv(main, "classification-metrics.csv", label="Download the metrics (CSV)")
    _figure4_view(main, reliability)
    evidence: pd.DataFrame = tables["evidence"]
    if len(evidence):
        with st.expander("How s² was chosen (Laplace evidence)", icon=":material/tune:"):
            st.caption(
                "log p(y | X, s²) of the Laplace approximation on the training images, per "
                "prior mean; MAP and Laplace use the chosen s², VI starts from that MAP."
            )
            st.dataframe(evidence, hide_index=True)
            common.download_csv(evidence, "classification-evidence.csv",
                                label="Download the evidence (CSV)")  # fmt: skip


def _figure4_reproduce(request: Request) -> None:
    arch = request.options["arch"][0]
    common.reproduce(
        f"""
import torch
from ntkcore.experiments.classification import classification
from ntkcore.plots import classification_metrics_figure, reliability_figure

torch.set_num_threads({torch.get_num_threads()})  # as the app (one thread per session)
tables = {request.call_text()}
print(tables.main[["arch", "model", "method", "accuracy", "nll", "ece", "seconds"]])
classification_metrics_figure(tables.main).show()
reliability_figure(tables["reliability"], arch={arch!r}).show()
"""
    )


def _figure4_section(preset: str) -> None:
    form_col, result_col = st.columns([1.25, 2.5], gap="medium")
    with form_col:
        request, submitted = _figure4_form(preset)
        _cost_note(preset)
    with result_col:
        record = None
        if request is not None:
            record = _shown_record(request, submitted, _figure4_title(request))
        if record is None:
            st.markdown(
                "**Nothing computed yet for these settings.** Choose the options on the left "
                "and press **Run** (below them). "
                + (
                    "On the GPU the small preset takes seconds; the depth sweep trains three "
                    "PreResNets on first use."
                    if HAS_GPU
                    else "The default (every method, 500 training images, last layer) took "
                    "about 20 s of CPU time, 30–70 s on a busy two-core machine; 50 images "
                    "and two methods take a few seconds."
                )
                + " A progress bar names each step (training or loading the network, the "
                "evidence search over s², VI); then the metrics, a reliability diagram and "
                "the table appear here."
            )
            return
        _figure4_results(record)
    _figure4_reproduce(_request_from(dict(record.inputs)))


# --------------------------------------------------------------------------- Table 1
def _transfer_form(preset: str) -> tuple[Request | None, bool]:
    """The options of ``unsupervised_transfer``; returns (request, Run pressed)."""
    defaults = _defaults(preset)
    with st.form("form-transfer", border=True):
        dataset = st.selectbox(
            "Images", TRANSFER_DATASETS, key="t1_dataset", bind="query-params",
            help="The `ntkcore.data` task: " + "; ".join(
                f"{name}: {DATASET_LABELS[name]}" for name in TRANSFER_DATASETS
            ) + ". The autoencoder learns to reconstruct its 2,000 source images (labels "
            "unused); the classifiers are fit on labelled images of the target pool.",
        )
        features = st.multiselect(
            "Jacobian of", tuple(TRANSFER_FEATURES), default=list(TRANSFER_FEATURES),
            key="t1_layers", bind="query-params", format_func=_labels(TRANSFER_FEATURES),
            help="Top k parameterized layers of the encoder (p = 1,040, 17,488, 20,704) or "
            "all four (20,912).",
        )
        methods = st.multiselect(
            "Classifiers", tuple(TRANSFER_METHODS), default=list(TRANSFER_METHODS),
            key="t1_methods", bind="query-params", format_func=_labels(TRANSFER_METHODS),
            help="The linear classifier (scikit-learn logistic regression on the 16-unit "
            "code) is the paper's 'activation baseline'; VI runs on all layers only, as in "
            "Table 1.",
        )
        left, right = st.columns(2)
        n_train = left.select_slider(
            "Labelled images", TRAIN_SIZES, value=defaults["t1_n_train"], key="t1_n_train",
            bind="query-params",
        )
        n_test = right.select_slider(
            "Test images", TEST_SIZES, value=1000, key="t1_n_test", bind="query-params",
        )
        prior = left.select_slider(
            "Prior variance s²", TRANSFER_PRIORS, value="1", key="t1_prior",
            bind="query-params",
            help="1: the paper's N(0, I) prior. 'unit-logits': s² = 1 / mean diag(J Jᵀ) "
            "(prior logits of unit variance; over-regularizes here, see the docstring).",
        )
        vi_steps = right.select_slider(
            "VI steps", VI_STEPS, value=defaults["t1_vi_steps"], key="t1_vi_steps",
            bind="query-params", help="Adam steps on mini-batches of 128 (256 on the GPU "
            "preset), from the MAP.",
        )
        seed = left.number_input(
            "Seed", min_value=SEEDS[0], max_value=SEEDS[1], value=0, step=1, key="t1_seed",
            bind="query-params",
            help="Seeds the autoencoder's training (seed 0 on MNIST is cached; another "
            "trains first, about a minute on a CPU) and the fixed projection to 10 outputs.",
        )
        submitted = st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", use_container_width=True
        )
    glm = [m for m in methods if m != "linear"]
    if not methods or (glm == ["map"] and not features):
        st.warning("Choose at least one classifier and, for MAP, one set of layers.")
        return None, False
    options = {
        "preset": preset,
        "dataset": str(dataset),
        "layers": [k for k in TRANSFER_FEATURES if k in features] or [0],
        "methods": [m for m in TRANSFER_METHODS if m in methods],
        "n_train": int(n_train),
        "n_test": int(n_test),
        "prior_variance": prior if prior == "unit-logits" else float(prior),
        "vi_steps": int(vi_steps),
        "seed": int(seed),
    }
    return Request("unsupervised-transfer", options), submitted


@st.fragment
def _transfer_view(table: pd.DataFrame) -> None:
    labels = list(dict.fromkeys(transfer_label(m) for m in table["method"]))
    shown = st.pills(
        "Classifiers shown", labels, selection_mode="multi", default=labels, key="t1_shown",
        bind="query-params",
    )
    if not shown:
        st.info("Select at least one classifier to show.")
        return
    with LIGHT.hold():
        figure = transfer_figure(table, methods=shown)
    st.plotly_chart(figure, key="transfer_figure", config={"displaylogo": False})
    common.download_csv(table, "unsupervised-transfer.csv", label="Download the table (CSV)")


def _transfer_results(record: RunRecord) -> None:
    table: pd.DataFrame = record.result
    linear = table[table["method"] == "linear"]
    glm = table[table["method"] != "linear"]
    cols = st.columns(4)
    if len(linear):
        cols[0].metric("Linear (activations)", f"{linear.iloc[0].accuracy:.1%}",
                       help="Logistic regression on the encoder's 16-unit code: the paper's "
                       "activation baseline.")  # fmt: skip
    if len(glm):
        best = glm.loc[glm["accuracy"].idxmax()]
        delta = (
            f"{100 * (best.accuracy - linear.iloc[0].accuracy):+.1f} pts"
            if len(linear) else None
        )
        cols[1].metric("Best Jacobian GLM", f"{best.accuracy:.1%}", delta=delta,
                       delta_color="off",
                       help=f"{transfer_label(best.method)} on the Jacobian of "
                       f"{TRANSFER_FEATURE_NAMES.get(best.features, best.features)}; the "
                       "delta is against the linear classifier, in percentage points.")
        all_layers = glm[(glm["features"] == "all") & (glm["method"] == "map")]
        if len(all_layers):
            cols[2].metric("All layers (MAP)", f"{all_layers.iloc[0].accuracy:.1%}")
        cols[3].metric("Prior variance s²", f"{glm.iloc[0].prior_variance:.3g}")
    st.caption(
        f"{int(table['n_train'].iloc[0]):,} labelled images of {table['dataset'].iloc[0]} · "
        f"seed {int(table['seed'].iloc[0])}. The last column is the paper's Table 1 "
        "(CIFAR-10, a BiGAN encoder): another dataset and network, so compare directions, "
        "not values."
    )
    shown = table.assign(
        features=[TRANSFER_FEATURE_NAMES.get(f, f) for f in table["features"]],
        method=[transfer_label(m) for m in table["method"]],
        paper=[PAPER_TABLE1_VALUES.get((f, m)) for f, m in
               zip(table["features"], table["method"], strict=True)],
    )  # fmt: skip
    st.dataframe(
        shown[["features", "method", "accuracy", "nll", "ece", "seconds", "num_params",
               "paper"]],
        hide_index=True,
        column_config={
            "features": st.column_config.TextColumn("Jacobian of"),
            "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
            "nll": st.column_config.NumberColumn("NLL", format="%.3f"),
            "ece": st.column_config.NumberColumn("ECE", format="%.3f"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
            "prior_variance": st.column_config.NumberColumn("s²", format="%.3g"),
            "num_params": st.column_config.NumberColumn("p", format="%d"),
            "paper": st.column_config.NumberColumn(
                "paper (%)", format="%.2f",
                help="Table 1 of the paper: CIFAR-10, BiGAN encoder, test accuracy in %."),
        },
    )  # fmt: skip
    _transfer_view(table)


def _transfer_reproduce(request: Request) -> None:
    common.reproduce(
        f"""
import torch
from ntkcore.experiments.classification import unsupervised_transfer
from ntkcore.plots import transfer_figure

torch.set_num_threads({torch.get_num_threads()})  # as the app (one thread per session)
table = {request.call_text()}
print(table[["features", "method", "accuracy", "nll", "ece", "seconds"]])
transfer_figure(table).show()
"""
    )


def _transfer_section(preset: str) -> None:
    st.markdown(
        "**Transferring an unsupervised network (Section 5, Table 1).** The encoder of an "
        "autoencoder trained to reconstruct images — *no labels* — followed by a fixed random "
        "projection of its code to 10 outputs is linearized; the finite-NTK GLM on the "
        "Jacobian of its top k layers or of all layers is fit on labelled images and compared "
        "with a linear classifier on the encoder's activations. "
        f"The paper (CIFAR-10, a BiGAN encoder; test accuracy %): {PAPER_TABLE1}. "
        "**Our data** (MNIST, a small convolutional autoencoder, 500 labelled images, "
        "`benchmarks/RESULTS.md`): the same direction — every Jacobian GLM beats the linear "
        "classifier (74–83% against 63%), more layers help up to a plateau (top 2–3 ≈ all), "
        "and VI is slightly below MAP."
    )
    form_col, result_col = st.columns([1.25, 2.5], gap="medium")
    with form_col:
        request, submitted = _transfer_form(preset)
        st.caption(
            "**Cost (CPU).** The default (500 labelled images, every feature set, VI 150 "
            "steps) took about 50 s wall on a busy two-core machine with the autoencoder "
            "cached; the all-layer MAP and VI dominate. Training the autoencoder first "
            "(another dataset or seed) adds about a minute."
        )
    with result_col:
        record = None
        if request is not None:
            title = (
                f"Table 1: {request.options['dataset']}, {len(request.options['layers'])} "
                f"feature set(s), {request.options['n_train']:,} labelled images"
            )
            record = _shown_record(request, submitted, title)
        if record is None:
            st.markdown(
                "**Nothing computed yet for these settings.** Choose the options on the left "
                "and press **Run**: a progress bar names each step (the autoencoder, the "
                "linear classifier, the GLM per set of layers); then the accuracies appear "
                "here."
            )
            return
        _transfer_results(record)
    _transfer_reproduce(_request_from(dict(record.inputs)))


# --------------------------------------------------------------------------- the page
st.title(HEADING)
intro, findings = st.columns(2, gap="large")
intro.markdown(
    "**What this page shows.** A trained network's Jacobian turns classification into a "
    "Bayesian generalized linear model (Eq. 4): logits g(x) = m(x) + J(x) w, a prior "
    "w ~ N(0, s² I) and a softmax likelihood, with m = 0 (the **finite NTK**) or m = the "
    "network's own logits (the **linearized NN**). Its posterior has no closed form: "
    "`ntkcore.adapt_classifier` fits it by **MAP**, a **Laplace** approximation or "
    "**variational inference** (VI). Each is scored against the network itself on held-out "
    "images: accuracy, negative log-likelihood (NLL) and expected calibration error (ECE, "
    "15 bins), with a reliability diagram (Section 4, Figure 4). A second tab transfers an "
    "*unsupervised* network (Section 5, Table 1)."
)
findings.markdown(
    "**Paper vs our data.** The paper (PreResNet-20/56/110 on CIFAR-10, VI) finds the "
    "linearized networks nearly as accurate as the network (≈ 92% for PreResNet-56) but "
    "with worse NLL and higher ECE: *more over-confident*. On our data (LeNet-3, 2,000 "
    "MNIST digits, last layer, 500 training images; `benchmarks/RESULTS.md`) the accuracy "
    "finding holds — every GLM within 1.5 points of the network's 90.6%, slightly above it "
    "— but **calibration goes the other way**: MAP and VI are as well calibrated as the "
    "network (ECE ≈ 0.02 vs 0.026) and the finite-NTK Laplace predictive is "
    "***under***-confident (ECE 0.28, NLL 0.57 vs 0.31): most of the 1,210 weight "
    "directions keep their prior variance, which flattens the probit predictive. All "
    "34,622 parameters give the same picture. The GPU preset has not been run on a GPU "
    "here yet."
)
left, right = st.columns([1.25, 2.5], gap="medium", vertical_alignment="center")
preset = left.radio(
    "Preset", PRESETS, index=0, key="cls_preset", bind="query-params", horizontal=True,
    on_change=_apply_preset, format_func=_labels(PRESET_LABELS),
    help="Fills in the options below: the CPU preset runs in under a minute; the GPU preset "
    "is the paper's Figure 4 depth sweep.",
)
right.info(
    f"Runs on **{DEVICE}** · torch {torch.__version__} · "
    + (
        "one run at a time for all visitors, on the GPU."
        if HAS_GPU
        else "no GPU here (the GPU preset is hidden): one run at a time for all visitors, "
        "one CPU thread per run."
    ),
    icon=":material/memory:",
)
figure4_tab, transfer_tab = st.tabs(SECTIONS, key="cls_section", bind="query-params")
if figure4_tab.open:
    with figure4_tab:
        _figure4_section(str(preset))
if transfer_tab.open:
    with transfer_tab:
        _transfer_section(str(preset))
