"""The float64 reference implementation of the specification.

Written for clarity: every formula of the spec appears once, evaluated in
float64 with the stable forms the spec prescribes. The conformance suite
compares backends against it (and it is itself checked against an exact
mpmath evaluation in the tests). Inputs are cast to the input's dtype first,
as the spec says, then to float64; results are float64 NumPy arrays.

>>> round(float(binary_cross_entropy_with_logits([[9.7], [0.0]], [[0.0], [1.0]])), 5)
5.1966
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import (
    NUMPY_OPS,
    Operands,
    gradients_of_reduction,
    prepare_operands,
    quiet_float_errors,
    reduce_loss,
    validate_operands,
)
from .rules import pack_gradients, smoothed_target_slope, smoothed_targets, zero_safe
from .spec import DEFAULT_LOG_CLAMP, PROBS_GRAD_EPS, check_label_smoothing, check_options

# ---------------------------------------------------------------------------
# Elementwise building blocks (float64 in, float64 out).


def softplus(z: np.ndarray) -> np.ndarray:
    """softplus(z) = log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)).

    >>> float(softplus(np.float64(0.0)))
    0.6931471805599453
    """
    with np.errstate(invalid="ignore"):
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), evaluated without overflow on either side.

    >>> float(sigmoid(np.float64(-800.0)))
    0.0
    """
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def term(coefficient: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``rules.zero_safe`` on NumPy arrays: a coefficient of exactly 0 contributes exactly 0.

    The weight is applied as a term's coefficient of its own (never folded into another
    coefficient first), so that a weight of 0 gives 0 whatever the other operands hold."""
    return np.asarray(zero_safe(NUMPY_OPS, coefficient, value))


def _float64_operands(ops: Operands[np.ndarray], eps: float) -> dict[str, np.ndarray]:
    y = ops.targets.astype(np.float64)
    yp, one_minus_yp = smoothed_targets(y, eps)
    return {
        "x": ops.inputs.astype(np.float64),
        "y": y,
        "yp": yp,
        "1-yp": one_minus_yp,
        "w": np.float64(1.0) if ops.weight is None else ops.weight.astype(np.float64),
        "q": np.float64(1.0) if ops.pos_weight is None else ops.pos_weight.astype(np.float64),
    }


def element_bracket(
    x: np.ndarray, yp: np.ndarray, one_minus_yp: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """(1 - y') softplus(x) + q y' softplus(-x): the element loss before the weight."""
    return term(one_minus_yp, softplus(x)) + term(q * yp, softplus(-x))


def element_grad_logits(
    x: np.ndarray, yp: np.ndarray, one_minus_yp: np.ndarray, q: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """d loss / d x = w [ (1 - y') sigma(x) - q y' sigma(-x) ]."""
    return term(w, term(one_minus_yp, sigmoid(x)) - term(q * yp, sigmoid(-x)))


def element_hessian_logits(
    x: np.ndarray, yp: np.ndarray, one_minus_yp: np.ndarray, q: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """d2 loss / d x2 = w (1 + (q - 1) y') sigma(x) sigma(-x), with 1 + (q-1)y' = (1-y') + q y'."""
    return term(w, (one_minus_yp + q * yp) * sigmoid(x) * sigmoid(-x))


def element_grad_probs(
    p: np.ndarray, yp: np.ndarray, one_minus_yp: np.ndarray, q: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """d loss / d p = w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12); NaN where p is
    outside [0, 1], as the loss is."""
    with np.errstate(invalid="ignore"):
        slope = term(
            w, (p * (one_minus_yp + q * yp) - q * yp) / np.maximum(p * (1.0 - p), PROBS_GRAD_EPS)
        )
    return np.where((p >= 0) & (p <= 1), slope, np.nan)


# ---------------------------------------------------------------------------
# The public functions, in float64.


@quiet_float_errors
def binary_cross_entropy_with_logits(
    logits: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
    mask: Any = None,
    reduction: str = "mean",
    validate: bool = False,
) -> np.ndarray:
    """Reference loss from logits (float64).

    >>> float(binary_cross_entropy_with_logits([800.0], [1.0], reduction="sum"))
    0.0
    """
    options = check_options(label_smoothing=label_smoothing, reduction=reduction, validate=validate)
    eps, reduction = options.eps, options.reduction
    ops = prepare_operands(
        "logits", logits, targets, weight=weight, pos_weight=pos_weight, mask=mask
    )
    if validate:
        validate_operands(ops, "logits", input_in_unit_interval=False)
    v = _float64_operands(ops, eps)
    elements = term(v["w"], element_bracket(v["x"], v["yp"], v["1-yp"], v["q"]))
    return reduce_loss(elements, reduction, mask=ops.mask, weight=v["w"]).loss


@quiet_float_errors
def binary_cross_entropy(
    probs: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
    mask: Any = None,
    reduction: str = "mean",
    log_clamp: float = DEFAULT_LOG_CLAMP,
    validate: bool = False,
) -> np.ndarray:
    """Reference loss from probabilities (float64).

    >>> round(float(binary_cross_entropy([0.5], [1.0])), 6)
    0.693147
    """
    options = check_options(
        label_smoothing=label_smoothing, reduction=reduction, log_clamp=log_clamp, validate=validate
    )
    eps, reduction, clamp = options.eps, options.reduction, options.log_clamp
    ops = prepare_operands("probs", probs, targets, weight=weight, pos_weight=pos_weight, mask=mask)
    if validate:
        validate_operands(ops, "probs", input_in_unit_interval=True)
    v = _float64_operands(ops, eps)
    p = v["x"]
    with np.errstate(invalid="ignore", divide="ignore"):
        log_p = np.maximum(np.log(p), clamp)
        log_1mp = np.maximum(np.log1p(-p), clamp)
    bracket = -(term(v["q"] * v["yp"], log_p) + term(v["1-yp"], log_1mp))
    # p outside [0, 1] (or NaN) is NaN even where its term's coefficient is 0.
    bracket = np.where((p >= 0) & (p <= 1), bracket, np.nan)
    elements = term(v["w"], bracket)
    return reduce_loss(elements, reduction, mask=ops.mask, weight=v["w"]).loss


@quiet_float_errors
def value_and_grad(
    logits: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
    mask: Any = None,
    reduction: str = "mean",
    validate: bool = False,
    wrt: str | tuple[str, ...] = "logits",
) -> tuple[np.ndarray, Any]:
    """Reference loss and its gradient with respect to ``wrt`` (float64).

    >>> loss, grad = value_and_grad([0.0, 0.0], [0.0, 1.0], reduction="sum")
    >>> grad.tolist()
    [0.5, -0.5]
    """
    options = check_options(
        label_smoothing=label_smoothing,
        reduction=reduction,
        wrt=wrt,
        weight=weight,
        pos_weight=pos_weight,
        validate=validate,
    )
    eps, reduction = options.eps, options.reduction
    ops = prepare_operands(
        "logits", logits, targets, weight=weight, pos_weight=pos_weight, mask=mask
    )
    if validate:
        validate_operands(ops, "logits", input_in_unit_interval=False)
    v = _float64_operands(ops, eps)
    x, yp, one_minus_yp, w, q = v["x"], v["yp"], v["1-yp"], v["w"], v["q"]
    bracket = element_bracket(x, yp, one_minus_yp, q)
    reduced = reduce_loss(term(w, bracket), reduction, mask=ops.mask, weight=w)
    partials = {
        "logits": lambda: element_grad_logits(x, yp, one_minus_yp, q, w),
        "targets": lambda: term(
            w, smoothed_target_slope(eps) * (term(q, softplus(-x)) - softplus(x))
        ),
        "weight": lambda: bracket,
        "pos_weight": lambda: term(w, term(yp, softplus(-x))),
    }
    grads = gradients_of_reduction(options.wrt, partials, ops, reduction, reduced)
    return reduced.loss, pack_gradients(grads, options.wrt_as_tuple)


@quiet_float_errors
def grad_hess(
    logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reference elementwise (d loss/d x, d2 loss/d x2), weights applied (float64).

    >>> g, h = grad_hess([0.0], [1.0])
    >>> g.tolist(), h.tolist()
    ([-0.5], [0.25])
    """
    ops = prepare_operands(
        "logits", logits, targets, weight=weight, pos_weight=pos_weight, mask=None
    )
    v = _float64_operands(ops, 0.0)
    args = (v["x"], v["yp"], v["1-yp"], v["q"], v["w"])
    full = np.broadcast_to
    return (
        np.array(full(element_grad_logits(*args), ops.shape)),
        np.array(full(element_hessian_logits(*args), ops.shape)),
    )


@quiet_float_errors
def probs_grad(
    probs: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
) -> np.ndarray:
    """Reference elementwise d loss / d probs of the probability form (float64).

    >>> probs_grad([0.25], [1.0]).tolist()
    [-4.0]
    """
    eps = check_label_smoothing(label_smoothing)
    ops = prepare_operands("probs", probs, targets, weight=weight, pos_weight=pos_weight, mask=None)
    v = _float64_operands(ops, eps)
    return np.array(
        np.broadcast_to(element_grad_probs(v["x"], v["yp"], v["1-yp"], v["q"], v["w"]), ops.shape)
    )
