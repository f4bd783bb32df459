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

import math
from typing import Any

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
    """log(1 + exp(x)), exactly (max(x,0) + log1p(exp(-|x|)) is an identity, not an approximation)."""
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


def _term(coefficient: Any, value: Any) -> Any:
    return MP.mpf(0) if coefficient == 0 else coefficient * value


def smoothed(y: Any, eps: Any) -> tuple[Any, Any]:
    """(y', 1 - y') exactly."""
    y, eps = MP.mpf(y), MP.mpf(eps)
    yp = y * (1 - eps) + eps / 2
    return yp, 1 - yp


def element_loss(x: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0) -> Any:
    """Exact element loss from a logit."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    return _term(w, _term(one_minus, softplus(x)) + _term(q * yp, softplus(-MP.mpf(x))))


def element_grad(x: float, y: float, w: float = 1.0, q: float = 1.0,
                 eps: float = 0.0) -> tuple[Any, Any]:
    """Exact d loss / d x and the magnitude of its larger term (the accuracy reference for soft targets)."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    positive = _term(w * one_minus, sigmoid(x))
    negative = _term(w * q * yp, sigmoid(-MP.mpf(x)))
    return positive - negative, max(abs(positive), abs(negative))


def element_hessian(x: float, y: float, w: float = 1.0, q: float = 1.0) -> Any:
    """Exact d2 loss / d x2 (no smoothing)."""
    return element_hessian_smoothed(x, y, w, q, 0.0)


def element_hessian_smoothed(x: float, y: float, w: float = 1.0, q: float = 1.0,
                             eps: float = 0.0) -> Any:
    """Exact d2 loss / d x2 with label smoothing: w ((1 - y') + q y') sigma(x) sigma(-x)."""
    yp, one_minus = smoothed(y, eps)
    w, q = MP.mpf(w), MP.mpf(q)
    coefficient = w * (one_minus + q * yp)
    if coefficient == 0:
        return MP.mpf(0)
    return coefficient * sigmoid(x) * sigmoid(-MP.mpf(x))


def element_grad_probs(p: float, y: float, w: float = 1.0, q: float = 1.0,
                       eps: float = 0.0) -> Any:
    """Exact d loss / d p of the probability form, with the spec's floor on p (1 - p)."""
    p = MP.mpf(p)
    if MP.isnan(p) or p < 0 or p > 1:
        return MP.nan
    yp, one_minus = smoothed(y, eps)
    q = MP.mpf(q)
    return MP.mpf(w) * (p * (one_minus + q * yp) - q * yp) / max(p * (1 - p), MP.mpf(1e-12))


def element_loss_probs(p: float, y: float, w: float = 1.0, q: float = 1.0, eps: float = 0.0,
                       log_clamp: float = -100.0) -> Any:
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


def ulp_errors(got: np.ndarray, expected: list[Any], dtype: str,
               references: list[Any] | None = None) -> np.ndarray:
    """``ulp_error`` over flat lists."""
    flat = np.asarray(got, dtype=np.float64).ravel()
    refs = references if references is not None else [None] * len(expected)
    return np.array([ulp_error(g, e, dtype, reference=r) for g, e, r in zip(flat, expected, refs)])


def ulp_errors_pairs(got: np.ndarray, exact_hi: np.ndarray, exact_lo: np.ndarray, dtype: str,
                     reference_hi: np.ndarray | None = None,
                     reference_lo: np.ndarray | None = None) -> np.ndarray:
    """``ulp_error`` elementwise, vectorised, with each exact value given as hi + lo.

    hi is the float64 nearest the exact value and lo the float64 nearest the
    rest, so |got - exact| is measured to far better than a float64 ULP.
    The rules for NaN, infinities, overflow and flush-to-zero are those of
    ``ulp_error``.

    >>> exact = element_loss(0.0, 1.0)
    >>> hi = np.array([float(exact)]); lo = np.array([float(exact - MP.mpf(hi[0]))])
    >>> float(ulp_errors_pairs(np.array([0.6931472], np.float32), hi, lo, "float32")[0]) <= 0.5
    True
    """
    mantissa, min_exponent, largest = FORMATS[dtype]
    got = np.asarray(got, dtype=np.float64).ravel()
    hi, lo = np.asarray(exact_hi, np.float64).ravel(), np.asarray(exact_lo, np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        ref_hi = hi if reference_hi is None else np.asarray(reference_hi, np.float64).ravel()
        ref_lo = lo if reference_lo is None else np.asarray(reference_lo, np.float64).ravel()
        # The exponent of |reference|: frexp's, one lower when hi is a power of two that the
        # exact value falls just short of.
        fraction, exponent = np.frexp(np.abs(ref_hi))
        short = (fraction == 0.5) & (ref_lo != 0) & (np.sign(ref_lo) != np.sign(ref_hi))
        exponent = np.where(ref_hi == 0, min_exponent, np.maximum(exponent - 1 - short,
                                                                   min_exponent))
        ulp = np.ldexp(1.0, (exponent - (mantissa - 1)).astype(np.int64))
        errors = np.abs((got - hi) - lo) / ulp
        exact_nan, got_nan = np.isnan(hi), np.isnan(got)
        beyond = (np.abs(hi) > largest) | ((np.abs(hi) == largest) & (lo != 0)
                                           & (np.sign(lo) == np.sign(hi)))
        infinite = np.isinf(hi) | np.isinf(got)
        same_sign_inf = np.isinf(got) & beyond & (np.sign(got) == np.sign(hi))
        flushed = (got == 0) & (np.abs(hi) < 2.0 ** min_exponent)
    errors = np.where(infinite, np.where(same_sign_inf, 0.0, np.inf), errors)
    errors = np.where(flushed & ~infinite, 0.0, errors)
    return np.where(exact_nan | got_nan, np.where(exact_nan & got_nan, 0.0, np.inf), errors)
