"""NumPy plumbing shared by the float64 reference and the NumPy backend.

Argument preparation (dtype and shape rules), validation with the first bad
index, masked reductions with zero-denominator handling, and reducing a
broadcast gradient back to its argument's shape. The loss formulas themselves
live in the modules that use this one, so the reference and the backend stay
independent where it matters.

>>> import numpy as np
>>> ops = prepare_operands("logits", np.zeros((2, 3), np.float32), [[0, 1, 1]] * 2,
...                        weight=None, pos_weight=np.ones(3), mask=None)
>>> ops.targets.dtype, ops.shape
(dtype('float32'), (2, 3))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from .spec import (check_batch_mean, check_float_dtype, check_mask_dtype, check_operand_dtype,
                   check_shapes)

F = TypeVar("F", bound=Callable[..., Any])


def quiet_float_errors(function: F) -> F:
    """Run ``function`` with NumPy's floating-point warnings off.

    Overflow to inf is the correctly rounded result for huge inputs, and an
    invalid operation only arises in terms that are then replaced, so the
    warnings carry no information. A new errstate per call keeps this safe
    across threads (one shared errstate object is not).
    """
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


class Operands(NamedTuple):
    """Checked inputs of one call, as NumPy arrays (targets and weights in the input's dtype)."""

    inputs: np.ndarray
    targets: np.ndarray
    weight: np.ndarray | None
    pos_weight: np.ndarray | None
    mask: np.ndarray | None
    shape: tuple[int, ...]


def as_float_input(name: str, value: Any) -> np.ndarray:
    """``value`` as an array, which must have a floating dtype of the spec."""
    array = np.asarray(value)
    check_float_dtype(name, array.dtype.name)
    return array


def as_operand(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """A float, int or bool operand cast to ``dtype``; anything else is a TypeError."""
    array = np.asarray(value)
    check_operand_dtype(name, array.dtype.name,
                        is_real=array.dtype.kind in "biuf" or array.dtype.name == "bfloat16")
    return array.astype(dtype, copy=False)


def as_mask(value: Any) -> np.ndarray:
    """A boolean mask; integer masks are refused because 0/1 and index arrays look alike."""
    array = np.asarray(value)
    check_mask_dtype(array.dtype.name)
    return array


def prepare_operands(input_name: str, inputs: Any, targets: Any, *, weight: Any,
                     pos_weight: Any, mask: Any) -> Operands:
    """Apply the dtype and shape rules of the spec to one call's arguments."""
    x = as_float_input(input_name, inputs)
    y = as_operand("targets", targets, x.dtype)
    w = None if weight is None else as_operand("weight", weight, x.dtype)
    q = None if pos_weight is None else as_operand("pos_weight", pos_weight, x.dtype)
    m = None if mask is None else as_mask(mask)
    shape = check_shapes(x.shape, y.shape, input_name=input_name,
                         weight=None if w is None else w.shape,
                         pos_weight=None if q is None else q.shape,
                         mask=None if m is None else m.shape)
    return Operands(x, y, w, q, m, shape)


def raise_first_bad(name: str, values: np.ndarray, bad: np.ndarray, why: str) -> None:
    """Raise ValueError naming the first index where ``bad`` is true, if any."""
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
        raise ValueError(
            f"{name}[{', '.join(map(str, index))}] = {values[index].item()!r} {why}; "
            f"fix the data or pass mask= to exclude it.")


def validate_operands(ops: Operands, input_name: str, *, input_in_unit_interval: bool) -> None:
    """The data checks of ``validate=True``; masked-out elements are not checked.

    >>> import numpy as np
    >>> ops = prepare_operands("logits", np.zeros(3), [0, 2, 1], weight=None, pos_weight=None,
    ...                        mask=None)
    >>> validate_operands(ops, "logits", input_in_unit_interval=False)
    Traceback (most recent call last):
    ValueError: targets[1] = 2.0 is outside [0, 1]; fix the data or pass mask= to exclude it.
    """
    keep = np.ones(ops.shape, bool) if ops.mask is None else np.broadcast_to(ops.mask, ops.shape)
    checks = [(input_name, ops.inputs, input_in_unit_interval), ("targets", ops.targets, True)]
    for name, values in (("weight", ops.weight), ("pos_weight", ops.pos_weight)):
        if values is not None:
            checks.append((name, np.broadcast_to(values, ops.shape), False))
    for name, values, unit_interval in checks:
        values64 = values.astype(np.float64)
        raise_first_bad(name, values, np.isnan(values64) & keep, "is NaN")
        if unit_interval:
            raise_first_bad(name, values, ((values64 < 0) | (values64 > 1)) & keep,
                            "is outside [0, 1]")


def sum_to_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a full-shape gradient over the axes along which an argument of ``shape`` was broadcast.

    >>> sum_to_shape(np.ones((4, 3)), (3,))
    array([4., 4., 4.])
    """
    lead = array.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                      if d == 1 and array.shape[lead + i] != 1)
    return np.asarray(array.sum(axis=axes)).reshape(shape) if axes else array.reshape(shape)


class Reduced(NamedTuple):
    """A reduced loss and the factor that turns an element's derivative into the loss's."""

    loss: np.ndarray
    #: Per-element factor d(loss)/d(element loss): 0 where masked out, 1/denominator otherwise.
    factor: np.ndarray | float


def reduce_loss(elements: np.ndarray, reduction: str, *, mask: np.ndarray | None,
                weight: np.ndarray | None) -> Reduced:
    """Apply ``reduction`` to element losses (already weighted), honouring the mask.

    A zero denominator gives a loss of 0 and a factor of 0.

    >>> reduce_loss(np.array([1.0, 3.0]), "mean", mask=None, weight=None).loss
    array(2.)
    """
    keep = None if mask is None else np.broadcast_to(mask, elements.shape)
    if keep is not None:
        elements = np.where(keep, elements, 0.0)
    if reduction == "none":
        return Reduced(elements, 1.0 if keep is None else keep.astype(elements.dtype))
    total = np.sum(elements, dtype=elements.dtype)
    if reduction == "sum":
        denominator = 1.0
    elif reduction == "mean":
        denominator = float(elements.size if keep is None else np.count_nonzero(keep))
    elif reduction == "batch_mean":
        check_batch_mean(elements.shape)
        denominator = float(elements.shape[0])
    else:  # weighted_mean
        full_weight = np.broadcast_to(1.0 if weight is None else weight, elements.shape)
        if keep is not None:
            full_weight = np.where(keep, full_weight, 0.0)
        denominator = float(np.sum(full_weight, dtype=np.float64))
    if denominator == 0.0:
        return Reduced(np.zeros((), elements.dtype), 0.0)
    scale = 1.0 / denominator
    factor: np.ndarray | float = scale if keep is None else keep * scale
    return Reduced(np.asarray(total / denominator, elements.dtype), factor)


def gradients_of_reduction(names: Sequence[str], partials: Mapping[str, Callable[[], np.ndarray]],
                           ops: Operands, reduction: str, reduced: Reduced) -> list[np.ndarray]:
    """Turn elementwise partial derivatives into gradients of the reduced loss.

    ``partials[name]()`` gives d(element loss)/d(name) per element; for
    ``"weight"`` that is the bracket (the loss before the weight). Masked-out
    elements and zero denominators give exactly 0; a broadcast argument gets
    its gradient summed back to its own shape.
    """
    shapes = {"weight": None if ops.weight is None else ops.weight.shape,
              "pos_weight": None if ops.pos_weight is None else ops.pos_weight.shape}
    dropped = np.broadcast_to(np.equal(reduced.factor, 0), ops.shape)
    grads = []
    for name in names:
        partial = partials[name]()
        if name == "weight" and reduction == "weighted_mean":
            # d/dw_i of sum(w B) / sum(w) = (B_i - loss) / sum(w).
            partial = partial - reduced.loss
        with np.errstate(invalid="ignore"):
            grad = np.where(dropped, 0.0, np.broadcast_to(partial * reduced.factor, ops.shape))
        shape = shapes.get(name)
        grads.append(sum_to_shape(grad, ops.shape if shape is None else shape))
    return grads
