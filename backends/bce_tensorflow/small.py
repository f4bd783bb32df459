"""Small inputs: one compiled program for every shape and option, behind a light front.

An XLA compilation costs a few tenths of a second per program and shape, and a
small input's call is dominated by fixed costs anyway. So up to ``SMALL``
elements every call runs one of two programs per working dtype, reduced or
per element, which always computes the gradient too (a call that does not ask
for it costs little more, and needs no program of its own). A front (a plain
``tf.function`` of operands of any shape, traced once per dtype and
reduction) broadcasts every operand to the logits' shape (an absent weight,
pos_weight or mask is passed as 1, 1 and True), flattens them and pads them to
a power of two, calls the program, and cuts its outputs back to the logits'
shape and dtype. A handful of traces and compilations then serve every small
call, and an eager call is one function call rather than a dozen eager
operations.

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> ops = prepare("logits", tf.constant([[0.0], [2.0]]), tf.constant([[1.0], [0.0]]),
...               weight=None, pos_weight=None, mask=None)
>>> is_small(ops), bucket(2), bucket(1000)
(True, 8, 1024)
>>> loss, grad = loss_and_grad(ops, eps=0.0, reduction="sum", grad=True)
>>> round(float(loss), 4), [round(float(g), 4) for g in tf.reshape(grad, [-1])]
(2.8201, [-0.5, 0.8808])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from .canonical import working_dtype
from .compensated import Smoothing
from .layout import Layout
from .operands import Operands
from .programs import build_fused, compiled, denominator

#: Inputs of up to this many elements take the programs of small inputs.
SMALL = 1 << 12
#: The smallest padded size.
_MIN_SIZE = 8


def is_small(ops: Operands) -> bool:
    """Whether the logits' size is known and at most ``SMALL``."""
    size = ops.inputs.shape.num_elements()
    return size is not None and size <= SMALL


def bucket(size: int) -> int:
    """The padded size of ``size`` elements: a power of two, at least ``_MIN_SIZE``."""
    return max(_MIN_SIZE, 1 << max(size - 1, 0).bit_length())


def _build_front(dtype: tf.DType,
                 reduced: bool) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    work = working_dtype(dtype)
    padded = Layout(work.name, 1, (True,), (True,), (True,), chunked=False, padded=True)

    def run(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor, q: tf.Tensor, m: tf.Tensor,
            size: tf.Tensor, *extras: tf.Tensor) -> tuple[tf.Tensor, ...]:
        shape, count = tf.shape(x), tf.size(x)

        def flat(value: tf.Tensor) -> tf.Tensor:
            if value.dtype not in (work, tf.bool):
                value = tf.cast(value, work)
            # Padded elements are left out by the program (``valid``), whatever their values.
            return tf.pad(tf.reshape(tf.broadcast_to(value, shape), [-1]), [[0, size - count]])

        program = compiled(("fused", padded, reduced, True, True, None),
                           lambda: build_fused(padded, reduced, True, True))
        loss, grad = program(*[flat(t) for t in (x, y, w, q, m)], count, *extras)

        def restore(value: tf.Tensor, elementwise: bool = True) -> tf.Tensor:
            if elementwise:
                value = tf.reshape(value[:count], shape)
            return value if value.dtype == dtype else tf.cast(value, dtype)

        return restore(loss, elementwise=not reduced), restore(grad)

    # Any rank and shape: one trace serves every layout of the operands.
    signature = [tf.TensorSpec(None, dtype)] * 4 + [tf.TensorSpec(None, tf.bool),
                                                    tf.TensorSpec([], tf.int32)]
    if reduced:
        signature.append(tf.TensorSpec([], tf.float64))
    signature.append(tf.TensorSpec([4], work))
    return run, signature


def loss_and_grad(ops: Operands, *, eps: float, reduction: str,
                  grad: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the reduced loss, d loss / d logits or None) of a small input."""
    dtype = ops.inputs.dtype
    reduced = reduction != "none"
    # The gradient is always computed: one front and one program serve both kinds of call.
    front = compiled(("small", dtype.name, reduced), lambda: _build_front(dtype, reduced),
                     jit=False)
    work = working_dtype(dtype)
    one = tf.constant(1, dtype)
    operands = [ops.inputs, ops.targets, one if ops.weight is None else ops.weight,
                one if ops.pos_weight is None else ops.pos_weight,
                tf.constant(True) if ops.mask is None else ops.mask]
    extras = [tf.constant(bucket(ops.inputs.shape.num_elements()), tf.int32)]
    if reduced:
        extras.append(denominator(reduction, ops))
    extras.append(tf.constant(Smoothing.values(eps, work), work))  # one program for every eps
    loss, gradient = front(*operands, *extras)
    return loss, (gradient if grad else None)
