"""The finite NTK as a GPyTorch kernel matrix: lazy indexing on top of NTKLinearOperator."""

from __future__ import annotations

import torch
from linear_operator.operators import LinearOperator
from torch import Tensor

from ntkcore.linearization import Linearization
from ntkcore.operators.ntk_operator import NTKLinearOperator

__all__ = ["NTKKernelLinearOperator"]

# Elements of explicit Jacobian rows gathered at once by element-wise indexing.
_PAIR_CHUNK_ELEMENTS = 2**24


def _as_sample_index(index: slice | Tensor, o: int) -> slice | Tensor | None:
    """Map a row/column index of the (n·o)-sized kernel to an index of data points.

    Returns None when the index does not select whole samples in order (every output
    of each selected point, contiguously), in which case the caller falls back to the
    generic interpolated indexing of ``linear_operator``.
    """
    if o == 1:
        return index
    if isinstance(index, slice):
        start, stop, step = index.start or 0, index.stop, index.step
        if step not in (None, 1) or start % o or (stop is not None and stop % o):
            return None
        return slice(start // o, None if stop is None else stop // o)
    if index.dim() != 1 or index.numel() % o:
        return None
    blocks = index.reshape(-1, o)
    samples = blocks[:, 0].div(o, rounding_mode="floor")
    expected = samples.unsqueeze(-1) * o + torch.arange(o, device=index.device)
    if not torch.equal(blocks, expected):
        return None
    return samples


class NTKKernelLinearOperator(NTKLinearOperator):
    r"""The finite NTK ``scale · J(x1) J(x2)ᵀ`` with cheap sub-matrix access for GPyTorch.

    The kernel matrix of the finite-NTK GP (Section 3 of Maddox et al., 2021:
    k(x, x') = J(x)ᵀJ(x') in the paper's p × n·o Jacobian convention; its posterior is
    Eq. 3, Section 3.1). It extends
    :class:`~ntkcore.operators.NTKLinearOperator` (matrix-free ``_matmul`` through one
    batched vjp and one batched jvp, exact cached ``_diagonal``) with what GPyTorch's
    exact-GP machinery needs from a kernel matrix:

    * ``_getitem`` — slicing rows/columns (``K[..., :n, :n]``, ``K[..., n:, :n]`` in
      :class:`gpytorch.models.ExactGP` prediction) returns another lazy operator on the
      selected inputs: no kernel entry is computed.
    * ``_get_indices`` — element-wise access (``K[rows, cols]`` with tensor indices, e.g.
      the kernel rows fetched by the pivoted-Cholesky preconditioner) computes only the
      requested entries: the explicit Jacobian of the smaller set of distinct points
      and one batched jvp over the other set (or paired dot products of per-sample
      Jacobians when the requested entries are sparse).
    * Squareness is detected from the data (``x2`` equal to ``x1``), so copies made by
      ``clone``/``detach`` and equal-index slices keep the exact diagonal.

    Parameters
    ----------
    x1, x2 : Tensor
        Inputs in the network's shape ``(n, *input_shape)``; ``x2=None`` or a tensor
        equal to ``x1`` gives the square kernel.
    linearization : Linearization
    scale : float
        Prior variance s² of the linearized weights.
    """

    def __init__(
        self,
        x1: Tensor,
        x2: Tensor | None = None,
        *,
        linearization: Linearization,
        scale: float = 1.0,
    ) -> None:
        super().__init__(x1, x2, linearization=linearization, scale=scale)
        self.square = self.square or (
            self.x1.shape == self.x2.shape and torch.equal(self.x1, self.x2)
        )

    def _transpose_nonbatch(self) -> NTKKernelLinearOperator:
        if self.square:
            return self
        return NTKKernelLinearOperator(
            self.x2, self.x1, linearization=self.linearization, scale=self.scale
        )

    def _getitem(
        self, row_index: slice | Tensor, col_index: slice | Tensor, *batch_indices
    ) -> LinearOperator:
        rows = _as_sample_index(row_index, self._o)
        cols = _as_sample_index(col_index, self._o)
        if batch_indices or rows is None or cols is None:
            return super()._getitem(row_index, col_index, *batch_indices)
        x1 = self.x1[rows]
        same = self.square and (
            (isinstance(rows, slice) and isinstance(cols, slice) and rows == cols)
            or (
                isinstance(rows, Tensor)
                and isinstance(cols, Tensor)
                and rows.shape == cols.shape
                and torch.equal(rows, cols)
            )
        )
        x2 = None if same else self.x2[cols]
        return NTKKernelLinearOperator(x1, x2, linearization=self.linearization, scale=self.scale)

    def _get_indices(self, row_index: Tensor, col_index: Tensor, *batch_indices) -> Tensor:
        if batch_indices:
            raise ValueError("NTKKernelLinearOperator has no batch dimensions to index")
        shape = torch.broadcast_shapes(row_index.shape, col_index.shape)
        r = row_index.expand(shape).reshape(-1)
        c = col_index.expand(shape).reshape(-1)
        if r.numel() == 0:
            return torch.zeros(shape, dtype=self.dtype, device=self.device)
        o, lin = self._o, self.linearization
        r_pt, r_out = r.div(o, rounding_mode="floor"), r % o
        c_pt, c_out = c.div(o, rounding_mode="floor"), c % o
        ur, inv_r = torch.unique(r_pt, return_inverse=True)
        uc, inv_c = torch.unique(c_pt, return_inverse=True)
        kr, kc = ur.numel(), uc.numel()
        if min(kr, kc) * max(kr, kc) <= 4 * r.numel() + 64:
            # Dense block between the distinct points: explicit Jacobian rows of the
            # smaller set as tangents of one batched jvp over the larger set.
            if kr <= kc:
                tangents = lin.jacobian(self.x1[ur]).reshape(kr * o, -1)
                block = lin.jvp(self.x2[uc], tangents)  # shape: (kr·o, kc, o)
                vals = block[inv_r * o + r_out, inv_c, c_out]
            else:
                tangents = lin.jacobian(self.x2[uc]).reshape(kc * o, -1)
                block = lin.jvp(self.x1[ur], tangents)  # shape: (kc·o, kr, o)
                vals = block[inv_c * o + c_out, inv_r, r_out]
        else:
            # Sparse pairs (e.g. a diagonal-like selection): paired dot products of
            # per-sample Jacobian rows, gathered in chunks.
            jr = lin.jacobian(self.x1[ur])  # shape: (kr, o, p)
            jc = lin.jacobian(self.x2[uc])  # shape: (kc, o, p)
            step = max(1, _PAIR_CHUNK_ELEMENTS // max(1, lin.num_params))
            vals = torch.cat(
                [
                    (jr[inv_r[s], r_out[s]] * jc[inv_c[s], c_out[s]]).sum(-1)
                    for s in (slice(i, i + step) for i in range(0, r.numel(), step))
                ]
            )
        return (self.scale * vals).reshape(shape)
