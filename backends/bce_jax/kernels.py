"""The element math of the JAX backend that the core's compensated arithmetic does not hold:
the probability form and the partial derivatives held to parity (in single arithmetic).

The loss from logits and its slope and curvature come from
``bce_core.compensated.LogitParts`` with ``operands.PRIMITIVES``. The
partial derivatives with respect to targets, weight and pos_weight are written
here once, in terms of the two softpluses (logits) or the two clamped logs
(probabilities), for the one-pass programs (``fused``) and for the tangents of
JAX's autodiff (``autodiff``) alike.

>>> import jax.numpy as jnp
>>> log_p, log_1mp = probs_logs(jnp.float32(0.5), -100.0)
>>> round(float(probs_bracket(log_p, log_1mp, jnp.float32(0.5), jnp.float32(0.5))), 6)
0.693147
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bce_core import rules
from bce_core.compensated import Coefficients, Smoothing
from bce_core.spec import PROBS_GRAD_EPS

from .operands import OPS, PRIMITIVES

Array = jax.Array


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
    eps: float,
) -> Array:
    """d(element loss)/d(name) for targets, weight (the bracket) and pos_weight, from the
    softpluses (softplus(x), softplus(-x))."""
    sp_pos, sp_neg = softpluses
    smoothed, one_minus = rules.smoothed_targets(y, eps)
    if name == "targets":
        # w (1 - eps) [q softplus(-x) - softplus(x)], exactly -x when q = 1.
        diff = -x if q is None else rules.zero_safe(OPS, q, sp_neg) - sp_pos
        return weighted(w, rules.zero_safe(OPS, rules.smoothed_target_slope(eps), diff))
    if name == "weight":
        b = rules.zero_safe(OPS, q, smoothed)
        return rules.zero_safe(OPS, one_minus, sp_pos) + rules.zero_safe(OPS, b, sp_neg)
    return weighted(w, rules.zero_safe(OPS, smoothed, sp_neg))  # pos_weight


# -- the probability form -------------------------------------------------------------------


def probs_logs(p: Array, clamp: float | Array) -> tuple[Array, Array]:
    """(max(log p, clamp), max(log1p(-p), clamp)); NaN stays NaN (p outside [0, 1])."""
    c = jnp.asarray(clamp, p.dtype)
    return jnp.maximum(jnp.log(p), c), jnp.maximum(jnp.log1p(-p), c)


def probs_bracket(log_p: Array, log_1mp: Array, one_minus: Array, b: Array) -> Array:
    """-[q y' max(log p, c) + (1 - y') max(log1p(-p), c)] with b = q y'."""
    return -(rules.zero_safe(OPS, b, log_p) + rules.zero_safe(OPS, one_minus, log_1mp))


def probs_partial(
    name: str, logs: tuple[Array, Array], y: Array, w: Array | None, q: Array | None, eps: float
) -> Array:
    """d(element loss)/d(name) for targets, weight (the bracket) and pos_weight, from the
    clamped logs (max(log p, c), max(log1p(-p), c))."""
    log_p, log_1mp = logs
    smoothed, one_minus = rules.smoothed_targets(y, eps)
    if name == "targets":
        # w (1 - eps) [max(log1p(-p), c) - q max(log p, c)]
        diff = log_1mp - rules.zero_safe(OPS, q, log_p)
        return weighted(w, rules.zero_safe(OPS, rules.smoothed_target_slope(eps), diff))
    if name == "weight":
        return probs_bracket(log_p, log_1mp, one_minus, rules.times(q, smoothed))
    return weighted(w, rules.zero_safe(OPS, smoothed, -log_p))  # pos_weight


def probs_slope(p: Array, y: Array, w: Array | None, q: Array | None, eps: float) -> Array:
    """The spec's d loss / dp = w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12).

    >>> float(probs_slope(jnp.float32(0.5), jnp.float32(1.0), None, None, 0.0))
    -2.0
    """
    smoothed, one_minus = rules.smoothed_targets(y, eps)
    b = rules.times(q, smoothed)
    floor = jnp.asarray(PROBS_GRAD_EPS, p.dtype)
    slope = (p * (one_minus + b) - b) / jnp.maximum(p * (1 - p), floor)
    # Where p is outside [0, 1] the loss is NaN, and so is its slope.
    return jnp.where((p >= 0) & (p <= 1), weighted(w, slope), jnp.nan)


def coefficients(y: Array, q: Array | None, eps: float) -> Coefficients:
    """The core's compensated coefficients of targets ``y``, pos_weight ``q`` and label
    smoothing ``eps``, the smoothing constants compiled into the program."""
    smoothing = None if eps == 0.0 else Smoothing.opaque(PRIMITIVES, eps, PRIMITIVES.dtype(y))
    return Coefficients.of(PRIMITIVES, y, q, smoothing)
