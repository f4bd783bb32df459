"""An elementwise pass over large inputs a chunk of rows at a time, inside an XLA program.

XLA on CPU writes the values the loss and its gradient share to input-sized
buffers and reads them back; ``over_rows`` runs the function on a chunk of rows
at a time in a loop instead, writing outputs into place and summing as it goes.
The last chunk ends at the last row and overlaps the one before (its rows already
counted are left out of the sums), so one copy of the program serves every size.

>>> import tensorflow as tf
>>> run = tf.function(lambda x: over_rows(lambda c: ([c], [2 * c]), [x], [True], 1,
...                                     [tf.float32], 4), jit_compile=True)
>>> sums, (doubled,) = run(tf.range(10.0))
>>> float(sums[0]), doubled.numpy().tolist()[-3:]
(45.0, [14.0, 16.0, 18.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from bce_core.compensated import two_sum


def _take(value: tf.Tensor | None, start: tf.Tensor, rows: tf.Tensor) -> tf.Tensor | None:
    """Rows [start, start + rows) of ``value``."""
    if value is None:
        return None
    rest = tf.shape(value)[1:]
    begin = tf.concat([tf.reshape(start, [1]), tf.zeros_like(rest)], 0)
    return tf.slice(value, begin, tf.concat([tf.reshape(rows, [1]), rest], 0))


def _put(buffer: tf.Tensor, update: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """``buffer`` with ``update`` written at row ``start`` (in place under XLA)."""
    begin = tf.concat([tf.reshape(start, [1]), tf.zeros([tf.rank(buffer) - 1], tf.int32)], 0)
    return xla.dynamic_update_slice(buffer, update, begin)


_PARTIAL = 256  # elements per partial sum within a chunk


def chunk_sum(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """The sum of ``values`` in ``dtype``: partial sums of ``_PARTIAL`` elements in the values'
    own dtype (fast, and each within a few units of roundoff), then their sum in ``dtype``."""
    flat = tf.reshape(values, [-1])
    # The elements past the last full block are summed apart, in ``dtype``: padding the values
    # instead would make the pad the root of the program's elementwise pass, which XLA on CPU
    # then emits unvectorised.
    full = tf.size(flat) - tf.size(flat) % _PARTIAL
    partial = tf.reduce_sum(tf.reshape(flat[:full], [-1, _PARTIAL]), axis=1)
    return tf.reduce_sum(tf.cast(partial, dtype)) + tf.reduce_sum(tf.cast(flat[full:], dtype))


def over_rows(
    fn: Callable[..., tuple[list, list]],
    operands: Sequence[tf.Tensor | None],
    sliced: Sequence[bool],
    n_sums: int,
    output_dtypes: Sequence[tf.DType],
    chunk_elements: int,
    sum_dtype: tf.DType | None = None,
) -> tuple[list, list]:
    """(sums, outputs) of ``fn`` over the rows of ``operands[0]`` (at least 1-d).

    ``fn(*chunk_operands)`` returns ``n_sums`` arrays whose elements are summed, and arrays
    of the chunk's shape (of ``output_dtypes``), each assembled into a full-size output. Operands
    marked ``sliced`` are cut into the same rows as the first; the others (broadcast along
    the rows, or None) are passed whole. Sums are accumulated in ``sum_dtype`` (default:
    the first operand's dtype) as a pair, so that adding many chunk sums loses nothing.
    """
    first = operands[0]
    sum_dtype = sum_dtype or first.dtype
    shape = tf.shape(first)
    total_rows = shape[0]
    inner = tf.reduce_prod(shape[1:])
    rows = tf.minimum(tf.maximum(chunk_elements // tf.maximum(inner, 1), 1), total_rows)
    count = (total_rows + rows - 1) // tf.maximum(rows, 1)

    def chunk(i: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        fresh = i * rows  # the first row not yet counted
        start = tf.minimum(fresh, total_rows - rows)
        parts = [_take(v, start, rows) if cut else v for v, cut in zip(operands, sliced)]
        sums, outputs = fn(*parts)
        counted = tf.reshape(
            tf.range(rows) + start >= fresh,
            tf.concat([[rows], tf.ones([tf.rank(first) - 1], tf.int32)], 0),
        )
        totals = [chunk_sum(tf.where(counted, s, tf.zeros_like(s)), sum_dtype) for s in sums]
        return start, totals, outputs

    buffers = [tf.zeros(shape, dtype) for dtype in output_dtypes]
    zero = tf.zeros((), sum_dtype)

    def body(
        i: tf.Tensor, his: list[tf.Tensor], los: list[tf.Tensor], outs: list[tf.Tensor]
    ) -> tuple:
        start, totals, outputs = chunk(i)
        pairs = [two_sum(hi, t) for hi, t in zip(his, totals)]
        return (
            i + 1,
            [p.hi for p in pairs],
            [lo + p.lo for lo, p in zip(los, pairs)],
            [_put(buffer, out, start) for buffer, out in zip(outs, outputs)],
        )

    _, his, los, outs = tf.while_loop(
        lambda i, *_: i < count, body, (tf.constant(0), [zero] * n_sums, [zero] * n_sums, buffers)
    )
    return [hi + lo for hi, lo in zip(his, los)], list(outs)
