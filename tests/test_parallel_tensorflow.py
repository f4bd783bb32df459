"""``tf.distribute.MirroredStrategy`` over 2 logical CPU devices: the replica context's
``all_reduce`` of the local denominators gives, summed over the replicas, the loss and gradient
of one device on the whole batch; each replica's own mean does not.

Logical devices must be configured before TensorFlow initialises, so the strategy runs in a
subprocess (``parallel_tensorflow_worker.py``), every reduction in one ``tf.function``.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("tensorflow")

from parallel_data import NAIVE_OFF_BY, REDUCTIONS, TOLERANCE, relative_error, run_worker  # noqa: E402


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return run_worker("parallel_tensorflow_worker.py", timeout=150)


def test_mirrored_strategy_equals_one_device(results: dict[str, Any]) -> None:
    for reduction in REDUCTIONS:
        got, want = results["global"][reduction], results["single"][reduction]
        assert relative_error(got["loss"], want["loss"]) < TOLERANCE, reduction
        assert relative_error(got["grad"], want["grad"]) < TOLERANCE, reduction


def test_naive_replica_mean_is_wrong(results: dict[str, Any]) -> None:
    for reduction in ("mean", "weighted_mean", "batch_mean"):
        got, want = results["naive"][reduction], results["single"][reduction]
        assert relative_error(got["loss"], want["loss"]) > NAIVE_OFF_BY, reduction
        assert relative_error(got["grad"], want["grad"]) > NAIVE_OFF_BY, reduction
