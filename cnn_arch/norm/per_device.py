"""Per-device BN statistics under a device ``Mesh`` (the pre-SPMD data-parallel BN).

Under ``jax.jit`` with the batch sharded over the mesh, ``nn.BatchNorm``'s statistics
are those of the *global* batch (XLA inserts the all-reduce: "sync BN"). The classic
multi-GPU/TPU recipe instead normalizes each device's shard with its own statistics
(Goyal et al. 2017, Sec. 5.1: BN batch = per-worker batch), which is ghost BN with
k = global batch / number of devices (``ghost.py``). ``apply_per_device`` gets it from
any unchanged model (BN layers with ``axis_name=None``) by running the model body
under ``jax.shard_map``: statistics stay local, and only the running-average update
is ``pmean``-ed so the replicated ``batch_stats`` stay replicated.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def apply_per_device(
    model: nn.Module,
    variables: Any,
    x: Any,
    *,
    mesh: Mesh,
    axis: str = "data",
    rngs: dict[str, jax.Array] | None = None,
    **apply_kwargs: Any,
) -> tuple[jax.Array, Any]:
    """Training-mode forward pass with per-device BN statistics; returns ``(logits, batch_stats)``.

    ``x`` (an array or pytree of arrays with the batch first) is split over mesh axis
    ``axis``; ``variables`` are replicated. Every device runs
    ``model.apply(variables, shard, train=True, mutable=['batch_stats'], **apply_kwargs)``
    and the new running averages are averaged over devices. Each device's dropout key
    is ``fold_in(key, device index)``. Differentiable, and traceable inside ``jax.jit``.
    """
    put = lambda tree, spec: jax.device_put(tree, NamedSharding(mesh, spec))
    keys = rngs or {}

    def body(variables, x, keys):
        index = jax.lax.axis_index(axis)
        keys = {name: jax.random.fold_in(k, index) for name, k in keys.items()}
        logits, updates = model.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs=keys, **apply_kwargs
        )
        # m*ra + (1-m)*local averaged over devices = m*ra + (1-m)*mean of the shards'
        # statistics: ghost BN's update with one sub-batch per device.
        return logits, jax.lax.pmean(updates["batch_stats"], axis)

    sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(axis), P()), out_specs=(P(axis), P()))
    return sharded(put(variables, P()), put(x, P(axis)), put(keys, P()))
