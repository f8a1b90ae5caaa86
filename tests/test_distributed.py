"""Data-parallel adaptation (ntkcore.distributed) against single-process float64 references.

Every check spawns 2 or 3 Gloo processes on the CPU (``ntkcore.distributed.run_local``,
one thread each) that each hold one shard of the data — uneven shards, one rank with a
single point — and compares what every rank returns with ``adapt`` (and friends) run in
this process on the concatenated data, and with the explicit dense GP formulas (Eq. 2–3)
written out here. Tolerances: 1e-10 relative for posterior means, weights, predictive
means and variances, log marginal likelihoods and Fisher products, with matrix-free solves
asked for tol = 1e-13 (their residual is reported and must be below it); block-CG-corrected
variances (a rank-4 basis, not spanning) to 1e-8 with ``variance_rtol`` = 1e-10; the
finite-difference Fisher products (Eq. 5) to 1e-7 (their own rounding; see the test); the
log marginal likelihood to 1e-10 of the exact formula (the single-process matrix-free value
within its own SLQ standard error).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

import ntkcore
from ntkcore.distributed import run_local

F64 = torch.float64
RTOL = 1e-10
SIGMA2, S2 = 1e-2, 0.7


def _model(widths: tuple[int, ...], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(F64)


def _data(n: int, d: int, o: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sin(x.sum(-1, keepdim=True) + torch.arange(o, dtype=F64)) + 0.1 * torch.randn(
        n, o, generator=g, dtype=F64
    )
    return x, y


# Two problems: A has n·o = 46 <= p = 218 (function-space dense, Eq. 3), B has
# n·o = 40 > p = 21 (weight-space dense, Eq. 2). Shards: uneven, one rank with one point.
PROBLEMS = {
    "A": dict(widths=(2, 12, 12, 2), n=23, test=9, seed=1),
    "B": dict(widths=(2, 5, 1), n=40, test=7, seed=2),
}
SPLITS = {2: {"A": [22, 1], "B": [15, 25]}, 3: {"A": [12, 1, 10], "B": [1, 26, 13]}}
STRATEGIES = ("dense", "function", "parameter")


def _problem(name: str):
    spec = PROBLEMS[name]
    model = _model(spec["widths"], spec["seed"])
    x, y = _data(spec["n"], spec["widths"][0], spec["widths"][-1], spec["seed"] + 10)
    xt, _ = _data(spec["test"], spec["widths"][0], spec["widths"][-1], spec["seed"] + 20)
    return model, x, y, xt


def _shard(t: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _test_sizes(m: int, world: int) -> list[int]:
    base, extra = divmod(m, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def _adapt_kwargs(strategy: str) -> dict:
    return dict(
        noise_variance=SIGMA2, prior_variance=S2, strategy=strategy, tol=1e-13, max_iter=500
    )


def _everything(rank: int, world: int) -> dict:
    """Runs in each spawned rank: every strategy on both problems, LML, predictions on
    this rank's test shard, Fisher products, hyperparameters, corrected variances."""
    group = torch.distributed.group.WORLD
    out: dict = {}
    for name in PROBLEMS:
        model, x, y, xt = _problem(name)
        sizes = SPLITS[world][name]
        xs, ys = _shard(x, sizes, rank), _shard(y, sizes, rank)
        xts = _shard(xt, _test_sizes(xt.shape[0], world), rank)
        for strategy in STRATEGIES:
            post = ntkcore.adapt(model, xs, ys, **_adapt_kwargs(strategy), process_group=group)
            pred = post.predict(xts)
            out[name, strategy] = dict(
                weights=post.weights, mean=pred.mean, variance=pred.variance,
                lml=post.log_marginal_likelihood(), residual=post.diagnostics["residual"],
                space=post.diagnostics.get("space"), n=post.diagnostics["n"],
                exact=post.diagnostics["exact_variance"],
            )
        v = torch.randn(3, sum(p.numel() for p in model.parameters()), dtype=F64,
                        generator=torch.Generator().manual_seed(5))
        out[name, "fisher"] = {
            method: ntkcore.fisher_vp(model, xs, v, method=method, process_group=group)
            for method in ("exact", "fd")
        }
        fit = ntkcore.fit_hyperparameters(model, xs, ys, process_group=group)
        out[name, "hyper"] = (fit.noise_variance, fit.prior_variance, fit.log_marginal_likelihood)
    # each rank streams its shard through the device, 4 points at a time
    model, x, y, xt = _problem("B")
    sizes = SPLITS[world]["B"]
    post = ntkcore.adapt(model, _shard(x, sizes, rank), _shard(y, sizes, rank),
                         **_adapt_kwargs("parameter"), stream=4, process_group=group)
    pred = post.predict(_shard(xt, _test_sizes(xt.shape[0], world), rank))
    out["streamed"] = dict(weights=post.weights, mean=pred.mean, variance=pred.variance)
    # a basis that does not span (rank 4 < min(n·o, p)): collective block-CG corrections
    model, x, y, xt = _problem("A")
    sizes = SPLITS[world]["A"]
    post = ntkcore.adapt(
        model, _shard(x, sizes, rank), _shard(y, sizes, rank), **_adapt_kwargs("parameter"),
        rank=4, variance_rtol=1e-10, process_group=group,
    )
    # uneven test shards: rank 0 holds all but one test point
    test_sizes = [xt.shape[0] - (world - 1)] + [1] * (world - 1)
    pred = post.predict(_shard(xt, test_sizes, rank))
    out["corrected"] = dict(
        mean=pred.mean, variance=pred.variance, method=pred.diagnostics["variance_method"],
        exact=post.diagnostics["exact_variance"],
    )
    return out


def _dense_reference(model: nn.Module, x, y, xt) -> dict:
    """The GP posterior of Eq. 2–3 from explicit float64 Jacobians (torch.func.jacrev)."""
    params = dict(model.named_parameters())
    names = list(params)

    def f(theta, xi):
        return torch.func.functional_call(model, theta, (xi.unsqueeze(0),)).squeeze(0)

    def jac(xs):
        rows = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, xs)
        return torch.cat([rows[k].reshape(xs.shape[0], -1, params[k].numel()) for k in names],
                         -1).reshape(-1, sum(p.numel() for p in params.values()))

    with torch.no_grad():
        j, jt = jac(x), jac(xt)
        r = (y - model(x)).reshape(-1)
        k = S2 * j @ j.mT + SIGMA2 * torch.eye(j.shape[0], dtype=F64)
        alpha = torch.linalg.solve(k, r)
        mean = model(xt) + (S2 * jt @ j.mT @ alpha).reshape(xt.shape[0], -1)
        cross = S2 * jt @ j.mT
        var = S2 * (jt * jt).sum(-1) - (cross * torch.linalg.solve(k, cross.mT).mT).sum(-1)
        lml = -0.5 * (r @ alpha) - 0.5 * torch.logdet(k) - 0.5 * r.numel() * torch.log(
            torch.tensor(2 * torch.pi, dtype=F64)
        )
    return dict(mean=mean, variance=var.reshape(xt.shape[0], -1), lml=float(lml))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    scale = float(b.abs().max()) if b.numel() else 1.0
    return float((a - b).abs().max()) <= rtol * max(scale, 1e-300)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def runs(request):
    world = request.param
    t0 = time.perf_counter()
    outcomes = run_local(_everything, world, timeout_s=240, collective_timeout_s=60)
    for o in outcomes:
        assert o.ok, f"rank {o.rank}: {o.error}\n{o.traceback}"
    return world, [o.value for o in outcomes], time.perf_counter() - t0


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_matches_single_process(runs, name, strategy):
    world, results, _ = runs
    model, x, y, xt = _problem(name)
    ref = ntkcore.adapt(model, x, y, **_adapt_kwargs(strategy))
    ref_pred = ref.predict(xt)
    dense = _dense_reference(model, x, y, xt)
    means = torch.cat([r[name, strategy]["mean"] for r in results])
    variances = torch.cat([r[name, strategy]["variance"] for r in results])
    for rank, res in enumerate(results):
        got = res[name, strategy]
        assert got["n"] == x.shape[0]
        assert got["exact"], "tiny problems: the variance basis spans min(n·o, p)"
        if strategy != "dense":
            assert got["residual"] <= 1e-13
            assert got["space"] == "parameter"  # sharded: Eq. 3 solved through Eq. 2
        assert _close(got["weights"], ref.weights, RTOL), (rank, "weights")
        # identical on every rank
        assert torch.equal(got["weights"], results[0][name, strategy]["weights"])
        # the exact formula; the single-process value to its own SLQ standard error (the
        # weight-space estimate of one process is 2.7e-8 off on problem A, se 1.8e-7)
        assert abs(got["lml"] - dense["lml"]) <= RTOL * abs(dense["lml"])
        ref_se = ref.diagnostics.get("lml_standard_error", 0.0)
        assert abs(got["lml"] - ref.log_marginal_likelihood()) <= max(
            RTOL * abs(dense["lml"]), 3 * ref.diagnostics["lml_standard_error"]
        ), ref_se
    assert _close(means, ref_pred.mean, RTOL)
    assert _close(variances, ref_pred.variance, RTOL)
    assert _close(means, dense["mean"], 1e-9)
    assert _close(variances, dense["variance"], 1e-9)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_fisher_products_and_hyperparameters(runs, name):
    world, results, _ = runs
    model, x, y, _ = _problem(name)
    v = torch.randn(3, sum(p.numel() for p in model.parameters()), dtype=F64,
                    generator=torch.Generator().manual_seed(5))
    # fd: (f(θ + εv) − f(θ))/ε amplifies the batch-size-dependent rounding of the forward
    # passes by ~1/ε; splitting the data alone moves the products by 2e-10..1.3e-9 on one
    # process (and fd is 1e-8..4e-8 from exact here): 1e-7 for fd, 1e-10 for exact.
    for method, rtol in (("exact", RTOL), ("fd", 1e-7)):
        ref = ntkcore.fisher_vp(model, x, v, method=method)
        for res in results:
            assert _close(res[name, "fisher"][method], ref, rtol), method
    # F = JᵀJ / n for the Gaussian likelihood: against the explicit Jacobian too
    lin = ntkcore.Linearization(model)
    j = lin.jacobian(x).reshape(-1, lin.num_params)
    assert _close(results[0][name, "fisher"]["exact"], (v @ j.mT @ j) / x.shape[0], 1e-10)
    _assert_hyperparameters_match(results, name, ntkcore.fit_hyperparameters(model, x, y))


def _assert_hyperparameters_match(results, name, fit) -> None:
    """Every rank's (σ², s², LML) from fit_hyperparameters(process_group=) against one process."""
    for res in results:
        sigma2, s2, lml = res[name, "hyper"]
        assert abs(lml - fit.log_marginal_likelihood) <= 1e-8 * abs(fit.log_marginal_likelihood)
        assert sigma2 == pytest.approx(fit.noise_variance, rel=1e-5)
        assert s2 == pytest.approx(fit.prior_variance, rel=1e-5)


def test_corrected_variances_are_collective(runs):
    world, results, _ = runs
    model, x, y, xt = _problem("A")
    dense = _dense_reference(model, x, y, xt)
    means = torch.cat([r["corrected"]["mean"] for r in results])
    variances = torch.cat([r["corrected"]["variance"] for r in results])
    assert not results[0]["corrected"]["exact"]
    assert {r["corrected"]["method"] for r in results} == {"block-cg"}
    assert _close(means, dense["mean"], 1e-9)
    assert _close(variances, dense["variance"], 1e-8)


def test_streamed_shards_on_every_rank(runs):
    world, results, _ = runs
    model, x, y, xt = _problem("B")
    ref = ntkcore.adapt(model, x, y, **_adapt_kwargs("dense"))
    dense = _dense_reference(model, x, y, xt)
    for res in results:
        assert _close(res["streamed"]["weights"], ref.weights, RTOL)
    assert _close(torch.cat([r["streamed"]["mean"] for r in results]), dense["mean"], 1e-9)
    assert _close(torch.cat([r["streamed"]["variance"] for r in results]), dense["variance"],
                  1e-9)


# ----------------------------------------------------------------------------- failures
def _bad_input_on_rank_1(rank: int, world: int) -> None:
    model, x, y, _ = _problem("A")
    xs, ys = _shard(x, [12, 11], rank), _shard(y, [12, 11], rank)
    if rank == 1:
        ys = ys.clone()
        ys[3, 0] = float("nan")
    ntkcore.adapt(model, xs, ys, noise_variance=SIGMA2, process_group=torch.distributed.group.WORLD)


def _hang_on_rank_1(rank: int, world: int) -> None:
    model, x, y, _ = _problem("A")
    xs, ys = _shard(x, [12, 11], rank), _shard(y, [12, 11], rank)
    group = torch.distributed.group.WORLD
    if rank == 1:
        time.sleep(8)  # longer than the group's 2 s timeout
    ntkcore.adapt(model, xs, ys, noise_variance=SIGMA2, strategy="function", process_group=group)


def _crash_on_rank_1(rank: int, world: int) -> None:
    model, x, y, _ = _problem("A")
    xs, ys = _shard(x, [12, 11], rank), _shard(y, [12, 11], rank)
    group = torch.distributed.group.WORLD
    post = ntkcore.adapt(model, xs, ys, noise_variance=SIGMA2, strategy="function",
                         process_group=group)
    if rank == 1:
        os._exit(3)  # dies between two collectives
    post.log_marginal_likelihood()


def test_bad_input_on_one_rank_raises_on_every_rank():
    outcomes = run_local(_bad_input_on_rank_1, 2, timeout_s=60, collective_timeout_s=20)
    for o in outcomes:
        assert o.error is not None and o.error.startswith("ValueError"), o
        assert "rank 1: ValueError: y contains non-finite values" in o.error


@pytest.mark.slow
def test_hung_rank_times_out_with_a_clear_error():
    t0 = time.perf_counter()
    outcomes = run_local(_hang_on_rank_1, 2, timeout_s=60, collective_timeout_s=2)
    assert time.perf_counter() - t0 < 50, "ended by the collective timeout, not the kill"
    assert all(o.exitcode == 0 for o in outcomes)  # every rank returned (with an error)
    assert outcomes[0].error is not None and outcomes[0].error.startswith("DistributedError")
    assert "rank 0 of 2" in outcomes[0].error and "timeout" in outcomes[0].error
    assert outcomes[1].error is not None  # the late rank finds its peer gone


def test_dead_rank_ends_the_run_on_the_others():
    outcomes = run_local(_crash_on_rank_1, 2, timeout_s=60, collective_timeout_s=20)
    assert outcomes[1].exitcode == 3
    assert outcomes[0].error is not None and outcomes[0].error.startswith("DistributedError")


# ----------------------------------------------------------------------------- torchrun
@pytest.mark.slow
@pytest.mark.parametrize("stream", (None, 7), ids=("in-memory", "streamed"))
def test_torchrun_entry_point(tmp_path, stream):
    """``torchrun --nproc-per-node 2 -m ntkcore.distributed`` on .npy files read by rank
    (memory-mapped; with ``--stream`` left on disk and streamed 7 points at a time) matches
    ``adapt`` on the whole arrays in this process to 1e-10."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from ntkcore.distributed.__main__ import random_mlp

    g = torch.Generator().manual_seed(3)
    x = torch.randn(31, 3, generator=g, dtype=F64)
    y = torch.sin(x.sum(-1, keepdim=True))
    xt = torch.randn(11, 3, generator=g, dtype=F64)
    for name, t in (("x", x), ("y", y), ("xt", xt)):
        np.save(tmp_path / f"{name}.npy", t.numpy())
    out = tmp_path / "out"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "ntkcore.distributed",
           "--mlp", "3,8,8,1", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"),
           "--x-test", str(tmp_path / "xt.npy"), "--noise-variance", "1e-2",
           "--strategy", "function", "--tol", "1e-13", "--threads", "1", "--lml",
           "--timeout", "60", "--out", str(out)]
    if stream is not None:
        cmd += ["--stream", str(stream)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["stream"] == stream
    expected_cache = "streamed" if stream else None
    if expected_cache:
        assert result["diagnostics"]["product_cache"] == expected_cache
    assert [r["rows"] for r in result["ranks"]] == [[0, 16], [16, 31]]
    assert all(r["comm_bytes"] > 0 for r in result["ranks"])
    model = random_mlp([3, 8, 8, 1], 0, F64)
    ref = ntkcore.adapt(model, x, y, noise_variance=1e-2, strategy="function", tol=1e-13)
    pred = ref.predict(xt)
    mean = np.concatenate([np.load(out / f"mean.rank{r}.npy") for r in range(2)])
    var = np.concatenate([np.load(out / f"variance.rank{r}.npy") for r in range(2)])
    assert _close(torch.from_numpy(mean), pred.mean, RTOL)
    assert _close(torch.from_numpy(var), pred.variance, RTOL)
    assert abs(result["log_marginal_likelihood"] - ref.log_marginal_likelihood()) <= 1e-8


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("strategy", ("function", "parameter"))
def test_streamed_data_matches_dense_formulas(tmp_path, name, strategy):
    """``adapt(..., stream=5)`` with x in a memory-mapped .npy file (shards of 5 points
    moved to the device per product) against the explicit GP formulas, 1e-10 / 1e-9."""
    import warnings

    import numpy as np

    model, x, y, xt = _problem(name)
    np.save(tmp_path / "x.npy", x.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap
        x_disk = torch.from_numpy(np.load(tmp_path / "x.npy", mmap_mode="r"))
    post = ntkcore.adapt(model, x_disk, y, **_adapt_kwargs(strategy), stream=5)
    assert post.diagnostics["product_cache"] == "streamed"
    assert post.diagnostics["space"] == "parameter" and post.diagnostics["residual"] <= 1e-13
    ref = ntkcore.adapt(model, x, y, **_adapt_kwargs("dense"))
    dense = _dense_reference(model, x, y, xt)
    pred = post.predict(xt)
    assert _close(post.weights, ref.weights, RTOL)
    assert _close(pred.mean, dense["mean"], 1e-9)
    assert _close(pred.variance, dense["variance"], 1e-9)
    assert abs(post.log_marginal_likelihood() - dense["lml"]) <= RTOL * abs(dense["lml"])


def test_stream_rejects_bad_options():
    model, x, y, _ = _problem("A")
    with pytest.raises(ValueError, match="stream must be a positive int"):
        ntkcore.adapt(model, x, y, noise_variance=SIGMA2, stream=0)
    with pytest.raises(ValueError, match="fisher='fd'"):
        ntkcore.adapt(model, x, y, noise_variance=SIGMA2, stream=4, fisher="fd")


# ----------------------------------------------------------------------------- empty shards
# Ranks holding no training points (and some no test points): they join every collective
# with empty sums and learn o from the others. Train / test splits per world size; the
# 3-rank split of problem B leaves two ranks empty.
EMPTY_SPLITS = {
    2: {"A": ([0, 23], [0, 9]), "B": ([40, 0], [3, 4])},
    3: {"A": ([12, 0, 11], [5, 0, 4]), "B": ([0, 25, 15], [2, 0, 5])},
}
EMPTY_STRATEGIES = ("dense", "function", "parameter", "auto")


def _v(model: nn.Module) -> torch.Tensor:
    return torch.randn(3, sum(p.numel() for p in model.parameters()), dtype=F64,
                       generator=torch.Generator().manual_seed(5))


def _with_empty_shards(rank: int, world: int) -> dict:
    """Runs in each spawned rank: every strategy, both variance modes, the LML, streamed
    shards, fd Fisher products in the solve, block-CG variances, Fisher-vector products
    (exact, fd, fd with eps='auto') and hyperparameters, with empty ranks."""
    group = torch.distributed.group.WORLD
    out: dict = {}
    for name in PROBLEMS:
        model, x, y, xt = _problem(name)
        sizes, test_sizes = EMPTY_SPLITS[world][name]
        xs, ys, xts = _shard(x, sizes, rank), _shard(y, sizes, rank), _shard(xt, test_sizes, rank)
        for strategy in EMPTY_STRATEGIES:
            post = ntkcore.adapt(model, xs, ys, **_adapt_kwargs(strategy), process_group=group)
            pred = post.predict(xts)
            fast = post.predict(xts, variance="fast")
            out[name, strategy] = dict(
                weights=post.weights, mean=pred.mean, variance=pred.variance,
                fast=fast.variance, lml=post.log_marginal_likelihood(),
                n=post.diagnostics["n"], local_n=post.diagnostics["local_n"],
                strategy=post.diagnostics["strategy"], exact=post.diagnostics["exact_variance"],
            )
        post = ntkcore.adapt(model, xs, ys, **_adapt_kwargs("parameter"), stream=4,
                             process_group=group)
        out[name, "streamed"] = dict(weights=post.weights, mean=post.predict(xts).mean)
        post = ntkcore.adapt(model, xs, ys, noise_variance=SIGMA2, prior_variance=S2,
                             strategy="parameter", fisher="fd", tol=1e-12, max_iter=500,
                             process_group=group)
        out[name, "fd-solve"] = dict(weights=post.weights, residual=post.diagnostics["residual"])
        post = ntkcore.adapt(model, xs, ys, **_adapt_kwargs("parameter"), rank=4,
                             variance_rtol=1e-10, process_group=group)
        pred = post.predict(xts)
        out[name, "corrected"] = dict(mean=pred.mean, variance=pred.variance,
                                      method=pred.diagnostics["variance_method"],
                                      exact=post.diagnostics["exact_variance"])
        v = _v(model)
        fisher = {m: ntkcore.fisher_vp(model, xs, v, method=m, process_group=group)
                  for m in ("exact", "fd")}
        fisher["auto"] = ntkcore.fisher_vp(model, xs, v, method="fd", eps="auto",
                                           process_group=group)
        probe = v[int(v.norm(dim=-1).argmax())]
        fisher["eps"] = ntkcore.calibrate_eps(model, xs, probe=probe, process_group=group).eps
        fisher["at_eps"] = ntkcore.fisher_vp(model, xs, v, method="fd", eps=fisher["eps"],
                                             process_group=group)
        out[name, "fisher"] = fisher
        fit = ntkcore.fit_hyperparameters(model, xs, ys, process_group=group)
        out[name, "hyper"] = (fit.noise_variance, fit.prior_variance, fit.log_marginal_likelihood)
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def empty_runs(request):
    world = request.param
    outcomes = run_local(_with_empty_shards, world, timeout_s=300, collective_timeout_s=60)
    for o in outcomes:
        assert o.ok, f"rank {o.rank}: {o.error}\n{o.traceback}"
    return world, [o.value for o in outcomes]


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("strategy", EMPTY_STRATEGIES)
def test_empty_shards_match_single_process(empty_runs, name, strategy):
    """Weights to 1e-10 of single-process float64 ``adapt``, predictive means and
    variances (accurate and fast: the basis spans) to 1e-10 of it and 1e-9 of the dense GP
    formula, the LML to 1e-10 of the formula; the empty ranks predict (0, o)."""
    world, results = empty_runs
    model, x, y, xt = _problem(name)
    sizes, test_sizes = EMPTY_SPLITS[world][name]
    assert 0 in sizes
    ref = ntkcore.adapt(model, x, y, **_adapt_kwargs(strategy))
    ref_pred = ref.predict(xt)
    dense = _dense_reference(model, x, y, xt)
    o = y.shape[1]
    for rank, res in enumerate(results):
        got = res[name, strategy]
        assert got["n"] == x.shape[0] and got["local_n"] == sizes[rank]
        assert got["strategy"] == ref.diagnostics["strategy"]
        assert got["exact"]
        assert got["mean"].shape == got["variance"].shape == (test_sizes[rank], o)
        assert _close(got["weights"], ref.weights, RTOL), (rank, "weights")
        assert torch.equal(got["weights"], results[0][name, strategy]["weights"])
        assert abs(got["lml"] - dense["lml"]) <= RTOL * abs(dense["lml"]), rank
    for key in ("mean", "variance", "fast"):
        got = torch.cat([r[name, strategy][key] for r in results])
        want = ref_pred.mean if key == "mean" else ref_pred.variance
        assert _close(got, want, RTOL), key
        assert _close(got, dense["mean" if key == "mean" else "variance"], 1e-9), key


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_empty_shards_streamed_fd_solve_and_corrected_variances(empty_runs, name):
    """Streamed shards (1e-10), the weight-space solve on fd Fisher products refined on
    the exact residual (1e-8 of the exact weights: the refinement's tol is 1e-12), and
    block-CG variances of a rank-4 basis (1e-8 of the dense formula, variance_rtol 1e-10),
    the empty ranks taking part in every collective."""
    world, results = empty_runs
    model, x, y, xt = _problem(name)
    ref = ntkcore.adapt(model, x, y, **_adapt_kwargs("dense"))
    dense = _dense_reference(model, x, y, xt)
    for res in results:
        assert _close(res[name, "streamed"]["weights"], ref.weights, RTOL)
        assert res[name, "fd-solve"]["residual"] <= 1e-12
        assert _close(res[name, "fd-solve"]["weights"], ref.weights, 1e-8)
        assert not res[name, "corrected"]["exact"]
        assert res[name, "corrected"]["method"] == "block-cg"
    assert _close(torch.cat([r[name, "streamed"]["mean"] for r in results]), dense["mean"],
                  1e-9)
    assert _close(torch.cat([r[name, "corrected"]["mean"] for r in results]), dense["mean"],
                  1e-9)
    assert _close(torch.cat([r[name, "corrected"]["variance"] for r in results]),
                  dense["variance"], 1e-8)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_empty_shards_fisher_products_and_hyperparameters(empty_runs, name):
    """Fisher-vector products with empty ranks against one process: exact to 1e-10 of the
    concatenated data (and of the explicit JᵀJ v / n). ``eps="auto"`` chooses the step one
    process chooses on the concatenated data, exactly (==) and on every rank, and its
    products are those at that step bit for bit.

    fd products at a given step: 1e-12 of one process's products on the same shards
    (Σ_r (n_r/n) F_r v: the same forward passes, only the sum's order differs), 1e-7 of
    one process on the concatenated data. Not tighter: (f(θ + εv) − f(θ))/ε amplifies the
    batch-size-dependent rounding of the forward passes by ~1/ε — problem B split
    25 + 15 instead of 40 moves the products by 6.4e-10 at the default step and 6.1e-9 at
    the calibrated one (5.4e-9) on one process, without any process group."""
    world, results = empty_runs
    model, x, y, _ = _problem(name)
    sizes, _ = EMPTY_SPLITS[world][name]
    v = _v(model)
    lin = ntkcore.Linearization(model)
    j = lin.jacobian(x).reshape(-1, lin.num_params)
    probe = v[int(v.norm(dim=-1).argmax())]
    eps = ntkcore.calibrate_eps(model, x, probe=probe).eps
    auto = ntkcore.fisher_vp(model, x, v, method="fd", eps="auto")
    assert torch.equal(auto, ntkcore.fisher_vp(model, x, v, method="fd", eps=eps))

    def on_shards(step):  # one process, shard by shard: Σ_r (n_r / n) F_r v
        return sum(ntkcore.fisher_vp(model, _shard(x, sizes, r), v, method="fd", eps=step)
                   * (size / x.shape[0]) for r, size in enumerate(sizes) if size)

    default_shards, auto_shards = on_shards(None), on_shards(eps)
    for res in results:
        got = res[name, "fisher"]
        assert _close(got["exact"], ntkcore.fisher_vp(model, x, v, method="exact"), RTOL)
        assert _close(got["exact"], (v @ j.mT @ j) / x.shape[0], RTOL)
        assert _close(got["fd"], default_shards, 1e-12)
        assert _close(got["fd"], ntkcore.fisher_vp(model, x, v, method="fd"), 1e-7)
        assert got["eps"] == eps
        assert torch.equal(got["auto"], got["at_eps"])
        assert _close(got["auto"], auto_shards, 1e-12)
        assert _close(got["auto"], auto, 1e-7)
    _assert_hyperparameters_match(results, name, ntkcore.fit_hyperparameters(model, x, y))


def _all_ranks_empty(rank: int, world: int) -> list[str]:
    model, x, y, _ = _problem("A")
    group = torch.distributed.group.WORLD
    calls = {
        "adapt": lambda: ntkcore.adapt(model, x[:0], y[:0], noise_variance=SIGMA2,
                                       process_group=group),
        "streamed": lambda: ntkcore.adapt(model, x[:0], y[:0], noise_variance=SIGMA2,
                                          stream=4, process_group=group),
        "fisher_vp": lambda: ntkcore.fisher_vp(model, x[:0], _v(model), eps="auto",
                                               process_group=group),
        "hyper": lambda: ntkcore.fit_hyperparameters(model, x[:0], y[:0], process_group=group),
    }
    errors = []
    for what, call in calls.items():
        try:
            call()
        except Exception as err:  # noqa: BLE001 — the test checks the type
            errors.append(f"{what}: {type(err).__name__}: {err}")
        else:
            errors.append(f"{what}: no error")
    return errors


def test_all_ranks_empty_raises_on_every_rank():
    outcomes = run_local(_all_ranks_empty, 2, timeout_s=120, collective_timeout_s=20)
    for o in outcomes:
        assert o.ok, o.error
        assert len(o.value) == 4
        for line in o.value:
            assert "ValueError" in line and "every shard is empty" in line, line


def test_one_process_empty_x_is_an_error_and_empty_test_points_predict_nothing():
    model, x, y, xt = _problem("A")
    for stream in (None, 4):
        with pytest.raises(ValueError, match="at least one point"):
            ntkcore.adapt(model, x[:0], y[:0], noise_variance=SIGMA2, stream=stream)
    with pytest.raises(ValueError, match="at least one point"):
        ntkcore.fisher_vp(model, x[:0], _v(model))
    post = ntkcore.adapt(model, x, y, **_adapt_kwargs("dense"))
    pred = post.predict(xt[:0])
    assert pred.mean.shape == pred.variance.shape == (0, 2)
