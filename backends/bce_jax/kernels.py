"""Elementwise math of the JAX backend, in the working dtype (float32 or float64).

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e),

    softplus(x)  = max(x, 0)  + l        sigma(x)  = 1/(1+e) if x >= 0 else e/(1+e)
    softplus(-x) = max(-x, 0) + l        sigma(-x) = the other one

The only difference of two terms is the slope's, whose error the spec
measures against its larger term; so float32 is computed natively and stays
within a few ULP of the exact value. Two details keep it there on XLA:

- the rounding error of 1 + e is recovered exactly and added back (see
  ``LogitParts``), which takes XLA's float32 log1p from 2.5 ULP to 1.6 ULP;
- ``exact_underflow``: XLA on CPU flushes subnormal results to zero, so a loss
  of 3.8e-44 (logit -100, target 0, float32) would come back as 0. Where a
  result lies below the smallest normal number it is rebuilt from integer bits.

>>> import jax.numpy as jnp
>>> parts = LogitParts.of(jnp.array([-30.0, 0.0, 30.0]))
>>> [round(float(v), 6) for v in parts.softpluses()[0]]
[0.0, 0.693147, 30.0]
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax


def zero_safe(coefficient: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
    """coefficient * value, where a coefficient of exactly 0 gives exactly 0 (also times inf or NaN).

    >>> float(zero_safe(jnp.float32(0.0), jnp.float32(jnp.inf)))
    0.0
    """
    return jnp.where(coefficient == 0, jnp.zeros((), value.dtype), coefficient * value)


class LogitParts(NamedTuple):
    """softplus(+-x) and sigma(+-x) of the logits from one exp and one log1p per element.

    u = 1 + e is rounded; ``lost`` = e - (u - 1) is exactly what that rounding
    dropped, and is added back where it matters: log1p(e) = log(u) + lost/u
    (XLA's own float32 log1p is off by up to 2.5 ULP on [0.3, 1]; this is 1.6)
    and 1/(1 + e) = (1/u)(1 - lost/u).
    """

    x: jnp.ndarray
    e: jnp.ndarray
    u: jnp.ndarray
    lost: jnp.ndarray
    log1p_e: jnp.ndarray

    @classmethod
    def of(cls, x: jnp.ndarray) -> LogitParts:
        e = jnp.exp(-jnp.abs(x))
        # The barrier stops XLA from simplifying (1 + e) - 1 to e, which would lose ``lost``.
        u = lax.optimization_barrier(1 + e)
        lost = e - (u - 1)
        log1p_e = jnp.where(e < 0.25, jnp.log1p(e), jnp.log(u) + lost / u)
        return cls(x, e, u, lost, log1p_e)

    def softpluses(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(softplus(x), softplus(-x)); NaN stays NaN, softplus(-inf) is 0."""
        zero = jnp.zeros((), self.x.dtype)
        return (jnp.maximum(self.x, zero) + self.log1p_e,
                jnp.maximum(-self.x, zero) + self.log1p_e)

    def sigmoids(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(sigma(x), sigma(-x)), each from its own division: sigma(-|x|) is never 1 - sigma(|x|)."""
        big, small = 1 / self.u, self.e / self.u
        positive = self.x >= 0
        return jnp.where(positive, big, small), jnp.where(positive, small, big)

    def bracket(self, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
        """a softplus(x) + b softplus(-x) as a max(x,0) + b max(-x,0) + (a + b) l.

        Grouping the two log1p terms saves a rounding; a zero coefficient still
        contributes exactly 0, even where max(+-x, 0) is infinite.
        """
        zero = jnp.zeros((), self.x.dtype)
        linear = zero_safe(a, jnp.maximum(self.x, zero)) + zero_safe(b, jnp.maximum(-self.x, zero))
        return linear + zero_safe(a + b, self.log1p_e)

    def loss(self, bracket: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray,
             w: jnp.ndarray | None) -> jnp.ndarray:
        """w * bracket (w None means 1), exact into the subnormal range."""
        tail = underflow_side(self.x, a, b)
        if w is None:
            return exact_underflow(bracket, tail, self.x)
        return exact_underflow(zero_safe(w, bracket), w * tail, self.x)

    def slope(self, a: jnp.ndarray, b: jnp.ndarray, w: jnp.ndarray | None = None) -> jnp.ndarray:
        """w [a sigma(x) - b sigma(-x)], the derivative of ``loss`` with respect to x.

        With n the coefficient of sigma(|x|) and f that of sigma(-|x|), this is
        +-(n - f e) / (1 + e): one product, one difference and one division,
        fewer roundings than two sigmoids and two products. A zero coefficient
        contributes exactly 0.
        """
        positive = self.x >= 0
        near, far = jnp.where(positive, a, b), jnp.where(positive, b, a)
        quotient = (near - zero_safe(far, self.e)) / self.u
        value = quotient - quotient * (self.lost / self.u)  # divide by 1 + e, not by u
        value = jnp.where((near == 0) & (far == 0), jnp.zeros((), value.dtype),
                          jnp.where(positive, value, -value))
        tail = underflow_side(self.x, a, -b)
        if w is None:
            return exact_underflow(value, tail, self.x)
        return exact_underflow(zero_safe(w, value), w * tail, self.x)

    def curvature(self, c: jnp.ndarray) -> jnp.ndarray:
        """c sigma(x) sigma(-x), the second derivative of ``loss`` when c = w (a + b)."""
        sig_pos, sig_neg = self.sigmoids()
        return exact_underflow(zero_safe(c, sig_pos * sig_neg), c, self.x)


class _Underflow(NamedTuple):
    #: |x| from which exp(threshold - |x|) is exact in its argument (Sterbenz: |x| <= 2 threshold).
    threshold: float
    #: exp(-threshold) / (smallest subnormal), correctly rounded.
    scale: float
    int_dtype: type
    mantissa_bits: int


_UNDERFLOW = {
    np.dtype(np.float32): _Underflow(64.0, float.fromhex("0x1.969d480000000p+56"), np.int32, 23),
    np.dtype(np.float64): _Underflow(512.0, float.fromhex("0x1.44109edb20931p+335"), np.int64, 52),
}


def exact_underflow(result: jnp.ndarray, coefficient: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """``result``, except where it is below the smallest normal number while its exact value is
    ``coefficient * exp(-|x|)`` (the tails of sigma and softplus): there that value is rebuilt
    from the integer bits of a subnormal, since XLA on CPU flushes subnormal arithmetic to zero.

    Only the last operation of a computation can keep such a value: any arithmetic on it (the
    chain rule's product in autodiff, a sum) flushes it again on such a platform.

    >>> x = jnp.float32(-100.0)
    >>> float(exact_underflow(jnp.exp(x), jnp.float32(1.0), x))
    3.783505853677006e-44
    """
    spec = _UNDERFLOW[np.dtype(result.dtype)]
    ax = jnp.abs(x)
    inside = ax >= spec.threshold  # False for NaN
    # threshold - |x| is exact for |x| in [threshold, 2 threshold], so exp adds its own error only.
    shifted = jnp.exp(spec.threshold - jnp.where(inside, ax, spec.threshold))
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
