"""One rank of a ``torch.distributed`` (gloo, CPU) group training the linear model of
``parallel_data`` on its shard, for ``test_parallel_torch.py``.

Run as ``python tests/parallel_torch_worker.py RANK WORLD PORT SIZE,SIZE,...``: rank RANK
of WORLD, meeting at ``tcp://127.0.0.1:PORT``, on shard RANK of ``make_batch(SIZES)``. For
every reduction it takes one backward pass three ways and prints, as the last line of
standard output, a JSON object of each way's loss on this rank and the combined gradient of
the model's weights (the same on every rank), by way and reduction:

- "ddp": the model wrapped in ``DistributedDataParallel`` (which averages the ranks'
  gradients), the loss of ``bce_core.torch.BCEWithLogitsLoss`` with
  ``denominator=global_denominator(...)`` (``reduction="sum"`` times the world size);
- "plain": no DDP, the functional loss with ``global_denominator(..., averaged=False)`` and
  the gradients summed with ``all_reduce``;
- "naive": DDP and each rank's own reduction, no denominator.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from parallel_data import FEATURES, OUTPUTS, REDUCTIONS, make_batch
from torch.nn.parallel import DistributedDataParallel

import bce_core
from bce_core.torch import BCEWithLogitsLoss, global_denominator


def _linear(w0: Any) -> torch.nn.Linear:
    model = torch.nn.Linear(FEATURES, OUTPUTS, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w0.T))
    return model


def run(rank: int, world: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    batch = make_batch(sizes)
    x, y, mask, weight = (torch.from_numpy(a) for a in batch.shard(rank))
    model = _linear(batch.w0)
    ddp = DistributedDataParallel(model)
    results: dict[str, Any] = {"ddp": {}, "plain": {}, "naive": {}}
    for reduction in REDUCTIONS:
        # DDP, with the module and the averaged global denominator.
        model.zero_grad()
        logits = ddp(x)
        loss_fn = BCEWithLogitsLoss(weight=weight, reduction=reduction)
        if reduction == "sum":
            loss = loss_fn(logits, y, mask) * world  # DDP averages: the sum needs no denominator
        else:
            d = global_denominator(logits, reduction=reduction, mask=mask, weight=weight)
            loss = loss_fn(logits, y, mask, denominator=d)
        loss.backward()
        results["ddp"][reduction] = {"loss": loss.item(), "grad": model.weight.grad.T.tolist()}

        # No DDP: the functional loss, the gradients summed by hand.
        w = torch.from_numpy(batch.w0.copy()).requires_grad_(True)
        logits = x @ w
        options: dict[str, Any] = {"mask": mask, "weight": weight, "reduction": reduction}
        if reduction != "sum":
            options["denominator"] = global_denominator(
                logits, reduction=reduction, mask=mask, weight=weight, averaged=False
            )
        loss = bce_core.binary_cross_entropy_with_logits(logits, y, **options)
        loss.backward()
        assert w.grad is not None
        dist.all_reduce(w.grad, op=dist.ReduceOp.SUM)
        results["plain"][reduction] = {"loss": loss.item(), "grad": w.grad.tolist()}

        # DDP and each rank's own mean: what goes wrong.
        model.zero_grad()
        loss = bce_core.binary_cross_entropy_with_logits(
            ddp(x), y, mask=mask, weight=weight, reduction=reduction
        )
        loss.backward()
        results["naive"][reduction] = {"loss": loss.item(), "grad": model.weight.grad.T.tolist()}
    return results


def main(argv: list[str]) -> None:
    rank, world, port = int(argv[1]), int(argv[2]), int(argv[3])
    sizes = tuple(int(s) for s in argv[4].split(","))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        results = run(rank, world, sizes)
    finally:
        dist.destroy_process_group()
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv)
