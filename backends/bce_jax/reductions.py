"""Reductions over the elements that count, safe under autodiff.

A ``Reduction`` is planned from the options before any loss is computed, so
the elements that do not count (masked out, or all of them when the
denominator is 0) can be replaced by harmless values *before* the loss (the
"double where"): their gradients are then exactly 0, never 0 * inf = NaN,
whatever their inputs hold. Empty and fully masked batches give a loss of 0.

>>> import jax.numpy as jnp
>>> plan = Reduction.plan("mean", (2,), mask=jnp.array([True, False]), weight=None,
...                       dtype=jnp.float32)
>>> float(plan.finish(jnp.array([3.0, jnp.nan])))
3.0

"sum", "mean" and "batch_mean" differ only in their denominator: planned as
``SCALED`` with the denominator as a runtime value (``denominator``), one
compiled program serves all three.

>>> plan = Reduction.plan(SCALED, (2,), mask=None, weight=None, dtype=jnp.float32,
...                       denominator=denominator("batch_mean", (2,), masked=False))
>>> float(plan.finish(jnp.array([3.0, 1.0])))
2.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from bce_core.spec import check_batch_mean


#: The reduction of a program that takes the denominator of "sum", "mean" or "batch_mean" at
#: run time (see ``denominator``).
SCALED = "scaled"
#: The reductions that ``SCALED`` stands for.
SCALED_REDUCTIONS = ("sum", "mean", "batch_mean")
#: The runtime denominator that means: the number of elements the mask keeps (or 1 if none).
COUNT_KEPT = -1.0


def denominator(reduction: str, shape: tuple[int, ...], *, masked: bool) -> float:
    """The runtime denominator of a reduction in ``SCALED_REDUCTIONS``: 0 for "sum" (no
    division), ``COUNT_KEPT`` for "mean" with a mask, else the count (at least 1).

    >>> denominator("sum", (4, 3), masked=True), denominator("mean", (4, 3), masked=False)
    (0.0, 12.0)
    """
    if reduction == "sum":
        return 0.0
    if reduction == "batch_mean":
        check_batch_mean(shape)
        return float(max(shape[0], 1))
    return COUNT_KEPT if masked else float(max(math.prod(shape), 1))


class Reduction(NamedTuple):
    """How to turn element losses into the result of one ``reduction``."""

    reduction: str
    shape: tuple[int, ...]
    #: Full-shape bool of the elements that count; None when all of them do.
    keep: jnp.ndarray | None
    #: The denominator (1 where it is 0: every element is dropped then); None for no division.
    divisor: jnp.ndarray | None
    #: For ``SCALED``: whether to divide at all (False for "sum"); None: as ``divisor`` says.
    dividing: jnp.ndarray | None = None
    #: For ``SCALED``: whether the divisor is the count of a mask (else it was given).
    counted: jnp.ndarray | None = None

    @classmethod
    def plan(cls, reduction: str, shape: tuple[int, ...], *, mask: jnp.ndarray | None,
             weight: jnp.ndarray | None, dtype: jnp.dtype,
             denominator: float | jnp.ndarray | None = None) -> Reduction:
        """Work out the counted elements and the denominator of ``reduction`` (for ``SCALED``,
        from the runtime ``denominator``)."""
        keep = None if mask is None else jnp.broadcast_to(mask, shape)
        if reduction == SCALED:
            given = jnp.asarray(denominator, dtype)
            counted = None
            if keep is not None:
                counted = given == COUNT_KEPT
                given = jnp.where(counted, _nonzero(jnp.sum(keep).astype(dtype)), given)
            return cls(reduction, shape, keep, _nonzero(given), given != 0, counted)
        if reduction in ("none", "sum"):
            return cls(reduction, shape, keep, None)
        if reduction == "batch_mean" or (reduction == "mean" and keep is None):
            if reduction == "batch_mean":
                check_batch_mean(shape)
            count = shape[0] if reduction == "batch_mean" else math.prod(shape)
            # A count of 0 means there are no elements at all: any divisor will do.
            return cls(reduction, shape, keep, jnp.asarray(max(count, 1), dtype))
        if reduction == "mean":
            # A count of 0 drops every element already: only the divisor needs guarding.
            return cls(reduction, shape, keep, _nonzero(jnp.sum(keep).astype(dtype)))
        # weighted_mean: sum(w) can be 0 while elements count; then every element is dropped.
        full = jnp.broadcast_to(jnp.ones((), dtype) if weight is None else weight, shape)
        if keep is not None:
            full = jnp.where(keep, full, jnp.zeros((), dtype))
        denominator = jnp.sum(full)
        nonzero = denominator != 0
        keep = jnp.broadcast_to(nonzero if keep is None else keep & nonzero, shape)
        return cls(reduction, shape, keep, _nonzero(denominator))

    def guard(self, value: jnp.ndarray | None, safe: float) -> jnp.ndarray | None:
        """``value`` where an element counts and ``safe`` elsewhere (full shape), for autodiff."""
        if value is None or self.keep is None:
            return value
        return jnp.where(self.keep, jnp.broadcast_to(value, self.shape),
                         jnp.asarray(safe, value.dtype))

    def within(self, shape: tuple[int, ...], keep: jnp.ndarray | None) -> Reduction:
        """This plan for a chunk of rows of ``shape`` (``keep``: its rows of ``self.keep``):
        the same reduction and denominator, so the chunks' sums add up to the result."""
        return self._replace(shape=shape, keep=keep)

    def total(self, elements: jnp.ndarray) -> jnp.ndarray:
        """The sum of the element losses that count; for "none", those losses themselves."""
        if self.keep is not None:
            elements = jnp.where(self.keep, elements, jnp.zeros((), elements.dtype))
        return elements if self.reduction == "none" else jnp.sum(elements)

    def scale(self, total: jnp.ndarray) -> jnp.ndarray:
        """A ``total`` (of the whole input) divided by the denominator, if any."""
        if self.divisor is None:
            return total
        if self.dividing is None:
            return total / self.divisor
        # XLA turns a division by a constant into a product with its rounded reciprocal, so a
        # given denominator divides that way: the same bits as when it is compiled in (as it
        # is again under a caller's jit). A mask's count is divided by, as it always was.
        quotient = total * (1 / self.divisor)
        if self.counted is not None:
            quotient = jnp.where(self.counted, total / self.divisor, quotient)
        return self._where_dividing(quotient, total)

    def _where_dividing(self, divided: jnp.ndarray, plain: jnp.ndarray) -> jnp.ndarray:
        # A sum is never multiplied, not even by 1: XLA on CPU would flush its subnormals.
        return divided if self.dividing is None else jnp.where(self.dividing, divided, plain)

    def finish(self, elements: jnp.ndarray) -> jnp.ndarray:
        """The reduced loss of the element losses."""
        return self.scale(self.total(elements))

    def gradient(self, partial: jnp.ndarray, like_shape: tuple[int, ...]) -> jnp.ndarray:
        """An element partial derivative turned into the gradient of the reduced loss with
        respect to an argument of shape ``like_shape`` (summed over its broadcast axes)."""
        # Times 1/divisor, as d(loss)/d(element) is; a sum needs no product (none keeps subnormals).
        if self.divisor is not None:
            partial = self._where_dividing(partial * (1 / self.divisor), partial)
        grad = jnp.broadcast_to(partial, self.shape)
        if self.keep is not None:
            grad = jnp.where(self.keep, grad, jnp.zeros((), grad.dtype))
        return sum_to_shape(grad, like_shape)


def sum_to_shape(array: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Sum a full-shape gradient over the axes along which an argument of ``shape`` was broadcast.

    >>> sum_to_shape(jnp.ones((4, 3)), (3,)).tolist()
    [4.0, 4.0, 4.0]
    """
    lead = array.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                      if d == 1 and array.shape[lead + i] != 1)
    return array.sum(axis=axes).reshape(shape) if axes else array.reshape(shape)


def _nonzero(denominator: jnp.ndarray) -> jnp.ndarray:
    """The denominator, with 0 replaced by 1 so that neither the loss nor its gradient is NaN."""
    return jnp.where(denominator != 0, denominator, jnp.ones((), denominator.dtype))
