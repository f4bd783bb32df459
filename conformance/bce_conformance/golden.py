"""Expected values of a case, from the exact oracle.

The suite never trusts a backend, the float64 reference included, for an
expected value: each case's element losses and derivatives are evaluated in
mpmath from the inputs as the backend sees them (cast to the case's dtype),
and reduced exactly. Results are rounded to float64 for parity checks and
kept as ``oracle.ExactValues`` (a float64, the float64 of what it left out,
and the dtype's ULP there) for ULP grading.

The oracle runs once per distinct tuple of operand values, not once per
element: a large case tiles a few dozen values over millions of elements, so
its exact sum is a weighted count of a few dozen exact values, and its golden
values cost what a small case's do.

>>> from bce_conformance.cases import case_by_id
>>> golden = expected(case_by_id("logits/edge/f32/(20,)/hard/mean"))
>>> golden.loss.shape, golden.grads["logits"].shape
((), (20,))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import oracle
from .cases import Case, numpy_dtype
from .oracle import ExactValues

MP = oracle.MP


@dataclass(frozen=True)
class Expected:
    """Exact values of one case, rounded to float64, plus exact element values for grading."""

    loss: np.ndarray
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    #: grad_hess of the case (logits form without mask or smoothing), else None.
    grad_hess: tuple[np.ndarray, np.ndarray] | None = None
    #: d(sum of element losses)/d logits, diagonal of the Hessian (logits form).
    second_derivative: np.ndarray | None = None
    #: Exact element losses and d loss / d x, flat, for ULP grades. The gradient's ULP is
    #: taken at its exact value for hard targets and at its larger term for soft ones.
    exact_elements: ExactValues | None = None
    exact_grads: ExactValues | None = None


@lru_cache(maxsize=512)
def expected(case: Case) -> Expected:
    """Exact expected values of ``case`` (cached: cases are immutable)."""
    # NumPy's object loops report the NaN that mpmath returns as an invalid operation.
    with np.errstate(invalid="ignore", over="ignore"):
        return _expected(case, case.inputs())


@dataclass(frozen=True)
class _Distinct:
    """The case's elements grouped by their tuple of operand values."""

    #: Per distinct tuple: exact x, y, w, q (mpf).
    x: list[Any]
    y: list[Any]
    w: list[Any]
    q: list[Any]
    #: Per element (flat): which distinct tuple it holds.
    inverse: np.ndarray
    #: Per element (flat): kept by the mask.
    keep: np.ndarray
    #: Per distinct tuple: how many kept elements hold it.
    kept_counts: np.ndarray

    def each(self, function: Callable[..., Any]) -> list[Any]:
        """``function(x, y, w, q)`` once per distinct tuple."""
        return [function(*values) for values in zip(self.x, self.y, self.w, self.q)]


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (NaN by its bits) and each element's index among them."""
    bits = np.ascontiguousarray(values).view(np.int64)
    distinct, inverse = np.unique(bits, return_inverse=True)
    return distinct.view(np.float64), inverse.ravel()


def _distinct(case: Case, inputs: dict[str, np.ndarray]) -> _Distinct:
    dtype, shape = numpy_dtype(case.dtype), case.shape
    columns = []
    for name in (case.form, "targets", "weight", "pos_weight"):
        value = inputs.get(name)
        as_float = (
            np.ones(shape)
            if value is None
            else np.broadcast_to(np.asarray(value).astype(dtype).astype(np.float64), shape)
        )
        columns.append(_codes(as_float.ravel()))
    code = np.zeros(int(np.prod(shape)), dtype=np.int64)
    for distinct, inverse in columns:
        code = code * len(distinct) + inverse
    tuples, inverse = np.unique(code, return_inverse=True)
    inverse = inverse.ravel()
    exact = []
    for distinct, _ in reversed(columns):
        exact.append([MP.mpf(float(distinct[c % len(distinct)])) for c in tuples])
        tuples = tuples // len(distinct)
    q, w, y, x = exact
    keep = (
        np.broadcast_to(inputs["mask"], shape).ravel()
        if "mask" in inputs
        else np.ones(inverse.size, bool)
    )
    counts = np.bincount(inverse[keep], minlength=len(x))
    return _Distinct(x, y, w, q, inverse, np.asarray(keep), counts)


def _denominator(case: Case, groups: _Distinct) -> Any:
    """The reduction's exact denominator (None for no reduction)."""
    if case.reduction == "none":
        return None
    if case.reduction == "sum":
        return MP.mpf(1)
    if case.reduction == "mean":
        return MP.mpf(int(groups.keep.sum()))
    if case.reduction == "batch_mean":
        return MP.mpf(case.shape[0] if case.shape else 1)
    return MP.fsum(int(n) * w for n, w in zip(groups.kept_counts, groups.w) if n)


def _total(groups: _Distinct, elements: list[Any]) -> Any:
    """The exact sum of the kept elements: a weighted count of the distinct values."""
    return MP.fsum(int(n) * e for n, e in zip(groups.kept_counts, elements) if n)


def _zero_safe(factor: Any, value: Any) -> Any:
    return MP.mpf(0) if factor == 0 else factor * value


def _spread(groups: _Distinct, values: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Per-element float64 of per-tuple exact values, 0 where masked out."""
    rounded = np.array([float(v) for v in values], dtype=np.float64)
    return np.where(groups.keep, rounded[groups.inverse] if rounded.size else 0.0, 0.0).reshape(
        shape
    )


def _summed(
    groups: _Distinct, values: list[Any], shape: tuple[int, ...], arg_shape: tuple[int, ...]
) -> np.ndarray:
    """Exact sums of per-element values over the axes an argument of ``arg_shape`` was
    broadcast along (kept elements only), rounded to float64."""
    if tuple(arg_shape) == tuple(shape):
        return _spread(groups, values, shape)
    entries = int(np.prod(arg_shape))
    entry = np.broadcast_to(np.arange(entries).reshape(arg_shape), shape).ravel()
    pair = entry[groups.keep].astype(np.int64) * max(len(values), 1) + groups.inverse[groups.keep]
    pairs, counts = np.unique(pair, return_counts=True)
    sums = [MP.mpf(0)] * entries
    for code, count in zip(pairs.tolist(), counts.tolist()):
        sums[code // len(values)] += int(count) * values[code % len(values)]
    return np.array([float(s) for s in sums], dtype=np.float64).reshape(arg_shape)


def _expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    groups = _distinct(case, inputs)
    if case.form == "probs":
        return _expected_probs(case, inputs, groups)
    shape, eps = case.shape, case.label_smoothing
    elements = groups.each(lambda a, b, c, d: oracle.element_loss(a, b, c, d, eps))
    grads_and_terms = groups.each(lambda a, b, c, d: oracle.element_grad(a, b, c, d, eps))
    partial_x = [g[0] for g in grads_and_terms]

    @oracle.data_rule
    def partial_y(a: Any, b: Any, c: Any, d: Any) -> Any:
        positive = MP.mpf(0) if d == 0 else d * oracle.softplus(-a)
        return _zero_safe(c * (1 - MP.mpf(eps)), positive - oracle.softplus(a))

    @oracle.data_rule
    def partial_q(a: Any, b: Any, c: Any, d: Any) -> Any:
        return _zero_safe(c * oracle.smoothed(b, eps)[0], oracle.softplus(-a))

    partials = {
        "logits": partial_x,
        "targets": groups.each(partial_y),
        "weight": groups.each(
            oracle.data_rule(lambda a, b, c, d: oracle.element_loss(a, b, 1.0, d, eps))
        ),
        "pos_weight": groups.each(partial_q),
    }
    denominator = _denominator(case, groups)
    if denominator is None:
        loss = _spread(groups, elements, shape)
        factor = MP.mpf(1)
    else:
        factor = MP.mpf(0) if denominator == 0 else 1 / denominator
        loss = np.array(float(_total(groups, elements) * factor))
    reduced_loss = None if denominator is None else _total(groups, elements) * factor
    grads = {}
    for name, partial in partials.items():
        if name in ("weight", "pos_weight") and name not in inputs:
            continue
        if name == "weight" and case.reduction == "weighted_mean":
            partial = [p - reduced_loss for p in partial]
        scaled = [_zero_safe(factor, p) for p in partial]
        grads[name] = _summed(
            groups, scaled, shape, np.shape(inputs[name]) if name in inputs else shape
        )
    hessians = groups.each(lambda a, b, c, d: oracle.element_hessian_smoothed(a, b, c, d, eps))
    second = _spread(groups, [_zero_safe(factor, h) for h in hessians], shape)
    grad_hess = None
    if "mask" not in inputs and not eps:
        grad_hess = (_spread(groups, partial_x, shape), _spread(groups, hessians, shape))
    # Hard targets are graded against the exact gradient, soft ones against the larger term.
    references = [
        None if (y == 0 or y == 1) and not eps else g[1] for y, g in zip(groups.y, grads_and_terms)
    ]
    dtype = case.dtype
    return Expected(
        loss=loss,
        grads=grads,
        grad_hess=grad_hess,
        second_derivative=second,
        exact_elements=ExactValues.of(elements, dtype).take(groups.inverse),
        exact_grads=ExactValues.of(partial_x, dtype, references).take(groups.inverse),
    )


def _expected_probs(case: Case, inputs: dict[str, np.ndarray], groups: _Distinct) -> Expected:
    eps, clamp = case.label_smoothing, case.log_clamp_value
    elements = groups.each(lambda a, b, c, d: oracle.element_loss_probs(a, b, c, d, eps, clamp))
    partial = groups.each(lambda a, b, c, d: oracle.element_grad_probs(a, b, c, d, eps))
    denominator = _denominator(case, groups)
    if denominator is None:
        loss, factor = _spread(groups, elements, case.shape), MP.mpf(1)
    else:
        factor = MP.mpf(0) if denominator == 0 else 1 / denominator
        loss = np.array(float(_total(groups, elements) * factor))
    grad = _spread(groups, [_zero_safe(factor, g) for g in partial], case.shape)
    return Expected(
        loss=loss,
        grads={"probs": grad},
        exact_elements=ExactValues.of(elements, case.dtype).take(groups.inverse),
    )
