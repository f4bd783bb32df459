"""Parity checks: is the backend computing the same function as the spec?

A result passes when, elementwise, |got - expected| <= k * eps(dtype) * scale,
where scale is the sum of the magnitudes of the terms a reasonable stable
formula adds (so a formula that is merely less accurate passes, and a wrong
one, an overflow or a misplaced weight fails), and reduced values allow the
summation error of their length. Accuracy in ULP is graded separately.

>>> import numpy as np
>>> compare("loss", np.float32(1.0000001), np.float64(1.0), np.float64(1.0), "float32").passed
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bce_core import reference
from bce_core.arrays import reduce_loss, sum_to_shape

#: Unit roundoff of each dtype (half the spacing at 1).
EPS = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}

#: Unit roundoff of the arithmetic the spec prescribes for each dtype (halves: float32).
SUMMATION_EPS = {"float16": EPS["float32"], "bfloat16": EPS["float32"]}

#: Absolute error floor: the smallest normal number of each dtype. Results below it may be
#: flushed to zero (XLA and TensorFlow on CPU, GPUs in fast modes) without failing parity.
TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}

#: Largest finite value of each dtype; beyond it (past half a spacing) values round to inf.
LARGEST = {
    "float16": 65520.0,
    "bfloat16": 3.3961775292304e38,
    "float32": 3.4028235677973366e38,
    "float64": np.inf,
}

#: Allowed multiple of eps * scale (+ the smallest subnormal) for one element.
K = 8


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one result with its expected value."""

    quantity: str
    passed: bool
    #: Worst error in units of eps * scale (0 when equal); inf for a wrong inf/NaN.
    worst: float
    detail: str = ""


def compare(
    quantity: str, got: Any, expected: Any, scale: Any, dtype: str, terms: Any = 1
) -> Comparison:
    """Compare ``got`` with ``expected`` within K + terms - 1 units of eps * scale + tiny."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        return Comparison(quantity, False, np.inf, f"shape {got.shape}, expected {expected.shape}")
    scale = np.broadcast_to(np.asarray(scale, np.float64), got.shape)
    # Half precision is computed in float32 and rounded once: its sums carry float32 error.
    summation = SUMMATION_EPS.get(dtype, EPS[dtype]) / EPS[dtype]
    allowed = np.broadcast_to(K + (np.asarray(terms, np.float64) - 1) * summation, got.shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # An exact value beyond the dtype's largest finite number is matched by the infinity
        # it rounds to (a float16 gradient of 1e12 is inf in float16).
        overflows = np.isfinite(expected) & (np.abs(expected) > LARGEST[dtype])
        same = (
            (got == expected)
            | (np.isnan(got) & np.isnan(expected))
            | (overflows & np.isinf(got) & (np.sign(got) == np.sign(expected)))
        )
        finite = np.isfinite(got) & np.isfinite(expected) & np.isfinite(scale)
        units = np.where(
            same,
            0.0,
            np.where(finite, np.abs(got - expected) / (EPS[dtype] * scale + TINY[dtype]), np.inf),
        )
    failed = units > allowed
    worst_index = np.unravel_index(int(np.argmax(units)), units.shape) if units.size else ()
    worst = float(units[worst_index]) if units.size else 0.0
    detail = ""
    if units.size and worst > 0:
        if failed.any():  # report a failing element, the worst of them
            worst_index = np.unravel_index(int(np.argmax(np.where(failed, units, -1))), units.shape)
        index = tuple(int(i) for i in worst_index)
        detail = (
            f"at index {index}: got {got[index]!r}, expected {expected[index]!r} "
            f"(allowed {allowed[index]:g} x eps x {scale[index]:.3g})"
        )
    return Comparison(quantity, not failed.any(), worst, detail)


@dataclass(frozen=True)
class Scales:
    """Per-element magnitudes that bound the rounding error of each quantity."""

    loss: np.ndarray
    bracket: np.ndarray
    grad_logits: np.ndarray
    grad_targets: np.ndarray
    grad_pos_weight: np.ndarray
    hessian: np.ndarray


def logit_scales(x: np.ndarray, y: np.ndarray, w: Any, q: Any, eps: float) -> Scales:
    """Scales of the logits form, from float64 inputs."""
    yp, one_minus = reference.smoothed_targets(y, eps)
    with np.errstate(over="ignore", invalid="ignore"):
        sp_pos, sp_neg = reference.softplus(x), reference.softplus(-x)
        s_pos, s_neg = reference.sigmoid(x), reference.sigmoid(-x)
        coefficient = one_minus + q * yp
        # |x| and the coefficients cover forms such as max(x,0) - x*y + log1p(exp(-|x|)).
        bracket = one_minus * sp_pos + q * yp * sp_neg + np.abs(x) + coefficient
        aw = np.abs(w)
        return Scales(
            loss=aw * bracket,
            bracket=bracket,
            # sigma(x) - y style formulas carry an absolute error of the coefficients' size.
            grad_logits=aw * coefficient,
            grad_targets=aw * (1 - eps) * (q * sp_neg + sp_pos),
            grad_pos_weight=aw * yp * (sp_neg + np.abs(x) + 1),
            hessian=aw * coefficient * (s_pos * s_neg + s_pos),
        )


def probs_loss_scale(
    p: np.ndarray, y: np.ndarray, w: Any, q: Any, eps: float, log_clamp: float
) -> np.ndarray:
    """Scale of the probability-form loss (log(1 - p) forms carry an absolute error of ~eps)."""
    yp, one_minus = reference.smoothed_targets(y, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.abs(np.maximum(np.log(p), log_clamp))
        log_1mp = np.abs(np.maximum(np.log1p(-p), log_clamp))
    return np.abs(w) * (q * yp * log_p + one_minus * log_1mp + q * yp + one_minus)


def probs_grad_scale(p: np.ndarray, y: np.ndarray, w: Any, q: Any, eps: float) -> np.ndarray:
    """Scale of d loss / d p: the magnitudes of the numerator's two terms over the floor."""
    yp, one_minus = reference.smoothed_targets(y, eps)
    with np.errstate(invalid="ignore"):
        return (
            np.abs(w)
            * (np.abs(p) * (one_minus + q * yp) + q * yp)
            / np.maximum(np.abs(p * (1 - p)), 1e-12)
        )


def reduced_scale(scale: np.ndarray, reduction: str, mask: Any, weight: Any) -> tuple[Any, int]:
    """Scale and number of summed terms of a reduced value with per-element ``scale``."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf scale: exact match required
        reduced = reduce_loss(scale, reduction, mask=mask, weight=weight)
    terms = 1 if reduction == "none" else max(int(np.size(scale)), 1)
    return reduced.loss, terms


def gradient_scale(scale: np.ndarray, factor: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Scale of a reduced gradient summed back to ``shape``, and the number of terms per entry."""
    with np.errstate(over="ignore", invalid="ignore"):
        # A dropped element (factor 0) adds nothing, even where its scale is NaN or inf.
        scaled = np.where(np.equal(factor, 0), 0.0, np.abs(scale * factor))
    full = np.broadcast_to(scaled, np.broadcast_shapes(np.shape(scale), np.shape(factor)))
    if full.shape == shape:
        return full, 1
    with np.errstate(over="ignore", invalid="ignore"):
        return sum_to_shape(np.array(full), shape), sum_to_shape(np.ones(full.shape), shape)
