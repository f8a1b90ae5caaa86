"""Widgets, cached loaders and page furniture shared by the app's pages.

Loaders keep models and tasks in ``st.cache_resource`` (bounded); a source model missing from
the on-disk zoo cache is trained on first use under the heavy compute slot with a progress bar
(:mod:`app.compute`). Nothing here computes a posterior: pages call the library for that.
"""

from __future__ import annotations

import io
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import torch
from torch import nn

import ntkcore
from app.compute import HEAVY, yield_point
from ntkcore import data, zoo

__all__ = [
    "device_summary",
    "download_csv",
    "linearization",
    "preset_model",
    "reproduce",
    "task",
]


def device_summary() -> str:
    """One line for the sidebar: torch build and the devices heavy work runs on."""
    build = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        where = f"GPU: {name} (Run buttons) · CPU for live views"
    else:
        where = f"CPU only ({platform.processor() or platform.machine()}, no CUDA device)"
    return f"Compute: {where} · {build} · {torch.get_num_threads()} thread(s) per session"


@st.cache_resource(max_entries=32, show_spinner=False)
def task(name: str, seed: int = 0, **options: Any) -> data.Task:
    """``ntkcore.data.load(name, seed, **options)``, shared by every session."""
    return data.load(name, seed=seed, **options)


@st.cache_resource(max_entries=24, show_spinner=False)
def _cached_model(preset_id: str) -> nn.Module:
    # Only called once the weights are on disk: loading takes milliseconds.
    return zoo.preset(preset_id).load()


def preset_model(preset_id: str) -> nn.Module:
    """The trained source network of zoo preset ``preset_id``.

    Missing from the on-disk zoo cache, it is trained here first, under the heavy compute slot
    and with a progress bar (once per server: other sessions then load it from disk).
    """
    preset = zoo.preset(preset_id)
    if not preset.is_cached():
        status = st.status(
            f"Training the source network “{preset.description}” (first use)", expanded=True
        )
        with status:
            bar = st.progress(0.0, text="waiting for the compute slot")
        t0 = time.perf_counter()
        with HEAVY.hold():
            if not preset.is_cached():  # another session may have trained it meanwhile

                def progress(fraction: float) -> None:
                    yield_point()
                    bar.progress(min(1.0, fraction), text=f"{time.perf_counter() - t0:.0f} s")

                preset.fetch(progress=progress)
        status.update(
            label=f"Trained “{preset.id}” in {time.perf_counter() - t0:.0f} s",
            state="complete",
            expanded=False,
        )
    return _cached_model(preset_id)


@st.cache_resource(max_entries=24, show_spinner=False)
def _cached_linearization(preset_id: str, mean_output: bool) -> ntkcore.Linearization:
    model = _cached_model(preset_id)
    if mean_output:
        model = model.mean_model()
    return ntkcore.Linearization(model)


def linearization(preset_id: str) -> ntkcore.Linearization:
    """The linearization of a preset's network (its mean output for heteroscedastic ones)."""
    model = preset_model(preset_id)
    return _cached_linearization(preset_id, hasattr(model, "mean_model"))


#: Session-state keys of the "Reproduce in Python" expanders start with this.
REPRODUCE_KEY_PREFIX = "reproduce:"


def reproduce(code: str, *, key: str | None = None) -> None:
    """A "Reproduce in Python" expander with the snippet that regenerates the page's figure.

    The expander is lazy: the snippet is sent only once it is opened (a rerun). A code
    block makes a fresh browser load Streamlit's syntax highlighter, 1.5 MB of JavaScript:
    on 2 CPU cores that was 0.85 s of every page's first view (a one-figure page, 2.65 s ->
    3.5 s; benchmarks/RESULTS.md, "The app's speed in a browser").

    Parameters
    ----------
    code : str
        The snippet.
    key : str, optional
        Identifies the expander (its open state); default: the calling file and line.
    """
    if key is None:
        caller = sys._getframe(1)
        key = f"{Path(caller.f_code.co_filename).stem}:{caller.f_lineno}"
    expander = st.expander(
        "Reproduce in Python",
        icon=":material/code:",
        key=REPRODUCE_KEY_PREFIX + key,
        on_change="rerun",
    )
    if expander.open:
        expander.code(code.strip(), language="python")


def download_csv(table: pd.DataFrame, filename: str, label: str = "Download CSV") -> None:
    """A download button for what a figure plots."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    st.download_button(
        label,
        buffer.getvalue(),
        file_name=filename,
        mime="text/csv",
        icon=":material/download:",
        key=f"download-{filename}",
    )


def markdown_table(rows: list[Mapping[str, Any]], formats: Mapping[str, str]) -> str:
    """A Markdown table of ``rows`` (one dict each, same keys), numbers formatted by
    ``formats`` (column -> format spec) and right-aligned.

    For small tables shown on a page's first view: ``st.markdown`` needs none of the
    DataFrame chunks (1.3 MB of JavaScript that ``st.dataframe`` and ``st.table`` fetch and
    compile on a first visit; 0.3 s of the Adapt page's cold load, ``benchmarks/RESULTS.md``).
    """
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns = list(rows[0])

    def cell(column: str, value: Any) -> str:
        text = format(value, formats[column]) if column in formats else str(value)
        return text.replace("|", "\\|")

    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---:" if c in formats else "---" for c in columns) + "|"
    body = ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def format_settings(settings: Mapping[str, Any]) -> str:
    """``a=1, b=0.001`` for captions."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
    )
