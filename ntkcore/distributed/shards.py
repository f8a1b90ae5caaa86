"""One rank's shard of the training inputs: validated, possibly empty.

Sharding n points over more ranks than n, or an uneven split, leaves some ranks without
points. Such a rank still joins every collective of :func:`ntkcore.adapt`,
:func:`ntkcore.fisher_vp`, :func:`ntkcore.fit_hyperparameters` and ``predict``: its sums
over data points are empty (zeros), its function-space rows are (0, o) tensors
(:meth:`ntkcore.Linearization.prepare_batch`). The only thing it cannot find out alone is
the number of outputs per point o. It learns o from the ranks that hold points — one
all-gathered int — rather than from a forward pass on a zero-row batch, which many
networks reject (``x.view(x.shape[0], -1)`` cannot infer -1 from 0 elements).
"""

from __future__ import annotations

from torch import Tensor

from ntkcore.distributed.reduction import DataReduction
from ntkcore.linearization import Linearization, as_real_tensor

__all__ = ["prepare_shard"]


def prepare_shard(
    lin: Linearization,
    x: object,
    reduction: DataReduction,
    what: str,
    *,
    on_device: bool = True,
) -> Tensor:
    """Validate this rank's inputs and agree on o across the group (collective).

    Parameters
    ----------
    lin : Linearization
    x : Tensor
        This rank's inputs, shape (n_r, *input_shape); n_r = 0 is allowed under a process
        group as long as some rank holds a point (one process: ``ValueError``).
    reduction : DataReduction
    what : str
        The caller, for error messages (``"adapt's input validation"``).
    on_device : bool
        Move ``x`` to the network's device and dtype (:meth:`Linearization.prepare_inputs`);
        ``False`` leaves it where it is (streaming: shards are moved and validated later)
        and validates only its first point.

    Returns
    -------
    Tensor
        The inputs; afterwards ``lin.output_dim(x)`` is o on every rank.

    Raises
    ------
    ValueError
        On every rank, naming the ranks whose input was invalid, or when no rank holds a
        point, or when the ranks' networks disagree on o.
    """
    error: Exception | None = None
    local_o: int | None = None
    allow_empty = reduction.distributed
    try:
        if on_device:
            x = lin.prepare_inputs(x, allow_empty=allow_empty)
        else:  # x stays off the device; shards are validated as they are moved
            x = as_real_tensor(x, "x")
            if x.dim() == 0 or (x.shape[0] == 0 and not allow_empty):
                raise ValueError(f"x must have at least one point, got shape {tuple(x.shape)}")
        assert isinstance(x, Tensor)
        if x.shape[0] > 0:
            local_o = lin.output_dim(x if on_device else lin.prepare_inputs(x[:1]))
    except Exception as err:  # every rank must learn of it (no-op on one process)
        error = err
    reduction.check(error, what)
    assert isinstance(x, Tensor)
    if reduction.distributed:  # one int; a rank without points learns o here
        lin.set_output_dim(reduction.shared_int(local_o, "outputs per point"))
    return x
