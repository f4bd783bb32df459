"""The backend's computations as compiled programs of checked JAX arrays.

Each program takes the operands (already in the input's dtype, see
``operands``) plus static options, computes in the working dtype (float32
for float16, bfloat16 and float32; float64 for float64), and rounds once to
the input's dtype. ``jax.jit`` makes an eager call one dispatch, and inside a
caller's own jit it simply inlines.

``logits_program`` computes, in one pass over the elements, whichever of the
loss, its gradients and its curvature are asked for (``want``): the forward
loss, ``value_and_grad``, ``grad_hess`` and the derivatives that JAX's own
autodiff takes through the loss (``ops``) are all outputs of it;
``probs_program`` does the same for the probability form. They are not
differentiable themselves; ``differentiable_logits_loss`` and
``differentiable_probs_loss`` are, with the spec's derivatives to any order.

>>> import jax.numpy as jnp
>>> out = logits_program(jnp.array([0.0, 0.0], jnp.bfloat16), jnp.array([1.0, 0.0], jnp.bfloat16),
...                      None, None, None, eps=0.0, reduction="sum", want=("loss",))
>>> out["loss"].dtype, float(out["loss"])
(dtype(bfloat16), 1.3828125)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import autodiff, chunks
from .kernels import Coefficients, LogitParts, zero_safe
from .reductions import Reduction

Array = jax.Array

#: The arguments of the logits form that have gradients, in their canonical order.
NAMES = ("logits", "targets", "weight", "pos_weight")


def working_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; float16, bfloat16 and float32 are computed in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _up(value: Array | None, dtype: np.dtype) -> Array | None:
    return None if value is None else value.astype(dtype)


def _output_shape(key: str, names: tuple[str, ...], operands: tuple[Array | None, ...],
                  reduction: str) -> tuple[int, ...]:
    """The shape of output ``key`` (see ``logits_program``)."""
    kind, _, name = key.partition(":")
    shape = operands[0].shape
    if key == "loss":
        return shape if reduction == "none" else ()
    if kind == "grad":
        return operands[names.index(name)].shape
    return shape  # "full:NAME" and "curvature"


#: outputs_of(keys, loss, plan, *operands) -> {key: value}: the outputs ``keys`` of the
#: operands (a chunk of rows, see ``chunks``) in the working dtype; the loss is their sum
#: (not yet divided), and ``loss`` is the whole input's reduced loss (None if not known).
OutputsOf = Callable[..., dict[str, Array]]


def _check_outputs(program: str, want: tuple[str, ...], names: tuple[str, ...],
                   curvature: bool) -> None:
    for key in want:
        kind, _, name = key.partition(":")
        if not (key == "loss" or (key == "curvature" and curvature)
                or (kind in ("grad", "full") and name in names)):
            raise ValueError(f"{program} has no output {key!r}")


def _evaluate(outputs_of: OutputsOf, names: tuple[str, ...], operands: tuple[Array | None, ...],
              plan: Reduction, want: tuple[str, ...], dtype: np.dtype) -> dict[str, Array]:
    """The outputs ``want`` in ``dtype``: in one pass over the operands' chunks, except those
    that need the whole input's loss (the weight's gradient under "weighted_mean"), which
    take a second pass once it is known."""
    late = tuple(key for key in want if plan.reduction == "weighted_mean"
                 and key in ("grad:weight", "full:weight"))
    early = tuple(key for key in want if key not in late)
    if late and "loss" not in early:
        early = ("loss", *early)

    def run(keys: tuple[str, ...], loss: Array | None, *values: Array | None) -> dict:
        *args, keep = values
        return outputs_of(keys, loss, plan.within(args[0].shape, keep), *args)

    out_shapes = {key: _output_shape(key, names, operands, plan.reduction) for key in early}
    out = chunks.by_chunks(partial(run, early, None), (*operands, plan.keep),
                           operands[0].shape, out_shapes)
    if "loss" in out:
        out["loss"] = plan.scale(out["loss"])
    if late:
        out.update(run(late, out["loss"], *operands, plan.keep))
    return {key: out[key].astype(dtype) for key in want}


def _logits_outputs(eps: float, keys: tuple[str, ...], loss: Array | None, plan: Reduction,
                    x: Array, y: Array, w: Array | None, q: Array | None) -> dict[str, Array]:
    """The outputs ``keys`` of ``logits_program`` on (a chunk of) its operands."""
    shapes = {"logits": x.shape, "targets": y.shape,
              "weight": None if w is None else w.shape,
              "pos_weight": None if q is None else q.shape}
    coefficients = Coefficients.of(y, q, eps)
    parts = LogitParts.of(x)

    def weighted(value: Array) -> Array:
        return value if w is None else zero_safe(w, value)

    # The loss and its slope carry their coefficients as pairs (they are held to a few ULP);
    # the other outputs are held to parity only, and single arithmetic keeps the program small.
    yp, one_minus = autodiff.smoothed(y, eps)
    b = yp if q is None else zero_safe(q, yp)

    def partial_of(name: str) -> Array:
        if name == "logits":
            return parts.slope(coefficients, w)
        sp_pos, sp_neg = parts.softpluses()
        if name == "targets":
            # q softplus(-x) - softplus(x) is exactly -x when q = 1.
            diff = -x if q is None else zero_safe(q, sp_neg) - sp_pos
            return weighted(zero_safe(jnp.asarray(1 - eps, x.dtype), diff))
        if name == "weight":
            # d/dw_i of sum(w B) / sum(w) is (B_i - loss) / sum(w).
            value = zero_safe(one_minus, sp_pos) + zero_safe(b, sp_neg)
            return value - loss if plan.reduction == "weighted_mean" else value
        return weighted(zero_safe(yp, sp_neg))  # pos_weight

    out = {}
    for key in keys:
        kind, _, name = key.partition(":")
        if key == "loss":
            out[key] = plan.total(parts.loss(coefficients, w))
        elif key == "curvature":
            c = one_minus + b
            out[key] = plan.gradient(parts.curvature(c if w is None else zero_safe(w, c)),
                                     x.shape)
        else:
            out[key] = plan.gradient(partial_of(name), shapes[name] if kind == "grad" else x.shape)
    return out


@partial(jax.jit, static_argnames=("eps", "reduction", "want"))
def logits_program(x: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None,
                   denominator: float | Array | None = None, *, eps: float, reduction: str,
                   want: tuple[str, ...]) -> dict[str, Array]:
    """The outputs named in ``want``, each in the input's dtype:

    - ``"loss"``: the reduced loss;
    - ``"grad:NAME"``: its gradient with respect to argument NAME, in NAME's shape;
    - ``"full:NAME"``: the same before the sum over NAME's broadcast axes (element shape);
    - ``"curvature"``: the derivative of ``grad:logits`` with respect to each logit (the
      Hessian's diagonal; the loss is elementwise in the logits).

    One exp and one log1p per element serve them all, in one pass over the elements
    (``chunks``). Not differentiable itself: ``ops`` gives the loss its derivatives.
    ``reduction`` may be ``SCALED``, with its runtime ``denominator`` (see ``reductions``).
    """
    _check_outputs("logits_program", want, NAMES, curvature=True)
    dtype, work = x.dtype, working_dtype(x.dtype)
    operands = tuple(_up(v, work) for v in (x, y, w, q))
    plan = Reduction.plan(reduction, x.shape, mask=mask, weight=operands[2], dtype=work,
                          denominator=denominator)
    return _evaluate(partial(_logits_outputs, eps), NAMES, operands, plan, want, dtype)


@partial(jax.jit, static_argnames=("eps", "reduction"))
def differentiable_logits_loss(x: Array, y: Array, w: Array | None, q: Array | None,
                               mask: Array | None, *, eps: float, reduction: str) -> Array:
    """The reduced loss from logits, differentiable by JAX with the spec's derivatives to any
    order (``autodiff``): what ``ops`` falls back on for mixed and higher derivatives."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    x, y, w, q = (_up(v, work) for v in (x, y, w, q))
    plan = Reduction.plan(reduction, x.shape, mask=mask, weight=w, dtype=work)
    elements = autodiff.logit_loss(plan.guard(x, 0.0), plan.guard(y, 0.0), plan.guard(w, 1.0),
                                   plan.guard(q, 1.0), eps)
    return plan.finish(elements).astype(dtype)


def _probs_outputs(eps: float, clamp: float | Array, keys: tuple[str, ...], loss: Array | None,
                   plan: Reduction, p: Array, y: Array, w: Array | None,
                   q: Array | None) -> dict[str, Array]:
    """The outputs ``keys`` of ``probs_program`` on (a chunk of) its operands."""
    shapes = {"probs": p.shape, "targets": y.shape,
              "weight": None if w is None else w.shape,
              "pos_weight": None if q is None else q.shape}
    yp, one_minus = autodiff.smoothed(y, eps)
    b = yp if q is None else q * yp
    log_p, log_1mp = autodiff.probs_logs(p, clamp)
    bracket = -(zero_safe(b, log_p) + zero_safe(one_minus, log_1mp))

    def weighted(value: Array) -> Array:
        return value if w is None else zero_safe(w, value)

    def partial_of(name: str) -> Array:
        if name == "probs":
            return autodiff.probs_slope(p, y, w, q, eps)
        if name == "targets":
            # w (1 - eps) [max(log1p(-p), c) - q max(log p, c)]
            diff = log_1mp - (log_p if q is None else zero_safe(q, log_p))
            return weighted(zero_safe(jnp.asarray(1 - eps, p.dtype), diff))
        if name == "weight":
            return bracket - loss if plan.reduction == "weighted_mean" else bracket
        return weighted(zero_safe(yp, -log_p))  # pos_weight

    out = {}
    for key in keys:
        kind, _, name = key.partition(":")
        if key == "loss":
            out[key] = plan.total(weighted(bracket))
        else:
            out[key] = plan.gradient(partial_of(name), shapes[name] if kind == "grad" else p.shape)
    return out


@partial(jax.jit, static_argnames=("eps", "reduction", "want"))
def probs_program(p: Array, y: Array, w: Array | None, q: Array | None, mask: Array | None,
                  denominator: float | Array | None = None, *, eps: float, reduction: str,
                  clamp: float | Array, want: tuple[str, ...]) -> dict[str, Array]:
    """``logits_program`` for probabilities (NAMES with "probs" first; no curvature). The log
    clamp is a runtime value: one compilation serves every clamp."""
    names = ("probs", *NAMES[1:])
    _check_outputs("probs_program", want, names, curvature=False)
    dtype, work = p.dtype, working_dtype(p.dtype)
    operands = tuple(_up(v, work) for v in (p, y, w, q))
    plan = Reduction.plan(reduction, p.shape, mask=mask, weight=operands[2], dtype=work,
                          denominator=denominator)
    return _evaluate(partial(_probs_outputs, eps, clamp), names, operands, plan, want, dtype)


@partial(jax.jit, static_argnames=("eps", "reduction", "clamp"))
def differentiable_probs_loss(p: Array, y: Array, w: Array | None, q: Array | None,
                              mask: Array | None, *, eps: float, reduction: str,
                              clamp: float) -> Array:
    """The reduced loss from probabilities, differentiable by JAX with the spec's derivatives."""
    dtype, work = p.dtype, working_dtype(p.dtype)
    p, y, w, q = (_up(v, work) for v in (p, y, w, q))
    plan = Reduction.plan(reduction, p.shape, mask=mask, weight=w, dtype=work)
    elements = autodiff.probs_loss(plan.guard(p, 0.5), plan.guard(y, 0.0), plan.guard(w, 1.0),
                                   plan.guard(q, 1.0), eps, clamp)
    return plan.finish(elements).astype(dtype)
