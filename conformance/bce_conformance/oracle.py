"""The exact oracle: the spec's formulas evaluated in mpmath at high precision.

Every input float is converted exactly (no rounding), the formula is
evaluated with ``PRECISION_BITS`` bits, and errors are measured in units in
the last place (ULP) of the dtype under test. Nothing here trusts a backend,
the reference included.

>>> float(element_loss(0.0, 1.0))
0.6931471805599453
>>> ulp_error(0.6931472, element_loss(0.0, 1.0), "float32") <= 0.5
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mpmath
import numpy as np

#: Working precision of the oracle; far beyond float64's 53 bits.
PRECISION_BITS = 200

#: (mantissa bits including the implicit one, minimum normal exponent, largest finite) per dtype.
FORMATS: dict[str, tuple[int, int, float]] = {
    "float16": (11, -14, 65504.0),
    "bfloat16": (8, -126, 3.3895313892515355e38),
    "float32": (24, -126, 3.4028234663852886e38),
    "float64": (53, -1022, 1.7976931348623157e308),
}


def _mp() -> Any:
    ctx = mpmath.MPContext()
    ctx.prec = PRECISION_BITS
    return ctx


MP = _mp()  # a private context: never touches mpmath's global precision


def exact(value: float) -> Any:
    """The float ``value`` as an exact mpf (inf and NaN kept)."""
    return MP.mpf(float(value))


def softplus(x: Any) -> Any:
    """log(1 + exp(x)), exactly (max(x,0) + log1p(exp(-|x|)) is an identity, not an
    approximation)."""
    x = MP.mpf(x)
    if MP.isnan(x):
        return x
    if MP.isinf(x):
        return x if x > 0 else MP.mpf(0)
    return max(x, 0) + MP.log1p(MP.exp(-abs(x)))


def sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x)), exactly."""
    x = MP.mpf(x)
    if MP.isinf(x):
        return MP.mpf(1) if x > 0 else MP.mpf(0)
    return 1 / (1 + MP.exp(-x))


_Element = TypeVar("_Element", bound=Callable[..., Any])


def data_rule(function: _Element) -> _Element:
    """The spec's rule for non-finite data on an element function ``f(x, y, w, q, ...)``.

    An infinite or NaN target, weight or pos_weight makes the element's loss and every one
    of its derivatives NaN (a tuple result becomes a tuple of NaN), whatever the input.

    >>> import mpmath
    >>> mpmath.isnan(element_loss(0.5, 1.0, float("inf")))
    True
    """

    @functools.wraps(function)
    def ruled(x: Any, y: Any, w: Any = 1.0, q: Any = 1.0, *rest: Any, **options: Any) -> Any:
        if all(MP.isfinite(MP.mpf(v)) for v in (y, w, q)):
            return function(x, y, w, q, *rest, **options)
        # Evaluated at finite operands only for the shape of its result.
        result = function(0.0, 0.0, 1.0, 1.0, *rest, **options)
        return tuple(MP.nan for _ in result) if isinstance(result, tuple) else MP.nan

    return ruled  # type: ignore[return-value]


def _term(coefficient: Any, value: Any) -> Any:
    return MP.mpf(0) if coefficient == 0 else coefficient * value


def smoothed(y: Any, eps: Any) -> tuple[Any, Any]:
    """(y', 1 - y') exactly."""
    y, eps = MP.mpf(y), MP.mpf(eps)
    yp = y * (1 - eps) + eps / 2
    return yp, 1 - yp


@data_rule
def element_loss(x: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0) -> Any:
    """Exact element loss from a logit."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    return _term(w, _term(one_minus, softplus(x)) + _term(q * yp, softplus(-MP.mpf(x))))


@data_rule
def element_grad(
    x: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0
) -> tuple[Any, Any]:
    """Exact d loss / d x and the magnitude of its larger term (the accuracy reference for soft
    targets)."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    positive = _term(w * one_minus, sigmoid(x))
    negative = _term(w * q * yp, sigmoid(-MP.mpf(x)))
    return positive - negative, max(abs(positive), abs(negative))


def element_hessian(x: float, y: float, w: float = 1.0, q: float = 1.0) -> Any:
    """Exact d2 loss / d x2 (no smoothing)."""
    return element_hessian_smoothed(x, y, w, q, 0.0)


@data_rule
def element_hessian_smoothed(
    x: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0
) -> Any:
    """Exact d2 loss / d x2 with label smoothing: w ((1 - y') + q y') sigma(x) sigma(-x)."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    coefficient = w * (one_minus + q * yp)
    if coefficient == 0:
        return MP.mpf(0)
    return coefficient * sigmoid(x) * sigmoid(-MP.mpf(x))


@data_rule
def element_grad_probs(p: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0) -> Any:
    """Exact d loss / d p of the probability form, with the spec's floor on p (1 - p)."""
    p = MP.mpf(p)
    if MP.isnan(p) or p < 0 or p > 1:
        return MP.nan
    yp, one_minus = smoothed(y, eps)
    q = MP.mpf(q)
    return MP.mpf(w) * (p * (one_minus + q * yp) - q * yp) / max(p * (1 - p), MP.mpf(1e-12))


@data_rule
def element_loss_probs(
    p: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0, log_clamp: float = -100.0
) -> Any:
    """Exact element loss from a probability (NaN outside [0, 1])."""
    p = MP.mpf(p)
    if MP.isnan(p) or p < 0 or p > 1:
        return MP.nan
    yp, one_minus = smoothed(y, eps)
    clamp = MP.mpf(log_clamp)
    log_p = max(MP.log(p) if p > 0 else MP.ninf, clamp)
    log_1mp = max(MP.log1p(-p) if p < 1 else MP.ninf, clamp)
    return _term(MP.mpf(w), -(_term(MP.mpf(q) * yp, log_p) + _term(one_minus, log_1mp)))


def ulp_of(value: Any, dtype: str) -> Any:
    """The spacing of ``dtype`` at the magnitude of ``value`` (the subnormal spacing near 0)."""
    mantissa, min_exponent, _ = FORMATS[dtype]
    magnitude = abs(MP.mpf(value))
    if magnitude == 0:
        exponent = min_exponent
    else:
        exponent = max(int(MP.floor(MP.log(magnitude, 2))), min_exponent)
    return MP.ldexp(MP.mpf(1), exponent - (mantissa - 1))


def ulp_error(got: float, expected: Any, dtype: str, *, reference: Any = None) -> float:
    """|got - expected| in ULP of ``dtype`` at ``reference`` (default: at ``expected``).

    Matching infinities and NaN give 0; a non-finite result where the exact one
    is finite (or the other way round) gives inf. A zero where the exact value is
    below the smallest normal number gives 0: flush-to-zero is allowed. An exact value beyond the
    largest finite number of ``dtype`` is matched by the infinity it rounds to.
    """
    got_f = float(got)
    expected = MP.mpf(expected)
    if MP.isnan(expected) or math.isnan(got_f):
        return 0.0 if (MP.isnan(expected) and math.isnan(got_f)) else math.inf
    _, _, largest = FORMATS[dtype]
    if MP.isinf(expected) or math.isinf(got_f):
        if math.isinf(got_f) and (MP.isinf(expected) or abs(expected) > largest):
            return 0.0 if (got_f > 0) == (expected > 0) else math.inf
        return math.inf
    if got_f == 0.0 and abs(expected) < MP.ldexp(1, FORMATS[dtype][1]):
        return 0.0  # flushed to zero below the smallest normal number: allowed by the spec
    at = expected if reference is None else reference
    return float(abs(MP.mpf(got_f) - expected) / ulp_of(at, dtype))


def ulp_errors(
    got: np.ndarray, expected: list[Any], dtype: str, references: list[Any] | None = None
) -> np.ndarray:
    """``ulp_error`` over flat lists."""
    flat = np.asarray(got, dtype=np.float64).ravel()
    refs = references if references is not None else [None] * len(expected)
    return np.array([ulp_error(g, e, dtype, reference=r) for g, e, r in zip(flat, expected, refs)])


@dataclass(frozen=True)
class ExactValues:
    """Exact results on a sweep, stored so that ULP errors are computed in NumPy.

    ``high + low`` is the exact value to about 106 bits, ``spacing`` the ULP of the
    dtype at the reference magnitude; ``errors`` follows ``ulp_error`` rule for
    rule (NaN, infinities, values beyond the dtype's range, flush to zero).
    """

    dtype: str
    high: np.ndarray
    low: np.ndarray
    spacing: np.ndarray
    nan: np.ndarray
    #: The exact value is infinite or beyond the dtype's largest finite number.
    overflows: np.ndarray
    #: The exact value is below the dtype's smallest normal number (a result of 0 is allowed).
    tiny: np.ndarray

    @classmethod
    def of(cls, exact: list[Any], dtype: str, references: list[Any] | None = None) -> ExactValues:
        """From mpmath values (and the magnitudes their ULP is taken at; default themselves).

        >>> values = ExactValues.of([element_loss(0.0, 1.0)], "float32")
        >>> got = np.float32(0.6931472)
        >>> values.errors(np.array([got])).round(4).tolist()
        [0.032]
        >>> round(ulp_error(got, element_loss(0.0, 1.0), "float32"), 4)
        0.032
        """
        _, min_exponent, largest = FORMATS[dtype]
        smallest_normal = MP.ldexp(1, min_exponent)
        high, low, spacing, nan, overflows, tiny = [], [], [], [], [], []
        for i, value in enumerate(exact):
            value = MP.mpf(value)
            finite = MP.isfinite(value)
            at = value if references is None or references[i] is None else references[i]
            high.append(float(value))
            low.append(
                float(value - MP.mpf(high[-1])) if finite and math.isfinite(high[-1]) else 0.0
            )
            spacing.append(float(ulp_of(at, dtype)) if finite else math.nan)
            nan.append(bool(MP.isnan(value)))
            overflows.append(not nan[-1] and (not finite or abs(value) > largest))
            tiny.append(finite and abs(value) < smallest_normal)
        arrays = [np.array(a, np.float64) for a in (high, low, spacing)]
        return cls(dtype, *arrays, *(np.array(a, bool) for a in (nan, overflows, tiny)))

    def take(self, index: np.ndarray) -> ExactValues:
        """The values at ``index`` (to spread per-tuple values over a case's elements)."""
        return ExactValues(
            self.dtype,
            *(
                getattr(self, name)[index]
                for name in ("high", "low", "spacing", "nan", "overflows", "tiny")
            ),
        )

    def errors(self, got: Any) -> np.ndarray:
        """|got - exact| in ULP, elementwise; inf where got is NaN or inf and exact is not."""
        got = np.asarray(got).astype(np.float64).ravel()
        with np.errstate(all="ignore"):
            # got - high is exact when the two are close (Sterbenz); far apart, the error is
            # large and a rounding of 1e-16 relative does not matter.
            errors = np.abs((got - self.high) - self.low) / self.spacing
            errors = np.where((got == 0) & self.tiny, 0.0, errors)
            got_inf = np.isinf(got)
            same_sign = (got > 0) == (self.high > 0)
            infinite = np.where(got_inf & self.overflows & same_sign, 0.0, np.inf)
            errors = np.where(got_inf | np.isinf(self.high), infinite, errors)
            got_nan = np.isnan(got)
            return np.where(got_nan | self.nan, np.where(got_nan & self.nan, 0.0, np.inf), errors)
