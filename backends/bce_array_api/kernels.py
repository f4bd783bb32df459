"""Elementwise math of the Array API backend, in the namespace's own functions.

The forms are those of the NumPy backend's kernels, spelled with the standard's
functions only (``exp``, ``log1p``, ``abs``, ``maximum``, ``where``; the
standard has no softplus or sigmoid): with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

Every quantity is a sum or product of non-negative terms, so nothing cancels:
in float64 working precision a float32 result rounded from these is within
1 ULP of exact, and float64 results are as accurate as the namespace's ``exp``
and ``log1p`` (correctly rounded to within an ULP in NumPy, CuPy and Dask).

>>> import array_api_strict as xp
>>> parts = LogitParts.of(xp.asarray([-30.0, 0.0, 30.0]))
>>> float(parts.bracket(xp.asarray([0.0, 1.0, 1.0]), xp.asarray([1.0, 0.0, 0.0]), None)[1])
0.6931471805599453
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bce_core.rules import times, weight_times, zero_safe

from .operands import OPS, namespace_of


@dataclass(frozen=True)
class LogitParts:
    """softplus(±x) and sigma(±x) from one exp and one log1p per element."""

    xp: ModuleType
    x: Any
    e: Any
    log1p_e: Any

    @classmethod
    def of(cls, x: Any) -> LogitParts:
        xp = namespace_of(x)
        e = xp.exp(-xp.abs(x))
        return cls(xp, x, e, xp.log1p(e))

    @property
    def softplus_pos(self) -> Any:
        return self.xp.maximum(self.x, 0.0) + self.log1p_e

    @property
    def softplus_neg(self) -> Any:
        return self.xp.maximum(-self.x, 0.0) + self.log1p_e

    def sigmoids(self) -> tuple[Any, Any]:
        """(sigma(x), sigma(-x)); NaN stays NaN in both."""
        big = 1.0 / (1.0 + self.e)  # sigma(|x|)
        small = self.e * big  # sigma(-|x|), never 1 - big
        positive = self.x >= 0
        return self.xp.where(positive, big, small), self.xp.where(positive, small, big)

    def bracket(self, yp: Any, one_minus_yp: Any, q: Any) -> Any:
        """(1 - y') softplus(x) + q y' softplus(-x): the element loss before the weight."""
        return zero_safe(OPS, one_minus_yp, self.softplus_pos) + zero_safe(
            OPS, times(q, yp), self.softplus_neg
        )

    def slope(self, yp: Any, one_minus_yp: Any, q: Any, w: Any) -> Any:
        """d loss / d x = w (1 - y') sigma(x) - w q y' sigma(-x)."""
        sig_pos, sig_neg = self.sigmoids()
        return zero_safe(OPS, weight_times(OPS, w, one_minus_yp), sig_pos) - zero_safe(
            OPS, weight_times(OPS, w, times(q, yp)), sig_neg
        )


def probability_bracket(p: Any, yp: Any, one_minus_yp: Any, q: Any, log_clamp: float) -> Any:
    """-(q y' max(log p, c) + (1 - y') max(log1p(-p), c)), NaN where p is outside [0, 1].

    >>> import array_api_strict as xp
    >>> import numpy as np
    >>> with np.errstate(divide="ignore"):  # log(0), then clamped
    ...     b = probability_bracket(xp.asarray([0.9, 0.0]), xp.asarray([1.0, 1.0]),
    ...                             xp.asarray([0.0, 0.0]), None, -100.0)
    >>> [round(float(v), 6) for v in b]
    [0.105361, 100.0]
    """
    xp = namespace_of(p)
    positive = xp.maximum(xp.log(p), log_clamp)
    negative = xp.maximum(xp.log1p(-p), log_clamp)
    bracket = -(zero_safe(OPS, times(q, yp), positive) + zero_safe(OPS, one_minus_yp, negative))
    return xp.where((p >= 0) & (p <= 1), bracket, float("nan"))  # also where a term was 0
