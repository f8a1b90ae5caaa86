"""Data-parallel adaptation on ``torch.distributed`` (``torchrun``; NCCL on GPUs, Gloo on CPUs).

Each rank holds a replica of the network and a shard of the target data; every sum over
data points that inference needs goes through one reduction hook,
:class:`DataReduction` (a no-op on one process, ``all_reduce`` under a process group):

* ``ntkcore.adapt(model, x_shard, y_shard, ..., process_group=group)`` — every strategy;
  the posterior on every rank equals ``adapt`` on the concatenated shards (to the
  solver's tolerance). Weight-space CG costs one all-reduce of k p-vectors per product
  (k = 1 in CG): 4p bytes per iteration in float32, 8p in float64.
* a shard may be empty (more ranks than points, uneven splits) as long as some rank
  holds a point (:mod:`ntkcore.distributed.shards`);
* ``post.predict(x_test_shard)`` — each rank its own test points, possibly none
  (collective only when accurate variances need block-CG corrections);
* ``post.log_marginal_likelihood()``, ``ntkcore.fisher_vp(..., process_group=group)`` and
  ``ntkcore.fit_hyperparameters(..., process_group=group)`` — collective as well.

:func:`init_from_env` sets up a group inside a ``torchrun`` script, :func:`run_local`
spawns a local Gloo group (tests, benchmarks), and ``python -m ntkcore.distributed`` is a
ready-made ``torchrun`` entry point (``docs/DISTRIBUTED.md``).
"""

from ntkcore.distributed.launch import RankOutcome, init_from_env, run_local, shard_bounds
from ntkcore.distributed.reduction import LOCAL, DataReduction, DistributedError

__all__ = [
    "LOCAL",
    "DataReduction",
    "DistributedError",
    "RankOutcome",
    "init_from_env",
    "run_local",
    "shard_bounds",
]
