"""Results below the smallest normal number, inside programs compiled by XLA.

XLA on CPU flushes subnormal results to zero, so a float32 loss of 3.8e-44
(logit -100, target 0) would come back as 0, and so would a subnormal
gradient multiplied by an upstream gradient of 1. Here such values are
rebuilt from the integer bits of a subnormal number instead. Only the last
operation of a computation can keep such a value: any arithmetic on it
flushes it again.

>>> import tensorflow as tf
>>> x = tf.constant(-100.0)
>>> f = tf.function(lambda x: exact_underflow(tf.exp(x), tf.constant(1.0), x), jit_compile=True)
>>> float(f(x))
3.783505853677006e-44
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Underflow(NamedTuple):
    """Constants of one dtype for values near and below its smallest normal number."""

    #: |x| from which exp(threshold - |x|) is exact in its argument (Sterbenz: |x| <= 2 threshold).
    threshold: float
    #: exp(-threshold) / (smallest subnormal), correctly rounded.
    scale: float
    unsigned: tf.DType
    signed: tf.DType
    mantissa_bits: int
    #: k such that exp(-threshold) * 2**k is about 1, and that product exactly (to 60 digits).
    lift_bits: int
    lift: Fraction


UNDERFLOW: dict[str, Underflow] = {
    "float32": Underflow(
        64.0, float.fromhex("0x1.969d480000000p+56"), tf.uint32, tf.int32, 23, 92,
        Fraction("0.794168686740840587176429180931974948067892704982492718304015")),
    "float64": Underflow(
        512.0, float.fromhex("0x1.44109edb20931p+335"), tf.uint64, tf.int64, 52, 738,
        Fraction("0.632939304589205925791237451770277229492777223066893756366945")),
}


def tail_exp(ax: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(|x| >= threshold, exp(threshold - |x|) there and 1 elsewhere); the argument is exact
    for |x| in [threshold, 2 threshold], so exp adds only its own error."""
    spec = UNDERFLOW[ax.dtype.name]
    threshold = tf.constant(spec.threshold, ax.dtype)
    tail = ax >= threshold  # False for NaN
    return tail, tf.exp(threshold - tf.where(tail, ax, threshold))


def from_units(units: tf.Tensor, negative: tf.Tensor) -> tf.Tensor:
    """The number ``units`` (rounded to an integer) times the smallest subnormal, with the sign
    ``negative``; ``units`` may reach 2**mantissa_bits (the smallest normal number)."""
    spec = UNDERFLOW[units.dtype.name]
    largest = tf.constant(2.0 ** spec.mantissa_bits, units.dtype)
    count = tf.cast(tf.round(tf.minimum(units, largest)), spec.unsigned)
    sign = tf.where(negative, tf.constant(1 << (spec.unsigned.size * 8 - 1), spec.unsigned),
                    tf.constant(0, spec.unsigned))
    return tf.bitcast(tf.bitwise.bitwise_or(count, sign), units.dtype)


def exact_underflow(result: tf.Tensor, coefficient: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``result``, except where it is below the smallest normal number while its exact value is
    ``coefficient * exp(-|x|)`` (the tails of sigma and softplus): there that value is rebuilt
    from its bits."""
    spec = UNDERFLOW[result.dtype.name]
    inside, shifted = tail_exp(tf.abs(x))
    units = tf.abs(coefficient) * shifted * tf.constant(spec.scale, result.dtype)
    rebuilt = from_units(units, coefficient < 0)
    tiny = tf.constant(np.finfo(result.dtype.as_numpy_dtype).tiny, result.dtype)
    keep = inside & (tf.abs(result) < tiny) & (tf.round(units) > 0)
    return tf.where(keep, rebuilt, result)


#: Per dtype: (c, k) such that a saved value below 2**-c is multiplied lifted by 2**k.
_LIFT: dict[str, tuple[int, int]] = {"float32": (60, 64), "float64": (500, 512)}


def scaled_product(saved: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """saved * factor (0 where factor is 0), where a product below the smallest normal number
    is rebuilt from bits rather than flushed, and ``saved`` may itself be subnormal.

    This is the backward step of a loss whose gradient was computed in its forward: with an
    upstream gradient of 1 the result is ``saved`` exactly, subnormal or not. A product that
    is subnormal only because ``factor`` is tiny may still come out flushed (as the spec allows).
    """
    spec, (cut, lift) = UNDERFLOW[saved.dtype.name], _LIFT[saved.dtype.name]
    dtype = saved.dtype
    bits = tf.bitcast(saved, spec.unsigned)
    magnitude = tf.bitwise.bitwise_and(bits, tf.constant(~(1 << (spec.unsigned.size * 8 - 1))
                                                         & ((1 << spec.unsigned.size * 8) - 1),
                                                         spec.unsigned))
    # Compared as integers: with subnormals read as 0, a float comparison would miss them.
    small = magnitude < tf.bitcast(tf.constant(2.0 ** -cut, dtype), spec.unsigned)
    subnormal = magnitude < tf.constant(1 << spec.mantissa_bits, spec.unsigned)
    # A subnormal is its integer bits times the smallest subnormal number, 2**(minexp - mantissa).
    minexp = int(np.finfo(dtype.as_numpy_dtype).minexp)
    units = tf.cast(magnitude, dtype) * tf.constant(2.0 ** (lift + minexp - spec.mantissa_bits),
                                                    dtype)
    units = tf.where(tf.equal(magnitude, bits), units, -units)
    lifted = tf.where(subnormal, units, tf.where(small, saved, tf.zeros_like(saved))
                      * tf.constant(2.0 ** lift, dtype))
    product = lifted * factor
    down = tf.constant(2.0 ** -lift, dtype)
    normal = tf.abs(product) >= tf.constant(2.0 ** (minexp + lift), dtype)
    rebuilt = from_units(tf.abs(product) * tf.constant(2.0 ** (spec.mantissa_bits - minexp - lift),
                                                       dtype), product < 0)
    tiny = tf.where(normal | ~tf.math.is_finite(product), product * down, rebuilt)
    result = tf.where(small, tiny, saved * factor)
    return tf.where(tf.equal(factor, 0), tf.zeros_like(result), result)
