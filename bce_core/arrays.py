"""NumPy's side of the shared rules: its array operations, its argument
conversion and the data checks of ``validate=True``.

The float64 reference and the NumPy backend use these; the other backends
reuse the data checks on NumPy copies, so every error reads the same.

>>> import numpy as np
>>> ops = prepare_operands("logits", np.zeros((2, 3), np.float32), [[0, 1, 1]] * 2,
...                        weight=None, pos_weight=np.ones(3), mask=None)
>>> ops.targets.dtype, ops.shape
(dtype('float32'), (2, 3))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from . import rules
from .rules import Operands, Reduced
from .spec import check_float_dtype, check_mask_dtype, check_operand_dtype

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "NUMPY_CONVERTER",
    "NUMPY_OPS",
    "Operands",
    "Reduced",
    "as_float_input",
    "as_mask",
    "as_numpy",
    "as_operand",
    "gradients_of_reduction",
    "prepare_operands",
    "quiet_float_errors",
    "raise_first_bad",
    "reduce_loss",
    "sum_to_shape",
    "validate_operands",
    "validation_under_tracing",
]


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


class NumpyOps:
    """The array operations of ``bce_core.rules``, for NumPy arrays."""

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> np.ndarray:
        return np.where(condition, if_true, if_false)

    @staticmethod
    def broadcast_to(array: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(array, shape)

    @staticmethod
    def reshape(array: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.reshape(array, shape)

    @staticmethod
    def zeros_like(array: Any) -> np.ndarray:
        return np.zeros_like(array)

    @staticmethod
    def total(array: Any) -> np.ndarray:
        array = np.asarray(array)
        return np.asarray(np.sum(array, dtype=array.dtype))

    @staticmethod
    def count(keep: Any, shape: tuple[int, ...], like: Any) -> np.ndarray:
        return np.asarray(np.count_nonzero(np.broadcast_to(keep, shape)), np.asarray(like).dtype)

    @staticmethod
    def sum_axes(array: Any, axes: tuple[int, ...]) -> np.ndarray:
        return np.asarray(np.sum(array, axis=axes))

    @staticmethod
    def cast_like(array: Any, like: Any) -> np.ndarray:
        return np.asarray(array).astype(np.asarray(like).dtype)

    @staticmethod
    def unless_finite(
        check: Any,
        value: Callable[[Any], Any],
        otherwise: Callable[[], Any],
        *,
        cheap: bool = False,
    ) -> Any:
        plain = value(check)
        return plain if np.isfinite(check) else otherwise()


NUMPY_OPS = NumpyOps()


#: Dtypes already found valid as an input (logits, probs) and as an operand (targets, weight,
#: pos_weight): ``dtype.name`` costs microseconds, a set lookup does not. Only valid dtypes
#: are recorded, so every invalid one still raises through the spec's check.
_VALID_INPUT_DTYPES: set[np.dtype[Any]] = set()
_VALID_OPERAND_DTYPES: set[np.dtype[Any]] = set()


#: What each framework's arrays that NumPy cannot read (being differentiated or traced) are,
#: and what to do instead: (what it is, what NumPy cannot keep, the backend, the remedy).
_UNREADABLE = {
    "torch": (
        "a torch.Tensor that requires grad",
        "would cut it off from autograd",
        "torch",
        "to differentiate it, or {name}.detach() to use its values",
    ),
    "jax": (
        "a JAX tracer (inside jax.jit, jax.grad or jax.vmap)",
        "cannot see traced values",
        "jax",
        "inside the transformation, or call the loss outside it",
    ),
    "tensorflow": (
        "a symbolic tf.Tensor (inside tf.function)",
        "cannot see symbolic values",
        "tensorflow",
        "inside tf.function, or call the loss eagerly",
    ),
}


def _framework_refusal(name: str, value: Any) -> TypeError | None:
    """The TypeError for another framework's array that its framework will not hand to NumPy
    (detected from its type, without importing the framework), or None."""
    kind = type(value)
    module = kind.__module__.partition(".")[0]
    if module == "torch" and getattr(value, "requires_grad", False):
        framework = "torch"
    elif module == "jax" and any(c.__name__ == "Tracer" for c in kind.__mro__):
        framework = "jax"
    elif module == "tensorflow":
        framework = "tensorflow"  # eager tensors convert: this one is symbolic
    else:
        return None
    what, loss, backend, remedy = _UNREADABLE[framework]
    return TypeError(
        f"{name} is {what}; a backend of another framework reads it through NumPy, which "
        f"{loss}: pass backend={backend!r} (or no backend=) {remedy.format(name=name)}."
    )


def _ragged_detail(value: Any) -> str:
    """Where a nested list stops being rectangular, e.g. "the lists at depth 1 have lengths 1
    and 2" (depth 0 is the outer list)."""
    level, depth = [value], 0
    while level:
        lists = [v for v in level if isinstance(v, (list, tuple))]
        if not lists:
            break
        if len(lists) != len(level):
            return f"at depth {depth} numbers and lists are mixed"
        lengths = sorted({len(v) for v in lists})
        if len(lengths) > 1:
            shown = ", ".join(map(str, lengths[:-1])) + f" and {lengths[-1]}"
            return f"the lists at depth {depth} have lengths {shown}"
        level, depth = [v for sub in lists for v in sub], depth + 1
    return "its lists have different lengths"


def as_numpy(name: str, value: Any) -> np.ndarray:
    """``np.asarray(value)``, with an error naming the argument where NumPy cannot read it: a
    ragged nested list (ValueError), or another framework's array that is being differentiated
    or traced (TypeError, as for arrays of two frameworks in one call).

    Every backend reads what is not its own array (lists, other frameworks' arrays) with this.

    >>> as_numpy("logits", [[1.0, 2.0], [3.0]])
    Traceback (most recent call last):
    ValueError: logits is a ragged nested list (the lists at depth 1 have lengths 1 and 2); \
an array needs one length per dimension: pad the short lists to one length (and pass mask= to \
exclude the padding).
    """
    try:
        return np.asarray(value)
    except Exception as error:  # diagnosed here, off the path of every call that converts
        refusal = _framework_refusal(name, value)
        if refusal is not None:
            raise refusal from error
        if isinstance(value, (list, tuple)) and isinstance(error, ValueError):
            raise ValueError(
                f"{name} is a ragged nested list ({_ragged_detail(value)}); an array needs one "
                f"length per dimension: pad the short lists to one length (and pass mask= to "
                f"exclude the padding)."
            ) from error
        raise


def as_float_input(name: str, value: Any) -> np.ndarray:
    """``value`` as an array, which must have a floating dtype of the spec."""
    array = as_numpy(name, value)
    dtype = array.dtype
    if dtype not in _VALID_INPUT_DTYPES:
        check_float_dtype(name, dtype.name)
        _VALID_INPUT_DTYPES.add(dtype)
    return array


def as_operand(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """A float, int or bool operand cast to ``dtype``; anything else is a TypeError."""
    array = as_numpy(name, value)
    own = array.dtype
    if own not in _VALID_OPERAND_DTYPES:
        check_operand_dtype(name, own.name, is_real=own.kind in "biuf" or own.name == "bfloat16")
        _VALID_OPERAND_DTYPES.add(own)
    return array if own == dtype else array.astype(dtype)


def as_mask(value: Any) -> np.ndarray:
    """A boolean mask; integer masks are refused because 0/1 and index arrays look alike."""
    array = as_numpy("mask", value)
    check_mask_dtype(array.dtype.name)
    return array


class NumpyConverter:
    """The ``rules.Converter`` of NumPy arrays (and of lists and Python numbers)."""

    as_input = staticmethod(as_float_input)

    @staticmethod
    def as_mask(value: Any, like: np.ndarray) -> np.ndarray:
        return as_mask(value)

    @staticmethod
    def as_operand(name: str, value: Any, like: np.ndarray) -> np.ndarray:
        return as_operand(name, value, like.dtype)

    @staticmethod
    def shape_of(array: np.ndarray) -> tuple[int, ...]:
        return tuple(array.shape)

    @staticmethod
    def isfinite(array: np.ndarray) -> Any:
        finite = np.isfinite(array)
        return True if finite.all() else finite

    @staticmethod
    def nan_where_not(finite: Any, array: np.ndarray) -> np.ndarray:
        return np.where(finite, array, np.nan)


NUMPY_CONVERTER = NumpyConverter()


def prepare_operands(
    input_name: str, inputs: Any, targets: Any, *, weight: Any, pos_weight: Any, mask: Any
) -> Operands[np.ndarray]:
    """``rules.prepare_operands`` for NumPy."""
    return rules.prepare_operands(
        NUMPY_CONVERTER,
        input_name,
        inputs,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
    )


def raise_first_bad(name: str, values: np.ndarray, bad: np.ndarray, why: str) -> None:
    """Raise ValueError naming the first index where ``bad`` is true, if any."""
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
        raise ValueError(
            f"{name}[{', '.join(map(str, index))}] = {values[index].item()!r} {why}; "
            f"fix the data or pass mask= to exclude it."
        )


def validate_operands(
    ops: Operands[np.ndarray], input_name: str, *, input_in_unit_interval: bool
) -> None:
    """The data checks of ``validate=True``; masked-out elements are not checked.

    >>> import numpy as np
    >>> ops = prepare_operands("logits", np.zeros(3), [0, 2, 1], weight=None, pos_weight=None,
    ...                        mask=None)
    >>> validate_operands(ops, "logits", input_in_unit_interval=False)
    Traceback (most recent call last):
    ValueError: targets[1] = 2.0 is outside [0, 1]; fix the data or pass mask= to exclude it.
    """
    keep = np.ones(ops.shape, bool) if ops.mask is None else np.broadcast_to(ops.mask, ops.shape)
    # The data first: the rule for non-finite data has already put NaN in the inputs there.
    checks = [("targets", ops.targets, True)]
    for name, values in (("weight", ops.weight), ("pos_weight", ops.pos_weight)):
        if values is not None:
            checks.append((name, np.broadcast_to(values, ops.shape), False))
    checks.append((input_name, ops.inputs, input_in_unit_interval))
    for name, values, unit_interval in checks:
        values64 = values.astype(np.float64)
        raise_first_bad(name, values, np.isnan(values64) & keep, "is NaN")
        if name in ("weight", "pos_weight"):
            raise_first_bad(name, values, np.isinf(values64) & keep, "is infinite")
        if unit_interval:
            raise_first_bad(
                name, values, ((values64 < 0) | (values64 > 1)) & keep, "is outside [0, 1]"
            )


def validation_under_tracing(where: str, kind: type[ValueError] = ValueError) -> ValueError:
    """The error of ``validate=True`` inside a compiled or transformed function (``where``
    names them), the same in every backend: the data checks need the values.

    >>> raise validation_under_tracing("jax.jit")
    Traceback (most recent call last):
    ValueError: validate=True checks the data, which cannot run under jax.jit (the values are \
abstract there); validate the data eagerly before the compiled or transformed step (call the loss \
once with validate=True outside it), or pass validate=False inside it.
    """
    return kind(
        f"validate=True checks the data, which cannot run under {where} (the values are "
        f"abstract there); validate the data eagerly before the compiled or transformed step "
        f"(call the loss once with validate=True outside it), or pass validate=False inside it."
    )


def sum_to_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``rules.sum_to_shape`` for NumPy.

    >>> sum_to_shape(np.ones((4, 3)), (3,))
    array([4., 4., 4.])
    """
    return np.asarray(rules.sum_to_shape(NUMPY_OPS, np.asarray(array), tuple(shape)))


def reduce_loss(
    elements: np.ndarray, reduction: str, *, mask: np.ndarray | None, weight: Any
) -> Reduced[np.ndarray]:
    """``rules.reduce_elements`` for NumPy, the loss as a 0-d array of the elements' dtype.

    >>> reduce_loss(np.array([1.0, 3.0]), "mean", mask=None, weight=None).loss
    array(2.)
    """
    elements = np.asarray(elements)
    # A scalar weight of exactly 1 (the float64 stand-in for "no weight" of the reference and
    # the suite) gives the same denominator as none, without summing a broadcast of ones.
    weight = None if weight is None or np.ndim(weight) == 0 and weight == 1.0 else weight
    reduced = rules.reduce_elements(NUMPY_OPS, elements, reduction, keep=mask, weight=weight)
    loss = reduced.loss if reduction == "none" else np.asarray(reduced.loss, elements.dtype)
    return Reduced(loss, reduced.factor)


def gradients_of_reduction(
    names: Sequence[str],
    partials: Mapping[str, Callable[[], np.ndarray]],
    ops: Operands[np.ndarray],
    reduction: str,
    reduced: Reduced[np.ndarray],
) -> list[np.ndarray]:
    """``rules.reduction_gradients`` for NumPy operands."""
    shapes = {
        "weight": None if ops.weight is None else tuple(ops.weight.shape),
        "pos_weight": None if ops.pos_weight is None else tuple(ops.pos_weight.shape),
    }
    return [
        np.asarray(g)
        for g in rules.reduction_gradients(
            NUMPY_OPS,
            names,
            partials,
            shape=ops.shape,
            arg_shapes=shapes,
            reduction=reduction,
            reduced=reduced,
        )
    ]
