"""Solvers of :mod:`ntkcore.solvers` against dense linear algebra.

Every check builds its matrices explicitly in the test (SPD matrices with a prescribed
spectrum from a random orthogonal basis) and compares with ``torch.linalg`` — solve,
eigh, logdet — or with the defining formula written here, never with the solver itself:

* ``conjugate_gradients``: solution accuracy, the reported per-column residuals against
  ``b − A x`` recomputed here, the iteration count against the products actually made,
  honest non-convergence (``ConvergenceWarning``, ``converged=False``), bad arguments;
* ``NystromApproximation``: exact at full rank, near-optimal at low rank on a decaying
  spectrum (nuclear-norm error between the Eckart–Young optimum and the bound of Tropp et
  al., 2017), PSD from below, non-negative eigenvalues;
* ``NystromPreconditioner``: ``solve``/``inv_sqrt``/``sqrt``/``logdet`` against the dense
  P of Frangella, Tropp & Udell (2023, Eq. 5.3), their condition-number bound, and the
  iteration savings on an ill-conditioned system;
* ``logdet_slq``: exact on diagonal matrices, within a few standard errors of
  ``torch.logdet`` otherwise, including the preconditioned form used by ``adapt``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from ntkcore.solvers import (
    ConvergenceWarning,
    NystromApproximation,
    NystromPreconditioner,
    SolveInfo,
    conjugate_gradients,
    logdet_slq,
)
from ntkcore.solvers.nystrom import largest_eigenvalue

F64 = torch.float64
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_intraop_thread")


# --------------------------------------------------------------------------- helpers
def orthogonal(d: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


def psd_with_spectrum(eigenvalues: Tensor, seed: int = 0) -> Tensor:
    """Q diag(λ) Qᵀ for a random orthogonal Q (exactly symmetric)."""
    q = orthogonal(eigenvalues.numel(), seed)
    a = (q * eigenvalues) @ q.mT
    return 0.5 * (a + a.mT)


def geometric_spectrum(d: int, ratio: float, top: float = 1.0) -> Tensor:
    return top * ratio ** torch.arange(d, dtype=F64)


def rhs(d: int, k: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, k, generator=g, dtype=F64)


def true_residuals(a: Tensor, x: Tensor, b: Tensor) -> Tensor:
    """||b − A x|| / ||b|| per column, computed here."""
    return torch.linalg.vector_norm(b - a @ x, dim=0) / torch.linalg.vector_norm(b, dim=0)


class Counted:
    """A matmul closure that counts its calls."""

    def __init__(self, a: Tensor) -> None:
        self.a = a
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.a @ v


def nystrom(g: Tensor, rank: int, seed: int = 0) -> NystromApproximation:
    return NystromApproximation(
        lambda v: g @ v,
        g.shape[0],
        rank,
        dtype=g.dtype,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
    )


def dense_preconditioner(approx: NystromApproximation, shift: float) -> Tensor:
    """P = U (Λ + μI) Uᵀ / (λ_r + μ) + (I − U Uᵀ), Frangella et al. (2023), Eq. 5.3."""
    u, lam = approx.eigenvectors, approx.eigenvalues
    eye = torch.eye(u.shape[0], dtype=F64)
    return (u * (lam + shift)) @ u.mT / (lam[-1] + shift) + (eye - u @ u.mT)


def matrix_power_sym(a: Tensor, power: float) -> Tensor:
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals**power) @ evecs.mT


def rel(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


# --------------------------------------------------------------------------- CG
@pytest.mark.parametrize(("tol", "k"), [(1e-4, 4), (1e-8, 1), (1e-11, 4)])
def test_cg_solves_spd_system_to_tolerance(tol: float, k: int) -> None:
    d = 80
    lam = torch.logspace(0, 3, d, dtype=F64)  # condition number 1e3
    a = psd_with_spectrum(lam, seed=2)
    b = rhs(d, k)
    x, info = conjugate_gradients(lambda v: a @ v, b, tol=tol, max_iter=2000)
    assert isinstance(info, SolveInfo)
    assert x.shape == (d, k) and x.dtype == F64
    assert info.converged and info.tolerance == tol
    res = true_residuals(a, x, b)
    assert (res <= tol).all(), res
    # forward error is bounded by cond(A) · residual
    exact = torch.linalg.solve(a, b)
    err = torch.linalg.vector_norm(x - exact, dim=0) / torch.linalg.vector_norm(exact, dim=0)
    assert (err <= 1e3 * tol * 1.01).all(), err


def test_cg_reported_residuals_are_true_residuals() -> None:
    d = 60
    a = psd_with_spectrum(torch.logspace(-2, 2, d, dtype=F64), seed=3)
    b = rhs(d, 3)
    b[:, 2] *= 1e4  # columns on different scales: the residual must be relative per column
    for max_iter, tol in [(1000, 1e-9), (30, 1e-9)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, info = conjugate_gradients(lambda v: a @ v, b, tol=tol, max_iter=max_iter)
        expected = true_residuals(a, x, b)
        assert info.residuals.shape == (3,)
        torch.testing.assert_close(info.residuals, expected, rtol=1e-8, atol=1e-15)
        assert info.max_residual == pytest.approx(float(expected.max()), rel=1e-8)
        assert info.converged == bool((expected <= tol).all())


def test_cg_iteration_count_is_the_number_of_products() -> None:
    d = 60
    a = psd_with_spectrum(torch.logspace(0, 4, d, dtype=F64), seed=4)
    b = rhs(d, 2)
    matmul = Counted(a)
    _, info = conjugate_gradients(matmul, b, tol=1e-10, max_iter=1000)
    # one product forms the initial residual, one re-measures the final residual
    assert info.iterations == matmul.calls - 2
    assert 1 <= info.iterations <= 1000


def test_cg_residual_check_uses_the_exact_operator() -> None:
    # CG driven by an approximate operator (as with finite-difference Fisher products)
    # must report the residual of the exact system when given it, and refine the solution
    # on that residual until it meets the tolerance.
    d = 50
    a = psd_with_spectrum(torch.logspace(0, 2, d, dtype=F64), seed=19)
    noise = psd_with_spectrum(
        torch.rand(d, generator=torch.Generator().manual_seed(0), dtype=F64), seed=20
    )
    approx = a + 1e-4 * noise  # symmetric perturbation of relative size ~1e-6
    b = rhs(d, 2)
    # CG on the approximate operator alone stalls at its accuracy, far above 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        x_plain, _ = conjugate_gradients(Counted(approx), b, tol=1e-12)
    assert (true_residuals(a, x_plain, b) > 1e-9).all()
    inner, exact = Counted(approx), Counted(a)
    x, info = conjugate_gradients(inner, b, tol=1e-12, residual_matmul=exact)
    assert 1 <= info.refinements <= 4
    assert exact.calls == 1 + info.refinements  # one exact product per residual
    assert info.iterations == inner.calls - 1 - info.refinements
    expected = true_residuals(a, x, b)
    torch.testing.assert_close(info.residuals, expected, rtol=1e-8, atol=0.0)
    assert info.converged and (expected <= 1e-12).all()


def test_cg_refinement_stops_when_the_products_are_too_inexact() -> None:
    # An "approximation" with 50% error in a direction: refinement cannot converge; the
    # solver keeps the best solution, stops early and says so.
    d = 30
    a = psd_with_spectrum(torch.logspace(0, 3, d, dtype=F64), seed=21)
    q = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2),
                                    dtype=F64))[0]
    bad = a + 0.5 * torch.linalg.matrix_norm(a, ord=2) * (q[:, :1] @ q[:, :1].mT) - 0.9 * a
    b = rhs(d, 1)
    with pytest.warns(ConvergenceWarning, match="did not reach"):
        x, info = conjugate_gradients(Counted(bad), b, tol=1e-10, residual_matmul=Counted(a))
    assert not info.converged
    assert info.refinements <= 4
    torch.testing.assert_close(info.residuals, true_residuals(a, x, b), rtol=1e-8, atol=0.0)


def test_cg_zero_column_is_solved_exactly() -> None:
    d = 40
    a = psd_with_spectrum(torch.linspace(1, 10, d, dtype=F64), seed=5)
    b = rhs(d, 3)
    b[:, 1] = 0.0
    x, info = conjugate_gradients(lambda v: a @ v, b, tol=1e-10)
    assert torch.isfinite(x).all()
    assert torch.equal(x[:, 1], torch.zeros(d, dtype=F64))
    assert info.converged
    assert float(info.residuals[1]) == 0.0


@pytest.mark.parametrize("max_iter", [1, 3, 25])
def test_cg_non_convergence_warns_and_reports(max_iter: int) -> None:
    d = 150
    a = psd_with_spectrum(torch.logspace(-4, 2, d, dtype=F64), seed=6)  # cond 1e6
    b = rhs(d, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, info = conjugate_gradients(lambda v: a @ v, b, tol=1e-10, max_iter=max_iter)
    # exactly one warning, ours, with the true residual (linear_cg's own is silenced)
    assert [w.category for w in caught] == [ConvergenceWarning], [str(w.message) for w in caught]
    assert "did not reach relative residual" in str(caught[0].message)
    assert not info.converged
    assert info.iterations <= max_iter
    assert info.max_residual > 1e-10
    torch.testing.assert_close(info.residuals, true_residuals(a, x, b), rtol=1e-8, atol=0.0)


def test_cg_converged_solve_does_not_warn() -> None:
    a = psd_with_spectrum(torch.linspace(1, 5, 30, dtype=F64), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _, info = conjugate_gradients(lambda v: a @ v, rhs(30, 2), tol=1e-10)
    assert info.converged


@pytest.mark.parametrize(
    ("b", "kwargs", "match"),
    [
        (torch.ones(5, dtype=F64), {}, "rhs must have shape"),
        (torch.ones(5, 2, 1, dtype=F64), {}, "rhs must have shape"),
        (torch.ones(5, 1, dtype=F64), {"tol": 0.0}, "tol"),
        (torch.ones(5, 1, dtype=F64), {"tol": -1e-3}, "tol"),
        (torch.ones(5, 1, dtype=F64), {"tol": float("nan")}, "tol"),
        (torch.ones(5, 1, dtype=F64), {"max_iter": 0}, "max_iter"),
        (torch.ones(5, 1, dtype=F64), {"max_iter": -3}, "max_iter"),
    ],
)
def test_cg_bad_arguments_raise(b: Tensor, kwargs: dict, match: str) -> None:
    eye = torch.eye(5, dtype=F64)
    with pytest.raises(ValueError, match=match):
        conjugate_gradients(lambda v: eye @ v, b, **kwargs)


# --------------------------------------------------------------------------- Nyström
def test_nystrom_full_rank_reproduces_the_matrix() -> None:
    d = 50
    lam = torch.logspace(-6, 3, d, dtype=F64)
    g = psd_with_spectrum(lam, seed=8)
    approx = nystrom(g, d)
    u, ev = approx.eigenvectors, approx.eigenvalues
    assert approx.rank == d and u.shape == (d, d) and ev.shape == (d,)
    torch.testing.assert_close(u.mT @ u, torch.eye(d, dtype=F64), rtol=0, atol=1e-12)
    assert rel((u * ev) @ u.mT, g) <= 1e-10
    expected = torch.linalg.eigvalsh(g).flip(0)
    torch.testing.assert_close(ev, expected, rtol=0, atol=1e-10 * float(lam.max()))


def test_nystrom_rank_is_capped_at_the_dimension() -> None:
    g = psd_with_spectrum(torch.linspace(1, 2, 12, dtype=F64), seed=9)
    approx = nystrom(g, 40)
    assert approx.rank == 12
    assert approx.eigenvectors.shape == (12, 12)
    assert rel((approx.eigenvectors * approx.eigenvalues) @ approx.eigenvectors.mT, g) <= 1e-10


@pytest.mark.parametrize("rank", [10, 20, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_nystrom_low_rank_error_is_near_the_spectral_tail(rank: int, seed: int) -> None:
    d = 120
    lam = geometric_spectrum(d, 0.7, top=50.0)
    g = psd_with_spectrum(lam, seed=10)
    approx = nystrom(g, rank, seed=seed)
    u, ev = approx.eigenvectors, approx.eigenvalues
    assert u.shape == (d, rank) and ev.shape == (rank,)
    assert (ev >= 0).all()
    assert (ev[:-1] >= ev[1:]).all(), "eigenvalues must be sorted in descending order"
    err = g - (u * ev) @ u.mT
    err_evals = torch.linalg.eigvalsh(err)
    # Nyström approximates from below: 0 ⪯ G − Ĝ, so λ_i(Ĝ) <= λ_i(G) (interlacing)
    assert float(err_evals.min()) >= -1e-12 * float(lam.max())
    assert (ev <= lam[:rank] * (1 + 1e-10)).all()
    nuclear = float(torch.trace(err))
    # Eckart–Young: no rank-r approximation beats the tail of the spectrum ...
    assert nuclear >= float(lam[rank:].sum()) * (1 - 1e-8)
    assert float(err_evals.max()) >= float(lam[rank]) * (1 - 1e-8)
    # ... and the randomized Nyström error is within the bound of Tropp et al. (2017,
    # Thm. 4.1): E||G − Ĝ||_* <= (1 + k / (r − k − 1)) Σ_{j>k} λ_j, k = r/2.
    k = rank // 2
    assert nuclear <= (1 + k / (rank - k - 1)) * float(lam[k:].sum())
    # Weyl with 0 ⪯ G − Ĝ: 0 <= λ_i(G) − λ_i(Ĝ) <= ||G − Ĝ||₂, and the top one is found
    gap = lam[:rank] - ev
    assert float(gap.max()) <= float(err_evals.max()) * (1 + 1e-8)
    assert float(ev[0]) == pytest.approx(float(lam[0]), rel=5e-2)


def test_nystrom_on_rank_deficient_matrix_is_exact_and_non_negative() -> None:
    d, true_rank = 60, 7
    g_factor = torch.randn(d, true_rank, generator=torch.Generator().manual_seed(11), dtype=F64)
    g = g_factor @ g_factor.mT  # PSD, singular (like J Jᵀ with n·o > p)
    approx = nystrom(g, 20)
    u, ev = approx.eigenvectors, approx.eigenvalues
    assert (ev >= 0).all()
    assert rel((u * ev) @ u.mT, g) <= 1e-9
    expected = torch.linalg.eigvalsh(g).flip(0)[:20].clamp_min(0)
    torch.testing.assert_close(ev, expected, rtol=0, atol=1e-9 * float(expected.max()))


def test_nystrom_float32_products_stay_accurate() -> None:
    d = 40
    g = psd_with_spectrum(geometric_spectrum(d, 0.5, top=10.0), seed=12)
    g32 = g.float()
    calls = []

    def matmul(v: Tensor) -> Tensor:
        calls.append(v.dtype)
        return g32 @ v

    approx = NystromApproximation(
        matmul, d, 12, dtype=torch.float32, device=CPU, generator=torch.Generator().manual_seed(0)
    )
    assert calls == [torch.float32]  # one batched sketch, in the model's dtype
    assert approx.eigenvectors.dtype == F64  # algebra on the factors runs in float64
    assert (approx.eigenvalues >= 0).all()
    recon = (approx.eigenvectors * approx.eigenvalues) @ approx.eigenvectors.mT
    # as accurate as the same sketch in float64, measured against the dense matrix
    ref = nystrom(g, 12, seed=0)
    err64 = float(torch.linalg.norm((ref.eigenvectors * ref.eigenvalues) @ ref.eigenvectors.mT - g))
    assert err64 <= 10 * float(torch.linalg.norm(geometric_spectrum(d, 0.5, top=10.0)[12:]))
    err32 = float(torch.linalg.norm(recon - g))
    assert err32 <= 1.05 * err64 + 1e-5 * float(torch.linalg.norm(g))
    assert float(approx.eigenvalues[0]) == pytest.approx(float(ref.eigenvalues[0]), rel=1e-5)


def test_nystrom_bad_rank_raises() -> None:
    with pytest.raises(ValueError, match="rank"):
        NystromApproximation(lambda v: v, 5, 0, dtype=F64, device=CPU)


# --------------------------------------------------------------------------- preconditioner
@pytest.fixture(scope="module")
def preconditioned() -> tuple[Tensor, NystromApproximation, NystromPreconditioner, float]:
    d, shift = 90, 1e-3
    g = psd_with_spectrum(geometric_spectrum(d, 0.8, top=100.0), seed=13)
    approx = nystrom(g, 25, seed=3)
    return g, approx, NystromPreconditioner(approx, shift), shift


def test_preconditioner_operations_match_dense_definition(preconditioned) -> None:
    g, approx, precond, shift = preconditioned
    d = g.shape[0]
    p = dense_preconditioner(approx, shift)
    v = rhs(d, 5, seed=14)
    torch.testing.assert_close(precond.solve(v), torch.linalg.solve(p, v), rtol=1e-10, atol=0)
    torch.testing.assert_close(
        precond.inv_sqrt(v), matrix_power_sym(p, -0.5) @ v, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        precond.sqrt(v), matrix_power_sym(p, 0.5) @ v, rtol=1e-10, atol=1e-12
    )
    assert precond.logdet() == pytest.approx(float(torch.logdet(p)), rel=1e-10)
    # P coincides with G + μI on the sketched subspace, up to the scale 1/(λ_r + μ)
    u = approx.eigenvectors
    torch.testing.assert_close(
        p @ u, (u * (approx.eigenvalues + shift)) / (approx.eigenvalues[-1] + shift)
    )


def test_preconditioner_meets_the_condition_number_bound(preconditioned) -> None:
    g, approx, precond, shift = preconditioned
    d = g.shape[0]
    a = g + shift * torch.eye(d, dtype=F64)
    inv_sqrt = matrix_power_sym(dense_preconditioner(approx, shift), -0.5)
    evals = torch.linalg.eigvalsh(inv_sqrt @ a @ inv_sqrt)
    kappa = float(evals.max() / evals.min())
    # Frangella, Tropp & Udell (2023), Prop. 5.3: κ <= (λ̂_r + μ + ||G − Ĝ||) / μ
    err = torch.linalg.matrix_norm(
        g - (approx.eigenvectors * approx.eigenvalues) @ approx.eigenvectors.mT, ord=2
    )
    bound = float((approx.eigenvalues[-1] + shift + err) / shift)
    assert kappa <= bound * (1 + 1e-8)
    assert kappa < float(torch.linalg.cond(a)) / 20


def test_preconditioned_cg_needs_far_fewer_iterations() -> None:
    d, shift = 200, 1e-4
    lam = geometric_spectrum(d, 0.8, top=1e3)  # trained-NTK-like: few huge eigenvalues
    g = psd_with_spectrum(lam, seed=15)
    a = g + shift * torch.eye(d, dtype=F64)
    assert float(torch.linalg.cond(a)) > 1e6
    b = rhs(d, 2, seed=16)
    plain = Counted(a)
    x_plain, info_plain = conjugate_gradients(plain, b, tol=1e-8, max_iter=5000)
    precond = NystromPreconditioner(nystrom(g, 60), shift)
    pcg = Counted(a)
    x_pcg, info_pcg = conjugate_gradients(pcg, b, preconditioner=precond.solve, tol=1e-8)
    assert info_plain.converged and info_pcg.converged
    assert (true_residuals(a, x_pcg, b) <= 1e-8).all()
    assert (true_residuals(a, x_plain, b) <= 1e-8).all()
    assert pcg.calls * 5 <= plain.calls, (pcg.calls, plain.calls)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan")])
def test_preconditioner_bad_shift_raises(shift: float) -> None:
    g = psd_with_spectrum(torch.linspace(1, 2, 6, dtype=F64))
    with pytest.raises(ValueError, match="shift"):
        NystromPreconditioner(nystrom(g, 3), shift)


# --------------------------------------------------------------------------- SLQ
def slq(matmul: Callable[[Tensor], Tensor], d: int, seed: int, **kw) -> tuple[float, float]:
    return logdet_slq(
        matmul, d, dtype=F64, device=CPU, generator=torch.Generator().manual_seed(seed), **kw
    )


def test_slq_is_exact_on_diagonal_matrices() -> None:
    # Rademacher probes z have z_i² = 1, so zᵀ log(D) z = tr log D exactly, and Lanczos
    # with at least as many steps as distinct eigenvalues integrates exactly.
    d = 30
    diag = torch.logspace(-2, 3, d, dtype=F64)
    est, se = slq(lambda v: diag.unsqueeze(-1) * v, d, seed=0, num_probes=4, num_iter=d)
    assert est == pytest.approx(float(diag.log().sum()), rel=1e-8)
    assert se <= 1e-8 * abs(est)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slq_is_within_a_few_standard_errors(seed: int) -> None:
    d = 150
    lam = 1.0 + 50.0 * geometric_spectrum(d, 0.9)
    a = psd_with_spectrum(lam, seed=17)
    est, se = slq(lambda v: a @ v, d, seed=seed, num_probes=16, num_iter=40)
    exact = float(torch.logdet(a))
    assert se > 0
    assert abs(est - exact) <= 4 * se, (est, exact, se)
    assert se <= 0.1 * abs(exact)


def test_slq_single_probe_has_no_standard_error() -> None:
    a = psd_with_spectrum(torch.linspace(1, 3, 20, dtype=F64))
    est, se = slq(lambda v: a @ v, 20, seed=0, num_probes=1)
    assert math.isfinite(est) and math.isnan(se)


def test_preconditioned_slq_estimates_the_log_determinant() -> None:
    # log|G + μI| = log|P| + log|P^{-1/2} (G + μI) P^{-1/2}|, as adapt computes it
    d, shift = 200, 1e-3
    g = psd_with_spectrum(1e4 * torch.arange(1, d + 1, dtype=F64) ** -2.0, seed=18)
    a = g + shift * torch.eye(d, dtype=F64)
    precond = NystromPreconditioner(nystrom(g, 30), shift)
    exact = float(torch.logdet(a))
    for seed in range(3):
        est, se = slq(lambda v: precond.inv_sqrt(a @ precond.inv_sqrt(v)), d, seed=seed)
        total = precond.logdet() + est
        assert abs(total - exact) <= 4 * se, (seed, total, exact, se)


# --------------------------------------------------------------------------- adaptive rank
def gap_spectrum(d: int, big: int, seed: int = 0) -> Tensor:
    """``big`` eigenvalues from 1e4 down to 1 (geometric), then a tail at 1e-6."""
    lam = torch.full((d,), 1e-6, dtype=F64)
    lam[:big] = torch.logspace(4, 0, big, dtype=F64)
    return lam


class Columns(Counted):
    """Counts the columns (products) passed to the matmul as well as the calls."""

    def __init__(self, a: Tensor) -> None:
        super().__init__(a)
        self.columns: list[int] = []

    def __call__(self, v: Tensor) -> Tensor:
        self.columns.append(v.shape[1])
        return super().__call__(v)


def adaptive(
    g: Tensor, threshold: float, seed: int = 0, matmul: Callable[[Tensor], Tensor] | None = None,
    **kw,
) -> NystromApproximation:
    return NystromApproximation.adaptive(
        matmul or (lambda v: g @ v),
        g.shape[0],
        threshold=threshold,
        dtype=F64,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize(("big", "expected"), [(20, 32), (50, 64), (100, 128)])
def test_adaptive_rank_stops_at_the_first_doubling_past_the_shift(big: int, expected: int) -> None:
    d, shift = 300, 1e-2
    g = psd_with_spectrum(gap_spectrum(d, big), seed=20)
    lam = torch.linalg.eigvalsh(g).flip(0)  # the independent reference
    assert int((lam > shift).sum()) == big
    # the first rank of the sequence 32, 64, 128, ... whose r-th eigenvalue is below μ
    first = next(r for r in (32, 64, 128, 256) if float(lam[r - 1]) <= shift)
    assert first == expected
    prod = Columns(g)
    approx = adaptive(g, shift, matmul=prod, max_rank=512)
    assert approx.rank == expected
    assert approx.stop_reason == "threshold"
    assert approx.smallest <= shift
    assert [rd.rank for rd in approx.rounds] == [r for r in (32, 64, 128) if r <= expected]
    assert all(rd.smallest_eigenvalue > shift for rd in approx.rounds[:-1])
    # products are reused: each round only sketches its new columns
    assert sum(prod.columns) == expected
    assert prod.columns == [32] + [r // 2 for r in (64, 128) if r <= expected]
    # the captured top eigenvalues are the true ones
    torch.testing.assert_close(approx.eigenvalues[:big], lam[:big], rtol=1e-4, atol=0)
    u = approx.eigenvectors
    torch.testing.assert_close(u.mT @ u, torch.eye(expected, dtype=F64), rtol=0, atol=1e-10)


def test_adaptive_first_round_is_the_fixed_rank_sketch() -> None:
    g = psd_with_spectrum(gap_spectrum(100, 40), seed=21)
    approx = adaptive(g, 1e-2, seed=5, max_rank=32)
    fixed = nystrom(g, 32, seed=5)
    assert approx.stop_reason == "max_rank" and approx.rank == 32
    torch.testing.assert_close(approx.eigenvalues, fixed.eigenvalues, rtol=1e-12, atol=0)


def test_adaptive_rank_is_capped_by_max_rank_and_the_dimension() -> None:
    # slowly decaying spectrum: λ̂_r stays above the threshold
    g = psd_with_spectrum(torch.linspace(1.0, 2.0, 150, dtype=F64), seed=22)
    capped = adaptive(g, 1e-3, max_rank=100)
    assert capped.stop_reason == "max_rank"
    assert [rd.rank for rd in capped.rounds] == [32, 64, 100]
    assert capped.smallest > 1e-3
    full = adaptive(g, 1e-3, max_rank=1000)
    assert full.stop_reason == "dimension"
    assert [rd.rank for rd in full.rounds] == [32, 64, 128, 150]
    # at r = d the approximation is exact
    recon = (full.eigenvectors * full.eigenvalues) @ full.eigenvectors.mT
    assert rel(recon, g) <= 1e-10
    small = adaptive(g[:20, :20].contiguous(), 1e-3)
    assert small.rank == 20 and small.stop_reason == "dimension"


def test_adaptive_matches_a_fixed_sketch_of_the_same_rank_in_quality() -> None:
    d, rank = 200, 64
    lam = geometric_spectrum(d, 0.9, top=10.0)
    g = psd_with_spectrum(lam, seed=23)
    approx = adaptive(g, 1e-12, max_rank=rank)  # two rounds: 32 + 32 columns
    assert approx.rank == rank and len(approx.rounds) == 2
    u, ev = approx.eigenvectors, approx.eigenvalues
    err = torch.linalg.eigvalsh(g - (u * ev) @ u.mT)
    assert float(err.min()) >= -1e-12 * float(lam.max())  # still a lower bound on G
    k = rank // 2  # Tropp et al. (2017, Thm. 4.1) bound, as for the one-shot sketch
    assert float(err.sum()) <= (1 + k / (rank - k - 1)) * float(lam[k:].sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": 1.0, "initial_rank": 0}, "initial_rank"),
        ({"threshold": 1.0, "max_rank": 0}, "max_rank"),
        ({"threshold": 1.0, "max_rank": 2.5}, "max_rank"),
    ],
)
def test_adaptive_bad_options_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NystromApproximation.adaptive(lambda v: v, 10, dtype=F64, device=CPU, **kwargs)


@pytest.mark.parametrize(("ratio", "rtol"), [(0.5, 1e-8), (0.95, 0.05)])
def test_largest_eigenvalue_by_block_power_iteration(ratio: float, rtol: float) -> None:
    # convergence ∝ (λ₅/λ₁)^steps for a block of 4: fast with a gap, slow without
    d = 120
    lam = geometric_spectrum(d, ratio, top=3.0)
    g = psd_with_spectrum(lam, seed=24)
    prod = Columns(g)
    est = largest_eigenvalue(
        prod, d, num_vectors=4, num_iter=6, dtype=F64, device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    assert prod.columns == [4] * 6
    assert est <= float(lam[0]) * (1 + 1e-12)  # Ritz values bound from below
    assert est >= float(lam[0]) * (1 - rtol)
    with pytest.raises(ValueError, match="num_iter"):
        largest_eigenvalue(prod, d, num_iter=0, dtype=F64, device=CPU)


def test_from_eigenpairs_builds_the_preconditioner_of_a_given_factor() -> None:
    # adapt in weight space: eigenpairs of W Wᵀ from the SVD of W, W = Jᵀ U
    d, shift = 40, 1e-2
    w = torch.randn(d, 6, generator=torch.Generator().manual_seed(25), dtype=F64)
    v, s, _ = torch.linalg.svd(w, full_matrices=False)
    approx = NystromApproximation.from_eigenpairs(v, s.square(), dtype=F64)
    assert approx.rank == 6 and approx.dim == d
    u, ev = approx.eigenvectors, approx.eigenvalues
    torch.testing.assert_close((u * ev) @ u.mT, w @ w.mT)
    precond = NystromPreconditioner(approx, shift)
    x = rhs(d, 3, seed=26)
    torch.testing.assert_close(
        precond.solve(x), torch.linalg.solve(dense_preconditioner(approx, shift), x)
    )
    with pytest.raises(ValueError, match="descending"):
        NystromApproximation.from_eigenpairs(v, s.square().flip(0), dtype=F64)
    with pytest.raises(ValueError, match="do not match"):
        NystromApproximation.from_eigenpairs(v, s[:3], dtype=F64)
