"""The spec's rules on arrays, written once for every backend.

Each rule here is the only statement of it in the package: the smoothed
targets, the zero-coefficient rule, the working and result dtypes, the
reduction denominators with the zero-denominator rule, the gradient of a
weighted mean with respect to its weights, the sum of a broadcast gradient
back to its argument's shape, and the packing of ``wrt`` gradients. Backends
differ only in their array operations, which they pass in as an
:class:`ArrayOps`: a handful of functions named the way the framework names
them (``bce_core.arrays.NUMPY_OPS`` is the NumPy one).

The rules trace: under ``jax.jit``, ``tf.function`` or ``torch.compile``
they emit the same operations as hand-written code, and a denominator that
does not depend on the data stays a Python number (no device round trip).

>>> import numpy as np
>>> from bce_core.arrays import NUMPY_OPS
>>> smoothed_targets(np.array([1.0, 0.0]), 0.2)
(array([0.9, 0.1]), array([0.1, 0.9]))
>>> reduced = reduce_elements(NUMPY_OPS, np.array([1.0, 3.0]), "mean", keep=None, weight=None)
>>> float(reduced.loss), reduced.factor
(2.0, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

from .spec import HALF_DTYPES, check_batch_mean, check_shapes

A = TypeVar("A")

#: A coefficient or factor: an array, a Python number, or None for exactly 1.
Coefficient = Any


class ArrayOps(Protocol):
    """The array operations the rules need, in one framework's spelling.

    Every function takes and returns that framework's arrays (Python numbers
    are accepted where an array is, as every framework's arithmetic does).
    """

    def where(self, condition: Any, if_true: Any, if_false: Any) -> Any:
        """Elementwise choice, broadcasting the three arguments."""
        ...

    def total(self, array: Any) -> Any:
        """The sum of every element, 0-d, in the backend's accumulation dtype."""
        ...

    def count(self, keep: Any, shape: tuple[int, ...], like: Any) -> Any:
        """How many elements ``keep`` (broadcast to ``shape``) keeps, 0-d in ``like``'s dtype."""
        ...

    def broadcast_to(self, array: Any, shape: tuple[int, ...]) -> Any:
        """``array`` broadcast to ``shape`` (a view where the framework has them)."""
        ...

    def sum_axes(self, array: Any, axes: tuple[int, ...]) -> Any:
        """``array`` summed over ``axes`` (keeping none of them)."""
        ...

    def reshape(self, array: Any, shape: tuple[int, ...]) -> Any:
        """``array`` with a new shape of the same size."""
        ...

    def cast_like(self, array: Any, like: Any) -> Any:
        """``array`` in ``like``'s dtype."""
        ...

    def zeros_like(self, array: Any) -> Any:
        """Zeros of ``array``'s shape and dtype."""
        ...

    def unless_finite(
        self,
        check: Any,
        value: Callable[[Any], Any],
        otherwise: Callable[[], Any],
        *,
        cheap: bool = False,
    ) -> Any:
        """``value(check)`` where the 0-d ``check`` is finite, else ``otherwise()``.

        ``value`` is always called. A framework that can branch on data without a device
        round trip calls ``otherwise`` only where ``check`` is not finite; a traced program
        may compute both and select (always, when ``cheap`` says that ``otherwise`` is a few
        operations on 0-d values), passing ``value`` the check with a non-finite value
        replaced by 0 (so that the branch not taken has a finite derivative, not NaN)."""
        ...


# -- dtypes -----------------------------------------------------------------------------------


def working_dtype_name(dtype_name: str) -> str:
    """The dtype a fast path computes in: float16 and bfloat16 in float32, others as they are.

    The result is always returned in the input's dtype (rounded once).

    >>> working_dtype_name("bfloat16"), working_dtype_name("float32")
    ('float32', 'float32')
    """
    return "float32" if dtype_name in HALF_DTYPES else dtype_name


# -- the coefficients -------------------------------------------------------------------------


def smoothing_constants(eps: float) -> tuple[Fraction, Fraction]:
    """(1 - eps, eps / 2) exactly: y' = y (1 - eps) + eps / 2, the spec's smoothed target.

    eps is the caller's float, exactly: a backend rounds these once, to its own precision.

    >>> smoothing_constants(0.5)
    (Fraction(1, 2), Fraction(1, 4))
    """
    exact = Fraction(eps)
    return 1 - exact, exact / 2


def smoothing_floats(eps: float) -> tuple[float, float]:
    """``smoothing_constants(eps)`` rounded to floats, without Fractions (an eager call would
    pay for them on every step): IEEE subtraction is correctly rounded and halving is exact,
    so these are the exact constants rounded once.

    >>> smoothing_floats(0.1)
    (0.9, 0.05)
    """
    return 1.0 - eps, eps * 0.5


def smoothed_target_slope(eps: float) -> float:
    """d y' / d y = 1 - eps, the factor the targets' gradient carries.

    >>> smoothed_target_slope(0.25)
    0.75
    """
    return smoothing_floats(eps)[0]


def smoothed_targets(
    y: Any,
    eps: float | None,
    *,
    affine: Callable[[Any], Any] | None = None,
    complement: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """(y', 1 - y') for targets ``y`` and label smoothing ``eps``.

    1 - y' is (1 - y)(1 - eps) + eps / 2, not 1 - y', so that it keeps its
    relative accuracy where y' is close to 1. A backend with its own arithmetic
    (compensated pairs, say) passes ``complement(y)`` = 1 - y and ``affine(v)`` =
    v (1 - eps) + eps / 2 computed from ``smoothing_constants``; ``eps=None``
    then means a smoothing whose value only ``affine`` holds (a run-time input
    of a compiled program). By default both are plain arithmetic.

    >>> smoothed_targets(0.25, 0.0)
    (0.25, 0.75)
    """
    one_minus = complement(y) if complement is not None else 1.0 - y
    if eps == 0.0:
        return y, one_minus
    if affine is None:
        if eps is None:
            raise ValueError("smoothed_targets: eps=None needs an affine that holds the smoothing.")
        keep, half = smoothing_floats(eps)
        return y * keep + half, one_minus * keep + half
    return affine(y), affine(one_minus)


def zero_safe(ops: ArrayOps, coefficient: Coefficient, value: Any) -> Any:
    """coefficient * value, where a coefficient of exactly 0 contributes exactly 0 (even times
    an infinite or NaN value); None means a coefficient of 1.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> with np.errstate(invalid="ignore"):  # NumPy warns of the 0 * inf it then replaces
    ...     print(zero_safe(NUMPY_OPS, np.array([0.0, 2.0]), np.array([np.inf, 3.0])))
    [0. 6.]
    """
    if coefficient is None:
        return value
    if isinstance(coefficient, (int, float)):
        return value * coefficient if coefficient != 0 else ops.zeros_like(value)
    return ops.where(coefficient == 0, 0.0, coefficient * value)


def weight_times(ops: ArrayOps, weight: Coefficient, coefficient: Coefficient) -> Coefficient:
    """weight * coefficient, exactly 0 where the weight is exactly 0 whatever the coefficient
    holds (an infinite or NaN target or pos_weight): a weight of 0 is a zero coefficient of the
    whole element. None means exactly 1, as in ``times``.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> with np.errstate(invalid="ignore"):
    ...     print(weight_times(NUMPY_OPS, np.array([0.0, 2.0]), np.array([np.inf, 3.0])))
    [0. 6.]
    """
    if weight is None or coefficient is None:
        return times(weight, coefficient)
    return zero_safe(ops, weight, coefficient)


def times(first: Coefficient, second: Coefficient) -> Coefficient:
    """The product of two coefficients, where None (exactly 1) costs nothing.

    >>> times(None, 2.0), times(3.0, None), times(None, None)
    (2.0, 3.0, None)
    """
    if first is None:
        return second
    if second is None:
        return first
    return first * second


# -- reductions -------------------------------------------------------------------------------


@dataclass(slots=True)
class Reduced(Generic[A]):
    """A reduced loss and the factor that turns an element's derivative into the loss's.

    (Read-only by convention: not frozen, since a frozen dataclass costs a few
    microseconds more per call, which eager frameworks pay on every step.)
    """

    loss: A
    #: d(loss)/d(element loss): 0 where masked out or where the denominator is 0, else
    #: 1/denominator (a Python number when the denominator does not depend on the data).
    factor: Any


def denominator(
    ops: ArrayOps, reduction: str, shape: Sequence[Any], *, keep: Any, weight: Any, like: Any
) -> Any:
    """What ``reduction`` divides the sum of element losses by.

    ``none`` and ``sum`` divide by 1 and ``batch_mean`` by shape[0]; ``mean`` by the number
    of kept elements, and ``weighted_mean`` by the sum of the kept elements'
    weights (the count, when there is no weight). A Python number where it does
    not depend on the data, else a 0-d array of ``like``'s dtype (also where ``shape`` holds
    dimensions that are 0-d arrays, those of a graph traced for any batch size).

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> denominator(NUMPY_OPS, "batch_mean", (4, 3), keep=None, weight=None, like=np.zeros(1))
    4
    """
    if reduction in ("none", "sum"):
        return 1
    if reduction == "batch_mean":
        check_batch_mean(tuple(shape))
        return _number_or_like(ops, shape[0], like)
    if reduction == "weighted_mean" and weight is not None:
        full_weight = ops.broadcast_to(weight, tuple(shape))
        if keep is not None:
            full_weight = ops.where(keep, full_weight, 0.0)
        return ops.total(full_weight)
    if keep is None:
        return _number_or_like(ops, math.prod(shape), like)
    return ops.count(keep, tuple(shape), like)


def _number_or_like(ops: ArrayOps, size: Any, like: Any) -> Any:
    """A size as a Python int, or (a traced dimension) as an array in ``like``'s dtype."""
    return size if isinstance(size, int) else ops.cast_like(size, like)


def divide_or_zero(ops: ArrayOps, total: Any, by: Any) -> tuple[Any, Any]:
    """(total / by, 1 / by), or (0, 0) where ``by`` is 0: an empty or fully masked batch, or
    weights summing to 0, give a loss of 0 and a zero gradient, never NaN.

    For an array denominator the quotient is taken with 0 replaced by 1 and the
    result replaced by 0 after ("double where"), so autodiff sees finite values.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> divide_or_zero(NUMPY_OPS, np.float64(3.0), 0)
    (np.float64(0.0), 0.0)
    >>> [float(v) for v in divide_or_zero(NUMPY_OPS, np.asarray(3.0), np.asarray(0.0))]
    [0.0, 0.0]
    """
    if isinstance(by, (int, float)):
        if by == 0:
            return total * 0.0, 0.0
        return (total if by == 1 else total / by), 1.0 / by
    zero = by == 0
    safe = ops.where(zero, 1.0, by)
    scale = ops.where(zero, 0.0, 1.0 / safe)
    return ops.where(zero, 0.0, total / safe), scale


#: The most doublings the overflow branch scales a sum down by (an element count whose size is
#: not a Python int: a dimension of a graph traced for any batch size).
MAX_OVERFLOW_SHIFT = 64


def overflow_shift(size: Any) -> int:
    """k such that the sum of ``size`` finite values, each times 2**-k, cannot overflow: 2**k
    is at least the count. The scaled values lose only what lies far below the sum's rounding
    (the branch is taken where the sum is beyond the largest float).

    >>> overflow_shift(2), overflow_shift(1024), overflow_shift(None)
    (2, 11, 64)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        return max(1, min(size.bit_length(), MAX_OVERFLOW_SHIFT))
    return MAX_OVERFLOW_SHIFT


def scaled_total(ops: ArrayOps, elements: Any, total: Any, shift: int) -> Any:
    """The elements' sum times 2**-shift, for a sum ``total`` that may have overflowed: the
    sum of the scaled elements where ``total`` is not finite (only then, where the framework
    branches), else ``total`` scaled. Sums of parts (chunks, blocks) add these up alongside
    their totals, for ``finish_total``. ``elements`` may be a function that computes them
    again (a compiled program then need not keep them for the branch).

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> big = np.array([3e38, 3e38], np.float32)
    >>> with np.errstate(over="ignore"):
    ...     print(scaled_total(NUMPY_OPS, big, big.sum(), overflow_shift(2)))
    1.5e+38
    """
    scale = 2.0**-shift

    def rescaled() -> Any:
        return ops.total((elements() if callable(elements) else elements) * scale)

    return ops.unless_finite(total, lambda t: t * scale, rescaled)


def finish_total(
    ops: ArrayOps,
    total: Any,
    scaled: Callable[[], Any],
    finish: Callable[[Any], Any],
    shift: int,
    *,
    cheap: bool = True,
) -> Any:
    """``finish(total)`` (a division by the denominator, or a product with its reciprocal)
    without intermediate overflow: where ``total``, a sum of finite elements, is beyond the
    largest float, ``finish(scaled()) * 2**shift`` from the sum scaled by 2**-shift
    (``scaled_total``). The reduced loss is then finite whenever the exact quotient is
    representable, and inf only where the quotient itself overflows; an infinite or NaN
    element still gives inf or NaN. ``cheap``: whether ``scaled()`` costs a few operations on
    0-d values (``ArrayOps.unless_finite``); a compiled program then selects, not branches.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> big = np.array([3e38, 3e38], np.float32)
    >>> with np.errstate(over="ignore"):
    ...     total = big.sum()
    >>> print(finish_total(NUMPY_OPS, total, lambda: scaled_total(NUMPY_OPS, big, total, 2),
    ...                    lambda t: t / np.float32(2), 2))
    3e+38
    """
    return ops.unless_finite(total, finish, lambda: finish(scaled()) * 2.0**shift, cheap=cheap)


def reduce_total(
    ops: ArrayOps, elements: Any, finish: Callable[[Any], Any], *, size: Any = None
) -> Any:
    """``finish`` of the sum of ``elements`` without intermediate overflow (``finish_total``);
    ``size`` is their count where ``elements.shape`` is not static.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> with np.errstate(over="ignore"):
    ...     print(reduce_total(NUMPY_OPS, np.array([3e38, 3e38], np.float32), lambda t: t / 2))
    3e+38
    """
    shift = overflow_shift(math.prod(elements.shape) if size is None else size)
    total = ops.total(elements)
    return finish_total(
        ops, total, lambda: scaled_total(ops, elements, total, shift), finish, shift
    )


def reduce_elements(
    ops: ArrayOps,
    elements: Any,
    reduction: str,
    *,
    keep: Any,
    weight: Any,
    shape: Sequence[Any] | None = None,
) -> Reduced[Any]:
    """Apply ``reduction`` to (already weighted) element losses over the elements ``keep`` keeps
    (None keeps all); ``weight`` is the weight, for ``weighted_mean``'s denominator.

    ``shape`` is the elements' shape when it is not static (a graph traced for any batch size
    passes its dimensions as 0-d arrays); by default ``elements.shape``.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> reduce_elements(NUMPY_OPS, np.array([1.0, 3.0]), "mean",
    ...                 keep=np.array([True, False]), weight=None).loss
    array(1.)
    """
    shape = tuple(elements.shape) if shape is None else tuple(shape)
    if keep is not None:
        elements = ops.where(keep, elements, 0.0)
    if reduction == "none":
        return Reduced(
            elements,
            1.0 if keep is None else ops.cast_like(ops.broadcast_to(keep, shape), elements),
        )
    by = denominator(ops, reduction, shape, keep=keep, weight=weight, like=elements)
    total = ops.total(elements)
    loss, scale = divide_or_zero(ops, total, by)
    if not (isinstance(by, int) and by == 1):  # a quotient may be finite where the sum is not

        def rescued() -> Any:
            dims = shape if all(isinstance(d, int) for d in shape) else None
            shift = overflow_shift(None if dims is None else math.prod(dims))
            scaled = scaled_total(ops, elements, total, shift)
            return divide_or_zero(ops, scaled, by)[0] * 2.0**shift

        # An eager framework passes the total itself, whose quotient is already at hand; a
        # traced one passes a finite stand-in, to divide again (see ArrayOps.unless_finite).
        loss = ops.unless_finite(
            total,
            lambda t: loss if t is total else divide_or_zero(ops, t, by)[0],
            rescued,
            cheap=True,
        )
    if keep is None:
        factor = scale
    elif isinstance(scale, (int, float)):  # where() of two Python numbers may lose precision
        factor = ops.cast_like(ops.broadcast_to(keep, shape), elements) * scale
    else:
        factor = ops.where(keep, scale, 0.0)
    return Reduced(loss, factor)


def weight_partial(bracket: Any, reduction: str, loss: Any) -> Any:
    """d(element contribution)/d(weight): the bracket, less the loss for ``weighted_mean``
    (d/dw_i of sum(w B) / sum(w) is (B_i - loss) / sum(w)).

    >>> weight_partial(3.0, "weighted_mean", 1.0), weight_partial(3.0, "sum", 1.0)
    (2.0, 3.0)
    """
    return bracket - loss if reduction == "weighted_mean" else bracket


# -- gradients --------------------------------------------------------------------------------


def broadcast_axes(full: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``full`` along which an argument of ``shape`` was broadcast.

    >>> broadcast_axes((4, 3), (3,)), broadcast_axes((4, 3), (4, 1)), broadcast_axes((2,), (2,))
    ((0,), (1,), ())
    """
    lead = len(full) - len(shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and full[lead + i] != 1
    )


def sum_to_shape(ops: ArrayOps, array: Any, shape: tuple[int, ...]) -> Any:
    """A full-shape gradient summed back to the shape of the argument it belongs to.

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> sum_to_shape(NUMPY_OPS, np.ones((4, 3)), (3,))
    array([4., 4., 4.])
    """
    full = tuple(array.shape)
    if full == tuple(shape):
        return array
    axes = broadcast_axes(full, shape)
    summed = ops.sum_axes(array, axes) if axes else array
    return ops.reshape(summed, tuple(shape))


def reduction_gradients(
    ops: ArrayOps,
    names: Sequence[str],
    partials: Mapping[str, Callable[[], Any]],
    *,
    shape: tuple[int, ...],
    arg_shapes: Mapping[str, tuple[int, ...] | None],
    reduction: str,
    reduced: Reduced[Any],
) -> list[Any]:
    """Elementwise partial derivatives turned into gradients of the reduced loss.

    ``partials[name]()`` is d(element loss)/d(name) per element (for ``"weight"``
    the bracket, the loss before the weight). Masked-out elements and zero
    denominators give exactly 0; an argument that was broadcast gets its
    gradient summed back to its own shape (``arg_shapes[name]``, None for the
    element shape).

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_OPS
    >>> reduced = Reduced(np.float64(2.0), np.array([0.5, 0.0]))
    >>> reduction_gradients(NUMPY_OPS, ["weight"], {"weight": lambda: np.array([1.0, 7.0])},
    ...                     shape=(2,), arg_shapes={"weight": (1,)}, reduction="weighted_mean",
    ...                     reduced=reduced)
    [array([-0.5])]
    """
    factor = reduced.factor
    grads = []
    for name in names:
        partial = partials[name]()
        if name == "weight":
            partial = weight_partial(partial, reduction, reduced.loss)
        full = ops.broadcast_to(partial, shape)
        if isinstance(factor, (int, float)):
            grad = ops.zeros_like(full) if factor == 0 else (full if factor == 1 else full * factor)
        else:
            # A factor of exactly 1 leaves the partial as it is: XLA on CPU flushes a subnormal
            # product to 0, even times 1.
            grad = ops.where(factor == 0, 0.0, ops.where(factor == 1, full, full * factor))
        own = arg_shapes.get(name)
        grads.append(sum_to_shape(ops, grad, shape if own is None else own))
    return grads


def pack_gradients(grads: Sequence[A], as_tuple: bool) -> A | tuple[A, ...]:
    """The gradients in ``wrt``'s order: a tuple if ``wrt`` was one, else the single gradient.

    >>> pack_gradients([1.0], False), pack_gradients([1.0, 2.0], True)
    (1.0, (1.0, 2.0))
    """
    return tuple(grads) if as_tuple else grads[0]


# -- operands ---------------------------------------------------------------------------------


class Converter(Protocol):
    """How one backend turns a caller's arguments into its native arrays (its ``operands.py``).

    Each method checks the dtype rule of its argument with ``bce_core.spec``, so
    that the errors read the same in every backend.
    """

    def as_input(self, name: str, value: Any) -> Any:
        """logits or probs: a native array of a floating dtype of the spec."""
        ...

    def as_operand(self, name: str, value: Any, like: Any) -> Any:
        """targets, weight or pos_weight: real numbers, cast to ``like``'s dtype."""
        ...

    def as_mask(self, value: Any, like: Any) -> Any:
        """A native boolean mask, where ``like`` (the input) lives."""
        ...

    def shape_of(self, array: Any) -> tuple[int, ...]:
        """The static shape of a native array."""
        ...

    def isfinite(self, array: Any) -> Any:
        """Where ``array`` is finite, as a native boolean array; or True where that is known
        to hold everywhere at no cost (an eager CPU check), so that the rule can be skipped."""
        ...

    def nan_where_not(self, finite: Any, array: Any) -> Any:
        """``array`` with NaN where ``finite`` (broadcast) is false. The gradient of the result
        with respect to ``array`` is the upstream gradient everywhere (a NaN upstream stays
        NaN), and the finite elements are left bit for bit (subnormals too)."""
        ...


@dataclass(slots=True)
class Operands(Generic[A]):
    """The checked arguments of one call, as native arrays of one backend.

    ``targets``, ``weight`` and ``pos_weight`` are in the input's dtype;
    ``shape`` is the element shape (the input's). Read-only by convention, like
    :class:`Reduced`.
    """

    inputs: A
    targets: A
    weight: A | None
    pos_weight: A | None
    mask: A | None
    shape: tuple[int, ...]


def nan_where_data_is_not_finite(convert: Converter, inputs: Any, *data: Any) -> Any:
    """The spec's rule for non-finite data: ``inputs`` (logits or probabilities) with NaN
    wherever a target, weight or pos_weight in ``data`` (None for an absent one) is infinite
    or NaN, so that the element's loss and each of its derivatives is NaN on every code path.

    Only a weight of exactly 0 overrides it (the zero-coefficient rule, applied after).

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_CONVERTER
    >>> nan_where_data_is_not_finite(NUMPY_CONVERTER, np.zeros(3), np.array([0.0, np.inf, 1.0]))
    array([ 0., nan,  0.])
    """
    finite: Any = True
    for array in data:
        if array is None:
            continue
        here = convert.isfinite(array)
        if here is True:
            continue
        finite = here if finite is True else finite & here
    return inputs if finite is True else convert.nan_where_not(finite, inputs)


def prepare_operands(
    convert: Converter,
    input_name: str,
    inputs: Any,
    targets: Any,
    *,
    weight: Any,
    pos_weight: Any,
    mask: Any,
    data_rule: bool = True,
) -> Operands[Any]:
    """Apply the spec's dtype and shape rules to one call's arguments, in the spec's order:
    the input's dtype, then each operand's, then the shapes (``spec.check_shapes``); then the
    rule for non-finite data (``nan_where_data_is_not_finite``), unless ``data_rule`` is
    False (a backend that applies it inside its compiled programs).

    >>> import numpy as np
    >>> from bce_core.arrays import NUMPY_CONVERTER
    >>> ops = prepare_operands(NUMPY_CONVERTER, "logits", np.zeros((2, 3), np.float32),
    ...                        [[0, 1, 1]] * 2, weight=None, pos_weight=np.ones(3), mask=None)
    >>> ops.targets.dtype, ops.shape
    (dtype('float32'), (2, 3))
    """
    x = convert.as_input(input_name, inputs)
    y = convert.as_operand("targets", targets, x)
    w = None if weight is None else convert.as_operand("weight", weight, x)
    q = None if pos_weight is None else convert.as_operand("pos_weight", pos_weight, x)
    m = None if mask is None else convert.as_mask(mask, x)
    shape_of = convert.shape_of
    shape = check_shapes(
        shape_of(x),
        shape_of(y),
        input_name=input_name,
        weight=None if w is None else shape_of(w),
        pos_weight=None if q is None else shape_of(q),
        mask=None if m is None else shape_of(m),
    )
    if data_rule:
        x = nan_where_data_is_not_finite(convert, x, y, w, q)
    return Operands(x, y, w, q, m, shape)
