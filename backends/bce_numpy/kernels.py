"""Elementwise math of the NumPy backend, in float64 working precision.

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

Every quantity is a sum or product of non-negative terms, so nothing cancels
and float32 results rounded from these are within 1 ULP of exact.

>>> import numpy as np
>>> parts = LogitParts.of(np.array([-30.0, 0.0, 30.0]))
>>> parts.softplus_neg.tolist()[2] > 0
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def zero_safe(coefficient: np.ndarray, value: np.ndarray) -> np.ndarray:
    """coefficient * value where a zero coefficient gives exactly 0 (also times inf)."""
    with np.errstate(invalid="ignore"):
        product = np.multiply(coefficient, value)
    return np.where(np.equal(coefficient, 0), 0.0, product)


@dataclass(frozen=True)
class LogitParts:
    """softplus(±x) and sigma(±x) from one exp and one log1p per element."""

    x: np.ndarray
    e: np.ndarray
    log1p_e: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> LogitParts:
        e = np.exp(-np.abs(x))
        return cls(x, e, np.log1p(e))

    @property
    def softplus_pos(self) -> np.ndarray:
        return np.maximum(self.x, 0.0) + self.log1p_e

    @property
    def softplus_neg(self) -> np.ndarray:
        return np.maximum(-self.x, 0.0) + self.log1p_e

    def sigmoids(self) -> tuple[np.ndarray, np.ndarray]:
        """(sigma(x), sigma(-x)); NaN stays NaN in both."""
        big = 1.0 / (1.0 + self.e)      # sigma(|x|)
        small = self.e * big            # sigma(-|x|), never 1 - big
        positive = self.x >= 0
        return np.where(positive, big, small), np.where(positive, small, big)
