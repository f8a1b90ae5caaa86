"""Jacobian similarity: are trained networks' Jacobians alike across related tasks? (Figure 5)

Maddox et al. (2021, Section 4, "Transferability of Jacobian Features") train LeNet-3s on two
halves of MNIST and on Fashion-MNIST and compare their Jacobians on MNIST images. This page
runs that experiment (:func:`ntkcore.experiments.similarity.jacobian_similarity`) behind a
Run button (training up to dozens of networks is heavy work: it goes through
:func:`app.compute.run_heavy`, results cached process-wide by every option), and draws the
similarity violins, the NTK spectra (Appendix E.1) and one network's NTK on the probe images
grouped by class (:func:`ntkcore.experiments.similarity.ntk_by_class`, live, under the light
slot). The page only wires widgets to the library: the numerics live in ``ntkcore``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from app import common
from app.compute import (
    LIGHT,
    RESULTS,
    compute_device,
    last_record,
    run_heavy,
    show_record_status,
)
from ntkcore import zoo
from ntkcore.experiments import ExperimentTables
from ntkcore.experiments.similarity import (
    _PRESETS as PRESET_SIZES,  # the experiment's own preset sizes (seeds, probes)
)
from ntkcore.experiments.similarity import (
    DATASETS,
    DEFAULT_PAIRS,
    PAIRINGS,
    TRAINING,
    ClassKernel,
    jacobian_similarity,
    ntk_by_class,
)
from ntkcore.plots import class_kernel_figure, ntk_spectra_figure, similarity_violin_figure
from ntkcore.similarity import MEASURES

PAGE = "similarity"
HEADING = "Jacobian similarity across tasks"
#: Pairs of training sets; a set with itself compares replicate i with i + 1 (different
#: initializations, same data): the spread between seeds, a reference for the others.
PAIR_OPTIONS = (*DEFAULT_PAIRS, "mnist1-mnist1", "mnist2-mnist2", "fashion-fashion")
DATASET_LABELS = {"mnist1": "MNIST1", "mnist2": "MNIST2", "fashion": "Fashion-MNIST"}
HAS_GPU = compute_device().type == "cuda"
#: On the CPU the page caps the run (9 networks of 3 seeds train in ~1 min, 25 seeds in
#: ~8 min; 300 probes make Gram matrices of 3,000² per network).
MAX_SEEDS, MAX_PROBES = (25, 2000) if HAS_GPU else (10, 300)
HEATMAP_SIZES = (50, 100, 200)
TRACE_OUTPUTS = "all outputs (sum)"


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Every option of one run (the form's widgets); ``asdict`` is the run's cache key."""

    preset: str
    seeds: int
    n_probe: int
    pairs: tuple[str, ...]
    pairing: str
    measures: tuple[str, ...]
    shared_init: bool
    device: str

    def datasets(self) -> list[str]:
        return [d for d in DATASETS if any(d in pair.split("-") for pair in self.pairs)]

    def call(self) -> str:
        """The library call, as the "Reproduce in Python" snippet shows it."""
        device = "" if self.device == "cpu" else f", device={self.device!r}"
        return (
            f"tables = jacobian_similarity(\n    preset={self.preset!r}, seeds={self.seeds}, "
            f"n_probe={self.n_probe}, pairs={self.pairs!r},\n    pairing={self.pairing!r}, "
            f"measures={self.measures!r}, shared_init={self.shared_init}{device},\n)"
        )


def _fill_from_preset() -> None:
    """Preset selector callback: put the preset's sizes into the form's widgets."""
    sizes = PRESET_SIZES[st.session_state["sim_preset"] or "small"]
    st.session_state["sim_seeds"] = min(int(sizes["seeds"]), MAX_SEEDS)
    st.session_state["sim_probes"] = min(int(sizes["n_probe"]), MAX_PROBES)


def _form() -> tuple[Settings, bool]:
    """The run options; returns them and whether Run was pressed."""
    small = PRESET_SIZES["small"]
    if HAS_GPU:
        preset = st.segmented_control(
            "Preset",
            ("small", "full"),
            default="small",
            key="sim_preset",
            bind="query-params",
            on_change=_fill_from_preset,
            help="small: 3 seeds × 100 probe images (CPU, about a minute). full: the paper's 25 "
            "seeds per training set and all 2,000 MNIST1 images as probes (GPU).",
        )
        preset = preset or "small"
    else:
        preset = "small"
        st.caption(
            "Preset **small** (3 seeds × 100 probe images). The **full** preset — the paper's 25 "
            "networks per training set on all 2,000 MNIST1 images, NTK Gram matrices of "
            "20,000 × 20,000 per network — is offered only when the server has a GPU; this "
            "one has none. On the CPU runs are capped at "
            f"{MAX_SEEDS} seeds and {MAX_PROBES} probe images."
        )
    with st.form("sim_form", border=True):
        c1, c2, c3 = st.columns([1, 1, 1.6], gap="medium")
        seeds = c1.number_input(
            "Seeds per training set",
            min_value=2,
            max_value=MAX_SEEDS,
            value=min(int(small["seeds"]), MAX_SEEDS),
            step=1,
            key="sim_seeds",
            bind="query-params",
            help="Replicate i of each training set is trained with seed i (the paper: 25).",
        )
        n_probe = c2.number_input(
            "Probe images (MNIST1)",
            min_value=10,
            max_value=MAX_PROBES,
            value=min(int(small["n_probe"]), MAX_PROBES),
            step=10,
            key="sim_probes",
            bind="query-params",
            help="The Jacobians are compared on the first n MNIST1 training images "
            "(n·10 rows each; the paper used 5,000 images, our MNIST1 has 2,000).",
        )
        pairs = st.pills(
            "Pairs of training sets",
            PAIR_OPTIONS,
            selection_mode="multi",
            default=list(DEFAULT_PAIRS),
            key="sim_pairs",
            bind="query-params",
            help="The paper's three pairs; a set with itself (e.g. mnist1-mnist1) compares "
            "networks trained on the same data from different seeds: a reference spread.",
        )
        pairing = st.radio(
            "Which replicates are compared",
            PAIRINGS,
            index=PAIRINGS.index("seed"),
            horizontal=True,
            key="sim_pairing",
            bind="query-params",
            format_func={"seed": "seed i with seed i (the paper)",
                         "all": "every seed with every seed"}.get,
        )  # fmt: skip
        measures = c3.pills(
            "Measures",
            MEASURES,
            selection_mode="multi",
            default=list(MEASURES),
            key="sim_measures",
            bind="query-params",
            help="Two readings of the paper's formula (explained below the figure).",
        )
        shared_init = c3.checkbox(
            "Shared initialization",
            value=True,
            key="sim_shared_init",
            bind="query-params",
            help="Seed i of every training set starts from the same initial weights, as one "
            "training script run per seed would do. Off: every network has its own "
            "initialization (the parameter reading then loses its meaning).",
        )
        submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
    settings = Settings(
        preset=str(preset),
        seeds=int(seeds),
        n_probe=int(n_probe),
        pairs=tuple(str(p) for p in pairs),
        pairing=str(pairing),
        measures=tuple(m for m in MEASURES if m in (measures or ())),
        shared_init=bool(shared_init),
        device=str(compute_device()),
    )
    return settings, bool(submitted)


# ----------------------------------------------------------------------------- networks
def _training_seed(s: Settings, dataset: str, replicate: int) -> int:
    """The seed ``jacobian_similarity`` trains replicate ``replicate`` of ``dataset`` with."""
    if s.shared_init:
        return replicate
    return 3 * replicate + list(DATASETS).index(dataset)


def _replicate(dataset: str, seed: int) -> tuple[zoo.Preset, bool]:
    """The zoo entry of one network of the experiment (same cache key as its training) and
    whether it is a registered preset (``python -m ntkcore.zoo build`` trains those)."""
    name, data_kw = DATASETS[dataset]
    for p in zoo.PRESETS["workshop"]:
        if (p.arch, p.dataset, dict(p.data_kw), p.seed) == ("lenet3", name, data_kw, seed) and (
            dict(p.hyper).items() >= TRAINING.items()
        ):
            return p, True
    return zoo.Preset(f"similarity-{dataset}-seed{seed}", "lenet3", name,
                      f"LeNet on {DATASET_LABELS[dataset]} (seed {seed})",
                      dict(TRAINING), data_kw, seed, listed=False), False  # fmt: skip


@st.cache_resource(max_entries=1, show_spinner=False)
def _known_cached() -> set[tuple[str, int, str]]:
    """(dataset, seed, training options) of networks seen on disk (they stay there)."""
    return set()


def _is_cached(dataset: str, seed: int) -> bool:
    key = (dataset, seed, repr(sorted(TRAINING.items())))
    known = _known_cached()
    if key not in known and _replicate(dataset, seed)[0].is_cached():
        known.add(key)
    return key in known


def _to_train(s: Settings) -> list[str]:
    missing = []
    for d in s.datasets():
        for i in range(s.seeds):
            seed = _training_seed(s, d, i)
            if not _is_cached(d, seed):
                missing.append(f"{d}-s{seed}")
    return missing


@st.cache_resource(max_entries=12, show_spinner=False)
def _cached_network(dataset: str, seed: int, training: str) -> nn.Module:
    return _replicate(dataset, seed)[0].load()  # on disk: loading takes milliseconds


def _network(dataset: str, seed: int) -> nn.Module | None:
    """A trained network of the experiment. A registered zoo preset trains on first use (with
    a progress bar); any other must have been trained by a run (else ``None``)."""
    preset, registered = _replicate(dataset, seed)
    if registered:
        return common.preset_model(preset.id)
    if not _is_cached(dataset, seed):
        return None
    return _cached_network(dataset, seed, repr(sorted(TRAINING.items())))


# ----------------------------------------------------------------------------- the run
def _run(s: Settings, progress, device: torch.device) -> ExperimentTables:
    return jacobian_similarity(
        preset=s.preset,
        seeds=s.seeds,
        n_probe=s.n_probe,
        pairs=s.pairs,
        pairing=s.pairing,
        measures=s.measures,
        shared_init=s.shared_init,
        device=device,
        progress=progress,
    )


def _run_title(s: Settings, missing: list[str]) -> str:
    count = len(s.datasets()) * s.seeds
    train = f", training {len(missing)} first" if missing else ""
    return f"Comparing the Jacobians of {count} LeNet-3s on {s.n_probe} MNIST1 images{train}"


# ----------------------------------------------------------------------------- figure 5
MEASURE_SENTENCES = {
    "kernel": "**kernel** — the cosine of the two networks' NTK Gram matrices K = J Jᵀ on the "
    "probe images (n·10 × n·10): do their tangent kernels agree on these digits? It does not "
    "depend on how the parameters are numbered, so it compares any two networks.",
    "parameter": "**parameter** — the paper's own layout (J is p × n·o): the cosine of the "
    "p × p matrices JᵀJ. It pairs parameter i of one network with parameter i of the other, "
    "so it is meaningful only between networks that started from the same initialization.",
}


def _summary(main: pd.DataFrame) -> pd.DataFrame:
    """Comparisons, mean, min and max per measure and pair (in the table's order)."""
    grouped = main.groupby(["measure", "pair"], sort=False)["similarity"]
    table = grouped.agg(comparisons="count", mean="mean", min="min", max="max").reset_index()
    order = {m: i for i, m in enumerate(dict.fromkeys(main["measure"]))}
    table = table.sort_values("measure", key=lambda c: c.map(order), kind="stable")
    return table.reset_index(drop=True)


@st.fragment
def _figure5(record_main: pd.DataFrame, measures: tuple[str, ...]) -> None:
    left, right = st.columns([2, 1])
    shown = left.pills(
        "Measures shown",
        measures,
        selection_mode="multi",
        default=list(measures),
        key="sim_show_measures",
        bind="query-params",
    )
    full_range = right.toggle(
        "y axes from 0 to 1",
        value=True,
        key="sim_full_range",
        bind="query-params",
        help="Off: fit the axes to the data (shows the violins' shapes).",
    )
    shown = [m for m in measures if m in (shown or ())] or list(measures)
    with LIGHT.hold():
        figure = similarity_violin_figure(record_main, measures=shown, full_range=full_range)
        st.plotly_chart(figure, key="sim_violins", config={"displaylogo": False})
    st.markdown("  \n".join(MEASURE_SENTENCES[m] for m in shown))
    summary = _summary(record_main[record_main["measure"].isin(shown)])
    st.table(
        summary.style.format({"mean": "{:.4f}", "min": "{:.4f}", "max": "{:.4f}"}),
        hide_index=True,
        width="content",
    )
    common.download_csv(record_main, "jacobian-similarity.csv", "Download the similarities (CSV)")


# ----------------------------------------------------------------------------- spectra
def _sub(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


@st.fragment
def _spectra(spectra: pd.DataFrame) -> None:
    datasets = list(dict.fromkeys(spectra["dataset"]))
    left, middle, right = st.columns([1.6, 1, 1])
    chosen = left.pills(
        "Networks trained on",
        datasets,
        selection_mode="multi",
        default=datasets,
        key="sim_spectra_sets",
        bind="query-params",
    )
    relative = middle.toggle(
        "Relative (λₖ / λ₁)", value=True, key="sim_relative", bind="query-params",
        help="Divide each network's eigenvalues by its largest.",
    )
    log_x = right.toggle("Log k axis", value=True, key="sim_log_x", bind="query-params")
    chosen = [d for d in datasets if d in (chosen or ())] or datasets
    models = list(dict.fromkeys(spectra.loc[spectra["dataset"].isin(chosen), "model"]))
    with LIGHT.hold():
        figure = ntk_spectra_figure(spectra, models=models, relative=relative, log_x=log_x)
        st.plotly_chart(figure, key="sim_spectra", config={"displaylogo": False})
    # λ_k / λ_1 at k = 10, 11, 100, averaged over each training set's networks
    by_index = spectra.pivot_table(index="model", columns="index", values="eigenvalue")
    dataset_of = spectra.groupby("model")["dataset"].first()
    ks = [k for k in (10, 11, 100) if k <= by_index.shape[1]]
    ratios = {
        k: (by_index[k - 1] / by_index[0]).groupby(dataset_of).mean().reindex(chosen) for k in ks
    }
    decay = pd.DataFrame(
        {f"λ{_sub(k)} / λ₁": ratios[k].to_numpy() for k in ks}, index=pd.Index(chosen)
    ).rename_axis("trained on").reset_index()
    st.caption(
        "Eigenvalues of each network's NTK Gram matrix J Jᵀ on the probe images, largest "
        "first (products in float32: values below about 10⁻⁶ of the largest are rounding "
        "noise). The spectrum drops after the 10th eigenvalue (one direction per output). "
        "A faster decay means fewer directions of the kernel carry these digits (on our "
        "data: the Fashion networks'). Means over each training set's networks:"
    )
    st.table(decay.style.format("{:.3g}", subset=decay.columns[1:]), hide_index=True,
             width="content")  # fmt: skip
    common.download_csv(spectra, "ntk-spectra.csv", "Download the spectra (CSV)")


# ----------------------------------------------------------------------------- heatmap
@st.cache_data(max_entries=16, show_spinner=False)
def _class_kernel(
    dataset: str, seed: int, n_images: int, output: int | None, normalize: bool,
    training: str, _model: nn.Module,
) -> ClassKernel:  # fmt: skip
    task = common.task("mnist")
    x, y = task.source
    names = tuple(task.meta.extra.get("class_names", ())) or None
    return ntk_by_class(_model, x[:n_images], y[:n_images], output=output, normalize=normalize,
                        class_names=names)  # fmt: skip


def _heatmap_table(kernel: ClassKernel) -> pd.DataFrame:
    n = kernel.gram.shape[0]
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pd.DataFrame({
        "row": rows.ravel(), "col": cols.ravel(),
        "image_row": kernel.order[rows.ravel()], "image_col": kernel.order[cols.ravel()],
        "class_row": kernel.labels[rows.ravel()], "class_col": kernel.labels[cols.ravel()],
        "kernel": kernel.gram.ravel(),
    })  # fmt: skip


@st.fragment
def _heatmap(networks: list[tuple[str, int]]) -> None:
    labels = {f"{d}-s{s}": (d, s) for d, s in networks}
    c1, c2, c3, c4 = st.columns([1.2, 1, 1.2, 1])
    choice = c1.selectbox(
        "Network",
        list(labels),
        key="sim_heat_network",
        bind="query-params",
        format_func=lambda k: f"{DATASET_LABELS[labels[k][0]]}, seed {labels[k][1]}",
    )
    n_images = c2.selectbox(
        "Probe images", HEATMAP_SIZES, index=1, key="sim_heat_n", bind="query-params",
        help="The first n MNIST1 training images (a run's probes are the first n too).",
    )  # fmt: skip
    output = c3.selectbox(
        "Outputs", (TRACE_OUTPUTS, *range(10)), key="sim_heat_output", bind="query-params",
        format_func=lambda o: o if isinstance(o, str) else f"output {o} (digit {o})",
        help="Sum over the 10 outputs of K[(i,a), (j,a)], or one output's kernel.",
    )  # fmt: skip
    normalize = c4.toggle(
        "Normalize", value=True, key="sim_heat_normalize", bind="query-params",
        help="Divide k_ij by √(k_ii k_jj): a kernel correlation in [−1, 1].",
    )  # fmt: skip
    dataset, seed = labels[choice]
    model = _network(dataset, seed)
    if model is None:
        st.info(f"{choice} is not on disk: press Run with these settings to train it.")
        return
    out = None if isinstance(output, str) else int(output)
    with LIGHT.hold():
        kernel = _class_kernel(dataset, seed, int(n_images), out, bool(normalize),
                               repr(sorted(TRAINING.items())), model)  # fmt: skip
        st.plotly_chart(class_kernel_figure(kernel), key="sim_heatmap",
                        config={"displaylogo": False})  # fmt: skip
    head = (
        " Fashion networks are shown with their own Fashion-MNIST head (the similarity run "
        "retrains that head on MNIST1, footnote 3)." if dataset == "fashion" else ""
    )
    st.caption(
        f"The finite NTK of the LeNet-3 trained on {DATASET_LABELS[dataset]} (seed {seed}) "
        f"between the first {n_images} MNIST1 images, sorted by digit (white lines: class "
        "boundaries). Bright diagonal blocks mean the network's tangent kernel groups images "
        "of one digit together — what a GP with this kernel generalizes from. The bars "
        "compare each digit's mean kernel value with its own class and with the others."
        + head
    )
    common.download_csv(_heatmap_table(kernel), f"ntk-by-class-{choice}.csv",
                        "Download the heatmap (CSV)")  # fmt: skip
    name, data_kw = DATASETS[dataset]
    common.reproduce(
        f"""
from ntkcore import data, zoo
from ntkcore.experiments.similarity import TRAINING, ntk_by_class
from ntkcore.plots import class_kernel_figure

task = data.load({name!r}{"".join(f", {k}={v!r}" for k, v in data_kw.items())})
model = zoo.fetch("lenet3", {name!r}, {seed}, task=task, data_kw={data_kw!r}, **TRAINING).model
mnist1 = data.load("mnist")
x, y = mnist1.source
kernel = ntk_by_class(model, x[:{n_images}], y[:{n_images}], output={out!r},
                      normalize={bool(normalize)}, class_names=mnist1.meta.extra["class_names"])
class_kernel_figure(kernel).show()
"""
    )


def _findings() -> None:
    """What our data shows next to the paper's claim (benchmarks/RESULTS.md)."""
    with st.container(border=True):
        st.markdown(
            "**What our data finds, next to the paper.** The paper reports MNIST1–MNIST2 Jacobians "
            "“vastly more similar” than MNIST–Fashion ones, which have “nearly zero similarity”. "
            "On our data (25 seeds, 100 probes, `benchmarks/RESULTS.md`) the *direction* holds "
            "under both readings of the formula — every MNIST1–MNIST2 similarity exceeds every "
            "MNIST–Fashion one — but nothing is near zero under the **kernel** reading "
            "(0.990–0.997 vs 0.76–0.95: trained LeNets' NTKs on the same digits share their "
            "dominant directions). The **parameter** reading (0.77–0.90 vs 0.25–0.44) comes "
            "closer to the paper, but it mostly measures the shared initialization: networks "
            "trained on the *same* data from different seeds score only 0.11–0.19 (try the "
            "mnist1-mnist1 pair, or untick the shared initialization)."
        )


# ----------------------------------------------------------------------------- the page
st.title(HEADING)
st.markdown(
    "Is the Jacobian of a trained network — the feature map of its linearization, whose Gram "
    "matrix is the finite NTK — specific to the task it was trained on, or shared by related "
    "tasks? Following Section 4 of Maddox et al. (Figure 5), LeNet-3s are trained on "
    "**MNIST1** and **MNIST2** (two halves of our MNIST slice: the same distribution) and on "
    "**Fashion-MNIST** (clothing; its final layer is then retrained on MNIST1, footnote 3), and "
    "each pair's Jacobians on MNIST1 images are compared with"
)
st.latex(
    r"\operatorname{sim}(A, B) = \frac{\operatorname{tr}(A^\top B B^\top A)}"
    r"{\lVert A A^\top \rVert_F \, \lVert B B^\top \rVert_F} \in [0, 1]."
)
settings, submitted = _form()
if not settings.pairs or not settings.measures:
    st.error("Choose at least one pair of training sets and one measure.")
    st.stop()
inputs = asdict(settings)
missing = _to_train(settings)
record = last_record(PAGE)
if submitted:
    try:
        record = run_heavy(
            PAGE, _run_title(settings, missing),
            lambda progress, device: _run(settings, progress, device), inputs=inputs,
        )  # fmt: skip
    except ValueError as err:  # the library validates the options
        st.error(f"Cannot run with these settings: {err}")
    missing = _to_train(settings)
else:
    cached = RESULTS.get(PAGE, inputs)  # e.g. another session ran these settings
    record = cached if cached is not None else record
fresh = show_record_status(PAGE, record, inputs)
if missing and not fresh:
    count = len(settings.datasets()) * settings.seeds
    listed = ", ".join(missing[:6]) + ("…" if len(missing) > 6 else "")
    st.caption(
        f"Run will first train the {len(missing)} of {count} networks not yet on disk "
        f"({listed}; about 5 s of CPU time each, more on a busy machine). "
        "`python -m ntkcore.zoo build --preset workshop` pre-trains the small preset's nine."
    )
if record is None:
    count = len(settings.datasets()) * settings.seeds
    st.info(
        f"No result for these settings yet: press **Run** to compare the Jacobians of {count} "
        "networks. The small preset (nine networks) takes about 25 s of CPU time once they are "
        "trained, longer when the machine is busy; a bar shows what runs."
    )
    _findings()
    run_settings = settings
    heat_networks = [(d, s) for d in DATASETS for s in range(int(PRESET_SIZES["small"]["seeds"]))]
else:
    run_settings = Settings(**{**record.inputs, "pairs": tuple(record.inputs["pairs"]),
                               "measures": tuple(record.inputs["measures"])})  # fmt: skip
    tables: ExperimentTables = record.result
    st.subheader("Similarity across seeds (Figure 5)")
    _findings()
    st.caption(
        f"{len(tables['main']) // len(run_settings.measures)} comparisons of networks trained "
        f"with seeds {', '.join(str(s) for s in sorted(set(tables['models']['seed'])))}, "
        f"on the first {run_settings.n_probe} MNIST1 images. Each point is one pair of "
        "networks; the box shows the quartiles, the line across the violin the mean."
    )
    _figure5(tables["main"], run_settings.measures)
    if not tables["spectra"].empty:
        st.subheader("NTK spectra (Appendix E.1)")
        _spectra(tables["spectra"])
    with st.expander("The networks: accuracy on MNIST", icon=":material/table:"):
        st.dataframe(
            tables["models"],
            hide_index=True,
            column_config={
                "mnist_accuracy": st.column_config.NumberColumn(format="%.3f"),
                "source_accuracy": st.column_config.NumberColumn(format="%.3f"),
            },
        )
        st.caption(
            "mnist_accuracy: on MNIST's test split (Fashion networks after their head was "
            "retrained on MNIST1); source_accuracy: on their own training set's test split."
        )
        common.download_csv(tables["models"], "similarity-networks.csv",
                            "Download the networks table (CSV)")  # fmt: skip
    heat_networks = [(str(r.dataset), int(r.seed)) for r in tables["models"].itertuples()]
common.reproduce(
    f"""
from ntkcore.experiments.similarity import jacobian_similarity
from ntkcore.plots import ntk_spectra_figure, similarity_violin_figure

{run_settings.call()}
print(tables["main"].groupby(["measure", "pair"])["similarity"].describe())
similarity_violin_figure(tables["main"]).show()
ntk_spectra_figure(tables["spectra"], relative=True, log_x=True).show()
"""
)

st.subheader("One network's NTK on the probe images, grouped by class")
_heatmap(heat_networks)
