"""``torch.distributed`` (gloo, CPU) with 2 and 3 processes, with and without
``DistributedDataParallel``: the global denominator gives the loss and gradient of one
process on the whole batch, and each rank's own mean does not.

Each test starts its ranks as subprocesses (``parallel_torch_worker.py``) on a free port,
waits for them with a timeout and kills any left; every rank runs every reduction.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from parallel_data import NAIVE_OFF_BY, REDUCTIONS, TOLERANCE, make_batch, relative_error  # noqa: E402

import bce_core  # noqa: E402

WORKER = Path(__file__).with_name("parallel_torch_worker.py")
#: Shards of uneven sizes (shard 1 entirely masked out).
SIZES = {2: (5, 3), 3: (4, 6, 3)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_group(world: int) -> list[dict[str, Any]]:
    """Every rank's results, in rank order."""
    port = _free_port()
    sizes = ",".join(map(str, SIZES[world]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(port), sizes],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(world)
    ]
    try:
        outputs = [process.communicate(timeout=90) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.communicate()
    results = []
    for rank, (process, (out, err)) in enumerate(zip(ranks, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _single_process(world: int, reduction: str) -> tuple[float, np.ndarray]:
    """The loss and weights' gradient of one process on the concatenated batch."""
    batch = make_batch(SIZES[world])
    w = torch.from_numpy(batch.w0.copy()).requires_grad_(True)
    loss = bce_core.binary_cross_entropy_with_logits(
        torch.from_numpy(batch.x) @ w,
        torch.from_numpy(batch.y),
        mask=torch.from_numpy(batch.mask),
        weight=torch.from_numpy(batch.weight),
        reduction=reduction,
    )
    loss.backward()
    return loss.item(), w.grad.numpy()


@pytest.mark.parametrize("world", [2, 3])
def test_global_denominator_matches_one_process(world: int) -> None:
    results = _run_group(world)
    for reduction in REDUCTIONS:
        want_loss, want_grad = _single_process(world, reduction)
        # DDP averages the ranks' gradients (and the losses are averaged to report them);
        # without DDP the losses and gradients are summed.
        combined = {
            "ddp": np.mean([r["ddp"][reduction]["loss"] for r in results]),
            "plain": np.sum([r["plain"][reduction]["loss"] for r in results]),
        }
        for way, loss in combined.items():
            grads = [np.array(r[way][reduction]["grad"]) for r in results]
            for grad in grads[1:]:
                np.testing.assert_array_equal(grad, grads[0])  # one gradient on every rank
            assert relative_error(loss, want_loss) < TOLERANCE, (way, reduction)
            assert relative_error(grads[0], want_grad) < TOLERANCE, (way, reduction)
        if reduction != "sum":
            naive_loss = np.mean([r["naive"][reduction]["loss"] for r in results])
            naive_grad = np.array(results[0]["naive"][reduction]["grad"])
            assert relative_error(naive_loss, want_loss) > NAIVE_OFF_BY, reduction
            assert relative_error(naive_grad, want_grad) > NAIVE_OFF_BY, reduction


def test_one_process_without_a_group_is_local() -> None:
    x = torch.zeros(4, 2)
    mask = torch.tensor([[True, False]] * 4)
    from bce_core.torch import global_denominator

    assert not torch.distributed.is_initialized()
    assert global_denominator(x, mask=mask).item() == 4.0
    assert global_denominator(x, reduction="batch_mean", averaged=False).item() == 4.0
