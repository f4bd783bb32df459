"""How far the average of per-shard means is from the mean of the whole batch, and how close
the global reduction (``denominator=``) is, on uneven masked batches.

A linear model ``logits = x @ w`` is trained on a batch split into shards, each reduced on its
own. "naive" averages the shards' losses and gradients (what ``DistributedDataParallel`` does
to the gradients, and what gradient accumulation does with ``loss / n_micro``); "global" sums
each shard's ``binary_cross_entropy_with_logits(..., denominator=D)``, D the sum of the
shards' ``local_denominator``. Printed: the relative error of each against one call on the
whole batch (max |error| / max |exact|), in float32, for each reduction and batch.

Run: ``python examples/parallel_naive_error.py`` (NumPy only; the shards are combined in one
process the way the frameworks combine them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import bce_core

REDUCTIONS = ("mean", "weighted_mean", "batch_mean")

#: (description, rows per shard, share of elements the mask keeps per shard)
BATCHES = (
    ("2 shards of 5 and 3 rows, the second all masked", (5, 3), (0.9, 0.0)),
    ("3 shards of 4, 6, 3 rows, the second all masked", (4, 6, 3), (0.9, 0.0, 0.3)),
    ("4 shards of 16 rows (padding: 90%, 60%, 30%, 10% kept)", (16,) * 4, (0.9, 0.6, 0.3, 0.1)),
)


def make(sizes: tuple[int, ...], keep: tuple[float, ...], seed: int = 0) -> list[Any]:
    """The shards (x, y, mask, weight) of a batch, and the model's weights."""
    rng = np.random.default_rng(seed)
    shards = []
    for size, share in zip(sizes, keep):
        x = rng.normal(size=(size, 3)).astype(np.float32)
        y = (rng.random((size, 2)) < 0.5).astype(np.float32)
        mask = rng.random((size, 2)) < share
        weight = rng.uniform(0.2, 2.0, size=(size, 1)).astype(np.float32)
        shards.append((x, y, mask, weight))
    return [shards, rng.normal(size=(3, 2)).astype(np.float32)]


def loss_and_grad(w: np.ndarray, shard: Any, reduction: str, d: Any = None) -> tuple[float, Any]:
    """The loss on one shard and its gradient with respect to the model's weights."""
    x, y, mask, weight = shard
    options = {"mask": mask, "weight": weight, "reduction": reduction}
    loss, grad = bce_core.value_and_grad(x @ w, y, denominator=d, **options)
    return float(loss), x.T @ grad


def relative(got: Any, want: Any) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def main() -> None:
    print("| batch | reduction | naive loss | naive gradient | global loss | global gradient |")
    print("|---|---|---|---|---|---|")
    for description, sizes, keep in BATCHES:
        shards, w = make(sizes, keep)
        whole = tuple(np.concatenate(parts) for parts in zip(*shards))
        for reduction in REDUCTIONS:
            want_loss, want_grad = loss_and_grad(w, whole, reduction)
            naive = [loss_and_grad(w, shard, reduction) for shard in shards]
            naive_loss = np.mean([loss for loss, _ in naive])
            naive_grad = np.mean([grad for _, grad in naive], axis=0)
            d = sum(
                bce_core.local_denominator(y, reduction=reduction, mask=m, weight=v)
                for _, y, m, v in shards  # the targets have the logits' shape
            )
            parts = [loss_and_grad(w, shard, reduction, d) for shard in shards]
            global_loss = sum(loss for loss, _ in parts)
            global_grad = sum(grad for _, grad in parts)
            print(
                f"| {description} | {reduction} | {relative(naive_loss, want_loss):.1%} | "
                f"{relative(naive_grad, want_grad):.1%} | {relative(global_loss, want_loss):.1e} "
                f"| {relative(global_grad, want_grad):.1e} |"
            )


if __name__ == "__main__":
    main()
