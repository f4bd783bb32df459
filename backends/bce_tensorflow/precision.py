"""Working precision of the exact kernels (``kernels``, ``ops``), and the one rounding back.

There, float32 inputs are computed in float64 and float64 inputs in float64;
float16 and bfloat16 inputs are computed in float32, as the spec says. Each
result is rounded once to the input's dtype. (The fused programs compute
float32 in float32 with compensated arithmetic instead: ``compensated``.)

TensorFlow runs its CPU kernels with denormals flushed to zero (results and
inputs alike), so no arithmetic and no ``tf.cast`` can produce a subnormal
number. The two helpers that must produce one build it from its bits
instead: ``round_to`` (float64 to float32, for example a float32 loss of
3.6e-44 at logit -100) and ``ldexp_down`` (the float64 tails, which are
computed scaled by a power of two and scaled back here).

``to_working`` and ``from_working`` carry custom gradients that are each
other, so gradients flowing back to a float32 input get the same single,
subnormal-preserving rounding, to any order of differentiation.

>>> import numpy as np, tensorflow as tf
>>> value = tf.constant(-3.7e-44, tf.float64)
>>> bool(round_to(value, tf.float32) == np.float32(-3.7e-44)), float(tf.cast(value, tf.float32))
(True, -0.0)
>>> to_working(tf.constant(1.5, tf.float32)).dtype.name
'float64'
"""

from __future__ import annotations

import tensorflow as tf

#: dtype of the computation for each input dtype.
WORKING_DTYPES: dict[str, tf.DType] = {
    "float64": tf.float64,
    "float32": tf.float64,
    "float16": tf.float32,
    "bfloat16": tf.float32,
}

# (unsigned integer of the same width, smallest normal exponent, mantissa bits) of each
# dtype whose subnormals are built from bits.
_FORMATS: dict[str, tuple[tf.DType, int, int]] = {
    "float32": (tf.uint32, -126, 23),
    "float64": (tf.uint64, -1022, 52),
}


def working_dtype(dtype: tf.DType) -> tf.DType:
    """The dtype the loss of an input of ``dtype`` is computed in."""
    return WORKING_DTYPES[dtype.name]


def scales_tails(dtype: tf.DType) -> bool:
    """Whether inputs of ``dtype`` need the scaled tails of ``kernels``: results below the
    normal range of ``dtype`` are only representable when it is its own working precision."""
    return working_dtype(dtype) == dtype


def _from_bits(magnitude_in_ulps: tf.Tensor, negative: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """The subnormal (or smallest normal) number ``magnitude_in_ulps`` x 2**(min - mantissa)."""
    unsigned, _, _ = _FORMATS[dtype.name]
    bits = tf.cast(tf.round(magnitude_in_ulps), unsigned)  # round half to even, as IEEE
    sign = tf.where(negative, tf.constant(1 << (unsigned.size * 8 - 1), unsigned),
                    tf.constant(0, unsigned))
    return tf.bitcast(tf.bitwise.bitwise_or(bits, sign), dtype)


def round_to(value: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``value`` rounded once to ``dtype``, keeping results in ``dtype``'s subnormal range.

    A magnitude that rounds up to the smallest normal number comes out right too:
    its bit pattern is the next one after the largest subnormal.
    """
    if value.dtype == dtype:
        return value
    if not (value.dtype == tf.float64 and dtype == tf.float32):
        return tf.cast(value, dtype)
    _, min_exponent, mantissa = _FORMATS["float32"]
    magnitude = tf.abs(value)
    subnormal = magnitude < 2.0 ** min_exponent  # False for NaN
    if tf.executing_eagerly() and not bool(tf.reduce_any(subnormal & (magnitude > 0))):
        # Nothing below the normal range but zeros (the usual case): no bits to build, and
        # the zeros come out as +0, as the bits would give them. Half the eager operations.
        return tf.where(subnormal, tf.constant(0, dtype), tf.cast(value, dtype))
    scaled = tf.where(subnormal, magnitude, tf.zeros_like(magnitude)) * 2.0 ** (
        mantissa - min_exponent)
    return tf.where(subnormal, _from_bits(scaled, value < 0, dtype), tf.cast(value, dtype))


def ldexp_down(value: tf.Tensor, shift: int) -> tf.Tensor:
    """``value`` x 2**-shift (float32 or float64), correctly rounded where it is subnormal.

    ``value`` itself must be normal: it is the result scaled up by 2**shift.
    """
    _, min_exponent, mantissa = _FORMATS[value.dtype.name]
    magnitude = tf.abs(value)
    subnormal = magnitude < 2.0 ** (min_exponent + shift)
    scaled = tf.where(subnormal, magnitude, tf.zeros_like(magnitude)) * 2.0 ** (
        mantissa - min_exponent - shift)
    return tf.where(subnormal, _from_bits(scaled, value < 0, value.dtype),
                    value * 2.0 ** -shift)


@tf.custom_gradient
def _widen(value: tf.Tensor) -> tuple[tf.Tensor, object]:
    """float32 to float64; its gradient rounds back with ``_narrow``."""
    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return _narrow(upstream)
    return tf.cast(value, tf.float64), grad


@tf.custom_gradient
def _narrow(value: tf.Tensor) -> tuple[tf.Tensor, object]:
    """float64 to float32 with subnormals kept; its gradient widens with ``_widen``."""
    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return _widen(upstream)
    return round_to(value, tf.float32), grad


def to_working(value: tf.Tensor) -> tf.Tensor:
    """``value`` (of an input dtype) in its working precision, differentiably."""
    target = working_dtype(value.dtype)
    if value.dtype == target:
        return value
    if value.dtype == tf.float32:
        return _widen(value)
    return tf.cast(value, target)


def from_working(value: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``value`` (in working precision) rounded once to ``dtype``, differentiably."""
    if value.dtype == dtype:
        return value
    if dtype == tf.float32 and value.dtype == tf.float64:
        return _narrow(value)
    return tf.cast(value, dtype)
