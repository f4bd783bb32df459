"""Small inputs: one compiled program for every shape and option, behind a light front.

An XLA compilation costs a few tenths of a second per program and shape, and a
small input's call is dominated by fixed costs anyway. So up to ``SMALL``
elements every call runs one of two programs per working dtype, reduced or
per element, which always computes the gradient too (a call that does not ask
for it costs little more, and needs no program of its own). A front (a plain
``tf.function``, traced once per operand layout and reduction) broadcasts
every operand to the logits' shape (an absent weight, pos_weight or mask as 1,
1 and True), flattens them and pads them to a power of two, calls the
program, and cuts its outputs back to the logits' shape and dtype. A handful
of compilations then serve every small call, and an eager call is one
function call rather than a dozen eager operations.

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
from .layout import Layout, pattern_of
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


def _original_layout(ops: Operands) -> Layout:
    return Layout(ops.inputs.dtype.name, ops.inputs.shape.rank, pattern_of(ops.weight),
                  pattern_of(ops.pos_weight), pattern_of(ops.mask), False, False)


def _build_front(layout: Layout,
                 reduced: bool) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    dtype = tf.as_dtype(layout.dtype)
    work = working_dtype(dtype)
    names = ["logits", "targets", *(name for name, _ in layout.optional)]
    padded = Layout(work.name, 1, (True,), (True,), (True,), chunked=False, padded=True)

    def run(*args: tf.Tensor) -> tuple[tf.Tensor, ...]:
        given = dict(zip(names, args))
        size, extras = args[len(names)], list(args[len(names) + 1:])
        x = given["logits"]
        shape, count = tf.shape(x), tf.size(x)

        def flat(name: str, absent: float | bool) -> tf.Tensor:
            value = given.get(name)
            if value is None:
                return tf.fill([size], tf.constant(absent, tf.bool if name == "mask" else work))
            if value.dtype not in (work, tf.bool):
                value = tf.cast(value, work)
            return tf.pad(tf.reshape(tf.broadcast_to(value, shape), [-1]), [[0, size - count]])

        program = compiled(("fused", padded, reduced, True, True, None),
                           lambda: build_fused(padded, reduced, True, True))
        loss, grad = program(flat("logits", 0.0), flat("targets", 0.0), flat("weight", 1.0),
                             flat("pos_weight", 1.0), flat("mask", True), count, *extras)

        def restore(value: tf.Tensor, elementwise: bool = True) -> tf.Tensor:
            if elementwise:
                value = tf.reshape(value[:count], shape)
            return value if value.dtype == dtype else tf.cast(value, dtype)

        return restore(loss, elementwise=not reduced), restore(grad)

    signature = layout.signature() + [tf.TensorSpec([], tf.int32)]
    if reduced:
        signature.append(tf.TensorSpec([], tf.float64))
    signature.append(tf.TensorSpec([4], work))
    return run, signature


def loss_and_grad(ops: Operands, *, eps: float, reduction: str,
                  grad: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the reduced loss, d loss / d logits or None) of a small input."""
    layout = _original_layout(ops)
    reduced = reduction != "none"
    # The gradient is always computed: one front and one program serve both kinds of call.
    front = compiled(("small", layout, reduced), lambda: _build_front(layout, reduced),
                     jit=False)
    work = working_dtype(ops.inputs.dtype)
    extras = [tf.constant(bucket(ops.inputs.shape.num_elements()), tf.int32)]
    if reduced:
        extras.append(denominator(reduction, ops))
    extras.append(tf.constant(Smoothing.values(eps, work), work))  # one program for every eps
    loss, gradient = front(*[t for t in ops[:5] if t is not None], *extras)
    return loss, (gradient if grad else None)
