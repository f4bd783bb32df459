"""The element math of the JAX backend that the core's compensated arithmetic does not hold:
the probability form, the partial derivatives held to parity (in single arithmetic), and
the plain loss of unweighted, unsmoothed logits (:class:`PlainParts`).

The loss from logits and its slope and curvature come from
``bce_core.compensated.LogitParts`` with ``operands.PRIMITIVES``, except without
weight, pos_weight and label smoothing, where :class:`PlainParts` meets the
contract in the working dtype's own arithmetic. The
partial derivatives with respect to targets, weight and pos_weight are written
here once, in terms of the two softpluses (logits) or the two clamped logs
(probabilities), for the one-pass programs (``fused``) and for the tangents of
JAX's autodiff (``autodiff``) alike.

>>> import jax.numpy as jnp
>>> logs = probs_logs(jnp.float32(0.5), -100.0)
>>> round(float(probs_bracket(logs, jnp.float32(0.5), jnp.float32(0.5))), 6)
0.693147
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bce_core import rules
from bce_core.compensated import Coefficients, Smoothing
from bce_core.spec import PROBS_GRAD_EPS

from .operands import OPS, PRIMITIVES

Array = jax.Array


class PlainParts(NamedTuple):
    """The loss from logits without weight, pos_weight or label smoothing, and its slope and
    curvature, in the working dtype's own arithmetic: one exp and one log1p per element.

    With e = exp(-|x|), l = log1p(e) and n = 1 - y for x >= 0 (y for x < 0), the
    coefficient of softplus(|x|), and f = 1 - n that of softplus(-|x|):

        loss = n |x| + l          slope = +-(n - f e) / (1 + e)

    Every term is a sum or a product of terms that do not cancel, except the slope's
    difference, which the contract grades against its larger term; the small side
    sigma(-|x|) is e / (1 + e), never 1 - sigma(|x|). Measured against the exact oracle
    (``tests/test_jax_backend.py``) with XLA's own exp and log1p, float32 stays within
    3.4 ULP (XLA's log1p is within 2.5). Where exp(-|x|) is below the smallest normal
    number XLA on CPU returns 0, so results below it come back as 0, as the spec allows;
    no result above it depends on such a value. The compensated ``LogitParts`` carry
    weights and smoothing, where one more rounding would pass 4 ULP.

    >>> parts = PlainParts.of(jnp.array([-30.0, 0.0, 30.0]))
    >>> [round(float(v), 6) for v in parts.loss(jnp.array([1.0, 1.0, 0.0]))]
    [30.0, 0.693147, 30.0]
    >>> [round(float(v), 4) for v in parts.slope(jnp.array([1.0, 0.5, 0.0]))]
    [-1.0, 0.0, 1.0]
    """

    x: Array
    positive: Array
    ax: Array
    e: Array

    @classmethod
    def of(cls, x: Array) -> PlainParts:
        # -|x| as min(x, -x): XLA on CPU then fuses the exp into a sum's loop straight from x,
        # rather than writing |x| out for the two loops that would share it.
        return cls(x, x >= 0, jnp.abs(x), jnp.exp(jnp.minimum(x, -x)))

    def near_far(self, y: Array) -> tuple[Array, Array]:
        """(n, f): the coefficients of softplus(|x|) and softplus(-|x|), n + f = 1."""
        one_minus = 1 - y
        return jnp.where(self.positive, one_minus, y), jnp.where(self.positive, y, one_minus)

    def softpluses(self) -> tuple[Array, Array]:
        """(softplus(x), softplus(-x)); NaN stays NaN."""
        log1p_e = jnp.log1p(self.e)
        return jnp.maximum(self.x, 0) + log1p_e, jnp.maximum(-self.x, 0) + log1p_e

    def loss(self, y: Array) -> Array:
        """(1 - y) softplus(x) + y softplus(-x) = n |x| + log1p(e); a zero n times an infinite
        |x| contributes exactly 0."""
        near, _ = self.near_far(y)
        return jnp.where(near == 0, 0, near * self.ax) + jnp.log1p(self.e)

    def slope(self, y: Array) -> Array:
        """(1 - y) sigma(x) - y sigma(-x), as +-(n - f e) / (1 + e) with one division."""
        near, far = self.near_far(y)
        value = (near - far * self.e) / (1 + self.e)
        return jnp.where(self.positive, value, -value)

    def curvature(self, c: Array) -> Array:
        """c sigma(x) sigma(-x) = c e / (1 + e)**2 (a zero c gives 0)."""
        r = 1 / (1 + self.e)
        return weighted(c, r * (self.e * r))


#: Label smoothing as the element math takes it: the caller's eps as a float (0.0 for none),
#: or inside a program its constants as a runtime array (``Smoothing.values``: 1 - eps and
#: eps / 2, each as a pair), so that one compilation serves every eps.
Smooth = float | Array


def unsmoothed(eps: Smooth) -> bool:
    """Whether ``eps`` is no smoothing at all (a runtime array never is).

    >>> unsmoothed(0.0), unsmoothed(jnp.zeros(4))
    (True, False)
    """
    return isinstance(eps, float) and eps == 0.0


def smoothed_targets(y: Array, eps: Smooth) -> tuple[Array, Array]:
    """``rules.smoothed_targets`` for a float or a runtime ``eps`` (its rounded constants)."""
    if isinstance(eps, float):
        return rules.smoothed_targets(y, eps)
    keep, half = eps[0], eps[2]
    return rules.smoothed_targets(y, None, affine=lambda v: v * keep + half)


def target_slope(eps: Smooth) -> float | Array:
    """``rules.smoothed_target_slope`` (1 - eps, rounded) for a float or a runtime ``eps``."""
    return rules.smoothed_target_slope(eps) if isinstance(eps, float) else eps[0]


def weighted(w: Array | None, value: Array) -> Array:
    """w * value under the zero-coefficient rule (w None means 1)."""
    return rules.zero_safe(OPS, w, value)


def logit_partial(
    name: str,
    x: Array,
    softpluses: tuple[Array, Array],
    y: Array,
    w: Array | None,
    q: Array | None,
    eps: Smooth,
) -> Array:
    """d(element loss)/d(name) for targets, weight (the bracket) and pos_weight, from the
    softpluses (softplus(x), softplus(-x))."""
    sp_pos, sp_neg = softpluses
    smoothed, one_minus = smoothed_targets(y, eps)
    if name == "targets":
        # w (1 - eps) [q softplus(-x) - softplus(x)], exactly -x when q = 1.
        diff = -x if q is None else rules.zero_safe(OPS, q, sp_neg) - sp_pos
        return weighted(w, rules.zero_safe(OPS, target_slope(eps), diff))
    if name == "weight":
        b = rules.zero_safe(OPS, q, smoothed)
        return rules.zero_safe(OPS, one_minus, sp_pos) + rules.zero_safe(OPS, b, sp_neg)
    return weighted(w, rules.zero_safe(OPS, smoothed, sp_neg))  # pos_weight


# -- the probability form -------------------------------------------------------------------


class UnitInterval(NamedTuple):
    """A probability read from its bits, so that subnormal values count: XLA on the CPU reads
    a subnormal operand of an arithmetic operation or comparison as 0, which would turn
    log(1e-40) into -inf and let -1e-40 pass as inside [0, 1]. Integer operations on the
    bits see every value as it is.

    ``scaled`` is p, except p * 2**k for a positive subnormal p (k = the mantissa's bits + 1),
    a normal number: ``scale`` is 2**k there and 1 elsewhere, ``shift`` is k log 2 there and 0
    elsewhere. On normal numbers they change nothing: the common path keeps its roundings.

    >>> parts = UnitInterval.of(jnp.array([1e-40, 0.5, -1e-40, 1.5], jnp.float32))
    >>> [bool(v) for v in parts.valid]
    [True, True, False, False]
    >>> round(float(parts.log()[0]), 4)
    -92.1034
    """

    p: Array
    valid: Array  # 0 <= p <= 1 (-0 included, NaN not)
    scaled: Array
    scale: Array
    shift: Array

    @classmethod
    def of(cls, p: Array) -> UnitInterval:
        info = jnp.finfo(p.dtype)
        signed = jnp.int32 if info.bits == 32 else jnp.int64
        bits = jax.lax.bitcast_convert_type(p, signed)
        one = np.asarray(1.0, p.dtype).view(signed)  # positive floats order as their bits
        negative_zero = np.asarray(-0.0, p.dtype).view(signed)
        valid = ((bits >= 0) & (bits <= one)) | (bits == negative_zero)
        subnormal = (bits > 0) & (bits < (1 << info.nmant))
        k = info.nmant + 1
        # A subnormal is its bits (the mantissa) times the smallest subnormal 2**(minexp - nmant);
        # the integer converts exactly, and times 2**(minexp + 1) it is normal.
        lifted = bits.astype(p.dtype) * jnp.asarray(2.0 ** (info.minexp + 1), p.dtype)
        return cls(
            p,
            valid,
            jnp.where(subnormal, lifted, p),
            jnp.where(subnormal, jnp.asarray(2.0**k, p.dtype), jnp.asarray(1.0, p.dtype)),
            # k log 2 rounded once is within 1/8 ULP of log p at these magnitudes.
            jnp.where(subnormal, jnp.asarray(k * math.log(2.0), p.dtype), jnp.asarray(0, p.dtype)),
        )

    def log(self) -> Array:
        """log p, exact for subnormal p; NaN for p < 0."""
        return jnp.log(self.scaled) - self.shift


class ProbsLogs(NamedTuple):
    """The clamped logs (max(log p, c), max(log1p(-p), c)) and whether p is in [0, 1]."""

    log_p: Array
    log_1mp: Array
    valid: Array


def probs_logs(p: Array, clamp: float | Array) -> ProbsLogs:
    """(max(log p, clamp), max(log1p(-p), clamp), 0 <= p <= 1), log p exact for subnormal p.
    log1p(-p) of a subnormal p is below the smallest normal number (it may be 0)."""
    c = jnp.asarray(clamp, p.dtype)
    parts = UnitInterval.of(p)
    return ProbsLogs(jnp.maximum(parts.log(), c), jnp.maximum(jnp.log1p(-p), c), parts.valid)


def probs_bracket(logs: ProbsLogs, one_minus: Array, b: Array) -> Array:
    """-[q y' max(log p, c) + (1 - y') max(log1p(-p), c)] with b = q y'; NaN where p is
    outside [0, 1], even where its term's coefficient is 0."""
    bracket = -(rules.zero_safe(OPS, b, logs.log_p) + rules.zero_safe(OPS, one_minus, logs.log_1mp))
    return jnp.where(logs.valid, bracket, jnp.nan)


def probs_partial(
    name: str, logs: ProbsLogs, y: Array, w: Array | None, q: Array | None, eps: Smooth
) -> Array:
    """d(element loss)/d(name) for targets, weight (the bracket) and pos_weight, from the
    clamped logs (max(log p, c), max(log1p(-p), c))."""
    log_p, log_1mp = logs.log_p, logs.log_1mp
    smoothed, one_minus = smoothed_targets(y, eps)
    if name == "targets":
        # w (1 - eps) [max(log1p(-p), c) - q max(log p, c)]
        diff = log_1mp - rules.zero_safe(OPS, q, log_p)
        return weighted(w, rules.zero_safe(OPS, target_slope(eps), diff))
    if name == "weight":
        return probs_bracket(logs, one_minus, rules.times(q, smoothed))
    return weighted(w, rules.zero_safe(OPS, smoothed, -log_p))  # pos_weight


def probs_slope(p: Array, y: Array, w: Array | None, q: Array | None, eps: Smooth) -> Array:
    """The spec's d loss / dp = w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12).

    >>> float(probs_slope(jnp.float32(0.5), jnp.float32(1.0), None, None, 0.0))
    -2.0
    """
    smoothed, one_minus = smoothed_targets(y, eps)
    b = rules.times(q, smoothed)
    floor = jnp.asarray(PROBS_GRAD_EPS, p.dtype)
    # Numerator and denominator times the same power of 2 for a subnormal p (read as 0 in
    # p (1 - y'), where p / floor is normal); times 1 elsewhere.
    parts = UnitInterval.of(p)
    numerator = parts.scaled * (one_minus + b) - b * parts.scale
    slope = numerator / (jnp.maximum(p * (1 - p), floor) * parts.scale)
    # Where p is outside [0, 1] the loss is NaN, and so is its slope.
    return jnp.where(parts.valid, weighted(w, slope), jnp.nan)


def coefficients(y: Array, q: Array | None, eps: Smooth) -> Coefficients:
    """The core's compensated coefficients of targets ``y``, pos_weight ``q`` and label
    smoothing ``eps`` (a float: constants compiled into the program; else runtime values)."""
    if not isinstance(eps, float):
        return Coefficients.of(PRIMITIVES, y, q, Smoothing.of(eps))
    smoothing = None if eps == 0.0 else Smoothing.opaque(PRIMITIVES, eps, PRIMITIVES.dtype(y))
    return Coefficients.of(PRIMITIVES, y, q, smoothing)
