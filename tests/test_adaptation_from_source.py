"""Fast adaptation on data of your own: ``methods.train_source`` and
``fast_adaptation_from_source`` (what the Adaptation-curves page runs on an uploaded CSV file),
and ABLR's noise floor (noise-free source data used to break its Cholesky factor).

The table's numbers are checked against independent references written out here: the NTK row
against the explicit GP of Eq. 3 on the dense float64 Jacobian from ``torch.func.jacrev``, the
no-retraining row against the network's own predictions.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from ntkcore import data
from ntkcore.experiments import methods
from ntkcore.experiments.fast_adaptation import (
    COLUMNS,
    fast_adaptation,
    fast_adaptation_from_source,
    preset_sizes,
)
from ntkcore.experiments.methods import cache

#: A small MLP keeps training to a second (the page's is 2 × 64 for 1,000 epochs).
MLP = {"width": 16, "depth": 2, "activation": "tanh", "epochs": 300, "lr": 1e-2}


def _csv(noise: float = 0.05, seed: int = 0) -> str:
    """x, y, domain: the source is sin(x) on [−3, 0], the target sin(x) + 0.5 on [0, 3]."""
    g = np.random.default_rng(seed)
    lines = ["x,y,domain"]
    for x in np.linspace(-3, 0, 40):
        lines.append(f"{x:.4f},{np.sin(x) + noise * g.standard_normal():.5f},source")
    for x in np.linspace(0, 3, 30):
        lines.append(f"{x:.4f},{np.sin(x) + 0.5 + noise * g.standard_normal():.5f},target")
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private model cache (these networks are not the app's) and one thread."""
    monkeypatch.setenv("NTKCORE_CACHE", str(tmp_path / "zoo"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def targets() -> dict[int, data.Task]:
    text = _csv()
    return {t: data.from_csv(text, domain_column="domain", seed=t) for t in (0, 1)}


@pytest.fixture
def source(targets) -> methods.Source:
    return methods.train_source(targets[0], "mlp", name="csv-test", **MLP)


# --------------------------------------------------------------------------- train_source
def test_train_source_trains_on_the_source_rows_and_records_the_budget(targets, source):
    assert isinstance(source, methods.Source)
    assert (source.name, source.arch, source.seed, source.from_cache) == ("csv-test", "mlp", 0,
                                                                          False)  # fmt: skip
    assert source.training["epochs"] == 300 and source.training["lr"] == 1e-2
    x, y = targets[0].source
    with torch.no_grad():
        fitted = ((source.model(x) - y) ** 2).mean().item()
    assert fitted < 0.2 * y.var().item()  # learned the source function
    again = methods.train_source(targets[1], "mlp", name="csv-test", **MLP)  # other seed
    assert again.from_cache  # the source split does not depend on the target seed
    for a, b in zip(source.model.parameters(), again.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_train_source_refuses_tasks_it_cannot_train_on():
    target_only = data.from_csv("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(10)))
    with pytest.raises(ValueError, match="has no source split"):
        methods.train_source(target_only, "mlp", name="x", **MLP)
    with pytest.raises(ValueError, match="must be an ntkcore.data.Task"):
        methods.train_source("sinusoids", "mlp")
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        methods.train_source(data.from_csv(_csv(), domain_column="domain"), "mlp", name="")
    labels = "x,label,domain\n" + "".join(
        f"{i},{'ab'[i % 2]},{'source' if i < 10 else 'target'}\n" for i in range(20)
    )
    classes = data.from_csv(labels, domain_column="domain", kind="classification")
    with pytest.raises(ValueError, match="for regression"):
        methods.train_source(classes, "mlp", name="x")


# --------------------------------------------------------------------------- the table
def _explicit_gp(model, x, y, x_test, sigma2: float, s2: float):
    """Eq. 3 with the dense float64 Jacobian: predictive mean and variance of y."""
    net = copy.deepcopy(model).double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def jac(inputs):
        rows = jacrev(lambda p: functional_call(net, p, (inputs,)))(params)
        return torch.cat([r.reshape(inputs.shape[0], -1) for r in rows.values()], dim=1)

    j, j_test = jac(x.double()), jac(x_test.double())  # shape: (n, p), (m, p)
    gram = s2 * j @ j.T + sigma2 * torch.eye(x.shape[0], dtype=torch.float64)
    cross = s2 * j_test @ j.T
    mean = cross @ torch.linalg.solve(gram, y.double())
    var = s2 * (j_test * j_test).sum(1) - (cross * torch.linalg.solve(gram, cross.T).T).sum(1)
    return mean[:, 0], var + sigma2


def test_table_matches_the_explicit_gp_and_the_network(targets, source):
    table = fast_adaptation_from_source(source, targets, methods=("ntk", "no-retrain"),
                                        context_sizes=(3, 8))  # fmt: skip
    assert list(table.columns) == list(COLUMNS) and len(table) == 2 * 2 * 2
    assert set(table["dataset"]) == {targets[0].meta.name} and set(table["source"]) == {"csv-test"}
    for row in table.itertuples():
        task = targets[row.task]
        x, y = task.context(row.n_context)
        x_test, y_test = task.test
        if row.method == "ntk":
            mean, var = _explicit_gp(source.model, x, y, x_test, row.noise_variance,
                                     row.prior_variance)  # fmt: skip
        else:
            with torch.no_grad():
                mean = source.model(x_test)[:, 0].double()
                residual = ((source.model(x) - y) ** 2).mean().item()
            var = torch.full_like(mean, max(residual, methods.VARIANCE_FLOOR))
        target = y_test[:, 0].double()
        expected_mse = ((mean - target) ** 2).mean().item()
        expected_nll = (0.5 * ((target - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
                        ).mean().item()  # fmt: skip
        assert row.mse == pytest.approx(expected_mse, rel=1e-3, abs=1e-7), row
        assert row.nll == pytest.approx(expected_nll, rel=1e-3, abs=1e-4), row
    # the NTK's (σ², s²) come from the source marginal likelihood and are the same everywhere
    ntk = table[table["method"] == "ntk"]
    assert ntk["noise_variance"].nunique() == 1 and (ntk["hyper"] == "fixed").all()


def test_a_builtin_dataset_gives_the_same_table_through_either_entry_point():
    sizes, tasks = (5, 10), (0, 1)
    direct = fast_adaptation(dataset="sinusoids", methods=("ntk", "no-retrain"),
                             context_sizes=sizes, tasks=tasks)  # fmt: skip
    source = cache.source("sinusoids")
    own = fast_adaptation_from_source(
        source, [data.load("sinusoids", seed=t) for t in tasks],
        methods=("ntk", "no-retrain"), context_sizes=sizes,
    )  # fmt: skip
    keys = ["method", "n_context", "task"]
    direct, own = direct.sort_values(keys), own.sort_values(keys)
    assert direct[keys].to_numpy().tolist() == own[keys].to_numpy().tolist()
    np.testing.assert_allclose(own[["mse", "nll", "coverage95"]].to_numpy(),
                               direct[["mse", "nll", "coverage95"]].to_numpy(), rtol=1e-6)


def test_progress_names_method_task_and_size_and_is_monotone(targets, source):
    seen: list[tuple[float, str]] = []
    fast_adaptation_from_source(source, targets, methods=("no-retrain",), context_sizes=(4,),
                                progress=lambda f, m: seen.append((f, m)))  # fmt: skip
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = [m for _, m in seen]
    assert "no-retrain: task 1, 4 context points" in messages
    assert "no-retrain: source-side fit" in messages


def test_refused_inputs(targets, source):
    call = fast_adaptation_from_source
    with pytest.raises(ValueError, match="source must be a methods.Source"):
        call(source.model, targets, context_sizes=(3,))
    with pytest.raises(ValueError, match="exceed the target pool"):
        call(source, targets, methods=("no-retrain",), context_sizes=(3, 500))
    with pytest.raises(ValueError, match="at least one task"):
        call(source, {}, methods=("no-retrain",), context_sizes=(3,))
    with pytest.raises(ValueError, match="unknown method"):
        call(source, targets, methods=("gp",), context_sizes=(3,))
    with pytest.raises(ValueError, match="at least one size"):
        call(source, targets, methods=("ntk",), context_sizes=())
    with pytest.raises(ValueError, match="method_options for methods not run"):
        call(source, targets, methods=("ntk",), context_sizes=(3,),
             method_options={"ablr": {"steps": 1}})  # fmt: skip
    two_inputs = data.from_csv("a,b,y,domain\n" + "".join(
        f"{i},{i % 3},{i * 0.1},{'source' if i < 10 else 'target'}\n" for i in range(20)
    ), domain_column="domain")  # fmt: skip
    with pytest.raises(ValueError, match=r"has inputs \(2,\).*takes \(1,\)"):
        call(source, {0: two_inputs}, methods=("ntk",), context_sizes=(3,))
    with pytest.raises(ValueError, match="target keys must be ints"):
        call(source, {"a": targets[0]}, methods=("ntk",), context_sizes=(3,))


def test_preset_sizes_are_what_fast_adaptation_uses():
    assert preset_sizes("spatial", "small") == ((10, 50, 200), (0,))
    assert preset_sizes("faces-rotation", "full")[0] == (10, 25, 50, 100, 200)
    with pytest.raises(ValueError, match="unknown dataset"):
        preset_sizes("mnist")
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_sizes("sinusoids", "large")


# --------------------------------------------------------------------------- ABLR floor
def test_ablr_fits_noise_free_source_data_at_its_noise_floor():
    """y = f(x) exactly on the source: the marginal likelihood grows with β without bound;
    the floor keeps 1/β >= 1e-6 and the fit finite (it used to fail in Cholesky)."""
    clean = data.from_csv(_csv(noise=0.0), domain_column="domain")
    src = methods.train_source(clean, "mlp", name="csv-clean", **MLP)
    ablr = methods.create("ablr", src, steps=50)
    assert ablr.hyperparameters["noise_variance"] >= 1e-6 * (1 - 1e-9)
    x, y = clean.context(10)
    mean, var = ablr.clone().fit(x, y).predict(clean.test[0])
    assert torch.isfinite(mean).all() and (var >= 1e-6 * (1 - 1e-6)).all()
    with pytest.raises(ValueError, match="noise_floor must be a positive number"):
        methods.create("ablr", src, noise_floor=0.0)


def test_ablr_noise_floor_does_not_move_a_noisy_fit(source):
    """With noise well above the floor, the floored and (nearly) unfloored fits agree."""
    floored = methods.create("ablr", source, steps=0)
    free = methods.create("ablr", source, steps=0, noise_floor=1e-12)
    assert floored.hyperparameters["noise_variance"] > 1e-4
    np.testing.assert_allclose(floored.precisions, free.precisions, rtol=1e-3)
