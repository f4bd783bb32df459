"""JAX's differentiation glue: the loss as a JAX operation whose derivatives are compiled
programs, and the element losses that JAX differentiates with the spec's derivatives.

``loss_op`` is a ``jax.custom_jvp`` at the call boundary, outside any jit.
Its tangent comes from ``grads_op`` (the loss and its gradients, a custom_jvp
too), whose own tangent along the logits comes from ``curvature_op``. Every
one of them evaluates the form's one-pass program (``fused.outputs``), so
JAX's own autodiff never has to differentiate (and compile anew) the program
itself:

- under ``jax.jit`` the programs inline, and XLA keeps only what is used;
- eagerly, ``jax.grad`` of the loss runs the gradient program (the same one
  as ``value_and_grad``), and ``jax.grad`` of that gradient with respect to the
  logits runs it once more for the curvature;
- any other derivative (mixed second derivatives, third order, second
  derivatives of the probability form) is taken by JAX through the form's
  differentiable loss (``differentiable_logits_loss``,
  ``differentiable_probs_loss``), made of element losses that are
  ``jax.custom_jvp`` functions whose tangents are the spec's analytic
  derivatives, themselves custom_jvp functions (``sigmoid``, ``softplus``,
  ``logit_slope``, ``logit_curvature``). Tangents that are zero are skipped
  (symbolic zeros), so an infinite partial derivative never meets a zero
  tangent and makes NaN.

>>> import jax, jax.numpy as jnp
>>> x, y = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
>>> options = (("eps", 0.0), ("reduction", "sum"))
>>> [round(float(g), 4) for g in jax.grad(lambda a: loss_op(a, y, None, None, None,
...                                                          fused.LOGITS, options))(x)]
[-0.5, 0.8808]
>>> grad = jax.grad(lambda x: logit_loss(x, jnp.float32(1.0), None, None, 0.0))
>>> float(grad(jnp.float32(0.0))), float(jax.grad(grad)(jnp.float32(0.0)))
(-0.5, 0.25)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from bce_core import rules
from bce_core.compensated import LogitParts

from . import fused, kernels
from .fused import Form, Options
from .kernels import weighted
from .operands import OPS, PRIMITIVES, device_of, working_dtype

Array = jax.Array


def given(tangent: object) -> bool:
    """Whether a tangent is given (not a symbolic zero)."""
    return tangent is not None and not isinstance(tangent, SymbolicZero)


def _accumulate(total: Array | None, term: Array) -> Array:
    return term if total is None else total + term


# -- sigma and softplus -------------------------------------------------------------------------


@jax.custom_jvp
def sigmoid(x: Array) -> Array:
    """sigma(x) = 1 / (1 + exp(-x)), stable on both sides; d sigma = sigma(x) sigma(-x) dx."""
    return LogitParts.of(PRIMITIVES, x).sigmoids()[0]


@sigmoid.defjvp
def _sigmoid_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (dx,) = primals, tangents
    return sigmoid(x), sigmoid(x) * sigmoid(-x) * dx


@jax.custom_jvp
def softplus(x: Array) -> Array:
    """softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); d softplus = sigma(x) dx."""
    return LogitParts.of(PRIMITIVES, x).softpluses()[0]


@softplus.defjvp
def _softplus_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (dx,) = primals, tangents
    return softplus(x), sigmoid(x) * dx


def _tangent_out(out: Array, tangent: Array | None) -> Array:
    return jnp.zeros_like(out) if tangent is None else jnp.broadcast_to(tangent, out.shape)


# -- the logit form -------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def logit_slope(x: Array, y: Array, w: Array | None, q: Array | None, eps: float) -> Array:
    """w [(1 - y') sigma(x) - q y' sigma(-x)]: d loss / dx (w, q None mean 1).

    >>> float(logit_slope(jnp.float32(0.0), jnp.float32(0.0), None, None, 0.0))
    0.5
    """
    return LogitParts.of(PRIMITIVES, x).slope(kernels.coefficients(y, q, eps), w)


@jax.custom_jvp
def logit_curvature(x: Array, c: Array) -> Array:
    """c sigma(x) sigma(-x): d2 loss / dx2 when c = w (1 + (q - 1) y').

    >>> float(logit_curvature(jnp.float32(0.0), jnp.float32(1.0)))
    0.25
    """
    return LogitParts.of(PRIMITIVES, x).curvature(c)


def _logit_curvature_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, c), (dx, dc) = primals, tangents
    out = logit_curvature(x, c)
    tangent = None
    if given(dx):
        # d/dx [sigma(x) sigma(-x)] = sigma(x) sigma(-x) (sigma(-x) - sigma(x))
        spread = sigmoid(-x) - sigmoid(x)
        tangent = _accumulate(tangent, weighted(c, sigmoid(x) * sigmoid(-x) * spread) * dx)
    if given(dc):
        tangent = _accumulate(tangent, sigmoid(x) * sigmoid(-x) * dc)
    return out, _tangent_out(out, tangent)


logit_curvature.defjvp(_logit_curvature_jvp, symbolic_zeros=True)


def _logit_slope_jvp(eps: float, primals: tuple, tangents: tuple) -> tuple:
    (x, y, w, q), (dx, dy, dw, dq) = primals, tangents
    out = logit_slope(x, y, w, q, eps)
    # The coefficients rounded once each: enough for derivatives checked by parity.
    smoothed, one_minus = rules.smoothed_targets(y, eps)
    tangent = None
    if given(dx):
        c = one_minus + rules.times(q, smoothed)
        tangent = _accumulate(tangent, logit_curvature(x, weighted(w, c)) * dx)
    if given(dy):
        # d/dy of w [(1 - y') sigma(x) - q y' sigma(-x)] = -w (1 - eps) [sigma(x) + q sigma(-x)]
        far = rules.zero_safe(OPS, q, sigmoid(-x))
        slope = rules.zero_safe(OPS, rules.smoothed_target_slope(eps), sigmoid(x) + far)
        tangent = _accumulate(tangent, -weighted(w, slope) * dy)
    if given(dw):
        tangent = _accumulate(tangent, logit_slope(x, y, None, q, eps) * dw)
    if given(dq):
        tangent = _accumulate(
            tangent, -weighted(w, rules.zero_safe(OPS, smoothed, sigmoid(-x))) * dq
        )
    return out, _tangent_out(out, tangent)


logit_slope.defjvp(_logit_slope_jvp, symbolic_zeros=True)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def logit_loss(x: Array, y: Array, w: Array | None, q: Array | None, eps: float) -> Array:
    """Element loss w [ (1 - y') softplus(x) + q y' softplus(-x) ] (w, q None mean 1).

    >>> f"{float(logit_loss(jnp.float32(-20.0), jnp.float32(0.0), None, None, 0.0)):.6e}"
    '2.061154e-09'
    """
    return LogitParts.of(PRIMITIVES, x).loss(kernels.coefficients(y, q, eps), w)


def _logit_loss_jvp(eps: float, primals: tuple, tangents: tuple) -> tuple:
    (x, y, w, q), (dx, dy, dw, dq) = primals, tangents
    out = logit_loss(x, y, w, q, eps)
    tangent = None
    if given(dx):
        tangent = _accumulate(tangent, logit_slope(x, y, w, q, eps) * dx)
    for name, t in (("targets", dy), ("weight", dw), ("pos_weight", dq)):
        if given(t):
            partial_ = kernels.logit_partial(name, x, (softplus(x), softplus(-x)), y, w, q, eps)
            tangent = _accumulate(tangent, partial_ * t)
    return out, _tangent_out(out, tangent)


logit_loss.defjvp(_logit_loss_jvp, symbolic_zeros=True)


# -- the probability form -------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def probs_loss(
    p: Array, y: Array, w: Array | None, q: Array | None, eps: float, clamp: float
) -> Array:
    """Element loss -w [ q y' max(log p, c) + (1 - y') max(log1p(-p), c) ].

    >>> round(float(probs_loss(jnp.float32(0.5), jnp.float32(1.0), None, None, 0.0, -100.0)), 6)
    0.693147
    """
    return weighted(w, kernels.probs_partial("weight", kernels.probs_logs(p, clamp), y, w, q, eps))


def _probs_loss_jvp(eps: float, clamp: float, primals: tuple, tangents: tuple) -> tuple:
    (p, y, w, q), (dp, dy, dw, dq) = primals, tangents
    out = probs_loss(p, y, w, q, eps, clamp)
    logs = kernels.probs_logs(p, clamp)
    tangent = None
    if given(dp):
        tangent = _accumulate(tangent, kernels.probs_slope(p, y, w, q, eps) * dp)
    for name, t in (("targets", dy), ("weight", dw), ("pos_weight", dq)):
        if given(t):
            tangent = _accumulate(tangent, kernels.probs_partial(name, logs, y, w, q, eps) * t)
    return out, _tangent_out(out, tangent)


probs_loss.defjvp(_probs_loss_jvp, symbolic_zeros=True)


# -- the differentiable losses ----------------------------------------------------------------


def _counted(
    reduction: str, shape: tuple[int, ...], mask: Array | None, weight: Array | None
) -> Array | None:
    """The elements that count (full shape; None for all): the mask's, and none of them where
    the denominator of "weighted_mean" is 0 (``rules.denominator``)."""
    keep = None if mask is None else jnp.broadcast_to(mask, shape)
    if reduction != "weighted_mean":
        return keep
    nonzero = (
        rules.denominator(
            OPS, reduction, shape, keep=keep, weight=weight, like=jnp.zeros((), np.float32)
        )
        != 0
    )
    return jnp.broadcast_to(nonzero if keep is None else keep & nonzero, shape)


def _guard(keep: Array | None, value: Array | None, safe: float) -> Array | None:
    """``value`` where an element counts and ``safe`` elsewhere (full shape): JAX's gradient
    of ``where`` is 0 times the partial derivative there, which must not be inf (the "double
    where")."""
    if value is None or keep is None:
        return value
    return jnp.where(keep, jnp.broadcast_to(value, keep.shape), jnp.asarray(safe, value.dtype))


@partial(jax.jit, static_argnames=("eps", "reduction"))
def differentiable_logits_loss(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    *,
    eps: float,
    reduction: str,
) -> Array:
    """The reduced loss from logits, differentiable by JAX with the spec's derivatives to any
    order: what the glue falls back on for mixed and higher derivatives."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    x, y, w, q = (None if v is None else v.astype(work) for v in (x, y, w, q))
    keep = _counted(reduction, x.shape, mask, w)
    elements = logit_loss(
        _guard(keep, x, 0.0), _guard(keep, y, 0.0), _guard(keep, w, 1.0), _guard(keep, q, 1.0), eps
    )
    return rules.reduce_elements(OPS, elements, reduction, keep=keep, weight=w).loss.astype(dtype)


@partial(jax.jit, static_argnames=("eps", "reduction", "clamp"))
def differentiable_probs_loss(
    p: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    *,
    eps: float,
    reduction: str,
    clamp: float,
) -> Array:
    """The reduced loss from probabilities, differentiable by JAX with the spec's derivatives."""
    dtype, work = p.dtype, working_dtype(p.dtype)
    p, y, w, q = (None if v is None else v.astype(work) for v in (p, y, w, q))
    keep = _counted(reduction, p.shape, mask, w)
    elements = probs_loss(
        _guard(keep, p, 0.5),
        _guard(keep, y, 0.0),
        _guard(keep, w, 1.0),
        _guard(keep, q, 1.0),
        eps,
        clamp,
    )
    return rules.reduce_elements(OPS, elements, reduction, keep=keep, weight=w).loss.astype(dtype)


#: The differentiable loss of each form, by the name of its input.
DIFFERENTIABLE: dict[str, Callable[..., Array]] = {
    "logits": differentiable_logits_loss,
    "probs": differentiable_probs_loss,
}


# -- the glue: the loss as a JAX operation whose derivatives are the programs' outputs -----------


def _key(name: str, value: Array, x: Array, full: bool) -> str:
    """The output of ``name``'s gradient: per element when ``full`` and ``name`` is broadcast."""
    return f"full:{name}" if full and np.shape(value) != np.shape(x) else f"grad:{name}"


def _contract(
    grads: tuple[Array, ...], tangents: tuple[Array, ...], reduction: str, dtype: np.dtype
) -> Array:
    """The loss's tangent: sum over arguments of (gradient . tangent); elementwise for "none"
    (the gradients are then per element, and the tangents broadcast to the element shape).

    Written with lax primitives: jnp's functions are jitted wrappers, and under an eager
    ``jax.grad`` each wrapper applied to a tangent is one more program to compile.
    """
    work = working_dtype(dtype)
    total = None
    for grad, tangent in zip(grads, tangents):
        tangent = _cast(tangent, work)
        if np.shape(tangent) != np.shape(grad):
            lead = np.ndim(grad) - np.ndim(tangent)  # NumPy broadcasting aligns trailing axes
            tangent = lax.broadcast_in_dim(
                tangent, np.shape(grad), tuple(range(lead, np.ndim(grad)))
            )
        term = lax.mul(_widened(grad, work), tangent)
        if reduction != "none":
            term = lax.reduce_sum(term, tuple(range(np.ndim(term))))
        total = term if total is None else lax.add(total, term)
    return _cast(total, dtype)


def _cast(value: Array, dtype: np.dtype) -> Array:
    return value if value.dtype == dtype else lax.convert_element_type(value, dtype)


def _widened(value: Array, dtype: np.dtype) -> Array | np.ndarray:
    """``value`` cast to the wider ``dtype``: for a concrete array on the CPU (a gradient under
    an eager ``jax.grad``) by NumPy, in place of an eager conversion that compiles a program
    per shape; the widening is exact either way.

    >>> _widened(jnp.ones(2, jnp.float16), np.dtype(np.float32)).dtype
    dtype('float32')
    """
    if value.dtype == dtype:
        return value
    device = None if isinstance(value, jax.core.Tracer) else device_of(value)
    if device is not None and device.platform == "cpu":
        return np.asarray(value).astype(dtype)
    return lax.convert_element_type(value, dtype)


def _moving(form: Form, primals: tuple, tangents: tuple) -> tuple[str, ...]:
    """Names of the arguments that are given and carry a tangent."""
    return tuple(
        name
        for name, value, tangent in zip(form.names, primals, tangents)
        if value is not None and given(tangent)
    )


def _jvp_along(
    function: Callable[..., Any],
    form: Form,
    moving: tuple[str, ...],
    primals: tuple,
    tangents: tuple,
) -> Any:
    """JAX's tangent of ``function(x, y, w, q)`` along the arguments named ``moving``."""
    fixed = dict(zip(form.names, primals[:4]))

    def along(*values: Array) -> Any:
        merged = {**fixed, **dict(zip(moving, values))}
        return function(*(merged[n] for n in form.names))

    return jax.jvp(
        along, tuple(fixed[n] for n in moving), tuple(tangents[form.names.index(n)] for n in moving)
    )[1]


# -- the loss -----------------------------------------------------------------------------


def loss(
    form: Form,
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    options: Options,
) -> Array:
    """The reduced loss: through ``loss_op`` while JAX traces (jit, grad, vmap), and straight
    from the compiled program for concrete arrays, where no transformation can be watching
    (a custom_jvp call costs hundreds of microseconds of Python eagerly)."""
    if any(isinstance(a, jax.core.Tracer) for a in (x, y, w, q, mask)):
        return loss_op(x, y, w, q, mask, form, options)
    return fused.outputs(form, x, y, w, q, mask, options, ("loss",))["loss"]


@partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def loss_op(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    form: Form,
    options: Options,
) -> Array:
    """The reduced loss, differentiable by JAX to any order."""
    return fused.outputs(form, x, y, w, q, mask, options, ("loss",))["loss"]


def _loss_jvp(form: Form, options: Options, primals: tuple, tangents: tuple) -> tuple:
    x, y, w, q, mask = primals
    names = _moving(form, primals[:4], tangents[:4])
    if not names:
        value = loss_op(x, y, w, q, mask, form, options)
        return value, jnp.zeros_like(value)
    reduction = dict(options)["reduction"]
    full = reduction == "none" and any(
        np.shape(primals[form.names.index(n)]) != np.shape(x) for n in names
    )
    value, grads = grads_op(x, y, w, q, mask, form, options, names, full)
    chosen = tuple(tangents[form.names.index(n)] for n in names)
    return value, _contract(grads, chosen, reduction, value.dtype)


loss_op.defjvp(_loss_jvp, symbolic_zeros=True)


# -- its gradients ------------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7, 8))
def grads_op(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    form: Form,
    options: Options,
    names: tuple[str, ...],
    full: bool,
) -> tuple[Array, tuple[Array, ...]]:
    """(loss, its gradients with respect to ``names``), in the arguments' shapes, or per element
    for broadcast weight and pos_weight when ``full``."""
    args = dict(zip(form.names, (x, y, w, q)))
    keys = tuple(_key(name, args[name], x, full) for name in names)
    out = fused.outputs(form, x, y, w, q, mask, options, ("loss", *keys))
    return out["loss"], tuple(out[key] for key in keys)


def _grads_by_autodiff(
    form: Form,
    options: Options,
    names: tuple[str, ...],
    full: bool,
    mask: Array | None,
    *args: Array,
) -> tuple[Array, tuple[Array, ...]]:
    """``grads_op`` by JAX's autodiff of the form's differentiable loss (any order)."""
    args = dict(zip(form.names, args))
    x = args[form.names[0]]
    if full:
        args = {
            n: jnp.broadcast_to(v, np.shape(x))
            if n in names and n in ("weight", "pos_weight")
            else v
            for n, v in args.items()
        }

    differentiable = DIFFERENTIABLE[form.names[0]]

    def reduced(*values: Array) -> Array:
        merged = {**args, **dict(zip(names, values))}
        return differentiable(*(merged[n] for n in form.names), mask, **dict(options))

    value, pullback = jax.vjp(reduced, *(args[n] for n in names))
    return value, pullback(jnp.ones_like(value))


def _grads_jvp(
    form: Form,
    options: Options,
    names: tuple[str, ...],
    full: bool,
    primals: tuple,
    tangents: tuple,
) -> tuple:
    x, y, w, q, mask = primals
    value, grads = grads_op(x, y, w, q, mask, form, options, names, full)
    moving = _moving(form, primals[:4], tangents[:4])
    reduction = dict(options)["reduction"]
    if form.curvature and moving == names == (form.names[0],):
        # The gradient with respect to the logits is elementwise in them: its tangent is the
        # curvature times dx, and the loss's tangent is the gradient's dot dx.
        dx = tangents[0]
        curvature = curvature_op(x, y, w, q, mask, form, options)
        dvalue = _contract(grads, (dx,), reduction, value.dtype)
        return (value, grads), (dvalue, (lax.mul(curvature, _cast(dx, curvature.dtype)),))
    if not moving:
        return (value, grads), jax.tree.map(jnp.zeros_like, (value, grads))
    # Anything else: JAX differentiates the differentiable loss, through the spec's derivatives.
    dvalue, dgrads = _jvp_along(
        partial(_grads_by_autodiff, form, options, names, full, mask),
        form,
        moving,
        primals,
        tangents,
    )
    return (value, grads), (dvalue, tuple(dgrads))


grads_op.defjvp(_grads_jvp, symbolic_zeros=True)


# -- the curvature (logits) ---------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def curvature_op(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    form: Form,
    options: Options,
) -> Array:
    """d (gradient with respect to the logits) / d logits, per element."""
    return fused.outputs(form, x, y, w, q, mask, options, ("curvature",))["curvature"]


def _curvature_by_autodiff(form: Form, options: Options, mask: Array | None, *args: Array) -> Array:
    def gradient(v: Array) -> Array:
        return _grads_by_autodiff(form, options, (form.names[0],), False, mask, v, *args[1:])[1][0]

    return jax.jvp(gradient, (args[0],), (jnp.ones_like(args[0]),))[1]


def _curvature_jvp(form: Form, options: Options, primals: tuple, tangents: tuple) -> tuple:
    x, y, w, q, mask = primals
    value = curvature_op(x, y, w, q, mask, form, options)
    moving = _moving(form, primals[:4], tangents[:4])
    if not moving:
        return value, jnp.zeros_like(value)
    return value, _jvp_along(
        partial(_curvature_by_autodiff, form, options, mask), form, moving, primals, tangents
    )


curvature_op.defjvp(_curvature_jvp, symbolic_zeros=True)
