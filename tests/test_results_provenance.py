"""Every results file names the git commit it measured (issue 11, "claims that match their
references"): in its own text, in a sidecar ``<stem>.meta.json``, or, for files written
before the rule, in ``benchmarks/results/PROVENANCE.md``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ntkcore.experiments import cli
from ntkcore.experiments.machine import git_commit

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NAMES_A_COMMIT = re.compile(r"(git|commit)[^\n]{0,40}?\b[0-9a-f]{7,40}\b", re.IGNORECASE)
LISTED = re.compile(r"^\| `([^`]+)` \| ([0-9a-f]{40}) \|", re.MULTILINE)


def _legacy() -> dict[str, str]:
    return dict(LISTED.findall((RESULTS / "PROVENANCE.md").read_text()))


def test_every_results_file_names_its_commit() -> None:
    legacy = _legacy()
    # an experiment's sidecar names the commit of every table it wrote (<stem>-spectra.csv…)
    covered = set()
    for sidecar in RESULTS.glob("*.meta.json"):
        record = json.loads(sidecar.read_text())
        if record["meta"].get("git_commit"):
            covered.update(record.get("tables", []))
    missing = []
    for path in sorted(RESULTS.iterdir()):
        if path.name == "PROVENANCE.md" or path.name in legacy or path.name in covered:
            continue
        if NAMES_A_COMMIT.search(path.read_text(errors="replace")):
            continue
        sidecar = RESULTS / f"{path.stem}.meta.json"
        if sidecar.exists() and json.loads(sidecar.read_text())["meta"].get("git_commit"):
            continue
        missing.append(path.name)
    assert not missing, f"results files naming no git commit: {missing}"


def test_the_legacy_list_names_only_files_that_exist() -> None:
    legacy = _legacy()
    assert legacy, "PROVENANCE.md lists no files: the table's format changed?"
    assert not [name for name in legacy if not (RESULTS / name).exists()]


def test_commit_from_the_environment_outside_a_checkout(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NTKCORE_GIT_COMMIT", "ab" * 20)
    assert git_commit(tmp_path) == "ab" * 20
    monkeypatch.setenv("NTKCORE_GIT_COMMIT", "not-a-commit")
    assert git_commit(tmp_path) is None


def test_the_command_line_writes_its_commit_beside_the_table(tmp_path, monkeypatch) -> None:
    commit = git_commit()
    if commit is None:
        pytest.skip("not a git checkout")
    out = tmp_path / "timing.csv"
    argv = ["timing-n", "--sizes", "16", "32", "--hidden", "8", "--methods", "function",
            "--no-warm-up", "--quiet", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0 and out.exists()
    sidecar = json.loads((tmp_path / "timing.meta.json").read_text())
    meta = sidecar["meta"]
    assert meta["git_commit"] == commit
    assert meta["experiment"] == "timing-n" and meta["options"]["sizes"] == [16, 32]
    assert "timing.csv" in sidecar["tables"]
