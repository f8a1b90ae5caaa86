"""Timing: how fast finite-NTK inference is on this device (Figure 2 of Maddox et al., 2021).

Three measurements from ``ntkcore.experiments.timing``, each behind its own Run button:
GP inference time (``adapt`` to a stated CG residual, then predictive means and variances) as
the number of points n grows (``timing_vs_n``, Figure 2 left) and as the network grows
(``timing_vs_p``, centre), in function space and in parameter space; and the per-vector cost of
Fisher-vector products by finite differences, exactly and by autograd per architecture
(``fisher_products``, right). Runs go through :func:`app.compute.run_heavy` (one at a time
for all sessions, on the GPU when there is one; results cached process-wide by every option);
points are drawn as the library reports them. View-only controls live in a fragment and never
re-measure anything.

The page only wires widgets to the library: the measurements live in ``ntkcore.experiments``
and the figures in ``ntkcore.plots``.
"""

from __future__ import annotations

import time
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
from ntkcore.experiments.figure2 import METHODS, REFERENCE_METHOD, Figure2Problem
from ntkcore.experiments.machine import device_label
from ntkcore.experiments.timing import (
    FISHER_ARCHS,
    FISHER_METHODS,
    fisher_products,
    preset_options,
    timing_vs_n,
    timing_vs_p,
)
from ntkcore.plots import (
    FISHER_UNITS,
    TIMING_UNITS,
    fisher_cost_figure,
    fisher_speedups,
    timing_figure,
    timing_growth,
)

PAGE = "timing"
HEADING = "Timing: how fast is linearized inference?"
FIGURE_KEY = "timing_figure"
#: Seconds between two redraws of the live figure while a run reports points.
LIVE_DRAW_SECONDS = 0.5

DEVICE = compute_device()
HAS_GPU = DEVICE.type == "cuda"
PRESETS = ("small", "full") if HAS_GPU else ("small",)

#: Radio label -> experiment (registry name).
EXPERIMENTS = {
    "Time vs n": "timing-n",
    "Time vs p": "timing-p",
    "Fisher-vector products": "fisher-products",
}
_FUNCTIONS: dict[str, Callable[..., pd.DataFrame]] = {
    "timing-n": timing_vs_n,
    "timing-p": timing_vs_p,
    "fisher-products": fisher_products,
}
#: Names in ``ntkcore.experiments.timing``, for the Reproduce snippet.
_FUNCTION_NAMES = {
    "timing-n": "timing_vs_n",
    "timing-p": "timing_vs_p",
    "fisher-products": "fisher_products",
}

# Option grids: the CPU offers sizes that finish in seconds to a minute, a GPU the paper's.
SIZES = (50, 100, 250, 500, 1000, 2000, 4000, 8000) + (
    (10_000, 25_000, 50_000, 100_000) if HAS_GPU else ()
)
HIDDEN = (2, 4, 8, 16, 32, 64) + ((128, 200) if HAS_GPU else ())
WIDTHS = tuple(
    sorted({2, 4, 8, 16, 32, 64, 128} | ({20, 63, 200, 632, 2236} if HAS_GPU else set()))
)
P_POINTS = (100, 250, 500, 1000, 2000)
TEST_POINTS = (50, 200, 1000)
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
REPEATS = (1, 2, 3, 4, 5)
BUDGETS = (0, 30, 60, 120, 300, 600, 1800, 3600)  # seconds; 0: no budget
SWEEP_METHODS = (*METHODS, REFERENCE_METHOD)
BATCHES = (4, 8, 16, 32, 64, 128, 256)
VECTORS = (1, 2, 4, 8, 16)
CLOCKS = ("wall", "cpu")
_METHOD_HELP = (
    "function: CG on the n×n kernel J Jᵀ + (σ²/s²) I (Eq. 3) with Jacobian-vector products; "
    "parameter: CG on the p×p matrix JᵀJ + (σ²/s²) I (Eq. 2) with exact products; "
    "parameter-fd: the same with the paper's finite-difference Fisher-vector products (Eq. 5); "
    "reference-style: the 2021 reference pipeline (per-column loops, slow)."
)
_FISHER_METHOD_HELP = (
    "fd: finite differences of the KL gradient (Eq. 5, one extra forward and one backward "
    "pass); exact: Jᵀ Λ J v by forward then reverse mode; autograd: double backward of the KL, "
    "as the 2021 reference code; fd-central / -live / -auto: variants (central differences, "
    "activation pattern recomputed, calibrated step)."
)


def _p_of(h: int) -> str:
    return f"{Figure2Problem(h).num_params:,}"


def _label() -> str:
    """The device measurements run on, e.g. ``AMD EPYC (cpu, 1 thread)``."""
    return device_label(DEVICE)


# --------------------------------------------------------------------------- presets
def _preset_values(experiment: str, preset: str) -> dict[str, Any]:
    """Widget key -> value for ``preset`` (what the preset selector fills in)."""
    options = preset_options(experiment, preset, DEVICE)
    if experiment == "timing-n":
        return {"sizes": list(options["sizes"]), "hidden": options["hidden"],
                "test_points": options["test_points"]}  # fmt: skip
    if experiment == "timing-p":
        return {"widths": list(options["widths"]), "points": options["n"],
                "test_points": options["test_points"]}  # fmt: skip
    return {"archs": list(options["archs"]), "batch": options["batch"],
            "vectors": options["vectors"], "fisher_repeats": options["repeats"]}  # fmt: skip


def _apply_preset() -> None:
    """Preset selector callback: fill every sweep widget with the chosen preset's values."""
    preset = st.session_state.get("preset", "small")
    for experiment in EXPERIMENTS.values():
        st.session_state.update(_preset_values(experiment, preset))


# --------------------------------------------------------------------------- the forms
@dataclass(frozen=True)
class Request:
    """What one Run measures: the experiment and every option of its call."""

    experiment: str
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
    def count(self) -> int:
        """Rows the run will measure (points × methods × repeats)."""
        o = self.options
        points = len(o.get("sizes") or o.get("widths") or o.get("archs") or [])
        return points * len(o["methods"]) * o["repeats"]

    def call_text(self) -> str:
        """The exact library call, for the Reproduce expander."""
        args = []
        for key, value in self.options.items():
            shown = tuple(value) if isinstance(value, list) else value
            args.append(f"{key}={shown!r}")
        name = _FUNCTION_NAMES[self.experiment]
        return f"{name}({', '.join(args)}, device={str(DEVICE)!r})"


def _sweep_form(experiment: str, preset: str) -> tuple[Request | None, bool]:
    """The options of ``timing_vs_n`` / ``timing_vs_p``; returns (request, Run pressed)."""
    defaults = _preset_values(experiment, "small")
    with st.form(f"form-{experiment}", border=True):
        if experiment == "timing-n":
            sizes = st.multiselect(
                "Data points n", SIZES, default=defaults["sizes"], key="sizes",
                bind="query-params", format_func=lambda v: f"{v:,}",
                help="One point per n (and method): the x axis.",
            )
            hidden = st.select_slider(
                "Hidden width h of the MLP 5 → h → 10h → h → 1", HIDDEN,
                value=defaults["hidden"], key="hidden", bind="query-params",
                help="p = " + ", ".join(f"{_p_of(h)} (h={h})" for h in HIDDEN)
                + ". The paper: h = 200, p = 803,601.",
            )
            points: dict[str, Any] = {"sizes": sorted(int(v) for v in sizes),
                                      "hidden": int(hidden)}  # fmt: skip
            empty = not sizes
        else:
            widths = st.multiselect(
                "Hidden widths h (model size p ≈ 20 h²)", WIDTHS, default=defaults["widths"],
                key="widths", bind="query-params",
                help="p = " + ", ".join(f"{_p_of(h)} (h={h})" for h in WIDTHS),
            )
            n = st.select_slider(
                "Data points n", P_POINTS, value=defaults["points"], key="points",
                bind="query-params", format_func=lambda v: f"{v:,}",
                help="The paper: n = 1,000.",
            )
            points = {"widths": sorted(int(v) for v in widths), "n": int(n)}
            empty = not widths
        methods = st.multiselect(
            "Methods", SWEEP_METHODS, default=list(METHODS), key="methods",
            bind="query-params", help=_METHOD_HELP,
        )
        left, right = st.columns(2)
        tol = left.select_slider(
            "CG relative residual", TOLERANCES, value=1e-3, key="tol", bind="query-params",
            format_func=lambda v: f"{v:.0e}",
            help="adapt stops when ‖b − A x‖ / ‖b‖ reaches this (each row reports the true "
            "residual and whether it got there).",
        )
        test_points = right.select_slider(
            "Test points", TEST_POINTS, value=defaults["test_points"], key="test_points",
            bind="query-params", format_func=lambda v: f"{v:,}",
            help="predict() returns means and variances at this many inputs (timed).",
        )
        repeats = left.select_slider(
            "Repeats", REPEATS, value=1, key="repeats", bind="query-params",
            help="Timed runs per point; the figure shows their median and range.",
        )
        budget = right.select_slider(
            "Time budget", BUDGETS, value=0, key="budget", bind="query-params",
            format_func=lambda v: "none" if v == 0 else f"{v} s",
            help="Skip points whose estimated time (from those already measured) would "
            "overrun it; skipped points are listed, not drawn.",
        )
        submitted = st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", use_container_width=True
        )
    if empty or not methods:
        st.warning("Choose at least one size and one method.")
        return None, False
    options = {
        "preset": preset,
        **points,
        "methods": [m for m in SWEEP_METHODS if m in methods],
        "repeats": int(repeats),
        "tol": float(tol),
        "test_points": int(test_points),
        "budget_s": float(budget) if budget else None,
    }
    return Request(experiment, options), submitted


def _fisher_form(preset: str) -> tuple[Request | None, bool]:
    """The options of ``fisher_products``; returns (request, Run pressed)."""
    defaults = _preset_values("fisher-products", "small")
    with st.form("form-fisher-products", border=True):
        archs = st.multiselect(
            "Architectures (3×32×32 inputs, 10 classes)", FISHER_ARCHS,
            default=defaults["archs"], key="archs", bind="query-params",
            help="At initialization, BatchNorm statistics calibrated. Deep networks "
            "(preresnet56/110, wrn16-4) take minutes on a CPU.",
        )
        methods = st.multiselect(
            "Methods", FISHER_METHODS, default=["fd", "exact", "autograd"],
            key="fisher_methods", bind="query-params", help=_FISHER_METHOD_HELP,
        )
        left, right = st.columns(2)
        batch = left.select_slider(
            "Batch (inputs)", BATCHES, value=defaults["batch"], key="batch",
            bind="query-params", help="The paper: 256 on a GPU.",
        )
        vectors = right.select_slider(
            "Vectors per call", VECTORS, value=defaults["vectors"], key="vectors",
            bind="query-params", help="k vectors v in one batched call; cost is per vector.",
        )
        repeats = left.select_slider(
            "Repeats", REPEATS, value=defaults["fisher_repeats"], key="fisher_repeats",
            bind="query-params", help="Timed calls per method (after a warm-up call).",
        )
        clock = right.radio(
            "Clock", CLOCKS, index=0, key="clock", bind="query-params", horizontal=True,
            help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared "
            "machine).",
        )
        submitted = st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", use_container_width=True
        )
    if not archs or not methods:
        st.warning("Choose at least one architecture and one method.")
        return None, False
    options = {
        "preset": preset,
        "archs": [a for a in FISHER_ARCHS if a in archs],
        "methods": [m for m in FISHER_METHODS if m in methods],
        "batch": int(batch),
        "vectors": int(vectors),
        "repeats": int(repeats),
        "clock": str(clock),
    }
    return Request("fisher-products", options), submitted


# --------------------------------------------------------------------------- running
def _draw(request: Request, table: pd.DataFrame, **view: Any) -> Any:
    if request.experiment == "fisher-products":
        return fisher_cost_figure(table, device=_label(), **view)
    return timing_figure(table, device=_label(), **view)


def _run(request: Request, live: Any) -> RunRecord | None:
    """Measure under the heavy slot, drawing points into ``live`` as they arrive."""
    rows: list[dict[str, Any]] = []
    last_draw = [0.0]

    def on_row(record: dict[str, Any]) -> None:
        rows.append(record)
        now = time.perf_counter()
        if now - last_draw[0] < LIVE_DRAW_SECONDS:
            return
        last_draw[0] = now
        table = pd.DataFrame(rows)
        with live.container():
            st.plotly_chart(
                _draw(request, table), key=f"timing-live-{len(rows)}",
                config={"displaylogo": False},
            )
            st.caption(f"{len(rows)} point(s) so far — the curves fill in as they are measured.")

    function = _FUNCTIONS[request.experiment]

    def work(*, progress: Callable[[float, str], None], device: torch.device) -> pd.DataFrame:
        return function(**request.options, progress=progress, device=device, on_row=on_row)

    title = f"{next(k for k, v in EXPERIMENTS.items() if v == request.experiment)}: " + (
        f"{request.count} measurements"
    )
    try:
        return run_heavy(request.page, title, work, inputs=request.inputs, device=DEVICE)
    except ValueError as err:  # options the library rejects
        st.error(f"Cannot run with these settings: {err}")
        return None
    finally:
        live.empty()


# --------------------------------------------------------------------------- showing
@st.fragment
def _view(request: Request, table: pd.DataFrame) -> None:
    """View-only controls and the figure (a fragment: changing them re-draws, never re-runs)."""
    fisher = request.experiment == "fisher-products"
    units = FISHER_UNITS if fisher else TIMING_UNITS
    methods = list(dict.fromkeys(table["method"]))
    suffix = "fisher_" if fisher else ""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    unit = left.segmented_control(
        "Show", tuple(units), default=next(iter(units)), required=True, key=f"{suffix}unit",
        bind="query-params",
        help="Seconds on this device, or the cost in forward passes of the same network on "
        "the same inputs (comparable across machines)."
        + ("" if fisher else " 'fit seconds' leaves predict out."),
    )
    log_axes = right.toggle("Log axes", value=True, key=f"{suffix}log", bind="query-params")
    shown = st.pills(
        "Methods shown", methods, selection_mode="multi", default=methods,
        key=f"{suffix}shown", bind="query-params",
    )
    if not shown:
        st.info("Select at least one method to show.")
        return
    with LIGHT.hold():  # figures are Python-heavy work: one session at a time (compute.py)
        if fisher:
            figure = fisher_cost_figure(
                table, unit=unit, methods=shown, log_axis=log_axes, device=_label()
            )
        else:
            figure = timing_figure(
                table, unit=unit, methods=shown, log_axes=log_axes, device=_label()
            )
    st.plotly_chart(figure, key=FIGURE_KEY, config={"displaylogo": False})
    if fisher and {"fd", "autograd"} <= set(shown):
        st.caption(
            "The number beside each fd dot is autograd's time ÷ fd's time (median per vector). "
            "Bars show the range over repeats; hover a dot for its relative error."
        )
    elif not fisher:
        st.caption(
            "Open markers: the solver stopped before the residual asked for. Bars show the "
            "range over repeats; hover a point for its iterations, residual and forward-pass "
            "count."
        )


def _sweep_summary(request: Request, table: pd.DataFrame) -> None:
    ok = table[table["status"] == "ok"]
    p_values = sorted(set(ok["p"])) if len(ok) else sorted(set(table["p"]))
    cols = st.columns(4)
    cols[0].metric("Points measured", f"{len(ok)} of {len(table)}")
    cols[1].metric(
        "Parameters p",
        f"{p_values[0]:,}" if len(p_values) == 1 else f"{p_values[0]:,} – {p_values[-1]:,}",
    )
    n_values = sorted(set(table["n"]))
    cols[2].metric(
        "Data points n",
        f"{n_values[0]:,}" if len(n_values) == 1 else f"{n_values[0]:,} – {n_values[-1]:,}",
    )
    failed = ok[ok["converged"].map(lambda c: c is not None and c == c and not bool(c))]
    cols[3].metric("Did not converge", f"{len(failed)}", help="to the CG residual asked for")
    axis = "n" if request.experiment == "timing-n" else "p"
    growth = timing_growth(table) if len(ok) else pd.DataFrame()
    if len(growth):
        first = growth.iloc[0]
        parts = ", ".join(f"**{r.method}** {r.y_ratio:.1f}×" for r in growth.itertuples())
        st.markdown(
            f"From {axis} = {first.x_from:,.0f} to {first.x_to:,.0f} ({first.x_ratio:.0f}× "
            f"larger) adapt + predict took {parts} longer; linear scaling would be "
            f"{first.x_ratio:.0f}× (the dashed line). At small sizes fixed costs (the "
            "Nyström sketch, Python overhead) dominate, so growth is slower than linear; the "
            "paper's Figure 2 reaches n = 100,000 and p ≈ 10⁸ on one GPU with nearly linear "
            "growth."
        )
    if len(failed):
        listed = "; ".join(
            f"{r.method} at n = {r.n:,}, p = {r.p:,} (residual {r.residual:.1e} after "
            f"{r.iterations:.0f} iterations)"
            for r in failed.itertuples()
        )
        st.warning(
            f"{len(failed)} point(s) did not reach the residual {request.options['tol']:.0e}: "
            f"{listed}. Their times are those of the capped solve (open markers)."
        )
    skipped = table[table["status"] != "ok"]
    if len(skipped):
        st.warning(
            "Not measured: "
            + "; ".join(f"{r.method} at n = {r.n:,}, p = {r.p:,}: {r.status}"
                        for r in skipped.itertuples())  # fmt: skip
        )


def _fisher_summary(request: Request, table: pd.DataFrame) -> None:
    cols = st.columns(4)
    cols[0].metric("Architectures", f"{table['arch'].nunique()}")
    cols[1].metric("Rows measured", f"{len(table)}")
    cols[2].metric("Batch × vectors", f"{request.options['batch']} × {request.options['vectors']}")
    speedups = fisher_speedups(table)
    if len(speedups):
        low, high = speedups["speedup"].min(), speedups["speedup"].max()
        cols[3].metric(
            "fd vs autograd",
            f"{low:.1f}×" if len(speedups) == 1 else f"{low:.1f}–{high:.1f}×",
            help="Median autograd time / median fd time per architecture.",
        )
        per_arch = ", ".join(f"{r.arch} {r.speedup:.1f}×" for r in speedups.itertuples())
        st.markdown(
            f"Autograd time ÷ fd time per vector here: {per_arch} (above 1: fd is faster). "
            "The paper reports about **30×** on its GPU for AlexNet, PreResNets and a "
            "WideResNet at batch 256: autograd's double backward costs most for deep "
            "convolutional networks and large batches, so on a CPU with small batches the gap "
            "is smaller (`benchmarks/RESULTS.md` has this repository's GPU measurements)."
        )
    bad = table[(table["method"] != "exact") & (table["rel_error"] > 1e-2)]
    if len(bad):
        st.warning(
            "Relative error above 1e-2 against exact products: "
            + ", ".join(f"{a} {m} ({e:.1e})" for a, m, e in
                        bad[["arch", "method", "rel_error"]].drop_duplicates().itertuples(
                            index=False))  # fmt: skip
        )


def _reproduce(request: Request) -> None:
    function = _FUNCTION_NAMES[request.experiment]
    figure = "fisher_cost_figure" if request.experiment == "fisher-products" else "timing_figure"
    common.reproduce(
        f"""
import torch
from ntkcore.experiments.timing import {function}
from ntkcore.plots import {figure}

torch.set_num_threads({torch.get_num_threads()})  # as the app (one thread per session)
table = {request.call_text()}
print(table.attrs["machine"]["device_name"], len(table), "rows")
{figure}(table).show()
"""
    )


def _details(request: Request, record: RunRecord) -> None:
    table: pd.DataFrame = record.result
    if request.experiment == "fisher-products":
        _fisher_summary(request, table)
    else:
        _sweep_summary(request, table)
    st.dataframe(table, hide_index=True, height=260)
    name = request.experiment + "-" + record.device.replace(":", "")
    common.download_csv(table, f"{name}.csv", label="Download the points (CSV)")
    machine = table.attrs.get("machine", {})
    with st.expander("Machine", icon=":material/memory:"):
        st.caption("What these numbers were measured on (ntkcore.experiments.machine).")
        st.json(machine, expanded=True)
    _reproduce(request)


# --------------------------------------------------------------------------- the page
st.title(HEADING)
st.markdown(
    "Finite-NTK inference never forms the n × p Jacobian: conjugate gradients run on "
    "Jacobian-vector products either in **function space** (the n × n kernel J Jᵀ, Eq. 3) or "
    "in **parameter space** (the p × p matrix JᵀJ, Eq. 2, with exact products or the paper's "
    "**finite-difference Fisher-vector products**, Eq. 5). Each point below is one `adapt` "
    "call solved to a stated CG relative residual, followed by `predict` of means **and** "
    "variances, for the paper's five-layer MLP (5 → h → 10h → h → 1) on a synthetic "
    "regression task; the third panel times one Fisher-vector product per architecture. "
    "The paper (Section 3.2, Figure 2) found **nearly linear scaling** in n and p on one GPU, "
    "and fd Fisher-vector products **≈ 30× faster than autograd**."
)
st.info(
    f"Measuring on **{_label()}** · torch {torch.__version__} · "
    + (
        "runs use the GPU, one at a time for all visitors."
        if HAS_GPU
        else "no GPU here. Runs go one at a time for all visitors; on a shared machine "
        "timings vary from run to run."
    ),
    icon=":material/speed:",
)

label = st.radio(
    "Measurement", tuple(EXPERIMENTS), index=0, key="experiment", bind="query-params",
    horizontal=True,
    help="Figure 2 left (time vs n), centre (time vs p) and right (Fisher-vector products).",
)
experiment = EXPERIMENTS[str(label)]

form_col, result_col = st.columns([1, 2.5], gap="large")
with form_col:
    preset = st.radio(
        "Preset", PRESETS, index=0, key="preset", bind="query-params", horizontal=True,
        on_change=_apply_preset,
        help="Fills in the options below: small runs in under a minute on a CPU; full uses "
        "the paper's sizes.",
    )
    if experiment == "fisher-products":
        request, submitted = _fisher_form(str(preset))
    else:
        request, submitted = _sweep_form(experiment, str(preset))
    if not HAS_GPU:
        st.caption(
            "The **full** preset (the paper's sizes: n up to 100,000 at p = 803,601, p up to "
            "10⁸, six CIFAR networks at batch 256) is offered only when a CUDA GPU is "
            "present: on this CPU it would take hours and more memory than it has."
        )

with result_col:
    record: RunRecord | None = None
    # one slot for the live figure while measuring and for the explanation when nothing is
    # measured yet, so that a run's first points replace the explanation in place
    progress_area = st.container()
    slot = st.empty()
    if request is not None:
        if submitted:
            slot.info("Measuring: the points appear here as they are measured.")
            with progress_area:
                record = _run(request, slot)
        if record is None:
            record = RESULTS.get(request.page, request.inputs) or last_record(request.page)
        show_record_status(request.page, record, request.inputs)
    if record is None:
        slot.markdown(
            "**Nothing measured yet for these settings.** Choose the options on the left and "
            "press **Run** (below them): "
            + (
                "the small preset takes seconds on the GPU, the full one minutes or more"
                if HAS_GPU
                else "the small preset took 20–60 s per measurement on a busy two-core CPU"
            )
            + ". A progress bar shows what runs, and the points appear as they are measured."
        )
    else:
        shown_request = Request(
            str(record.inputs["experiment"]),
            {k: v for k, v in record.inputs.items() if k not in ("experiment", "device")},
        )
        _view(shown_request, record.result)

if record is not None:
    _details(shown_request, record)
