"""Elementwise math of the NumPy backend, in float64 working precision.

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

Every quantity is a sum or product of non-negative terms, so nothing cancels
and float32 results rounded from these are within 1 ULP of exact. The
coefficients multiply through ``rules.zero_safe`` (a coefficient of exactly 0
contributes exactly 0); None stands for a coefficient of 1.

>>> import numpy as np
>>> parts = LogitParts.of(np.array([-30.0, 0.0, 30.0]))
>>> parts.softplus_neg.tolist()[2] > 0
True
>>> parts.bracket(np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0]), None).tolist()[1]
0.6931471805599453
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bce_core.arrays import NUMPY_OPS
from bce_core.rules import times, weight_times, zero_safe


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
        big = 1.0 / (1.0 + self.e)  # sigma(|x|)
        small = self.e * big  # sigma(-|x|), never 1 - big
        positive = self.x >= 0
        return np.where(positive, big, small), np.where(positive, small, big)

    def bracket(self, yp: np.ndarray, one_minus_yp: np.ndarray, q: Any) -> np.ndarray:
        """(1 - y') softplus(x) + q y' softplus(-x): the element loss before the weight."""
        return zero_safe(NUMPY_OPS, one_minus_yp, self.softplus_pos) + zero_safe(
            NUMPY_OPS, times(q, yp), self.softplus_neg
        )

    def slope(
        self,
        yp: np.ndarray,
        one_minus_yp: np.ndarray,
        q: Any,
        w: Any,
        sigmoids: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """d loss / d x = w (1 - y') sigma(x) - w q y' sigma(-x) (``sigmoids`` if already made)."""
        sig_pos, sig_neg = self.sigmoids() if sigmoids is None else sigmoids
        return zero_safe(NUMPY_OPS, weight_times(NUMPY_OPS, w, one_minus_yp), sig_pos) - zero_safe(
            NUMPY_OPS, weight_times(NUMPY_OPS, w, times(q, yp)), sig_neg
        )
