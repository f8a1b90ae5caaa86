"""The paper's experiments as a library: functions returning tidy pandas DataFrames.

>>> from ntkcore import experiments
>>> experiments.available()[:2]
['fast-adaptation', 'spatial-maps']
>>> table = experiments.run("fast-adaptation", dataset="sinusoids")  # doctest: +SKIP

Each experiment (see :data:`EXPERIMENTS`) is a function ``f(*, preset="small", seed=0,
progress=None, device=None, **options)``; ``small`` presets finish within a minute on two CPU
cores, ``full`` presets follow the paper's sizes. ``python -m ntkcore.experiments NAME``
runs one from the command line with a progress bar. The app's pages and ``benchmarks/`` call
these functions; neither keeps its own copy.

This layer sits below the engine, ``ntkcore.zoo`` and ``ntkcore.data`` and above
``ntkcore.plots`` and the app (``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ntkcore.experiments.registry import (
    EXPERIMENTS,
    PRESETS,
    Experiment,
    ExperimentTables,
    Progress,
    ProgressSteps,
    available,
    check_preset,
    get,
    resolve_device,
)

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "Experiment",
    "ExperimentTables",
    "Progress",
    "ProgressSteps",
    "available",
    "check_preset",
    "get",
    "resolve_device",
    "run",
]


def run(name: str, **options: Any) -> pd.DataFrame | ExperimentTables:
    """Run the experiment registered as ``name`` with keyword ``options``."""
    return get(name)(**options)
