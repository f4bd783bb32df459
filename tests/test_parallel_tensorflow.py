"""``tf.distribute.MirroredStrategy`` over 2 logical CPU devices: the replica context's
``all_reduce`` of the local denominators gives, summed over the replicas, the loss and gradient
of one device on the whole batch; each replica's own mean does not.

Logical devices must be configured before TensorFlow initialises, so the strategy runs in a
subprocess (``parallel_tensorflow_worker.py``), every reduction in one ``tf.function``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorflow")

from parallel_data import REDUCTIONS, relative_error  # noqa: E402

WORKER = Path(__file__).with_name("parallel_tensorflow_worker.py")
#: float32 summation in a different order: a few units in the last place.
TOLERANCE = 1e-6
NAIVE_OFF_BY = 1e-2


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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
