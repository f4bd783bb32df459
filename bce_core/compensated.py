"""The loss from logits and its derivatives in the input's own precision, rounded once.

Written once for every backend that compiles through XLA (JAX, TensorFlow)
and for any other that passes in its :class:`Primitives`: a dozen array
functions named the way its framework names them. The functions here only
call those and Python arithmetic, so they trace into one compiled program.

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

float32 computed this way stays within 2 ULP of the exact loss and slope,
whatever the weight, pos_weight and label smoothing. Rounding each
coefficient product in the working dtype would cost up to 4 ULP, so the loss
and the slope carry every intermediate as an unevaluated sum hi + lo (a
:class:`Pair`) and round once at the end; only the exponential's own error
(about 1.4 units of roundoff in XLA's float32 exp) is left. What keeps it so
under a compiler:

- products are split into halves by masking mantissa bits, so every partial
  product is exact: a compiler may contract a product and a sum into one
  fused multiply-add (XLA does on CPU and GPU), which changes nothing when the
  product is exact;
- constants that take part in an error-free sum are ``opaque``: XLA folds
  (a + 1) - 1 to a, which would lose the rounding error being recovered;
- l = 2 atanh(e / (2 + e)) from a short polynomial, accurate to a fraction of a
  unit of roundoff (XLA's float32 log is off by up to 2 units on [1.25, 2]);
- :func:`exact_underflow`: XLA on CPU flushes subnormal results to zero, so a
  loss of 3.8e-44 (logit -100, target 0, float32) would come back as 0. Where
  a result lies below the smallest normal number it is rebuilt from integer bits.

>>> import numpy as np
>>> from bce_core.compensated import NUMPY_PRIMITIVES as xp
>>> parts = LogitParts.of(xp, np.array([-30.0, 0.0, 30.0], np.float32))
>>> [round(float(v), 6) for v in parts.softpluses()[0]]
[0.0, 0.693147, 30.0]
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple, Protocol

import numpy as np

from .rules import smoothed_targets, smoothing_constants

#: A native array of the backend that passed in the primitives.
Array = Any


class Primitives(Protocol):
    """The array functions this module needs, in one framework's spelling.

    Arithmetic (``+ - * /``, comparisons, ``&`` and ``~`` of booleans) is
    written with operators, which every framework's arrays support; ``dtype``
    arguments and results are NumPy dtypes.
    """

    def where(self, condition: Array, if_true: Array, if_false: Array) -> Array: ...

    def isfinite(self, a: Array) -> Array: ...

    def abs(self, a: Array) -> Array: ...

    def exp(self, a: Array) -> Array: ...

    def maximum(self, a: Array, b: Array) -> Array: ...

    def minimum(self, a: Array, b: Array) -> Array: ...

    def round(self, a: Array) -> Array: ...

    def zeros_like(self, a: Array) -> Array: ...

    def ones_like(self, a: Array) -> Array: ...

    def dtype(self, a: Array) -> np.dtype[Any]:
        """The NumPy dtype of a native array."""
        ...

    def constant(self, value: Any, dtype: np.dtype[Any]) -> Array:
        """A 0-d array of ``dtype``."""
        ...

    def opaque(self, value: Any, dtype: np.dtype[Any]) -> Array:
        """A 0-d constant that the compiler cannot fold into the sums around it."""
        ...

    def astype(self, a: Array, dtype: np.dtype[Any]) -> Array: ...

    def bitcast(self, a: Array, dtype: np.dtype[Any]) -> Array:
        """The bits of ``a`` read as ``dtype`` (of the same width)."""
        ...

    def bitwise_and(self, a: Array, b: Array) -> Array: ...

    def bitwise_or(self, a: Array, b: Array) -> Array: ...


class NumpyPrimitives:
    """The primitives on NumPy arrays: for doctests and for checking the arithmetic on the CPU.

    NumPy keeps subnormal numbers, so the rebuilding from bits never triggers here.
    """

    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)
    abs = staticmethod(np.abs)
    exp = staticmethod(np.exp)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    round = staticmethod(np.round)
    zeros_like = staticmethod(np.zeros_like)
    ones_like = staticmethod(np.ones_like)
    bitwise_and = staticmethod(np.bitwise_and)
    bitwise_or = staticmethod(np.bitwise_or)

    @staticmethod
    def dtype(a: Array) -> np.dtype[Any]:
        return np.asarray(a).dtype

    @staticmethod
    def constant(value: Any, dtype: np.dtype[Any]) -> Array:
        return np.asarray(value, dtype)

    opaque = constant

    @staticmethod
    def astype(a: Array, dtype: np.dtype[Any]) -> Array:
        return np.asarray(a).astype(dtype)

    @staticmethod
    def bitcast(a: Array, dtype: np.dtype[Any]) -> Array:
        return np.asarray(a).view(dtype)


NUMPY_PRIMITIVES = NumpyPrimitives()


# -- arithmetic on unevaluated sums hi + lo ---------------------------------------------------


class Pair(NamedTuple):
    """The unevaluated sum hi + lo, with |lo| at most about one unit in the last place of hi."""

    hi: Array
    lo: Array

    def value(self, xp: Primitives) -> Array:
        """hi + lo, rounded once; inf and NaN in hi are kept (lo is NaN next to them)."""
        return xp.where(xp.isfinite(self.hi), self.hi + self.lo, self.hi)


class Scaled(NamedTuple):
    """A pair whose value is to be multiplied by ``down``, a power of two (see ``LogitParts``)."""

    pair: Pair
    down: Array

    def value(self, xp: Primitives) -> Array:
        return self.pair.value(xp) * self.down


#: (unsigned integer of the same width, the bits that keep the upper half of the significand):
#: 12 of float32's 24 bits, 26 of float64's 53 (the products of two such halves, and of a half
#: and the rest, are exact).
_HIGH_BITS: dict[np.dtype[Any], tuple[np.dtype[Any], int]] = {np.dtype(np.float32): (np.dtype(np.uint32), 0xFFFFF000),
              np.dtype(np.float64): (np.dtype(np.uint64), 0xFFFFFFFFF8000000)}


def split(xp: Primitives, a: Array) -> Pair:
    """a = hi + lo exactly, hi holding the upper half of the significand (by masking bits,
    which neither overflows nor depends on how the compiler rounds a product)."""
    dtype = xp.dtype(a)
    bits, mask = _HIGH_BITS[dtype]
    hi = xp.bitcast(xp.bitwise_and(xp.bitcast(a, bits), xp.constant(mask, bits)), dtype)
    return Pair(hi, a - hi)


def fast_two_sum(a: Array, b: Array) -> Pair:
    """a + b = s + t exactly, for |a| >= |b| (or a == 0)."""
    s = a + b
    return Pair(s, b - (s - a))


def two_sum(a: Array, b: Array) -> Pair:
    """a + b = s + t exactly, in any order of magnitude (Knuth).

    >>> import numpy as np
    >>> two_sum(np.float32(1.0), np.float32(2.0 ** -30))
    Pair(hi=np.float32(1.0), lo=np.float32(9.313226e-10))
    """
    s = a + b
    bb = s - a
    return Pair(s, (a - (s - bb)) + (b - bb))


def partial_products(xp: Primitives, a: Array, b: Array) -> Pair:
    """a * b = hi + lo exactly but for lo's last rounding, hi being the product of the high
    halves (every product here is exact: Dekker's algorithm, split by masking)."""
    (ah, al), (bh, bl) = split(xp, a), split(xp, b)
    return Pair(ah * bh, (ah * bl + al * bh) + al * bl)


def mul(xp: Primitives, a: Array, b: Array) -> Pair:
    """a * b as a normalised pair.

    >>> import numpy as np
    >>> p = mul(NUMPY_PRIMITIVES, np.float32(1 + 2 ** -20), np.float32(1 + 2 ** -20))
    >>> float(p.lo) == 2.0 ** -40
    True
    """
    return fast_two_sum(*partial_products(xp, a, b))


def mul_pair(xp: Primitives, p: Pair, v: Array) -> Pair:
    """(hi + lo) * v as a normalised pair."""
    product = partial_products(xp, p.hi, v)
    return fast_two_sum(product.hi, product.lo + p.lo * v)


def add_pairs(p: Pair, r: Pair) -> Pair:
    """(p.hi + p.lo) + (r.hi + r.lo) as a normalised pair."""
    total = two_sum(p.hi, r.hi)
    return fast_two_sum(total.hi, total.lo + (p.lo + r.lo))


def constant_pair(xp: Primitives, value: Fraction, dtype: np.dtype[Any]) -> Pair:
    """An exact rational constant as an opaque pair of ``dtype`` (good to twice its precision)."""
    hi, lo = constant_parts(value, dtype)
    return Pair(xp.opaque(hi, dtype), xp.opaque(lo, dtype))


def constant_parts(value: Fraction, dtype: np.dtype[Any]) -> tuple[float, float]:
    """(hi, lo): ``value`` rounded to ``dtype`` and the rest, rounded again.

    >>> constant_parts(Fraction(1, 3), np.dtype(np.float32))[1] != 0
    True
    """
    hi = np.asarray(float(value), dtype)
    lo = np.asarray(float(value - Fraction(float(hi))), dtype)
    return float(hi), float(lo)


def zero_safe(xp: Primitives, coefficient: Array, value: Array) -> Array:
    """coefficient * value, where a coefficient of exactly 0 gives exactly 0 (also times inf or
    NaN); the spec's zero-coefficient rule (``bce_core.rules.zero_safe``) in these primitives.

    >>> import numpy as np
    >>> with np.errstate(invalid="ignore"):
    ...     print(zero_safe(NUMPY_PRIMITIVES, np.float32(0.0), np.float32(np.inf)))
    0.0
    """
    return xp.where(coefficient == 0, xp.zeros_like(value), coefficient * value)


def select(xp: Primitives, condition: Array, a: Pair, b: Pair) -> Pair:
    """``a`` where ``condition``, else ``b``, for both halves."""
    return Pair(xp.where(condition, a.hi, b.hi), xp.where(condition, a.lo, b.lo))


def finite_or(xp: Primitives, value: Array, fallback: Array) -> Array:
    """``value`` where finite, else ``fallback`` (the same quantity in single arithmetic)."""
    return xp.where(xp.isfinite(value), value, fallback)


def zero_where(xp: Primitives, coefficient: Array, pair: Pair) -> Pair:
    """``pair``, or exactly (0, 0) where the coefficient that multiplied into it is 0."""
    zeroed = coefficient == 0
    zero = xp.zeros_like(pair.hi)
    return Pair(xp.where(zeroed, zero, pair.hi), xp.where(zeroed, zero, pair.lo))


# -- the coefficients -----------------------------------------------------------------------


class Smoothing(NamedTuple):
    """1 - eps and eps / 2 as pairs, each exact to twice the working precision.

    :meth:`values` gives them as four numbers, for a backend that passes them
    to its compiled program at run time (one program then serves every eps);
    :meth:`opaque` makes them compile-time constants.
    """

    keep: Pair
    half: Pair

    @staticmethod
    def values(eps: float, dtype: np.dtype[Any]) -> list[float]:
        """[keep.hi, keep.lo, half.hi, half.lo] for ``eps`` (the caller's float, exactly).

        >>> Smoothing.values(0.5, np.dtype(np.float32))
        [0.5, 0.0, 0.25, 0.0]
        """
        return [part for value in smoothing_constants(eps) for part in constant_parts(value, dtype)]

    @classmethod
    def of(cls, values: Any) -> Smoothing:
        """The pairs from the four ``values`` (a sequence or a 1-d array)."""
        return cls(Pair(values[0], values[1]), Pair(values[2], values[3]))

    @classmethod
    def opaque(cls, xp: Primitives, eps: float, dtype: np.dtype[Any]) -> Smoothing:
        """The pairs for ``eps`` as constants of the program."""
        keep, half = smoothing_constants(eps)
        return cls(constant_pair(xp, keep, dtype), constant_pair(xp, half, dtype))


class Coefficients(NamedTuple):
    """The smoothed target y', a = 1 - y' and b = q y', each as a pair (see
    ``bce_core.rules.smoothed_targets`` for the rule).

    >>> import numpy as np
    >>> f32 = np.dtype(np.float32)
    >>> c = Coefficients.of(NUMPY_PRIMITIVES, np.float32(0.25), None,
    ...                     Smoothing.opaque(NUMPY_PRIMITIVES, 0.1, f32))
    >>> float(c.smoothed.hi), float(c.one_minus.hi)
    (0.2750000059604645, 0.7250000238418579)
    """

    smoothed: Pair
    one_minus: Pair
    b: Pair
    #: Whether a + b is exactly 1 (no pos_weight: (1 - y') + y'), which saves a product.
    unit_total: bool

    @classmethod
    def of(cls, xp: Primitives, y: Array, q: Array | None,
           smoothing: Smoothing | None) -> Coefficients:
        """The coefficients of targets ``y`` (in [0, 1]), pos_weight ``q`` (None for 1) and
        label smoothing (None for none)."""
        dtype = xp.dtype(y)
        zero = xp.zeros_like(y)

        def complement(v: Pair) -> Pair:  # 1 - y, exact for y in [0, 1]
            return fast_two_sum(xp.opaque(1.0, dtype), -v.hi)

        def affine(v: Pair) -> Pair:  # v (1 - eps) + eps / 2
            assert smoothing is not None
            keep, half = smoothing
            product = mul(xp, v.hi, keep.hi)
            total = two_sum(product.hi, half.hi)
            return fast_two_sum(total.hi, total.lo + product.lo
                                + (v.lo * keep.hi + v.hi * keep.lo + half.lo))

        smoothed, one_minus = smoothed_targets(Pair(y, zero), 0.0 if smoothing is None else None,
                                               affine=affine, complement=complement)
        b = smoothed if q is None else mul_pair(xp, smoothed, q)
        return cls(smoothed, one_minus, b, q is None)

    def total(self, xp: Primitives) -> Pair:
        """a + b = 1 + (q - 1) y', the coefficient of log1p(exp(-|x|)) and of the curvature."""
        if self.unit_total:
            return Pair(xp.ones_like(self.b.hi), xp.zeros_like(self.b.hi))
        return add_pairs(self.one_minus, self.b)

    def near_far(self, xp: Primitives, x: Array) -> tuple[Pair, Pair]:
        """(n, f): the coefficients of softplus(|x|) and softplus(-|x|)."""
        positive = x >= 0
        return (select(xp, positive, self.one_minus, self.b),
                select(xp, positive, self.b, self.one_minus))


# -- log1p(exp(-|x|)) as 2 atanh(z) -------------------------------------------------------------

#: (atanh(z) - z) / z**3 as a polynomial in t = z**2 on [0, 1/9] (z = e / (2 + e) <= 1/3),
#: lowest degree first; its error is below 1e-9 (float32) and 1e-18 (float64) of the result.
_ATANH_TAIL = {
    np.dtype(np.float32): (0.3333333366026371, 0.1999985316596486, 0.14296178997151418,
                           0.10853287900440187, 0.11612164612011674),
    np.dtype(np.float64): (0.3333333333333333, 0.19999999999999762, 0.1428571428580005,
                           0.11111111099118386, 0.09090909948981357, 0.07692271982430275,
                           0.06667589315724629, 0.05867139530651599, 0.05422589197440007,
                           0.03746071897775383, 0.07815288900461426),
}


def log1p_pair(xp: Primitives, e: Array, d: Pair, reciprocal: Array) -> Pair:
    """log1p(e) for e in [0, 1] as a pair: 2 atanh(z) with z = e / (2 + e) carried as a pair,
    so that only e's own error remains (the polynomial term is at most 4% of the result).

    ``d`` is 2 + e as a pair and ``reciprocal`` about 1 / d.hi: the quotient need not be
    correctly rounded, since its remainder is computed exactly and divided again.
    """
    dtype = xp.dtype(e)
    z = e * reciprocal
    product = partial_products(xp, z, d.hi)
    z_pair = fast_two_sum(z, (((e - product.hi) - product.lo) - z * d.lo) * reciprocal)
    t = z_pair.hi * z_pair.hi
    coefficients = _ATANH_TAIL[dtype]
    poly = xp.constant(coefficients[-1], dtype)
    for c in coefficients[-2::-1]:
        poly = poly * t + c
    result = fast_two_sum(2 * z_pair.hi, 2 * z_pair.lo + 2 * z_pair.hi * t * poly)
    # Below 2**-(digits + 2), log1p(e) is e to a quarter of a unit in the last place, and
    # e / (2 + e) would underflow before e does (XLA on CPU flushes it to zero).
    small = e < xp.constant(2.0 ** -(np.finfo(dtype).nmant + 3), dtype)
    return Pair(xp.where(small, e, result.hi), xp.where(small, xp.zeros_like(e), result.lo))


# -- results below the smallest normal number ----------------------------------------------------


class Underflow(NamedTuple):
    """The constants of the far tail of one dtype."""

    #: |x| from which exp(threshold - |x|) is exact in its argument (Sterbenz: |x| <= 2 threshold).
    threshold: float
    #: exp(-threshold) / (smallest subnormal), correctly rounded.
    scale: float
    int_dtype: np.dtype[Any]
    mantissa_bits: int
    #: k such that exp(-threshold) * 2**k is about 1, and that product (exactly: an irrational
    #: number to 60 digits, of which a pair keeps twice the dtype's precision).
    lift_bits: int
    lift: Fraction


UNDERFLOW = {
    np.dtype(np.float32): Underflow(
        64.0, float.fromhex("0x1.969d480000000p+56"), np.dtype(np.int32), 23, 92,
        Fraction("0.794168686740840587176429180931974948067892704982492718304015")),
    np.dtype(np.float64): Underflow(
        512.0, float.fromhex("0x1.44109edb20931p+335"), np.dtype(np.int64), 52, 738,
        Fraction("0.632939304589205925791237451770277229492777223066893756366945")),
}


def exact_underflow(xp: Primitives, result: Array, coefficient: Array, inside: Array,
                    shifted: Array) -> Array:
    """``result``, except where it is below the smallest normal number while its exact value is
    ``coefficient * exp(-|x|)`` (the tails of sigma and softplus): there that value is rebuilt
    from the integer bits of a subnormal, since XLA on CPU flushes subnormal arithmetic to zero.
    ``inside``: |x| at or past the threshold; ``shifted``: exp(threshold - |x|) there.

    Only the last operation of a computation can keep such a value: any arithmetic on it (the
    chain rule's product in autodiff, a sum) flushes it again on such a platform.

    >>> import numpy as np
    >>> x = np.float32(-100.0)
    >>> flushed = np.float32(0.0)  # what XLA on CPU computes for exp(x)
    >>> float(exact_underflow(NUMPY_PRIMITIVES, flushed, np.float32(1.0), np.abs(x) >= 64,
    ...                       np.exp(64 + x)))
    3.783505853677006e-44
    """
    dtype = xp.dtype(result)
    spec = UNDERFLOW[dtype]
    units = xp.abs(coefficient) * shifted * xp.constant(spec.scale, dtype)
    largest = xp.constant(2.0 ** spec.mantissa_bits, dtype)
    count = xp.astype(xp.round(xp.minimum(units, largest)), spec.int_dtype)
    sign = xp.where(coefficient < 0, xp.constant(np.iinfo(spec.int_dtype).min, spec.int_dtype),
                    xp.constant(0, spec.int_dtype))
    rebuilt = xp.bitcast(xp.bitwise_or(count, sign), dtype)
    tiny = xp.constant(np.finfo(dtype).tiny, dtype)
    return xp.where(inside & (xp.abs(result) < tiny) & (count > 0), rebuilt, result)


def underflow_side(xp: Primitives, x: Array, negative: Array, positive: Array) -> Array:
    """The coefficient of exp(-|x|) in a tail: ``negative`` for x < 0, ``positive`` otherwise."""
    return xp.where(x < 0, negative, positive)


# -- the logits form ---------------------------------------------------------------------------


class LogitParts(NamedTuple):
    """exp(-|x|) and log1p(exp(-|x|)) of the logits, once per element, and what follows from them.

    u = 1 + e is rounded; ``lost`` = e - (u - 1) is exactly what that rounding
    dropped, so 1/(1 + e) = (1/u)(1 - lost/u) to second order.

    In the far tail (|x| past the underflow threshold) a result is either dominated by
    n |x| or, when n = 0, is c exp(-|x|) alone, which may lie near or below the smallest
    normal number while c exp(-|x|) with a large weight does not. There e is carried
    lifted by 2**k (``lifted``, computed from exp(threshold - |x|), whose argument is exact)
    and the result is scaled back at the end. One exponential per element serves both
    sides: exp(-|x|) below the threshold, exp(threshold - |x|) past it. A backend that
    knows no element is in the far tail (``tails=False``) leaves that work out.
    """

    xp: Primitives
    x: Array
    e: Array
    u: Array
    lost: Array
    log1p_e: Pair
    #: About 1 / u (within a few units of roundoff); every quotient by it is compensated.
    reciprocal: Array
    #: |x| at or past the underflow threshold (False for NaN); None without tails.
    tail: Array | None
    #: exp(threshold - |x|) in the tail (and exp(-|x|) elsewhere).
    shifted: Array
    #: exp(-|x|) * 2**k in the tail, as a pair (k: ``Underflow.lift_bits``).
    lifted: Pair | None

    @classmethod
    def of(cls, xp: Primitives, x: Array, *, tails: bool = True) -> LogitParts:
        """The parts of ``x``; with ``tails`` False, ``x`` must have no element in the far tail
        (see ``UNDERFLOW``), whose handling is then left out of the program."""
        dtype = xp.dtype(x)
        ax = xp.abs(x)
        tail: Array | None = None
        lifted: Pair | None = None
        if tails:
            spec = UNDERFLOW[dtype]
            tail = ax >= spec.threshold  # False for NaN
            # threshold - |x| is exact for |x| in [threshold, 2 threshold] (Sterbenz).
            shifted = xp.exp(xp.where(tail, spec.threshold - ax, -ax))
            scale = constant_pair(xp, spec.lift, dtype)  # exp(-threshold) * 2**k
            product = partial_products(xp, shifted, scale.hi)
            lifted = fast_two_sum(product.hi, product.lo + shifted * scale.lo)
            # In the tail, exp(-|x|) = exp(threshold - |x|) exp(-threshold), one rounding more
            # than exp(-|x|) itself; it only matters there next to a coefficient below about
            # 1e-24. (Not from ``lifted``: XLA would then write out that pair to share it.)
            down = np.asarray(float(spec.lift), dtype) * np.asarray(2.0 ** -spec.lift_bits, dtype)
            e = xp.where(tail, shifted * xp.constant(down, dtype), shifted)
        else:
            e = shifted = xp.exp(-ax)
        u = fast_two_sum(xp.opaque(1.0, dtype), e)  # 1 + e
        d = fast_two_sum(xp.opaque(2.0, dtype), e)  # 2 + e
        # One division serves 1 / (1 + e) and 1 / (2 + e); XLA compiles each division that has
        # several users on its own, so fewer divisions make a smaller program.
        both = 1 / (u.hi * d.hi)
        return cls(xp, x, e, u.hi, u.lo, log1p_pair(xp, e, d, u.hi * both), d.hi * both, tail,
                   shifted, lifted)

    def _underflow(self, result: Array, coefficient: Array) -> Array:
        if self.tail is None:
            return result
        return exact_underflow(self.xp, result, coefficient, self.tail, self.shifted)

    def _lift(self, near: Pair) -> tuple[Array, Pair, Pair]:
        """(down, e, l): where only the exp(-|x|) term is left (the far tail with n = 0), e and
        l lifted by 2**k and down = 2**-k; elsewhere e and l themselves and down = 1. Lifted,
        the low halves of products are not subnormal, which XLA on CPU would flush to zero."""
        xp = self.xp
        plain_e = Pair(self.e, xp.zeros_like(self.e))
        if self.tail is None or self.lifted is None:
            return xp.ones_like(self.e), plain_e, self.log1p_e
        dtype = xp.dtype(self.x)
        lift = self.tail & (near.hi == 0)
        down = xp.where(lift, xp.constant(2.0 ** -UNDERFLOW[dtype].lift_bits, dtype),
                        xp.ones_like(self.e))
        return (down, select(xp, lift, self.lifted, plain_e),
                select(xp, lift, self.lifted, self.log1p_e))

    def softpluses(self) -> tuple[Array, Array]:
        """(softplus(x), softplus(-x)); NaN stays NaN, softplus(-inf) is 0."""
        xp = self.xp
        zero = xp.zeros_like(self.x)
        log1p_e = self.log1p_e.value(xp)
        return xp.maximum(self.x, zero) + log1p_e, xp.maximum(-self.x, zero) + log1p_e

    def sigmoids(self) -> tuple[Array, Array]:
        """(sigma(x), sigma(-x)) as 1 / (1 + e) and e / (1 + e), each to a few units of roundoff:
        sigma(-|x|) is never 1 - sigma(|x|)."""
        big, small = self.reciprocal, self.e * self.reciprocal
        positive = self.x >= 0
        return self.xp.where(positive, big, small), self.xp.where(positive, small, big)

    def bracket_pair(self, coefficients: Coefficients) -> Scaled:
        """a softplus(x) + b softplus(-x) = n |x| + (a + b) l, as a pair (times ``down``).

        n is the coefficient of softplus(|x|); a zero coefficient contributes exactly 0,
        even where |x| is infinite.
        """
        xp = self.xp
        near, _ = coefficients.near_far(xp, self.x)
        total = coefficients.total(xp)
        down, _, log1p_e = self._lift(near)
        linear = zero_where(xp, near.hi, mul_pair(xp, near, xp.abs(self.x)))
        if coefficients.unit_total:
            logs = log1p_e
        else:
            product = mul(xp, total.hi, log1p_e.hi)
            logs = fast_two_sum(product.hi,
                                product.lo + (total.hi * log1p_e.lo + total.lo * log1p_e.hi))
        return Scaled(add_pairs(linear, zero_where(xp, total.hi, logs)), down)

    def plain_bracket(self, coefficients: Coefficients) -> Array:
        """n |x| + (a + b) l in single arithmetic, right where the pairs are not: at infinite
        logits and where a product overflows (a pair's low part is NaN next to inf)."""
        xp = self.xp
        near, _ = coefficients.near_far(xp, self.x)
        return (zero_safe(xp, near.hi, xp.abs(self.x))
                + zero_safe(xp, coefficients.total(xp).hi, self.log1p_e.hi))

    def bracket(self, coefficients: Coefficients, bracket: Scaled | None = None) -> Array:
        """a softplus(x) + b softplus(-x), rounded once."""
        if bracket is None:
            bracket = self.bracket_pair(coefficients)
        return finite_or(self.xp, bracket.value(self.xp), self.plain_bracket(coefficients))

    def loss(self, coefficients: Coefficients, w: Array | None,
             bracket: Scaled | None = None) -> Array:
        """w [a softplus(x) + b softplus(-x)] (w None means 1), rounded once, exact into the
        subnormal range; ``bracket`` is ``bracket_pair(coefficients)`` if already at hand."""
        xp = self.xp
        if bracket is None:
            bracket = self.bracket_pair(coefficients)
        tail = underflow_side(xp, self.x, coefficients.one_minus.hi, coefficients.b.hi)
        plain = self.plain_bracket(coefficients)
        if w is None:
            return self._underflow(finite_or(xp, bracket.value(xp), plain), tail)
        weighted = Scaled(zero_where(xp, w, mul_pair(xp, bracket.pair, w)), bracket.down)
        return self._underflow(finite_or(xp, weighted.value(xp), zero_safe(xp, w, plain)),
                               w * tail)

    def slope(self, coefficients: Coefficients, w: Array | None = None) -> Array:
        """w [a sigma(x) - b sigma(-x)], the derivative of ``loss`` with respect to x.

        With n the coefficient of sigma(|x|) and f that of sigma(-|x|), this is
        +-(n - f e) / (1 + e), carried as a pair and rounded once. A zero
        coefficient contributes exactly 0.
        """
        xp = self.xp
        near, far = coefficients.near_far(xp, self.x)
        down, e, _ = self._lift(near)
        product = partial_products(xp, far.hi, e.hi)
        scaled = fast_two_sum(product.hi, product.lo + (far.hi * e.lo + far.lo * e.hi))
        numerator = two_sum(near.hi, -scaled.hi)
        numerator = Pair(numerator.hi, numerator.lo + (near.lo - scaled.lo))
        # Divide by 1 + e = u + lost: one quotient, and its remainder divided again.
        quotient = numerator.hi * self.reciprocal
        back = partial_products(xp, quotient, self.u)
        remainder = (((numerator.hi - back.hi) - back.lo) + numerator.lo) - quotient * self.lost
        value = fast_two_sum(quotient, remainder * self.reciprocal)
        plain = value.hi
        if w is not None:
            value, plain = mul_pair(xp, value, w), plain * w
        result = finite_or(xp, value.value(xp), plain) * down
        zero = xp.zeros_like(result)
        result = xp.where((near.hi == 0) & (far.hi == 0), zero,
                          xp.where(self.x >= 0, result, -result))
        if w is not None:
            result = xp.where(w == 0, zero, result)
        tail = underflow_side(xp, self.x, coefficients.one_minus.hi, -coefficients.b.hi)
        return self._underflow(result, tail if w is None else w * tail)

    def curvature(self, c: Array) -> Array:
        """c sigma(x) sigma(-x), the second derivative of ``loss`` when c = w (a + b)."""
        xp = self.xp
        sig_pos, sig_neg = self.sigmoids()
        if self.tail is None or self.lifted is None:
            return zero_safe(xp, c, sig_pos * sig_neg)
        product = xp.where(self.tail, self.lifted.hi, sig_pos * sig_neg)  # = e in the tail
        dtype = xp.dtype(self.x)
        value = zero_safe(xp, c, product)
        value = xp.where(self.tail, value * xp.constant(2.0 ** -UNDERFLOW[dtype].lift_bits, dtype),
                         value)
        return self._underflow(value, c)
