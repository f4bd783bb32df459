"""Expected values of a case, from the exact oracle.

The suite never trusts a backend, the float64 reference included, for an
expected value: each case's element losses and derivatives are evaluated in
mpmath from the inputs as the backend sees them (cast to the case's dtype),
and reduced exactly (object arrays of mpf values). Results are rounded to
float64 for parity checks and kept exact for ULP grading.

>>> from bce_conformance.cases import case_by_id
>>> golden = expected(case_by_id("logits/edge/f32/(20,)/hard/mean"))
>>> golden.loss.shape, golden.grads["logits"].shape
((), (20,))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from bce_core.arrays import sum_to_shape

from . import oracle
from .cases import Case, numpy_dtype

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
    #: Exact element losses and d loss/d x with its larger term, for ULP grades (flat lists).
    exact_elements: list[Any] = field(default_factory=list)
    exact_grads: list[Any] = field(default_factory=list)
    exact_grad_scales: list[Any] = field(default_factory=list)


def _as_objects(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Broadcast ``value`` (None means 1) to ``shape`` as exact mpf values after the dtype cast."""
    if value is None:
        return np.full(shape, MP.mpf(1), dtype=object)
    as_float = np.asarray(value).astype(dtype).astype(np.float64)
    objects = np.vectorize(lambda v: MP.mpf(float(v)), otypes=[object])(as_float) \
        if as_float.size else as_float.astype(object)
    return np.broadcast_to(objects, shape)


def _float64(values: np.ndarray) -> np.ndarray:
    return np.vectorize(float, otypes=[np.float64])(values) if values.size else \
        np.zeros(values.shape)


def _sum_to_shape(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Exact sum of an object array over the axes an argument of ``shape`` was broadcast along."""
    if values.shape == shape:
        return values
    if values.size == 0:
        return np.full(shape, MP.mpf(0), dtype=object)
    return np.asarray(sum_to_shape(values, shape), dtype=object).reshape(shape)


def _reduce(elements: np.ndarray, reduction: str, keep: np.ndarray, weight: np.ndarray
            ) -> tuple[Any, Any]:
    """Exact (loss, denominator or None for no reduction); a zero denominator is reported as 0."""
    kept = np.where(keep, elements, MP.mpf(0))
    if reduction == "none":
        return kept, None
    total = sum(kept.ravel().tolist(), MP.mpf(0))
    denominators = {"sum": MP.mpf(1), "mean": MP.mpf(int(keep.sum())),
                    "batch_mean": MP.mpf(elements.shape[0] if elements.ndim else 1),
                    "weighted_mean": sum(np.where(keep, weight, MP.mpf(0)).ravel().tolist(),
                                         MP.mpf(0))}
    denominator = denominators[reduction]
    if denominator == 0:
        return MP.mpf(0), MP.mpf(0)
    return total / denominator, denominator


@lru_cache(maxsize=4096)
def expected(case: Case) -> Expected:
    """Exact expected values of ``case`` (cached: cases are immutable)."""
    # NumPy's object loops report the NaN that mpmath returns as an invalid operation.
    with np.errstate(invalid="ignore", over="ignore"):
        return _expected(case)


def _exact_operands(case: Case, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Input, targets, weight, pos_weight as exact full-shape values, and the kept elements."""
    dtype, shape = numpy_dtype(case.dtype), case.shape
    values = tuple(_as_objects(inputs.get(name), shape, dtype)
                   for name in (case.form, "targets", "weight", "pos_weight"))
    keep = np.broadcast_to(inputs["mask"], shape) if "mask" in inputs else np.ones(shape, bool)
    return (*values, keep)


def _expected(case: Case) -> Expected:
    inputs = case.inputs()
    if case.form == "probs":
        return _expected_probs(case, inputs)
    shape = case.shape
    x, y, w, q, keep = _exact_operands(case, inputs)
    eps = case.label_smoothing

    def each(function: Any, *arrays: np.ndarray) -> np.ndarray:
        return np.vectorize(function, otypes=[object])(*arrays) if x.size else \
            np.zeros(shape, dtype=object)

    elements = each(lambda a, b, c, d: oracle.element_loss(a, b, c, d, eps), x, y, w, q)
    grads_and_terms = each(lambda a, b, c, d: oracle.element_grad(a, b, c, d, eps), x, y, w, q)
    partial_x = each(lambda g: g[0], grads_and_terms)
    larger_term = each(lambda g: g[1], grads_and_terms)
    brackets = each(lambda a, b, d: oracle.element_loss(a, b, 1.0, d, eps), x, y, q)

    def partial_y(a: Any, c: Any, d: Any) -> Any:
        positive = MP.mpf(0) if d == 0 else d * oracle.softplus(-a)
        return MP.mpf(0) if c * (1 - eps) == 0 else c * (1 - MP.mpf(eps)) * (positive - oracle.softplus(a))

    def partial_q(a: Any, b: Any, c: Any) -> Any:
        coefficient = c * oracle.smoothed(b, eps)[0]
        return MP.mpf(0) if coefficient == 0 else coefficient * oracle.softplus(-a)

    partials = {"logits": partial_x, "targets": each(partial_y, x, w, q), "weight": brackets,
                "pos_weight": each(partial_q, x, y, w)}
    loss, denominator = _reduce(elements, case.reduction, keep, w)
    factor = np.where(keep, MP.mpf(1), MP.mpf(0)) if denominator is None else \
        np.where(keep, MP.mpf(0) if denominator == 0 else 1 / denominator, MP.mpf(0))
    shapes = {"weight": np.shape(inputs.get("weight", ())),
              "pos_weight": np.shape(inputs.get("pos_weight", ()))}
    grads = {}
    for name, partial in partials.items():
        if name in ("weight", "pos_weight") and name not in inputs:
            continue
        if name == "weight" and case.reduction == "weighted_mean":
            partial = each(lambda p: p - loss, partial)
        grad = each(lambda f, p: MP.mpf(0) if f == 0 else f * p, factor, partial)
        grads[name] = _float64(_sum_to_shape(grad, shapes.get(name, shape)))
    grad_hess = None
    second = each(lambda a, b, c, d: oracle.element_hessian_smoothed(a, b, c, d, eps), x, y, w, q)
    second = np.where(keep, second, MP.mpf(0)) if denominator is None else \
        each(lambda f, h: MP.mpf(0) if f == 0 else f * h, factor, second)
    if "mask" not in inputs and not eps:
        hess = each(lambda a, b, c, d: oracle.element_hessian(a, b, c, d), x, y, w, q)
        grad_hess = (_float64(partial_x), _float64(hess))
    flat = lambda values: list(values.ravel())  # noqa: E731
    return Expected(
        loss=_float64(np.asarray(loss, dtype=object)), grads=grads, grad_hess=grad_hess,
        second_derivative=_float64(second),
        exact_elements=flat(elements), exact_grads=flat(partial_x),
        exact_grad_scales=flat(larger_term))


def _expected_probs(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    p, y, w, q, keep = _exact_operands(case, inputs)
    eps = case.label_smoothing
    vectorize = lambda f: np.vectorize(f, otypes=[object])  # noqa: E731
    elements = vectorize(lambda a, b, c, d: oracle.element_loss_probs(a, b, c, d, eps))(p, y, w, q)
    grads = vectorize(lambda a, b, c, d: oracle.element_grad_probs(a, b, c, d, eps))(p, y, w, q)
    loss, denominator = _reduce(elements, case.reduction, keep, w)
    factor = np.where(keep, MP.mpf(1), MP.mpf(0)) if denominator is None else \
        np.where(keep, MP.mpf(0) if denominator == 0 else 1 / denominator, MP.mpf(0))
    grad = vectorize(lambda f, g: MP.mpf(0) if f == 0 else f * g)(factor, grads)
    return Expected(loss=_float64(np.asarray(loss, dtype=object)),
                    grads={"probs": _float64(grad)}, exact_elements=list(elements.ravel()))
