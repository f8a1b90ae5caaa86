"""The README's "library in 10 lines" example runs as printed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The library in 10 lines", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section must hold exactly one python block"
    return blocks[0]


def test_readme_quickstart_has_exactly_two_commands():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert [c for c in commands if c] == ["make app", "make test"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small networks train far faster on one thread on a busy machine (app/streamlit_app.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_readme_library_example_runs(
    ntkcore_cache: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    shown: list[go.Figure] = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    code = _example()
    statements = [line for line in code.splitlines() if line.strip()]
    assert len(statements) <= 12
    namespace = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)
    strategy, mse = capsys.readouterr().out.split()
    assert strategy in {"dense", "function", "parameter"}
    # Far better than predicting zero, whose MSE on A sin(w x + b) is about A² / 2.
    amplitude = namespace["task"].meta.params["target"]["amplitude"]
    assert float(mse) < 0.1 * amplitude**2 / 2
    assert len(shown) == 1
    assert {t.name for t in shown[0].data} >= {"posterior mean", "±2σ", "context"}
