"""The backward step of a loss whose gradients its forward computed: upstream times saved.

It multiplies a saved gradient by the upstream gradient, keeping results below
the smallest normal number that TensorFlow and XLA on CPU would flush
(``underflow.scaled_product``), and sums it over the axes along which its
operand was broadcast (reduction "none" with a broadcast weight or
pos_weight). Large inputs take one compiled program per dtype, ranks and
broadcast pattern; small ones, a few TensorFlow operations.

>>> import tensorflow as tf
>>> saved = tf.constant([3.7e-44, 0.25])
>>> upstream_times(saved, tf.constant(1.0), saved).numpy().tolist() == saved.numpy().tolist()
True
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from . import small
from .layout import Pattern, pattern_of
from .pairs import zero_safe
from .programs import compiled
from .underflow import UNDERFLOW, scaled_product

def _sum_axes(rank: int, pattern: Pattern) -> list[int]:
    """The axes of a full-shape gradient to sum for an operand of ``pattern``."""
    lead = rank - len(pattern)
    return list(range(lead)) + [lead + i for i, spans in enumerate(pattern) if not spans]


def _product(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor) -> tf.Tensor:
    """upstream * saved, summed to ``operand``'s shape."""
    if saved.dtype.name in UNDERFLOW:
        product = scaled_product(saved, upstream)
    else:
        product = zero_safe(upstream, saved)
    rank, pattern = saved.shape.rank, pattern_of(operand)
    axes = _sum_axes(rank, pattern) if rank > len(pattern) or not all(pattern) else []
    if axes:
        product = tf.reduce_sum(product, axis=axes)
    return tf.reshape(product, tf.shape(operand))


def _build(dtype: tf.DType, rank: int, upstream_rank: int,
           pattern: Pattern) -> tuple[Callable[..., tf.Tensor], list[tf.TensorSpec]]:
    signature = [tf.TensorSpec([None] * rank, dtype), tf.TensorSpec([None] * upstream_rank, dtype),
                 tf.TensorSpec([None if p else 1 for p in pattern], dtype)]
    return _product, signature


def upstream_times(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor) -> tf.Tensor:
    """upstream * saved in ``operand``'s shape (summed over its broadcast axes if ``saved`` has
    the full shape), zero where upstream is 0."""
    upstream = tf.cast(upstream, saved.dtype)
    size = saved.shape.num_elements()
    if size is not None and size <= small.SMALL:  # a few ops cost less than a compilation
        return _product(saved, upstream, operand)
    dtype, rank, upstream_rank = saved.dtype, saved.shape.rank, upstream.shape.rank
    pattern = pattern_of(operand)
    program = compiled(("backward", dtype.name, rank, upstream_rank, pattern),
                       lambda: _build(dtype, rank, upstream_rank, pattern))
    return program(saved, upstream, operand)
