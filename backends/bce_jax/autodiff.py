"""The element losses as functions that JAX differentiates with the spec's derivatives.

Each function is a ``jax.custom_jvp`` whose forward value comes from
``kernels`` and whose tangent is the spec's analytic derivative, itself built
from custom_jvp functions (``sigmoid``, ``softplus``, ``logit_slope``,
``logit_curvature``). The backend's own operations (``ops``) differentiate
through these only where no compiled program gives the derivative directly
(mixed and higher derivatives). So
``jax.grad``, ``jax.jvp``, ``jax.hessian``, ``jax.jit`` and ``jax.vmap`` all
see the exact derivatives, to any order, and never differentiate through the
stable forms' selects. Tangents that are zero are skipped (symbolic zeros),
so an infinite partial derivative never meets a zero tangent and makes NaN.

>>> import jax, jax.numpy as jnp
>>> grad = jax.grad(lambda x: logit_loss(x, jnp.float32(1.0), None, None, 0.0))
>>> float(grad(jnp.float32(0.0)))
-0.5
>>> float(jax.grad(grad)(jnp.float32(0.0)))
0.25
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from bce_core.spec import PROBS_GRAD_EPS

from .kernels import Coefficients, LogitParts, zero_safe


def given(tangent: object) -> bool:
    return tangent is not None and not isinstance(tangent, SymbolicZero)


def _accumulate(total: jnp.ndarray | None, term: jnp.ndarray) -> jnp.ndarray:
    return term if total is None else total + term


def _weighted(w: jnp.ndarray | None, value: jnp.ndarray) -> jnp.ndarray:
    return value if w is None else zero_safe(w, value)


def smoothed(y: jnp.ndarray, eps: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(y', 1 - y') with y' = y(1 - eps) + eps/2; 1 - y' comes from (1 - y) to keep its accuracy."""
    if eps == 0.0:
        return y, 1 - y
    # y' = y + eps (1/2 - y) and 1 - y' = (1 - y) - eps (1/2 - y): 1/2 - y is exact for y in
    # [1/4, 1], and the rounded product is small next to the sum, so each is about one rounding.
    shift = eps * (0.5 - y)
    return y + shift, (1 - y) - shift


# -- sigma and softplus ---------------------------------------------------------


@jax.custom_jvp
def sigmoid(x: jnp.ndarray) -> jnp.ndarray:
    """sigma(x) = 1 / (1 + exp(-x)), stable on both sides; d sigma = sigma(x) sigma(-x) dx."""
    return LogitParts.of(x).sigmoids()[0]


@sigmoid.defjvp
def _sigmoid_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (dx,) = primals, tangents
    return sigmoid(x), sigmoid(x) * sigmoid(-x) * dx


@jax.custom_jvp
def softplus(x: jnp.ndarray) -> jnp.ndarray:
    """softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); d softplus = sigma(x) dx."""
    return LogitParts.of(x).softpluses()[0]


@softplus.defjvp
def _softplus_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (dx,) = primals, tangents
    return softplus(x), sigmoid(x) * dx


# -- the logit form -----------------------------------------------------------


def _plain_coefficients(y: jnp.ndarray, q: jnp.ndarray | None,
                        eps: float) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(y', 1 - y', q y') rounded once each: enough for derivatives checked by parity."""
    yp, one_minus = smoothed(y, eps)
    return yp, one_minus, yp if q is None else q * yp


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def logit_slope(x: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray | None, q: jnp.ndarray | None,
                eps: float) -> jnp.ndarray:
    """w [(1 - y') sigma(x) - q y' sigma(-x)]: d loss / dx (w, q None mean 1).

    >>> float(logit_slope(jnp.float32(0.0), jnp.float32(0.0), None, None, 0.0))
    0.5
    """
    return LogitParts.of(x).slope(Coefficients.of(y, q, eps), w)


@jax.custom_jvp
def logit_curvature(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """c sigma(x) sigma(-x): d2 loss / dx2 when c = w (1 + (q - 1) y').

    >>> float(logit_curvature(jnp.float32(0.0), jnp.float32(1.0)))
    0.25
    """
    return LogitParts.of(x).curvature(c)


def _logit_curvature_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, c), (dx, dc) = primals, tangents
    out = logit_curvature(x, c)
    tangent = None
    if given(dx):
        # d/dx [sigma(x) sigma(-x)] = sigma(x) sigma(-x) (sigma(-x) - sigma(x))
        spread = sigmoid(-x) - sigmoid(x)
        tangent = _accumulate(tangent, zero_safe(c, sigmoid(x) * sigmoid(-x) * spread) * dx)
    if given(dc):
        tangent = _accumulate(tangent, sigmoid(x) * sigmoid(-x) * dc)
    return out, jnp.zeros_like(out) if tangent is None else jnp.broadcast_to(tangent, out.shape)


logit_curvature.defjvp(_logit_curvature_jvp, symbolic_zeros=True)


def _logit_slope_jvp(eps: float, primals: tuple, tangents: tuple) -> tuple:
    (x, y, w, q), (dx, dy, dw, dq) = primals, tangents
    out = logit_slope(x, y, w, q, eps)
    yp, one_minus, b = _plain_coefficients(y, q, eps)
    tangent = None
    if given(dx):
        tangent = _accumulate(tangent, logit_curvature(x, _weighted(w, one_minus + b)) * dx)
    if given(dy):
        # d/dy of w [(1 - y') sigma(x) - q y' sigma(-x)] = -w (1 - eps) [sigma(x) + q sigma(-x)]
        far = sigmoid(-x) if q is None else zero_safe(q, sigmoid(-x))
        tangent = _accumulate(tangent, -_weighted(w, zero_safe(jnp.asarray(1 - eps, x.dtype),
                                                               sigmoid(x) + far)) * dy)
    if given(dw):
        tangent = _accumulate(tangent, logit_slope(x, y, None, q, eps) * dw)
    if given(dq):
        tangent = _accumulate(tangent, -_weighted(w, zero_safe(yp, sigmoid(-x))) * dq)
    return out, jnp.zeros_like(out) if tangent is None else jnp.broadcast_to(tangent, out.shape)


logit_slope.defjvp(_logit_slope_jvp, symbolic_zeros=True)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def logit_loss(x: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray | None, q: jnp.ndarray | None,
               eps: float) -> jnp.ndarray:
    """Element loss w [ (1 - y') softplus(x) + q y' softplus(-x) ] (w, q None mean 1).

    >>> f"{float(logit_loss(jnp.float32(-20.0), jnp.float32(0.0), None, None, 0.0)):.6e}"
    '2.061154e-09'
    """
    return LogitParts.of(x).loss(Coefficients.of(y, q, eps), w)


def _logit_loss_jvp(eps: float, primals: tuple, tangents: tuple) -> tuple:
    (x, y, w, q), (dx, dy, dw, dq) = primals, tangents
    out = logit_loss(x, y, w, q, eps)
    yp, one_minus, b = _plain_coefficients(y, q, eps)
    tangent = None
    if given(dx):
        tangent = _accumulate(tangent, logit_slope(x, y, w, q, eps) * dx)
    if given(dy):
        # d/dy: w (1 - eps) [q softplus(-x) - softplus(x)]; with q = 1 the bracket is exactly -x.
        diff = -x if q is None else zero_safe(q, softplus(-x)) - softplus(x)
        tangent = _accumulate(tangent, _weighted(w, zero_safe(jnp.asarray(1 - eps, x.dtype),
                                                               diff)) * dy)
    if given(dw):
        bracket = zero_safe(one_minus, softplus(x)) + zero_safe(b, softplus(-x))
        tangent = _accumulate(tangent, bracket * dw)
    if given(dq):
        tangent = _accumulate(tangent, _weighted(w, zero_safe(yp, softplus(-x))) * dq)
    return out, jnp.zeros_like(out) if tangent is None else jnp.broadcast_to(tangent, out.shape)


logit_loss.defjvp(_logit_loss_jvp, symbolic_zeros=True)


# -- the probability form -------------------------------------------------------


def probs_logs(p: jnp.ndarray, clamp: float | jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(max(log p, clamp), max(log1p(-p), clamp)); NaN stays NaN (p outside [0, 1])."""
    c = jnp.asarray(clamp, p.dtype)
    return jnp.maximum(jnp.log(p), c), jnp.maximum(jnp.log1p(-p), c)


def probs_bracket(p: jnp.ndarray, one_minus: jnp.ndarray, b: jnp.ndarray,
                  clamp: float) -> jnp.ndarray:
    """-[q y' max(log p, c) + (1 - y') max(log1p(-p), c)] with b = q y'."""
    log_p, log_1mp = probs_logs(p, clamp)
    return -(zero_safe(b, log_p) + zero_safe(one_minus, log_1mp))


def probs_slope(p: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray | None, q: jnp.ndarray | None,
                eps: float) -> jnp.ndarray:
    """The spec's d loss / dp = w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12)."""
    yp, one_minus = smoothed(y, eps)
    b = yp if q is None else q * yp
    floor = jnp.asarray(PROBS_GRAD_EPS, p.dtype)
    slope = (p * (one_minus + b) - b) / jnp.maximum(p * (1 - p), floor)
    # Where p is outside [0, 1] the loss is NaN, and so is its slope.
    return jnp.where((p >= 0) & (p <= 1), _weighted(w, slope), jnp.nan)


@partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def probs_loss(p: jnp.ndarray, y: jnp.ndarray, w: jnp.ndarray | None, q: jnp.ndarray | None,
               eps: float, clamp: float) -> jnp.ndarray:
    """Element loss -w [ q y' max(log p, c) + (1 - y') max(log1p(-p), c) ].

    >>> round(float(probs_loss(jnp.float32(0.5), jnp.float32(1.0), None, None, 0.0, -100.0)), 6)
    0.693147
    """
    yp, one_minus = smoothed(y, eps)
    b = yp if q is None else q * yp
    return _weighted(w, probs_bracket(p, one_minus, b, clamp))


def _probs_loss_jvp(eps: float, clamp: float, primals: tuple, tangents: tuple) -> tuple:
    (p, y, w, q), (dp, dy, dw, dq) = primals, tangents
    out = probs_loss(p, y, w, q, eps, clamp)
    yp, one_minus = smoothed(y, eps)
    b = yp if q is None else q * yp
    log_p, log_1mp = probs_logs(p, clamp)
    tangent = None
    if given(dp):
        tangent = _accumulate(tangent, probs_slope(p, y, w, q, eps) * dp)
    if given(dy):
        # d/dy: w (1 - eps) [max(log1p(-p), c) - q max(log p, c)]
        diff = log_1mp - (log_p if q is None else zero_safe(q, log_p))
        tangent = _accumulate(tangent, _weighted(w, zero_safe(jnp.asarray(1 - eps, p.dtype),
                                                               diff)) * dy)
    if given(dw):
        tangent = _accumulate(tangent, probs_bracket(p, one_minus, b, clamp) * dw)
    if given(dq):
        tangent = _accumulate(tangent, _weighted(w, zero_safe(yp, -log_p)) * dq)
    return out, jnp.zeros_like(out) if tangent is None else jnp.broadcast_to(tangent, out.shape)


probs_loss.defjvp(_probs_loss_jvp, symbolic_zeros=True)
