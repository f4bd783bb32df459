"""The one-pass path: the loss from logits and its gradient as compiled XLA programs.

One pass over the elements (on the CPU a chunk at a time) gives the reduced loss and the
logits' gradient: in single arithmetic for float32 (``kernels.plain_loss_and_slope``), in
``bce_core.compensated``'s pairs for float64. A program is traced once per ``Layout`` with a
shape-free signature; eps and the denominator are runtime inputs. Up to ``SMALL`` elements,
operands are flattened and padded to a power of two by a front traced once per dtype.

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> ops = prepare("logits", tf.constant([[0.0], [2.0]]), tf.constant([[1.0], [0.0]]),
...               weight=None, pos_weight=None, mask=None)
>>> loss, grad = loss_and_grad(ops, eps=0.0, reduction="sum", grad=True)
>>> round(float(loss), 4), [round(float(g), 4) for g in tf.reshape(grad, [-1])]
(2.8201, [-0.5, 0.8808])
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

from bce_core import rules
from bce_core.compensated import UNDERFLOW, Coefficients, LogitParts, Smoothing

from .chunks import chunk_sum, over_rows
from .kernels import plain_loss_and_slope
from .operands import OPS, PRIMITIVES, Operands, dynamic_shape, runs_on_cpu, working_dtype

#: Elements per chunk on CPU: the loop's own cost is small, the intermediates stay in cache.
CHUNK_ELEMENTS = 1 << 17
SMALL = 1 << 12  # inputs of up to this many elements take the programs of small inputs
_MIN_SIZE = 8
OPTIONAL = ("weight", "pos_weight", "mask")

_programs: dict[tuple[Any, ...], Callable[..., Any]] = {}
_lock = threading.RLock()  # a program may trace another inside its own trace
_FLOAT64 = tf.constant(0.0, tf.float64)  # the dtype of counts, for ``rules.denominator``


def compiled(
    key: tuple[Any, ...], build: Callable[[], tuple[Callable[..., Any], list]], *, jit: bool = True
) -> Callable[..., Any]:
    """The program for ``key`` (compiled by XLA if ``jit``), traced on first use; ``build()``
    gives its Python function and input signature."""
    program = _programs.get(key)
    if program is None:
        with _lock:
            if key not in _programs:
                function, signature = build()
                # Traced here, once: calling the concrete function skips tf.function's dispatch.
                _programs[key] = tf.function(
                    function, jit_compile=jit, autograph=False, input_signature=signature
                ).get_concrete_function()
            program = _programs[key]
    return program


#: Per axis of an operand (right-aligned with the logits): True where it spans the logits' axis,
#: False where it has size 1 and is broadcast.
Pattern = tuple[bool, ...]


def pattern_of(tensor: tf.Tensor) -> Pattern:
    """The pattern of ``tensor``'s static shape (an unknown axis is taken as spanning)."""
    return tuple(d != 1 for d in tensor.shape.as_list())


@dataclass(frozen=True)
class Layout:
    """The static facts about one call's operands that a compiled program is specialised on:
    the working dtype, the rank and the ``Pattern`` of each optional operand given."""

    dtype: str
    rank: int
    #: (name, pattern) of the optional operands given (weight, pos_weight, mask), in order.
    optional: tuple[tuple[str, Pattern], ...]
    #: Work a chunk of rows at a time (on CPU, see ``chunks``).
    chunked: bool
    #: The leading axis is padded (a small input): a ``valid`` argument counts the real rows.
    padded: bool

    def sliced(self, pattern: Pattern | None) -> bool:
        """Whether an operand of ``pattern`` is cut into the same rows as the logits."""
        return pattern is not None and len(pattern) == self.rank > 0 and pattern[0]

    def signature(self) -> list[tf.TensorSpec]:
        """Input signature of the operands: logits, targets, then the optional operands."""
        dtype = tf.as_dtype(self.dtype)
        full = tf.TensorSpec([None] * self.rank, dtype)
        return [full, full] + [
            tf.TensorSpec([None if p else 1 for p in pattern], tf.bool if name == "mask" else dtype)
            for name, pattern in self.optional
        ]


def denominator(reduction: str, ops: Operands[tf.Tensor]) -> tf.Tensor | None:
    """``rules.denominator`` as a float64 scalar, a runtime input of the programs."""
    if reduction == "none":
        return None
    weight = None if ops.weight is None else tf.cast(ops.weight, tf.float64)
    by = rules.denominator(
        OPS, reduction, dynamic_shape(ops.inputs), keep=ops.mask, weight=weight, like=_FLOAT64
    )
    return constant(float(by), tf.float64) if isinstance(by, int) else tf.cast(by, tf.float64)


@functools.lru_cache(maxsize=256)
def _smoothing_values(eps: float, dtype: str) -> tuple[float, ...]:
    return tuple(Smoothing.values(eps, np.dtype(dtype)))


def _smoothing(eps: float, dtype: str) -> tf.Tensor:
    return constant(_smoothing_values(eps, dtype), dtype)


@functools.lru_cache(maxsize=512)
def _eager_constant(value: Any, dtype: str, device: str) -> tf.Tensor:
    with tf.device(device) if device else contextlib.nullcontext():
        return tf.constant(value, dtype)


def constant(value: Any, dtype: str | tf.DType) -> tf.Tensor:
    """``tf.constant(value, dtype)``; eagerly, made once per value, dtype and device (each new
    eager tensor costs a few microseconds, which an eager training step pays on every call).

    >>> constant(2, "int32") is constant(2, "int32")
    True
    """
    if not tf.executing_eagerly():
        return tf.constant(value, dtype)
    device = context.context().device_name or ""
    return _eager_constant(value, tf.as_dtype(dtype).name, device)


def build_fused(
    layout: Layout, reduced: bool, grad: bool, smoothing: bool
) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    """The program's function and signature: the operands of ``layout``, then ``valid`` (the
    count of real elements, if padded), the denominator and the smoothing constants (if
    ``reduced``, ``smoothing``); it returns the (reduced) loss, then the gradient if ``grad``."""
    work = tf.as_dtype(layout.dtype)
    extras = (
        ([("valid", tf.TensorSpec([], tf.int32))] if layout.padded else [])
        + ([("denominator", tf.TensorSpec([], tf.float64))] if reduced else [])
        + ([("smoothing", tf.TensorSpec([4], work))] if smoothing else [])
    )
    names = ["logits", "targets", *(name for name, _ in layout.optional), *(n for n, _ in extras)]
    threshold = UNDERFLOW[np.dtype(layout.dtype)].threshold
    # float32 meets the contract in single arithmetic; float64 keeps the compensated pairs.
    plain = layout.dtype == "float32"
    # A float64 sum of float64 losses may overflow where their mean does not: a second sum,
    # of the losses times 2**-shift, for ``rules.finish_total`` (the batch size is not static).
    shift = rules.overflow_shift(None)
    scaled = reduced and layout.dtype == "float64"

    def run(*args: tf.Tensor) -> tuple[tf.Tensor, ...]:
        given = dict(zip(names, args))
        x, keep, by = given["logits"], given.get("mask"), given.get("denominator")
        if layout.padded:  # elements past the real ones do not count
            rows = tf.range(tf.shape(x)[0]) < given["valid"]
            keep = rows if keep is None else tf.logical_and(keep, rows)
        factor = None if by is None else tf.cast(rules.divide_or_zero(OPS, by, by)[1], work)
        if by is not None and keep is None:  # no element counts where by is 0 (XLA fuses better)
            keep = tf.not_equal(by, 0)
        constants = Smoothing.of(given["smoothing"]) if smoothing else None
        operands = [x, given["targets"], given.get("weight"), given.get("pos_weight"), keep]

        def chunk(*values: tf.Tensor | None) -> tuple[list, list]:
            x, y, w, q, keep = (
                v if v is None or i == 0 else tf.broadcast_to(v, tf.shape(values[0]))
                for i, v in enumerate(values)
            )

            def compute(tails: bool) -> tuple[list, list]:
                if plain:
                    smoothed = None if constants is None else (constants.keep.hi, constants.half.hi)
                    loss, slope = plain_loss_and_slope(x, y, w, q, smoothed, tails=tails)
                else:
                    parts = LogitParts.of(PRIMITIVES, x, tails=tails)
                    coefficients = Coefficients.of(PRIMITIVES, y, q, constants)
                    loss = parts.loss(coefficients, w)
                    slope = parts.slope(coefficients, w) if grad else None
                out = [loss]
                if grad:
                    out.append(slope if factor is None else rules.zero_safe(OPS, factor, slope))
                if keep is not None:
                    out = [OPS.where(keep, v, 0.0) for v in out]
                if scaled:
                    return [out[0], out[0] * 2.0**-shift], out[1:]
                return (out[:1], out[1:]) if reduced else ([], out)

            if layout.padded or plain:  # small inputs: one variant, for a shorter compilation
                # (In single arithmetic the tails cost little; XLA would turn a conditional
                # of two light branches into a select computing both.)
                return compute(True)
            # Typical logits have no element in the far tail: XLA then runs the lighter variant.
            far = tf.reduce_any(tf.abs(x) >= tf.constant(threshold, work))
            return tf.cond(far, lambda: compute(True), lambda: compute(False))

        if layout.chunked:
            patterns = dict(layout.optional)
            cut = [True, True] + [layout.sliced(patterns.get(n)) for n in OPTIONAL]
            sums, outputs = over_rows(
                chunk,
                operands,
                cut,
                int(reduced) + int(scaled),
                [work] * (int(not reduced) + int(grad)),
                CHUNK_ELEMENTS,
                tf.float64,
            )
        else:
            sums, outputs = chunk(*operands)
            # Small inputs: a float64 sum of every element costs nothing next to the call.
            sums = [
                tf.reduce_sum(tf.cast(s, tf.float64)) if layout.padded else chunk_sum(s, tf.float64)
                for s in sums
            ]
        if not reduced:
            return tuple(outputs)
        quotient = rules.divide_or_zero(OPS, sums[0], by)[0]
        if scaled:
            quotient = rules.finish_total(
                OPS,
                sums[0],
                lambda: sums[1],
                lambda total: rules.divide_or_zero(OPS, total, by)[0],
                shift,
            )
        return (tf.cast(quotient, work), *outputs)

    return run, layout.signature() + [spec for _, spec in extras]


def bucket(size: int) -> int:
    """The padded size of ``size`` elements: a power of two, at least ``_MIN_SIZE``."""
    return max(_MIN_SIZE, 1 << max(size - 1, 0).bit_length())


def _build_front(
    dtype: tf.DType, reduced: bool, given: tuple[str, ...], smoothing: bool
) -> tuple[Callable[..., Any], list[tf.TensorSpec]]:
    """The front of small inputs with the optional operands ``given`` (of ``OPTIONAL``): the
    operands flattened and padded to the size bucket, then the padded program."""
    work = working_dtype(dtype)
    padded = Layout(work.name, 1, tuple((n, (True,)) for n in given), False, True)

    def run(x: tf.Tensor, y: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        optional, size, extras = rest[: len(given)], rest[len(given)], rest[len(given) + 1 :]
        shape, count = tf.shape(x), tf.size(x)

        def flat(value: tf.Tensor) -> tf.Tensor:
            if value.dtype not in (work, tf.bool):
                value = tf.cast(value, work)
            # Padded elements are left out by the program (``valid``), whatever their values.
            return tf.pad(tf.reshape(tf.broadcast_to(value, shape), [-1]), [[0, size - count]])

        program = compiled(
            ("fused", padded, reduced, True, smoothing, None),
            lambda: build_fused(padded, reduced, True, smoothing),
        )
        loss, grad = program(*[flat(t) for t in (x, y, *optional)], count, *extras)

        def restore(value: tf.Tensor, elementwise: bool = True) -> tf.Tensor:
            if elementwise:
                value = tf.reshape(value[:count], shape)
            return value if value.dtype == dtype else tf.cast(value, dtype)

        return restore(loss, elementwise=not reduced), restore(grad)

    # Any rank and shape: one trace serves every layout of the operands.
    signature = [tf.TensorSpec(None, dtype)] * 2 + [
        tf.TensorSpec(None, tf.bool if name == "mask" else dtype) for name in given
    ]
    signature.append(tf.TensorSpec([], tf.int32))
    signature += [tf.TensorSpec([], tf.float64)] * reduced
    return run, signature + [tf.TensorSpec([4], work)] * smoothing


def _small(ops: Operands[tf.Tensor], eps: float, reduction: str) -> tuple[tf.Tensor, tf.Tensor]:
    dtype = ops.inputs.dtype
    reduced, smoothing = reduction != "none", eps != 0.0
    given = tuple(
        (name, t)
        for name, t in zip(OPTIONAL, (ops.weight, ops.pos_weight, ops.mask))
        if t is not None
    )
    names = tuple(name for name, _ in given)
    # The gradient is always computed: one front and one program serve both kinds of call.
    front = compiled(
        ("small", dtype.name, reduced, names, smoothing),
        lambda: _build_front(dtype, reduced, names, smoothing),
        jit=False,
    )
    operands = [
        ops.inputs,
        ops.targets,
        *(t for _, t in given),
        constant(bucket(ops.inputs.shape.num_elements()), tf.int32),
    ]
    if reduced:
        operands.append(denominator(reduction, ops))
    if smoothing:
        operands.append(_smoothing(eps, working_dtype(dtype).name))
    return front(*operands)


def _large(
    ops: Operands[tf.Tensor], eps: float, reduction: str, grad: bool
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """A large input, its operands brought to few forms first (each program costs a trace):
    in the working dtype, and flattened when every operand has the full shape or one element."""
    x = ops.inputs
    work = working_dtype(x.dtype)
    given = [
        (n, t) for n, t in zip(OPTIONAL, (ops.weight, ops.pos_weight, ops.mask)) if t is not None
    ]
    args = [
        t if t.dtype in (work, tf.bool) else tf.cast(t, work)
        for t in [x, ops.targets, *(t for _, t in given)]
    ]
    rank = x.shape.rank
    full = [len(pattern_of(t)) == rank and all(pattern_of(t)) for _, t in given]
    if rank != 1 and all(f or not any(pattern_of(t)) for f, (_, t) in zip(full, given)):
        # Full-shape operands become one axis, single-element ones scalars, whatever the rank.
        args = args[:2] + [tf.reshape(t, [-1] if f else []) for f, t in zip(full, args[2:])]
        args[:2] = [tf.reshape(t, [-1]) for t in args[:2]]
        rank = 1
    chunked = runs_on_cpu(x)
    layout = Layout(
        work.name,
        rank,
        tuple((name, pattern_of(t)) for (name, _), t in zip(given, args[2:])),
        chunked,
        False,
    )
    reduced, smoothing = reduction != "none", eps != 0.0
    chunk = CHUNK_ELEMENTS if chunked else None
    program = compiled(
        ("fused", layout, reduced, grad, smoothing, chunk),
        lambda: build_fused(layout, reduced, grad, smoothing),
    )
    extras = [denominator(reduction, ops)] if reduced else []
    out = program(*args, *extras, *([_smoothing(eps, work.name)] if smoothing else []))

    def restore(result: tf.Tensor, elementwise: bool = True) -> tf.Tensor:
        if elementwise and result.shape != x.shape:
            result = tf.reshape(result, tf.shape(x))
        return result if result.dtype == x.dtype else tf.cast(result, x.dtype)

    return restore(out[0], not reduced), restore(out[-1]) if grad else None


def loss_and_grad(
    ops: Operands[tf.Tensor], *, eps: float, reduction: str, grad: bool
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the reduced loss, d loss / d logits or None), in the logits' dtype and shape."""
    size = ops.inputs.shape.num_elements()
    if size is not None and size <= SMALL:
        loss, gradient = _small(ops, eps, reduction)
        return loss, gradient if grad else None
    return _large(ops, eps, reduction, grad)
