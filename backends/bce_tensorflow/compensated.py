"""The loss from logits and its slope in the input's own precision, rounded once (for XLA).

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

float32 is computed in float32 and stays within 2 ULP of the exact loss and
slope whatever the weight, pos_weight and label smoothing: the coefficient
products and sums are carried as pairs (``pairs``) and rounded once, so only
the exponential's own error is left. l = 2 atanh(e / (2 + e)) comes from a
short polynomial, since XLA's float32 log is off by up to 2 units on [1.25, 2].
In the far tail, where a result is c exp(-|x|) alone, e is carried lifted by a
power of two so that no partial product is subnormal (XLA on CPU flushes them),
and results below the normal range are rebuilt from bits (``underflow``).

These functions are meant to be traced into one XLA program (``programs``).

>>> import tensorflow as tf
>>> run = tf.function(lambda x: LogitParts.of(x).softpluses()[0], jit_compile=True)
>>> [round(v, 6) for v in run(tf.constant([-30.0, 0.0, 30.0])).numpy().tolist()]
[0.0, 0.693147, 30.0]
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from .pairs import (Pair, add_pairs, constant_pair, fast_two_sum, mul, mul_pair, opaque,
                    partial_products, select, two_sum, zero_safe, zero_where)
from .underflow import UNDERFLOW, exact_underflow, tail_exp


class Scaled(NamedTuple):
    """A pair whose value is to be multiplied by ``down``, a power of two (the far tail)."""

    pair: Pair
    down: tf.Tensor

    def value(self) -> tf.Tensor:
        return self.pair.value() * self.down


def _finite_or(value: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    """``value`` where finite, else ``fallback`` (the same quantity in single arithmetic)."""
    return tf.where(tf.math.is_finite(value), value, fallback)


class Smoothing(NamedTuple):
    """1 - eps and eps / 2 as pairs, each exact to twice the working precision."""

    keep: Pair
    half: Pair

    @staticmethod
    def values(eps: float, dtype: tf.DType) -> list[float]:
        """[keep.hi, keep.lo, half.hi, half.lo] for ``eps`` (the caller's float, exactly), to be
        passed to a program as a tensor: a runtime value, so one program serves every eps."""
        numbers = []
        for value in (1 - Fraction(eps), Fraction(eps) / 2):
            hi = dtype.as_numpy_dtype(float(value))
            numbers += [float(hi), float(dtype.as_numpy_dtype(float(value - Fraction(float(hi)))))]
        return numbers

    @classmethod
    def of(cls, values: tf.Tensor) -> Smoothing:
        """The pairs from a tensor of ``values``."""
        return cls(Pair(values[0], values[1]), Pair(values[2], values[3]))


class Coefficients(NamedTuple):
    """y' = y (1 - eps) + eps/2, a = 1 - y' and b = q y', each as a pair.

    1 - y' comes from (1 - y)(1 - eps) + eps/2, so it keeps its relative accuracy
    near y' = 1; eps is the caller's float, exactly.
    """

    smoothed: Pair
    one_minus: Pair
    b: Pair
    #: Whether a + b is exactly 1 (no pos_weight), which saves a product.
    unit_total: bool

    @classmethod
    def of(cls, y: tf.Tensor, q: tf.Tensor | None, smoothing: Smoothing | None) -> Coefficients:
        """The coefficients of targets ``y``; ``smoothing`` None means eps = 0."""
        dtype = y.dtype
        zero = tf.zeros_like(y)
        complement = fast_two_sum(opaque(1.0, dtype), -y)  # exact for y in [0, 1]
        if smoothing is None:
            smoothed, one_minus = Pair(y, zero), complement
        else:
            keep, half = smoothing

            def affine(v: Pair) -> Pair:  # v (1 - eps) + eps / 2
                product = mul(v.hi, keep.hi)
                total = two_sum(product.hi, half.hi)
                return fast_two_sum(total.hi, total.lo + product.lo
                                    + (v.lo * keep.hi + v.hi * keep.lo + half.lo))

            smoothed, one_minus = affine(Pair(y, zero)), affine(complement)
        b = smoothed if q is None else mul_pair(smoothed, q)
        return cls(smoothed, one_minus, b, q is None)

    def total(self) -> Pair:
        """a + b = 1 + (q - 1) y', the coefficient of log1p(exp(-|x|))."""
        if self.unit_total:
            return Pair(tf.ones_like(self.b.hi), tf.zeros_like(self.b.hi))
        return add_pairs(self.one_minus, self.b)

    def near_far(self, x: tf.Tensor) -> tuple[Pair, Pair]:
        """(n, f): the coefficients of softplus(|x|) and softplus(-|x|)."""
        positive = x >= 0
        return (select(positive, self.one_minus, self.b),
                select(positive, self.b, self.one_minus))


#: (atanh(z) - z) / z**3 as a polynomial in t = z**2 on [0, 1/9] (z = e / (2 + e) <= 1/3),
#: lowest degree first; its error is below 1e-9 (float32) and 1e-18 (float64) of the result.
_ATANH_TAIL: dict[str, tuple[float, ...]] = {
    "float32": (0.3333333366026371, 0.1999985316596486, 0.14296178997151418,
                0.10853287900440187, 0.11612164612011674),
    "float64": (0.3333333333333333, 0.19999999999999762, 0.1428571428580005,
                0.11111111099118386, 0.09090909948981357, 0.07692271982430275,
                0.06667589315724629, 0.05867139530651599, 0.05422589197440007,
                0.03746071897775383, 0.07815288900461426),
}


def log1p_pair(e: tf.Tensor, d: Pair, reciprocal: tf.Tensor) -> Pair:
    """log1p(e) for e in [0, 1] as a pair: 2 atanh(z), z = e / (2 + e) carried as a pair.

    ``d`` is 2 + e as a pair and ``reciprocal`` about 1 / d.hi: the quotient's remainder is
    computed exactly and divided again, so it need not be correctly rounded.
    """
    dtype = e.dtype
    z = e * reciprocal
    product = partial_products(z, d.hi)
    z = fast_two_sum(z, (((e - product.hi) - product.lo) - z * d.lo) * reciprocal)
    t = z.hi * z.hi
    coefficients = _ATANH_TAIL[dtype.name]
    poly = tf.constant(coefficients[-1], dtype)
    for c in coefficients[-2::-1]:
        poly = poly * t + tf.constant(c, dtype)
    result = fast_two_sum(2 * z.hi, 2 * z.lo + 2 * z.hi * t * poly)
    # Below 2**-(digits + 2), log1p(e) is e within a quarter of a unit, and e / (2 + e)
    # would underflow before e does.
    small = e < tf.constant(2.0 ** -(np.finfo(dtype.as_numpy_dtype).nmant + 3), dtype)
    return Pair(tf.where(small, e, result.hi), tf.where(small, tf.zeros_like(e), result.lo))


class LogitParts(NamedTuple):
    """exp(-|x|) and log1p(exp(-|x|)), once per element, and what follows from them.

    u = 1 + e is rounded; ``lost`` = e - (u - 1) is exactly what that rounding dropped.
    In the far tail (|x| past the underflow threshold) e is also carried lifted by 2**k
    (``lifted``, from exp(threshold - |x|), whose argument is exact).
    """

    x: tf.Tensor
    e: tf.Tensor
    u: tf.Tensor
    lost: tf.Tensor
    log1p_e: Pair
    #: About 1 / u (within a few units of roundoff); every quotient by it is compensated.
    reciprocal: tf.Tensor
    #: |x| at or past the underflow threshold (False for NaN); None: no element is.
    tail: tf.Tensor | None
    lifted: Pair | None

    @classmethod
    def of(cls, x: tf.Tensor, *, tails: bool = True) -> LogitParts:
        """The parts of ``x``; with ``tails`` False, ``x`` must have no element in the far tail
        (see ``far_tail``), whose handling is then left out of the program."""
        dtype = x.dtype
        ax = tf.abs(x)
        e = tf.exp(-ax)
        u = fast_two_sum(opaque(1.0, dtype), e)  # 1 + e
        d = fast_two_sum(opaque(2.0, dtype), e)  # 2 + e
        both = 1 / (u.hi * d.hi)  # one division serves 1 / (1 + e) and 1 / (2 + e)
        tail, lifted = None, None
        if tails:
            tail, shifted = tail_exp(ax)
            scale = constant_pair(UNDERFLOW[dtype.name].lift, dtype)  # exp(-threshold) * 2**k
            product = partial_products(shifted, scale.hi)
            lifted = fast_two_sum(product.hi, product.lo + shifted * scale.lo)
        return cls(x, e, u.hi, u.lo, log1p_pair(e, d, u.hi * both), d.hi * both, tail, lifted)

    def _underflow(self, result: tf.Tensor, coefficient: tf.Tensor) -> tf.Tensor:
        return result if self.tail is None else exact_underflow(result, coefficient, self.x)

    def _lift(self, near: Pair) -> tuple[tf.Tensor, Pair, Pair]:
        """(down, e, l): where only the exp(-|x|) term is left (far tail, n = 0), e and l lifted
        by 2**k and down = 2**-k; elsewhere e and l themselves and down = 1."""
        zero = tf.zeros_like(self.e)
        if self.tail is None:
            return tf.ones_like(self.e), Pair(self.e, zero), self.log1p_e
        spec = UNDERFLOW[self.x.dtype.name]
        dtype = self.x.dtype
        lift = self.tail & tf.equal(near.hi, 0)
        down = tf.where(lift, tf.constant(2.0 ** -spec.lift_bits, dtype), tf.ones_like(self.e))
        return (down, select(lift, self.lifted, Pair(self.e, zero)),
                select(lift, self.lifted, self.log1p_e))

    def softpluses(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(softplus(x), softplus(-x)) in single arithmetic; NaN stays NaN."""
        zero = tf.zeros_like(self.x)
        l = self.log1p_e.value()  # noqa: E741
        return tf.maximum(self.x, zero) + l, tf.maximum(-self.x, zero) + l

    def bracket_pair(self, coefficients: Coefficients) -> Scaled:
        """a softplus(x) + b softplus(-x) = n |x| + (a + b) l, as a pair (times ``down``);
        a zero coefficient contributes exactly 0, even where |x| is infinite."""
        near, _ = coefficients.near_far(self.x)
        total = coefficients.total()
        down, _, l = self._lift(near)  # noqa: E741
        linear = zero_where(near.hi, mul_pair(near, tf.abs(self.x)))
        if coefficients.unit_total:
            logs = l
        else:
            product = mul(total.hi, l.hi)
            logs = fast_two_sum(product.hi, product.lo + (total.hi * l.lo + total.lo * l.hi))
        return Scaled(add_pairs(linear, zero_where(total.hi, logs)), down)

    def plain_bracket(self, coefficients: Coefficients) -> tf.Tensor:
        """n |x| + (a + b) l in single arithmetic: right where the pairs are not, at infinite
        logits and where a product overflows (a pair's low part is NaN next to inf)."""
        near, _ = coefficients.near_far(self.x)
        return (zero_safe(near.hi, tf.abs(self.x))
                + zero_safe(coefficients.total().hi, self.log1p_e.hi))

    def loss(self, coefficients: Coefficients, w: tf.Tensor | None) -> tf.Tensor:
        """w [a softplus(x) + b softplus(-x)] (w None means 1), rounded once, exact into the
        subnormal range."""
        bracket = self.bracket_pair(coefficients)
        tail = underflow_side(self.x, coefficients.one_minus.hi, coefficients.b.hi)
        plain = self.plain_bracket(coefficients)
        if w is None:
            return self._underflow(_finite_or(bracket.value(), plain), tail)
        weighted = Scaled(zero_where(w, mul_pair(bracket.pair, w)), bracket.down).value()
        return self._underflow(_finite_or(weighted, zero_safe(w, plain)), w * tail)

    def slope(self, coefficients: Coefficients, w: tf.Tensor | None) -> tf.Tensor:
        """w [a sigma(x) - b sigma(-x)], the derivative of ``loss`` with respect to x.

        With n the coefficient of sigma(|x|) and f that of sigma(-|x|), this is
        +-(n - f e) / (1 + e), carried as a pair and rounded once; a zero coefficient
        contributes exactly 0.
        """
        near, far = coefficients.near_far(self.x)
        down, e, _ = self._lift(near)
        product = partial_products(far.hi, e.hi)
        scaled = fast_two_sum(product.hi, product.lo + (far.hi * e.lo + far.lo * e.hi))
        numerator = two_sum(near.hi, -scaled.hi)
        numerator = Pair(numerator.hi, numerator.lo + (near.lo - scaled.lo))
        # Divide by 1 + e = u + lost: one quotient, and its remainder divided again.
        quotient = numerator.hi * self.reciprocal
        back = partial_products(quotient, self.u)
        remainder = (((numerator.hi - back.hi) - back.lo) + numerator.lo) - quotient * self.lost
        value = fast_two_sum(quotient, remainder * self.reciprocal)
        plain = value.hi
        if w is not None:
            value, plain = mul_pair(value, w), plain * w
        result = _finite_or(value.value(), plain) * down
        zero = tf.zeros_like(result)
        result = tf.where(tf.equal(near.hi, 0) & tf.equal(far.hi, 0), zero,
                          tf.where(self.x >= 0, result, -result))
        if w is not None:
            result = tf.where(tf.equal(w, 0), zero, result)
        tail = underflow_side(self.x, coefficients.one_minus.hi, -coefficients.b.hi)
        return self._underflow(result, tail if w is None else w * tail)


def far_tail(x: tf.Tensor) -> tf.Tensor:
    """Whether any element of ``x`` is in the far tail, where results may lie near or below the
    smallest normal number (typical logits have none: the program then skips that work)."""
    return tf.reduce_any(tf.abs(x) >= tf.constant(UNDERFLOW[x.dtype.name].threshold, x.dtype))


def underflow_side(x: tf.Tensor, negative: tf.Tensor, positive: tf.Tensor) -> tf.Tensor:
    """The coefficient of exp(-|x|) in a tail: ``negative`` for x < 0, ``positive`` otherwise."""
    return tf.where(x < 0, negative, positive)
