"""Binary cross-entropy as a LightGBM custom objective, with ``pos_weight`` and
``label_smoothing``.

:func:`objective` is for ``lightgbm.train(params={"objective": ...})``;
:func:`sklearn_objective` for ``lightgbm.LGBMClassifier(objective=...)``. Both return the
per-sample gradient and curvature of the spec's loss from ``bce_core.grad_hess`` (float64,
exact at any margin, the curvature floored at 2**-126 where it underflows: see
``bce_core._boosting``). With the default options the model is that of LightGBM's own
``binary`` objective with ``boost_from_average=False``: with a custom objective LightGBM
starts from margin 0 (pass ``init_score=`` to the ``Dataset`` for another start).

With a custom objective LightGBM returns margins, not probabilities: ``Booster.predict``
and ``LGBMClassifier.predict`` return the margins, and ``LGBMClassifier.predict_proba``
warns and returns them too. :func:`predict_proba` gives the probabilities.

>>> import numpy as np
>>> import lightgbm
>>> from bce_core.lightgbm import objective, predict_proba
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3))
>>> train = lightgbm.Dataset(X, label=(X[:, 0] > 0).astype(int))
>>> params = {"objective": objective(pos_weight=2.0), "num_leaves": 4, "num_threads": 1,
...           "verbose": -1}
>>> booster = lightgbm.train(params, train, num_boost_round=5)
>>> probs = predict_proba(booster, X)[:, 1]
>>> bool(((probs > 0.5) == (X[:, 0] > 0)).mean() > 0.95)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._boosting import ObjectiveOptions

__all__ = ["SklearnObjective", "TrainObjective", "objective", "predict_proba", "sklearn_objective"]


class _Dataset(Protocol):
    """What the objective reads of a ``lightgbm.Dataset``."""

    def get_label(self) -> Any: ...

    def get_weight(self) -> Any: ...


@dataclass(frozen=True)
class TrainObjective(ObjectiveOptions):
    """``objective(preds, train_data) -> (grad, hess)`` for ``lightgbm.train``; made by
    :func:`objective`.

    ``preds`` are the margins; the labels and the weights come from ``train_data``.
    """

    def __call__(self, preds: np.ndarray, train_data: _Dataset) -> tuple[np.ndarray, np.ndarray]:
        return self.derivatives(
            preds,
            train_data.get_label(),
            train_data.get_weight(),
            ("preds", "train_data.get_label()", "train_data.get_weight()"),
        )


@dataclass(frozen=True)
class SklearnObjective(ObjectiveOptions):
    """``objective(y_true, y_pred, weight=None) -> (grad, hess)`` for
    ``lightgbm.LGBMClassifier``; made by :func:`sklearn_objective`.

    ``y_pred`` are the margins; LightGBM passes ``fit(..., sample_weight=...)`` as ``weight``
    (None without weights).
    """

    def __call__(
        self, y_true: Any, y_pred: Any, weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.derivatives(y_pred, y_true, weight, ("y_pred", "y_true", "weight"))


def objective(*, pos_weight: float | None = None, label_smoothing: float = 0.0) -> TrainObjective:
    """The binary cross-entropy objective for ``lightgbm.train(params={"objective": ...})``.

    ``pos_weight`` multiplies the loss of the positive labels (as LightGBM's
    ``scale_pos_weight``); ``label_smoothing`` = e trains on y' = y (1 - e) + e / 2.

    >>> objective(pos_weight=3)
    TrainObjective(pos_weight=3.0, label_smoothing=0.0)
    >>> objective(label_smoothing=1.5)
    Traceback (most recent call last):
    ValueError: label_smoothing=1.5 is outside [0, 1]; pass a value such as 0.0 (off) or 0.1.
    """
    return TrainObjective(pos_weight, label_smoothing)


def sklearn_objective(
    *, pos_weight: float | None = None, label_smoothing: float = 0.0
) -> SklearnObjective:
    """The binary cross-entropy objective for ``lightgbm.LGBMClassifier(objective=...)``.

    The options are those of :func:`objective`. The classifier then predicts margins: use
    :func:`predict_proba` for the probabilities.

    >>> import numpy as np
    >>> import lightgbm
    >>> X = np.linspace(-1.0, 1.0, 40).reshape(-1, 1)
    >>> model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=2, min_child_samples=5,
    ...                                 n_jobs=1, verbose=-1, objective=sklearn_objective())
    >>> model = model.fit(X, (X[:, 0] > 0).astype(int))
    >>> (predict_proba(model, [[-0.9], [0.9]])[:, 1] > 0.5).tolist()
    [False, True]
    """
    return SklearnObjective(pos_weight, label_smoothing)


def predict_proba(model: Any, X: Any, **kwargs: Any) -> np.ndarray:
    """The probabilities (n, 2) of classes 0 and 1 of a LightGBM ``Booster`` or
    ``LGBMClassifier`` trained with one of these objectives, from its margins m:
    (sigma(-m), sigma(m)), each computed from its own stable form. ``kwargs`` go to
    ``model.predict`` (``num_iteration=``, for example).

    >>> import numpy as np
    >>> class Margins:  # any model whose predict(X, raw_score=True) returns margins
    ...     def predict(self, X, raw_score=False):
    ...         return np.asarray(X, dtype=float)
    >>> predict_proba(Margins(), [0.0, 800.0]).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """
    margins = np.asarray(model.predict(X, raw_score=True, **kwargs), dtype=np.float64)
    if margins.ndim != 1:
        raise ValueError(
            f"predict_proba: the model returned margins of shape {margins.shape}; a binary "
            f"model returns one margin per sample (shape (n,))."
        )
    with np.errstate(over="ignore"):
        positive = np.exp(-np.logaddexp(0.0, -margins))
        negative = np.exp(-np.logaddexp(0.0, margins))
    return np.stack([negative, positive], axis=1)
