"""The backend-neutral specification: option names, checks and shape rules.

Everything here works on plain Python values and shape tuples, so every
backend (NumPy, PyTorch, TensorFlow, JAX or a third-party one) validates its
arguments with the same code and raises the same errors with the same words.

Non-finite data: a target, weight or pos_weight that is infinite or NaN makes
its element's loss and each of that element's derivatives NaN
(``rules.nan_where_data_is_not_finite``); a weight of exactly 0 overrides it,
its element contributing exactly 0 to everything but the derivative with
respect to the weight (``rules.weight_times``). ``validate=True`` refuses
infinite weights and pos_weights.

>>> check_reduction("mean")
'mean'
>>> check_shapes((4, 3), (4, 3), pos_weight=(3,))
(4, 3)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

#: Version of the specification the backends are held to.
SPEC_VERSION = "1.0"

#: Valid values of ``reduction``.
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean", "weighted_mean", "batch_mean")

#: Valid names in ``value_and_grad(..., wrt=...)``.
WRT_NAMES: tuple[str, ...] = ("logits", "targets", "weight", "pos_weight")

#: Default lower clamp of ``log p`` and ``log1p(-p)`` in the probability form (PyTorch's value).
DEFAULT_LOG_CLAMP = -100.0

#: Floor of ``p * (1 - p)`` in the probability-form gradient (PyTorch's value).
PROBS_GRAD_EPS = 1e-12

#: Floating dtypes a backend accepts for logits and probabilities, by name.
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")

#: Dtypes computed in float32 and rounded once.
HALF_DTYPES: tuple[str, ...] = ("float16", "bfloat16")


def closest_name(name: str, known: Sequence[str]) -> str | None:
    """Return the known name closest to ``name``, or None when none is close.

    >>> closest_name("torhc", ["numpy", "torch", "jax"])
    'torch'
    """
    matches = difflib.get_close_matches(str(name).lower(), list(known), n=1, cutoff=0.5)
    return matches[0] if matches else None


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it names a valid reduction, else raise ValueError.

    >>> check_reduction("sum")
    'sum'
    """
    if isinstance(reduction, str) and reduction in REDUCTIONS:
        return reduction
    hint = closest_name(reduction, REDUCTIONS) if isinstance(reduction, str) else None
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    raise ValueError(
        f"reduction={reduction!r} is not a valid reduction; use one of "
        f"{', '.join(repr(r) for r in REDUCTIONS)}.{did_you_mean}"
    )


#: What a numeric option (``label_smoothing``, ``log_clamp``) accepts, for the errors.
NUMBER_TYPES = "a Python float or int, a NumPy scalar or a 0-d array of a real dtype"


def _dtype_name(value: object) -> str:
    """The name of an array's dtype in any framework (NumPy, torch, TensorFlow, JAX)."""
    dtype = getattr(value, "dtype", None)
    return str(getattr(dtype, "name", dtype)).removeprefix("torch.")


def _real_dtype(value: object) -> bool:
    """Whether an array's dtype is real: a float or an integer, not bool or complex."""
    return _dtype_name(value).startswith(("float", "bfloat", "int", "uint"))


def check_number(argument: str, value: object, example: str) -> float:
    """``value`` as a float when it is a real number, else TypeError naming ``argument``.

    A real number is a Python float or int (not bool), a NumPy scalar or a 0-d array of a
    real dtype of any framework, converted with ``float()``. Strings, bools, None, complex
    numbers, arrays of more than 0 dimensions (even with one element) and traced values
    (inside ``jax.jit`` or ``tf.function``, whose value is unknown) are refused, the same
    way on every backend. ``example`` is a valid value, for the error's fix.

    >>> check_number("log_clamp", -5, "-100.0")
    -5.0
    >>> check_number("log_clamp", "-5", "-100.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: log_clamp must be a real number (...), got '-5' of type str; pass a number, ...
    """
    kind = value.__class__
    if kind is float or kind is int:  # the usual call, checked first
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # subclasses (NumPy's float64 is one)
    dims = _dims(value)
    reason = ""
    if dims == () and not isinstance(value, (str, bytes)):
        if _real_dtype(value):
            try:  # detached first: torch warns when a tensor that requires grad becomes a float
                detach = getattr(value, "detach", None)
                return float(value if detach is None else detach())  # type: ignore[arg-type]
            except Exception:  # a traced value (jax.jit, tf.function) has no value to read
                reason = (
                    " (a traced value, inside jax.jit or tf.function, has no value to check: "
                    "pass the number from outside the traced function)"
                )
    shown = (
        repr(value) if dims is None else f"an array of shape {dims} and dtype {_dtype_name(value)}"
    )
    hint = " (a one-element array a: float(a.reshape(())))" if dims else ""
    raise TypeError(
        f"{argument} must be a real number ({NUMBER_TYPES}), got {shown} of type "
        f"{kind.__name__}{reason}; pass a number, for example {argument}={example}{hint}."
    )


def _dims(value: object) -> tuple[int | None, ...] | None:
    """The shape of an array of any framework as a tuple; None for a non-array (or a shape
    of unknown rank)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "dtype"):
        return None
    try:
        return tuple(value.shape)  # type: ignore[attr-defined]
    except Exception:  # TensorFlow's shape of unknown rank has no tuple
        return None


def check_label_smoothing(label_smoothing: object) -> float:
    """Return ``label_smoothing`` as a float in [0, 1] (see :func:`check_number` for the types),
    else raise TypeError (not a number) or ValueError (outside [0, 1], NaN).

    >>> check_label_smoothing(0.1)
    0.1
    """
    value = check_number("label_smoothing", label_smoothing, "0.1")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(
            f"label_smoothing={value!r} is outside [0, 1]; pass a value such as 0.0 (off) or 0.1."
        )
    return value


def check_log_clamp(log_clamp: object) -> float:
    """Return ``log_clamp`` as a float that is <= 0 (``-inf`` means no clamp; see
    :func:`check_number` for the types), else raise TypeError (not a number) or ValueError
    (positive, NaN).

    >>> check_log_clamp(-100)
    -100.0
    """
    value = check_number("log_clamp", log_clamp, "-100.0")
    if math.isnan(value) or value > 0:
        raise ValueError(
            f"log_clamp={value!r} must be <= 0; use -100.0 (PyTorch's clamp) or float('-inf') "
            f"for the exact logarithm."
        )
    return value


def check_validate(validate: object) -> bool:
    """Return ``validate`` as a bool when it is True or False (a Python or NumPy bool), else
    raise TypeError: a truthy string such as "no" must not switch the data checks on.

    >>> check_validate(False)
    False
    """
    if validate is True or validate is False:
        return validate
    if isinstance(validate, np.bool_):
        return bool(validate)
    raise TypeError(
        f"validate must be True or False, got {validate!r} of type {type(validate).__name__}; "
        f"pass validate=True to check the data, or validate=False."
    )


def check_wrt(wrt: object) -> tuple[tuple[str, ...], bool]:
    """Normalise ``wrt`` to a tuple of names and whether the caller asked for a tuple.

    >>> check_wrt("logits")
    (('logits',), False)
    >>> check_wrt(("logits", "weight"))
    (('logits', 'weight'), True)
    """
    as_tuple = isinstance(wrt, (tuple, list))
    names = tuple(wrt) if as_tuple else (wrt,)  # type: ignore[arg-type]
    if as_tuple and not names:
        raise ValueError(f"wrt={wrt!r} is empty; name at least one of {', '.join(WRT_NAMES)}.")
    for name in names:
        if not isinstance(name, str) or name not in WRT_NAMES:
            hint = closest_name(name, WRT_NAMES) if isinstance(name, str) else None
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"wrt={wrt!r} names {name!r}, which is not differentiable here; use one of "
                f"{', '.join(repr(n) for n in WRT_NAMES)} or a tuple of them.{did_you_mean}"
            )
    return tuple(str(name) for name in names), as_tuple


def check_wrt_given(names: Sequence[str], *, weight: object, pos_weight: object) -> None:
    """Raise when a gradient is asked for an argument that was not passed.

    >>> check_wrt_given(("logits",), weight=None, pos_weight=None)
    """
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if name in names and value is None:
            raise ValueError(
                f"wrt names {name!r} but {name}=None; pass {name}= explicitly (for example an "
                f"array of ones) to get its gradient."
            )


def check_float_dtype(argument: str, dtype_name: str) -> None:
    """Raise TypeError unless ``dtype_name`` is one of the floating dtypes of the spec.

    >>> check_float_dtype("logits", "float32")
    """
    if dtype_name not in FLOAT_DTYPES:
        raise TypeError(
            f"{argument} must have a floating dtype ({', '.join(FLOAT_DTYPES)}), got {dtype_name}; "
            f"cast it first, for example with .astype('float32')."
        )


def check_operand_dtype(argument: str, dtype_name: str, *, is_real: bool) -> None:
    """Raise TypeError unless targets/weight/pos_weight hold real numbers (float, int, bool).

    >>> check_operand_dtype("targets", "int64", is_real=True)
    """
    if not is_real:
        raise TypeError(
            f"{argument} must hold real numbers (float, int or bool), got dtype {dtype_name}; "
            f"convert it, for example with np.asarray({argument}, dtype=np.float32)."
        )


def check_mask_dtype(dtype_name: str) -> None:
    """Raise TypeError unless the mask is boolean (0/1 integers and index arrays look alike).

    >>> check_mask_dtype("bool")
    """
    if dtype_name != "bool":
        raise TypeError(
            f"mask must be a boolean array (True keeps an element), got dtype {dtype_name}; "
            f"convert it with mask.astype(bool)."
        )


def broadcast_shapes(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...] | None:
    """NumPy broadcasting of two shapes, or None when they do not broadcast.

    >>> broadcast_shapes((3,), (4, 3))
    (4, 3)
    """
    result = []
    for a, b in zip(
        reversed((1,) * (len(second) - len(first)) + tuple(first)),
        reversed((1,) * (len(first) - len(second)) + tuple(second)),
    ):
        if a == b or b == 1:
            result.append(a)
        elif a == 1:
            result.append(b)
        else:
            return None
    return tuple(reversed(result))


def check_shapes(
    logits_shape: tuple[int, ...],
    targets_shape: tuple[int, ...],
    *,
    input_name: str = "logits",
    weight: tuple[int, ...] | None = None,
    pos_weight: tuple[int, ...] | None = None,
    mask: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    """Check the shape rules of the spec and return the element shape.

    targets must have exactly the input's shape; weight, pos_weight and mask
    broadcast to it NumPy-style and may not enlarge it.

    >>> check_shapes((2, 3), (2, 3), weight=(2, 1))
    (2, 3)
    """
    shape = tuple(int(d) for d in logits_shape)
    if tuple(int(d) for d in targets_shape) != shape:
        raise ValueError(
            f"targets shape {tuple(targets_shape)} must equal {input_name} shape {shape}; "
            f"reshape the targets (for example targets.reshape({shape}))."
        )
    for name, other in (("weight", weight), ("pos_weight", pos_weight), ("mask", mask)):
        if other is None:
            continue
        other = tuple(int(d) for d in other)
        if broadcast_shapes(other, shape) != shape:
            raise ValueError(
                f"{name} shape {other} does not broadcast to {input_name} shape {shape} without "
                f"enlarging it; give {name} a shape such as {shape}, {shape[-1:] or ()} or ()."
            )
    return shape


def check_batch_mean(shape: tuple[int, ...]) -> None:
    """Raise for reduction='batch_mean' on a 0-d input, which has no batch axis.

    >>> check_batch_mean((8, 2))
    """
    if len(shape) == 0:
        raise ValueError(
            "reduction='batch_mean' divides by shape[0], but the input is 0-d; "
            "use reduction='mean' or 'sum', or add a batch axis."
        )


class CallOptions(NamedTuple):
    """The checked options of one call (see :func:`check_options`)."""

    #: label_smoothing, as a float in [0, 1].
    eps: float
    reduction: str
    #: The names of ``wrt`` (empty when the call computes no gradient).
    wrt: tuple[str, ...] = ()
    #: Whether the caller passed ``wrt`` as a tuple (then the gradients come back as one).
    wrt_as_tuple: bool = False
    log_clamp: float = DEFAULT_LOG_CLAMP
    #: Whether to run the data checks (``validate``), as a bool.
    validate: bool = False


def check_options(
    *,
    label_smoothing: object = 0.0,
    reduction: object = "mean",
    wrt: object = None,
    weight: object = None,
    pos_weight: object = None,
    log_clamp: object = DEFAULT_LOG_CLAMP,
    validate: object = False,
) -> CallOptions:
    """Check every option of one call, in the spec's order, and return them normalised.

    ``wrt=None`` means the call computes no gradient; ``weight`` and ``pos_weight``
    are only looked at to check that ``wrt`` names arguments that were passed.

    The types each option accepts, the same on every backend and entry point (a wrong type
    raises TypeError, a wrong value ValueError, each naming the argument and the fix):

    - ``label_smoothing``: a real number in [0, 1] (see :func:`check_number`);
    - ``log_clamp``: a real number <= 0, or ``float('-inf')`` for no clamp;
    - ``validate``: True or False (a Python or NumPy bool; no truthy strings or numbers);
    - ``reduction``: one of :data:`REDUCTIONS` (ValueError otherwise, naming them);
    - ``wrt``: one of :data:`WRT_NAMES` or a tuple of them (ValueError otherwise).

    >>> check_options(label_smoothing=0.1, reduction="sum", wrt=("logits",)).wrt
    ('logits',)
    """
    eps = check_label_smoothing(label_smoothing)
    checked_reduction = check_reduction(reduction)
    # The default needs no check; every call that does not set log_clamp passes it.
    clamp = DEFAULT_LOG_CLAMP if log_clamp is DEFAULT_LOG_CLAMP else check_log_clamp(log_clamp)
    checked_validate = check_validate(validate)
    if wrt is None:
        return CallOptions(eps, checked_reduction, (), False, clamp, checked_validate)
    names, as_tuple = check_wrt(wrt)
    check_wrt_given(names, weight=weight, pos_weight=pos_weight)
    return CallOptions(eps, checked_reduction, names, as_tuple, clamp, checked_validate)
