"""J(x) at fixed inputs: Jacobian products that keep their forward passes (Eq. 2–3 solves).

Iterative inference (Nyström sketches, conjugate gradients, the variance factor) applies
J(x) and J(x)ᵀ to hundreds of vectors at the *same* inputs x. :meth:`Linearization.jvp`
and :meth:`Linearization.vjp` start every call with a forward pass; :class:`JacobianAt`
runs it once and keeps what the products need:

``"pullback"``
    The reverse-mode pullback of ``torch.func.vjp`` per chunk of data (the activations
    a backward pass saves), so Jᵀ u costs one backward pass per vector.
``"linearized"``
    Also the forward-mode tangent program of ``torch.func.linearize`` (traced once, with
    the primal activations folded in), so J v costs only the tangent propagation. Measured
    on 1 CPU thread (``benchmarks/products.py``, ``benchmarks/RESULTS.md``): NTK matvec
    J Jᵀ u per vector 2.86–3.02 (MLP 784-512-512-10, n = 256) and 4.30–4.51
    (PreResNet-20, n = 64) forward-pass equivalents for k = 1–32, against 3.16–5.76 and
    4.69–6.70 for one-shot ``Linearization.ntk_vp``; building the cache costs 24 and 23
    forward passes once, repaid within ~10–20 products.
``"none"``
    No cache: every product is a fresh :meth:`Linearization.jvp` / ``vjp``.
``"auto"``
    ``"linearized"`` on the CPU and ``"pullback"`` on accelerators (where the traced
    program gains little: 15.6 → 11.1 forward-pass equivalents per NTK matvec on an H200
    for the MLP above), when the cache fits :func:`ntkcore.memory.cache_budget`;
    ``"none"`` otherwise. A network that cannot be traced falls back to ``"pullback"``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.func import linearize, vjp, vmap

from ntkcore.kinks import ActivationPattern
from ntkcore.linearization import Linearization, chunk_slices
from ntkcore.memory import cache_budget, product_budget

__all__ = ["CACHES", "JacobianAt"]

CACHES = ("auto", "none", "pullback", "linearized")

Pullback = Callable[[Tensor], tuple[dict[str, Tensor]]]
TangentMap = Callable[[Mapping[str, Tensor]], Tensor]


class JacobianAt:
    r"""The Jacobian J(x) of a linearized network at fixed inputs x, as cached products.

    Built by :meth:`Linearization.at`. Products equal :meth:`Linearization.jvp`,
    :meth:`Linearization.vjp` and :meth:`Linearization.ntk_vp` on the same ``x`` (to
    rounding); only their cost differs.

    Parameters
    ----------
    linearization : Linearization
    x : Tensor
        Inputs, shape ``(n, *input_shape)``; validated once here.
    cache : {"auto", "none", "pullback", "linearized"}
        What to keep across products (see the module docstring).
    strict : bool
        For an explicit ``"pullback"``/``"linearized"``: raise ``ValueError`` when the
        cache would not fit in memory (default), or, with ``strict=False``, run without a
        cache as ``"auto"`` does.

    Attributes
    ----------
    x : Tensor
        The prepared inputs.
    cache : str
        The cache actually in use (``"auto"`` resolved; ``"pullback"`` after a failed
        trace; ``"none"`` when the cache would not fit in memory).
    cache_reason : str
        Why that cache was chosen.
    cache_bytes : int
        Estimated bytes held by the cache (saved activations).
    setup_seconds : float
        Time spent building the cache.

    Notes
    -----
    Memory: a cache keeps the saved activations of *all* n points alive (about
    ``n × linearization.saved_bytes_per_point(x)`` bytes, twice that for
    ``"linearized"``), not one chunk's; ``"auto"`` only caches when that fits a quarter
    of the free memory.
    """

    def __init__(
        self, linearization: Linearization, x: Tensor, *, cache: str = "auto", strict: bool = True
    ) -> None:
        if not isinstance(linearization, Linearization):
            raise ValueError(
                f"linearization must be a Linearization, got {type(linearization).__name__}"
            )
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
        t0 = time.perf_counter()
        lin = linearization
        self.linearization = lin
        # an empty x once o is known: a rank with no points of a sharded data set, whose
        # products are then empty (J v: (k, 0, o); Jᵀu: zeros) through the uncached path
        self.x: Tensor = lin.prepare_batch(x)
        self.n: int = self.x.shape[0]
        self.o: int = lin.output_dim(self.x)
        per_point = lin.saved_bytes_per_point(self.x)
        self.cache, self.cache_reason = self._resolve(cache, per_point, strict)
        self.cache_bytes = 0 if self.cache == "none" else self.n * per_point * (
            2 if self.cache == "linearized" else 1
        )
        # Chunks of a cached forward pass: the caller's chunk_size, else as many points as
        # one vector's backward pass may hold within the product budget.
        self._chunks = chunk_slices(self.n, lin.product_chunk_size(self.x, 1))
        self._per_point = per_point
        # Accelerators batch vectors with vmap; the CPU runs one vector at a time through
        # the cached pass (PreResNet-20, 1 thread, benchmarks/RESULTS.md: the traced J v
        # costs 2.20–2.24 forward passes per vector looped, 3.63–6.24 vmapped at k = 8–32).
        self._batch_vectors = lin.device.type != "cpu"
        self._outputs: list[Tensor] = []
        self._pullbacks: list[Pullback] = []
        self._tangent_maps: list[TangentMap] = []
        self._patterns: list[tuple[slice, ActivationPattern]] | None = None
        if self.cache != "none":
            self._build()
        self.setup_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ setup
    def _resolve(self, cache: str, per_point: int, strict: bool) -> tuple[str, str]:
        device = self.linearization.device
        if cache == "none":
            return "none", "requested"
        wanted = cache
        if cache == "auto":
            wanted = "linearized" if device.type == "cpu" else "pullback"
        need = self.n * per_point * (2 if wanted == "linearized" else 1)
        budget = cache_budget(device)
        if need > budget:
            if cache != "auto" and strict:
                raise ValueError(
                    f"cache={cache!r} would keep ~{need / 2**20:.0f} MiB of activations for "
                    f"{self.n} points, more than a quarter of the free memory "
                    f"({budget / 2**20:.0f} MiB); use cache='none' or fewer points"
                )
            return "none", (
                f"a cache of ~{need / 2**20:.0f} MiB for {self.n} points exceeds "
                f"{budget / 2**20:.0f} MiB"
            )
        why = "requested" if cache != "auto" else f"{device.type} default"
        return wanted, f"{why}; ~{need / 2**20:.0f} MiB of cached activations"

    def _build(self) -> None:
        lin = self.linearization
        for s in self._chunks:
            xc = self.x[s]

            def forward(th: Mapping[str, Tensor], xc: Tensor = xc) -> Tensor:
                return lin.functional_forward(th, xc)

            out, pullback = _evaluate_pair(lin, lambda f=forward: vjp(f, lin._theta), xc)
            self._outputs.append(out.detach())
            self._pullbacks.append(pullback)
            if self.cache == "linearized":
                try:
                    with warnings.catch_warnings():
                        # Tracing warns about its own internals (make_fx constant folding,
                        # torch.jit.script deprecation), nothing the user can act on.
                        warnings.simplefilter("ignore")
                        _, tangent_map = _evaluate_pair(
                            lin, lambda f=forward: linearize(f, lin._theta), xc
                        )
                except torch.OutOfMemoryError:
                    raise
                except Exception as err:  # noqa: BLE001 — any tracing failure: no tangent map
                    self._tangent_maps.clear()
                    self.cache = "pullback"
                    self.cache_reason = (
                        f"the network could not be traced ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); pullback only"
                    )
                    self.cache_bytes = self.n * self._per_point
                    continue
                self._tangent_maps.append(tangent_map)

    # ------------------------------------------------------------------ basics
    @property
    def num_params(self) -> int:
        """p, the number of linearized parameters."""
        return self.linearization.num_params

    @property
    def output(self) -> Tensor:
        """f(x; θ), shape (n, o) (from the cached forward pass when there is one)."""
        if self._outputs:
            return torch.cat(self._outputs, dim=0)
        return self.linearization(self.x)

    def activation_patterns(self) -> list[tuple[slice, ActivationPattern]]:
        """The activation pattern at θ of each chunk of ``x`` (:mod:`ntkcore.kinks`).

        Recorded by one ``no_grad`` forward pass on first use (what ``fd`` Fisher products
        with frozen kinks replay), and kept with the cache (a byte per ReLU output, an
        index per max-pooling output: less than the cached activations); without a cache
        they are recorded again on every call.

        Returns
        -------
        list of (slice, ActivationPattern)
            One entry per chunk of the cached forward pass, in order.
        """
        if self._patterns is not None:
            return self._patterns
        lin = self.linearization
        patterns = []
        for s in self._chunks:
            pattern = ActivationPattern()

            def record(xc: Tensor = self.x[s], pattern: ActivationPattern = pattern) -> Tensor:
                with torch.no_grad(), pattern.recording():
                    return lin.functional_forward(lin._theta, xc)

            lin.evaluate(record, self.x[s])
            patterns.append((s, pattern))
        if self.cache != "none":
            self._patterns = patterns
        return patterns

    def __repr__(self) -> str:
        return (
            f"JacobianAt(n={self.n}, o={self.o}, p={self.num_params}, cache={self.cache!r})"
        )

    def _vector_groups(self, k: int, points: int, param_copies: int) -> list[slice]:
        """Groups of vectors processed together: one at a time, or (accelerators) as many
        as fit the product budget for ``points`` data points.

        Per vector a product holds the saved activations of the chunk and ``param_copies``
        parameter-sized tensors (a reverse product: the per-parameter gradients, their
        flattened copy and the output row — what dominates at p = 10⁸, 400 MB each)."""
        if not self._batch_vectors:
            return chunk_slices(k, 1)
        lin = self.linearization
        param_bytes = lin.num_params * torch.finfo(lin.dtype).bits // 8
        per_vector = max(1, points * self._per_point + param_copies * param_bytes)
        return chunk_slices(k, max(1, product_budget(lin.device) // per_vector))

    # ------------------------------------------------------------------ products
    def jvp(self, v: Tensor) -> Tensor:
        """J v: ``v`` of shape (p,) gives (n, o); (k, p) gives (k, n, o)."""
        lin = self.linearization
        if not self._tangent_maps:
            return lin.jvp(self.x, v)
        v = lin._prepare_vectors(v, "v", (self.num_params,))
        batched = v.dim() == 2
        vb = v if batched else v.unsqueeze(0)
        outs = []
        for s, tangent_map in zip(self._chunks, self._tangent_maps, strict=True):
            parts = []
            for g in self._vector_groups(vb.shape[0], s.stop - s.start, 1):
                tangents = lin.unflatten(vb[g])  # each: (k_g, *shape)
                if g.stop - g.start == 1:
                    parts.append(tangent_map({k: t[0] for k, t in tangents.items()})[None])
                else:
                    parts.append(vmap(tangent_map)(tangents))
            outs.append(torch.cat(parts, dim=0))
        out = torch.cat(outs, dim=1).detach()  # shape: (k, n, o)
        return out if batched else out[0]

    def vjp(self, u: Tensor) -> Tensor:
        """Jᵀ u: ``u`` of shape (n, o) gives (p,); (k, n, o) gives (k, p)."""
        lin = self.linearization
        if not self._pullbacks:
            return lin.vjp(self.x, u)
        u = lin._prepare_vectors(u, "u", (self.n, self.o))
        batched = u.dim() == 3
        ub = u if batched else u.unsqueeze(0)
        total: Tensor | None = None
        for s, pullback in zip(self._chunks, self._pullbacks, strict=True):
            uc = ub[:, s]  # shape: (k, c, o)
            parts = []
            for g in self._vector_groups(ub.shape[0], s.stop - s.start, 3):
                if g.stop - g.start == 1:
                    parts.append(lin.flatten(pullback(uc[g.start])[0])[None])
                else:
                    parts.append(lin.flatten(vmap(pullback)(uc[g])[0]))
            g_total = torch.cat(parts, dim=0)
            total = g_total if total is None else total.add_(g_total)
        assert total is not None
        out = total.detach()  # shape: (k, p)
        return out if batched else out[0]

    def ntk_vp(self, u: Tensor) -> Tensor:
        """The finite-NTK product J Jᵀ u, shape as ``u``."""
        return self.jvp(self.vjp(u))


def _evaluate_pair(
    lin: Linearization, fn: Callable[[], tuple[Tensor, Callable]], x: Tensor
) -> tuple[Tensor, Callable]:
    """Run a ``torch.func`` transform that returns (output, closure) in eval mode."""
    box: list[Callable] = []

    def first() -> Tensor:
        out, closure = fn()
        box.append(closure)
        return out

    out = lin.evaluate(first, x)
    return out, box[0]
