"""Bring your own data and model: the upload panels shared by the Adapt and Adaptation-curves
pages.

Uploads are untrusted input. Data goes through ``ntkcore.data.read_csv_columns`` /
``from_csv`` and models through ``ntkcore.zoo.load_model`` (safetensors or a validated
``torch.export`` program; never unpickled), then ``zoo.check_input_shape`` before any
computation. A file the library refuses shows its ``ValueError`` as an ``st.error`` and the
session keeps what it had loaded before. What a session loads lives in its own session state
(one dataset and one model per page), so it is freed with the session and never shared.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch
from torch import nn

import ntkcore
from app.compute import LIGHT
from ntkcore import data, zoo

__all__ = ["UserData", "UserModel", "data_panel", "model_panel", "user_task"]

#: Example CSV offered for download: one input column, a domain column, a target.
EXAMPLE_CSV = "\n".join(
    ["x,y,domain"]
    + [f"{x / 10:.1f},{(x / 10) ** 2 / 10:.4f},source" for x in range(-30, 31, 2)]
    + [f"{x / 10:.1f},{0.5 + (x / 10) ** 2 / 8:.4f},target" for x in range(-30, 31, 3)]
)


@dataclass(frozen=True)
class UserData:
    """An uploaded CSV file and the columns chosen for it (the task is built per seed)."""

    name: str
    content: bytes
    digest: str
    x_columns: tuple[str, ...]
    y_column: str
    domain_column: str | None

    @property
    def label(self) -> str:
        return f"{self.name} ({', '.join(self.x_columns)} → {self.y_column})"


@dataclass(frozen=True)
class UserModel:
    """An uploaded model, validated, with its linearization."""

    name: str
    digest: str
    model: nn.Module
    linearization: ntkcore.Linearization


def _key(page: str, what: str) -> str:
    return f"{page}.user_{what}"


@st.cache_data(max_entries=16, show_spinner=False)
def _columns(content: bytes, name: str) -> data.CsvColumns:
    # Keyed by content: cheap to call on every rerun of the panel.
    return data.read_csv_columns(_named_bytes(content, name))


def _named_bytes(content: bytes, name: str) -> Any:
    import io

    buffer = io.BytesIO(content)
    buffer.name = name
    return buffer


def user_task(user: UserData, seed: int) -> data.Task:
    """The task of an uploaded file for a target seed (parsing is cached by the library)."""
    return data.from_csv(
        _named_bytes(user.content, user.name),
        x_columns=list(user.x_columns),
        y_column=user.y_column,
        domain_column=user.domain_column,
        seed=seed,
    )


def data_panel(page: str) -> UserData | None:
    """Upload a CSV file, pick its columns, preview it; returns the data in use (or ``None``).

    The data in use changes only when "Use this data" succeeds; a refused file or column
    choice shows the library's message and keeps the previous data.
    """
    current: UserData | None = st.session_state.get(_key(page, "data"))
    expander = st.expander("Your data (CSV)", expanded=current is None, icon=":material/upload:")
    notice = st.container()  # below the expander: visible when the expander is collapsed
    with expander:
        st.markdown(
            "One CSV file with a header row. Numeric columns are inputs and the target; an "
            "optional column with exactly two values splits the rows into a **source** domain "
            "(to train a network on) and a **target** domain (to adapt to). Without it, all "
            "rows are target data: adapt an uploaded model or a network at initialization."
        )
        st.download_button(
            "Example file", EXAMPLE_CSV, file_name="example.csv", mime="text/csv",
            key=f"{page}.example_csv",
        )  # fmt: skip
        upload = st.file_uploader(
            "CSV file", type=["csv", "txt", "gz"], key=f"{page}.csv_upload"
        )
        if upload is not None:
            content = upload.getvalue()
            try:
                columns = _columns(content, upload.name)
            except ValueError as err:
                notice.error(f"Cannot read this file: {err}", icon=":material/error:")
                columns = None
            if columns is not None:
                _column_pickers(page, upload.name, content, columns, notice)
    if current is not None:
        notice.caption(f"Data in use: {current.label}.")
    return st.session_state.get(_key(page, "data"))


def _column_pickers(
    page: str, name: str, content: bytes, columns: data.CsvColumns, notice: Any
) -> None:
    st.dataframe(columns.head, hide_index=True)
    st.caption(
        f"{columns.n_rows:,} rows; numeric columns: {', '.join(columns.numeric) or 'none'}."
        + "".join(f" Not numeric: {c} ({why})." for c, why in columns.problems.items())
    )
    none = "(none: target data only)"
    candidates = list(columns.domain_candidates)
    # A two-valued text column (e.g. "source"/"target") is most likely the domain.
    named = [c for c in candidates if c not in columns.numeric]
    domain = st.selectbox(
        "Domain column",
        [none, *candidates],
        index=1 + candidates.index(named[0]) if named else 0,
        key=f"{page}.csv_domain",
    )
    domain_column = None if domain == none else str(domain)
    numeric = [c for c in columns.numeric if c != domain_column]
    y_column = st.selectbox(
        "Target column", numeric[::-1], key=f"{page}.csv_y", help="Default: the last numeric one."
    )
    x_columns = st.multiselect(
        "Input columns",
        [c for c in numeric if c != y_column],
        default=[c for c in numeric if c != y_column],
        key=f"{page}.csv_x",
    )
    if st.button("Use this data", type="primary", key=f"{page}.csv_use", icon=":material/check:"):
        candidate = UserData(
            name=name,
            content=content,
            digest=hashlib.sha256(content).hexdigest()[:16],
            x_columns=tuple(x_columns),
            y_column=str(y_column) if y_column is not None else "",
            domain_column=domain_column,
        )
        try:
            with LIGHT.hold():
                user_task(candidate, seed=0)  # validate now: every message comes from here
        except ValueError as err:
            notice.error(f"Cannot use this data: {err}", icon=":material/error:")
            return
        st.session_state[_key(page, "data")] = candidate
        st.rerun()


def model_panel(page: str, task: data.Task) -> UserModel | None:
    """Upload a model file; returns the validated model in use (or ``None``).

    The model in use changes only when a new file loads and fits ``task``'s inputs; otherwise
    the library's message is shown and the previous model stays.
    """
    current: UserModel | None = st.session_state.get(_key(page, "model"))
    expander = st.expander("Your model", expanded=current is None, icon=":material/upload_file:")
    notice = st.container()
    with expander:
        st.markdown(
            "**safetensors** weights of a zoo architecture (save them with "
            "`ntkcore.zoo.save_model(model, path, arch=..., **kwargs)`, which records the "
            "architecture in the file) or a **torch.export** program (`.pt2`, from "
            "`torch.export.save(torch.export.export(model, (x,)), path)`). Nothing is ever "
            "unpickled: pickles and `torch.save` checkpoints are refused."
        )
        upload = st.file_uploader(
            "Model file", type=["safetensors", "pt2"], key=f"{page}.model_upload"
        )
        if upload is not None:
            content = upload.getvalue()
            digest = hashlib.sha256(content).hexdigest()[:16]
            if current is None or current.digest != digest:
                try:
                    with LIGHT.hold():
                        model = zoo.load_model(_named_bytes(content, upload.name))
                        zoo.check_input_shape(model, task)
                        lin = ntkcore.Linearization(model)
                except ValueError as err:
                    notice.error(f"Cannot use this model: {err}", icon=":material/error:")
                else:
                    current = UserModel(upload.name, digest, model, lin)
                    st.session_state[_key(page, "model")] = current
    if current is not None:
        try:
            zoo.check_input_shape(current.model, task)
        except ValueError as err:
            notice.error(f"The model in use does not fit this task: {err}")
            return None
        p = current.linearization.num_params
        notice.caption(f"Model in use: {current.name} ({p:,} parameters).")
    return current


def untrained_mlp(task: data.Task, seed: int = 0) -> nn.Module:
    """A tanh MLP (2 × 64) at a seeded initialization, sized for ``task`` (the NTK at init)."""
    with zoo.seeded(seed):
        model = zoo.create(
            "mlp",
            in_features=int(task.meta.input_shape[0]),
            out_features=int(task.meta.output_dim),
            width=64,
            depth=2,
            activation="tanh",
        )
    return model.eval().to(torch.float32)
