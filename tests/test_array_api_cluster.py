"""The Dask path on a real distributed cluster: a LocalCluster of two worker processes,
started and stopped here, on 10^7 elements in uneven chunks with weight, pos_weight, mask
and label smoothing, every reduction equal to the in-memory NumPy result within parity,
through the public API (Dask arrays go to the array_api backend's blockwise path).

The data are generated on the workers (``dask.array.random``, seeded: nothing is shipped
from here); the in-memory reference computes the same arrays in this process. The workers
import this checkout through the inherited PYTHONPATH.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import psutil  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402
from test_array_api_dask import assert_parity  # noqa: E402

import bce_core  # noqa: E402

SHAPE = (250_007, 40)  # 10,000,280 elements
ROWS = (30_000, 45_001, 40_000, 35_000, 50_000, 25_006, 25_000)
COLUMNS = (25, 15)
REDUCTIONS = ("none", "sum", "mean", "weighted_mean", "batch_mean")
NAMES = ("logits", "targets", "weight", "pos_weight")
EPS = 0.05
#: The longest wait for one computation on the cluster.
TIMEOUT = 90


def lazy_data() -> dict[str, da.Array]:
    """The operands as lazy, seeded Dask arrays; weight, pos_weight and mask have chunks of
    their own (rechunked to the logits' by the chunked path)."""
    rng = da.random.default_rng(20261204)
    chunks = (ROWS, COLUMNS)
    u = rng.random(SHAPE, chunks=chunks, dtype=np.float32)
    w = rng.random((SHAPE[0], 1), chunks=(50_000, 1), dtype=np.float32)
    return {
        "x": rng.standard_normal(SHAPE, chunks=chunks, dtype=np.float32) * np.float32(4),
        # Hard and soft targets.
        "y": da.where(u < 0.3, 0, da.where(u > 0.7, 1, u)).astype(np.float32),
        # Per-row weights, some exactly 0.
        "w": da.where(w < 0.1, 0, 2 * w).astype(np.float32),
        "q": rng.uniform(0.5, 3.0, (SHAPE[1],), chunks=16).astype(np.float32),
        "m": rng.random(SHAPE, chunks=(60_000, 40)) < 0.8,
    }


def worker_processes(client: Client) -> list[psutil.Process]:
    pids = client.run(os.getpid, wait=True)
    return [psutil.Process(pid) for pid in pids.values()]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Client, dict[str, da.Array]]]:
    """Two worker processes with one thread each, and the data generated and kept on them;
    torn down at the end, and no worker process left behind."""
    start = time.perf_counter()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    local = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="2GiB",
        silence_logs=logging.ERROR,
    )
    client = Client(local, timeout="60s")
    workers = worker_processes(client)
    try:
        assert len(workers) == 2 and all(w.pid != os.getpid() for w in workers)
        assert set(client.run(lambda: os.environ.get("PYTHONPATH"), wait=True).values()) == {
            os.environ.get("PYTHONPATH")
        }
        data = dict(zip("xywqm", client.persist(list(lazy_data().values()))))
        wait(list(data.values()), timeout=TIMEOUT)
        print(f"cluster and data ready in {time.perf_counter() - start:.1f} s")
        yield client, data
    finally:
        client.close(timeout=30)
        local.close(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], f"worker processes left behind: {alive}"
        assert new_children(before) == []


def new_children(before: set[int]) -> list[str]:
    """The command lines of this process's descendants not in ``before``, but for
    multiprocessing's resource tracker (started once per process by the first spawn, it
    ends with this process)."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:  # ended meanwhile
            continue
        if child.pid not in before and "resource_tracker" not in line:
            left.append(line)
    return left


@pytest.fixture(scope="module")
def in_memory() -> dict[str, np.ndarray]:
    """The same data in this process, computed from the same seeded graph."""
    arrays = dask.compute(lazy_data(), scheduler="synchronous")[0]
    return arrays


def numpy_result(arrays: dict[str, np.ndarray], reduction: str) -> tuple[Any, tuple[Any, ...]]:
    return bce_core.get_backend("numpy").value_and_grad(
        arrays["x"],
        arrays["y"],
        weight=arrays["w"],
        pos_weight=arrays["q"],
        mask=arrays["m"],
        label_smoothing=EPS,
        reduction=reduction,
        wrt=NAMES,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_reduction_equals_the_in_memory_result(
    cluster: tuple[Client, dict[str, da.Array]], in_memory: dict[str, np.ndarray], reduction: str
) -> None:
    client, data = cluster
    x = data["x"]
    assert x.chunks == (ROWS, COLUMNS) and x.size >= 10**7
    loss, grads = bce_core.value_and_grad(
        x,
        data["y"],
        weight=data["w"],
        pos_weight=data["q"],
        mask=data["m"],
        label_smoothing=EPS,
        reduction=reduction,
        wrt=NAMES,
    )
    assert isinstance(loss, da.Array) and grads[0].chunks == grads[1].chunks == (ROWS, COLUMNS)
    futures = client.compute([loss, *grads])
    wait(futures, timeout=TIMEOUT)
    got_loss, *got = client.gather(futures)
    expected_loss, expected = numpy_result(in_memory, reduction)
    assert_parity(got_loss, expected_loss, ulps=2)
    for name, g, e in zip(NAMES, got, expected):
        scale = np.abs(e.astype(np.float64))
        if name in ("weight", "pos_weight"):  # sums of many terms: allow for cancellation
            scale = scale + 2.0**-20 * scale.max()
        assert_parity(g, e, ulps=2, scale=scale)


def test_validate_on_the_cluster_names_the_first_bad_element_in_c_order(
    cluster: tuple[Client, dict[str, da.Array]], in_memory: dict[str, np.ndarray]
) -> None:
    """NaN is checked first; then of the targets outside [0, 1], (160000, 30) comes first in C
    order, though its block follows (170000, 2)'s."""
    _, data = cluster
    y, m = data["y"].copy(), data["m"].copy()
    ys, ms = in_memory["y"].copy(), in_memory["m"].copy()
    for index, value in (((170_000, 2), -0.25), ((160_000, 30), 1.5), ((180_000, 1), np.nan)):
        y[index], ys[index] = value, value
        m[index] = ms[index] = True
    with pytest.raises(ValueError) as got:
        bce_core.binary_cross_entropy_with_logits(data["x"], y, mask=m, validate=True)
    with pytest.raises(ValueError) as expected:
        bce_core.get_backend("numpy").binary_cross_entropy_with_logits(
            in_memory["x"], ys, mask=ms, validate=True
        )
    assert str(got.value) == str(expected.value)
    assert str(got.value).startswith("targets[180000, 1] = nan is NaN")
    m[180_000, 1] = ms[180_000, 1] = False  # masked out: not checked
    with pytest.raises(ValueError) as got:
        bce_core.binary_cross_entropy_with_logits(data["x"], y, mask=m, validate=True)
    assert str(got.value).startswith("targets[160000, 30] = 1.5 is outside [0, 1]")
