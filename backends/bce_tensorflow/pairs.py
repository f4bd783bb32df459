"""Arithmetic on unevaluated sums hi + lo, for programs compiled by XLA.

The fused programs (``programs``) compute float32 in float32 and float64 in
float64, yet round the loss and its slope only once: every intermediate is
carried as a ``Pair`` whose low part holds the rounding error of its high
part. Two details keep these error-free transformations exact under XLA:

- products are split into halves by masking mantissa bits, so every partial
  product is exact, and a fused multiply-add that the compiler may form from
  a product and a sum changes nothing;
- constants taking part in an error-free sum are ``opaque``: XLA's simplifier
  folds (a + 1) - 1 to a, which would drop the very error being recovered.

>>> import tensorflow as tf
>>> p = tf.function(lambda a: mul(a, a), jit_compile=True)(tf.constant(1 + 2 ** -20))
>>> float(p.lo) == 2.0 ** -40
True
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla


class Pair(NamedTuple):
    """The unevaluated sum hi + lo, with |lo| at most about one unit in the last place of hi."""

    hi: tf.Tensor
    lo: tf.Tensor

    def value(self) -> tf.Tensor:
        """hi + lo, rounded once; inf and NaN in hi are kept (lo is NaN next to them)."""
        return tf.where(tf.math.is_finite(self.hi), self.hi + self.lo, self.hi)


#: (unsigned integer of the same width, the bits that keep the upper half of the significand):
#: 12 of float32's 24 bits, 26 of float64's 53, so that products of halves are exact.
_HIGH_BITS: dict[str, tuple[tf.DType, int]] = {
    "float32": (tf.uint32, 0xFFFFF000),
    "float64": (tf.uint64, 0xFFFFFFFFF8000000),
}


def opaque(value: float, dtype: tf.DType) -> tf.Tensor:
    """A scalar constant that XLA's simplifier cannot fold into the sums around it."""
    return xla.optimization_barrier(tf.constant(value, dtype))[0]


def split(a: tf.Tensor) -> Pair:
    """a = hi + lo exactly, hi holding the upper half of the significand (masking bits
    neither overflows nor depends on how the compiler rounds a product)."""
    unsigned, mask = _HIGH_BITS[a.dtype.name]
    hi = tf.bitcast(tf.bitwise.bitwise_and(tf.bitcast(a, unsigned), tf.constant(mask, unsigned)),
                    a.dtype)
    return Pair(hi, a - hi)


def fast_two_sum(a: tf.Tensor, b: tf.Tensor) -> Pair:
    """a + b = s + t exactly, for |a| >= |b| (or a == 0)."""
    s = a + b
    return Pair(s, b - (s - a))


def two_sum(a: tf.Tensor, b: tf.Tensor) -> Pair:
    """a + b = s + t exactly, whatever the order of magnitude (Knuth)."""
    s = a + b
    bb = s - a
    return Pair(s, (a - (s - bb)) + (b - bb))


def partial_products(a: tf.Tensor, b: tf.Tensor) -> Pair:
    """a * b = hi + lo, exact but for lo's last rounding (Dekker's product, split by masking)."""
    (ah, al), (bh, bl) = split(a), split(b)
    return Pair(ah * bh, (ah * bl + al * bh) + al * bl)


def mul(a: tf.Tensor, b: tf.Tensor) -> Pair:
    """a * b as a normalised pair."""
    return fast_two_sum(*partial_products(a, b))


def mul_pair(p: Pair, v: tf.Tensor) -> Pair:
    """(hi + lo) * v as a normalised pair."""
    product = partial_products(p.hi, v)
    return fast_two_sum(product.hi, product.lo + p.lo * v)


def add_pairs(p: Pair, r: Pair) -> Pair:
    """(p.hi + p.lo) + (r.hi + r.lo) as a normalised pair."""
    total = two_sum(p.hi, r.hi)
    return fast_two_sum(total.hi, total.lo + (p.lo + r.lo))


def constant_pair(value: Fraction, dtype: tf.DType) -> Pair:
    """An exact rational constant as an opaque pair of ``dtype`` (twice its precision)."""
    numpy_dtype = dtype.as_numpy_dtype
    hi = numpy_dtype(float(value))
    lo = numpy_dtype(float(value - Fraction(float(hi))))
    return Pair(opaque(float(hi), dtype), opaque(float(lo), dtype))


def zero_safe(coefficient: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """coefficient * value, where a coefficient of exactly 0 gives exactly 0 (even times inf).

    >>> float(zero_safe(tf.constant(0.0), tf.constant(np.inf)))
    0.0
    """
    product = coefficient * value
    return tf.where(tf.equal(coefficient, 0), tf.zeros_like(product), product)


def zero_where(coefficient: tf.Tensor, pair: Pair) -> Pair:
    """``pair``, or exactly (0, 0) where the coefficient that multiplied into it is 0."""
    zeroed = tf.equal(coefficient, 0)
    zero = tf.zeros_like(pair.hi)
    return Pair(tf.where(zeroed, zero, pair.hi), tf.where(zeroed, zero, pair.lo))


def select(condition: tf.Tensor, a: Pair, b: Pair) -> Pair:
    """``a`` where ``condition`` holds, else ``b``, part by part."""
    return Pair(tf.where(condition, a.hi, b.hi), tf.where(condition, a.lo, b.lo))
