"""The losses as JAX operations whose derivatives are compiled programs.

``loss_op`` is a ``jax.custom_jvp`` at the call boundary, outside any jit.
Its tangent comes from ``grads_op`` (the loss and its gradients, a custom_jvp
too), whose own tangent along the logits comes from ``curvature_op``. Every
one of them evaluates the form's compiled program (``compute.logits_program``
or ``compute.probs_program``), so JAX's own autodiff never has to
differentiate (and compile anew) the program itself:

- under ``jax.jit`` the programs inline, and XLA keeps only what is used;
- eagerly, ``jax.grad`` of the loss runs the gradient program (the same one
  as ``value_and_grad``), and ``jax.grad`` of that gradient with respect to the
  logits runs it once more for the curvature: for small inputs (up to
  ``SMALL`` elements) one program per option set computes every output, so
  the loss, ``value_and_grad``, ``grad_hess`` and JAX's first and second
  derivatives share a single compilation; above that, the rarer calls share
  theirs too (``_rounded_up``); "sum", "mean" and "batch_mean" share one
  program, their denominator a runtime input (``reductions.SCALED``);
- any other derivative (mixed second derivatives, third order, second
  derivatives of the probability form) is taken by JAX through the form's
  differentiable loss (``compute.differentiable_*``), with the spec's
  derivatives to any order.

>>> import jax, jax.numpy as jnp
>>> x, y = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
>>> options = (("eps", 0.0), ("reduction", "sum"))
>>> [round(float(g), 4) for g in jax.grad(lambda a: loss_op(a, y, None, None, None,
...                                                          LOGITS, options))(x)]
[-0.5, 0.8808]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import compute
from .autodiff import given
from .compute import working_dtype
from .operands import device_of
from .reductions import SCALED, SCALED_REDUCTIONS, denominator

Array = jax.Array

#: Up to this many elements, one program per option set computes every output: computing the
#: outputs nobody asked for costs microseconds, and a compilation a tenth of a second.
SMALL = 1 << 14


class Form(NamedTuple):
    """A form of the loss (from logits or from probabilities) and its programs."""

    #: The arguments with gradients, in their canonical order (the input first).
    names: tuple[str, ...]
    #: (x, y, w, q, mask, *, want, **options) -> {output: array} (see compute.logits_program).
    program: Callable[..., dict[str, Array]]
    #: (x, y, w, q, mask, **options) -> the reduced loss, differentiable to any order.
    differentiable: Callable[..., Array]
    #: Whether the program has a "curvature" output.
    curvature: bool


LOGITS = Form(compute.NAMES, compute.logits_program, compute.differentiable_logits_loss, True)
PROBS = Form(("probs", *compute.NAMES[1:]), compute.probs_program,
             compute.differentiable_probs_loss, False)

#: Static options of a call, as a hashable tuple of (name, value) pairs.
Options = tuple[tuple[str, Any], ...]


def _all_outputs(form: Form, x: Array, w: Array | None, q: Array | None,
                 reduction: str) -> tuple[str, ...]:
    keys = ["loss", f"grad:{form.names[0]}", "grad:targets"]
    for name, value in (("weight", w), ("pos_weight", q)):
        if value is not None:
            keys.append(f"grad:{name}")
            if reduction == "none" and np.shape(value) != np.shape(x):
                keys.append(f"full:{name}")
    return (*keys, "curvature") if form.curvature else tuple(keys)


def _rounded_up(form: Form, want: tuple[str, ...], everything: tuple[str, ...]) -> tuple[str, ...]:
    """The outputs a large eager call computes for ``want``: a gradient other than the input's
    brings every gradient (and the loss), and the curvature the input's gradient. Those calls
    are rare next to the loss and the input's gradient, which keep programs of their own; so
    JAX's eager derivatives and ``grad_hess`` share the compilations of ``value_and_grad``.

    >>> _rounded_up(LOGITS, ("loss", "grad:targets"), _all_outputs(LOGITS, np.zeros(3), None,
    ...                                                            None, "sum"))
    ('loss', 'grad:logits', 'grad:targets')
    >>> _rounded_up(LOGITS, ("curvature",), _all_outputs(LOGITS, np.zeros(3), None, None, "none"))
    ('grad:logits', 'curvature')
    """
    own = f"grad:{form.names[0]}"
    chosen = set(want)
    if any(key.startswith(("grad:", "full:")) and key != own for key in want):
        chosen.update(key for key in everything if key == "loss" or key.startswith("grad:"))
    if "curvature" in want:
        chosen.add(own)
    # In the order of ``everything``, so that the same outputs make the same program.
    return (*(k for k in everything if k in chosen), *(k for k in want if k not in everything))


def outputs(form: Form, x: Array, y: Array, w: Array | None, q: Array | None,
            mask: Array | None, options: Options, want: tuple[str, ...]) -> dict[str, Array]:
    """The program's outputs ``want`` (and for small inputs, every output; for large eager
    ones, see ``_rounded_up``)."""
    kwargs = dict(options)
    reduction = kwargs["reduction"]
    everything = _all_outputs(form, x, w, q, reduction)
    if np.size(x) <= SMALL:
        if all(key in everything for key in want):
            want = everything
    elif not any(isinstance(a, jax.core.Tracer) for a in (x, y, w, q, mask)):
        want = _rounded_up(form, want, everything)
    runtime = ()
    if reduction in SCALED_REDUCTIONS:  # one program for the three, the denominator an input
        kwargs["reduction"] = SCALED
        runtime = (denominator(reduction, np.shape(x), masked=mask is not None),)
    return form.program(x, y, w, q, mask, *runtime, want=want, **kwargs)


def _key(name: str, value: Array, x: Array, full: bool) -> str:
    """The output of ``name``'s gradient: per element when ``full`` and ``name`` is broadcast."""
    return f"full:{name}" if full and np.shape(value) != np.shape(x) else f"grad:{name}"


def _contract(grads: tuple[Array, ...], tangents: tuple[Array, ...], reduction: str,
              dtype: np.dtype) -> Array:
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
            tangent = lax.broadcast_in_dim(tangent, np.shape(grad),
                                           tuple(range(lead, np.ndim(grad))))
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
    return tuple(name for name, value, tangent in zip(form.names, primals, tangents)
                 if value is not None and given(tangent))


def _jvp_along(function: Callable[..., Any], form: Form, moving: tuple[str, ...],
               primals: tuple, tangents: tuple) -> Any:
    """JAX's tangent of ``function(x, y, w, q)`` along the arguments named ``moving``."""
    fixed = dict(zip(form.names, primals[:4]))

    def along(*values: Array) -> Any:
        merged = {**fixed, **dict(zip(moving, values))}
        return function(*(merged[n] for n in form.names))

    return jax.jvp(along, tuple(fixed[n] for n in moving),
                   tuple(tangents[form.names.index(n)] for n in moving))[1]


# -- the loss -----------------------------------------------------------------------------


def loss(form: Form, x: Array, y: Array, w: Array | None, q: Array | None,
         mask: Array | None, options: Options) -> Array:
    """The reduced loss: through ``loss_op`` while JAX traces (jit, grad, vmap), and straight
    from the compiled program for concrete arrays, where no transformation can be watching
    (a custom_jvp call costs hundreds of microseconds of Python eagerly)."""
    if any(isinstance(a, jax.core.Tracer) for a in (x, y, w, q, mask)):
        return loss_op(x, y, w, q, mask, form, options)
    return outputs(form, x, y, w, q, mask, options, ("loss",))["loss"]


@partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def loss_op(x: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None,
            form: Form, options: Options) -> Array:
    """The reduced loss, differentiable by JAX to any order."""
    return outputs(form, x, y, w, q, mask, options, ("loss",))["loss"]


def _loss_jvp(form: Form, options: Options, primals: tuple, tangents: tuple) -> tuple:
    x, y, w, q, mask = primals
    names = _moving(form, primals[:4], tangents[:4])
    if not names:
        value = loss_op(x, y, w, q, mask, form, options)
        return value, jnp.zeros_like(value)
    reduction = dict(options)["reduction"]
    full = reduction == "none" and any(np.shape(primals[form.names.index(n)]) != np.shape(x)
                                       for n in names)
    value, grads = grads_op(x, y, w, q, mask, form, options, names, full)
    chosen = tuple(tangents[form.names.index(n)] for n in names)
    return value, _contract(grads, chosen, reduction, value.dtype)


loss_op.defjvp(_loss_jvp, symbolic_zeros=True)


# -- its gradients ------------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7, 8))
def grads_op(x: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None,
             form: Form, options: Options, names: tuple[str, ...],
             full: bool) -> tuple[Array, tuple[Array, ...]]:
    """(loss, its gradients with respect to ``names``), in the arguments' shapes, or per element
    for broadcast weight and pos_weight when ``full``."""
    args = dict(zip(form.names, (x, y, w, q)))
    keys = tuple(_key(name, args[name], x, full) for name in names)
    out = outputs(form, x, y, w, q, mask, options, ("loss", *keys))
    return out["loss"], tuple(out[key] for key in keys)


def _grads_by_autodiff(form: Form, options: Options, names: tuple[str, ...], full: bool,
                       mask: Array | None, *args: Array) -> tuple[Array, tuple[Array, ...]]:
    """``grads_op`` by JAX's autodiff of the form's differentiable loss (any order)."""
    args = dict(zip(form.names, args))
    x = args[form.names[0]]
    if full:
        args = {n: jnp.broadcast_to(v, np.shape(x)) if n in names and n in ("weight", "pos_weight")
                else v for n, v in args.items()}

    def reduced(*values: Array) -> Array:
        merged = {**args, **dict(zip(names, values))}
        return form.differentiable(*(merged[n] for n in form.names), mask, **dict(options))

    value, pullback = jax.vjp(reduced, *(args[n] for n in names))
    return value, pullback(jnp.ones_like(value))


def _grads_jvp(form: Form, options: Options, names: tuple[str, ...], full: bool,
               primals: tuple, tangents: tuple) -> tuple:
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
    dvalue, dgrads = _jvp_along(partial(_grads_by_autodiff, form, options, names, full, mask),
                                form, moving, primals, tangents)
    return (value, grads), (dvalue, tuple(dgrads))


grads_op.defjvp(_grads_jvp, symbolic_zeros=True)


# -- the curvature (logits) ---------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def curvature_op(x: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None,
                 form: Form, options: Options) -> Array:
    """d (gradient with respect to the logits) / d logits, per element."""
    return outputs(form, x, y, w, q, mask, options, ("curvature",))["curvature"]


def _curvature_by_autodiff(form: Form, options: Options, mask: Array | None,
                           *args: Array) -> Array:
    def gradient(v: Array) -> Array:
        return _grads_by_autodiff(form, options, (form.names[0],), False, mask,
                                  v, *args[1:])[1][0]

    return jax.jvp(gradient, (args[0],), (jnp.ones_like(args[0]),))[1]


def _curvature_jvp(form: Form, options: Options, primals: tuple, tangents: tuple) -> tuple:
    x, y, w, q, mask = primals
    value = curvature_op(x, y, w, q, mask, form, options)
    moving = _moving(form, primals[:4], tangents[:4])
    if not moving:
        return value, jnp.zeros_like(value)
    return value, _jvp_along(partial(_curvature_by_autodiff, form, options, mask),
                             form, moving, primals, tangents)


curvature_op.defjvp(_curvature_jvp, symbolic_zeros=True)
