"""The Dask path of the ``array_api`` backend: the loss and its gradients on Dask arrays,
lazy, chunk by chunk, in one pass over the data, with reductions exact across chunks.

The functions here take operands already checked by the backend (``bce_core.rules.Operands``
of Dask arrays, targets, weight and pos_weight in the inputs' dtype, the rule for non-finite
data not yet applied) and return Dask arrays; nothing is computed until the caller computes.

Blocks. Every data-sized computation is one task per chunk of the inputs: the operands are
aligned to the inputs' shape and chunks (weight, pos_weight and mask broadcast as views,
nothing copied), and the task runs the NumPy backend on float64 copies of its block with
``reduction="none"`` (so the spec's eager math, its rule for non-finite data, its
zero-coefficient and mask rules apply to the block exactly as they do in memory), under
``np.errstate(all="ignore")``: a task runs in a thread or process of the scheduler, where
the caller's errstate does not reach. The task returns the block's outputs, each rounded
once to the inputs' dtype, and a few float64 partial sums: the sum of the kept element
losses, that sum times 2**-shift (``rules.scaled_total``), the count of kept elements and
the sum of their weights.

Reductions. One task adds every block's partial sums with ``math.fsum`` (exact, whatever
the chunking) and applies the spec's rules as ``bce_numpy.fused`` does in memory: the
denominator of ``rules.denominator``, a zero denominator giving 0 (``rules.divide_or_zero``),
and ``rules.finish_total``, so that a sum beyond the largest float whose quotient is finite
comes out finite; then it rounds once to the inputs' dtype.

Gradients. The gradient of a reduced loss is the blocks' gradient of the sum times the
reduction's factor 1/denominator. Where the denominator does not depend on the data ("sum",
"none", "batch_mean", and "mean" or "weighted_mean" without a mask, "weighted_mean" without a
weight either) the factor is a Python number and each block's gradient is final in the task
that computes its loss. Where it does (the count of a mask, the sum of weighted_mean's
weights) it is summed first from the mask and the weights alone, not from the inputs, so the
inputs' chunks still stream through one task each. Only the gradient of a weighted mean
with respect to its weights, (B_i - loss) / denominator (``rules.weight_partial``), needs
the loss first: those blocks keep their brackets (summed over the broadcast axes, for a
broadcast weight) until it is known. A weight's or pos_weight's gradient is summed over its
broadcast axes within each block and then across blocks, in float64, and rounded once. The
logits' and targets' gradients have the logits' chunks; ``dask.compute(loss, grad)`` runs
each block's task once.

``validate`` computes at once: one pass finds, per block, the C-order index of the first bad
kept element of each check; one element is then read for the message, which is
``bce_core.arrays.validate_operands``'s. The chunks are taken to be NumPy arrays (Dask's
default chunk type).

>>> import dask, dask.array as da, numpy as np
>>> from bce_core.rules import Operands
>>> x = da.from_array(np.linspace(-3, 3, 10, dtype=np.float32), chunks=((4, 3, 3),))
>>> y = da.from_array((np.arange(10) % 2).astype(np.float32), chunks=((4, 3, 3),))
>>> loss, (grad,) = value_and_grad(Operands(x, y, None, None, None, (10,)), 0.0, "mean",
...                                ("logits",))
>>> grad.chunks
((4, 3, 3),)
>>> loss, grad = dask.compute(loss, grad, scheduler="synchronous")
>>> loss.dtype, round(float(loss), 5), round(float(grad[0]), 5)
(dtype('float32'), 0.90021, 0.00474)
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from bce_core import rules
from bce_core.arrays import NUMPY_OPS, quiet_float_errors
from bce_core.rules import Operands
from bce_core.spec import WRT_NAMES, check_batch_mean
from bce_numpy.backend import NumpyBackend

__all__ = ["grad_hess", "logits_loss", "probs_loss", "validate", "value_and_grad"]

_F64 = np.dtype(np.float64)

#: The partial sums of one block, in this order along their last axis.
_TOTAL, _SCALED, _COUNT, _WEIGHTS = range(4)
_PARTIALS = 4

#: The NumPy backend, whose exact eager math each block runs: stateless, so one object serves
#: every thread of a scheduler.
_NUMPY_BACKEND = NumpyBackend()


def _numpy() -> NumpyBackend:
    """The NumPy backend of the blocks."""
    return _NUMPY_BACKEND


# -- the operands, aligned to the inputs' chunks ------------------------------------------


def _as_dask(array: Any) -> da.Array:
    return array if isinstance(array, da.Array) else da.asarray(array)


def _aligned(ops: Operands[Any]) -> list[da.Array | None]:
    """x, y, w, q, m with the inputs' shape and chunks (None where absent): a broadcast
    operand is rechunked along its own axes to the inputs' chunks and broadcast as a view."""
    x = _as_dask(ops.inputs)
    shape, chunks = tuple(ops.shape), x.chunks

    def align(array: Any) -> da.Array | None:
        if array is None:
            return None
        array = _as_dask(array)
        if tuple(array.shape) == shape:
            return array if array.chunks == chunks else array.rechunk(chunks)
        lead = len(shape) - array.ndim
        own = tuple(
            chunks[lead + i] if d == shape[lead + i] else (d,) for i, d in enumerate(array.shape)
        )
        if array.chunks != own:
            array = array.rechunk(own)
        return da.broadcast_to(array, shape, chunks=chunks)

    return [x] + [align(a) for a in (ops.targets, ops.weight, ops.pos_weight, ops.mask)]


def _index(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim))


def _pairs(arrays: list[Any], ndim: int) -> list[Any]:
    """blockwise's (array, index) arguments, (None, None) for an absent operand."""
    out: list[Any] = []
    for array in arrays:
        out += [array, None if array is None or not isinstance(array, da.Array) else _index(ndim)]
    return out


def _meta(ndim: int, dtype: Any) -> np.ndarray:
    return np.empty((0,) * ndim, dtype)


def _leaves(nested: Any) -> Iterator[np.ndarray]:
    """The blocks of a contracted blockwise argument (nested lists), in order."""
    if isinstance(nested, list):
        for item in nested:
            yield from _leaves(item)
    else:
        yield nested


def _total(sums: list[float]) -> float:
    """The exact sum of finite partial sums (fsum); plain addition where one is inf or NaN, or
    where the sum is beyond float64 (then inf, for ``rules.finish_total``)."""
    if all(map(math.isfinite, sums)):
        try:
            return math.fsum(sums)
        except OverflowError:
            pass
    return float(sum(sums))


# -- the denominator ----------------------------------------------------------------------


def _static_denominator(ops: Operands[Any], reduction: str) -> int | None:
    """``rules.denominator`` where it does not depend on the data, else None."""
    shape = tuple(ops.shape)
    if reduction in ("none", "sum"):
        return 1
    if reduction == "batch_mean":
        check_batch_mean(shape)
        return int(shape[0])
    if reduction == "weighted_mean" and ops.weight is not None:
        return None
    return math.prod(shape) if ops.mask is None else None


@quiet_float_errors
def _denominator_block(weighted: bool, w: Any, m: Any) -> np.ndarray:
    """One block's part of the denominator: the sum of the kept weights, or the kept count."""
    ndim = np.ndim(w if weighted else m)
    if weighted:
        values = np.asarray(w, _F64)
        part = float(NUMPY_OPS.total(values if m is None else np.where(m, values, 0.0)))
    else:
        part = float(np.count_nonzero(m))
    return np.full((1,) * ndim + (1,), part)


@quiet_float_errors
def _add_up(blocks: Any) -> np.ndarray:
    """The exact sum of one-number blocks, 0-d float64."""
    return np.asarray(_total([float(b.reshape(-1)[0]) for b in _leaves(blocks)]), _F64)


def _dynamic_denominator(aligned: list[Any], reduction: str, ndim: int) -> da.Array:
    """The data-dependent denominator as a 0-d float64 Dask array, from the mask and the
    weights alone."""
    _, _, w, _, m = aligned
    weighted = reduction == "weighted_mean" and w is not None
    parts = da.blockwise(
        _denominator_block,
        _index(ndim) + (ndim,),
        weighted,
        None,
        *_pairs([w if weighted else None, m], ndim),
        new_axes={ndim: 1},
        adjust_chunks=dict.fromkeys(range(ndim), 1),
        meta=_meta(ndim + 1, _F64),
        token="bce-denominator-part",
    )
    return da.blockwise(
        _add_up,
        (),
        parts,
        _index(ndim + 1),
        concatenate=False,
        meta=_meta(0, _F64),
        token="bce-denominator",
    )


def _scale(denominator: float) -> float:
    """1 / denominator, or 0 for a zero denominator (``rules.divide_or_zero``)."""
    return float(rules.divide_or_zero(NUMPY_OPS, 1.0, float(denominator))[1])


# -- the blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """What every block of one call computes."""

    #: "logits", "probs" or "grad_hess".
    form: str
    dtype: np.dtype[Any]
    eps: float = 0.0
    log_clamp: float = -100.0
    #: The gradients asked for (``wrt``).
    names: tuple[str, ...] = ()
    #: Whether to keep the rounded element losses (reduction "none").
    elementwise: bool = False
    #: The exponent of ``rules.overflow_shift`` of the whole array.
    shift: int = 1
    #: The denominator where it is static; None: an argument of the task, or (``from_parts``)
    #: summed from the partials.
    denominator: int | None = 1
    #: The broadcast axes of the weight's and pos_weight's gradients (empty: full shape).
    weight_axes: tuple[int, ...] = ()
    pos_weight_axes: tuple[int, ...] = ()
    #: Whether the weight's gradient waits for the loss (a weighted mean's).
    weight_waits: bool = False
    #: Whether the partials carry the count and the sum of the kept weights.
    denominator_parts: bool = False


def _f64(block: Any) -> Any:
    """A float64 block; a float64 one (a broadcast view, say) as it is."""
    return None if block is None else np.asarray(block, _F64)


@quiet_float_errors
def _block(
    task: _Task, x: Any, y: Any, w: Any, q: Any, m: Any, denominator: Any = None
) -> dict[str, Any]:
    """One block: the NumPy backend on float64 copies, reduction "none"; the outputs rounded
    once to the inputs' dtype, the partial sums in float64 (see the module's docstring)."""
    backend = _numpy()
    x64, y64, w64, q64 = _f64(x), _f64(y), _f64(w), _f64(q)
    out: dict[str, Any] = {}
    if task.form == "grad_hess":
        grad, hess = backend.grad_hess(x64, y64, weight=w64, pos_weight=q64)
        return {"grad": grad.astype(task.dtype), "hess": hess.astype(task.dtype)}
    options: dict[str, Any] = dict(
        weight=w64, pos_weight=q64, mask=m, label_smoothing=task.eps, reduction="none"
    )
    grads: tuple[np.ndarray, ...] = ()
    if task.form == "probs":
        losses = backend.binary_cross_entropy(x64, y64, log_clamp=task.log_clamp, **options)
    elif task.names:
        losses, grads = backend.value_and_grad(x64, y64, wrt=task.names, **options)
    else:
        losses = backend.binary_cross_entropy_with_logits(x64, y64, **options)
    losses = np.asarray(losses, _F64)
    if task.elementwise:
        out["loss"] = losses.astype(task.dtype)
    parts = np.zeros(_PARTIALS)
    total = NUMPY_OPS.total(losses)
    parts[_TOTAL] = total
    parts[_SCALED] = rules.scaled_total(NUMPY_OPS, losses, total, task.shift)
    if task.denominator_parts:
        parts[_COUNT] = losses.size if m is None else np.count_nonzero(m)
        if w64 is not None:
            parts[_WEIGHTS] = NUMPY_OPS.total(w64 if m is None else np.where(m, w64, 0.0))
    out["partials"] = parts.reshape((1,) * x.ndim + (_PARTIALS,))
    if not task.names:
        return out
    scale = _scale(task.denominator if denominator is None else denominator)
    for name, grad in zip(task.names, grads):
        grad = np.asarray(grad, _F64)
        if name == "weight" and task.weight_waits:
            # (B_i - loss) / denominator needs the loss: keep the kept brackets (masked: 0).
            axes = task.weight_axes
            if axes:
                keep = np.ones(x.shape) if m is None else np.asarray(m, _F64)
                out["weight"] = np.sum(grad, axis=axes, keepdims=True)
                out["weight_count"] = np.sum(
                    np.broadcast_to(keep, x.shape), axis=axes, keepdims=True
                )
            else:
                out["weight"] = grad
            continue
        scaled = np.zeros_like(grad) if scale == 0 else (grad if scale == 1 else grad * scale)
        axes = {"weight": task.weight_axes, "pos_weight": task.pos_weight_axes}.get(name, ())
        out[name] = np.sum(scaled, axis=axes, keepdims=True) if axes else scaled.astype(task.dtype)
    return out


def _stage(task: _Task, aligned: list[Any], ndim: int, denominator: Any = None) -> da.Array:
    """The per-block tasks of one call (blocks of dictionaries, read by ``_take``)."""
    return da.blockwise(
        _block,
        _index(ndim),
        task,
        None,
        *_pairs(aligned, ndim),
        *([] if denominator is None else [denominator, ()]),
        meta=_meta(ndim, task.dtype),
        token=f"bce-{task.form}-blocks",
    )


def _take(
    stage: da.Array,
    key: str,
    dtype: Any,
    *,
    summed: tuple[int, ...] = (),
    new_axis: int | None = None,
) -> da.Array:
    """One output of the blocks: ``summed`` axes have one element per block; ``new_axis``
    adds the partials' axis."""
    ndim = stage.ndim
    extra = {} if new_axis is None else {"new_axes": {ndim: new_axis}}
    return da.blockwise(
        operator.itemgetter(key),
        _index(ndim) + (() if new_axis is None else (ndim,)),
        stage,
        _index(ndim),
        adjust_chunks=dict.fromkeys(summed, 1),
        meta=_meta(ndim + (new_axis is not None), dtype),
        token=f"bce-grad-{key}" if key in WRT_NAMES else f"bce-{key}",
        **extra,
    )


@dataclass(frozen=True)
class _Finish:
    """How the combining task turns the partials into the reduced loss."""

    shift: int
    #: The static denominator, or None (an argument, or summed from the partials).
    denominator: int | None
    #: Where a data-dependent denominator comes from the partials: their count or weights.
    from_parts: int | None = None


@quiet_float_errors
def _combine(finish: _Finish, blocks: Any, denominator: Any = None) -> np.ndarray:
    """The reduced loss in float64 (0-d) from every block's partial sums."""
    parts = np.stack([np.asarray(b, _F64).reshape(-1, _PARTIALS) for b in _leaves(blocks)])
    parts = parts.reshape(-1, _PARTIALS)
    if finish.from_parts is not None:
        by = _total(parts[:, finish.from_parts].tolist())
    else:
        by = float(finish.denominator if denominator is None else denominator)
    if by == 0.0:  # an empty or fully masked batch, or weights summing to 0
        return np.zeros((), _F64)
    loss = rules.finish_total(
        NUMPY_OPS,
        _total(parts[:, _TOTAL].tolist()),
        lambda: _total(parts[:, _SCALED].tolist()),
        lambda total: rules.divide_or_zero(NUMPY_OPS, total, by)[0],
        finish.shift,
    )
    return np.asarray(loss, _F64)


@quiet_float_errors
def _round(dtype: Any, value: Any) -> np.ndarray:
    """A float64 result rounded once to ``dtype``."""
    return np.asarray(value).astype(dtype)


def _rounded(value: da.Array, dtype: Any) -> da.Array:
    ndim = value.ndim
    return da.blockwise(
        _round,
        _index(ndim),
        dtype,
        None,
        value,
        _index(ndim),
        meta=_meta(ndim, dtype),
        token="bce-round",
    )


def _reduced_loss(stage: da.Array, ndim: int, finish: _Finish, denominator: Any = None) -> da.Array:
    """The 0-d float64 loss from the blocks' partials, in one combining task."""
    parts = _take(stage, "partials", _F64, summed=_index(ndim), new_axis=_PARTIALS)
    return da.blockwise(
        _combine,
        (),
        finish,
        None,
        parts,
        _index(ndim + 1),
        *([] if denominator is None else [denominator, ()]),
        concatenate=False,
        meta=_meta(0, _F64),
        token="bce-reduce",
    )


# -- gradients of broadcast operands ------------------------------------------------------


@quiet_float_errors
def _sum_blocks(
    dtype: Any,
    axes: tuple[int, ...],
    partial: np.ndarray,
    count: np.ndarray | None = None,
    loss: Any = None,
    denominator: Any = None,
) -> np.ndarray:
    """Per-block sums over the broadcast ``axes`` added across blocks, in float64, rounded
    once; with ``count`` (a weighted mean's weight) (sum B - loss count) / denominator."""
    total = np.sum(partial, axis=axes)
    if count is not None:
        kept = np.sum(count, axis=axes)
        scale = _scale(denominator)
        total = np.where((kept == 0) | (scale == 0), 0.0, (total - float(loss) * kept) * scale)
    return np.asarray(total).astype(dtype)


@quiet_float_errors
def _weight_elements(
    dtype: Any, bracket: np.ndarray, m: Any, loss: Any, denominator: Any
) -> np.ndarray:
    """A weighted mean's full-shape weight gradient: (B_i - loss) / denominator where kept."""
    scale = _scale(denominator)
    if scale == 0:
        return np.zeros(bracket.shape, dtype)
    grad = (bracket - float(loss)) * scale
    return (grad if m is None else np.where(m, grad, 0.0)).astype(dtype)


def _argument_grad(
    stage: da.Array,
    name: str,
    own_shape: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: Any,
    *,
    waits: tuple[Any, Any, Any] | None = None,
) -> da.Array:
    """The gradient of weight or pos_weight, of the argument's own shape. ``waits``: (the
    aligned mask, the float64 loss, the denominator) for a weighted mean's weight."""
    ndim = len(shape)
    axes = rules.broadcast_axes(shape, own_shape)
    if not axes:
        if waits is None:
            return _take(stage, name, dtype)
        mask, loss, denominator = waits
        return da.blockwise(
            _weight_elements,
            _index(ndim),
            dtype,
            None,
            _take(stage, name, _F64),
            _index(ndim),
            *_pairs([mask], ndim),
            loss,
            (),
            denominator,
            (),
            meta=_meta(ndim, dtype),
            token=f"bce-grad-{name}",
        )
    kept = tuple(a for a in range(ndim) if a not in axes)
    arguments: list[Any] = [_take(stage, name, _F64, summed=axes), _index(ndim)]
    if waits is not None:
        _, loss, denominator = waits
        arguments += [_take(stage, "weight_count", _F64, summed=axes), _index(ndim)]
        arguments += [loss, (), denominator, ()]
    summed = da.blockwise(
        _sum_blocks,
        kept,
        dtype,
        None,
        axes,
        None,
        *arguments,
        concatenate=True,
        meta=_meta(len(kept), dtype),
        token=f"bce-grad-{name}",
    )
    # The argument's own shape: its size-1 axes back (leading broadcast axes stay dropped).
    lead = ndim - len(own_shape)
    where = tuple(None if lead + i in axes else slice(None) for i in range(len(own_shape)))
    return summed[where] if None in where else summed


# -- the functions the backend calls ------------------------------------------------------


def _loss(ops: Operands[Any], task: _Task, reduction: str) -> da.Array:
    """A loss without gradient: one task per block and, for a reduction, one that combines
    them (a data-dependent denominator summed from the same blocks' partials)."""
    aligned = _aligned(ops)
    ndim = len(ops.shape)
    from_parts = None
    if task.denominator is None:
        weighted = reduction == "weighted_mean" and ops.weight is not None
        from_parts = _WEIGHTS if weighted else _COUNT
        task = dataclasses.replace(task, denominator_parts=True)
    stage = _stage(task, aligned, ndim)
    if task.elementwise:
        return _take(stage, "loss", task.dtype)
    loss = _reduced_loss(stage, ndim, _Finish(task.shift, task.denominator, from_parts))
    return _rounded(loss, task.dtype)


def _task(ops: Operands[Any], form: str, reduction: str, **fields: Any) -> _Task:
    return _Task(
        form=form,
        dtype=np.dtype(ops.inputs.dtype),
        elementwise=reduction == "none",
        shift=rules.overflow_shift(math.prod(ops.shape)),
        denominator=_static_denominator(ops, reduction),
        **fields,
    )


def logits_loss(ops: Operands[Any], eps: float, reduction: str) -> da.Array:
    """The loss from logits: 0-d for a reduction, else ``ops.shape`` with the logits' chunks,
    in the logits' dtype."""
    return _loss(ops, _task(ops, "logits", reduction, eps=eps), reduction)


def probs_loss(ops: Operands[Any], eps: float, reduction: str, log_clamp: float) -> da.Array:
    """The loss from probabilities, as ``logits_loss``."""
    task = _task(ops, "probs", reduction, eps=eps, log_clamp=log_clamp)
    return _loss(ops, task, reduction)


def value_and_grad(
    ops: Operands[Any], eps: float, reduction: str, names: tuple[str, ...]
) -> tuple[da.Array, list[da.Array]]:
    """The loss and its gradients with respect to ``names`` (each of its argument's shape; the
    logits' and targets' with the logits' chunks), from one task per block."""
    aligned = _aligned(ops)
    shape = tuple(ops.shape)
    ndim = len(shape)
    own = {
        "weight": None if ops.weight is None else tuple(ops.weight.shape),
        "pos_weight": None if ops.pos_weight is None else tuple(ops.pos_weight.shape),
    }
    weight_waits = reduction == "weighted_mean" and "weight" in names
    task = _task(
        ops,
        "logits",
        reduction,
        eps=eps,
        names=tuple(names),
        weight_axes=() if own["weight"] is None else rules.broadcast_axes(shape, own["weight"]),
        pos_weight_axes=()
        if own["pos_weight"] is None
        else rules.broadcast_axes(shape, own["pos_weight"]),
        weight_waits=weight_waits,
    )
    denominator: Any = task.denominator
    if denominator is None:
        denominator = _dynamic_denominator(aligned, reduction, ndim)
    dynamic = denominator if isinstance(denominator, da.Array) else None
    stage = _stage(task, aligned, ndim, dynamic)
    loss64 = None
    if task.elementwise:
        loss = _take(stage, "loss", task.dtype)
    else:
        loss64 = _reduced_loss(stage, ndim, _Finish(task.shift, task.denominator), dynamic)
        loss = _rounded(loss64, task.dtype)
    grads = []
    for name in names:
        if name in ("logits", "targets"):
            grads.append(_take(stage, name, task.dtype))
            continue
        waits = (aligned[4], loss64, denominator) if name == "weight" and weight_waits else None
        own_shape = own[name]
        assert own_shape is not None  # the backend checked that wrt names given operands
        grads.append(_argument_grad(stage, name, own_shape, shape, task.dtype, waits=waits))
    return loss, grads


def grad_hess(ops: Operands[Any]) -> tuple[da.Array, da.Array]:
    """d loss / d x and d2 loss / d x2 per element (no smoothing, mask or reduction), of the
    full shape with the logits' chunks, in the logits' dtype."""
    aligned = _aligned(ops)
    aligned[4] = None
    ndim = len(ops.shape)
    stage = _stage(_Task(form="grad_hess", dtype=np.dtype(ops.inputs.dtype)), aligned, ndim)
    return _take(stage, "grad", stage.dtype), _take(stage, "hess", stage.dtype)


# -- validate=True --------------------------------------------------------------------------


def _checks(ops: Operands[Any], input_name: str, unit_interval: bool) -> list[tuple[str, int, str]]:
    """The checks of ``bce_core.arrays.validate_operands`` in its order: (argument, position
    in the aligned operands, what is wrong)."""
    checks = [("targets", 1, "is NaN"), ("targets", 1, "is outside [0, 1]")]
    for name, at, present in (("weight", 2, ops.weight), ("pos_weight", 3, ops.pos_weight)):
        if present is not None:
            checks += [(name, at, "is NaN"), (name, at, "is infinite")]
    checks.append((input_name, 0, "is NaN"))
    if unit_interval:
        checks.append((input_name, 0, "is outside [0, 1]"))
    return checks


@quiet_float_errors
def _first_bad_block(
    checks: tuple[tuple[int, str], ...],
    shape: tuple[int, ...],
    starts: tuple[tuple[int, ...], ...],
    has_mask: bool,
    *blocks: Any,
    block_id: tuple[int, ...] = (),
) -> np.ndarray:
    """For each check (operand position, what is wrong), the C-order flat index in the whole
    array of the block's first bad kept element, or -1."""
    operands, m = (blocks[:-1], blocks[-1]) if has_mask else (blocks, None)
    first = np.full(len(checks), -1, np.int64)
    offset = tuple(start[i] for start, i in zip(starts, block_id))  # (block_id has the new axis)
    converted: dict[int, np.ndarray] = {}
    for k, (at, why) in enumerate(checks):
        if at not in converted:  # each operand once, for all of its checks
            converted[at] = np.asarray(operands[at], _F64)
        values = converted[at]
        if why == "is NaN":
            bad = np.isnan(values)
        elif why == "is infinite":
            bad = np.isinf(values)
        else:
            bad = (values < 0) | (values > 1)
        if m is not None:
            bad &= m
        if bad.any():  # only then locate it
            local = np.unravel_index(int(np.argmax(bad)), bad.shape)
            where = tuple(int(i) + o for i, o in zip(local, offset))
            first[k] = np.ravel_multi_index(where, shape) if shape else 0
    return first.reshape((1,) * len(shape) + (len(checks),))


def validate(ops: Operands[Any], input_name: str, *, unit_interval: bool) -> None:
    """The data checks of ``validate=True``, with ``bce_core.arrays.validate_operands``'s
    errors (the first bad index in C order, its value, the fix); masked-out elements are not
    checked. This one computes: one pass finds each check's first bad element in every block
    (locating it only in a block that has one), then one element is read for the message."""
    aligned = _aligned(ops)
    shape = tuple(ops.shape)
    ndim = len(shape)
    x, mask = aligned[0], aligned[4]
    assert x is not None
    checks = _checks(ops, input_name, unit_interval)
    positions = sorted({at for _, at, _ in checks})
    operands = [aligned[at] for at in positions]
    starts = tuple(tuple(np.cumsum((0,) + c[:-1]).tolist()) for c in x.chunks)
    blocks = da.map_blocks(
        _first_bad_block,
        tuple((positions.index(at), why) for _, at, why in checks),
        shape,
        starts,
        mask is not None,
        *operands,
        *([] if mask is None else [mask]),
        chunks=tuple((1,) * len(c) for c in x.chunks) + ((len(checks),),),
        new_axis=[ndim],
        dtype=np.int64,
        meta=_meta(ndim + 1, np.int64),
        token="bce-validate",
    )
    found = np.asarray(blocks.compute()).reshape(-1, len(checks))
    for k, (name, at, why) in enumerate(checks):
        hits = found[:, k][found[:, k] >= 0]
        if hits.size:
            index = tuple(int(i) for i in np.unravel_index(int(hits.min()), shape))
            value = np.asarray(aligned[at][index].compute()).item()
            raise ValueError(
                f"{name}[{', '.join(map(str, index))}] = {value!r} {why}; "
                f"fix the data or pass mask= to exclude it."
            )
