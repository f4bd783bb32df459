"""``bce_core.sklearn``: the binary log loss against ``sklearn.metrics.log_loss`` and the reference.

Where sklearn does not clip (p in [1e-6, 1 - 1e-6]) the two agree to 1e-12 relative for
every form of input sklearn accepts; where it clips, ours is the exact value. As scorers in
``cross_val_score`` they give sklearn's ``neg_log_loss``. Bad input is refused with errors that
name the argument and the value.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from scipy.special import expit  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss as sklearn_log_loss  # noqa: E402
from sklearn.metrics import make_scorer  # noqa: E402
from sklearn.model_selection import cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from bce_core import reference  # noqa: E402
from bce_core.sklearn import log_loss, log_loss_from_logits  # noqa: E402

RTOL = 1e-12
N = 300
#: Two-class label sets and their order (the larger is the positive class).
LABELS = {
    "0/1": np.array([0, 1]),
    "-1/1": np.array([-1, 1]),
    "strings": np.array(["no", "yes"]),
    "bools": np.array([False, True]),
    "floats": np.array([0.0, 1.0]),
}


def sample(seed=0, n=N):
    """Logits, positive-class probabilities in [1e-6, 1 - 1e-6], 0/1 targets and weights."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-13.8, 13.8, n)
    p = np.clip(expit(x), 1e-6, 1.0 - 1e-6)
    y = (rng.uniform(size=n) < 0.5).astype(int)
    return x, p, y, rng.uniform(0.1, 3.0, n)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize("form", ["(n,)", "(n,1)", "(n,2)"])
def test_agrees_with_sklearn_where_it_does_not_clip(normalize, weighted, labels, form):
    _, p, y01, w = sample()
    y = LABELS[labels][y01]
    y_proba = {"(n,)": p, "(n,1)": p[:, None], "(n,2)": np.column_stack([1.0 - p, p])}[form]
    kwargs = {"normalize": normalize, "sample_weight": w if weighted else None}
    ours, theirs = log_loss(y, y_proba, **kwargs), sklearn_log_loss(y, y_proba, **kwargs)
    assert ours == pytest.approx(theirs, rel=RTOL)
    # and against the float64 reference, from the 0/1 targets
    total = reference.binary_cross_entropy(
        p, y01, weight=w if weighted else None, log_clamp=-math.inf, reduction="sum"
    )
    expected = float(total) / ((w.sum() if weighted else N) if normalize else 1.0)
    assert ours == pytest.approx(expected, rel=RTOL)


def test_each_sample_agrees_with_sklearn():
    _, p, y, _ = sample(1, n=60)
    ours = [log_loss(y[i : i + 1], p[i : i + 1], labels=[0, 1]) for i in range(len(y))]
    theirs = [sklearn_log_loss(y[i : i + 1], p[i : i + 1], labels=[0, 1]) for i in range(len(y))]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)  # sklearn's 1 - p rounds for small p
    assert ours == pytest.approx(
        [-math.log(pi) if yi else -math.log1p(-pi) for pi, yi in zip(p, y)], rel=1e-15
    )


def test_labels_argument_as_sklearn():
    _, p, y01, _ = sample(2, n=20)
    y = np.array(["no", "yes"])[np.ones(20, int)]  # y_true holds one class: labels= names both
    assert log_loss(y, p, labels=["no", "yes"]) == pytest.approx(
        sklearn_log_loss(y, p, labels=["no", "yes"]), rel=RTOL
    )
    with pytest.warns(UserWarning, match=r"sorted order \['no', 'yes'\]"):
        ours = log_loss(y, p, labels=["yes", "no"])  # sklearn reads labels sorted, and warns
    with pytest.warns(UserWarning, match="ordered lexicographically"):
        assert ours == pytest.approx(sklearn_log_loss(y, p, labels=["yes", "no"]), rel=RTOL)


def test_rows_that_do_not_sum_to_one_warn_and_agree():
    proba = np.array([[0.5, 0.2], [0.3, 0.7], [0.1, 0.9]])
    with pytest.warns(UserWarning, match="do not sum to one"):
        ours = log_loss([0, 1, 1], proba)
    with pytest.warns(UserWarning, match="do not sum to one"):
        assert ours == pytest.approx(sklearn_log_loss([0, 1, 1], proba), rel=RTOL)


# -- where sklearn clips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "y", "exact", "sklearn_value"),
    [
        (1e-20, 1, 46.051701859880914, 36.04365338911715),  # -log(1e-20); sklearn -log(eps)
        (1e-300, 1, 690.7755278982137, 36.04365338911715),
        (1e-20, 0, 1e-20, 2.220446049250313e-16),  # -log1p(-1e-20)
        (1.0 - 2.0**-52, 0, 36.04365338911715, 36.04365338911715),  # clipped to itself
        (0.0, 1, math.inf, 36.04365338911715),
        (1.0, 0, math.inf, 36.04365338911715),
    ],
)
def test_exact_where_sklearn_clips(p, y, exact, sklearn_value):
    ours = log_loss([y], [p], labels=[0, 1])
    assert ours == pytest.approx(exact, rel=1e-15)
    assert sklearn_log_loss([y], [p], labels=[0, 1]) == pytest.approx(sklearn_value, rel=1e-12)
    if math.isfinite(exact):
        assert ours == pytest.approx(
            float(reference.binary_cross_entropy([p], [y], log_clamp=-math.inf)), rel=1e-15
        )


def test_exact_for_float32_input_where_sklearn_clips_at_float32_eps():
    p = np.array([1e-10, 0.25], dtype=np.float32)
    ours = log_loss([1, 1], p, labels=[0, 1])
    exact = -(math.log(float(p[0])) + math.log(float(p[1]))) / 2
    assert ours == pytest.approx(exact, rel=1e-15)
    assert sklearn_log_loss([1, 1], p, labels=[0, 1]) == pytest.approx(
        (-math.log(2.0**-23) - math.log(0.25)) / 2, rel=1e-6
    )


def test_logits_are_exact_where_probabilities_round():
    x = np.array([-50.0, 40.0, 800.0, -3.0])
    y = np.array([1, 0, 1, 0])
    expected = [
        50.0 + math.log1p(math.exp(-50.0)),
        40.0 + math.log1p(math.exp(-40.0)),
        0.0,
        math.log1p(math.exp(-3.0)),
    ]
    assert log_loss_from_logits(y, x, normalize=False) == pytest.approx(
        math.fsum(expected), rel=1e-15
    )
    # the probabilities of the first two round to 0 and 1: their loss from p is inf
    assert log_loss(y, expit(x)) == math.inf


def test_logits_agree_with_probabilities():
    x, _, y01, w = sample(3)
    y = LABELS["strings"][y01]
    for kwargs in ({}, {"normalize": False}, {"sample_weight": w}):
        ours = log_loss_from_logits(y, x, **kwargs)
        assert ours == pytest.approx(log_loss(y, expit(x), **kwargs), rel=1e-13)
        assert ours == pytest.approx(sklearn_log_loss(y, expit(x), **kwargs), rel=RTOL)


# -- scorers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


def model():
    return make_pipeline(StandardScaler(), LogisticRegression())


@pytest.mark.parametrize("labels", ["0/1", "strings"])
def test_scorers_in_cross_val_score(breast_cancer, labels):
    X, y01 = breast_cancer
    y = LABELS[labels][y01]
    theirs = cross_val_score(model(), X, y, scoring="neg_log_loss")
    proba = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba")
    logits = make_scorer(
        log_loss_from_logits, greater_is_better=False, response_method="decision_function"
    )
    ours = cross_val_score(model(), X, y, scoring=proba)
    from_logits = cross_val_score(model(), X, y, scoring=logits)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(from_logits, ours, rtol=1e-9)
    assert np.all(ours < 0) and -ours.mean() < 0.2


def test_scorers_where_sklearn_clips(breast_cancer):
    """A weakly regularized model is confident: where its probability of the true class is
    below 2.2e-16 sklearn caps the loss at 36.04. The logits scorer counts the whole loss; the
    probability scorer too, but where predict_proba has rounded the probability of the true
    class to 0 the exact loss is inf."""
    X, y = breast_cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1e3, solver="newton-cholesky"))
    scoring = {
        "sklearn": "neg_log_loss",
        "proba": make_scorer(log_loss, greater_is_better=False, response_method="predict_proba"),
        "logits": make_scorer(
            log_loss_from_logits, greater_is_better=False, response_method="decision_function"
        ),
    }
    result = cross_validate(
        model, X, y, scoring=scoring, return_estimator=True, return_indices=True
    )
    clipped = 0
    for k, (estimator, test) in enumerate(zip(result["estimator"], result["indices"]["test"])):
        decision = estimator.decision_function(X[test])
        margin = np.where(y[test] == 1, decision, -decision)
        exact = -float(np.logaddexp(0.0, -margin).mean())
        assert result["test_logits"][k] == pytest.approx(exact, rel=1e-12)
        p_true = np.where(
            y[test] == 1,
            estimator.predict_proba(X[test])[:, 1],
            estimator.predict_proba(X[test])[:, 0],
        )
        if np.any(p_true == 0.0):
            assert result["test_proba"][k] == -math.inf
        else:  # P(1) close to 1 holds P(0) to ~1e-16 absolute: its log is off by up to ~1e-3
            assert result["test_proba"][k] == pytest.approx(exact, rel=1e-5)
        if margin.min() < math.log(2.0**-52):  # sklearn clips a sample of this fold
            clipped += 1
            assert result["test_sklearn"][k] > exact + 0.1
        else:  # from the same probabilities, where sklearn does not clip
            assert result["test_sklearn"][k] == pytest.approx(result["test_proba"][k], rel=1e-12)
    assert clipped >= 1


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            ([0, 1, 2], [0.2, 0.7, 0.9]),
            {},
            ValueError,
            r"y_true holds 3 classes \[0, 1, 2\]; this log_loss is for two classes",
        ),
        (
            ([1, 1, 1], [0.2, 0.7, 0.9]),
            {},
            ValueError,
            r"y_true holds only one label \(1\); pass labels= with both classes",
        ),
        (
            ([0, 1, 1], [0.2, 0.7, 0.9]),
            {"labels": [0, 1, 2]},
            ValueError,
            r"labels holds 3 classes",
        ),
        (
            ([0, 1, 2], [0.2, 0.7, 0.9]),
            {"labels": [0, 1]},
            ValueError,
            r"y_true holds \[2\], not in labels=\[0, 1\]",
        ),
        (([0, 1], [0.2, 0.7, 0.9]), {}, ValueError, r"y_true has 2 samples but y_proba has 3"),
        (
            ([0, 1, 1], [0.2, 0.7, 0.9]),
            {"sample_weight": [1.0, 2.0]},
            ValueError,
            r"sample_weight has 2 values but y_true has 3",
        ),
        (([0, 1, 1], [0.2, 1.7, 0.9]), {}, ValueError, r"y_proba\[1\] = 1.7 is greater than 1"),
        (([0, 1, 1], [0.2, -0.1, 0.9]), {}, ValueError, r"y_proba\[1\] = -0.1 is lower than 0"),
        (([0, 1, 1], [0.2, np.nan, 0.9]), {}, ValueError, r"y_proba\[1\] is NaN"),
        (([0, 1], [[0.2, 0.5, 0.3], [0.1, 0.2, 0.7]]), {}, ValueError, r"y_proba has 3 columns"),
        (([0, 1], 0.5), {}, ValueError, r"y_proba=0.5 is not an array"),
        (([0, 1], ["a", "b"]), {}, ValueError, r"y_proba=\['a', 'b'\] is not numeric"),
        (
            ([0.3, 0.7], [0.2, 0.7]),
            {},
            ValueError,
            r"y_true=\[0.3, 0.7\] holds non-integer numbers",
        ),
        ((["a", 1], [0.2, 0.7]), {}, ValueError, r"y_true=\['a', 1\] mixes strings and numbers"),
        (
            ([[0], [1]], [0.2, 0.7]),
            {},
            ValueError,
            r"y_true has shape \(2, 1\); pass the class labels, a 1-D array",
        ),
        (([0, 1], [0.2, 0.7]), {"normalize": "yes"}, TypeError, r"normalize='yes' is of type str"),
        (
            ([0, 1], [0.2, 0.7]),
            {"sample_weight": [0.0, 0.0]},
            ValueError,
            r"sample_weight is all zero",
        ),
        (
            ([0, 1], [0.2, 0.7]),
            {"sample_weight": [1.0, -1.0]},
            ValueError,
            r"sample_weight sums to zero",
        ),
        (
            ([0, 1], [0.2, 0.7]),
            {"sample_weight": [1.0, np.inf]},
            ValueError,
            r"sample_weight\[1\] is inf",
        ),
        (
            ([0, 1], [0.2, 0.7]),
            {"labels": "ab"},
            ValueError,
            r"labels='ab' is not a 1-D list of labels",
        ),
    ],
)
def test_errors_name_the_argument_and_the_value(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        log_loss(*args, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn refuses each of these too
        with pytest.raises((ValueError, TypeError, ZeroDivisionError)):
            sklearn_log_loss(*args, **kwargs)


def test_logits_errors():
    with pytest.raises(
        ValueError,
        match=r"decision has shape \(2, 2\); a binary classifier's decision_function is 1-D",
    ):
        log_loss_from_logits([0, 1], [[0.3, 0.7], [0.6, 0.4]])
    with pytest.raises(ValueError, match=r"y_true has 2 samples but decision has 3"):
        log_loss_from_logits([0, 1], [0.3, 0.7, 0.1])
    with pytest.raises(ValueError, match=r"decision\[0\] is NaN"):
        log_loss_from_logits([0, 1], [np.nan, 0.7])
    assert log_loss_from_logits([0, 1], [np.inf, np.inf], normalize=False) == math.inf
