"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_intraop_thread() -> Iterator[None]:
    """Run a module's tiny problems on one intra-op thread (``pytestmark =
    pytest.mark.usefixtures("one_intraop_thread")``).

    On a loaded 2-core machine, OpenMP synchronization dominates operations on matrices this
    small: measured 8-10× faster wall time for those suites with one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def app_run_environment(ntkcore_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For AppTest tests of pages with Run buttons: the model cache, the thread count
    restored after the test, and an empty process-wide result cache before and after."""
    from app.compute import RESULTS

    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    threads = torch.get_num_threads()
    RESULTS.clear()
    yield
    RESULTS.clear()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``app/``, ``ntkcore/`` and ``.streamlit/`` live)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def ntkcore_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-zoo cache directory shared by the app tests of one session.

    ``$NTKCORE_CACHE`` when set (so a warm cache makes the tests fast), else a fresh
    temporary directory: tests never write to the user's home. Tests that need it set the
    variable themselves (in-process with ``monkeypatch``, or in a subprocess's environment),
    so other tests see the environment unchanged.
    """
    configured = os.environ.get("NTKCORE_CACHE")
    if configured:
        return Path(configured)
    return tmp_path_factory.mktemp("ntkcore-cache")
