"""The log loss of a linear model and its gradient over a dataset larger than a worker's
memory limit, on a Dask LocalCluster.

The features X (rows x features, float32) and the labels are generated lazily, chunk by chunk,
on the workers: the dataset never exists anywhere in full. The logits X @ w are a Dask
array; ``bce_core.value_and_grad`` sends them to the array_api backend's blockwise path,
which returns the mean log loss and d loss / d logits with the logits' chunks, and the
gradient with respect to the weights is X.T @ (d loss / d logits). One computation streams
every chunk through generation, loss, gradient and the product with X, so the workers'
memory stays far below the dataset's size.

    python examples/dask_linear_model.py                      # 2e7 x 8 float32, 300 MiB workers
    python examples/dask_linear_model.py --rows 100_000_000   # 3.2 GB of features
    python examples/dask_linear_model.py --rows 20000 --check # small: compare with NumPy

It prints the loss, the gradient's norm, the wall time and the peak memory of the worker
processes: their resident set size (RSS), sampled every 20 ms from this process with psutil
(their RSS at rest, before the computation, is printed too).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import psutil
from distributed import Client, LocalCluster, progress

import bce_core

MIB = 2**20


def make_data(
    rows: int, features: int, chunk_rows: int, seed: int
) -> tuple[da.Array, da.Array, np.ndarray]:
    """Lazy features X ~ N(0, 1), labels y ~ Bernoulli(sigmoid(X @ w_true)), and w_true."""
    rng = da.random.default_rng(seed)
    w_true = np.random.default_rng(seed).normal(0.0, 1.0, features).astype(np.float32)
    x = rng.standard_normal((rows, features), chunks=(chunk_rows, features), dtype=np.float32)
    u = rng.random(rows, chunks=chunk_rows, dtype=np.float32)
    # sigmoid(z) = (1 + tanh(z / 2)) / 2: no exp to overflow.
    y = (u < (1 + da.tanh((x @ w_true) / 2)) / 2).astype(np.float32)
    return x, y, w_true


def loss_and_gradient(x: da.Array, y: da.Array, w: np.ndarray) -> tuple[da.Array, da.Array]:
    """The mean log loss of sigmoid(X @ w) and its gradient with respect to w, lazily."""
    logits = x @ w
    loss, grad_logits = bce_core.value_and_grad(logits, y, reduction="mean")
    # d loss / d w = X.T @ (d loss / d logits), accumulated in float64.
    return loss, x.T @ grad_logits.astype(np.float64)


class PeakMemory:
    """The largest RSS of each process in ``pids``, sampled every ``interval`` seconds by a
    thread of this process, while in the ``with`` block."""

    def __init__(self, pids: Sequence[int], interval: float = 0.02) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.peaks = [0] * len(self.processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for i, process in enumerate(self.processes):
                try:
                    self.peaks[i] = max(self.peaks[i], process.memory_info().rss)
                except psutil.Error:  # a worker that died (the nanny restarts it elsewhere)
                    pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="300MiB", help="per worker (default 300MiB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check", action="store_true", help="compare with NumPy in memory (small sizes only)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    x, y, w_true = make_data(args.rows, args.features, args.chunk_rows, args.seed)
    w = (0.5 * w_true).astype(np.float32)  # a model halfway to the truth
    dataset = x.nbytes + y.nbytes
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=args.memory_limit,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        limit = next(iter(cluster.scheduler_info["workers"].values()))["memory_limit"]
        pids = list(client.run(os.getpid).values())
        at_rest = [psutil.Process(pid).memory_info().rss for pid in pids]
        print(
            f"{args.workers} workers, memory limit {limit / MIB:.0f} MiB each; dataset "
            f"{args.rows:,} x {args.features} float32 + labels = {dataset / MIB:,.0f} MiB "
            f"({dataset / limit:.1f}x one worker's limit, in {x.numblocks[0]} chunks)"
        )
        loss, grad = loss_and_gradient(x, y, w)
        with PeakMemory(pids) as peak:
            start = time.perf_counter()
            futures = client.compute([loss, grad])
            progress(futures)
            loss_value, grad_value = client.gather(futures)
            elapsed = time.perf_counter() - start
        print()
        restarted = set(client.run(os.getpid).values()) != set(pids)
        print(f"loss {float(loss_value):.6f}, |d loss / d w| {np.linalg.norm(grad_value):.6f}")
        print(f"wall time {elapsed:.2f} s ({args.rows / elapsed / 1e6:.2f} M rows/s)")
        print(
            f"peak worker RSS {max(peak.peaks) / MIB:.0f} MiB (at rest "
            f"{max(at_rest) / MIB:.0f} MiB; limit {limit / MIB:.0f} MiB; sampled every 20 ms)"
            + ("; a worker was restarted" if restarted else "")
        )
        if args.check:
            xs, ys = client.compute([x, y], sync=True)
            expected, grad_logits = bce_core.value_and_grad(xs @ w, ys, backend="numpy")
            expected_grad = xs.T.astype(np.float64) @ grad_logits.astype(np.float64)
            same = np.isclose(loss_value, expected, rtol=1e-6) and np.allclose(
                grad_value, expected_grad, rtol=1e-5, atol=1e-9
            )
            print(
                f"in-memory NumPy: loss {float(expected):.6f}: {'matches' if same else 'DIFFERS'}"
            )
            return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
