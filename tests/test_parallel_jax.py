"""JAX on 4 host devices: ``shard_map`` with the ``psum`` of the local denominators, and
``jax.jit`` on sharded arrays, give the loss and gradient of one device on the whole batch;
each shard's own mean does not.

The devices exist only if ``XLA_FLAGS`` is set before JAX initialises, so the computation runs
in a subprocess (``parallel_jax_worker.py``), every reduction in one go.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jax")

from parallel_data import REDUCTIONS, relative_error  # noqa: E402

WORKER = Path(__file__).with_name("parallel_jax_worker.py")
#: float32 summation in a different order: a few units in the last place.
TOLERANCE = 1e-6
NAIVE_OFF_BY = 1e-2


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("way", ["outer", "inner", "inner_psum", "jit"])
def test_sharded_equals_one_device(results: dict[str, Any], way: str) -> None:
    for reduction in REDUCTIONS:
        got, want = results[way][reduction], results["single"][reduction]
        assert relative_error(got["loss"], want["loss"]) < TOLERANCE, reduction
        assert relative_error(got["grad"], want["grad"]) < TOLERANCE, reduction


def test_naive_shard_mean_is_wrong(results: dict[str, Any]) -> None:
    for reduction in ("mean", "weighted_mean"):
        got, want = results["naive"][reduction], results["single"][reduction]
        assert relative_error(got["loss"], want["loss"]) > NAIVE_OFF_BY, reduction
        assert relative_error(got["grad"], want["grad"]) > NAIVE_OFF_BY, reduction
    # shard_map splits evenly, and shards of equal size share batch_mean's denominator.
    got, want = results["naive"]["batch_mean"], results["single"]["batch_mean"]
    assert relative_error(got["grad"], want["grad"]) < TOLERANCE
