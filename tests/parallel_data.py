"""The batches of the data-parallel tests, as NumPy arrays, the same in every process.

A linear model ``logits = x @ w`` (no bias) of :data:`FEATURES` inputs and :data:`OUTPUTS`
outputs, a weight per row, and a mask per element. The batch is cut into shards of the
given sizes; the mask keeps a different share of each shard's elements, and none of the
shard :data:`MASKED` (its local count and sum of weights are 0), so every shard's own mean
divides by a different count and the naive average of the shards' means is wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: float32 summation in a different order: a few units in the last place.
TOLERANCE = 1e-6
#: The naive per-shard mean is off by far more than rounding.
NAIVE_OFF_BY = 1e-2

FEATURES, OUTPUTS = 3, 2
#: The reductions the tests combine: "sum" needs no denominator, the others the global one.
REDUCTIONS = ("sum", "mean", "weighted_mean", "batch_mean")
#: The shard whose every element is masked out.
MASKED = 1
#: The share of elements the mask keeps in each shard (cycled), beside the masked one.
KEEP = (0.9, 0.0, 0.3, 0.6, 0.75)


class Batch(NamedTuple):
    x: np.ndarray  # (rows, FEATURES)
    y: np.ndarray  # (rows, OUTPUTS)
    mask: np.ndarray  # (rows, OUTPUTS), bool
    weight: np.ndarray  # (rows, 1)
    w0: np.ndarray  # (FEATURES, OUTPUTS), the model's starting weights
    bounds: list[tuple[int, int]]  # each shard's rows, [start, stop)

    def shard(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        start, stop = self.bounds[index]
        return (
            self.x[start:stop],
            self.y[start:stop],
            self.mask[start:stop],
            self.weight[start:stop],
        )


def make_batch(sizes: tuple[int, ...], seed: int = 0) -> Batch:
    """The batch of shards of ``sizes`` rows, float32.

    >>> b = make_batch((3, 5))
    >>> b.x.shape, b.bounds, bool(b.shard(1)[2].any())
    ((8, 3), [(0, 3), (3, 8)], False)
    """
    rng = np.random.default_rng(seed)
    rows = sum(sizes)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (rng.random((rows, OUTPUTS)) < 0.5).astype(np.float32)
    weight = rng.uniform(0.2, 2.0, size=(rows, 1)).astype(np.float32)
    w0 = rng.normal(size=(FEATURES, OUTPUTS)).astype(np.float32)
    mask = np.zeros((rows, OUTPUTS), bool)
    bounds, start = [], 0
    for index, size in enumerate(sizes):
        keep = 0.0 if index == MASKED else KEEP[index % len(KEEP)]
        mask[start : start + size] = rng.random((size, OUTPUTS)) < keep
        if index != MASKED and size and not mask[start : start + size].any():
            mask[start, 0] = True  # every other shard keeps something
        bounds.append((start, start + size))
        start += size
    return Batch(x, y, mask, weight, w0, bounds)


def relative_error(got: Any, want: Any) -> float:
    """max |got - want| over max |want| (or over 1 where want is 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max()), 1e-30) if want.size else 1.0
    return float(np.abs(got - want).max() / scale) if want.size else 0.0


def run_worker(script: str, timeout: float) -> dict[str, Any]:
    """Run ``tests/<script>`` in a fresh interpreter (its devices need set-up before its
    framework starts) and return the JSON object of its last line of output."""
    worker = Path(__file__).with_name(script)
    done = subprocess.run([sys.executable, str(worker)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
