"""The timing machinery shared by the app's Timing page and ``benchmarks/``.

What is checked, and against what:

* clocks: CUDA synchronization happens on CUDA devices only (``torch.cuda.synchronize`` is
  replaced by a recorder, so this runs without a GPU); wall vs process-CPU semantics with a
  sleep (wall advances, CPU time does not) and a busy loop; warm-up and budget of
  ``time_call``;
* peak memory: a 256 MiB tensor allocated inside the block raises the CPU high-water mark by
  at least that much; the CUDA path reads the allocator's counters (recorded fakes);
* the machine description's keys, the git commit, the JSON writer;
* the Figure 2 problem: p(h = 200) = 803,601 counted from the model's own parameters;
* the reference-style pipeline against the dense float64 GP posterior written out here from
  ``torch.func.jacrev`` Jacobians (Eq. 3 and its variance), tolerance 1e-8 (mean) and
  1e-6 (variance) relative, and honest non-convergence; its one-vector-at-a-time products
  against the dense Jacobian (1e-12);
* each experiment on its small preset with tiny options: the tidy columns, finite values,
  converged solves, the device named, progress monotone to 1.0, ``on_row`` once per row,
  exceptions from ``progress`` and ``on_row`` propagating, bad options rejected;
* the command line ``python -m ntkcore.experiments timing-n`` in a subprocess.

No assertion is about speed (speed goals live in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ntkcore.experiments import clock as clock_mod
from ntkcore.experiments import get
from ntkcore.experiments.clock import (
    PeakMemory,
    check_clock,
    forward_equivalents,
    forward_seconds,
    stopwatch,
    time_call,
)
from ntkcore.experiments.figure2 import (
    Figure2Problem,
    TimingRow,
    estimate_seconds,
    rank_options,
    rank_spec,
    run_timing_rows,
)
from ntkcore.experiments.fisher_cost import relative_error
from ntkcore.experiments.machine import describe_machine, device_label, git_commit, write_json
from ntkcore.experiments.reference import ReferencePipeline, ReferenceProducts
from ntkcore.experiments.timing import fisher_products, timing_vs_n, timing_vs_p

REPO = Path(__file__).resolve().parents[1]

TIMING_COLUMNS = {
    "method", "n", "p", "fit_s", "predict_s", "iterations", "residual", "converged",
    "forward_equivalents", "device", "device_name", "repeat", "sweep", "hidden", "forward_s",
    "cpu_s", "status",
}  # fmt: skip
FISHER_COLUMNS = {
    "arch", "method", "p", "batch", "seconds_per_vector", "forward_equivalents_per_vector",
    "rel_error", "device", "device_name", "repeat", "vectors", "forward_s",
}  # fmt: skip




pytestmark = pytest.mark.usefixtures("one_intraop_thread")


# --------------------------------------------------------------------------- clocks
class _SyncRecorder:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, device: object = None) -> None:
        self.calls.append(device)


def test_cpu_clock_never_synchronizes(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _SyncRecorder()
    monkeypatch.setattr(torch.cuda, "synchronize", recorder)
    with stopwatch("cpu"):
        pass
    time_call(lambda: None, device="cpu", repeats=3)
    assert recorder.calls == []


def test_cuda_clock_synchronizes_before_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _SyncRecorder()
    monkeypatch.setattr(torch.cuda, "synchronize", recorder)
    cuda = torch.device("cuda", 0)
    with stopwatch(cuda) as t:
        assert len(recorder.calls) == 1  # before the clocks start
    assert recorder.calls == [cuda, cuda]  # and before they stop
    assert math.isfinite(t.wall) and math.isfinite(t.cpu)
    recorder.calls.clear()
    time_call(lambda: None, device=cuda, repeats=3)  # warm-up + 3 calls, 2 syncs each
    assert recorder.calls == [cuda] * 8


def test_wall_and_process_time_semantics() -> None:
    with stopwatch("cpu") as slept:
        time.sleep(0.2)
    assert slept.wall >= 0.2  # real time passes while sleeping ...
    assert slept.cpu < 0.1  # ... but the process uses no CPU time
    with stopwatch("cpu") as busy:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:
            pass
    assert busy.cpu >= 0.05
    assert busy.wall >= 0.05  # one busy thread cannot use more CPU time than wall time
    assert busy.get("cpu") == busy.cpu and busy.get("wall") == busy.wall


def test_time_call_warmup_repeats_and_budget() -> None:
    calls = []
    timing = time_call(lambda: calls.append(1), device="cpu", repeats=4)
    assert len(calls) == 5 and timing.repeats == 4  # one untimed warm-up
    assert timing.best <= timing.median and math.isfinite(timing.warmup)
    cold = time_call(lambda: None, device="cpu", repeats=2, warmup=False)
    assert cold.repeats == 2 and math.isnan(cold.warmup)
    # each call sleeps 30 ms: a 50 ms budget stops after the two calls always made
    capped = time_call(lambda: time.sleep(0.03), device="cpu", repeats=20, budget=0.05)
    assert capped.repeats == 2
    cpu = time_call(lambda: time.sleep(0.03), device="cpu", repeats=2, clock="cpu")
    assert cpu.best < 0.03  # process time does not count the sleep
    with pytest.raises(ValueError, match="clock"):
        check_clock("gpu")
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, device="cpu", repeats=0)


def test_forward_equivalents() -> None:
    assert forward_equivalents(2.0, 0.5) == 4.0
    assert math.isnan(forward_equivalents(math.nan, 0.5))
    with pytest.raises(ValueError, match="forward_s"):
        forward_equivalents(1.0, 0.0)
    model = nn.Linear(3, 2).eval()
    timing = forward_seconds(model, torch.randn(4, 3), repeats=3)
    assert timing.repeats == 3 and timing.best > 0


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cpu_peak_memory_sees_a_large_allocation() -> None:
    size = 256 * 2**20
    before = _rss_bytes()
    with PeakMemory("cpu") as peak:
        block = torch.ones(size // 4)  # 256 MiB of float32, touched
        del block
    assert peak.scope in ("cpu rss", "cpu rss (process lifetime)")
    assert peak.bytes is not None and peak.bytes >= before + 0.9 * size
    assert peak.mib == pytest.approx(peak.bytes / 2**20)


def test_cuda_peak_memory_reads_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append("empty"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: seen.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: seen.append("sync"))
    with PeakMemory(torch.device("cuda", 0)) as peak:
        assert seen == ["empty", "reset"]
    assert peak.bytes == 3 * 2**30 and peak.gib == 3.0 and peak.scope == "cuda allocated"


def test_cpu_peak_memory_falls_back_to_the_lifetime_peak(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # where the high-water mark cannot be reset, the process's lifetime peak is an upper bound
    monkeypatch.setattr(clock_mod, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakMemory("cpu") as peak:
        pass
    assert peak.scope == "cpu rss (process lifetime)"
    assert peak.bytes is not None and peak.bytes >= _rss_bytes() * 0.5


# --------------------------------------------------------------------------- machine
def test_machine_description() -> None:
    info = describe_machine("cpu")
    for key in ("date", "python", "torch", "torch_build", "cpu", "cores", "threads",
                "device", "device_name", "git_commit", "loadavg", "command"):  # fmt: skip
        assert key in info, key
    assert info["torch"] == torch.__version__
    assert info["threads"] == torch.get_num_threads()
    assert info["device"] == "cpu" and info["device_name"] == info["cpu"]
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["torch_build"] == "cpu" or info["torch_build"].startswith(("cuda", "rocm"))
    assert "gpu" not in info
    assert "thread" in device_label("cpu")
    json.dumps(info)  # JSON-ready


def test_git_commit(tmp_path: Path) -> None:
    commit = git_commit()
    if (REPO / ".git").exists():
        assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit)
    assert git_commit(tmp_path) is None  # not a checkout
    out = write_json(tmp_path / "r.json", [{"a": 1}], meta={"device": "cpu"})
    payload = json.loads(out.read_text())
    assert payload["rows"] == [{"a": 1}] and payload["meta"]["git_commit"] == commit


# --------------------------------------------------------------------------- the problem
def test_figure2_problem_size_and_data() -> None:
    problem = Figure2Problem(200)
    assert problem.num_params == 803_601  # the paper's ≈800,000-parameter MLP
    state = torch.random.get_rng_state()
    model = problem.model(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert sum(p.numel() for p in model.parameters()) == 803_601
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (5, 200), (200, 2000), (2000, 200), (200, 1)
    ]  # fmt: skip
    assert sum(isinstance(m, nn.ELU) for m in model) == 3
    small = Figure2Problem(4)
    assert small.num_params == sum(p.numel() for p in small.model().parameters())
    x, y, x_test = small.data(30, 7, seed=1)
    assert x.shape == (30, 5) and y.shape == (30,) and x_test.shape == (7, 5)
    assert torch.equal(small.data(30, 7, seed=1)[1], y)
    assert torch.equal(small.model(seed=2)[0].weight, small.model(seed=2)[0].weight)
    with pytest.raises(ValueError, match="hidden"):
        Figure2Problem(0)


def test_rank_specs() -> None:
    assert rank_spec("auto") == "auto" and rank_spec("64") == 64 and rank_spec(8) == 8
    assert rank_options("auto:0.5") == {"rank": "auto", "variance_tol": 0.5}
    assert rank_options(32) == {"rank": 32}
    for bad in ("auto:x", "auto:-1", "0", "many", 0, True):
        with pytest.raises(ValueError, match="rank|tolerance"):
            rank_spec(bad)


# --------------------------------------------------------------------------- reference
def _dense_gp(model: nn.Module, x, y, x_star, *, noise: float, prior: float, mean: str):
    """Eq. 3 and its variance written out with dense float64 Jacobians (torch.func.jacrev)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def jac(inputs):
        j = jacrev(lambda p: functional_call(model, p, (inputs,)).reshape(-1))(params)
        return torch.cat([j[k].reshape(inputs.shape[0], -1) for k in params], dim=1)

    j, j_star = jac(x), jac(x_star)  # shapes: (n, p), (m, p)
    with torch.no_grad():
        m_x = model(x).reshape(-1) if mean == "network" else torch.zeros(len(x), dtype=x.dtype)
        m_s = (
            model(x_star).reshape(-1) if mean == "network"
            else torch.zeros(len(x_star), dtype=x.dtype)
        )  # fmt: skip
    c = noise / prior
    system = j @ j.T + c * torch.eye(len(x), dtype=x.dtype)
    cross = j_star @ j.T  # shape: (m, n)
    post_mean = m_s + cross @ torch.linalg.solve(system, y - m_x)
    explained = (cross * torch.linalg.solve(system, cross.T).T).sum(1)
    post_var = prior * ((j_star * j_star).sum(1) - explained)
    return post_mean, post_var


@pytest.mark.parametrize("mean", ["zero", "network"])
def test_reference_pipeline_matches_dense_gp(mean: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()
    x = torch.randn(15, 3, dtype=torch.float64)
    y = torch.sin(x.sum(1))
    x_star = torch.randn(6, 3, dtype=torch.float64)
    noise, prior = 0.05, 0.7
    pipe = ReferencePipeline(model, x, y, noise_variance=noise, prior_variance=prior, mean=mean)
    diag = pipe.fit(tol=1e-12, max_iter=500)
    assert diag["converged"] and diag["residual"] <= 1e-12
    # LOVE with as many Lanczos steps as points is exact in exact arithmetic
    res = pipe.predict(x_star, rank=15)
    ref_mean, ref_var = _dense_gp(model, x, y, x_star, noise=noise, prior=prior, mean=mean)
    assert torch.allclose(res.mean, ref_mean, rtol=1e-8, atol=1e-10)
    assert torch.allclose(res.variance, ref_var, rtol=1e-6, atol=1e-10)


def test_reference_products_match_dense_jacobian() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    j = torch.cat([jac[k].reshape(5, 3, -1) for k in params], dim=-1)  # shape: (n, o, p)
    ref = ReferenceProducts(model)
    v = torch.randn(2, j.shape[-1], dtype=torch.float64)
    u = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.allclose(ref.jvp(x, v), torch.einsum("nop,kp->kno", j, v), rtol=1e-12)
    assert torch.allclose(ref.vjp(x, u), torch.einsum("nop,kno->kp", j, u), rtol=1e-12)
    ntk_u = torch.einsum("nop,mqp,kmq->kno", j, j, u)
    assert torch.allclose(ref.ntk_vp(x, u), ntk_u, rtol=1e-12)


def test_reference_pipeline_reports_non_convergence() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double().eval()
    x = torch.randn(40, 3, dtype=torch.float64)
    pipe = ReferencePipeline(model, x, torch.randn(40, dtype=torch.float64), noise_variance=1e-4)
    diag = pipe.fit(tol=1e-10, max_iter=2)
    assert diag["iterations"] == 2 and not diag["converged"] and diag["residual"] > 1e-10
    with pytest.raises(ValueError, match="mean"):
        ReferencePipeline(model, x, x[:, 0], noise_variance=1.0, mean="linear")


# --------------------------------------------------------------------------- experiments
class _Progress:
    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.messages: list[str] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.fractions.append(fraction)
        self.messages.append(message)

    def check(self) -> None:
        assert self.fractions, "progress was never called"
        assert all(b >= a for a, b in zip(self.fractions, self.fractions[1:], strict=False))
        assert self.fractions[-1] == 1.0 and 0.0 <= self.fractions[0] < 1.0


def _check_timing_table(table: pd.DataFrame, rows: list[dict]) -> None:
    assert TIMING_COLUMNS <= set(table.columns)
    assert (table["status"] == "ok").all()
    assert table["converged"].astype(bool).all()
    for col in ("fit_s", "predict_s", "cpu_s", "iterations", "residual", "forward_s",
                "forward_equivalents", "n", "p"):  # fmt: skip
        values = table[col].astype(float)
        assert values.map(math.isfinite).all() and (values >= 0).all(), col
    assert (table["residual"] <= table["tol"]).all()
    assert (table["device"] == "cpu").all() and (table["device_name"] != "").all()
    assert table.attrs["machine"]["device"] == "cpu"
    # on_row saw every row as it was measured, with the table's columns
    assert [r["method"] for r in rows] == list(table["method"])
    assert set(rows[0]) == set(table.columns)


def test_timing_vs_n_small_tiny() -> None:
    progress, rows = _Progress(), []
    table = timing_vs_n(
        sizes=(64, 32), hidden=4, test_points=16, progress=progress, on_row=rows.append,
        methods=("function", "parameter", "parameter-fd", "reference-style"), love_rank=16,
    )
    _check_timing_table(table, rows)
    progress.check()
    assert list(table["n"]) == [32] * 4 + [64] * 4  # cheapest first
    assert (table["p"] == Figure2Problem(4).num_params).all()
    assert set(table["method"]) == {"function", "parameter", "parameter-fd", "reference-style"}
    assert (table["sweep"] == "n").all()


def test_timing_vs_p_small_tiny_with_repeats() -> None:
    progress, rows = _Progress(), []
    table = timing_vs_p(
        widths=(2, 3), n=40, test_points=8, methods=("function", "parameter"), repeats=2,
        progress=progress, on_row=rows.append, warm_up=False,
    )
    _check_timing_table(table, rows)
    progress.check()
    assert len(table) == 2 * 2 * 2  # methods × widths × repeats
    assert sorted(set(table["p"])) == [Figure2Problem(2).num_params, Figure2Problem(3).num_params]
    assert set(table["repeat"]) == {0, 1} and (table["n"] == 40).all()


def test_fisher_products_small_tiny() -> None:
    progress, rows = _Progress(), []
    table = fisher_products(
        archs=("mlp", "lenet3"), batch=3, vectors=2, repeats=2, progress=progress,
        on_row=rows.append,
    )
    assert FISHER_COLUMNS <= set(table.columns)
    assert len(table) == 2 * 3 * 2 and len(rows) == len(table)
    for col in ("seconds_per_vector", "forward_s", "forward_equivalents_per_vector",
                "rel_error"):  # fmt: skip
        assert table[col].map(math.isfinite).all() and (table[col] >= 0).all(), col
    assert (table.loc[table["method"] == "exact", "rel_error"] == 0).all()  # the reference
    assert table["rel_error_float64"].isna().all()
    assert (table["device"] == "cpu").all()
    progress.check()
    assert any("lenet3: autograd" in m for m in progress.messages)


def test_relative_error_is_rowwise_max() -> None:
    ref = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    a = torch.tensor([[1.0, 0.1], [0.0, 2.0]])
    assert relative_error(a, ref) == pytest.approx(0.1)


class _Stop(Exception):
    pass


def _raise_on_second(fraction: float, message: str, _calls: list = []) -> None:  # noqa: B006
    _calls.append(fraction)
    if len(_calls) % 2 == 0:
        raise _Stop


@pytest.mark.parametrize("experiment", [timing_vs_n, timing_vs_p, fisher_products])
def test_progress_exceptions_propagate(experiment) -> None:
    options = (
        {"archs": ("lenet3",), "batch": 2, "vectors": 1, "repeats": 1}
        if experiment is fisher_products
        else {"test_points": 8, "methods": ("function",), "warm_up": False,
              **({"sizes": (32,), "hidden": 2} if experiment is timing_vs_n
                 else {"widths": (2,), "n": 32})}
    )  # fmt: skip
    calls = []

    def progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        experiment(progress=progress, **options)

    def on_row(record: dict) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        experiment(on_row=on_row, **options)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="preset"):
        timing_vs_n(preset="medium")
    with pytest.raises(ValueError, match="methods"):
        timing_vs_n(methods=("dense",))
    with pytest.raises(ValueError, match="sizes"):
        timing_vs_n(sizes=(0, 10))
    with pytest.raises(ValueError, match="rank"):
        timing_vs_p(rank="lots")
    with pytest.raises(ValueError, match="dtype"):
        timing_vs_n(dtype="float16")
    with pytest.raises(ValueError, match="architectures"):
        fisher_products(archs=("resnet50",))
    with pytest.raises(ValueError, match="likelihood"):
        fisher_products(likelihood="poisson")
    with pytest.raises(ValueError, match="clock"):
        fisher_products(clock="gpu")
    assert get("timing-n").function is timing_vs_n
    assert get("timing-p").function is timing_vs_p
    assert get("fisher-products").function is fisher_products


def test_budget_skips_rows_and_repeated_rows_are_copied() -> None:
    p = Figure2Problem(2).num_params
    rows = [
        TimingRow("n", "function", 32, p, 2, "auto", 1e-3),
        TimingRow("goal", "function", 32, p, 2, "auto", 1e-3),  # same measurement
        TimingRow("n", "function", 10**6, p, 2, "auto", 1e-3),  # far over the budget
    ]
    done = run_timing_rows(
        rows, device=torch.device("cpu"), test_points=8, budget=1e-6, warm=False
    )
    assert [r.status for r in done[:2]] == ["ok", "ok"]
    assert done[1].note == "same run as the n row" and done[1].fit_s == done[0].fit_s
    assert done[2].status.startswith("skipped") and done[2].fit_s is None
    assert estimate_seconds(rows[2], done[:1]) == pytest.approx(done[0].total_s * 10**6 / 32)
    record = done[2].record("cpu")
    assert math.isnan(record["fit_s"]) and record["status"].startswith("skipped")


@pytest.mark.slow
def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "timing.csv"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",  # see the one_intraop_thread fixture
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ntkcore.experiments", "timing-n", "--preset", "small",
         "--sizes", "100", "200", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert sorted(set(table["n"])) == [100, 200]
    assert set(table["method"]) == {"function", "parameter", "parameter-fd"}
    assert table["converged"].all() and (table["device"] == "cpu").all()
    assert "function" in proc.stdout and "timing-n" in proc.stderr
