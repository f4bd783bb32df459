"""The Array API backend's time against the NumPy backend's, on the same NumPy arrays.

``value_and_grad`` of float32 logits, one thread, the best of several calls at each size;
the ratio is the Array API backend's time over the NumPy backend's, measured in the same run.

    python examples/array_api_speed.py [--sizes 1e3,1e5,1e6]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import bce_core  # noqa: E402


def best_of(call: Callable[[], object], rounds: int) -> float:
    """The shortest of ``rounds`` timed calls, in seconds (after one untimed call)."""
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e3,1e5,1e6", help="element counts, comma-separated")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'elements':>10}  {'numpy':>10}  {'array_api':>10}  ratio")
    for size in (int(float(s)) for s in args.sizes.split(",")):
        x = rng.standard_normal(size).astype(np.float32)
        y = (rng.random(size) < 0.5).astype(np.float32)
        rounds = 20 if size < 10**6 else 5
        numpy_time, ours = (
            best_of(functools.partial(bce_core.value_and_grad, x, y, backend=backend), rounds)
            for backend in ("numpy", "array_api")
        )
        print(
            f"{size:>10}  {numpy_time * 1e3:8.3f}ms  {ours * 1e3:8.3f}ms  {ours / numpy_time:.1f}x"
        )


if __name__ == "__main__":
    main()
