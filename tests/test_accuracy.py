"""The accuracy contract against the exact mpmath oracle.

Element loss within 4 ULP of exact; d loss / d x within 4 ULP of exact for
hard targets and of the larger of its two terms for soft targets; over a
dense sweep of logits from -1e4 to 1e4 with tiny values, subnormals, the
extremes, the infinities and NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

from bce_conformance import oracle
from bce_core import reference
from bce_numpy.backend import NumpyBackend

ULP_BOUND = 4.0


def sweep(dtype: type) -> np.ndarray:
    info = np.finfo(dtype)
    magnitudes = np.concatenate(
        [
            np.geomspace(1e-30, 1e4, 240),
            np.linspace(0.05, 60, 240),
            [
                info.smallest_subnormal,
                info.tiny,
                1e-300 if dtype == np.float64 else 1e-40,
                20.0,
                50.0,
                88.7,
                100.0,
                103.9,
                709.7,
                745.2,
                1e4,
                info.max,
            ],
        ]
    )
    values = np.concatenate([magnitudes, -magnitudes, [0.0]])
    return values.astype(dtype)


# (targets, weight, pos_weight, label_smoothing)
CONFIGS = [
    (0.0, 1.0, 1.0, 0.0),
    (1.0, 1.0, 1.0, 0.0),
    (0.3, 1.0, 1.0, 0.0),
    (1.0, 0.7, 2.5, 0.0),
    (0.0, 3.0, 0.4, 0.0),
    (0.85, 1.3, 1.7, 0.1),
    (1.0, 1.0, 1.0, 0.2),
]


def exact_values(x: np.ndarray, y: float, w: float, q: float, eps: float, dtype: type):
    yd, wd, qd = (float(np.asarray(v, dtype)) for v in (y, w, q))
    losses = [oracle.element_loss(float(v), yd, wd, qd, eps) for v in x]
    grads = [oracle.element_grad(float(v), yd, wd, qd, eps) for v in x]
    hard = eps == 0 and y in (0.0, 1.0)
    # Soft targets: error measured against the larger term, where cancellation is allowed.
    grad_refs = [None if hard else g[1] for g in grads]
    return losses, [g[0] for g in grads], grad_refs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "y{}-w{}-q{}-ls{}".format(*c))
def test_numpy_backend_meets_the_accuracy_contract(dtype: type, config: tuple) -> None:
    y, w, q, eps = config
    x = sweep(dtype)
    shape = x.shape
    args = dict(
        weight=np.full(shape, w, dtype),
        pos_weight=np.full(shape, q, dtype),
        label_smoothing=eps,
        reduction="none",
    )
    targets = np.full(shape, y, dtype)
    backend = NumpyBackend()
    loss = backend.binary_cross_entropy_with_logits(x, targets, **args)
    _, grad = backend.value_and_grad(x, targets, **args)
    g_from_hess, _ = backend.grad_hess(
        x, targets, weight=args["weight"], pos_weight=args["pos_weight"]
    )
    losses, grads, grad_refs = exact_values(x, y, w, q, eps, dtype)
    name = np.dtype(dtype).name
    loss_ulps = oracle.ulp_errors(loss, losses, name)
    grad_ulps = oracle.ulp_errors(grad, grads, name, grad_refs)
    assert loss_ulps.max() <= ULP_BOUND, (
        f"loss {loss_ulps.max():.2f} ULP at x={x[loss_ulps.argmax()]!r}"
    )
    assert grad_ulps.max() <= ULP_BOUND, (
        f"grad {grad_ulps.max():.2f} ULP at x={x[grad_ulps.argmax()]!r}"
    )
    if eps == 0:
        hess_grad_ulps = oracle.ulp_errors(g_from_hess, grads, name, grad_refs)
        assert hess_grad_ulps.max() <= ULP_BOUND


@pytest.mark.parametrize("config", CONFIGS[:4], ids=lambda c: "y{}-w{}-q{}-ls{}".format(*c))
def test_reference_is_exact_to_a_few_ulp_in_float64(config: tuple) -> None:
    y, w, q, eps = config
    x = sweep(np.float64)[::3]
    args = dict(
        weight=np.full(x.shape, w),
        pos_weight=np.full(x.shape, q),
        label_smoothing=eps,
        reduction="none",
    )
    targets = np.full(x.shape, y)
    loss = reference.binary_cross_entropy_with_logits(x, targets, **args)
    _, grad = reference.value_and_grad(x, targets, **args)
    losses, grads, grad_refs = exact_values(x, y, w, q, eps, np.float64)
    assert oracle.ulp_errors(loss, losses, "float64").max() <= ULP_BOUND
    assert oracle.ulp_errors(grad, grads, "float64", grad_refs).max() <= ULP_BOUND


def test_hessian_and_probability_form_against_the_oracle() -> None:
    x = np.concatenate([np.linspace(-40, 40, 161), [-700.0, 700.0]])
    y = np.where(np.arange(x.size) % 3 == 0, 0.25, 1.0)
    w, q = 1.5, 0.75
    for impl in (reference, NumpyBackend()):
        _, hess = impl.grad_hess(x, y, weight=np.full(x.shape, w), pos_weight=np.full(x.shape, q))
        exact = [oracle.element_hessian(float(a), float(b), w, q) for a, b in zip(x, y)]
        assert oracle.ulp_errors(hess, exact, "float64").max() <= 8
    p = np.concatenate(
        [np.geomspace(1e-300, 0.5, 80), 1 - np.geomspace(1e-16, 0.5, 40), [0.0, 1.0]]
    )
    targets = np.linspace(0, 1, p.size)
    for clamp in (-100.0, float("-inf")):
        exact = [
            oracle.element_loss_probs(float(a), float(b), log_clamp=clamp)
            for a, b in zip(p, targets)
        ]
        for impl in (reference, NumpyBackend()):
            got = impl.binary_cross_entropy(p, targets, reduction="none", log_clamp=clamp)
            assert oracle.ulp_errors(got, exact, "float64").max() <= ULP_BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinities_and_nan_follow_the_spec(dtype: type) -> None:
    x = np.array([np.inf, -np.inf, np.inf, -np.inf, np.nan, np.nan], dtype)
    y = np.array([1, 0, 0, 1, 0, 1], dtype)
    backend = NumpyBackend()
    loss = backend.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_array_equal(loss[:4], [0, 0, np.inf, np.inf])
    assert np.isnan(loss[4:]).all()
    _, grad = backend.value_and_grad(x, y, reduction="none")
    np.testing.assert_array_equal(grad[:4], [0, 0, 1, -1])
    assert np.isnan(grad[4:]).all()


def test_the_tails_that_frameworks_lose() -> None:
    """Values the built-in losses get wrong: a loss of 2e-9 at logit -20, gradients at +-20."""
    backend = NumpyBackend()
    x = np.array([-20.0, 20.0, -100.0], np.float32)
    loss = backend.binary_cross_entropy_with_logits(
        x, np.array([0, 1, 0], np.float32), reduction="none"
    )
    subnormal = float(np.finfo(np.float32).smallest_subnormal)
    np.testing.assert_allclose(
        loss, [2.0611537e-09, 2.0611537e-09, 3.7200760e-44], rtol=1e-6, atol=subnormal
    )
    assert loss[2] > 0  # a subnormal, not flushed to zero
    _, grad = backend.value_and_grad(x, np.array([0, 1, 0], np.float32), reduction="none")
    np.testing.assert_allclose(
        grad, [2.0611537e-09, -2.0611537e-09, 3.7200760e-44], rtol=1e-6, atol=subnormal
    )
