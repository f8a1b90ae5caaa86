"""Matrix-free Jacobian products of a trained network (the engine of Eq. 1–3).

A :class:`Linearization` fixes a trained network at its parameters θ and exposes the
Jacobian J(x) = ∂f(x; θ)/∂θ, of shape (n·o) × p, only through products:

* ``jvp``  — J v, forward-mode (``torch.func.jvp``), batched over vectors with ``vmap``;
* ``vjp``  — Jᵀ u, reverse-mode (``torch.func.vjp``), batched over cotangents with ``vmap``;
* ``jacobian``, ``ntk``, ``ntk_diag`` — explicit objects when asked for, chunked over data;
* ``at(x)`` — a :class:`~ntkcore.jacobian_at.JacobianAt` bound to fixed inputs that keeps
  the forward pass across products (what iterative solvers on fixed data need).

Row index convention: the Jacobian's row for data point i and output a is ``i * o + a``
(sample-major), so ``ntk(x)`` has entry ``[i*o + a, j*o + b] = J_{ia} · J_{jb}``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntkcore.memory import product_budget
from ntkcore.parameters import ParameterFilter, ParameterLayout, select_parameters

if TYPE_CHECKING:
    from ntkcore.jacobian_at import JacobianAt

__all__ = ["Linearization", "as_linearization", "as_real_tensor", "chunk_slices"]

# Bytes of explicit Jacobian rows materialized at once when no chunk_size is given.
_DEFAULT_JACOBIAN_BYTES = 256 * 2**20
# Inputs whose JacobianAt ``at(..., reuse=True)`` keeps (the train and test inputs of a
# GPyTorch model).
_REUSED_INPUTS = 2


class Linearization:
    r"""The linearized network f(x; θ') ≈ f(x; θ) + J(x)(θ' − θ) around trained θ (Eq. 1).

    The network is evaluated in eval mode (BatchNorm uses running statistics, Dropout is
    off): we linearize the deployed function. The module's own ``training`` flags are
    restored after every call, so wrapping a model never changes it. θ, the remaining
    parameters and the buffers are snapshot (copied) at construction.

    Parameters
    ----------
    model : nn.Module
        A trained network mapping a batch ``x`` of shape ``(n, *input_shape)`` to outputs
        of shape ``(n, *output_shape)``; outputs are flattened per sample to ``(n, o)``.
    params : None, str, iterable of str or callable, optional
        Which parameters to linearize (the rest stay fixed). ``None``: every parameter
        that requires grad. See :func:`ntkcore.parameters.select_parameters`; use
        :func:`ntkcore.parameters.last_layers` for the paper's "top layers".
    chunk_size : int, optional
        Data points per chunk. Bounds peak memory of every product: activations for at
        most ``chunk_size`` points are alive at once. ``None`` sizes the chunks of a
        product with k vectors from a byte budget on k × points × saved activation bytes
        per point (:func:`ntkcore.memory.product_budget`; all points at once when they
        fit) and picks a chunk of at most 256 MiB of Jacobian rows for the explicit
        ``jacobian``/``ntk``/``ntk_diag``.

    Attributes
    ----------
    layout : ParameterLayout
        Names, shapes and flat offsets of the linearized parameters.
    num_params : int
        p, the number of linearized parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        params: ParameterFilter = None,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        names = select_parameters(model, params)
        named = dict(model.named_parameters())
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model = model
        self.chunk_size = chunk_size
        first = named[names[0]]
        self.dtype: torch.dtype = first.dtype
        self.device: torch.device = first.device
        for n in names:
            t = named[n]
            if not t.is_floating_point():
                raise ValueError(f"parameter {n!r} is not floating point ({t.dtype})")
            if t.dtype != self.dtype or t.device != self.device:
                raise ValueError(
                    f"all linearized parameters must share one dtype and device; {n!r} is "
                    f"{t.dtype} on {t.device}, {names[0]!r} is {self.dtype} on {self.device}"
                )
        self.layout = ParameterLayout(
            names=tuple(names), shapes=tuple(named[n].shape for n in names)
        )
        with torch.no_grad():
            self._theta: dict[str, Tensor] = {n: named[n].detach().clone() for n in names}
            fixed = {n: t.detach().clone() for n, t in named.items() if n not in self._theta}
            fixed.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self._fixed: dict[str, Tensor] = fixed
        self._output_dim: int | None = None
        self._saved_bytes: dict[tuple[tuple[int, ...], torch.dtype], int] = {}
        # JacobianAt objects handed out with reuse=True, newest last (see ``at``).
        self._reused: OrderedDict[tuple, tuple[weakref.ref, int, JacobianAt]] = OrderedDict()

    # ------------------------------------------------------------------ basics
    @property
    def num_params(self) -> int:
        """p, the number of linearized parameters (columns of J)."""
        return self.layout.num_params

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.layout.names

    def parameter_vector(self) -> Tensor:
        """θ as a flat vector of shape (p,)."""
        return self.layout.flatten(self._theta)

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Named tensors ``(*batch, *shape)`` → flat ``(*batch, p)``."""
        return self.layout.flatten(tensors)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Flat ``(*batch, p)`` → named tensors ``(*batch, *shape)``."""
        return self.layout.unflatten(vector)

    def output_dim(self, x: Tensor) -> int:
        """o, the number of outputs per data point (evaluates one point if unknown; an
        empty ``x`` then raises ``ValueError``)."""
        if self._output_dim is None:
            self(self.prepare_inputs(x)[:1])
        assert self._output_dim is not None
        return self._output_dim

    def set_output_dim(self, o: int) -> None:
        """Record o without a forward pass: what a rank whose data shard holds no points
        learns from the ranks that hold some (:mod:`ntkcore.distributed`). Products then
        accept an empty batch (:meth:`prepare_batch`).

        Raises
        ------
        ValueError
            ``o`` is not a positive int, or contradicts the o measured on this network.
        """
        if isinstance(o, bool) or not isinstance(o, int) or o < 1:
            raise ValueError(f"the number of outputs must be a positive int, got {o!r}")
        if self._output_dim is not None and self._output_dim != o:
            raise ValueError(
                f"the network has {self._output_dim} outputs per point here, not {o}"
            )
        self._output_dim = o

    def to_dtype(self, dtype: torch.dtype) -> Linearization:
        """This linearization at the same θ in another floating dtype.

        The snapshots (θ, the fixed parameters, the floating buffers) are cast; the module
        is shared, since :meth:`functional_forward` replaces all of its parameters and
        buffers (a module computing with other float tensors of its own then fails with a
        ``ValueError`` on first use). Mixed-precision solves use a float64 copy of a
        float32 network for their residuals (:func:`ntkcore.adapt`).
        """
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        if dtype == self.dtype:
            return self
        twin = Linearization.__new__(Linearization)
        twin.__dict__.update(self.__dict__)
        with torch.no_grad():
            twin._theta = {k: t.to(dtype) for k, t in self._theta.items()}
            twin._fixed = {
                k: t.to(dtype) if t.is_floating_point() else t for k, t in self._fixed.items()
            }
        twin.dtype = dtype
        twin._saved_bytes = {}
        twin._reused = OrderedDict()
        return twin

    def __repr__(self) -> str:
        return (
            f"Linearization({type(self.model).__name__}, p={self.num_params}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            yield
        finally:
            for m, flag in flags:
                m.training = flag

    def functional_forward(self, theta: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """f(x; θ') as a pure function of the named linearized parameters θ', shape (n, o).

        The function that ``jvp``/``vjp`` differentiate: the remaining parameters and the
        buffers are the snapshot taken at construction. ``torch.func`` transforms of it
        (``jvp``, ``vjp``, ``vmap``, ``grad``) are safe; run them inside
        :meth:`evaluate` so the network is in eval mode and model errors become
        ``ValueError``. ``x`` must already be prepared (:meth:`prepare_inputs`).
        """
        out = functional_call(self.model, {**self._fixed, **theta}, (x,))
        if not isinstance(out, Tensor):
            raise ValueError(
                f"the model must return one tensor, got {type(out).__name__}"
            )
        if out.dim() == 0 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"the model returned shape {tuple(out.shape)} for an input batch of "
                f"{x.shape[0]} points; the first output dimension must be the batch"
            )
        return out.reshape(out.shape[0], -1)

    def prepare_inputs(self, x: Tensor, *, allow_empty: bool = False) -> Tensor:
        """Validate inputs and move them to the network's device and (floating) dtype.

        Raises ``ValueError`` for a missing batch dimension, non-finite values or (unless
        ``allow_empty``) an empty batch.
        """
        x = as_real_tensor(x, "x")
        if x.dim() == 0 or (x.shape[0] == 0 and not allow_empty):
            raise ValueError(
                f"x must have a leading batch dimension with at least one point, got shape "
                f"{tuple(x.shape)}"
            )
        if x.is_floating_point():
            x = x.to(device=self.device, dtype=self.dtype)
            if not _all_finite(x):
                raise ValueError("x contains non-finite values (nan or inf)")
        else:
            x = x.to(device=self.device)
        return x

    def prepare_batch(self, x: Tensor) -> Tensor:
        """:meth:`prepare_inputs` for the products: an empty batch (0, *input_shape) is
        accepted once o is known (it sets the shape of what they return: f(x) is (0, o),
        J v is (k, 0, o), Jᵀu is 0 in R^p) — a rank holding no points of a sharded data
        set (:mod:`ntkcore.distributed`) or no test points."""
        return self.prepare_inputs(x, allow_empty=self._output_dim is not None)

    def _empty(self, *shape: int) -> Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _chunks(self, n: int, chunk: int | None) -> list[slice]:
        return chunk_slices(n, chunk)

    def _jacobian_chunk_size(self, n: int, o: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        per_point = max(1, o * self.num_params * itemsize)
        budget = _DEFAULT_JACOBIAN_BYTES
        if self.device.type != "cpu":
            # accelerators: larger blocks when memory allows (at p = 10⁸ one row is 400 MB,
            # and every block re-reads the (1 + r) × p covariance factor in predict)
            budget = max(budget, product_budget(self.device) // 4)
        return max(1, min(n, budget // per_point))

    def saved_bytes_per_point(self, x: Tensor) -> int:
        """Bytes of activations one data point keeps for the backward pass (measured once).

        Evaluates the network on (at most) two points of the prepared input ``x`` with
        plain autograd and counts the tensors autograd saves, excluding parameters and
        buffers. The result is cached per input shape and sizes the chunks of products
        (``chunk_size=None``) and of :class:`~ntkcore.jacobian_at.JacobianAt` caches.
        """
        key = (tuple(x.shape[1:]), x.dtype)
        if x.shape[0] == 0 and key not in self._saved_bytes:
            return 1  # nothing to measure on an empty batch, and nothing to hold
        if key not in self._saved_bytes:
            xs = x[:2]
            theta = {k: t.detach().requires_grad_(True) for k, t in self._theta.items()}
            owned = {
                t.untyped_storage().data_ptr()
                for t in [*theta.values(), *self._fixed.values(), xs]
            }
            seen: set[int] = set()
            total = 0

            def pack(t: Tensor) -> Tensor:
                nonlocal total
                ptr = t.untyped_storage().data_ptr()
                if ptr not in owned and ptr not in seen:
                    seen.add(ptr)
                    total += t.untyped_storage().nbytes()
                return t

            def fn() -> Tensor:
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(
                    pack, lambda t: t
                ):
                    return self.functional_forward(theta, xs)

            out = self.evaluate(fn, xs)
            self._output_dim = out.shape[1]
            # The output itself is alive during a backward pass as well.
            total += out.numel() * out.element_size()
            self._saved_bytes[key] = max(1, -(-total // xs.shape[0]))
        return self._saved_bytes[key]

    def product_chunk_size(self, x: Tensor, k: int) -> int:
        """Data points per chunk of a product with ``k`` vectors on the prepared ``x``.

        ``chunk_size`` when set; otherwise as many points as keep k × points × saved
        bytes per point within :func:`ntkcore.memory.product_budget` (at least 1).
        """
        n = x.shape[0]
        if self.chunk_size is not None:
            return min(n, self.chunk_size)
        per_vector_point = max(1, k) * self.saved_bytes_per_point(x)
        return max(1, min(n, product_budget(self.device) // per_vector_point))

    def evaluate(self, fn: Callable[[], Tensor], x: Tensor) -> Tensor:
        """Run ``fn()`` with the network in eval mode; model errors become ``ValueError``.

        ``fn`` evaluates the network on ``x`` (used only for the error message), typically
        through :meth:`functional_forward`. The modules' training flags are restored after.
        """
        with self._eval_mode():
            try:
                return fn()
            except torch.OutOfMemoryError:
                raise
            except ValueError:
                raise
            except (RuntimeError, TypeError, IndexError) as err:
                raise ValueError(
                    f"the model ({type(self.model).__name__}) rejected an input of shape "
                    f"{tuple(x.shape)} and dtype {x.dtype}: {err}"
                ) from err

    def _prepare_vectors(self, v: Tensor, what: str, trailing: tuple[int, ...]) -> Tensor:
        v = as_real_tensor(v, what)
        nd = len(trailing)
        if v.dim() not in (nd, nd + 1) or tuple(v.shape[v.dim() - nd :]) != trailing:
            expected = f"{trailing} or (k, {', '.join(map(str, trailing))})"
            raise ValueError(f"{what} must have shape {expected}, got {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        if not _all_finite(v):
            raise ValueError(f"{what} contains non-finite values (nan or inf)")
        return v

    # ------------------------------------------------------------------ products
    def __call__(self, x: Tensor) -> Tensor:
        """f(x; θ), shape (n, o)."""
        x = self.prepare_batch(x)
        if x.shape[0] == 0:  # o is known (prepare_batch)
            return self._empty(0, self.output_dim(x))
        outs = []
        with torch.no_grad():
            for s in self._chunks(x.shape[0], self.chunk_size):
                xc = x[s]
                fn = lambda xc=xc: self.functional_forward(self._theta, xc)  # noqa: E731
                outs.append(self.evaluate(fn, xc))
        out = torch.cat(outs, dim=0)
        self._output_dim = out.shape[1]
        return out

    def jvp(self, x: Tensor, v: Tensor) -> Tensor:
        """Jacobian-vector product J(x) v.

        Parameters
        ----------
        x : Tensor
            Inputs, shape ``(n, *input_shape)``.
        v : Tensor
            Parameter-space vectors, shape ``(p,)`` or ``(k, p)``.

        Returns
        -------
        Tensor
            Shape ``(n, o)``, or ``(k, n, o)`` for a batch of vectors.
        """
        x = self.prepare_batch(x)
        v = self._prepare_vectors(v, "v", (self.num_params,))
        batched = v.dim() == 2
        if x.shape[0] == 0:
            return self._empty(*v.shape[:-1], 0, self.output_dim(x))
        tangents = self.layout.unflatten(v)  # each: (k, *shape) or (*shape)

        def single(xc: Tensor, t: Mapping[str, Tensor]) -> Tensor:
            return jvp(lambda th: self.functional_forward(th, xc), (self._theta,), (t,))[1]

        chunk = self.product_chunk_size(x, v.shape[0] if batched else 1)
        outs = []
        for s in self._chunks(x.shape[0], chunk):
            xc = x[s]
            if batched:
                fn = lambda xc=xc: vmap(lambda t: single(xc, t))(tangents)  # noqa: E731
            else:
                fn = lambda xc=xc: single(xc, tangents)  # noqa: E731
            outs.append(self.evaluate(fn, xc).detach())
        out = torch.cat(outs, dim=-2)
        self._output_dim = out.shape[-1]
        return out

    def vjp(self, x: Tensor, u: Tensor) -> Tensor:
        """Vector-Jacobian product J(x)ᵀ u.

        Parameters
        ----------
        x : Tensor
            Inputs, shape ``(n, *input_shape)``.
        u : Tensor
            Output-space vectors, shape ``(n, o)`` or ``(k, n, o)``.

        Returns
        -------
        Tensor
            Shape ``(p,)``, or ``(k, p)`` for a batch.
        """
        x = self.prepare_batch(x)
        n = x.shape[0]
        o = self.output_dim(x)
        u = self._prepare_vectors(u, "u", (n, o))
        if n == 0:  # an empty sum
            return self._empty(*u.shape[:-2], self.num_params)
        batched = u.dim() == 3
        # The CPU path below runs one vector at a time through a shared forward pass.
        k = u.shape[0] if batched and self.device.type != "cpu" else 1
        total: Tensor | None = None
        for s in self._chunks(n, self.product_chunk_size(x, k)):
            xc = x[s]
            uc = u[..., s, :]

            def fn(xc: Tensor = xc, uc: Tensor = uc) -> Tensor:
                _, pullback = vjp(lambda th: self.functional_forward(th, xc), self._theta)
                if not batched:
                    return self.layout.flatten(pullback(uc)[0])
                if self.device.type == "cpu":
                    # One forward, then the pullback once per vector: on 1 CPU thread this
                    # cost 1.3 (PreResNet-20, n = 64) and 1.6 (MLP, p = 670k, n = 256)
                    # forward passes per vector at k = 8–32, against 4.0–4.5 and 2.1 for
                    # vmap(pullback). On GPUs the vmapped pullback batches better.
                    return torch.stack(
                        [self.layout.flatten(pullback(uc[i])[0]) for i in range(uc.shape[0])]
                    )
                return self.layout.flatten(vmap(pullback)(uc)[0])

            g = self.evaluate(fn, xc).detach()
            total = g if total is None else total.add_(g)
        assert total is not None
        return total

    def ntk_vp(self, x: Tensor, u: Tensor) -> Tensor:
        """The finite-NTK matrix–vector product J(x) J(x)ᵀ u, shape as ``u``.

        One reverse and one forward product per vector, never forming J. Each call runs
        the network's forward pass twice (the primals of ``vjp`` and ``jvp``); for repeated
        products at the same ``x`` (iterative solvers) use ``self.at(x).ntk_vp(u)``, which
        runs it once and keeps it (PreResNet-20 on one CPU thread: 4.3–4.5 instead of
        4.7–6.7 forward passes per vector, ``benchmarks/RESULTS.md``).
        """
        return self.jvp(x, self.vjp(x, u))

    def at(
        self, x: Tensor, *, cache: str = "auto", strict: bool = True, reuse: bool = False
    ) -> JacobianAt:
        """J(x) bound to fixed inputs ``x``, keeping forward passes across products.

        See :class:`~ntkcore.jacobian_at.JacobianAt`; ``cache`` is one of ``"auto"``,
        ``"none"``, ``"pullback"``, ``"linearized"``. With ``reuse=True`` the object is
        kept and handed out again for the same tensor ``x`` (same object, not modified
        in place since) and the same options; at most :data:`_REUSED_INPUTS` inputs are
        kept, oldest dropped. ``linear_operator`` rebuilds operators from their arguments
        for every matmul, so this is how the operators keep a forward pass across matmuls.
        """
        from ntkcore.jacobian_at import JacobianAt

        if not reuse:
            return JacobianAt(self, x, cache=cache, strict=strict)
        key = (id(x), cache, strict)
        hit = self._reused.get(key)
        if hit is not None and hit[0]() is x and hit[1] == x._version:
            self._reused.move_to_end(key)
            return hit[2]
        products = JacobianAt(self, x, cache=cache, strict=strict)
        self._reused[key] = (weakref.ref(x), x._version, products)
        while len(self._reused) > _REUSED_INPUTS:
            self._reused.popitem(last=False)
        return products

    # ------------------------------------------------------------------ explicit
    def _jacobian_parts(self, xc: Tensor) -> dict[str, Tensor]:
        # per parameter name, shape: (c, o, *shape) — per-sample Jacobians, vmap over samples
        def per_sample(th: Mapping[str, Tensor], xi: Tensor) -> Tensor:
            return self.functional_forward(th, xi.unsqueeze(0))[0]

        def fn() -> dict[str, Tensor]:
            return vmap(jacrev(per_sample), in_dims=(None, 0))(self._theta, xc)

        return {k: t.detach() for k, t in self.evaluate(fn, xc).items()}

    def _jacobian_block(self, xc: Tensor) -> Tensor:
        # shape: (c, o, p)
        return self.layout.flatten(self._jacobian_parts(xc))

    def jacobian_parts(self, x: Tensor) -> Iterator[tuple[slice, list[tuple[slice, Tensor]]]]:
        """:meth:`jacobian_blocks` without concatenating the parameters.

        Yields ``(rows, parts)``: per parameter, the slice of the flat vector it occupies and
        its per-sample Jacobian columns of shape (c, o, numel), in flat-vector order. What
        reduces over parameters can skip the concatenation into (c, o, p): 0.083 s of the
        0.33 s for 400 faces through a p = 125,693 LeNet-3 (one CPU thread).
        """
        x = self.prepare_batch(x)
        n = x.shape[0]
        o = self.output_dim(x)
        columns = self.layout.slices()
        for s in self._chunks(n, self._jacobian_chunk_size(n, o)):
            jac = self._jacobian_parts(x[s])
            parts = [(columns[k], jac[k].reshape(*jac[k].shape[:2], -1)) for k in columns]
            yield s, parts

    def jacobian_blocks(self, x: Tensor) -> Iterator[tuple[slice, Tensor]]:
        """Yield ``(rows, block)`` with per-sample Jacobians ``block`` of shape (c, o, p).

        ``rows`` is the slice of data points the block covers. Peak memory is one block
        (``chunk_size`` points, or at most 256 MiB of rows when ``chunk_size`` is None).
        """
        for s, parts in self.jacobian_parts(x):
            yield s, torch.cat([t for _, t in parts], dim=-1)

    def jacobian(self, x: Tensor) -> Tensor:
        """The explicit Jacobian, shape (n, o, p), computed in chunks of data points."""
        x = self.prepare_batch(x)
        blocks = [b for _, b in self.jacobian_blocks(x)]
        if not blocks:
            return self._empty(0, self.output_dim(x), self.num_params)
        return torch.cat(blocks, dim=0)

    def ntk(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """The explicit finite NTK J(x1) J(x2)ᵀ, shape (n1·o, n2·o), sample-major.

        Only chunks of Jacobian rows are alive at a time; the blocks of ``x2`` are kept
        when they fit in the chunk budget and recomputed otherwise.
        """
        x1 = self.prepare_inputs(x1)
        o = self.output_dim(x1)
        symmetric = x2 is None
        x2 = x1 if symmetric else self.prepare_inputs(x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        out = torch.empty(n1 * o, n2 * o, dtype=self.dtype, device=self.device)
        chunk = self._jacobian_chunk_size(max(n1, n2), o)
        cols = self._chunks(n2, chunk)
        keep = n2 <= chunk * 4
        cached: dict[int, Tensor] = {}
        for s1 in self._chunks(n1, chunk):
            j1 = self._jacobian_block(x1[s1]).reshape(-1, self.num_params)
            for idx, s2 in enumerate(cols):
                if symmetric and s2.start < s1.start:
                    continue  # filled from the transpose below
                if symmetric and s2 == s1:
                    j2 = j1
                elif idx in cached:
                    j2 = cached[idx]
                else:
                    j2 = self._jacobian_block(x2[s2]).reshape(-1, self.num_params)
                    if keep:
                        cached[idx] = j2
                block = j1 @ j2.T
                r = slice(s1.start * o, s1.stop * o)
                c = slice(s2.start * o, s2.stop * o)
                out[r, c] = block
                if symmetric and s2 != s1:
                    out[c, r] = block.T
        return out

    def ntk_diag(self, x: Tensor) -> Tensor:
        """Exact diagonal of the finite NTK, ``||J_{ia}||²``, shape (n, o).

        Per-sample Jacobians are batched over samples (``vmap`` of ``jacrev``), chunked.
        """
        x = self.prepare_inputs(x)
        return torch.cat([b.square().sum(-1) for _, b in self.jacobian_blocks(x)], dim=0)

    def ntk_blockdiag(self, x: Tensor) -> Tensor:
        """Per-sample output blocks J_i J_iᵀ of the finite NTK, shape (n, o, o)."""
        x = self.prepare_inputs(x)
        return torch.cat(
            [b @ b.transpose(-1, -2) for _, b in self.jacobian_blocks(x)], dim=0
        )


def as_real_tensor(value: object, what: str) -> Tensor:
    """``value`` as a dense real tensor with data, or a ``ValueError`` naming ``what``.

    Converts arrays and nested lists of numbers with ``torch.as_tensor``; refuses objects it
    cannot convert, ragged lists, complex values, sparse and meta tensors (whose errors
    would otherwise surface from deep inside torch as ``RuntimeError``/``NotImplementedError``).
    """
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (RuntimeError, TypeError, ValueError, OverflowError) as err:
            raise ValueError(
                f"{what} must be a tensor or an array of numbers, got {type(value).__name__} "
                f"({err})"
            ) from None
    if value.layout != torch.strided:
        raise ValueError(f"{what} must be a dense tensor, got layout {value.layout}")
    if value.device.type == "meta":
        raise ValueError(f"{what} is a meta tensor (it has no data)")
    if value.is_complex():
        raise ValueError(f"{what} must be real, got dtype {value.dtype}")
    return value


def _all_finite(t: Tensor) -> bool:
    """True when every entry is finite. One reduction instead of an elementwise mask:
    the mask cost 0.4–0.7 forward passes per vector on a 670k-parameter MLP
    (benchmarks/products.py --diagnose); the sum is finite whenever every entry is,
    and only an overflowing sum falls back to the exact check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def chunk_slices(n: int, chunk: int | None) -> list[slice]:
    """Consecutive slices of at most ``chunk`` items covering ``range(n)`` (all if None)."""
    c = max(1, n if chunk is None else chunk)
    return [slice(i, min(i + c, n)) for i in range(0, n, c)]


def as_linearization(model_or_lin: nn.Module | Linearization, **kw: object) -> Linearization:
    """Wrap a module in a :class:`Linearization` (a Linearization passes through)."""
    if isinstance(model_or_lin, Linearization):
        if kw:
            raise ValueError(
                f"options {sorted(kw)} apply when wrapping a module; this is already a "
                "Linearization"
            )
        return model_or_lin
    if isinstance(model_or_lin, nn.Module):
        return Linearization(model_or_lin, **kw)  # type: ignore[arg-type]
    raise ValueError(
        "model_or_lin must be a torch.nn.Module or a Linearization (ntkcore), got "
        f"{type(model_or_lin).__name__}"
    )
