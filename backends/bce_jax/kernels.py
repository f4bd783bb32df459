"""Elementwise math of the JAX backend, in the working dtype (float32 or float64).

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

float32 is computed natively and stays within 2 ULP of the exact loss and
slope, whatever the weight, pos_weight and label smoothing. Rounding each
coefficient product in the working dtype would cost up to 4 ULP, so the loss
and the slope carry every intermediate as an unevaluated sum hi + lo (a
``Pair``) and round once at the end; only the exponential's own error (about
1.4 units of roundoff in XLA's float32 exp) is left. Details that keep it so on XLA:

- products are split into halves by masking mantissa bits, so every partial
  product is exact: the compiler may contract a product and a sum into one
  fused multiply-add (XLA does on CPU and GPU), which changes nothing when the
  product is exact;
- constants that take part in an error-free sum are ``opaque``: XLA folds
  (a + 1) - 1 to a, which would lose the rounding error being recovered;
- l = 2 atanh(e / (2 + e)) from a short polynomial, accurate to a fraction of a
  unit of roundoff (XLA's float32 log is off by up to 2 units on [1.25, 2]);
- ``exact_underflow``: XLA on CPU flushes subnormal results to zero, so a loss
  of 3.8e-44 (logit -100, target 0, float32) would come back as 0. Where a
  result lies below the smallest normal number it is rebuilt from integer bits.

>>> import jax.numpy as jnp
>>> parts = LogitParts.of(jnp.array([-30.0, 0.0, 30.0]))
>>> [round(float(v), 6) for v in parts.softpluses()[0]]
[0.0, 0.693147, 30.0]
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

# -- arithmetic on unevaluated sums hi + lo ---------------------------------------------------


class Pair(NamedTuple):
    """The unevaluated sum hi + lo, with |lo| at most about one unit in the last place of hi."""

    hi: jnp.ndarray
    lo: jnp.ndarray

    def value(self) -> jnp.ndarray:
        """hi + lo, rounded once; inf and NaN in hi are kept (lo is NaN next to them)."""
        return jnp.where(jnp.isfinite(self.hi), self.hi + self.lo, self.hi)


class Scaled(NamedTuple):
    """A pair whose value is to be multiplied by ``down``, a power of two (see ``LogitParts``)."""

    pair: Pair
    down: jnp.ndarray

    def value(self) -> jnp.ndarray:
        return self.pair.value() * self.down


#: Bit patterns that keep the upper half of the significand: 12 of float32's 24 bits,
#: 26 of float64's 53 (the products of two such halves, and of a half and the rest, are exact).
_HIGH_BITS = {np.dtype(np.float32): (np.uint32, 0xFFFFF000),
              np.dtype(np.float64): (np.uint64, 0xFFFFFFFFF8000000)}


def opaque(value: float, dtype: np.dtype) -> jnp.ndarray:
    """A scalar constant that XLA's simplifier cannot fold into the sums around it."""
    return lax.optimization_barrier(jnp.asarray(value, dtype))


def split(a: jnp.ndarray) -> Pair:
    """a = hi + lo exactly, hi holding the upper half of the significand (by masking bits,
    which neither overflows nor depends on how the compiler rounds a product)."""
    bits, mask = _HIGH_BITS[np.dtype(a.dtype)]
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(a, bits) & bits(mask), a.dtype)
    return Pair(hi, a - hi)


def fast_two_sum(a: jnp.ndarray, b: jnp.ndarray) -> Pair:
    """a + b = s + t exactly, for |a| >= |b| (or a == 0)."""
    s = a + b
    return Pair(s, b - (s - a))


def two_sum(a: jnp.ndarray, b: jnp.ndarray) -> Pair:
    """a + b = s + t exactly, in any order of magnitude (Knuth)."""
    s = a + b
    bb = s - a
    return Pair(s, (a - (s - bb)) + (b - bb))


def _partial_products(a: jnp.ndarray, b: jnp.ndarray) -> Pair:
    """a * b = hi + lo exactly but for lo's last rounding, hi being the product of the high
    halves (every product here is exact: Dekker's algorithm, split by masking)."""
    (ah, al), (bh, bl) = split(a), split(b)
    return Pair(ah * bh, (ah * bl + al * bh) + al * bl)


def mul(a: jnp.ndarray, b: jnp.ndarray) -> Pair:
    """a * b as a normalised pair.

    >>> p = mul(jnp.float32(1 + 2 ** -20), jnp.float32(1 + 2 ** -20))
    >>> float(p.lo) == 2.0 ** -40
    True
    """
    return fast_two_sum(*_partial_products(a, b))


def mul_pair(p: Pair, v: jnp.ndarray) -> Pair:
    """(hi + lo) * v as a normalised pair."""
    product = _partial_products(p.hi, v)
    return fast_two_sum(product.hi, product.lo + p.lo * v)


def add_pairs(p: Pair, r: Pair) -> Pair:
    """(p.hi + p.lo) + (r.hi + r.lo) as a normalised pair."""
    total = two_sum(p.hi, r.hi)
    return fast_two_sum(total.hi, total.lo + (p.lo + r.lo))


def constant_pair(value: Fraction, dtype: np.dtype) -> Pair:
    """An exact rational constant as an opaque pair of ``dtype`` (good to twice its precision)."""
    hi = np.asarray(float(value), dtype)
    lo = np.asarray(float(value - Fraction(float(hi))), dtype)
    return Pair(opaque(hi, dtype), opaque(lo, dtype))


def zero_safe(coefficient: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
    """coefficient * value, where a coefficient of exactly 0 gives exactly 0 (also times inf or NaN).

    >>> float(zero_safe(jnp.float32(0.0), jnp.float32(jnp.inf)))
    0.0
    """
    return jnp.where(coefficient == 0, jnp.zeros((), value.dtype), coefficient * value)


def _finite_or(value: jnp.ndarray, fallback: jnp.ndarray) -> jnp.ndarray:
    """``value`` where finite, else ``fallback`` (the same quantity in single arithmetic)."""
    return jnp.where(jnp.isfinite(value), value, fallback)


def _zero_where(coefficient: jnp.ndarray, pair: Pair) -> Pair:
    """``pair``, or exactly (0, 0) where the coefficient that multiplied into it is 0."""
    zero = jnp.zeros((), pair.hi.dtype)
    zeroed = coefficient == 0
    return Pair(jnp.where(zeroed, zero, pair.hi), jnp.where(zeroed, zero, pair.lo))


# -- the coefficients -----------------------------------------------------------------------


class Coefficients(NamedTuple):
    """The smoothed target y' = y (1 - eps) + eps/2, a = 1 - y' and b = q y', each as a pair.

    1 - y' comes from (1 - y)(1 - eps) + eps/2, so it keeps its relative accuracy near y' = 1;
    eps is the caller's float, exactly (not rounded to the working dtype first).

    >>> c = Coefficients.of(jnp.float32(0.25), None, 0.1)
    >>> float(c.smoothed.hi), float(c.one_minus.hi)
    (0.2750000059604645, 0.7250000238418579)
    """

    smoothed: Pair
    one_minus: Pair
    b: Pair
    #: Whether a + b is exactly 1 (no pos_weight: (1 - y') + y'), which saves a product.
    unit_total: bool

    @classmethod
    def of(cls, y: jnp.ndarray, q: jnp.ndarray | None, eps: float) -> Coefficients:
        dtype = y.dtype
        complement = fast_two_sum(opaque(1.0, dtype), -y)  # exact for y in [0, 1]
        if eps == 0.0:
            smoothed, one_minus = Pair(y, jnp.zeros_like(y)), complement
        else:
            keep = constant_pair(1 - Fraction(eps), dtype)
            half = constant_pair(Fraction(eps) / 2, dtype)

            def affine(v: Pair) -> Pair:  # v (1 - eps) + eps / 2
                product = mul(v.hi, keep.hi)
                total = two_sum(product.hi, half.hi)
                return fast_two_sum(total.hi, total.lo + product.lo
                                    + (v.lo * keep.hi + v.hi * keep.lo + half.lo))

            smoothed, one_minus = affine(Pair(y, jnp.zeros_like(y))), affine(complement)
        b = smoothed if q is None else mul_pair(smoothed, q)
        return cls(smoothed, one_minus, b, q is None)

    def total(self) -> Pair:
        """a + b = 1 + (q - 1) y', the coefficient of log1p(exp(-|x|)) and of the curvature."""
        if self.unit_total:
            one = jnp.ones_like(self.b.hi)
            return Pair(one, jnp.zeros_like(one))
        return add_pairs(self.one_minus, self.b)

    def near_far(self, x: jnp.ndarray) -> tuple[Pair, Pair]:
        """(n, f): the coefficients of softplus(|x|) and softplus(-|x|)."""
        positive = x >= 0
        a, b = self.one_minus, self.b
        near = Pair(jnp.where(positive, a.hi, b.hi), jnp.where(positive, a.lo, b.lo))
        far = Pair(jnp.where(positive, b.hi, a.hi), jnp.where(positive, b.lo, a.lo))
        return near, far


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


def log1p_pair(e: jnp.ndarray, d: Pair, reciprocal: jnp.ndarray) -> Pair:
    """log1p(e) for e in [0, 1] as a pair: 2 atanh(z) with z = e / (2 + e) carried as a pair,
    so that only e's own error remains (the polynomial term is at most 4% of the result).

    ``d`` is 2 + e as a pair and ``reciprocal`` about 1 / d.hi: the quotient need not be
    correctly rounded, since its remainder is computed exactly and divided again.
    """
    dtype = e.dtype
    z = e * reciprocal
    product = _partial_products(z, d.hi)
    z = fast_two_sum(z, (((e - product.hi) - product.lo) - z * d.lo) * reciprocal)
    t = z.hi * z.hi
    coefficients = _ATANH_TAIL[np.dtype(dtype)]
    poly = jnp.asarray(coefficients[-1], dtype)
    for c in coefficients[-2::-1]:
        poly = poly * t + c
    result = fast_two_sum(2 * z.hi, 2 * z.lo + 2 * z.hi * t * poly)
    # Below 2**-(digits + 2), log1p(e) is e to a quarter of a unit in the last place, and
    # e / (2 + e) would underflow before e does (XLA on CPU flushes it to zero).
    small = e < jnp.asarray(2.0 ** -(np.finfo(dtype).nmant + 3), dtype)
    return Pair(jnp.where(small, e, result.hi), jnp.where(small, jnp.zeros((), dtype), result.lo))


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
    sides: exp(-|x|) below the threshold, exp(threshold - |x|) past it.
    """

    x: jnp.ndarray
    e: jnp.ndarray
    u: jnp.ndarray
    lost: jnp.ndarray
    log1p_e: Pair
    #: About 1 / u (within a few units of roundoff); every quotient by it is compensated.
    reciprocal: jnp.ndarray
    #: |x| at or past the underflow threshold (False for NaN).
    tail: jnp.ndarray
    #: exp(threshold - |x|) in the tail (and exp(-|x|) elsewhere).
    shifted: jnp.ndarray
    #: exp(-|x|) * 2**k in the tail, as a pair (k: ``_Underflow.lift_bits``).
    lifted: Pair

    @classmethod
    def of(cls, x: jnp.ndarray) -> LogitParts:
        ax = jnp.abs(x)
        spec = _UNDERFLOW[np.dtype(x.dtype)]
        tail = ax >= spec.threshold  # False for NaN
        # threshold - |x| is exact for |x| in [threshold, 2 threshold] (Sterbenz).
        shifted = jnp.exp(jnp.where(tail, spec.threshold - ax, -ax))
        scale = constant_pair(spec.lift, x.dtype)  # exp(-threshold) * 2**k
        product = _partial_products(shifted, scale.hi)
        lifted = fast_two_sum(product.hi, product.lo + shifted * scale.lo)
        # In the tail, exp(-|x|) = exp(threshold - |x|) exp(-threshold), one rounding more than
        # exp(-|x|) itself; it only matters there next to a coefficient below about 1e-24.
        # (Not from ``lifted``: XLA would then write out that pair to share it with e.)
        down = np.asarray(float(spec.lift), x.dtype) * np.asarray(2.0 ** -spec.lift_bits, x.dtype)
        e = jnp.where(tail, shifted * jnp.asarray(down, x.dtype), shifted)
        u = fast_two_sum(opaque(1.0, x.dtype), e)  # 1 + e
        d = fast_two_sum(opaque(2.0, x.dtype), e)  # 2 + e
        # One division serves 1 / (1 + e) and 1 / (2 + e); XLA compiles each division that has
        # several users on its own, so fewer divisions make a smaller program.
        both = 1 / (u.hi * d.hi)
        return cls(x, e, u.hi, u.lo, log1p_pair(e, d, u.hi * both), d.hi * both, tail, shifted,
                   lifted)

    def _lift(self, near: Pair) -> tuple[jnp.ndarray, Pair, Pair]:
        """(down, e, l): where only the exp(-|x|) term is left (the far tail with n = 0), e and
        l lifted by 2**k and down = 2**-k; elsewhere e and l themselves and down = 1. Lifted,
        the low halves of products are not subnormal, which XLA on CPU would flush to zero."""
        spec = _UNDERFLOW[np.dtype(self.x.dtype)]
        lift = self.tail & (near.hi == 0)
        dtype = self.x.dtype
        down = jnp.where(lift, jnp.asarray(2.0 ** -spec.lift_bits, dtype), jnp.ones((), dtype))
        zero = jnp.zeros((), dtype)

        def choose(lifted: Pair, plain: Pair) -> Pair:
            return Pair(jnp.where(lift, lifted.hi, plain.hi), jnp.where(lift, lifted.lo, plain.lo))

        return (down, choose(self.lifted, Pair(self.e, zero)),
                choose(self.lifted, self.log1p_e))

    def softpluses(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(softplus(x), softplus(-x)); NaN stays NaN, softplus(-inf) is 0."""
        zero = jnp.zeros((), self.x.dtype)
        l = self.log1p_e.value()  # noqa: E741
        return jnp.maximum(self.x, zero) + l, jnp.maximum(-self.x, zero) + l

    def sigmoids(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(sigma(x), sigma(-x)) as 1 / (1 + e) and e / (1 + e), each to a few units of roundoff:
        sigma(-|x|) is never 1 - sigma(|x|)."""
        big, small = self.reciprocal, self.e * self.reciprocal
        positive = self.x >= 0
        return jnp.where(positive, big, small), jnp.where(positive, small, big)

    def bracket_pair(self, coefficients: Coefficients) -> Scaled:
        """a softplus(x) + b softplus(-x) = n |x| + (a + b) l, as a pair (times ``down``).

        n is the coefficient of softplus(|x|); a zero coefficient contributes exactly 0,
        even where |x| is infinite.
        """
        near, _ = coefficients.near_far(self.x)
        total = coefficients.total()
        down, _, l = self._lift(near)  # noqa: E741
        linear = _zero_where(near.hi, mul_pair(near, jnp.abs(self.x)))
        if coefficients.unit_total:
            logs = l
        else:
            product = mul(total.hi, l.hi)
            logs = fast_two_sum(product.hi, product.lo + (total.hi * l.lo + total.lo * l.hi))
        return Scaled(add_pairs(linear, _zero_where(total.hi, logs)), down)

    def plain_bracket(self, coefficients: Coefficients) -> jnp.ndarray:
        """n |x| + (a + b) l in single arithmetic, right where the pairs are not: at infinite
        logits and where a product overflows (a pair's low part is NaN next to inf)."""
        near, _ = coefficients.near_far(self.x)
        return (zero_safe(near.hi, jnp.abs(self.x))
                + zero_safe(coefficients.total().hi, self.log1p_e.hi))

    def bracket(self, coefficients: Coefficients, bracket: Scaled | None = None) -> jnp.ndarray:
        """a softplus(x) + b softplus(-x), rounded once."""
        if bracket is None:
            bracket = self.bracket_pair(coefficients)
        return _finite_or(bracket.value(), self.plain_bracket(coefficients))

    def loss(self, coefficients: Coefficients, w: jnp.ndarray | None,
             bracket: Scaled | None = None) -> jnp.ndarray:
        """w [a softplus(x) + b softplus(-x)] (w None means 1), rounded once, exact into the
        subnormal range; ``bracket`` is ``bracket_pair(coefficients)`` if already at hand."""
        if bracket is None:
            bracket = self.bracket_pair(coefficients)
        tail = underflow_side(self.x, coefficients.one_minus.hi, coefficients.b.hi)
        plain = self.plain_bracket(coefficients)
        if w is None:
            return exact_underflow(_finite_or(bracket.value(), plain), tail, self.tail,
                                   self.shifted)
        weighted = Scaled(_zero_where(w, mul_pair(bracket.pair, w)), bracket.down).value()
        return exact_underflow(_finite_or(weighted, zero_safe(w, plain)), w * tail, self.tail,
                               self.shifted)

    def slope(self, coefficients: Coefficients, w: jnp.ndarray | None = None) -> jnp.ndarray:
        """w [a sigma(x) - b sigma(-x)], the derivative of ``loss`` with respect to x.

        With n the coefficient of sigma(|x|) and f that of sigma(-|x|), this is
        +-(n - f e) / (1 + e), carried as a pair and rounded once. A zero
        coefficient contributes exactly 0.
        """
        near, far = coefficients.near_far(self.x)
        down, e, _ = self._lift(near)
        product = _partial_products(far.hi, e.hi)
        scaled = fast_two_sum(product.hi, product.lo + (far.hi * e.lo + far.lo * e.hi))
        numerator = two_sum(near.hi, -scaled.hi)
        numerator = Pair(numerator.hi, numerator.lo + (near.lo - scaled.lo))
        # Divide by 1 + e = u + lost: one quotient, and its remainder divided again.
        quotient = numerator.hi * self.reciprocal
        back = _partial_products(quotient, self.u)
        remainder = (((numerator.hi - back.hi) - back.lo) + numerator.lo) - quotient * self.lost
        value = fast_two_sum(quotient, remainder * self.reciprocal)
        plain = value.hi
        if w is not None:
            value, plain = mul_pair(value, w), plain * w
        value = _finite_or(value.value(), plain) * down
        positive = self.x >= 0
        value = jnp.where((near.hi == 0) & (far.hi == 0), jnp.zeros((), value.dtype),
                          jnp.where(positive, value, -value))
        if w is not None:
            value = jnp.where(w == 0, jnp.zeros((), value.dtype), value)
        tail = underflow_side(self.x, coefficients.one_minus.hi, -coefficients.b.hi)
        return exact_underflow(value, tail if w is None else w * tail, self.tail, self.shifted)

    def curvature(self, c: jnp.ndarray) -> jnp.ndarray:
        """c sigma(x) sigma(-x), the second derivative of ``loss`` when c = w (a + b)."""
        sig_pos, sig_neg = self.sigmoids()
        product = jnp.where(self.tail, self.lifted.hi, sig_pos * sig_neg)  # = e in the tail
        down = _UNDERFLOW[np.dtype(self.x.dtype)].lift_bits
        value = zero_safe(c, product)
        value = jnp.where(self.tail, value * jnp.asarray(2.0 ** -down, value.dtype), value)
        return exact_underflow(value, c, self.tail, self.shifted)


class _Underflow(NamedTuple):
    #: |x| from which exp(threshold - |x|) is exact in its argument (Sterbenz: |x| <= 2 threshold).
    threshold: float
    #: exp(-threshold) / (smallest subnormal), correctly rounded.
    scale: float
    int_dtype: type
    mantissa_bits: int
    #: k such that exp(-threshold) * 2**k is about 1, and that product (exactly: an irrational
    #: number to 60 digits, of which a pair keeps twice the dtype's precision).
    lift_bits: int
    lift: Fraction


_UNDERFLOW = {
    np.dtype(np.float32): _Underflow(
        64.0, float.fromhex("0x1.969d480000000p+56"), np.int32, 23, 92,
        Fraction("0.794168686740840587176429180931974948067892704982492718304015")),
    np.dtype(np.float64): _Underflow(
        512.0, float.fromhex("0x1.44109edb20931p+335"), np.int64, 52, 738,
        Fraction("0.632939304589205925791237451770277229492777223066893756366945")),
}


def exact_underflow(result: jnp.ndarray, coefficient: jnp.ndarray, inside: jnp.ndarray,
                    shifted: jnp.ndarray) -> jnp.ndarray:
    """``result``, except where it is below the smallest normal number while its exact value is
    ``coefficient * exp(-|x|)`` (the tails of sigma and softplus): there that value is rebuilt
    from the integer bits of a subnormal, since XLA on CPU flushes subnormal arithmetic to zero.
    ``inside``: |x| at or past the threshold; ``shifted``: exp(threshold - |x|) there.

    Only the last operation of a computation can keep such a value: any arithmetic on it (the
    chain rule's product in autodiff, a sum) flushes it again on such a platform.

    >>> x = jnp.float32(-100.0)
    >>> float(exact_underflow(jnp.exp(x), jnp.float32(1.0), jnp.abs(x) >= 64, jnp.exp(64 + x)))
    3.783505853677006e-44
    """
    spec = _UNDERFLOW[np.dtype(result.dtype)]
    units = jnp.abs(coefficient) * shifted * jnp.asarray(spec.scale, result.dtype)
    largest = jnp.asarray(2.0 ** spec.mantissa_bits, result.dtype)
    count = jnp.round(jnp.minimum(units, largest)).astype(spec.int_dtype)
    sign = jnp.where(coefficient < 0, np.iinfo(spec.int_dtype).min, 0).astype(spec.int_dtype)
    rebuilt = lax.bitcast_convert_type(count | sign, result.dtype)
    tiny = jnp.asarray(np.finfo(result.dtype).tiny, result.dtype)
    return jnp.where(inside & (jnp.abs(result) < tiny) & (count > 0), rebuilt, result)


def underflow_side(x: jnp.ndarray, negative: jnp.ndarray, positive: jnp.ndarray) -> jnp.ndarray:
    """The coefficient of exp(-|x|) in a tail: ``negative`` for x < 0, ``positive`` otherwise."""
    return jnp.where(x < 0, negative, positive)
