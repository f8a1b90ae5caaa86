"""Adaptation curves: test error against the number of context points, per method (Figures 6, 7).

Maddox et al. (2021, Section 5) adapt a trained network to new target tasks with the finite
NTK and compare it with baselines as the number of target (context) points grows: Figure 6
on sinusoids, Figure 7 on the malaria maps (7a) and on rotated faces (7b). This page runs
that experiment — :func:`ntkcore.experiments.fast_adaptation.fast_adaptation`, or
:func:`~ntkcore.experiments.fast_adaptation.fast_adaptation_from_source` on an uploaded CSV
file with a network trained on its source rows — behind a Run button, through
:func:`app.compute.run_heavy` (one run at a time for all sessions, on the GPU when there is
one, results cached process-wide by every option), and draws the mean over target tasks with
its spread (:func:`ntkcore.plots.adaptation_curves_figure`) and per-task win rates
(:func:`ntkcore.plots.win_rate_figure`). The metric, spread and axes are view-only controls
in a fragment: changing them redraws and never re-runs.

The page only wires widgets to the library: the numerics live in ``ntkcore``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app import common, uploads
from app.compute import (
    LIGHT,
    RESULTS,
    RunRecord,
    compute_device,
    last_record,
    run_heavy,
    show_record_status,
)
from ntkcore import data
from ntkcore.experiments.fast_adaptation import (
    DATASETS,
    METHOD_NAMES,
    fast_adaptation,
    fast_adaptation_from_source,
    preset_sizes,
)
from ntkcore.experiments.methods import Source, train_source
from ntkcore.plots import (
    CURVE_METRICS,
    SPREADS,
    adaptation_curves_figure,
    curve_summary,
    win_rate_figure,
    win_rates,
)

PAGE = "curves"
HEADING = "Adaptation curves: error vs number of context points"
USER_DATA = "your data (CSV)"
FIGURE_KEY = "curves_figure"
WIN_KEY = "curves_wins"

DEVICE = compute_device()
HAS_GPU = DEVICE.type == "cuda"
PRESETS = ("small", "full") if HAS_GPU else ("small",)
#: Target tasks a run may ask for (a CPU run of ten spatial tasks takes minutes).
MAX_TASKS = 20 if HAS_GPU else 10

#: The regression transfer tasks of the library the page offers, then uploaded data.
TASKS = tuple(d for d in DATASETS if d in data.available())
DATASET_OPTIONS = (*TASKS, USER_DATA)
#: One line under the dataset picker (the picker shows the plain names, which are also what
#: a shared link carries: Streamlit puts the formatted option in the URL).
DATASET_NOTES = {
    "sinusoids": "Figure 6: a tanh MLP trained on one sinusoid, adapted to sinusoids of other "
    "amplitudes, frequencies and phases (one per target task).",
    "linear-to-sine": "A variant of Figure 6: the MLP is trained on a line, then adapted to "
    "sines.",
    "toy-gap": "Figure 3's 1-D data in two clusters with a gap (a ReLU MLP); the test grid "
    "reaches far outside the clusters.",
    "spatial": "Figure 7a's setting: a heteroscedastic MLP trained on an 1860s temperature map, "
    "adapted to cells of the 2090s map (standing in for the malaria atlas).",
    "faces-rotation": "Figure 7b: LeNet-3 predicts the rotation of 20 people's faces, adapted "
    "to 20 others (LFW crops standing in for Olivetti).",
    USER_DATA: "A CSV file with a source and a target domain: a tanh MLP is trained on the "
    "source rows.",
}
#: The methods the paper compares on each dataset (the form's default): Figure 6 shows the
#: finite NTK, the transferred RBF GP and ABLR (``ablr-scratch`` is Perrone et al.'s ABLR,
#: ``ablr`` ours, warm-started from the trained network); Figure 7 the NTK, no retraining
#: and last-layer retraining (7a's text adds 6× the training budget).
PAPER_METHODS: dict[str, tuple[str, ...]] = {
    "sinusoids": ("ntk", "rbf-gp", "ablr", "ablr-scratch"),
    "linear-to-sine": ("ntk", "rbf-gp", "ablr", "ablr-scratch"),
    "toy-gap": ("ntk", "rbf-gp", "ablr", "ablr-scratch"),
    "spatial": ("ntk", "no-retrain", "last-layer", "last-layer-6x"),
    "faces-rotation": ("ntk", "no-retrain", "last-layer"),
    USER_DATA: ("ntk", "no-retrain", "last-layer", "rbf-gp", "ablr"),
}
#: Target tasks of the form's default run (within a minute of CPU time with the models
#: cached; the spread over tasks needs several).
DEFAULT_TASKS = {"sinusoids": 5, "linear-to-sine": 5, "toy-gap": 2, "spatial": 3,
                 "faces-rotation": 3, USER_DATA: 3}  # fmt: skip
SIZE_GRID = (2, 3, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250, 300)
HYPER = {
    "fixed": "fit on the source task, transferred",
    "marginal-likelihood": "refit on each context set",
}
#: The MLP trained on uploaded source rows: the Adapt page's (same zoo cache entry).
USER_MLP = {"width": 64, "depth": 2, "activation": "tanh", "epochs": 1000, "lr": 1e-2}
METHOD_HELP = (
    "ntk: the finite NTK, a zero-mean GP with the network's Jacobian as features (Algorithm "
    "1); ntk-linearized: the same with the network as prior mean; no-retrain: the source "
    "network as is; last-layer / last-layer-6x: retrain the last layer for the source's "
    "training budget / six times it; fine-tune: retrain every layer; rbf-gp: an RBF GP with "
    "hyperparameters fit on the source; ablr: Bayesian linear regression on last-layer "
    "features learned on the source from the trained network; ablr-scratch: the same from a "
    "random initialization (Perrone et al.)."
)

#: What the paper reports and what our data shows (benchmarks/RESULTS.md, "Experiments: fast
#: adaptation", full preset: ten target tasks, mean test MSE).
FINDINGS: dict[str, str] = {
    "sinusoids": (
        "**Paper (Figure 6):** the finite NTK “significantly outperforms ABLR” and is "
        "comparable to, or improves upon, the transferred RBF GP.  \n"
        "**Our data (ten tasks):** the NTK beats no retraining at every n (5.99 vs 14.2 at 5 "
        "points, 0.0096 at 50; 80–100 % of tasks). ABLR warm-started from the trained "
        "network (`ablr`) is **better** than the NTK from 5 to 50 points (4.37 vs 5.99 at "
        "5, 0.0046 vs 0.0096 at 50); the NTK is ahead only at 100. ABLR from scratch "
        "(`ablr-scratch`, Perrone et al.) has a higher *mean* MSE with 5–20 points, yet the "
        "NTK wins on only 40–60 % of the tasks: scratch ABLR fails badly on a few. The RBF "
        "GP is better than the NTK at every n here (the functions are smooth)."
    ),
    "linear-to-sine": (
        "**Paper:** no such experiment (our variant of Figure 6: the network is trained on a "
        "line, then adapted to sines).  \n"
        "**Our data (small preset):** the NTK has the lowest mean MSE at 50 points (0.011), "
        "far below the RBF GP, whose hyperparameters learned on a line transfer badly (3.3)."
    ),
    "toy-gap": (
        "**Paper:** no curve (Figure 3's toy task with a gap between two clusters).  \n"
        "**Our data:** not a transfer task — the test grid spans [−15, 15], far beyond the "
        "two clusters at ±5, so every method extrapolates and none dominates."
    ),
    "spatial": (
        "**Paper (Figure 7a, malaria maps):** the NTK improves as points are added; "
        "retraining the last layer for the source's budget stagnates, barely better than no "
        "retraining; six times the budget ≈ the NTK.  \n"
        "**Our data (a climate map stands in for the malaria atlas; ten tasks):** the NTK "
        "improves at every step (0.040, 0.021, 0.013, 0.011, 0.0089 from 10 to 200 points), "
        "7–30× below no retraining. Last-layer retraining does **not** stagnate (0.066 → "
        "0.0089, level with the NTK), and 6× the budget is *worse* than 1× at every size "
        "(the head overfits the context points). Means mislead: at 10 points the NTK's mean "
        "MSE is below last-layer's (0.040 vs 0.066), but it wins on only 2 of the 10 tasks."
    ),
    "faces-rotation": (
        "**Paper (Figure 7b, Olivetti faces):** all methods improve with more points; the "
        "NTK is best throughout, with its biggest advantage when there are few points.  \n"
        "**Our data (LFW crops stand in for Olivetti; ten tasks):** with 10 points the NTK "
        "is *worse* than last-layer retraining (0.35 vs 0.31, 3 of 10 tasks) and than no "
        "retraining (0.32); from 50 points its MSE is about half of last layer's on every "
        "task (0.142 vs 0.283; 0.013 vs 0.275 at 200) — the advantage **grows** with n. "
        "Last-layer retraining hardly moves; the RBF GP on raw pixels (add `rbf-gp`) is best "
        "from 50 points (the pool and test images share the 20 target identities)."
    ),
    USER_DATA: (
        "**Your data:** no paper reference. The “target tasks” are random splits of your "
        "target rows (seed t picks which rows form the context pool, in which order, and "
        "which are held out for testing), so the spread shows how much the result depends on "
        "which points happen to be observed."
    ),
}
CALIBRATION = (
    "Across datasets the NTK's 95 % intervals are close to nominal (coverage 0.98–1.00 on "
    "sinusoids, 0.91–0.97 on spatial, 0.70–0.92 on faces), while the retrained point "
    "estimates, scored with their residual variance on the context points, are overconfident "
    "(coverage 0.01–0.3 and NLL up to 10⁶ with few points): switch the metric to NLL or "
    "coverage to see it."
)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Request:
    """Every option of one run (the process-wide cache key is :attr:`inputs`)."""

    dataset: str
    methods: tuple[str, ...]
    context_sizes: tuple[int, ...]
    n_tasks: int
    fit_hyper: bool
    preset: str
    user: uploads.UserData | None = None

    @property
    def tasks(self) -> tuple[int, ...]:
        return tuple(range(self.n_tasks))

    @property
    def inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "dataset": self.dataset,
            "methods": list(self.methods),
            "context_sizes": list(self.context_sizes),
            "tasks": self.n_tasks,
            "fit_hyper": self.fit_hyper,
            "preset": self.preset,
            "device": str(DEVICE),
        }
        if self.user is not None:
            u = self.user
            inputs |= {"data": u.digest, "file": u.name, "x": list(u.x_columns),
                       "y": u.y_column, "domain": u.domain_column}  # fmt: skip
        return inputs

    @property
    def fits(self) -> int:
        return len(self.methods) * len(self.context_sizes) * self.n_tasks

    def title(self) -> str:
        name = self.user.name if self.user is not None else self.dataset
        return (
            f"{name}: {len(self.methods)} methods × {len(self.context_sizes)} context sizes × "
            f"{self.n_tasks} target task{'s' if self.n_tasks != 1 else ''} ({self.fits} fits)"
        )

    def call_text(self) -> str:
        """The library call that computes the table, for the Reproduce expander."""
        device = "" if DEVICE.type == "cpu" else f"\n    device={str(DEVICE)!r},"
        if self.user is None:
            return (
                "table = fast_adaptation(\n"
                f"    dataset={self.dataset!r},\n"
                f"    methods={self.methods!r},\n"
                f"    context_sizes={self.context_sizes!r},\n"
                f"    tasks={self.tasks!r},\n"
                f"    fit_hyper={self.fit_hyper},\n"
                f"    preset={self.preset!r},{device}\n)"
            )
        u = self.user
        options = ", ".join(f"{k}={v!r}" for k, v in USER_MLP.items())
        return (
            "targets = {\n"
            f"    t: data.from_csv({u.name!r}, x_columns={list(u.x_columns)!r},\n"
            f"                     y_column={u.y_column!r}, domain_column={u.domain_column!r},"
            f" seed=t)\n"
            f"    for t in range({self.n_tasks})\n}}\n"
            "source = train_source(\n"
            f"    targets[0], 'mlp', name={_user_label(u)!r},{device}\n"
            f"    {options},\n)\n"
            "table = fast_adaptation_from_source(\n"
            "    source, targets,\n"
            f"    methods={self.methods!r},\n"
            f"    context_sizes={self.context_sizes!r},\n"
            f"    fit_hyper={self.fit_hyper},\n)"
        )


def _request_of(record: RunRecord, user: uploads.UserData | None) -> Request:
    """The request a stored record was computed for (for the snippet and the captions)."""
    i = record.inputs
    if i["dataset"] == USER_DATA and (user is None or user.digest != i["data"]):
        # computed on data this session has replaced since: name it from the record
        user = uploads.UserData(str(i["file"]), b"", str(i["data"]), tuple(i["x"]),
                                str(i["y"]), i["domain"])  # fmt: skip
    return Request(
        dataset=str(i["dataset"]), methods=tuple(i["methods"]),
        context_sizes=tuple(int(n) for n in i["context_sizes"]), n_tasks=int(i["tasks"]),
        fit_hyper=bool(i["fit_hyper"]), preset=str(i["preset"]),
        user=user if i["dataset"] == USER_DATA else None,
    )  # fmt: skip


def _user_label(user: uploads.UserData) -> str:
    """The zoo cache label of the MLP trained on an uploaded file (the Adapt page's)."""
    return f"your-data-{user.digest}"


def _pool_size(dataset: str, user: uploads.UserData | None) -> int:
    """Target pool size: the largest context size the dataset allows."""
    if dataset == USER_DATA:
        return uploads.user_task(user, seed=0).sizes["target"] if user is not None else 0
    return common.task(dataset, seed=0).sizes["target"]


def _size_options(pool: int) -> list[int]:
    options = [n for n in SIZE_GRID if n <= pool]
    if pool not in options and pool > 0:
        options.append(pool)
    return options


def _default_sizes(dataset: str, pool: int, preset: str = "small") -> list[int]:
    if dataset == USER_DATA:
        fitting = [n for n in (5, 10, 20, 50, 100) if n <= pool]
        return fitting if len(fitting) >= 2 else _size_options(pool)[-3:]
    return [n for n in preset_sizes(dataset, preset)[0] if n <= pool]


def _default_tasks(dataset: str, preset: str = "small") -> int:
    if preset == "full" and dataset in TASKS:
        return min(len(preset_sizes(dataset, "full")[1]), MAX_TASKS)
    return DEFAULT_TASKS[dataset]


def _fill_defaults() -> None:
    """Dataset / preset callback: the paper's methods and the preset's sizes and task count."""
    dataset = st.session_state.get("cv_dataset") or TASKS[0]
    preset = st.session_state.get("cv_preset") or "small"
    user = st.session_state.get(f"{PAGE}.user_data")
    st.session_state["cv_methods"] = list(PAPER_METHODS[dataset])
    pool = _pool_size(dataset, user)
    if pool:
        st.session_state["cv_sizes"] = _default_sizes(dataset, pool, preset)
    st.session_state["cv_tasks"] = _default_tasks(dataset, preset)


def _sanitize(key: str, allowed: list[Any]) -> None:
    """Drop values a multiselect no longer offers (another dataset's sizes, a stale link)."""
    if key in st.session_state:
        current = list(st.session_state[key] or [])
        kept = [v for v in current if v in allowed]
        if kept != current:  # write only when needed: a write makes the widget's value "new"
            st.session_state[key] = kept


def _form(dataset: str, preset: str, user: uploads.UserData | None) -> tuple[Request | None, bool]:
    """The run options; returns the request (``None`` if incomplete) and whether Run was
    pressed."""
    pool = _pool_size(dataset, user)
    sizes_offered = _size_options(pool)
    _sanitize("cv_sizes", sizes_offered)
    _sanitize("cv_methods", list(METHOD_NAMES))
    with st.form("cv_form", border=True):
        methods = st.multiselect(
            "Methods", METHOD_NAMES, default=list(PAPER_METHODS[dataset]), key="cv_methods",
            bind="query-params", help=METHOD_HELP,
        )  # fmt: skip
        sizes = st.multiselect(
            "Context points n", sizes_offered,
            default=_default_sizes(dataset, pool, preset), key="cv_sizes", bind="query-params",
            help=f"The first n points of each target task's pool ({pool} points) are the "
            "context; every method is scored on the task's held-out test points.",
        )  # fmt: skip
        left, right = st.columns(2)
        n_tasks = left.number_input(
            "Target tasks", min_value=1, max_value=MAX_TASKS,
            value=_default_tasks(dataset, preset), step=1, key="cv_tasks", bind="query-params",
            help="Target task seeds 0, 1, …: other functions (sinusoids), other pools of map "
            "cells (spatial), other orders of the target faces; for your data, other random "
            "splits of the target rows. The curves show the mean and spread over them.",
        )  # fmt: skip
        right.selectbox(
            "Show first", tuple(CURVE_METRICS), key="cv_metric_default",
            bind="query-params",
            help="Every metric is computed; switch between them above the figure without "
            "re-running.",
        )  # fmt: skip
        hyper = st.radio(
            "NTK hyperparameters (σ², s²)", tuple(HYPER), captions=tuple(HYPER.values()),
            key="cv_hyper", bind="query-params",
            help="fixed: maximize the finite NTK's marginal likelihood once on the source "
            "task and transfer σ² and s² (like the RBF GP's). Marginal likelihood: refit them "
            "on each context set (slower, and noisy with very few points).",
        )  # fmt: skip
        submitted = st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", width="stretch",
            on_click=_show_metric_first,  # the view starts at the "Metric shown first"
        )  # fmt: skip
    if not methods or not sizes:
        st.warning("Choose at least one method and one context size.")
        return None, False
    request = Request(
        dataset=dataset,
        methods=tuple(m for m in METHOD_NAMES if m in methods),
        context_sizes=tuple(sorted(int(n) for n in sizes)),
        n_tasks=int(n_tasks),
        fit_hyper=hyper == "marginal-likelihood",
        preset=preset,
        user=user,
    )
    return request, bool(submitted)


def _show_metric_first() -> None:
    """Run callback: the view's metric toggle starts at the form's "Metric shown first"."""
    st.session_state["cv_metric"] = st.session_state.get("cv_metric_default") or "MSE"


# --------------------------------------------------------------------------- running
def _scaled(progress: Callable[[float, str], None], start: float, size: float):
    """A progress callback for one stage (``start`` to ``start + size`` of the bar)."""
    return lambda fraction, message: progress(start + size * fraction, message)


def _user_source(request: Request, progress: Callable[[float, str], None],
                 device: torch.device) -> Source:  # fmt: skip
    """The MLP trained on the uploaded file's source rows (kept in this session, so its
    methods' source-side fits are reused by the next run)."""
    user = request.user
    key = (user.digest, user.x_columns, user.y_column, user.domain_column, str(device))
    cached = st.session_state.get(f"{PAGE}.user_source")
    if cached is not None and cached[0] == key:
        progress(1.0, "source network: in this session")
        return cached[1]
    task = uploads.user_task(user, seed=0)
    message = f"training a tanh MLP (2 × 64) on your {task.sizes['source']} source rows"
    source = train_source(
        task, "mlp", name=_user_label(user), device=device,
        progress=lambda fraction: progress(fraction, message), **USER_MLP,
    )  # fmt: skip
    st.session_state[f"{PAGE}.user_source"] = (key, source)
    return source


def _work(request: Request) -> Callable[..., pd.DataFrame]:
    def work(*, progress: Callable[[float, str], None], device: torch.device) -> pd.DataFrame:
        if request.user is None:
            return fast_adaptation(
                dataset=request.dataset, methods=request.methods,
                context_sizes=request.context_sizes, tasks=request.tasks,
                fit_hyper=request.fit_hyper, preset=request.preset, device=device,
                progress=progress,
            )  # fmt: skip
        source = _user_source(request, _scaled(progress, 0.0, 0.2), device)
        targets = {t: uploads.user_task(request.user, seed=t) for t in request.tasks}
        return fast_adaptation_from_source(
            source, targets, methods=request.methods, context_sizes=request.context_sizes,
            fit_hyper=request.fit_hyper, progress=_scaled(progress, 0.2, 0.8),
        )  # fmt: skip

    return work


def _run(request: Request) -> RunRecord | None:
    try:
        return run_heavy(PAGE, request.title(), _work(request), inputs=request.inputs,
                         device=DEVICE)  # fmt: skip
    except ValueError as err:  # options or data the library refuses
        st.error(f"Cannot run with these settings: {err}", icon=":material/error:")
        return None
    except RuntimeError as err:  # a numerical failure inside a method (e.g. a Cholesky factor)
        st.error(
            f"A method failed on this data: {err}. Leave it out of the methods and run again.",
            icon=":material/error:",
        )
        return None


# --------------------------------------------------------------------------- showing
def _reading(table: pd.DataFrame, metric: str, reference: str | None) -> str:
    """One paragraph saying what the figure shows at the smallest and largest context size."""
    summary = curve_summary(table, metric)
    sizes = sorted(set(summary["n_context"]))
    parts = []
    for n in dict.fromkeys((sizes[0], sizes[-1])):
        at = summary[summary["n_context"] == n].set_index("method")["mean"]
        if metric == "95% coverage":
            best = (at - 0.95).abs().idxmin()
            text = f"closest to 0.95 is **{best}**'s ({at[best]:#.3g})"
        elif metric == "seconds":
            best = at.idxmin()
            text = f"the fastest is **{best}** ({at[best]:#.3g} s per fit)"
        else:
            best = at.idxmin()
            text = f"the best mean {metric} is **{best}**'s ({at[best]:#.3g})"
        if reference is not None and reference != best and reference in at.index:
            text += f"; {reference}'s is {at[reference]:#.3g}"
        parts.append(f"With **{n}** context points {text}.")
    return " ".join(parts)


@st.fragment
def _view(request: Request, table: pd.DataFrame) -> None:
    """Metric, spread and axes (a fragment: changing them redraws, never re-runs)."""
    methods = list(dict.fromkeys(table["method"]))
    c1, c2, c3 = st.columns([2.8, 1.5, 1], vertical_alignment="bottom")
    metric = c1.segmented_control(
        "Metric", tuple(CURVE_METRICS), default="MSE", required=True, key="cv_metric",
        bind="query-params",
        help="MSE and NLL on the task's held-out test points (NLL and coverage of the "
        "predictive of y: latent variance + noise for the Bayesian methods, the residual "
        "variance on the context points for the retrained ones); seconds: fit + predict.",
    )  # fmt: skip
    spread = c2.segmented_control(
        "Error bars", SPREADS, default=SPREADS[0], required=True, key="cv_spread",
        bind="query-params",
        help="min–max: from the best to the worst target task; ± 1 std: the sample standard "
        "deviation over tasks.",
    )  # fmt: skip
    log_x = c3.toggle("Log n axis", value=False, key="cv_log_x", bind="query-params")
    shown = st.pills(
        "Methods shown", methods, selection_mode="multi", default=methods, key="cv_shown",
        bind="query-params",
    )  # fmt: skip
    shown = [m for m in methods if m in (shown or ())]
    if not shown:
        st.info("Select at least one method to show.")
        return
    reference = "ntk" if "ntk" in methods else methods[0]
    subset = table[table["method"].isin(shown)]
    if request.user is not None:  # name the figure after the file, not the library's "csv"
        subset = subset.assign(dataset=request.user.name)
    with LIGHT.hold():  # figures are Python-heavy: one session at a time (app/compute.py)
        try:
            figure = adaptation_curves_figure(subset, metric=metric, spread=spread,
                                              log_x=log_x)  # fmt: skip
        except ValueError as err:  # e.g. no finite values of this metric
            st.error(f"Cannot draw {metric}: {err}")
            return
        st.plotly_chart(figure, key=FIGURE_KEY, config={"displaylogo": False})
    scale = figure.layout.meta["y_scale"]
    st.caption(
        f"Each line is the mean {metric} over the target tasks at each number of context "
        "points; the error bars span "
        + ("the best to the worst task" if spread == "min–max" else "± 1 sample std")
        + " (methods are drawn side by side at each n so that their bars do not overlap). "
        + {
            "log": "Logarithmic y axis. ",
            "symlog": "Symmetric log y axis: logarithmic beyond ±1 and nearly linear around "
            "0, so that negative NLLs of good probabilistic fits and the huge NLLs of "
            "overconfident point estimates fit on one axis; ticks show NLL values. ",
        }.get(scale, "")
        + (
            "Seconds are each fit + predict on a target task; the source-side work done once "
            "per method (the NTK's and RBF GP's hyperparameters, ABLR's features) is not in "
            "them (`prepare_seconds` in the table). "
            if metric == "seconds"
            else ""
        )
        + "Click a legend entry to hide a method; hover a point for its numbers."
    )
    st.markdown(_reading(subset, metric, reference if reference in shown else None))

    summary = curve_summary(subset, metric)
    st.markdown(f"**Mean {metric} over tasks** (rows: methods, columns: context points n)")
    pivot = summary.pivot(index="method", columns="n_context", values="mean")
    pivot = pivot.reindex(index=shown)
    pivot.columns = [f"n = {n}" for n in pivot.columns]
    st.table(pivot.style.format("{:#.4g}"), border="horizontal")

    others = [m for m in methods if m != reference]
    st.subheader(f"Per task: how often {reference} wins", divider="gray")
    if not others:
        st.info("Run with more than one method to compare them task by task.")
    else:
        rates = win_rates(table, reference=reference, metric=metric)
        with LIGHT.hold():
            title = f"Tasks on which {reference} has the better {metric}"
            st.plotly_chart(win_rate_figure(rates, reference=reference, title=title),
                            key=WIN_KEY, config={"displaylogo": False})  # fmt: skip
        st.caption(
            f"Each cell: on how many of the target tasks {reference} has the better {metric} "
            + ("(closer to 0.95) " if metric == "95% coverage" else "(lower) ")
            + "than the method of its row, with the same context points (a tie counts half). "
            "A lower mean does not mean winning on most tasks: one bad task moves a mean."
        )
        common.download_csv(rates, f"win-rates-{request.dataset}-{metric}.csv".replace(" ", ""),
                            "Download the win rates (CSV)")  # fmt: skip
    _reproduce(request, metric, spread, log_x, reference)


def _reproduce(request: Request, metric: str, spread: str, log_x: bool, reference: str) -> None:
    if request.user is None:
        imports = "from ntkcore.experiments.fast_adaptation import fast_adaptation"
    else:
        imports = (
            "from ntkcore import data\n"
            "from ntkcore.experiments.fast_adaptation import fast_adaptation_from_source\n"
            "from ntkcore.experiments.methods import train_source"
        )
    common.reproduce(
        f"""
import torch
{imports}
from ntkcore.plots import (
    adaptation_curves_figure, curve_summary, win_rate_figure, win_rates,
)

torch.set_num_threads({torch.get_num_threads()})  # as the app (one thread per session)
{request.call_text()}
print(curve_summary(table, {metric!r}))
adaptation_curves_figure(table, metric={metric!r}, spread={spread!r}, log_x={log_x}).show()
rates = win_rates(table, reference={reference!r}, metric={metric!r})
win_rate_figure(rates, reference={reference!r}).show()
"""
    )


def _details(request: Request, record: RunRecord) -> None:
    table: pd.DataFrame = record.result
    with st.expander("Every fit: the table (one row per method × n × task)",
                     icon=":material/table:"):  # fmt: skip
        st.dataframe(table, hide_index=True, height=280)
        st.caption(
            "mse, nll, coverage95: on the task's held-out test points; seconds: fit + predict; "
            "prepare_seconds: the method's source-side work (0 when cached by an earlier run in "
            "this server); noise_variance / prior_variance: σ² and s² for the NTK, 1/β and 1/α "
            "for ABLR, noise and output scale for the RBF GP, the residual variance for "
            "retrained networks."
        )
    name = request.user.name.rsplit(".", 1)[0] if request.user is not None else request.dataset
    common.download_csv(table, f"adaptation-curves-{name}.csv", "Download the table (CSV)")


def _findings(dataset: str) -> None:
    with st.container(border=True):
        st.markdown("**What the paper reports, and what our data finds**")
        st.markdown(FINDINGS[dataset])
        if dataset != USER_DATA:
            st.caption(CALIBRATION + " Numbers: `benchmarks/RESULTS.md`, “Experiments: fast "
                       "adaptation”.")  # fmt: skip


# --------------------------------------------------------------------------- the page
st.title(HEADING)
st.markdown(
    "A network is trained once on a **source** task; each method then adapts it to a new "
    "**target** task from its first *n* points (the context) and is scored on the task's "
    "held-out points. Repeating this over several target tasks and context sizes gives the "
    "curves of Maddox et al. (AISTATS 2021, Section 5): Figure 6 (sinusoids) and Figure 7 "
    "(maps, faces). The **finite NTK** adapts in closed form — a Gaussian process whose "
    "kernel is the Gram matrix of the trained network's Jacobian — and the baselines retrain "
    "the last layer, the whole network, or fit a GP / Bayesian linear regression on "
    "transferred features. Lines are means over target tasks, error bars their spread, and the "
    "win-rate table below counts task by task."
)

if "cv_dataset" in st.session_state and st.session_state["cv_dataset"] not in DATASET_OPTIONS:
    del st.session_state["cv_dataset"]
form_col, result_col = st.columns([1, 2.4], gap="large")
with form_col:
    chosen = st.selectbox(
        "Source → target task", DATASET_OPTIONS, key="cv_dataset", bind="query-params",
        on_change=_fill_defaults,
        help="The built-in regression transfer tasks (each with its zoo network), or a CSV "
        "file of yours with a source and a target domain.",
    )  # fmt: skip
    dataset = str(chosen)
    st.caption(DATASET_NOTES[dataset])
    if HAS_GPU and dataset != USER_DATA:
        preset = st.segmented_control(
            "Preset", PRESETS, default="small", required=True, key="cv_preset",
            bind="query-params", on_change=_fill_defaults,
            help="Fills in the sizes and the number of tasks: small runs in about a minute; "
            "full uses the paper's sizes (Figure 7: 10 to 200 points) and ten target tasks.",
        )  # fmt: skip
        preset = str(preset or "small")
    else:
        preset = "small"
    user: uploads.UserData | None = None
    ready = True
    if dataset == USER_DATA:
        user = uploads.data_panel(PAGE)
        if user is None:
            st.info(
                "Upload a CSV file with a **domain column** (source and target rows), choose "
                "its columns and press “Use this data”: a tanh MLP is trained on the source "
                "rows, then every method adapts it to random splits of the target rows."
            )
            ready = False
        elif not uploads.user_task(user, seed=0).has_source:
            st.warning(
                f"{user.label} holds target rows only. The curves compare methods that start "
                "from a network trained on a source domain (and fit their hyperparameters "
                "there): upload a file with a domain column, e.g. the example file."
            )
            ready = False
    request, submitted = _form(dataset, preset, user) if ready else (None, False)
    if not HAS_GPU:
        st.caption(
            "The **full** preset (the paper's context sizes, 10 to 200 points, and ten target "
            "tasks with every method) is offered only when the server has a CUDA GPU: on this "
            "CPU it took 9–25 minutes per dataset (`benchmarks/RESULTS.md`). Up to "
            f"{MAX_TASKS} tasks and any sizes can still be chosen here."
        )

with result_col:
    record: RunRecord | None = None
    if request is not None:
        if submitted:
            record = _run(request)
        if record is None:
            record = RESULTS.get(PAGE, request.inputs) or last_record(PAGE)
        show_record_status(PAGE, record, request.inputs)
    if record is None:
        st.markdown(
            "**Nothing computed yet for these settings.** Choose the options on the left and "
            "press **Run**: "
            + (
                "the small preset takes seconds on the GPU, the full one minutes"
                if HAS_GPU
                else "the default runs take 10–60 s of CPU time once the source networks are "
                "cached (longer on a busy machine; the first ABLR or RBF-GP run also fits "
                "their hyperparameters on the source)"
            )
            + ". A progress bar names the method, target task and context size being fitted; "
            "then the curves appear here."
        )
        _findings(dataset)
    else:
        shown_request = _request_of(record, user)
        _view(shown_request, record.result)
        _findings(shown_request.dataset)
        _details(shown_request, record)

