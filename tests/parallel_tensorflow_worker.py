"""The linear model of ``parallel_data`` under ``tf.distribute.MirroredStrategy`` over 2
logical CPU devices, for ``test_parallel_tensorflow.py``.

Run as ``python tests/parallel_tensorflow_worker.py`` (the logical devices must be set up
before TensorFlow initialises). Replica 0 gets 4 rows, replica 1 gets 6 rows, all masked
out. Inside ``tf.function``, each replica's loss uses the denominator summed over the
replicas by the replica context's ``all_reduce``; the losses and gradients are summed
with ``strategy.reduce`` (as the optimizers sum replicas' gradients). For every reduction
the last line of standard output is a JSON object of the loss and the gradient of the
weights, by way: "single" (one device, the whole batch), "global" (the recipe) and
"naive" (each replica's own reduction, averaged over the replicas).
"""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from parallel_data import MASKED, REDUCTIONS, make_batch  # noqa: E402

SIZES = (6, 4)  # shard MASKED (1) is the second


def main() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import bce_core

    assert MASKED == 1
    batch = make_batch(SIZES)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        w = tf.Variable(batch.w0)
    shards = strategy.experimental_distribute_values_from_function(
        lambda context: batch.shard(context.replica_id_in_sync_group)
    )

    def replica_step(shard: Any) -> dict[str, Any]:
        x, y, m, v = shard
        out = {}
        for reduction in REDUCTIONS:
            with tf.GradientTape(persistent=True) as tape:
                logits = tf.matmul(x, w)
                options = {"mask": m, "weight": v, "reduction": reduction}
                naive = bce_core.binary_cross_entropy_with_logits(logits, y, **options)
                if reduction != "sum":
                    local = bce_core.local_denominator(
                        logits, reduction=reduction, mask=m, weight=v
                    )
                    context = tf.distribute.get_replica_context()
                    options["denominator"] = context.all_reduce("sum", local)
                loss = bce_core.binary_cross_entropy_with_logits(logits, y, **options)
            out[reduction] = (loss, tape.gradient(loss, w), naive, tape.gradient(naive, w))
            del tape
        return out

    @tf.function
    def step() -> Any:
        return strategy.run(replica_step, args=(shards,))

    per_replica = step()
    results: dict[str, Any] = {"single": {}, "global": {}, "naive": {}}
    for reduction, (loss, grad, naive, naive_grad) in per_replica.items():

        def total(value: Any) -> list[Any] | float:
            return np.asarray(strategy.reduce("sum", value, axis=None)).tolist()

        def mean(value: Any) -> list[Any] | float:
            return np.asarray(strategy.reduce("mean", value, axis=None)).tolist()

        results["global"][reduction] = {"loss": total(loss), "grad": total(grad)}
        results["naive"][reduction] = {"loss": mean(naive), "grad": mean(naive_grad)}
        one = tf.Variable(batch.w0)
        with tf.GradientTape() as tape:
            whole = bce_core.binary_cross_entropy_with_logits(
                tf.matmul(batch.x, one),
                batch.y,
                mask=batch.mask,
                weight=batch.weight,
                reduction=reduction,
            )
        results["single"][reduction] = {
            "loss": float(whole),
            "grad": np.asarray(tape.gradient(whole, one)).tolist(),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
