"""The benchmark's data: float32 logits ~ N(0, 3) and hard 0/1 targets, from a fixed seed.

Every backend and every dtype get the same values (rounded to the dtype), so
the losses of the implementations being compared can be checked against each
other before they are timed.

>>> logits, targets = make_inputs(5)
>>> logits.dtype, targets.dtype, sorted(set(targets.tolist())) <= [0.0, 1.0]
(dtype('float32'), dtype('float32'), True)
>>> bool((make_inputs(5)[0] == logits).all())
True
"""

from __future__ import annotations

import numpy as np

SEED = 20240607
LOGIT_SCALE = 3.0


class DtypeUnavailable(Exception):
    """A dtype this installation cannot make (bfloat16 without ml_dtypes)."""


def make_inputs(size: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``size`` logits ~ N(0, 3) and targets in {0, 1}, both float32, as a 1-d pair."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, LOGIT_SCALE, size).astype(np.float32)
    targets = (rng.random(size) < 0.5).astype(np.float32)
    return logits, targets


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype called ``name``; bfloat16 comes from ml_dtypes.

    >>> numpy_dtype("float16")
    dtype('float16')
    """
    if name == "bfloat16":
        try:
            import ml_dtypes  # installed with JAX and TensorFlow, optional otherwise
        except ImportError:
            raise DtypeUnavailable(
                "bfloat16 NumPy arrays need ml_dtypes (pip install ml_dtypes)"
            ) from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
