"""The XGBoost and LightGBM objectives: real models on the breast-cancer data set, against the
libraries' own binary objectives, and the derivatives at extreme margins against the exact
values (and against the textbook p - y, p (1 - p), which loses them)."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
datasets = pytest.importorskip("sklearn.datasets")

import bce_core  # noqa: E402
from bce_core import lightgbm as bce_lgb  # noqa: E402
from bce_core import reference  # noqa: E402
from bce_core import xgboost as bce_xgb  # noqa: E402
from bce_core._boosting import HESSIAN_FLOOR, gradient_and_hessian  # noqa: E402

X, Y = datasets.load_breast_cancer(return_X_y=True)
WEIGHTS = np.linspace(0.2, 2.0, len(Y))
ROUNDS = 20
XGB = {"max_depth": 3, "eta": 0.3, "nthread": 1}
LGB = {"num_leaves": 8, "max_depth": 3, "learning_rate": 0.3, "num_threads": 1, "verbose": -1}
# XGBoost keeps gradients in float32 and computes its own in float32; ours are float64 rounded
# once to float32, so the two models differ by float32 roundings of the leaf values.
XGB_MARGIN_ATOL = 1e-5


def naive(margins: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook objective: p = 1 / (1 + exp(-m)), grad = p - y, hess = p (1 - p)."""
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-margins))
    return p - labels, p * (1.0 - p)


def xgb_margins(params: dict, obj=None, *, label=Y, weight=None) -> np.ndarray:
    dtrain = xgboost.DMatrix(X, label=label, weight=weight)
    booster = xgboost.train({**XGB, **params}, dtrain, ROUNDS, obj=obj)
    return booster.predict(dtrain, output_margin=True)


def lgb_margins(params: dict, *, label=Y, weight=None) -> np.ndarray:
    train = lightgbm.Dataset(X, label=label, weight=weight)
    return lightgbm.train({**LGB, **params}, train, ROUNDS).predict(X, raw_score=True)


# -- XGBoost ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "builtin", "weight"),
    [
        ({}, {}, None),
        ({"pos_weight": 3.0}, {"scale_pos_weight": 3.0}, None),
        ({}, {}, WEIGHTS),
        ({"pos_weight": 0.25}, {"scale_pos_weight": 0.25}, WEIGHTS),
    ],
)
def test_xgboost_train_matches_binary_logistic(ours, builtin, weight):
    # binary:logistic named next to obj=: base_score 0.5, a start at margin 0, as the built-in
    # objective with base_score=0.5 (which otherwise estimates it from the labels).
    expected = xgb_margins(
        {"objective": "binary:logistic", "base_score": 0.5, **builtin}, weight=weight
    )
    got = xgb_margins({"objective": "binary:logistic"}, bce_xgb.objective(**ours), weight=weight)
    np.testing.assert_allclose(got, expected, rtol=0, atol=XGB_MARGIN_ATOL)
    assert np.ptp(expected) > 5  # a trained model, not a constant


def test_xgboost_train_without_objective_param_starts_from_half():
    # Without "objective" XGBoost reads base_score through reg:squarederror: margin 0.5.
    expected = xgb_margins({"objective": "binary:logistic", "base_score": 0.5})
    got = xgb_margins({"base_score": 0.0}, bce_xgb.objective())
    np.testing.assert_allclose(got, expected, rtol=0, atol=XGB_MARGIN_ATOL)
    shifted = xgb_margins({}, bce_xgb.objective())
    assert np.abs(shifted - expected).max() > 0.1


def test_xgboost_label_smoothing_matches_binary_logistic_on_smoothed_labels():
    eps = 0.25  # smoothed labels 0.125 and 0.875: exact in the float32 labels the libraries keep
    smoothed = Y * (1 - eps) + eps / 2
    expected = xgb_margins({"objective": "binary:logistic", "base_score": 0.5}, label=smoothed)
    got = xgb_margins({"objective": "binary:logistic"}, bce_xgb.objective(label_smoothing=eps))
    np.testing.assert_allclose(got, expected, rtol=0, atol=XGB_MARGIN_ATOL)
    plain = xgb_margins({"objective": "binary:logistic"}, bce_xgb.objective())
    assert np.abs(got).max() < np.abs(plain).max()  # smoothing keeps the margins smaller


@pytest.mark.parametrize(
    ("ours", "builtin"), [({}, {}), ({"pos_weight": 3.0}, {"scale_pos_weight": 3.0})]
)
def test_xgbclassifier_matches_binary_logistic(ours, builtin):
    common = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1}
    expected = xgboost.XGBClassifier(**common, base_score=0.5, **builtin)
    got = xgboost.XGBClassifier(**common, objective=bce_xgb.sklearn_objective(**ours))
    expected.fit(X, Y, sample_weight=WEIGHTS)
    got.fit(X, Y, sample_weight=WEIGHTS)  # sample_weight reaches the objective
    np.testing.assert_allclose(got.predict_proba(X), expected.predict_proba(X), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.predict(X), expected.predict(X))
    assert pickle.loads(pickle.dumps(got)).objective == got.objective


def test_xgboost_multi_label_is_one_binary_loss_per_output():
    labels = np.stack([Y, (X[:, 0] > 14).astype(int)], axis=1)  # (n, 2): two binary targets
    params = {"objective": "binary:logistic", "multi_strategy": "one_output_per_tree"}
    expected = xgb_margins({**params, "base_score": 0.5}, label=labels)
    got = xgb_margins(params, bce_xgb.objective(), label=labels)
    assert got.shape == (len(Y), 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=XGB_MARGIN_ATOL)


# -- LightGBM -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "builtin", "weight"),
    [
        ({}, {}, None),
        ({"pos_weight": 3.0}, {"scale_pos_weight": 3.0}, None),
        ({"pos_weight": 0.25}, {"scale_pos_weight": 0.25}, WEIGHTS),
    ],
)
def test_lightgbm_train_matches_binary(ours, builtin, weight):
    # A custom objective starts from margin 0: the built-in one does with boost_from_average off.
    expected = lgb_margins(
        {"objective": "binary", "boost_from_average": False, **builtin}, weight=weight
    )
    got = lgb_margins({"objective": bce_lgb.objective(**ours)}, weight=weight)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.ptp(expected) > 5


def test_lightgbm_label_smoothing_matches_cross_entropy_on_smoothed_labels():
    eps = 0.25  # smoothed labels 0.125 and 0.875: exact in the float32 labels the libraries keep
    smoothed = Y * (1 - eps) + eps / 2
    expected = lgb_margins(
        {"objective": "cross_entropy", "boost_from_average": False}, label=smoothed
    )
    got = lgb_margins({"objective": bce_lgb.objective(label_smoothing=eps)})
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_lgbmclassifier_matches_binary_and_predict_proba():
    common = {
        **{k: v for k, v in LGB.items() if k != "num_threads"},
        "n_estimators": ROUNDS,
        "n_jobs": 1,
    }
    expected = lightgbm.LGBMClassifier(**common, boost_from_average=False, scale_pos_weight=2.0)
    got = lightgbm.LGBMClassifier(**common, objective=bce_lgb.sklearn_objective(pos_weight=2.0))
    expected.fit(X, Y, sample_weight=WEIGHTS)
    got.fit(X, Y, sample_weight=WEIGHTS)  # the weights reach the objective as its third argument
    probs = expected.predict_proba(X)
    np.testing.assert_allclose(bce_lgb.predict_proba(got, X), probs, rtol=1e-12, atol=1e-15)
    with pytest.warns(UserWarning, match="customized objective"):
        raw = got.predict_proba(X)  # LightGBM's own: margins, with a warning
    np.testing.assert_allclose(raw, expected.predict(X, raw_score=True), rtol=1e-12)
    assert pickle.loads(pickle.dumps(got)).objective == got.objective


# -- extreme margins ----------------------------------------------------------------------

EXTREME = np.array([50.0, 50.0, -800.0, -800.0, 800.0, -60.0])
EXTREME_LABELS = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])


def exact_curvature(m: float) -> float:
    """sigma(m) sigma(-m) = exp(-|m|) / (1 + exp(-|m|))**2, 0 where it underflows float64."""
    e = math.exp(-abs(m))
    return e / (1.0 + e) ** 2


def test_naive_objective_loses_the_curvature_at_extreme_margins():
    grad, hess = naive(EXTREME, EXTREME_LABELS)
    assert np.all(hess[:5] == 0.0)  # p rounds to 1 (margin 50, 800) or 0 (margin -800)
    assert grad[0] == 0.0  # exact: -sigma(-50) = -1.93e-22
    assert exact_curvature(50.0) > 1e-22


@pytest.mark.parametrize(
    "call",
    [
        lambda m, y: bce_xgb.objective()(m, xgboost.DMatrix(np.zeros((len(m), 1)), label=y)),
        lambda m, y: bce_xgb.sklearn_objective()(y, m),
        lambda m, y: bce_lgb.objective()(
            m, lightgbm.Dataset(np.zeros((len(m), 1)), label=y).construct()
        ),
        lambda m, y: bce_lgb.sklearn_objective()(y, m, None),
    ],
    ids=["xgboost.train", "XGBClassifier", "lightgbm.train", "LGBMClassifier"],
)
def test_extreme_margins_give_exact_gradients_and_positive_curvature(call):
    margins = EXTREME.astype(np.float32)  # XGBoost passes float32 margins
    grad, hess = call(margins, EXTREME_LABELS)
    exact_grad, exact_hess = reference.grad_hess(EXTREME, EXTREME_LABELS)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, exact_grad)
    assert grad[0] == -exact_curvature(50.0) * (1 + math.exp(-50.0)) != 0.0
    assert np.all(hess > 0) and np.all(hess.astype(np.float32) > 0)  # as the booster stores it
    representable = np.abs(EXTREME) < 87
    np.testing.assert_array_equal(hess[representable], exact_hess[representable])
    np.testing.assert_array_equal(hess[~representable], HESSIAN_FLOOR)
    assert hess[0] == exact_curvature(50.0)


def test_hessian_floor_follows_the_weights_and_pos_weight():
    margins = np.array([-800.0, -800.0, 800.0, 80.0, -800.0])
    labels = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    weights = np.array([1.0, 0.5, 2.0, 1.0, 0.0])
    grad, hess = gradient_and_hessian(margins, labels, weights, pos_weight=3.0)
    floor = HESSIAN_FLOOR
    assert hess[[0, 1, 2, 4]].tolist() == [3 * floor, 1.5 * floor, 2 * floor, 0.0]
    # The exact curvature times q, within the spec's 4 ULP (the product's order may differ).
    np.testing.assert_allclose(hess[3], 3 * exact_curvature(80.0), rtol=4 * ULP, atol=0)
    assert exact_curvature(80.0) > floor > exact_curvature(90.0)
    assert grad[[0, 1, 2, 4]].tolist() == [-3.0, -1.5, 2.0, -0.0]
    exact_grad = -3 * math.exp(-80.0) / (1 + math.exp(-80.0))
    np.testing.assert_allclose(grad[3], exact_grad, rtol=4 * ULP, atol=0)


def test_training_from_extreme_margins_stays_finite():
    init = np.where(Y == 1, -800.0, 50.0)  # confidently wrong everywhere
    init[:200] = np.where(Y[:200] == 1, 50.0, -800.0)  # and confidently right
    dtrain = xgboost.DMatrix(X, label=Y, base_margin=init)
    booster = xgboost.train(
        {**XGB, "objective": "binary:logistic"}, dtrain, 5, obj=bce_xgb.objective()
    )
    assert np.all(np.isfinite(booster.predict(dtrain, output_margin=True)))
    train = lightgbm.Dataset(X, label=Y, init_score=init)
    lgb_booster = lightgbm.train({**LGB, "objective": bce_lgb.objective()}, train, 5)
    assert np.all(np.isfinite(lgb_booster.predict(X, raw_score=True)))


# -- label smoothing and errors ----------------------------------------------------------


ULP = np.finfo(np.float64).eps


@pytest.mark.parametrize("eps", [1e-9, 1e-3, 0.1, 0.5, 1.0])
def test_label_smoothing_is_the_spec_gradient(eps):
    margins = np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 45.0, 30.0, 12.0])
    labels = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    weights, q = WEIGHTS[:8], 2.0
    grad, hess = bce_xgb.sklearn_objective(label_smoothing=eps, pos_weight=q)(
        labels, margins, weights
    )
    _, spec_grad = bce_core.value_and_grad(
        margins,
        labels,
        weight=weights,
        pos_weight=q,
        label_smoothing=eps,
        reduction="sum",  # the gradient of the sum: each element's own
        backend="numpy",
    )
    np.testing.assert_allclose(grad, spec_grad, rtol=4 * ULP, atol=0)
    smoothed = labels * (1 - eps) + eps / 2
    direct_grad, direct_hess = bce_core.grad_hess(
        margins, smoothed, weight=weights, pos_weight=q, backend="numpy"
    )
    np.testing.assert_allclose(hess, direct_hess, rtol=4 * ULP, atol=0)
    # grad_hess at y' recomputes 1 - y' by subtraction: close, but not to 4 ULP for a small eps
    np.testing.assert_allclose(grad, direct_grad, rtol=1e-6, atol=0)
    if eps < 1e-6:
        assert np.abs(direct_grad / spec_grad - 1).max() > 1e-8
    plain, _ = bce_xgb.sklearn_objective(pos_weight=q)(labels, margins, weights)
    assert np.all(np.abs(grad - plain) > 0)


def test_objectives_never_write_into_their_inputs():
    margins, labels, weights = EXTREME.copy(), EXTREME_LABELS.copy(), np.ones(6)
    bce_lgb.sklearn_objective(pos_weight=2.0, label_smoothing=0.1)(labels, margins, weights)
    np.testing.assert_array_equal(margins, EXTREME)
    np.testing.assert_array_equal(labels, EXTREME_LABELS)
    np.testing.assert_array_equal(weights, np.ones(6))


def test_clear_errors():
    obj = bce_xgb.sklearn_objective()
    with pytest.raises(
        ValueError, match=r"y_true\[1\] = 2.0 is not in \[0, 1\].*encode the classes as 0 and 1"
    ):
        obj(np.array([0.0, 2.0]), np.zeros(2))
    with pytest.raises(ValueError, match=r"y_true\[0\] = nan is not in \[0, 1\]"):
        obj(np.array([np.nan]), np.zeros(1))
    with pytest.raises(ValueError, match=r"holds 3 values for 9 y_pred.*multi:softprob"):
        obj(np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"sample_weight\[1\] = -1.0 is not a finite number >= 0"):
        obj(np.zeros(2), np.zeros(2), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"pos_weight=-2.0 must be finite and >= 0"):
        bce_lgb.objective(pos_weight=-2.0)
    with pytest.raises(TypeError, match=r"label_smoothing must be a real number"):
        bce_xgb.objective(label_smoothing="0.1")
    with pytest.raises(ValueError, match=r"label_smoothing=2.0 is outside \[0, 1\]"):
        bce_lgb.sklearn_objective(label_smoothing=2.0)


def test_lightgbm_multiclass_is_refused_with_a_clear_error():
    labels = np.arange(len(Y)) % 3
    train = lightgbm.Dataset(X, label=labels)
    params = {**LGB, "objective": bce_lgb.objective(), "num_class": 3}
    with pytest.raises(
        ValueError, match=r"train_data.get_label\(\) holds 569 values for 1707 preds"
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lightgbm.train(params, train, 1)
