"""The backend's computations as compiled functions of checked JAX arrays.

Each function takes the operands (already in the input's dtype, see
``operands``) plus static options, computes in the working dtype (float32
for float16, bfloat16 and float32; float64 for float64), and rounds once to
the input's dtype. ``jax.jit`` makes an eager call one dispatch, and inside a
caller's own jit it simply inlines.

>>> import jax.numpy as jnp
>>> loss = logits_loss(jnp.array([0.0, 0.0], jnp.bfloat16), jnp.array([1.0, 0.0], jnp.bfloat16),
...                    None, None, None, eps=0.0, reduction="sum")
>>> loss.dtype, float(loss)
(dtype(bfloat16), 1.3828125)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import autodiff
from .kernels import LogitParts, zero_safe
from .reductions import Reduction

Array = jax.Array


def working_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; float16, bfloat16 and float32 are computed in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _up(value: Array | None, dtype: np.dtype) -> Array | None:
    return None if value is None else value.astype(dtype)


@partial(jax.jit, static_argnames=("eps", "reduction"))
def logits_loss(x: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None, *,
                eps: float, reduction: str) -> Array:
    """The reduced loss from logits; differentiable by JAX with the spec's derivatives."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    x, y, w, q = (_up(v, work) for v in (x, y, w, q))
    plan = Reduction.plan(reduction, x.shape, mask=mask, weight=w, dtype=work)
    elements = autodiff.logit_loss(plan.guard(x, 0.0), plan.guard(y, 0.0), plan.guard(w, 1.0),
                                   plan.guard(q, 1.0), eps)
    return plan.finish(elements).astype(dtype)


@partial(jax.jit, static_argnames=("eps", "reduction", "clamp"))
def probs_loss(p: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None, *,
               eps: float, reduction: str, clamp: float) -> Array:
    """The reduced loss from probabilities; differentiable by JAX with the spec's derivatives."""
    dtype, work = p.dtype, working_dtype(p.dtype)
    p, y, w, q = (_up(v, work) for v in (p, y, w, q))
    plan = Reduction.plan(reduction, p.shape, mask=mask, weight=w, dtype=work)
    elements = autodiff.probs_loss(plan.guard(p, 0.5), plan.guard(y, 0.0), plan.guard(w, 1.0),
                                   plan.guard(q, 1.0), eps, clamp)
    return plan.finish(elements).astype(dtype)


@partial(jax.jit, static_argnames=("eps", "reduction", "names"))
def logits_value_and_grad(x: Array, y: Array, w: Array | None, q: Array | None,
                          mask: Array | None, *, eps: float, reduction: str,
                          names: tuple[str, ...]) -> tuple[Array, tuple[Array, ...]]:
    """The reduced loss and its gradients with respect to ``names``, analytically and fused:
    one exp and one log1p per element serve the loss and every partial derivative."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    shapes = {"logits": x.shape, "targets": y.shape,
              "weight": None if w is None else w.shape,
              "pos_weight": None if q is None else q.shape}
    x, y, w, q = (_up(v, work) for v in (x, y, w, q))
    yp, one_minus = autodiff.smoothed(y, eps)
    b = yp if q is None else q * yp
    parts = LogitParts.of(x)
    bracket = parts.bracket(one_minus, b)
    plan = Reduction.plan(reduction, x.shape, mask=mask, weight=w, dtype=work)
    loss = plan.finish(parts.loss(bracket, one_minus, b, w))

    def weighted(value: Array) -> Array:
        return value if w is None else zero_safe(w, value)

    def partial_of(name: str) -> Array:
        if name == "logits":
            return parts.slope(one_minus, b, w)
        sp_pos, sp_neg = parts.softpluses()
        if name == "targets":
            # q softplus(-x) - softplus(x) is exactly -x when q = 1.
            diff = -x if q is None else zero_safe(q, sp_neg) - sp_pos
            return weighted(zero_safe(jnp.asarray(1 - eps, work), diff))
        if name == "weight":
            # d/dw_i of sum(w B) / sum(w) is (B_i - loss) / sum(w).
            return bracket - loss if reduction == "weighted_mean" else bracket
        return weighted(zero_safe(yp, sp_neg))  # pos_weight

    grads = tuple(plan.gradient(partial_of(name), shapes[name]).astype(dtype) for name in names)
    return loss.astype(dtype), grads


@jax.jit
def logits_grad_hess(x: Array, y: Array, w: Array | None,
                     q: Array | None) -> tuple[Array, Array]:
    """Elementwise (d loss / dx, d2 loss / dx2), weights applied, in the full element shape."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    x, y, w, q = (_up(v, work) for v in (x, y, w, q))
    b = y if q is None else q * y
    one_minus = 1 - y
    c = one_minus + b  # 1 + (q - 1) y
    parts = LogitParts.of(x)
    grad, hess = parts.slope(one_minus, b, w), parts.curvature(c if w is None else w * c)
    return (jnp.broadcast_to(grad, x.shape).astype(dtype),
            jnp.broadcast_to(hess, x.shape).astype(dtype))
