"""TensorFlow's autodiff through the losses: the ``tf.custom_gradient`` glue and the tapes.

``logits_loss``'s forward computes the gradients a tape watches (``fused``), its backward
reuses them; the backward's own gradient comes from ``exact_loss``, whose element losses
(like ``probs_loss``'s) have the analytic derivatives (``kernels``). ``Autodiff`` runs tapes.

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> x = tf.constant([0.0, 2.0])
>>> with tf.GradientTape() as tape:
...     tape.watch(x)
...     loss = logits_loss(prepare("logits", x, tf.constant([1.0, 0.0]), weight=None,
...                                pos_weight=None, mask=None), eps=0.0, reduction="sum")
>>> [round(g, 4) for g in tape.gradient(loss, x).numpy().tolist()]
[-0.5, 0.8808]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record

from bce_core import rules
from bce_core.compensated import UNDERFLOW

from . import fused, kernels
from .fused import compiled, pattern_of
from .kernels import OPERANDS, ProbsTerms, Working, weighted
from .operands import OPS, Operands


def _given(ops: Operands[tf.Tensor]) -> dict[str, tf.Tensor | None]:
    return dict(zip(OPERANDS, (ops.inputs, ops.targets, ops.weight, ops.pos_weight)))


# -- the fused loss, its backward reusing the forward's gradients ---------------------------


def logits_loss(ops: Operands[tf.Tensor], *, eps: float, reduction: str) -> tf.Tensor:
    """The reduced loss, in the logits' dtype, differentiable by TensorFlow's autodiff."""
    given = {name: t for name, t in _given(ops).items() if t is not None}
    watched = tuple(n for n, t in given.items() if record.should_record_backprop([t]))
    with record.stop_recording():
        loss, saved = (
            _partials(ops, watched, eps, reduction)
            if watched
            else fused.loss_and_grad(ops, eps=eps, reduction=reduction, grad=False)
        )
    if watched:
        return _attach(ops, loss, watched, lambda: saved, eps, reduction)
    if tf.executing_eagerly() and not record.could_possibly_record():
        return loss
    # Someone may still ask for gradients (tf.gradients, a forward accumulator): compute them then.
    names = tuple(given)
    return _attach(
        ops, loss, names, lambda: _partials(ops, names, eps, reduction)[1], eps, reduction
    )


def value_and_grad(
    ops: Operands[tf.Tensor], *, eps: float, reduction: str, names: Sequence[str]
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The loss and its gradients with respect to ``names``: the fused program for the logits,
    the kernels for the others; where a tape watches, a tape around ``logits_loss``."""
    if not any(t is not None and record.should_record_backprop([t]) for t in _given(ops).values()):
        if tuple(names) == ("logits",):
            loss, grad = fused.loss_and_grad(ops, eps=eps, reduction=reduction, grad=True)
            return loss, [grad]
        return kernels.value_and_grad(ops, eps=eps, reduction=reduction, names=names)
    sources = [_given(ops)[name] for name in names]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        loss = logits_loss(ops, eps=eps, reduction=reduction)
    return loss, tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _partials(
    ops: Operands[tf.Tensor], names: tuple[str, ...], eps: float, reduction: str
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The loss and its gradients with respect to ``names`` (per element under "none"): the
    logits' from the fused program, the others' apart (a graph prunes those nobody uses)."""
    loss, partials = None, []
    if "logits" in names:
        loss, grad = fused.loss_and_grad(ops, eps=eps, reduction=reduction, grad=True)
        partials.append(grad)
    rest = tuple(n for n in names if n != "logits")
    if rest:
        value, more = kernels.value_and_grad(
            ops, eps=eps, reduction=reduction, names=rest, full=reduction == "none"
        )
        loss, partials = value if loss is None else loss, partials + more
    return loss, partials


def _attach(
    ops: Operands[tf.Tensor],
    loss: tf.Tensor,
    names: tuple[str, ...],
    partials: Callable[[], list[tf.Tensor]],
    eps: float,
    reduction: str,
) -> tf.Tensor:
    """``loss`` as the output of an operation on the operands ``names`` whose gradient is
    upstream times ``partials()``, itself an operation whose gradient (that of
    sum(cotangent * upstream * d loss / d input)) comes from ``exact_loss``."""

    @tf.custom_gradient
    def loss_op(*inputs: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
        @tf.custom_gradient
        def vjp_op(upstream: tf.Tensor, *inputs: tf.Tensor) -> tuple[list[tf.Tensor], Any]:
            with record.stop_recording():
                grads = [
                    _times(s, upstream, operand, reduction)
                    for s, operand in zip(partials(), inputs)
                ]

            def second(*cotangents: tf.Tensor | None) -> list[tf.Tensor]:
                sources, zero = [upstream, *inputs], tf.UnconnectedGradients.ZERO
                with tf.GradientTape() as outer:
                    outer.watch(sources)
                    with tf.GradientTape() as inner:
                        inner.watch(list(inputs))
                        # Derivatives in the other operands are neither asked for nor evaluated.
                        fields = {"logits": "inputs", "targets": "targets"}
                        loss = exact_loss(
                            dataclasses.replace(
                                ops, **{fields.get(n, n): t for n, t in zip(names, inputs)}
                            ),
                            eps=eps,
                            reduction=reduction,
                            wrt=names,
                        )
                    firsts = inner.gradient(
                        loss, list(inputs), output_gradients=upstream, unconnected_gradients=zero
                    )
                return outer.gradient(
                    firsts,
                    sources,
                    unconnected_gradients=zero,
                    output_gradients=[
                        tf.zeros_like(i) if c is None else c for c, i in zip(cotangents, inputs)
                    ],
                )

            return grads, second

        return tf.identity(loss), lambda upstream: vjp_op(upstream, *inputs)

    return loss_op(*(_given(ops)[name] for name in names))


def _times(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor, reduction: str) -> tf.Tensor:
    """upstream * saved in ``operand``'s shape; for a reduced loss (``saved`` then has the
    operand's shape) ``saved`` itself when upstream is 1, the usual tape.gradient of a loss,
    without a pass over the elements."""
    if reduction == "none" or upstream.shape.rank != 0:
        return upstream_times(saved, upstream, operand)
    known = tf.get_static_value(upstream)  # eager, or the constant 1 tape.gradient seeds
    if known is not None:
        if known != 1:
            return upstream_times(saved, upstream, operand)
        return saved if tf.executing_eagerly() else tf.identity(saved)
    return tf.cond(
        tf.equal(upstream, 1),
        lambda: tf.identity(saved),
        lambda: upstream_times(saved, upstream, operand),
    )


#: Per dtype: (c, k) such that a saved value below 2**-c is multiplied lifted by 2**k.
_LIFT = {np.dtype(np.float32): (60, 64), np.dtype(np.float64): (500, 512)}


def scaled_product(saved: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """saved * factor (0 where factor is 0), a product below the smallest normal number rebuilt
    from bits (TensorFlow's CPU flushes them), ``saved`` possibly subnormal: times 1, itself."""
    dtype = np.dtype(saved.dtype.as_numpy_dtype)
    spec, (cut, lift) = UNDERFLOW[dtype], _LIFT[dtype]
    ints, mantissa, minexp = tf.as_dtype(spec.int_dtype), spec.mantissa_bits, np.finfo(dtype).minexp
    bits = tf.bitcast(saved, ints)
    magnitude = tf.bitwise.bitwise_and(bits, tf.constant(np.iinfo(spec.int_dtype).max, ints))
    # Compared as integers: with subnormals read as 0, a float comparison would miss them.
    small = magnitude < tf.bitcast(tf.constant(2.0**-cut, saved.dtype), ints)
    # A subnormal is its integer bits times the smallest subnormal, 2**(minexp - mantissa).
    units = tf.cast(magnitude, saved.dtype) * 2.0 ** (lift + minexp - mantissa)
    units = tf.where(bits < 0, -units, units)
    lifted = tf.where(magnitude < 2**mantissa, units, OPS.where(small, saved, 0.0) * 2.0**lift)
    product = lifted * factor
    count = tf.cast(
        tf.round(tf.minimum(tf.abs(product) * 2.0 ** (mantissa - minexp - lift), 2.0**mantissa)),
        ints,
    )
    sign = OPS.where(product < 0, tf.constant(np.iinfo(spec.int_dtype).min, ints), 0)
    rebuilt = tf.bitcast(tf.bitwise.bitwise_or(count, sign), saved.dtype)
    normal = (tf.abs(product) >= 2.0 ** (minexp + lift)) | ~tf.math.is_finite(product)
    result = tf.where(small, tf.where(normal, product * 2.0**-lift, rebuilt), saved * factor)
    return OPS.where(tf.equal(factor, 0), 0.0, result)


def _product(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor) -> tf.Tensor:
    """upstream * saved, summed over the axes along which ``operand`` was broadcast."""
    half = saved.dtype not in (tf.float32, tf.float64)  # whose subnormals are normal float32
    product = weighted(upstream, saved) if half else scaled_product(saved, upstream)
    axes = rules.broadcast_axes(tuple(saved.shape), tuple(operand.shape))  # None: spanning
    if axes:
        product = tf.reduce_sum(product, axis=list(axes))
    return tf.reshape(product, tf.shape(operand))


def upstream_times(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor) -> tf.Tensor:
    """upstream * saved, summed to ``operand``'s shape, zero where upstream is 0: a few
    operations for small inputs, a compiled program per dtype, ranks and pattern for large."""
    upstream = tf.cast(upstream, saved.dtype)
    size = saved.shape.num_elements()
    if size is not None and size <= fused.SMALL:  # a few ops cost less than a compilation
        return _product(saved, upstream, operand)
    dtype, rank, upstream_rank, pattern = (
        saved.dtype,
        saved.shape.rank,
        upstream.shape.rank,
        pattern_of(operand),
    )
    program = compiled(
        ("backward", dtype.name, rank, upstream_rank, pattern),
        lambda: (
            _product,
            [
                tf.TensorSpec([None] * rank, dtype),
                tf.TensorSpec([None] * upstream_rank, dtype),
                tf.TensorSpec([None if p else 1 for p in pattern], dtype),
            ],
        ),
    )
    return program(saved, upstream, operand)


# -- the element losses with the spec's derivatives to second order --------------------------


def _elements(
    terms_of: Callable[..., Any],
    given: dict[str, tf.Tensor | None],
    wrt: Sequence[str] | None,
    second: bool,
) -> tf.Tensor:
    """The element losses of ``terms_of(x, y, w, q)`` (working dtype, full shape) as an
    operation whose gradient is the analytic one, itself an operation whose gradient is the
    analytic Hessian's if ``second``. ``wrt`` names the operands (of ``OPERANDS``) with
    gradients, by default every one given: the others' derivatives are never evaluated."""
    names = tuple(n for n in OPERANDS if given[n] is not None and (wrt is None or n in wrt))

    @tf.custom_gradient
    def elements(*args: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
        terms = terms_of(*{**given, **dict(zip(names, args))}.values())

        def grad(upstream: tf.Tensor) -> list[tf.Tensor]:
            if second:
                return _logit_vjp(terms, names, upstream, *args)
            return [weighted(upstream, terms.partial(n)) for n in names]

        return terms.loss(), grad

    return elements(*[given[n] for n in names])


def _logit_vjp(
    terms: kernels.LogitTerms, names: Sequence[str], upstream: tf.Tensor, *args: tf.Tensor
) -> list[tf.Tensor]:
    """upstream * d loss / d operand for each operand ``names``, as an operation whose gradient
    is the analytic Hessian's; an upstream (or cotangent) of exactly 0 contributes exactly 0."""

    @tf.custom_gradient
    def vjp(upstream: tf.Tensor, *args: tf.Tensor) -> tuple[list[tf.Tensor], Callable[..., Any]]:
        firsts = [terms.partial(n) for n in names]

        def grad(*cotangents: tf.Tensor | None) -> list[tf.Tensor]:
            def dot(values: Sequence[tf.Tensor | None], like: tf.Tensor) -> tf.Tensor:
                parts = [
                    weighted(c, v)
                    for c, v in zip(cotangents, values)
                    if c is not None and v is not None
                ]
                return functools.reduce(tf.add, parts) if parts else tf.zeros_like(like)

            return [dot(firsts, upstream)] + [
                weighted(upstream, dot([terms.second(name, other) for other in names], operand))
                for name, operand in zip(names, args)
            ]

        return [weighted(upstream, first) for first in firsts], grad

    return vjp(upstream, *args)


def exact_loss(
    ops: Operands[tf.Tensor], *, eps: float, reduction: str, wrt: Sequence[str] | None = None
) -> tf.Tensor:
    """The reduced loss from logits, differentiable to second order with respect to the
    operands ``wrt`` (of ``OPERANDS``; default: all)."""
    v = Working.of(ops, neutral=0.0)
    elements = _elements(
        lambda *a: kernels.LogitTerms.of(*a, eps),
        dict(zip(OPERANDS, (v.x, v.y, v.w, v.q))),
        wrt,
        second=True,
    )
    return v.out(v.reduce(elements, reduction).loss)


def probs_loss(ops: Operands[tf.Tensor], *, eps: float, reduction: str, clamp: float) -> tf.Tensor:
    """The reduced loss from probabilities, in the input's dtype, with the spec's gradient."""
    v = Working.of(ops, neutral=0.5)
    elements = _elements(
        lambda *a: ProbsTerms.of(*a, eps, clamp),
        dict(zip(OPERANDS, (v.x, v.y, v.w, v.q))),
        None,
        second=False,
    )
    return v.out(v.reduce(elements, reduction).loss)


# -- tapes around the backend's losses (bce_core.plugin.AutodiffBackend) ---------------------


class Autodiff:
    """Gradient tapes around a backend's losses (``TensorFlowBackend.autodiff_*``), with lazily
    compiled XLA versions."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def run(
        self,
        kind: str,
        *operands: tf.Tensor | None,
        compiled: bool,
        options: dict[str, Any],
        wrt: tuple[str, ...] = ("logits",),
    ) -> Any:
        """The tape ``kind`` ("value_and_grad", "second_derivative" or "probs_grad") on
        ``operands`` (x, y, w, q, mask), XLA-compiled if asked: one compiled function per
        option set, retraced only for new shapes."""
        frozen = tuple(sorted(options.items()))  # hashable, order-independent
        function = functools.partial(self._tape, kind, options=frozen, wrt=wrt)
        if compiled:
            with self._lock:
                key = (kind, frozen, wrt)
                if key not in self._compiled:
                    self._compiled[key] = tf.function(function, jit_compile=True, autograph=False)
                function = self._compiled[key]
        return function(*operands)

    def _tape(
        self,
        kind: str,
        x: tf.Tensor,
        y: tf.Tensor,
        w: tf.Tensor | None,
        q: tf.Tensor | None,
        m: tf.Tensor | None,
        *,
        options: tuple[tuple[str, Any], ...],
        wrt: tuple[str, ...],
    ) -> Any:
        loss_of = (
            self._backend.binary_cross_entropy
            if kind == "probs_grad"
            else self._backend.binary_cross_entropy_with_logits
        )
        sources, zero = dict(zip(OPERANDS, (x, y, w, q))), tf.UnconnectedGradients.ZERO
        second = kind == "second_derivative"
        with tf.GradientTape() if second else contextlib.nullcontext() as outer:
            if second:
                outer.watch(x)
            with tf.GradientTape() as tape:
                for name in wrt:
                    tape.watch(sources[name])
                loss = loss_of(x, y, weight=w, pos_weight=q, mask=m, **dict(options))
            grads = tape.gradient(loss, [sources[n] for n in wrt], unconnected_gradients=zero)
            total = tf.reduce_sum(grads[0]) if second else None
        if second:
            return outer.gradient(total, x, unconnected_gradients=zero)
        return (loss, tuple(grads)) if kind == "value_and_grad" else (loss, grads[0])
