"""Tests of ``ntkcore.experiments.tour``, the Learn page's helpers.

References are independent of the code under test: dense float64 Jacobians from
``torch.func.jacrev`` (``tests.models.dense_jacobian``), the network evaluated at explicitly
built parameter dictionaries, the Gaussian-process predictive written out with
``torch.linalg.solve``, and the Gauss–Newton Fisher (1/n) Σ JᵢᵀJᵢ formed densely. Tolerances
are stated per test: 1e-10 relative where both sides are float64, looser where the code
under test runs in float32 or by conjugate gradients.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call

from ntkcore import choose_strategy, fisher_vp
from ntkcore.experiments import tour
from ntkcore.fisher import default_eps
from tests.models import dense_jacobian, make_mlp

F64 = torch.float64


def _mlp(seed: int = 0, *, activation: str = "tanh", in_dim: int = 1, hidden: int = 8,
         out_dim: int = 1, depth: int = 2, dtype: torch.dtype = F64) -> nn.Sequential:
    """A small MLP named like the zoo's (``0.weight`` …); the last layer is the head."""
    torch.manual_seed(seed)
    model = make_mlp(in_dim, hidden, out_dim, depth=depth)
    if activation == "relu":
        model = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.Tanh) else m for m in model])
    return model.to(dtype).eval()


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(F64)


def _forward_at(model: nn.Module, vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(x; θ') with θ' given as one flat vector, by functional_call (no ntkcore)."""
    params, start = {}, 0
    for name, p in model.named_parameters():
        params[name] = vector[start:start + p.numel()].reshape(p.shape).to(p.dtype)
        start += p.numel()
    return functional_call(model, params, (x,)).reshape(x.shape[0], -1).to(F64)


# ------------------------------------------------------------------ linearization_path
class TestLinearizationPath:
    def test_network_and_linearization_match_explicit_references(self):
        model = _mlp(0, in_dim=2, out_dim=2)
        x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
        p = sum(q.numel() for q in model.parameters())
        d = torch.randn(p, generator=torch.Generator().manual_seed(2), dtype=F64)
        alphas = [-0.7, -0.1, 0.0, 0.2, 1.5]
        path = tour.linearization_path(model, x, direction=d, alphas=alphas)

        theta = _flat_params(model)
        jac = dense_jacobian(model, x).reshape(10, p)  # (n·o, p), sample-major
        f0 = _forward_at(model, theta, x).reshape(-1)
        assert len(path.curves) == len(alphas) * 10
        for alpha in alphas:
            rows = path.curves[path.curves["alpha"] == alpha].sort_values(["point", "output"])
            net_ref = _forward_at(model, theta + alpha * d, x).reshape(-1)
            lin_ref = f0 + alpha * (jac @ d)
            np.testing.assert_allclose(rows["network"], net_ref.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(rows["linearized"], lin_ref.numpy(), rtol=1e-10,
                                       atol=1e-12)
            err = path.errors.set_index("alpha").loc[alpha]
            change, miss = (net_ref - f0).norm().item(), (net_ref - lin_ref).norm().item()
            assert err["change_norm"] == pytest.approx(change, rel=1e-10, abs=1e-14)
            assert err["error_norm"] == pytest.approx(miss, rel=1e-8, abs=1e-14)
            if alpha == 0.0:
                assert math.isnan(err["relative_error"])
            else:
                assert err["relative_error"] == pytest.approx(miss / change, rel=1e-8)
        assert path.theta_norm == pytest.approx(theta.norm().item(), rel=1e-12)
        np.testing.assert_array_equal(path.direction, d.numpy())
        assert "x" not in path.curves.columns  # 2-D inputs have no scalar x column

    def test_relative_error_grows_linearly_for_small_steps(self):
        # The Taylor remainder is second order: error ∝ α², change ∝ α, ratio ∝ α.
        model = _mlp(3, hidden=16)
        x = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
        path = tour.linearization_path(model, x, alphas=[1e-3, 2e-3, 4e-3], seed=5)
        rel = path.errors.set_index("alpha")["relative_error"]
        assert rel.loc[2e-3] / rel.loc[1e-3] == pytest.approx(2.0, rel=0.02)
        assert rel.loc[4e-3] / rel.loc[2e-3] == pytest.approx(2.0, rel=0.02)
        assert path.curves["x"].nunique() == 9

    def test_last_layer_direction_is_exact_and_stays_on_the_head(self):
        model = _mlp(1, hidden=6)
        x = torch.linspace(-3, 3, 7, dtype=F64)[:, None]
        path = tour.linearization_path(model, x, alphas=np.linspace(-50, 50, 11), layers="4")
        assert path.direction_params == ("4.weight", "4.bias")
        head = slice(_flat_params(model).numel() - 7, None)  # 6 weights + 1 bias
        assert np.linalg.norm(path.direction[head]) == pytest.approx(1.0, rel=1e-12)
        assert np.all(path.direction[: head.start] == 0)
        # f is linear in the last layer's weights: the linearization is exact.
        assert np.nanmax(path.errors["relative_error"]) < 1e-12
        assert path.breaking_alpha(1e-6) is None

    def test_random_direction_is_unit_seeded_and_breaks(self):
        model = _mlp(2, hidden=16)
        x = torch.linspace(-2, 2, 5, dtype=F64)[:, None]
        alphas = np.linspace(-4, 4, 201)
        a = tour.linearization_path(model, x, alphas=alphas, seed=3)
        b = tour.linearization_path(model, x, alphas=alphas, seed=3)
        c = tour.linearization_path(model, x, alphas=alphas, seed=4)
        assert np.linalg.norm(a.direction) == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_array_equal(a.direction, b.direction)
        assert not np.allclose(a.direction, c.direction)
        alpha = a.breaking_alpha(0.1)
        assert alpha is not None
        rel = a.errors.assign(size=a.errors["alpha"].abs()).dropna()
        assert (rel["size"] < alpha).sum() >= 4  # the grid resolves the crossing
        assert rel.loc[rel["size"] < alpha, "relative_error"].max() < 0.1
        assert rel.loc[rel["size"] == alpha, "relative_error"].max() >= 0.1

    def test_float32_model_is_evaluated_in_float64(self):
        model32 = _mlp(0, dtype=torch.float32)
        model64 = _mlp(0, dtype=F64)
        x = torch.linspace(-1, 1, 4)[:, None]
        p32 = tour.linearization_path(model32, x, alphas=[1e-6, 0.5], seed=0)
        p64 = tour.linearization_path(model64, x.to(F64), alphas=[1e-6, 0.5], seed=0)
        # Same weights (float32 values): float64 evaluation gives the smooth remainder.
        np.testing.assert_allclose(p32.errors["relative_error"], p64.errors["relative_error"],
                                   rtol=1e-5)
        assert p32.errors["relative_error"].iloc[0] < 1e-4
        assert next(model32.parameters()).dtype == torch.float32  # model untouched

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"direction": torch.ones(3)}, "direction must have shape"),
            ({"direction": "zeros"}, "direction must be finite and non-zero"),
            ({"direction": "ones", "layers": "0"}, "either a direction or layers"),
            ({"layers": "nope"}, "selects no parameter"),
            ({"alphas": []}, "alphas must be a non-empty"),
            ({"alphas": [0.0, float("nan")]}, "alphas must be finite"),
            ({"seed": 1.5}, "seed must be an int"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        model = _mlp(0)
        p = sum(q.numel() for q in model.parameters())
        if kwargs.get("direction") == "zeros":
            kwargs["direction"] = torch.zeros(p)
        if kwargs.get("direction") == "ones":
            kwargs["direction"] = torch.ones(p)
        with pytest.raises(ValueError, match=match):
            tour.linearization_path(model, torch.zeros(3, 1, dtype=F64), **kwargs)

    def test_breaking_alpha_rejects_bad_threshold(self):
        path = tour.linearization_path(_mlp(0), torch.zeros(2, 1, dtype=F64), alphas=[1.0])
        for bad in (0.0, -1.0, float("inf"), "10%"):
            with pytest.raises(ValueError, match="threshold"):
                path.breaking_alpha(bad)


# ------------------------------------------------------------------------ kernel_matrix
class TestKernelMatrix:
    def test_kernel_is_dense_jacobian_gram_matrix(self):
        model = _mlp(4, in_dim=1, out_dim=2)
        x = torch.linspace(-2, 2, 6, dtype=F64)[:, None]
        jac = dense_jacobian(model, x).reshape(12, -1)
        kernel = tour.kernel_matrix(model, x)
        np.testing.assert_allclose(kernel.values, (jac @ jac.T).numpy(), rtol=1e-10,
                                   atol=1e-12)
        assert kernel.outputs == 2 and not kernel.normalized
        assert kernel.labels[:3] == ("-2 · out 0", "-2 · out 1", "-1.2 · out 0")
        np.testing.assert_allclose(kernel.inputs, x[:, 0].numpy())

    def test_normalized_kernel_is_cosine_similarity_of_jacobian_rows(self):
        model = _mlp(5, hidden=5)
        x = torch.linspace(-3, 3, 7, dtype=F64)[:, None]
        jac = dense_jacobian(model, x).reshape(7, -1).numpy()
        norms = np.linalg.norm(jac, axis=1)
        cosine = (jac @ jac.T) / np.outer(norms, norms)
        kernel = tour.kernel_matrix(model, x, normalize=True)
        np.testing.assert_allclose(kernel.values, cosine, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.diag(kernel.values), 1.0, rtol=1e-12)
        tidy = kernel.tidy()
        assert list(tidy.columns) == ["row", "column", "row_label", "column_label", "value"]
        assert len(tidy) == 49
        entry = tidy[(tidy["row"] == 2) & (tidy["column"] == 5)]["value"].item()
        assert entry == pytest.approx(cosine[2, 5], rel=1e-10)

    def test_float32_model_and_image_like_inputs(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).eval()
        x = torch.randn(3, 2, 2)
        reference = dense_jacobian(model.double(), x.double()).reshape(3, -1)
        model.float()
        kernel = tour.kernel_matrix(model, x)
        np.testing.assert_allclose(kernel.values, (reference @ reference.T).numpy(), rtol=1e-6)
        assert kernel.labels == ("#0", "#1", "#2") and kernel.inputs is None

    def test_bad_input(self):
        with pytest.raises(ValueError, match="normalize must be a bool"):
            tour.kernel_matrix(_mlp(0), torch.zeros(2, 1, dtype=F64), normalize="yes")
        with pytest.raises(ValueError, match="x contains non-finite"):
            tour.kernel_matrix(_mlp(0), torch.tensor([[float("nan")]], dtype=F64))


# -------------------------------------------------------------------- posterior_numbers
def _gp_reference(model, x, y, x_star, sigma2, s2, mean):
    """The GP predictive at x* with kernel s² J Jᵀ, written out (Rasmussen & Williams 2.25)."""
    n = x.shape[0]
    jac = dense_jacobian(model, x).reshape(n, -1)
    jac_s = dense_jacobian(model, x_star).reshape(1, -1)
    with torch.no_grad():
        m = model(x).reshape(n) if mean == "network" else torch.zeros(n, dtype=F64)
        m_s = model(x_star).reshape(1) if mean == "network" else torch.zeros(1, dtype=F64)
    gram = s2 * jac @ jac.T + sigma2 * torch.eye(n, dtype=F64)
    k_s = s2 * jac @ jac_s.T  # (n, 1)
    mu = m_s + k_s.T @ torch.linalg.solve(gram, y.reshape(n) - m)
    var = s2 * (jac_s @ jac_s.T) - k_s.T @ torch.linalg.solve(gram, k_s)
    return mu.reshape(-1).numpy(), var.reshape(-1).numpy(), jac, jac_s


class TestPosteriorNumbers:
    @pytest.mark.parametrize("mean", ["zero", "network"])
    @pytest.mark.parametrize("max_cholesky_params", [10_000, 0])
    def test_both_spaces_match_the_written_out_gp(self, mean, max_cholesky_params):
        model = _mlp(6, hidden=10)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(7, 1, generator=g, dtype=F64) * 4 - 2
        y = torch.sin(2 * x) + 0.1 * torch.randn(7, 1, generator=g, dtype=F64)
        x_star = torch.tensor([0.3], dtype=F64)
        sigma2, s2 = 0.05, 0.7
        nums = tour.posterior_numbers(
            model, x, y, x_star, noise_variance=sigma2, prior_variance=s2, mean=mean,
            max_cholesky_params=max_cholesky_params,
        )
        mu, var, jac, jac_s = _gp_reference(model, x, y, x_star[None], sigma2, s2, mean)
        rtol = 1e-9 if max_cholesky_params else 1e-7  # CG at tol 1e-10 in float64
        np.testing.assert_allclose(nums.function_space_mean, mu, rtol=1e-9)
        np.testing.assert_allclose(nums.function_space_variance, var, rtol=1e-9)
        np.testing.assert_allclose(nums.weight_space_mean, mu, rtol=rtol)
        np.testing.assert_allclose(nums.weight_space_variance, var, rtol=rtol)
        np.testing.assert_allclose(nums.engine_mean, mu, rtol=1e-7)
        np.testing.assert_allclose(nums.engine_variance, var, rtol=1e-6)
        assert nums.weight_space_method == ("cholesky" if max_cholesky_params else "cg")
        np.testing.assert_allclose(nums.kernel_block, (jac @ jac.T)[:3, :3].numpy(), rtol=1e-10)
        np.testing.assert_allclose(nums.cross_kernel, (jac @ jac_s.T)[:3, 0].numpy(),
                                   rtol=1e-10)
        with torch.no_grad():
            f_s = model(x_star[None]).reshape(-1).numpy()
            m = model(x).reshape(-1) if mean == "network" else torch.zeros(7, dtype=F64)
        np.testing.assert_allclose(nums.network_star, f_s, rtol=1e-12)
        np.testing.assert_allclose(nums.residual, (y.reshape(-1) - m)[:3].numpy(), rtol=1e-12)
        np.testing.assert_allclose(nums.jacobian_norm_star, [jac_s.norm().item()], rtol=1e-12)
        assert (nums.n, nums.outputs, nums.num_params) == (7, 1, jac.shape[1])
        table = nums.table()
        assert set(table.columns) == {"quantity", "output", "value"}
        assert table.set_index("quantity").loc["p", "value"] == jac.shape[1]

    def test_variance_among_the_data_is_far_below_the_prior_variance(self):
        # Eq. 3: s²‖J*‖² minus what the context explains; with small noise and x* among the
        # context inputs, most of the prior variance is explained.
        model = _mlp(7, hidden=12)
        x = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
        y = torch.zeros(5, dtype=F64)
        near = tour.posterior_numbers(model, x, y, torch.tensor([0.0], dtype=F64),
                                      noise_variance=1e-3, prior_variance=1.0)
        prior_near = near.prior_variance * near.jacobian_norm_star[0] ** 2
        assert near.function_space_variance[0] < 0.1 * prior_near  # among the data

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"noise_variance": 0.0}, "noise_variance must be a positive"),
            ({"noise_variance": 1.0, "prior_variance": -1.0}, "prior_variance must be"),
            ({"noise_variance": 1.0, "mean": "linear"}, "mean must be one of"),
            ({"noise_variance": 1.0, "x_star": torch.zeros(2, 1)}, "x_star must be one input"),
            ({"noise_variance": 1.0, "y": torch.zeros(3)}, r"y must have shape \(4,\)"),
            ({"noise_variance": 1.0, "max_cholesky_params": 1.5}, "max_cholesky_params"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        args = {"x": torch.zeros(4, 1, dtype=F64), "y": torch.zeros(4, dtype=F64),
                "x_star": torch.zeros(1, dtype=F64)}
        for key in list(args):
            if key in kwargs:
                args[key] = kwargs.pop(key)
        with pytest.raises(ValueError, match=match):
            tour.posterior_numbers(_mlp(0), args["x"], args["y"], args["x_star"], **kwargs)


# ------------------------------------------------------------------ space costs/timings
class TestSpaceCosts:
    def test_flop_counts_and_cheaper_space(self):
        costs = tour.space_costs([10, 300], [100], outputs=2, available_memory=2**40)
        assert len(costs) == 4
        row = costs.set_index(["n", "space"])
        # n·o = 20 < p = 100: function space, (20² · 100 + 20³ / 3) multiply–adds.
        assert row.loc[(10, "function"), "flops"] == pytest.approx(20**2 * 100 + 20**3 / 3)
        assert row.loc[(10, "parameter"), "flops"] == pytest.approx(20 * 100**2 + 100**3 / 3)
        assert row.loc[(10, "function"), "cheaper"] and not row.loc[(10, "parameter"), "cheaper"]
        # n·o = 600 > p: parameter space.
        assert row.loc[(300, "parameter"), "cheaper"]
        assert not row.loc[(300, "function"), "cheaper"]
        assert row.loc[(300, "parameter"), "system_bytes"] == 8 * 100**2
        assert set(costs["engine_strategy"]) == {"dense"}  # small, plenty of memory

    def test_engine_strategy_follows_the_smaller_dimension_when_dense_does_not_fit(self):
        costs = tour.space_costs([10, 10_000], [1_000], available_memory=1)
        picks = costs.drop_duplicates("n").set_index("n")["engine_strategy"]
        assert picks.loc[10] == "function" and picks.loc[10_000] == "parameter"
        assert picks.loc[10] == choose_strategy(10, 1_000, available_memory=1)[0]

    def test_counts_are_symmetric_in_n_and_p(self):
        a = tour.space_costs([50], [400]).set_index("space")["flops"]
        b = tour.space_costs([400], [50]).set_index("space")["flops"]
        assert a["function"] == pytest.approx(b["parameter"])
        assert a["parameter"] == pytest.approx(b["function"])

    @pytest.mark.parametrize(
        ("n", "p", "o", "match"),
        [([], [1], 1, "n_values"), ([0], [1], 1, "n_values"), ([1], [2.5], 1, "p_values"),
         ([1], [1], 0, "outputs"), (5, [1], 1, "n_values")],
    )
    def test_bad_input(self, n, p, o, match):
        with pytest.raises(ValueError, match=match):
            tour.space_costs(n, p, outputs=o)


class TestSpaceTimings:
    def test_rows_progress_and_agreement_of_the_two_solves(self):
        model = _mlp(8, hidden=6, dtype=torch.float32)
        x = torch.linspace(-2, 2, 40)[:, None]
        y = torch.sin(x)
        seen = []
        table = tour.space_timings(model, x, y, [4, 40], noise_variance=0.1,
                                   prior_variance=1.0, repeats=1,
                                   progress=lambda f, m: seen.append(f))
        assert seen == [0.5, 1.0]
        assert set(table["method"]) == {"jacobian", "function", "parameter", "engine"}
        assert len(table) == 8
        assert (table["seconds"] > 0).all()
        p = sum(q.numel() for q in model.parameters())
        sizes = table.set_index(["n", "method"])["system_size"]
        assert sizes.loc[(4, "function")] == 4 and sizes.loc[(40, "parameter")] == p
        assert (table["weights_difference"] < 1e-9).all()

    def test_bad_input(self):
        model = _mlp(0)
        x = torch.zeros(5, 1, dtype=F64)
        with pytest.raises(ValueError, match="the pool has 5 points"):
            tour.space_timings(model, x, torch.zeros(5, dtype=F64), [6], noise_variance=1.0)
        with pytest.raises(ValueError, match="noise_variance"):
            tour.space_timings(model, x, torch.zeros(5, dtype=F64), [2], noise_variance=0)
        with pytest.raises(ValueError, match="repeats"):
            tour.space_timings(model, x, torch.zeros(5, dtype=F64), [2], noise_variance=1.0,
                               repeats=0)


# -------------------------------------------------------------------- fd_fisher_error
def _dense_fisher(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """F = (1/n) Σᵢ JᵢᵀJᵢ for a unit-variance Gaussian likelihood, float64."""
    ref = model.double() if next(model.parameters()).dtype != F64 else model
    jac = dense_jacobian(ref, x.to(F64))  # (n, o, p)
    return torch.einsum("nop,noq->pq", jac, jac) / x.shape[0]


class TestFdFisherError:
    def test_errors_against_a_dense_fisher(self):
        model = _mlp(9, activation="relu", hidden=16, dtype=torch.float32)
        x = torch.linspace(-2, 2, 24)[:, None]
        eps = [1e-4, 1e-2]
        table = tour.fd_fisher_error(model, x, eps, schemes=("forward", "central"),
                                     num_vectors=3, seed=4)
        # The directions are documented: seeded standard Gaussians, float64, shape (k, p).
        v = torch.randn(3, sum(q.numel() for q in model.parameters()),
                        generator=torch.Generator().manual_seed(4), dtype=F64)
        fisher = _dense_fisher(_mlp(9, activation="relu", hidden=16, dtype=F64), x)
        exact = v @ fisher  # F symmetric
        for row in table.itertuples():
            approx = fisher_vp(model, x, v.float(), method="fd", eps=row.eps,
                               central=row.scheme == "central", kinks=row.kinks).to(F64)
            errors = ((approx - exact).norm(dim=1) / exact.norm(dim=1)).numpy()
            assert row.relative_error == pytest.approx(np.median(errors), rel=1e-5)
            assert row.relative_error_min == pytest.approx(errors.min(), rel=1e-5)
            assert row.relative_error_max == pytest.approx(errors.max(), rel=1e-5)
        assert len(table) == 2 * 2 * 3  # kinks × schemes × (2 grid steps + automatic)
        auto = table[table["step"] == "automatic"].set_index(["kinks", "scheme"])["eps"]
        theta = _flat_params(model).norm().item()
        assert auto.loc[("live", "forward")] == pytest.approx(
            default_eps(theta, torch.float32, kinks="live")
        )

    def test_error_is_a_u_in_eps(self):
        model = _mlp(1, hidden=32, dtype=torch.float32)
        x = torch.linspace(-2, 2, 32)[:, None]
        table = tour.fd_fisher_error(model, x, [1e-7, 1e-3, 1.0], kinks=("frozen",))
        err = table[table["step"] == "grid"].set_index("eps")["relative_error"]
        assert err.loc[1e-3] < 0.1 * err.loc[1e-7]  # rounding on the left
        assert err.loc[1e-3] < 0.1 * err.loc[1.0]  # truncation on the right

    def test_kinks_matter_for_relu_not_for_tanh(self):
        x = torch.linspace(-3, 3, 64)[:, None]
        eps = [0.1, 0.3]
        for seed in (0, 1):
            relu = _mlp(seed, activation="relu", hidden=64, dtype=torch.float32)
            table = tour.fd_fisher_error(relu, x, eps, schemes=("central",))
            err = table[table["step"] == "grid"].set_index(["eps", "kinks"])["relative_error"]
            for e in eps:
                assert err.loc[(e, "live")] > 10 * err.loc[(e, "frozen")]
        tanh = _mlp(0, hidden=64, dtype=torch.float32)
        table = tour.fd_fisher_error(tanh, x, eps, schemes=("central",))
        err = table.set_index(["step", "eps", "kinks"])["relative_error"]
        for e in eps:
            assert err.loc[("grid", e, "live")] == err.loc[("grid", e, "frozen")]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"eps_values": [0.0]}, "eps_values must be positive"),
            ({"eps_values": []}, "eps_values must be a non-empty"),
            ({"kinks": ("frozen", "frozen")}, "kinks must be distinct"),
            ({"kinks": ("melted",)}, "kinks must be distinct values from"),
            ({"schemes": ("backward",)}, "schemes"),
            ({"likelihood": "poisson"}, "likelihood must be one of"),
            ({"num_vectors": 0}, "num_vectors"),
            ({"seed": None}, "seed must be an int"),
        ],
    )
    def test_bad_input(self, kwargs, match):
        args = {"eps_values": [1e-3], **kwargs}
        with pytest.raises(ValueError, match=match):
            tour.fd_fisher_error(_mlp(0, dtype=torch.float32), torch.zeros(3, 1),
                                 args.pop("eps_values"), **args)


# --------------------------------------------------------------------- initial_network
def test_initial_network_is_the_presets_architecture_before_training():
    from ntkcore import zoo

    model = tour.initial_network("toy-gap-mlp")
    again = tour.initial_network("toy-gap-mlp")
    preset = zoo.preset("toy-gap-mlp")
    reference = zoo.create("mlp", in_features=1, out_features=1, width=512, depth=1,
                           activation="relu")
    assert [(n, p.shape) for n, p in model.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)  # deterministic: seeded by the preset's seed
    assert preset.seed == 0 and not model.training
    with pytest.raises(ValueError, match="unknown preset"):
        tour.initial_network("no-such-preset")


def test_outputs_are_tidy_frames():
    model = _mlp(0)
    x = torch.linspace(-1, 1, 3, dtype=F64)[:, None]
    path = tour.linearization_path(model, x, alphas=[0.5])
    assert list(path.curves.columns) == ["alpha", "point", "x", "output", "network",
                                         "linearized", "difference"]
    assert isinstance(path.errors, pd.DataFrame)
    assert list(path.errors.columns) == ["alpha", "change_norm", "error_norm", "relative_error"]
