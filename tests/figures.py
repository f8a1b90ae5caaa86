"""Reading Plotly figure specs as Streamlit sends them (shared by the app and load tests)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

__all__ = ["trace", "trace_names", "values"]


def values(array: Any) -> np.ndarray:
    """Decode a Plotly JSON array: a list, or a typed array ``{"dtype", "bdata"[, "shape"]}``."""
    if isinstance(array, dict) and "bdata" in array:
        out = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        if "shape" in array:
            out = out.reshape([int(d) for d in str(array["shape"]).split(",")])
        return out
    return np.asarray(array, dtype=np.float64)


def trace_names(figure: dict[str, Any]) -> list[str]:
    """Names of a figure spec's traces, in drawing order."""
    return [t.get("name", "") for t in figure.get("data", [])]


def trace(figure: dict[str, Any], name: str) -> dict[str, Any]:
    """The first trace called ``name`` (``KeyError`` listing the names if there is none)."""
    for t in figure.get("data", []):
        if t.get("name") == name:
            return t
    raise KeyError(f"no trace named {name!r}; traces: {trace_names(figure)}")
