"""scikit-learn drop-ins for binary problems: :func:`log_loss`, exact, and
:func:`log_loss_from_logits` for ``decision_function`` output.

:func:`log_loss` takes what ``sklearn.metrics.log_loss`` takes for two classes and means the
same: ``y_proba`` holds the positive class's probabilities (shape (n,)) or both classes'
(shape (n, 2), the columns in the order of the sorted labels, as ``predict_proba`` returns
them); the labels are any two values (0/1, -1/1, "no"/"yes", bools), from ``y_true`` or
``labels=``, and the larger is the positive class; ``normalize`` and ``sample_weight`` give the
(weighted) mean or the (weighted) sum. More than two classes, a one-hot ``y_true`` and
mismatched lengths are refused with an error that names the argument and the value.

The loss is computed by bce-core in float64 without clipping: -log p of the true class's
probability (log1p(-p) for the negative class of a 1-D ``y_proba``), within 2.2e-16 relative
of the exact value. scikit-learn clips p to [eps, 1 - eps] (eps of the input's dtype), so
where the probability of the true class is below 2.2e-16 (1.2e-7 for float32 input) its loss
is capped at 36.04 (15.9); here p = 1e-20 gives 46.05, and p = 0 gives inf. Where sklearn
does not clip, means agree to 1e-12 relative (single samples of the negative class to 4e-11:
sklearn rounds 1 - p before its logarithm). A probability close to 1 holds its complement to
1e-16 absolute only: prefer :func:`log_loss_from_logits` on ``decision_function`` output
(the logit of the larger label), exact where the probabilities round to 0 or 1.

In a scorer, ``make_scorer`` passes the column of ``predict_proba`` (or the sign of
``decision_function``) of the classifier's last class, the larger label: the positive class
here too. The signature is sklearn 1.9's (``y_proba`` was ``y_pred`` before 1.9).

Both are metrics with sklearn's argument order, for ``make_scorer``:

>>> from sklearn.linear_model import LogisticRegression
>>> from sklearn.metrics import make_scorer
>>> from sklearn.model_selection import cross_val_score
>>> from bce_core.sklearn import log_loss, log_loss_from_logits
>>> round(log_loss(["no", "yes", "yes"], [0.2, 0.7, 0.9]), 6)
0.228393
>>> round(log_loss([0, 1], [0.5, 1e-20]), 4)  # sklearn.metrics.log_loss: 18.3684
23.3724
>>> scorer = make_scorer(log_loss_from_logits, greater_is_better=False,
...                      response_method="decision_function")
>>> X, y = [[0.0], [1.0], [2.0], [3.0], [1.5], [0.5]], [0, 0, 1, 1, 0, 1]
>>> scores = cross_val_score(LogisticRegression(), X, y, cv=2, scoring=scorer)
>>> [round(float(s), 4) for s in scores]
[-0.8148, -0.7728]
"""

from __future__ import annotations

import reprlib
import warnings
from typing import Any

import numpy as np
from sklearn.utils.multiclass import type_of_target, unique_labels

from .api import binary_cross_entropy, binary_cross_entropy_with_logits

__all__ = ["log_loss", "log_loss_from_logits"]


def _show(value: Any) -> str:
    """A short repr, of NumPy arrays and scalars as of Python lists and numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    return reprlib.repr(value)


def _check_one_kind(name: str, value: Any) -> None:
    """Refuse labels that mix strings and numbers (NumPy would turn the numbers into strings).

    >>> _check_one_kind("y_true", ["no", 1])
    Traceback (most recent call last):
    ValueError: y_true=['no', 1] mixes strings and numbers; pass labels of one type.
    """
    kinds = {isinstance(item, str) for item in np.asarray(value, dtype=object).ravel().tolist()}
    if len(kinds) > 1:
        raise ValueError(
            f"{name}={_show(value)} mixes strings and numbers; pass labels of one type."
        )


def _check_normalize(normalize: Any) -> bool:
    """``normalize`` as a bool; anything but a Python or NumPy bool is refused.

    >>> _check_normalize("yes")
    Traceback (most recent call last):
    TypeError: normalize='yes' is of type str; pass True (the mean) or False (the sum).
    """
    if isinstance(normalize, (bool, np.bool_)):
        return bool(normalize)
    raise TypeError(
        f"normalize={_show(normalize)} is of type {type(normalize).__qualname__}; pass True "
        f"(the mean) or False (the sum)."
    )


def _as_float64(name: str, value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array of one or two dimensions, free of NaN, with rows."""
    if isinstance(value, str) or np.ndim(value) == 0:
        raise ValueError(
            f"{name}={_show(value)} is not an array; pass {what}, an array of shape (n_samples,)."
        )
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={_show(value)} is not numeric ({error}); pass {what}.") from None
    if array.ndim > 2:
        raise ValueError(
            f"{name} has shape {array.shape}; pass {what}, an array of shape (n_samples,)."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass {what} for at least one sample.")
    nan = np.isnan(array)
    if nan.any():
        index = tuple(int(i) for i in np.argwhere(nan)[0])
        raise ValueError(f"{name}[{', '.join(map(str, index))}] is NaN; pass {what}.")
    return array


def _probabilities(y_proba: Any) -> tuple[np.ndarray, float]:
    """``y_proba`` as float64, shape (n,) or (n, 2), in [0, 1]; and the eps of its dtype."""
    what = "the probabilities of the positive class (or the (n, 2) output of predict_proba)"
    p = _as_float64("y_proba", y_proba, what)
    dtype = getattr(y_proba, "dtype", None)
    floating = dtype is not None and np.issubdtype(dtype, np.floating)
    eps = float(np.finfo(dtype if floating else np.float64).eps)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 2 and p.shape[1] != 2:
        raise ValueError(
            f"y_proba has {p.shape[1]} columns, one per class; this log_loss is for two classes: "
            f"pass shape (n_samples,) or (n_samples, 2), or use sklearn.metrics.log_loss for "
            f"{p.shape[1]} classes."
        )
    for bad, side in ((p > 1.0, "greater than 1"), (p < 0.0, "lower than 0")):
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"y_proba[{', '.join(map(str, index))}] = {float(p[index])!r} is {side}; pass "
                f"probabilities in [0, 1] (for decision_function output use "
                f"log_loss_from_logits)."
            )
    return p, eps


def _logits(decision: Any) -> np.ndarray:
    """``decision`` as a float64 array of shape (n,)."""
    x = _as_float64("decision", decision, "the output of a binary classifier's decision_function")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        raise ValueError(
            f"decision has shape {x.shape}; a binary classifier's decision_function is 1-D "
            f"(one logit per sample, positive for the larger label). For two columns of "
            f"logits pass decision[:, 1] - decision[:, 0]."
        )
    return x


def _check_lengths(n_y: int, n_pred: int, pred_name: str, weight: np.ndarray | None) -> None:
    if n_y != n_pred:
        raise ValueError(
            f"y_true has {n_y} samples but {pred_name} has {n_pred}; pass one prediction per "
            f"sample."
        )
    if weight is not None and weight.shape[0] != n_y:
        raise ValueError(
            f"sample_weight has {weight.shape[0]} values but y_true has {n_y} samples; pass "
            f"one weight per sample."
        )


def _sample_weight(sample_weight: Any, normalize: bool) -> np.ndarray | None:
    """``sample_weight`` as float64 of shape (n,), finite, not all zero (sklearn's rules)."""
    if sample_weight is None:
        return None
    what = "one weight per sample"
    weight = _as_float64("sample_weight", sample_weight, what)
    if weight.ndim != 1:
        raise ValueError(f"sample_weight has shape {weight.shape}; pass {what}, a 1-D array.")
    infinite = np.isinf(weight)
    if infinite.any():
        index = int(np.argmax(infinite))
        raise ValueError(
            f"sample_weight[{index}] is {float(weight[index])!r}; pass finite weights."
        )
    if not weight.any():
        raise ValueError("sample_weight is all zero; pass at least one non-zero weight.")
    if normalize and weight.sum() == 0.0:
        raise ValueError(
            "sample_weight sums to zero, so the weighted mean is undefined; pass weights with "
            "a non-zero sum, or normalize=False for the weighted sum."
        )
    return weight


def _classes(y: np.ndarray, labels: Any) -> np.ndarray:
    """The two classes, sorted: from ``labels`` if given, else from ``y_true``."""
    name, source = ("y_true", y) if labels is None else ("labels", labels)
    if labels is not None and (isinstance(labels, str) or np.ndim(labels) != 1):
        raise ValueError(
            f"labels={_show(labels)} is not a 1-D list of labels; pass the two class labels, "
            f"for example labels=[0, 1] or labels=['no', 'yes']."
        )
    if labels is not None:
        _check_one_kind(name, labels)
    values = np.asarray(source)
    if values.dtype.kind == "f" and np.isnan(values).any():
        index = int(np.argmax(np.isnan(values)))
        raise ValueError(f"{name}[{index}] is NaN; pass class labels.")
    if type_of_target(values, input_name=name) == "continuous":
        raise ValueError(
            f"{name}={_show(source)} holds non-integer numbers; pass class labels (for "
            f"example 0 and 1), not probabilities or scores."
        )
    try:
        classes: np.ndarray = unique_labels(values)
    except ValueError as error:
        raise ValueError(f"{name}={_show(source)}: {error}") from None
    if len(classes) > 2:
        raise ValueError(
            f"{name} holds {len(classes)} classes {_show(classes.tolist())}; this log_loss is "
            f"for two classes: use sklearn.metrics.log_loss for more."
        )
    if len(classes) < 2:
        fix = (
            "pass labels= with both classes, for example labels=[0, 1]"
            if labels is None
            else "pass both classes"
        )
        raise ValueError(f"{name} holds only one label ({classes[0].item()!r}); {fix}.")
    if labels is not None and not np.array_equal(np.asarray(labels), classes):
        warnings.warn(
            f"labels={_show(labels)} are read in sorted order {classes.tolist()!r}, as "
            f"sklearn.metrics.log_loss reads them: the columns of y_proba and the sign of "
            f"decision follow that order ({classes[1].item()!r} is the positive class).",
            UserWarning,
            stacklevel=4,
        )
    return classes


def _labels_array(y_true: Any) -> np.ndarray:
    """``y_true`` as a 1-D array of class labels."""
    _check_one_kind("y_true", y_true)
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(
            f"y_true has shape {y.shape}; pass the class labels, a 1-D array (for a one-hot "
            f"y_true of two columns, y_true[:, 1])."
        )
    return y


def _targets(y: np.ndarray, labels: Any) -> np.ndarray:
    """The labels ``y`` as float64 targets: 1.0 for the larger of the two classes, else 0.0."""
    classes = _classes(y, labels)
    if labels is not None:
        unknown = ~np.isin(y, classes)
        if unknown.any():
            raise ValueError(
                f"y_true holds {_show(sorted(set(y[unknown].tolist())))}, not in "
                f"labels={_show(labels)}; pass labels that include every class of y_true."
            )
    return np.asarray(y == classes[1], dtype=np.float64)


def _reduction(normalize: bool, weight: np.ndarray | None) -> str:
    if normalize:
        return "mean" if weight is None else "weighted_mean"
    return "sum"


def log_loss(
    y_true: Any,
    y_proba: Any,
    *,
    normalize: bool = True,
    sample_weight: Any = None,
    labels: Any = None,
) -> float:
    """``sklearn.metrics.log_loss`` of a binary problem, exact (no clipping of ``y_proba``).

    ``y_proba`` is the positive class's probability, shape (n,) or (n, 1), or both classes',
    shape (n, 2) (each sample's loss is then -log of its true class's column, as in sklearn;
    rows that do not sum to 1 warn, as in sklearn). The rest is as in the module's docstring.

    >>> round(log_loss([-1, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]],
    ...                sample_weight=[1.0, 2.0, 0.5], normalize=False), 6)
    1.394639
    >>> log_loss([0, 1, 2], [0.2, 0.7, 0.9])
    Traceback (most recent call last):
    ValueError: y_true holds 3 classes [0, 1, 2]; this log_loss is for two classes: use \
sklearn.metrics.log_loss for more.
    """
    normalize = _check_normalize(normalize)
    p, eps = _probabilities(y_proba)
    y_labels = _labels_array(y_true)
    weight = _sample_weight(sample_weight, normalize)
    _check_lengths(y_labels.shape[0], p.shape[0], "y_proba", weight)
    y = _targets(y_labels, labels)
    if p.ndim == 2:
        if not np.allclose(p.sum(axis=1), 1.0, rtol=np.sqrt(eps), atol=0.0):
            warnings.warn(
                "The y_proba values do not sum to one. Make sure to pass probabilities.",
                UserWarning,
                stacklevel=2,
            )
        # Each sample's loss is -log of its own class's column, whatever the other holds.
        p, y = np.where(y == 1.0, p[:, 1], p[:, 0]), np.ones_like(y)
    loss = binary_cross_entropy(
        p,
        y,
        weight=weight,
        log_clamp=float("-inf"),
        reduction=_reduction(normalize, weight),
        backend="numpy",
    )
    return float(loss)


def log_loss_from_logits(
    y_true: Any,
    decision: Any,
    *,
    normalize: bool = True,
    sample_weight: Any = None,
    labels: Any = None,
) -> float:
    """The log loss of a binary problem from logits, such as ``decision_function`` output.

    Equal to ``log_loss(y_true, expit(decision), ...)`` where the probabilities are not
    rounded to 0 or 1, and exact where they are: ``decision`` (shape (n,)) is the logit of the
    larger label. The other arguments are those of :func:`log_loss`.

    >>> round(log_loss_from_logits(["no", "yes"], [-2.0, 40.0]), 6)  # softplus(-2) / 2
    0.063464
    >>> log_loss_from_logits([0, 1], [[0.3, 0.7], [0.6, 0.4]])
    Traceback (most recent call last):
    ValueError: decision has shape (2, 2); a binary classifier's decision_function is 1-D (one \
logit per sample, positive for the larger label). For two columns of logits pass \
decision[:, 1] - decision[:, 0].
    """
    normalize = _check_normalize(normalize)
    x = _logits(decision)
    y_labels = _labels_array(y_true)
    weight = _sample_weight(sample_weight, normalize)
    _check_lengths(y_labels.shape[0], x.shape[0], "decision", weight)
    y = _targets(y_labels, labels)
    loss = binary_cross_entropy_with_logits(
        x, y, weight=weight, reduction=_reduction(normalize, weight), backend="numpy"
    )
    return float(loss)
