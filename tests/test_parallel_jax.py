"""JAX on 4 host devices: ``shard_map`` with the ``psum`` of the local denominators, and
``jax.jit`` on sharded arrays, give the loss and gradient of one device on the whole batch;
each shard's own mean does not.

The devices exist only if ``XLA_FLAGS`` is set before JAX initialises, so the computation runs
in a subprocess (``parallel_jax_worker.py``), every reduction in one go.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("jax")

from parallel_data import NAIVE_OFF_BY, REDUCTIONS, TOLERANCE, relative_error, run_worker  # noqa: E402


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return run_worker("parallel_jax_worker.py", timeout=120)


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
