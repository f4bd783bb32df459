"""The fused loss and gradient of one call: the program for small inputs, or for its layout.

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> ops = prepare("logits", tf.zeros((100, 100)), tf.ones((100, 100)), weight=None,
...               pos_weight=None, mask=None)
>>> loss, grad = loss_and_grad(ops, eps=0.0, reduction="mean", grad=True)
>>> round(float(loss), 4), grad.shape.as_list(), round(float(grad[0, 0]) * 10000, 4)
(0.6931, [100, 100], -0.5)
"""

from __future__ import annotations

import tensorflow as tf

from . import programs, small
from .canonical import Canonical
from .compensated import Smoothing
from .layout import runs_on_cpu
from .operands import Operands
from .programs import build_fused, compiled, denominator


def loss_and_grad(ops: Operands, *, eps: float, reduction: str,
                  grad: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the reduced loss, d loss / d logits or None), in the logits' dtype and shape."""
    if small.is_small(ops):
        return small.loss_and_grad(ops, eps=eps, reduction=reduction, grad=grad)
    return _large(ops, eps, reduction, grad)


def _large(ops: Operands, eps: float, reduction: str,
           grad: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    call = Canonical.of(ops, chunked=runs_on_cpu(ops.inputs))
    layout = call.layout
    reduced, smoothing = reduction != "none", eps != 0.0
    chunk = programs.CHUNK_ELEMENTS if layout.chunked else None
    program = compiled(("fused", layout, reduced, grad, smoothing, chunk),
                       lambda: build_fused(layout, reduced, grad, smoothing))
    extras = [denominator(reduction, ops)] if reduced else []
    if smoothing:
        work = tf.as_dtype(layout.dtype)
        extras.append(tf.constant(Smoothing.values(eps, work), work))
    out = program(*call.args, *extras)
    loss = out[0] if not reduced else tf.cast(out[0], call.dtype)
    return (call.restore(loss) if not reduced else loss,
            call.restore(out[-1]) if grad else None)
