"""How similar are two networks' Jacobians? Kernel alignment of finite NTKs (Section 4).

Maddox et al. (2021, Section 4, "Transferability of Jacobian Features", Figure 5) compare
networks A and B of one architecture through their Jacobians on a shared probe set X:

    sim(A, B) = tr(AᵀB BᵀA) / (‖AAᵀ‖_F ‖BBᵀ‖_F).

Which matrices the formula pairs depends on how a Jacobian is laid out, so both readings
are offered (J(X) has N = n·o rows, sample-major, and p columns, as everywhere in ntkcore):

``"kernel"`` (A = J_A(X), N × p)
    tr(AᵀBBᵀA) = ‖AᵀB‖²_F = ⟨K_A, K_B⟩_F with the finite NTKs K = J Jᵀ (N × N), so
    sim = ⟨K_A, K_B⟩_F / (‖K_A‖_F ‖K_B‖_F): the cosine of the two NTK Gram matrices (the
    uncentred kernel alignment of Cristianini et al., 2002). It compares the functions'
    tangent kernels on X and does not depend on how the parameters are indexed.
``"parameter"`` (A = J_A(X)ᵀ, p × N: the paper's own convention J ∈ R^{p×on}, Section 3)
    tr(AᵀBBᵀA) = ‖J_A J_Bᵀ‖²_F = ⟨J_AᵀJ_A, J_BᵀJ_B⟩_F, so sim is the cosine of the two
    p × p Gauss–Newton matrices J(X)ᵀJ(X) (equivalently: the squared Frobenius norm of the
    cross-NTK J_A J_Bᵀ over ‖K_A‖_F ‖K_B‖_F). It pairs parameter i of A with parameter i
    of B, so it needs identical parameter layouts and is not invariant to permuting hidden
    units: two networks started from different initializations are compared in unrelated
    coordinates.

Both lie in [0, 1] (inner products of positive semi-definite matrices, Cauchy–Schwarz),
are symmetric, equal 1 for identical networks and are invariant to scaling either
network's output. Neither forms a p × p matrix: the N × N blocks of K_A, K_B and
J_A J_Bᵀ are built from chunks of explicit per-sample Jacobians
(:meth:`Linearization.jacobian`) and reduced block by block in float64, so memory is
bounded by a byte budget whatever N is (the paper's 5,000 MNIST probes × 10 outputs make
50,000² Gram matrices, 20 GB each in float64, never held).

:func:`ntk_eigenvalues` gives the spectrum of one NTK Gram matrix (Appendix E.1):
eigenvalues of the smaller of J Jᵀ and JᵀJ when it fits, else the top k by implicitly
restarted Lanczos (ARPACK through :func:`scipy.sparse.linalg.eigsh`) on matrix-free
products J Jᵀ u.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ntkcore.linearization import Linearization, as_linearization, chunk_slices
from ntkcore.memory import cache_budget

__all__ = [
    "MEASURES",
    "JacobianComparison",
    "compare_jacobians",
    "jacobian_similarity",
    "ntk_eigenvalues",
    "ntk_gram",
]

MEASURES = ("kernel", "parameter")
_F64 = torch.float64
# Bytes the blockwise sweeps may hold on the CPU (Jacobian panels and Gram blocks); the
# machine this was written on has 23 GB shared by several processes. Accelerators use
# :func:`ntkcore.memory.cache_budget` (a quarter of the free memory).
_CPU_SWEEP_BYTES = 2**30
# Largest Gram matrix (min(n·o, p)) whose eigenvalues are computed densely (eigvalsh of
# 8000² in float64: ~1 min on one CPU core; beyond it the top k come from Lanczos).
_MAX_DENSE_EIGEN = 8000

Model = nn.Module | Linearization


def _budget(device: torch.device, max_bytes: int | None) -> int:
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        return max_bytes
    if device.type == "cpu":
        return min(_CPU_SWEEP_BYTES, cache_budget(device))
    return cache_budget(device)


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _gram_dtype(lin: Linearization, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return lin.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32, torch.float64 or None, got {dtype!r}")
    return dtype


def _points_per_block(
    n: int, o: int, p: int, itemsize: int, panels: int, grams: int, budget: int
) -> int:
    """Largest number of points c per block whose working set fits ``budget`` bytes:
    ``panels`` Jacobian panels of c·o × p and ``grams`` float64 Gram blocks of (c·o)²
    (plus one in the product dtype)."""

    def cost(c: int) -> int:
        rows = c * o
        return panels * rows * p * itemsize + rows * rows * (8 * grams + itemsize)

    low, high = 1, n
    while low < high:  # largest c in [1, n] with cost(c) <= budget (cost is increasing)
        mid = (low + high + 1) // 2
        if cost(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class JacobianComparison:
    r"""Inner products of m networks' Jacobian Gram matrices on one probe set.

    Made by :func:`compare_jacobians`. Indices follow the order of the networks passed.

    Attributes
    ----------
    kernel_inner : Tensor
        ⟨K_a, K_b⟩_F = tr(K_a K_b) for every pair, shape (m, m), float64; the diagonal is
        ‖K_a‖²_F.
    cross_sq : Tensor
        ‖J_a J_bᵀ‖²_F = ⟨J_aᵀJ_a, J_bᵀJ_b⟩_F for the pairs asked for (and the diagonal,
        which equals ‖K_a‖²_F), NaN elsewhere; shape (m, m), float64.
    grams : tuple of Tensor or None
        Each network's N × N NTK Gram matrix (float64, from products in the chosen dtype)
        when the resident strategy ran or ``keep_grams=True``; else None.
    num_points, num_outputs, num_params : int
        n, o and p.
    points_per_block : int
        Points per block (``num_points`` for one block).
    strategy : str
        ``"resident"`` or ``"blockwise"`` (see :func:`compare_jacobians`).
    """

    kernel_inner: Tensor
    cross_sq: Tensor
    grams: tuple[Tensor, ...] | None
    num_points: int
    num_outputs: int
    num_params: int
    points_per_block: int
    strategy: str

    @property
    def kernel_norms(self) -> Tensor:
        """‖K_a‖_F, shape (m,)."""
        return self.kernel_inner.diagonal().clamp_min(0.0).sqrt()

    def similarity(self, measure: str = "kernel") -> Tensor:
        """The (m, m) matrix of sim(a, b) for ``measure`` ``"kernel"`` or ``"parameter"``
        (see the module docstring); NaN for pairs not computed."""
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        norms = self.kernel_norms
        numerator = self.kernel_inner if measure == "kernel" else self.cross_sq
        return numerator / (norms[:, None] * norms[None, :])


def _linearizations(models: Sequence[Model]) -> list[Linearization]:
    if isinstance(models, (nn.Module, Linearization)) or len(models) < 1:
        raise ValueError("models must be a non-empty sequence of networks or Linearizations")
    lins = [as_linearization(m) for m in models]
    first = lins[0]
    for i, lin in enumerate(lins[1:], start=1):
        if lin.layout.shapes != first.layout.shapes:
            raise ValueError(
                f"network {i} has parameter shapes {[tuple(s) for s in lin.layout.shapes]} "
                f"but network 0 has {[tuple(s) for s in first.layout.shapes]}: Jacobian "
                "similarity compares networks of one architecture"
            )
        if lin.dtype != first.dtype or lin.device != first.device:
            raise ValueError(
                f"network {i} is {lin.dtype} on {lin.device} but network 0 is {first.dtype} "
                f"on {first.device}; move them to one dtype and device"
            )
    return lins


def compare_jacobians(
    models: Sequence[Model],
    x: Tensor,
    *,
    pairs: Sequence[tuple[int, int]] | str = "all",
    chunk_size: int | None = None,
    max_bytes: int | None = None,
    dtype: torch.dtype | None = None,
    keep_grams: bool = False,
    progress: Callable[[float], None] | None = None,
) -> JacobianComparison:
    r"""⟨K_a, K_b⟩_F for all pairs and ‖J_a J_bᵀ‖²_F for chosen pairs of m networks.

    Two strategies, chosen from the memory budget (recorded in ``strategy``):

    ``"resident"`` — when the m Gram matrices (m·N²·8 bytes, N = n·o) and a few full
    Jacobians (N × p) fit: every network's Jacobian is computed once, its Gram matrix
    K_a = J_a J_aᵀ kept, and all ⟨K_a, K_b⟩_F come from one float64 product of the
    flattened Gram matrices. Cross terms ‖J_a J_bᵀ‖²_F are formed pair by pair, the pairs
    grouped by connected component and the Jacobians kept in a least-recently-used cache
    (each Jacobian is computed once when a component's Jacobians fit, e.g. the MNIST1,
    MNIST2 and Fashion networks of one seed). The usual case for many networks on a few
    hundred probes.

    ``"blockwise"`` — otherwise (or when ``chunk_size`` is given): the probes are split into
    blocks of c points. For every block pair (I, J ≥ I) each network's block
    K_a[I, J] = J_a(X_I) J_a(X_J)ᵀ (c·o × c·o) is formed and the flattened blocks' inner
    products are accumulated in float64 (off-diagonal blocks twice, by symmetry); for the
    ``pairs``, ‖J_a(X_I) J_b(X_J)ᵀ‖²_F and, for J ≠ I, ‖J_a(X_J) J_b(X_I)ᵀ‖²_F, the two
    blocks of the non-symmetric cross-NTK. Block I's Jacobian panels are kept for all
    networks while the blocks J stream, so memory is bounded whatever N is (Jacobians of
    later blocks are recomputed once per earlier block).

    Parameters
    ----------
    models : sequence of nn.Module or Linearization
        Networks with identical parameter shapes, dtype and device (each linearized at its
        current weights, in eval mode).
    x : Tensor
        Shared probe inputs, shape (n, *input_shape).
    pairs : "all", "none" or sequence of (int, int)
        Pairs (a, b) whose cross term ‖J_a J_bᵀ‖²_F (the ``"parameter"`` measure) is
        computed; each costs about one more Gram-sized product. The ``"kernel"`` measure
        is always computed for all pairs (it needs only each network's own Gram matrix).
    chunk_size : int, optional
        Points per block: forces the blockwise strategy with c = ``chunk_size``.
    max_bytes : int, optional
        Working-set budget in bytes; default 1 GiB on the CPU, a quarter of the free
        memory on accelerators.
    dtype : torch.dtype, optional
        Dtype of the Gram products (default: the networks' dtype). Accumulation is float64
        either way; float32 products make the similarities accurate to ~1e-6.
    keep_grams : bool
        Also assemble every network's full N × N Gram matrix (float64; m·N²·8 bytes) when
        the blockwise strategy runs (the resident strategy always returns them).
    progress : callable, optional
        Called with the fraction of the work done.

    Returns
    -------
    JacobianComparison
    """
    lins = _linearizations(models)
    _check_chunk_size(chunk_size)
    m, lead = len(lins), lins[0]
    x = lead.prepare_inputs(x)
    n, o, p = x.shape[0], lead.output_dim(x), lead.num_params
    for i, lin in enumerate(lins[1:], start=1):
        if lin.output_dim(x) != o:
            raise ValueError(
                f"network {i} has {lin.output_dim(x)} outputs but network 0 has {o}"
            )
    gram_dtype = _gram_dtype(lead, dtype)
    cross = _cross_pairs(pairs, m)
    itemsize = torch.empty((), dtype=gram_dtype).element_size()
    budget = _budget(lead.device, max_bytes)
    cached = None if chunk_size is not None else _resident_plan(m, n * o, p, itemsize, budget)
    work = _Work(lins, x, n, o, p, gram_dtype, cross)
    if cached is not None:
        kernel_inner, cross_sq, grams = _resident(work, max(cached, 1), progress)
        c, strategy = n, "resident"
    else:
        if chunk_size is not None:
            c = min(chunk_size, n)
        else:
            panels = 2 * m if cross else m + 1
            c = _points_per_block(n, o, p, itemsize, panels, m, budget)
        kernel_inner, cross_sq, grams = _blockwise(work, c, keep_grams, progress)
        strategy = "blockwise"
    kernel_inner = 0.5 * (kernel_inner + kernel_inner.mT)
    cross_sq.diagonal().copy_(kernel_inner.diagonal())
    return JacobianComparison(
        kernel_inner=kernel_inner,
        cross_sq=cross_sq,
        grams=None if grams is None else tuple(grams),
        num_points=n,
        num_outputs=o,
        num_params=p,
        points_per_block=c,
        strategy=strategy,
    )


def _cross_pairs(pairs: Sequence[tuple[int, int]] | str, m: int) -> list[tuple[int, int]]:
    if isinstance(pairs, str):
        if pairs not in ("all", "none"):
            raise ValueError(f"pairs must be 'all', 'none' or a list of (a, b), got {pairs!r}")
        return [(a, b) for a in range(m) for b in range(a + 1, m)] if pairs == "all" else []
    cross = []
    for pair in pairs:
        a, b = (int(i) for i in pair)
        if not (0 <= a < m and 0 <= b < m):
            raise ValueError(f"pair {tuple(pair)} indexes outside the {m} networks")
        if a != b:
            cross.append((min(a, b), max(a, b)))
    return sorted(set(cross))


def _resident_plan(m: int, rows: int, p: int, itemsize: int, budget: int) -> int | None:
    """How many full Jacobians (rows × p) the resident strategy may cache next to the m
    float64 Gram matrices (rows²) and one Gram product; None when fewer than two fit."""
    grams = m * rows * rows * 8 + rows * rows * itemsize
    per_jacobian = rows * p * itemsize
    count = (budget - grams) // per_jacobian if budget > grams else 0
    return int(min(count, m)) if count >= min(2, m) else None


@dataclass
class _Work:
    lins: list[Linearization]
    x: Tensor
    n: int
    o: int
    p: int
    dtype: torch.dtype
    cross: list[tuple[int, int]]

    def jacobian(self, a: int, rows: slice) -> Tensor:
        return self.lins[a].jacobian(self.x[rows]).reshape(-1, self.p).to(self.dtype)

    def zeros(self) -> tuple[Tensor, Tensor]:
        m, device = len(self.lins), self.x.device
        cross_sq = torch.full((m, m), math.nan, dtype=_F64, device=device)
        for a, b in self.cross:
            cross_sq[a, b] = cross_sq[b, a] = 0.0
        return torch.zeros(m, m, dtype=_F64, device=device), cross_sq


def _components(m: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the pair graph on m nodes, each sorted, by smallest node."""
    parent = list(range(m))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(m):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _resident(
    work: _Work, cached: int, progress: Callable[[float], None] | None
) -> tuple[Tensor, Tensor, list[Tensor]]:
    m, rows, everything = len(work.lins), work.n * work.o, slice(0, work.n)
    grams = torch.empty(m, rows, rows, dtype=_F64, device=work.x.device)
    kernel_inner, cross_sq = work.zeros()
    jacobians: OrderedDict[int, Tensor] = OrderedDict()

    def jacobian(a: int) -> Tensor:  # least-recently-used cache of full Jacobians
        if a in jacobians:
            jacobians.move_to_end(a)
            return jacobians[a]
        while len(jacobians) >= cached:
            jacobians.popitem(last=False)
        jacobians[a] = work.jacobian(a, everything)  # shape: (N, p)
        return jacobians[a]

    partners: dict[int, list[int]] = {}
    for a, b in work.cross:
        partners.setdefault(b, []).append(a)
    total, done = m + len(work.cross), 0
    for component in _components(m, work.cross):
        for b in component:
            jb = jacobian(b)
            grams[b] = jb @ jb.mT
            done += 1
            for a in partners.get(b, []):  # a < b: visited earlier in this component
                term = _sq_norm(jacobian(a) @ jacobian(b).mT)
                cross_sq[a, b] = cross_sq[b, a] = term
                done += 1
            if progress is not None:
                progress(done / total)
    flat = grams.reshape(m, -1)
    kernel_inner += flat @ flat.mT
    return kernel_inner, cross_sq, list(grams)


def _blockwise(
    work: _Work, c: int, keep_grams: bool, progress: Callable[[float], None] | None
) -> tuple[Tensor, Tensor, list[Tensor] | None]:
    lins, o, device = work.lins, work.o, work.x.device
    m = len(lins)
    blocks = chunk_slices(work.n, c)
    kernel_inner, cross_sq = work.zeros()
    grams = (
        [torch.empty(work.n * o, work.n * o, dtype=_F64, device=device) for _ in lins]
        if keep_grams
        else None
    )
    crossing = sorted({i for pair in work.cross for i in pair})
    total, done = len(blocks) * (len(blocks) + 1) // 2, 0
    for bi, rows in enumerate(blocks):
        row_panels = [work.jacobian(a, rows) for a in range(m)]  # each: (c·o, p)
        r = slice(rows.start * o, rows.stop * o)
        for cols in blocks[bi:]:
            diagonal = cols == rows
            col_panels: dict[int, Tensor] = {}
            if not diagonal:
                col_panels = {a: work.jacobian(a, cols) for a in crossing}
            size = (rows.stop - rows.start) * o * (cols.stop - cols.start) * o
            flat = torch.empty(m, size, dtype=_F64, device=device)
            for a in range(m):
                col = row_panels[a] if diagonal else col_panels.get(a)
                if col is None:
                    col = work.jacobian(a, cols)
                block = row_panels[a] @ col.mT  # shape: (c·o, c·o)
                flat[a] = block.reshape(-1)
                if grams is not None:
                    cc = slice(cols.start * o, cols.stop * o)
                    grams[a][r, cc] = block
                    if not diagonal:
                        grams[a][cc, r] = block.mT
            weight = 1.0 if diagonal else 2.0
            kernel_inner += weight * (flat @ flat.mT)
            for a, b in work.cross:
                if diagonal:
                    term = _sq_norm(row_panels[a] @ row_panels[b].mT)
                else:
                    term = _sq_norm(row_panels[a] @ col_panels[b].mT) + _sq_norm(
                        col_panels[a] @ row_panels[b].mT
                    )
                cross_sq[a, b] += term
                cross_sq[b, a] += term
            done += 1
            if progress is not None:
                progress(done / total)
    return kernel_inner, cross_sq, grams


def _sq_norm(block: Tensor) -> Tensor:
    return block.to(_F64).square().sum()


def jacobian_similarity(
    lin_a: Model,
    lin_b: Model,
    x: Tensor,
    *,
    measure: str = "kernel",
    chunk_size: int | None = None,
    max_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    r"""Cosine similarity of two networks' Jacobians on shared probes (Section 4, Figure 5).

    sim(A, B) = tr(AᵀBBᵀA) / (‖AAᵀ‖_F ‖BBᵀ‖_F). With ``measure="kernel"`` (default) A and
    B are the n·o × p Jacobians and sim = ⟨K_A, K_B⟩_F / (‖K_A‖_F ‖K_B‖_F), the cosine of
    the two finite-NTK Gram matrices K = J Jᵀ. With ``measure="parameter"`` A and B are
    the p × n·o Jacobians of the paper's notation and sim = ‖J_A J_Bᵀ‖²_F /
    (‖K_A‖_F ‖K_B‖_F), the cosine of the p × p matrices JᵀJ (see :mod:`ntkcore.similarity`).

    Computed block by block from chunks of explicit Jacobians, accumulating in float64,
    without p × p or (unless they fit the budget) full n·o × n·o matrices; see
    :func:`compare_jacobians` for ``chunk_size``, ``max_bytes`` and ``dtype``.

    Parameters
    ----------
    lin_a, lin_b : nn.Module or Linearization
        Two networks with identical parameter shapes (one architecture).
    x : Tensor
        Probe inputs, shape (n, *input_shape).
    measure : {"kernel", "parameter"}

    Returns
    -------
    float
        In [0, 1]; 1 for identical networks.

    Raises
    ------
    ValueError
        For different parameter shapes, output sizes, dtypes or devices, or a bad option.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    result = compare_jacobians(
        [lin_a, lin_b],
        x,
        pairs=[(0, 1)] if measure == "parameter" else "none",
        chunk_size=chunk_size,
        max_bytes=max_bytes,
        dtype=dtype,
    )
    return float(result.similarity(measure)[0, 1])


def ntk_gram(
    model: Model,
    x: Tensor,
    *,
    chunk_size: int | None = None,
    max_bytes: int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> Tensor:
    """The finite-NTK Gram matrix J(x) J(x)ᵀ as float64, shape (n·o, n·o), sample-major.

    Like :meth:`Linearization.ntk` but with the products in ``dtype`` (default float64,
    accurate small eigenvalues) and float64 output.
    """
    result = compare_jacobians(
        [model], x, pairs="none", chunk_size=chunk_size, max_bytes=max_bytes, dtype=dtype,
        keep_grams=True,
    )  # fmt: skip
    assert result.grams is not None
    return result.grams[0]


def ntk_eigenvalues(
    model: Model,
    x: Tensor,
    k: int | None = None,
    *,
    chunk_size: int | None = None,
    max_bytes: int | None = None,
    dtype: torch.dtype | None = torch.float64,
    tol: float = 1e-6,
    seed: int = 0,
) -> Tensor:
    r"""Largest eigenvalues of the finite-NTK Gram matrix K = J(x) J(x)ᵀ (Appendix E.1).

    K (N × N, N = n·o) and JᵀJ (p × p) share their non-zero eigenvalues, so at most
    min(N, p) of them are non-zero. Dense path, when min(N, p) <= 8000 and the smaller Gram
    matrix (float64, twice for the eigensolver) fits ``max_bytes``: build it blockwise
    from explicit Jacobians (products in ``dtype``) and take ``torch.linalg.eigvalsh``.
    Otherwise the top ``k`` come from implicitly restarted Lanczos
    (:func:`scipy.sparse.linalg.eigsh`, relative tolerance ``tol``) on matrix-free
    products J Jᵀ u through :meth:`Linearization.at` in the network's dtype (float32
    products resolve eigenvalues down to ~1e-6 of the largest).

    Parameters
    ----------
    model : nn.Module or Linearization
    x : Tensor
        Inputs, shape (n, *input_shape).
    k : int, optional
        How many of the largest eigenvalues; default all min(N, p) (dense path only).
    chunk_size, max_bytes : int, optional
        Points per Jacobian block and the memory budget (see :func:`compare_jacobians`).
    dtype : torch.dtype, optional
        Dtype of the dense Gram products (default float64).
    tol : float
        Relative tolerance of the Lanczos path.
    seed : int
        Seed of the Lanczos start vector.

    Returns
    -------
    Tensor
        Eigenvalues in descending order, clamped at 0, float64, shape (min(k, N, p),).

    Raises
    ------
    ValueError
        For a bad ``k``, or ``k=None`` when the dense path does not fit.
    """
    lin = as_linearization(model)
    _check_chunk_size(chunk_size)
    x = lin.prepare_inputs(x)
    n, o, p = x.shape[0], lin.output_dim(x), lin.num_params
    size, small = n * o, min(n * o, p)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive int or None, got {k!r}")
    budget = _budget(lin.device, max_bytes)
    if small <= _MAX_DENSE_EIGEN and 2 * small * small * 8 <= budget:
        if size <= p:
            gram = ntk_gram(lin, x, chunk_size=chunk_size, max_bytes=budget, dtype=dtype)
        else:
            gram = _weight_gram(lin, x, chunk_size, _gram_dtype(lin, dtype), budget)
        eigenvalues = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0.0)
        return eigenvalues[: small if k is None else min(k, small)]
    if k is None:
        raise ValueError(
            f"the Gram matrix of min(n·o, p) = {small} does not fit the dense path "
            f"(budget {budget} bytes); pass k for the k largest eigenvalues (Lanczos)"
        )
    if k >= size:
        raise ValueError(f"Lanczos finds at most n·o - 1 = {size - 1} eigenvalues, got k={k}")
    return _lanczos_top(lin, x, min(k, small), tol, seed)


def _weight_gram(
    lin: Linearization, x: Tensor, chunk_size: int | None, dtype: torch.dtype, budget: int
) -> Tensor:
    """JᵀJ = Σ_blocks J_blockᵀ J_block in float64, shape (p, p)."""
    n, o, p = x.shape[0], lin.output_dim(x), lin.num_params
    itemsize = torch.empty((), dtype=dtype).element_size()
    rest = max(1, budget - 2 * p * p * 8)
    c = chunk_size or max(1, min(n, rest // max(1, o * p * (itemsize + 8))))
    gram = torch.zeros(p, p, dtype=_F64, device=lin.device)
    for rows in chunk_slices(n, c):
        block = lin.jacobian(x[rows]).reshape(-1, p).to(dtype)  # shape: (c·o, p)
        gram += (block.mT @ block).to(_F64)
    return gram


def _lanczos_top(lin: Linearization, x: Tensor, k: int, tol: float, seed: int) -> Tensor:
    from scipy.sparse.linalg import LinearOperator, eigsh

    n, o = x.shape[0], lin.output_dim(x)
    size = n * o
    at_x = lin.at(x)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.ascontiguousarray(v).reshape(n, o))
        out = at_x.ntk_vp(u.to(device=lin.device, dtype=lin.dtype))
        return out.reshape(-1).to(device="cpu", dtype=_F64).numpy()

    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(size)
    values = eigsh(operator, k=k, which="LA", tol=tol, v0=start, return_eigenvectors=False)
    return torch.as_tensor(np.sort(values)[::-1].copy(), dtype=_F64).clamp_min(0.0)
