"""The fused loss from logits and its gradient as compiled XLA programs.

A program computes the reduced loss and, if asked, its gradient with respect
to the logits in one pass over the elements that shares one exponential
between them (``compensated``), in float32 for float32 and the half dtypes and
in float64 for float64, rounding each result once. On CPU the pass runs a
chunk of rows at a time (``chunks``).

Each program is a ``tf.function(jit_compile=True)`` with a shape-polymorphic
input signature, traced once per ``Layout`` and a few static choices (reduced
or per element, with or without the gradient, with or without label
smoothing; the programs of small inputs always compute the gradient); the
smoothing constants and the reduction's denominator are runtime arguments. A call with another batch size, eps or reduction therefore
runs the same trace, and XLA compiles each new shape once. Inside a caller's
``tf.function`` a program is one call op; inside a caller's XLA cluster it is
inlined. ``fast`` chooses the program for a call.

>>> import tensorflow as tf
>>> layout = Layout("float32", 1, None, None, None, chunked=True, padded=False)
>>> program = compiled(("doc", layout), lambda: build_fused(layout, True, True, False))
>>> x, y = tf.constant([0.0, 2.0]), tf.constant([1.0, 0.0])
>>> loss, grad = program(x, y, tf.constant(1.0, tf.float64))  # reduction "sum": denominator 1
>>> round(float(loss), 4), [round(g, 4) for g in grad.numpy().tolist()]
(2.8201, [-0.5, 0.8808])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from bce_core.spec import check_batch_mean

from .chunks import chunk_sum, over_rows
from .compensated import Coefficients, LogitParts, Smoothing, far_tail
from .layout import Layout
from .operands import Operands
from .precision import round_to

#: Elements per chunk on CPU: large enough that the loop's own cost is small, small enough that
#: the chunk's intermediates stay in cache.
CHUNK_ELEMENTS = 1 << 17

_programs: dict[tuple[Any, ...], Callable[..., Any]] = {}
_lock = threading.RLock()  # a program may trace another inside its own trace


def compiled(key: tuple[Any, ...], build: Callable[[], tuple[Callable[..., Any], list]],
             *, jit: bool = True) -> Callable[..., Any]:
    """The program for ``key`` (compiled by XLA if ``jit``), traced on first use; ``build()``
    gives its Python function and input signature."""
    program = _programs.get(key)
    if program is None:
        with _lock:
            program = _programs.get(key)
            if program is None:
                function, signature = build()
                # Traced here, once: calling the concrete function skips tf.function's dispatch.
                program = tf.function(function, jit_compile=jit, autograph=False,
                                      input_signature=signature).get_concrete_function()
                _programs[key] = program
    return program


def denominator(reduction: str, ops: Operands) -> tf.Tensor | None:
    """The reduction's denominator as a float64 scalar (None for "none"); 0 where no element
    counts, for which the loss and its gradients are 0."""
    if reduction == "none":
        return None
    x = ops.inputs
    size = x.shape.num_elements()
    if reduction == "sum":
        return tf.constant(1.0, tf.float64)
    if reduction == "batch_mean":
        check_batch_mean(tuple(x.shape))
        rows = x.shape[0]
        return tf.constant(float(rows), tf.float64) if rows is not None else tf.cast(
            tf.shape(x)[0], tf.float64)
    keep = None if ops.mask is None else tf.broadcast_to(ops.mask, tf.shape(x))
    if reduction == "mean" or ops.weight is None:
        if keep is not None:
            return tf.reduce_sum(tf.cast(keep, tf.float64))
        return (tf.constant(float(size), tf.float64) if size is not None
                else tf.cast(tf.size(x), tf.float64))
    weights = tf.broadcast_to(tf.cast(ops.weight, tf.float64), tf.shape(x))
    if keep is not None:
        weights = tf.where(keep, weights, tf.zeros_like(weights))
    return tf.reduce_sum(weights)


def build_fused(layout: Layout, reduced: bool, grad: bool,
                smoothing: bool) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    """The program's function and input signature: the operands of ``layout``, then ``valid``
    (the number of real elements, if padded), the denominator (if ``reduced``) and the four
    smoothing constants (if ``smoothing``). It returns the reduced loss or the element losses,
    then the gradient if ``grad``, in the working dtype."""
    work = tf.as_dtype(layout.dtype)
    names = ["logits", "targets", *(name for name, _ in layout.optional)]
    signature = layout.signature()
    extras = []
    if layout.padded:
        extras.append(("valid", tf.TensorSpec([], tf.int32)))
    if reduced:
        extras.append(("denominator", tf.TensorSpec([], tf.float64)))
    if smoothing:
        extras.append(("smoothing", tf.TensorSpec([4], work)))

    def elements(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None,
                 keep: tf.Tensor | None, scale: tf.Tensor | None,
                 constants: Smoothing | None) -> tuple[list, list]:
        shape = tf.shape(x)

        def full(value: tf.Tensor | None) -> tf.Tensor | None:
            return None if value is None else tf.broadcast_to(value, shape)

        y, w, q, keep = full(y), full(w), full(q), full(keep)

        def compute(tails: bool) -> tuple[list, list]:
            parts = LogitParts.of(x, tails=tails)
            coefficients = Coefficients.of(y, q, constants)
            loss = parts.loss(coefficients, w)
            if keep is not None:
                loss = tf.where(keep, loss, tf.zeros_like(loss))
            sums, outputs = ([loss], []) if reduced else ([], [loss])
            if grad:
                slope = parts.slope(coefficients, w)
                if scale is not None:
                    slope = slope / scale
                if keep is not None:
                    slope = tf.where(keep, slope, tf.zeros_like(slope))
                outputs.append(slope)
            return sums, outputs

        if layout.padded:  # small inputs: one variant, for a shorter compilation
            return compute(True)
        # Typical logits have no element in the far tail: XLA then runs the lighter variant.
        return tf.cond(far_tail(x), lambda: compute(True), lambda: compute(False))

    def run(*args: tf.Tensor) -> tuple[tf.Tensor, ...]:
        given = dict(zip(names + [name for name, _ in extras], args))
        x, keep = given["logits"], given.get("mask")
        if layout.padded:  # elements past the real ones do not count
            rows = tf.range(tf.shape(x)[0]) < given["valid"]
            rows = tf.reshape(rows, tf.concat([[-1], tf.ones([layout.rank - 1], tf.int32)], 0))
            keep = rows if keep is None else tf.logical_and(keep, rows)
        scale, denominator = None, given.get("denominator")
        if denominator is not None:
            empty = tf.equal(denominator, 0)  # then no element counts: loss and gradient are 0
            safe = tf.where(empty, tf.ones_like(denominator), denominator)
            scale = tf.cast(safe, work)
            counts = tf.logical_not(empty)
            keep = counts if keep is None else tf.logical_and(keep, counts)
        constants = Smoothing.of(given["smoothing"]) if smoothing else None
        operands = [x, given["targets"], given.get("weight"), given.get("pos_weight"), keep]

        def chunk(*c: tf.Tensor | None) -> tuple[list, list]:
            return elements(*c, scale, constants)

        if layout.chunked:
            # Without a mask, ``keep`` is at most a scalar (from the denominator).
            cut = [True, True] + [p is not None and layout.sliced(p) for p in (
                layout.weight, layout.pos_weight, layout.mask)]
            sums, outputs = over_rows(chunk, operands, cut, int(reduced),
                                      [work] * (int(not reduced) + int(grad)), CHUNK_ELEMENTS,
                                      tf.float64)
        else:
            sums, outputs = chunk(*operands)
            # Small inputs: a float64 sum of every element costs nothing next to the call.
            sums = [tf.reduce_sum(tf.cast(s, tf.float64)) if layout.padded
                    else chunk_sum(s, tf.float64) for s in sums]
        if not reduced:
            return tuple(outputs)
        return (round_to(sums[0] / tf.cast(safe, tf.float64), work), *outputs)

    return run, signature + [spec for _, spec in extras]

