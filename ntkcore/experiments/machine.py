"""What a timing was measured on: machine description, device name, git commit, JSON files.

Every recorded timing names its machine (``benchmarks/RESULTS.md``: "machine, date, exact
command, git commit"), and the app's Timing page names the device of every point.
:func:`describe_machine` gathers that once: CPU model, cores, threads, PyTorch version and
build (CPU, CUDA or ROCm), the accelerator's name, memory and compute capability, load
average and the repository's git commit. Nothing here needs a third-party package.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "cpu_model",
    "describe_machine",
    "device_label",
    "device_name",
    "git_commit",
    "torch_build",
    "write_json",
]

_REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, then ``lscpu``, then ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def torch_build() -> str:
    """How PyTorch was built: ``"cpu"``, ``"cuda 12.8"`` or ``"rocm 6.2"``."""
    if torch.version.cuda:
        return f"cuda {torch.version.cuda}"
    hip = getattr(torch.version, "hip", None)
    if hip:
        return f"rocm {hip}"
    return "cpu"


def _as_device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def device_name(device: torch.device | str) -> str:
    """The hardware behind ``device``: the GPU's name for CUDA, the CPU's model otherwise."""
    device = _as_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def device_label(device: torch.device | str) -> str:
    """A short label for figures and tables, e.g. ``"NVIDIA H200 (cuda)"`` or
    ``"AMD EPYC (cpu, 2 threads)"``."""
    device = _as_device(device)
    if device.type == "cuda":
        return f"{device_name(device)} (cuda)"
    threads = torch.get_num_threads()
    return f"{device_name(device)} ({device.type}, {threads} thread{'s' * (threads != 1)})"


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out at ``path`` (default: this repository), or None.

    Outside a git checkout (an installed package, or a copy of the working tree sent to a
    GPU machine without its ``.git``) the environment variable ``NTKCORE_GIT_COMMIT`` is
    used when it holds a 40-digit hash (``benchmarks/gpu_check.sh`` is run with it set);
    otherwise None.
    """
    cwd = Path(path) if path is not None else _REPO
    commit = ""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if len(commit) != 40:
        commit = os.environ.get("NTKCORE_GIT_COMMIT", "").strip()
    if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit.lower()):
        return commit
    return None


def _git_dirty(path: Path) -> bool | None:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The machine a timing runs on, as a JSON-ready dict.

    Keys: ``date`` (UTC), ``command``, ``python``, ``platform``, ``torch``, ``torch_build``,
    ``cpu`` (model name), ``cores`` (logical CPUs of the machine), ``affinity`` (CPUs this
    process may run on), ``threads`` / ``interop_threads`` (PyTorch's), ``loadavg``,
    ``device``, ``device_name``, ``git_commit`` and ``git_dirty`` (tracked files modified;
    None outside a checkout); on CUDA also ``gpu``, ``gpu_memory_gib``,
    ``cuda_capability``, ``tf32_matmul`` and ``tf32_cudnn``.
    """
    device = _as_device(device)
    commit = git_commit()
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_build": torch_build(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "device_name": device_name(device),
        "git_commit": commit,
        "git_dirty": _git_dirty(_REPO) if commit else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_capability=f"{props.major}.{props.minor}",
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
        )
    return info


def write_json(path: str | os.PathLike[str], payload: Any, *, meta: dict[str, Any]) -> Path:
    """Write ``{"meta": meta, **payload}`` (or ``{"meta", "rows": payload}`` for a list).

    ``meta`` is typically :func:`describe_machine`; a ``git_commit`` key is added when it is
    missing, so every recorded result names the code it measured. Values JSON cannot encode
    are written as strings. Returns the path written.
    """
    path = Path(path)
    meta = dict(meta)
    meta.setdefault("git_commit", git_commit())
    body = dict(payload) if isinstance(payload, dict) else {"rows": list(payload)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, **body}, indent=1, default=str))
    return path
