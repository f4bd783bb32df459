"""A large input's operands in the few forms the compiled programs are traced for.

Each distinct program costs a trace, so calls are brought to a canonical form
first, outside the programs:

- float16 and bfloat16 operands are computed in float32 (as the spec says),
  so they share float32's programs; results are rounded once on the way back;
- operands that all have the logits' full shape or a single element are
  flattened to one axis, whatever the logits' rank.

(Small inputs have their own, further canonical form: ``small``.)

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> ops = prepare("logits", tf.zeros((300, 50), tf.float16), tf.zeros((300, 50), tf.float16),
...               weight=tf.ones((), tf.float16), pos_weight=None, mask=None)
>>> call = Canonical.of(ops, chunked=True)
>>> call.layout.dtype, call.layout.weight, [a.shape.as_list() for a in call.args]
('float32', (), [[15000], [15000], []])
>>> call.restore(call.args[0]).shape.as_list(), call.restore(call.args[0]).dtype.name
([300, 50], 'float16')
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from .layout import Layout, pattern_of
from .operands import Operands

def working_dtype(dtype: tf.DType) -> tf.DType:
    """float64 stays float64; float16, bfloat16 and float32 are computed in float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


@dataclass(frozen=True)
class Canonical:
    """The operands as a program takes them, and how to turn its outputs back."""

    layout: Layout
    #: logits, targets, then the optional operands that are given.
    args: list[tf.Tensor]
    #: The logits' dtype and shape, which results get back.
    dtype: tf.DType
    shape: tf.Tensor | tuple[int, ...]

    @classmethod
    def of(cls, ops: Operands, *, chunked: bool) -> Canonical:
        x = ops.inputs
        work = working_dtype(x.dtype)
        given = [(name, t) for name, t in (("weight", ops.weight), ("pos_weight", ops.pos_weight),
                                          ("mask", ops.mask)) if t is not None]
        rank = x.shape.rank
        patterns = {name: pattern_of(t) for name, t in given}
        probe = Layout(work.name, rank, patterns.get("weight"), patterns.get("pos_weight"),
                       patterns.get("mask"), chunked, False)
        shape = tuple(x.shape.as_list()) if x.shape.is_fully_defined() else tf.shape(x)
        args = [x, ops.targets] + [t for _, t in given]
        args = [t if t.dtype in (work, tf.bool) else tf.cast(t, work) for t in args]
        if probe.flat and rank != 1:
            # Full-shape operands become one axis; single-element ones become scalars.
            args = [tf.reshape(t, [-1]) if i < 2 or probe.spans(patterns[given[i - 2][0]])
                    else tf.reshape(t, []) for i, t in enumerate(args)]
            patterns = {name: pattern_of(t) for (name, _), t in zip(given, args[2:])}
            rank = 1
        layout = Layout(work.name, rank, patterns.get("weight"), patterns.get("pos_weight"),
                        patterns.get("mask"), chunked, False)
        return cls(layout, args, x.dtype, shape)

    def restore(self, result: tf.Tensor) -> tf.Tensor:
        """A per-element output in the logits' shape and dtype."""
        if not (isinstance(self.shape, tuple) and tuple(result.shape) == self.shape):
            result = tf.reshape(result, self.shape)
        return result if result.dtype == self.dtype else tf.cast(result, self.dtype)

