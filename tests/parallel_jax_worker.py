"""The linear model of ``parallel_data`` on 4 host devices, for ``test_parallel_jax.py``.

Run as ``python tests/parallel_jax_worker.py`` (it sets ``XLA_FLAGS`` to 4 host devices
before importing JAX). The batch of 16 rows is split into 4 shards of 4 rows; the mask keeps
a different share of each, none of shard 1. For every reduction it prints, as the last line
of standard output, a JSON object of the loss and the gradient of the weights, by way:

- "single": one device, the whole batch;
- "outer": ``shard_map`` of the shard's loss with the ``psum`` of the local denominators,
  ``psum`` of the losses, gradient taken outside;
- "inner": the gradient taken inside ``shard_map`` (with ``check_vma``, the default, JAX
  sums a replicated parameter's gradient over the axis itself);
- "inner_psum": inside with ``check_vma=False``, the gradients summed with ``psum``;
- "jit": ``jax.jit`` of the ordinary call on arrays sharded across the 4 devices;
- "naive": each shard's own reduction, losses and gradients averaged (``pmean``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from parallel_data import REDUCTIONS, make_batch  # noqa: E402

import bce_core  # noqa: E402

SIZES = (4, 4, 4, 4)
AXIS = "batch"


def shard_loss(w: Any, x: Any, y: Any, m: Any, v: Any, reduction: str) -> Any:
    """The shard's share of the global loss, inside ``shard_map`` (the recipe)."""
    logits = x @ w
    if reduction == "sum":
        return bce_core.binary_cross_entropy_with_logits(
            logits, y, mask=m, weight=v, reduction="sum"
        )
    local = bce_core.local_denominator(logits, reduction=reduction, mask=m, weight=v)
    d = jax.lax.psum(local, AXIS)
    return bce_core.binary_cross_entropy_with_logits(
        logits, y, mask=m, weight=v, reduction=reduction, denominator=d
    )


def naive_loss(w: Any, x: Any, y: Any, m: Any, v: Any, reduction: str) -> Any:
    return bce_core.binary_cross_entropy_with_logits(
        x @ w, y, mask=m, weight=v, reduction=reduction
    )


def all_reductions(one: Callable[[str], Any]) -> dict[str, Any]:
    return {reduction: one(reduction) for reduction in REDUCTIONS}


def main() -> None:
    assert jax.device_count() == 4, jax.devices()
    batch = make_batch(SIZES)
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    data = (batch.x, batch.y, batch.mask, batch.weight)
    replicated, split = P(), P(AXIS)
    specs = (replicated, split, split, split, split)

    def single(w: Any) -> dict[str, Any]:
        return all_reductions(lambda r: jax.value_and_grad(naive_loss)(w, *data, r))

    def outer(w: Any) -> dict[str, Any]:
        def one(reduction: str) -> Any:
            def summed(w: Any, *shard: Any) -> Any:
                return jax.lax.psum(shard_loss(w, *shard, reduction), AXIS)

            mapped = jax.shard_map(summed, mesh=mesh, in_specs=specs, out_specs=replicated)
            return jax.value_and_grad(lambda w: mapped(w, *data))(w)

        return all_reductions(one)

    def inner(w: Any, check_vma: bool) -> dict[str, Any]:
        def one(reduction: str) -> Any:
            def step(w: Any, *shard: Any) -> Any:
                loss, grad = jax.value_and_grad(shard_loss)(w, *shard, reduction)
                if not check_vma:  # each device holds its shard's gradient: sum them
                    grad = jax.lax.psum(grad, AXIS)
                return jax.lax.psum(loss, AXIS), grad

            mapped = jax.shard_map(
                step,
                mesh=mesh,
                in_specs=specs,
                out_specs=(replicated, replicated),
                check_vma=check_vma,
            )
            return mapped(w, *data)

        return all_reductions(one)

    sharded = [jax.device_put(a, NamedSharding(mesh, split)) for a in data]

    def plain_jit(w: Any) -> dict[str, Any]:
        return all_reductions(lambda r: jax.value_and_grad(naive_loss)(w, *sharded, r))

    def naive(w: Any) -> dict[str, Any]:
        def one(reduction: str) -> Any:
            def averaged(w: Any, *shard: Any) -> Any:
                return jax.lax.pmean(naive_loss(w, *shard, reduction), AXIS)

            mapped = jax.shard_map(averaged, mesh=mesh, in_specs=specs, out_specs=replicated)
            return jax.value_and_grad(lambda w: mapped(w, *data))(w)

        return all_reductions(one)

    ways = {
        "single": single,
        "outer": outer,
        "inner": lambda w: inner(w, True),
        "inner_psum": lambda w: inner(w, False),
        "jit": plain_jit,
        "naive": naive,
    }
    results: dict[str, Any] = {}
    for name, way in ways.items():
        computed = jax.jit(way)(batch.w0)
        results[name] = {
            r: {"loss": float(loss), "grad": np.asarray(grad).tolist()}
            for r, (loss, grad) in computed.items()
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
