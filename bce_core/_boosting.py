"""The part of the XGBoost and LightGBM objectives that both share.

A booster's custom objective gets the margins (raw scores, before the sigmoid), the labels
and the sample weights, and returns the first and second derivative of the loss with respect
to each margin. :func:`gradient_and_hessian` turns what the booster passes into float64
arrays, checks them and calls ``bce_core.grad_hess`` on the NumPy backend, which computes
sigma(x) and sigma(-x) each from its own stable form: the gradient and the curvature keep
their relative accuracy at any margin (at margin 50 the curvature is 1.93e-22, where the
textbook p (1 - p) is 0). With ``label_smoothing`` the derivatives are combined from those at
the targets 0 and 1 with the spec's coefficients y' and 1 - y', so that 1 - y' keeps its
relative accuracy: the gradient is within 4 ULP of the spec's ``value_and_grad``.

The curvature sigma(x) sigma(-x) falls below float32's smallest normal number, 2**-126, at
|x| > 87.3 and below float64's range at |x| > 745; boosters store gradients in float32. So
the factor sigma(x) sigma(-x) is floored at :data:`HESSIAN_FLOOR` = 2**-126: the curvature
that reaches the booster is positive wherever the loss has curvature at all (a positive
weight and a positive coefficient (1 - y') + q y'), and exact for |x| <= 87.3. A zero weight
still gives a zero curvature. The floor is far below the least curvature a leaf needs by
default (XGBoost's ``min_child_weight`` 1, LightGBM's ``min_sum_hessian_in_leaf`` 1e-3).

>>> import numpy as np
>>> grad, hess = gradient_and_hessian(np.array([0.0, 50.0, -800.0]), np.array([1.0, 0.0, 1.0]))
>>> grad.tolist(), hess.tolist()
([-0.5, 1.0, -1.0], [0.25, 1.9287498479639178e-22, 1.1754943508222875e-38])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .api import grad_hess
from .rules import smoothed_targets
from .spec import check_label_smoothing, check_number

HESSIAN_FLOOR: float = float(np.finfo(np.float32).tiny)
"""The least value of sigma(x) sigma(-x) the objectives return: float32's smallest normal
number, 2**-126 (the exact value is below it where |x| > 87.3)."""


def check_pos_weight(pos_weight: object) -> float | None:
    """``pos_weight`` as a float: None (no weighting) or a finite real number >= 0.

    >>> check_pos_weight(3)
    3.0
    >>> check_pos_weight(-1.0)
    Traceback (most recent call last):
    ValueError: pos_weight=-1.0 must be finite and >= 0; pass the ratio of negatives to \
positives, for example pos_weight=3.0, or None for no weighting.
    """
    if pos_weight is None:
        return None
    value = check_number("pos_weight", pos_weight, "3.0")
    if not (np.isfinite(value) and value >= 0.0):
        raise ValueError(
            f"pos_weight={value!r} must be finite and >= 0; pass the ratio of negatives to "
            f"positives, for example pos_weight=3.0, or None for no weighting."
        )
    return value


@dataclass(frozen=True)
class ObjectiveOptions:
    """The options every objective holds, checked when it is made: a frozen, picklable value
    (a model that holds its objective can be saved, copied and cloned).

    >>> ObjectiveOptions(pos_weight=2, label_smoothing=0)
    ObjectiveOptions(pos_weight=2.0, label_smoothing=0.0)
    """

    pos_weight: float | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pos_weight", check_pos_weight(self.pos_weight))
        object.__setattr__(self, "label_smoothing", check_label_smoothing(self.label_smoothing))

    def derivatives(
        self, margins: Any, labels: Any, weights: Any, names: tuple[str, str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`gradient_and_hessian` with these options."""
        return gradient_and_hessian(
            margins,
            labels,
            weights,
            pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing,
            names=names,
        )


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, why: str, fix: str) -> None:
    """Raise ValueError naming the first index where ``bad`` holds, if any."""
    if bad.any():
        index = int(np.argmax(bad.ravel()))
        raise ValueError(f"{name}[{index}] = {values.ravel()[index].item()!r} {why}; {fix}.")


def _as_float64(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array (a copy where the dtype differs; never written into)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be an array of numbers, got a value of type {type(value).__name__}; "
            f"pass a NumPy array."
        ) from error


def gradient_and_hessian(
    margins: Any,
    labels: Any,
    weights: Any = None,
    *,
    pos_weight: float | None = None,
    label_smoothing: float = 0.0,
    names: tuple[str, str, str] = ("margins", "labels", "weights"),
) -> tuple[np.ndarray, np.ndarray]:
    """(d loss / d margin, d2 loss / d margin2) per margin, float64, of the margins' shape.

    ``labels`` in [0, 1] (soft labels allowed) hold one value per margin; a 2-D margin array
    of shape (n, k) (one margin per target of a multi-output model) takes labels of any shape
    with n * k values. ``weights`` is None, empty (no weights) or one value per sample, >= 0.
    ``pos_weight`` and ``label_smoothing`` must already be checked
    (:class:`ObjectiveOptions` does). ``names`` are the three arguments as the caller's
    library names them, for the errors.

    >>> gradient_and_hessian([0.0], [2.0], names=("y_pred", "y_true", "sample_weight"))
    Traceback (most recent call last):
    ValueError: y_true[0] = 2.0 is not in [0, 1]; binary cross-entropy takes labels in [0, 1] \
(0 and 1, or probabilities): encode the classes as 0 and 1.
    """
    margin_name, label_name, weight_name = names
    x = _as_float64(margin_name, margins)
    y = _as_float64(label_name, labels)
    if y.size != x.size:
        raise ValueError(
            f"{label_name} holds {y.size} values for {x.size} {margin_name} (shape "
            f"{x.shape}): this objective is binary, one label per margin; for more than two "
            f"classes use a multi-class objective (XGBoost's multi:softprob, LightGBM's "
            f"multiclass), or pass one 0/1 label per margin of a multi-output model."
        )
    y = y.reshape(x.shape)
    _first_bad(
        label_name,
        y,
        ~((y >= 0.0) & (y <= 1.0)),
        "is not in [0, 1]",
        "binary cross-entropy takes labels in [0, 1] (0 and 1, or probabilities): "
        "encode the classes as 0 and 1",
    )
    w: np.ndarray | None = None
    if weights is not None:
        w = _as_float64(weight_name, weights)
        if w.size == 0:
            w = None
        else:
            samples = x.shape[0] if x.ndim else 1
            if w.size != samples:
                raise ValueError(
                    f"{weight_name} holds {w.size} values for {samples} samples; pass one "
                    f"weight per sample, or none."
                )
            _first_bad(
                weight_name,
                w,
                ~((w >= 0.0) & np.isfinite(w)),
                "is not a finite number >= 0",
                "pass finite sample weights >= 0",
            )
            w = w.reshape((samples,) + (1,) * max(x.ndim - 1, 0)) if x.ndim else w.reshape(())
    smoothed, one_minus = smoothed_targets(y, label_smoothing)
    if label_smoothing == 0.0:
        grad, hess = grad_hess(x, y, weight=w, pos_weight=pos_weight, backend="numpy")
    else:
        grad, hess = _smoothed_derivatives(x, smoothed, one_minus, w, pos_weight)
    coefficient = one_minus + (1.0 if pos_weight is None else pos_weight) * smoothed
    if w is not None:
        coefficient = coefficient * w
    # sigma(x) sigma(-x) >= HESSIAN_FLOOR; NaN margins stay NaN (np.maximum propagates NaN).
    hess = np.maximum(hess, coefficient * HESSIAN_FLOOR)
    return np.asarray(grad, dtype=np.float64), np.asarray(hess, dtype=np.float64)


def _smoothed_derivatives(
    x: np.ndarray,
    smoothed: np.ndarray,
    one_minus: np.ndarray,
    w: np.ndarray | None,
    pos_weight: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The derivatives at smoothed targets from their two coefficients y' and 1 - y'.

    Passed as targets, y' would have its complement recomputed as 1 - y', which loses the
    relative accuracy of 1 - y' where y' is close to 1 (a small label_smoothing). The
    derivatives are linear in the target, so they are taken at the targets 0 and 1 (one
    ``grad_hess`` call over both) and combined with (1 - y', y') as the spec computes them:
    grad = (1 - y') w sigma(x) - y' w q sigma(-x), and the same for the curvature.
    """
    n = x.shape[0] if x.ndim else 1
    both = np.concatenate([x.reshape((n,) + x.shape[1:])] * 2)
    targets = np.concatenate([np.zeros_like(both[:n]), np.ones_like(both[:n])])
    weights = None if w is None else np.concatenate([np.broadcast_to(w, (n,) + w.shape[1:])] * 2)
    grads, hesses = grad_hess(both, targets, weight=weights, pos_weight=pos_weight, backend="numpy")
    grad = one_minus * grads[:n].reshape(x.shape) + smoothed * grads[n:].reshape(x.shape)
    hess = one_minus * hesses[:n].reshape(x.shape) + smoothed * hesses[n:].reshape(x.shape)
    return grad, hess
