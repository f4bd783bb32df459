"""Running a program over large inputs one chunk of rows at a time, on CPU.

XLA on CPU writes out every intermediate array that two of its loops share (one
exponential feeding both the loss and its gradient) and every array a reduction
reads (its reductions fuse only a few simple operations; the kernels' selects and
bit operations are not among them). At 10 million float32 elements each such
array is 40 MB, freshly mapped at every call, and writing one costs about as much
as computing the loss (measured on two cores: about 2 ns per element to write,
2 to 3 to compute the loss).

``by_chunks`` runs a function of the operands' rows on one chunk of rows at a
time in a loop, so intermediates exist for one chunk only (a megabyte, reused and
cached); one pass reads the inputs and writes the outputs. Each output either has
the rows (its leading axis is the operands' leading axis: the chunks' values are
placed one after another) or is a sum over them (a reduced loss, the gradient of a
weight broadcast along the rows: the chunks' values are added). Other platforms
fuse all this themselves and get the function on the whole arrays; so do inputs
of fewer than ``MIN_ELEMENTS`` elements or two chunks.

>>> import jax.numpy as jnp
>>> x = (jnp.arange(MIN_ELEMENTS + 6) % 7).astype(jnp.float32).reshape(-1, 2)
>>> w = jnp.array([1.0, 0.5], jnp.float32)
>>> def f(x, w):
...     return {"total": jnp.sum(x * w), "twice": 2 * x}
>>> out = by_chunks(f, (x, w), x.shape, {"total": (), "twice": x.shape})
>>> float(out["total"]) == float(jnp.sum(x * w)), bool((out["twice"] == 2 * x).all())
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from bce_core.compensated import Pair, two_sum

from .operands import PRIMITIVES

Array = jax.Array
Outputs = dict[str, Array]

#: Elements per chunk: large enough that the loop's own cost (microseconds a turn) is
#: small, small enough that a chunk's intermediates stay in the processor's caches.
CHUNK_ELEMENTS = 1 << 18
#: Inputs smaller than this are computed whole: their intermediates (8 MB or less in float32)
#: are reused from the allocator's free memory rather than mapped anew at each call, and
#: writing them costs less than the loop (measured at 1 and 2 million elements).
MIN_ELEMENTS = 1 << 21


def chunk_rows(shape: tuple[int, ...]) -> int | None:
    """Rows per chunk for inputs of ``shape``; None when they are computed whole (too few
    elements, or fewer than two chunks along the leading axis)."""
    if not shape or math.prod(shape) < MIN_ELEMENTS:
        return None
    rows = max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    return rows if shape[0] >= 2 * rows else None


def has_rows(value_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether an array of ``value_shape`` runs along the leading axis of ``shape`` (rather
    than being broadcast along it)."""
    return len(value_shape) == len(shape) and value_shape[0] == shape[0]


def _rows(
    value: Array | None, shape: tuple[int, ...], start: int | Array, size: int
) -> Array | None:
    """Rows [start, start + size) of an operand that has rows; others (and None) whole."""
    if value is None or not has_rows(value.shape, shape):
        return value
    if isinstance(start, int):
        return lax.slice_in_dim(value, start, start + size, axis=0)
    return lax.dynamic_slice_in_dim(value, start, size, axis=0)


def _looped(
    fn: Callable[..., Outputs],
    shape: tuple[int, ...],
    rows: int,
    out_shapes: Mapping[str, tuple[int, ...]],
    *operands: Array | None,
) -> Outputs:
    """The chunk loop over whole chunks, then the rows left over."""
    count = shape[0] // rows
    dtype = operands[0].dtype
    placed = {k for k, s in out_shapes.items() if has_rows(s, shape)}

    def add(into: tuple[Outputs, Outputs], values: Outputs, start: int | Array) -> tuple:
        arrays, low = dict(into[0]), dict(into[1])
        for key, value in values.items():
            if key in placed:
                arrays[key] = lax.dynamic_update_slice_in_dim(arrays[key], value, start, axis=0)
            else:  # running sums as pairs: tens of chunk sums add without rounding away
                total = two_sum(arrays[key], value)
                arrays[key], low[key] = total.hi, low[key] + total.lo
        return arrays, low

    def chunk(start: int | Array, size: int) -> Outputs:
        return fn(*(_rows(v, shape, start, size) for v in operands))

    def body(i: Array, carry: tuple) -> tuple:
        return add(carry, chunk(i * rows, rows), i * rows)

    start = (
        {k: jnp.zeros(s, dtype) for k, s in out_shapes.items()},
        {k: jnp.zeros(s, dtype) for k, s in out_shapes.items() if k not in placed},
    )
    carry = lax.fori_loop(0, count, body, start)
    if count * rows < shape[0]:
        carry = add(carry, chunk(count * rows, shape[0] - count * rows), count * rows)
    arrays, low = carry
    return {k: v if k in placed else Pair(v, low[k]).value(PRIMITIVES) for k, v in arrays.items()}


def by_chunks(
    fn: Callable[..., Outputs],
    operands: Sequence[Array | None],
    shape: tuple[int, ...],
    out_shapes: Mapping[str, tuple[int, ...]],
) -> Outputs:
    """``fn(*operands)``, a chunk of rows at a time on CPU.

    ``fn`` maps operands that broadcast NumPy-style to ``shape`` (None allowed; the first
    of the full shape) to a dict of arrays of the first operand's dtype: for an output
    whose final shape (``out_shapes``) has the rows, its values over the operands' rows;
    for any other output, its sum over them.
    """
    rows = chunk_rows(shape)
    if rows is None:
        return fn(*operands)
    return lax.platform_dependent(
        *operands, cpu=partial(_looped, fn, shape, rows, out_shapes), default=fn
    )
