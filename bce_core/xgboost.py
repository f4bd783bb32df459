"""Binary cross-entropy as an XGBoost custom objective, with ``pos_weight`` and
``label_smoothing``.

:func:`objective` is for ``xgboost.train(params, dtrain, obj=...)``; :func:`sklearn_objective`
for ``xgboost.XGBClassifier(objective=...)``. Both return the per-sample gradient and curvature
of the spec's loss from ``bce_core.grad_hess`` (float64, exact at any margin, the curvature
floored at 2**-126 where it underflows: see ``bce_core._boosting``). With the default options
the model is that of XGBoost's own ``binary:logistic``.

The margin a model starts from: with a custom objective XGBoost does not estimate
``base_score`` from the labels (``binary:logistic`` alone does), and reads ``base_score``
through the objective named in ``params``. Name ``"objective": "binary:logistic"`` next to
``obj=`` (as ``XGBClassifier`` does for a callable objective): ``base_score`` then defaults
to 0.5, a start at margin 0, and ``Booster.predict`` returns probabilities
(``output_margin=True`` the margins). Without it XGBoost's default ``reg:squarederror`` starts
from margin 0.5 and ``predict`` returns margins. ``XGBClassifier(objective=...)`` starts from
margin 0 and its ``predict_proba`` returns the sigmoid of the margins.

Labels of shape (n, k) (a multi-label model, ``multi_strategy`` set) get one binary loss per
output. A multi-class model (``num_class``) is refused: this objective is binary.

>>> import numpy as np
>>> import xgboost
>>> from bce_core.xgboost import objective
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3))
>>> dtrain = xgboost.DMatrix(X, label=(X[:, 0] > 0).astype(int))
>>> params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}
>>> booster = xgboost.train(params, dtrain, 5, obj=objective(pos_weight=2.0))
>>> probs = booster.predict(dtrain)
>>> bool(((probs > 0.5) == (X[:, 0] > 0)).mean() > 0.95)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._boosting import ObjectiveOptions

__all__ = ["SklearnObjective", "TrainObjective", "objective", "sklearn_objective"]


class _DMatrix(Protocol):
    """What the objective reads of an ``xgboost.DMatrix``."""

    def get_label(self) -> np.ndarray: ...

    def get_weight(self) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainObjective(ObjectiveOptions):
    """``obj(predt, dtrain) -> (grad, hess)`` for ``xgboost.train``; made by :func:`objective`.

    ``predt`` are the margins; the labels and the sample weights come from ``dtrain``.
    """

    def __call__(self, predt: np.ndarray, dtrain: _DMatrix) -> tuple[np.ndarray, np.ndarray]:
        return self.derivatives(
            predt,
            dtrain.get_label(),
            dtrain.get_weight(),
            ("predt", "dtrain.get_label()", "dtrain.get_weight()"),
        )


@dataclass(frozen=True)
class SklearnObjective(ObjectiveOptions):
    """``objective(y_true, y_pred, sample_weight=None) -> (grad, hess)`` for
    ``xgboost.XGBClassifier``; made by :func:`sklearn_objective`.

    ``y_pred`` are the margins. ``sample_weight`` in the signature tells XGBoost to pass
    ``fit(..., sample_weight=...)`` on.
    """

    def __call__(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.derivatives(
            y_pred, y_true, sample_weight, ("y_pred", "y_true", "sample_weight")
        )


def objective(*, pos_weight: float | None = None, label_smoothing: float = 0.0) -> TrainObjective:
    """The binary cross-entropy objective for ``xgboost.train(params, dtrain, obj=...)``.

    ``pos_weight`` multiplies the loss of the positive labels (as XGBoost's
    ``scale_pos_weight``); ``label_smoothing`` = e trains on y' = y (1 - e) + e / 2.
    Put ``"objective": "binary:logistic"`` in ``params`` to start from margin 0 and predict
    probabilities (see the module's docstring).

    >>> objective(label_smoothing=0.1)
    TrainObjective(pos_weight=None, label_smoothing=0.1)
    >>> objective(pos_weight="2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: pos_weight must be a real number (...), got '2' of type str; pass a number, ...
    """
    return TrainObjective(pos_weight, label_smoothing)


def sklearn_objective(
    *, pos_weight: float | None = None, label_smoothing: float = 0.0
) -> SklearnObjective:
    """The binary cross-entropy objective for ``xgboost.XGBClassifier(objective=...)``.

    The options are those of :func:`objective`. ``XGBClassifier`` starts from margin 0 with
    a callable objective and its ``predict_proba`` applies the sigmoid to the margins.

    >>> import numpy as np
    >>> import xgboost
    >>> X = np.linspace(-1.0, 1.0, 40).reshape(-1, 1)
    >>> model = xgboost.XGBClassifier(n_estimators=5, max_depth=1, n_jobs=1,
    ...                               objective=sklearn_objective(pos_weight=2.0))
    >>> model.fit(X, (X[:, 0] > 0).astype(int)).predict([[-0.9], [0.9]]).tolist()
    [0, 1]
    """
    return SklearnObjective(pos_weight, label_smoothing)
