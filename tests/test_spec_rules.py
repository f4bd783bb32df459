"""Every rule of the specification, on the reference and on every installed backend.

The backends are called on their native arrays (``conftest.NativeCalls``); a backend whose
framework is not installed is skipped, naming it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from native_backends import (
    BACKEND_FRAMEWORKS,
    NativeCalls,
    float64_enabled,
    installed_backend,
    mark_known_difference,
)

import bce_core
from bce_core import reference


def reference_api() -> SimpleNamespace:
    return SimpleNamespace(
        name="reference",
        loss=reference.binary_cross_entropy_with_logits,
        loss_probs=reference.binary_cross_entropy,
        value_and_grad=reference.value_and_grad,
        grad_hess=reference.grad_hess,
    )


@pytest.fixture(params=["reference", *BACKEND_FRAMEWORKS])
def api(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace | NativeCalls]:
    if request.param == "reference":
        yield reference_api()
        return
    mark_known_difference(request, request.param)
    backend = installed_backend(request.param)
    with float64_enabled(request.param):
        yield NativeCalls(backend)


def softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


# -- the seed example ---------------------------------------------------------


def test_seed_example_through_the_public_api() -> None:
    loss = bce_core.binary_cross_entropy_with_logits(
        np.array([[9.7], [0.0]]), np.array([[0.0], [1.0]])
    )
    assert float(loss) == pytest.approx(5.196604231088621, rel=1e-15)
    assert isinstance(loss, np.ndarray) and loss.shape == ()


# -- element loss, smoothing, weights ------------------------------------------


def test_element_loss_matches_the_formula(api: SimpleNamespace) -> None:
    x = np.array([-3.0, 0.5, 2.0])
    y = np.array([0.0, 0.25, 1.0])
    w = np.array([0.5, 1.0, 2.0])
    q = np.array([3.0, 0.5, 1.5])
    got = api.loss(x, y, weight=w, pos_weight=q, reduction="none")
    expected = [
        wi * ((1 - yi) * softplus(xi) + qi * yi * softplus(-xi))
        for xi, yi, wi, qi in zip(x, y, w, q)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_label_smoothing_moves_targets_towards_one_half(api: SimpleNamespace) -> None:
    x = np.array([1.5, -2.0])
    y = np.array([1.0, 0.0])
    eps = 0.2
    got = api.loss(x, y, label_smoothing=eps, reduction="none")
    yp = y * (1 - eps) + eps / 2
    expected = [(1 - t) * softplus(a) + t * softplus(-a) for a, t in zip(x, yp)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    # eps = 1 makes every target 1/2.
    np.testing.assert_allclose(
        api.loss(x, y, label_smoothing=1.0, reduction="none"),
        api.loss(x, np.full(2, 0.5), reduction="none"),
        rtol=1e-15,
    )


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_label_smoothing_outside_unit_interval_is_rejected(
    api: SimpleNamespace, eps: float
) -> None:
    with pytest.raises(ValueError, match=r"label_smoothing=.* is outside \[0, 1\]"):
        api.loss([0.0], [1.0], label_smoothing=eps)


def test_label_smoothing_must_be_a_number(api: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match="label_smoothing must be a real number"):
        api.loss([0.0], [1.0], label_smoothing="0.1")


def test_pos_weight_aligns_with_the_last_axis(api: SimpleNamespace) -> None:
    x = np.zeros((2, 3))
    y = np.ones((2, 3))
    q = np.array([1.0, 2.0, 3.0])
    got = api.loss(x, y, pos_weight=q, reduction="none")
    np.testing.assert_allclose(got, np.log(2) * np.array([q, q]), rtol=1e-15)


@pytest.mark.parametrize("shape", [(), (1,), (4, 1), (4, 3), (1, 3)])
def test_weight_broadcasts_without_enlarging(api: SimpleNamespace, shape: tuple[int, ...]) -> None:
    x = np.linspace(-2, 2, 12).reshape(4, 3)
    y = np.full((4, 3), 0.3)
    w = np.arange(1, 1 + int(np.prod(shape))).reshape(shape).astype(float)
    got = api.loss(x, y, weight=w, reduction="none")
    np.testing.assert_allclose(
        got, np.broadcast_to(w, (4, 3)) * api.loss(x, y, reduction="none"), rtol=1e-15
    )


@pytest.mark.parametrize("argument", ["weight", "pos_weight", "mask"])
def test_enlarging_broadcast_is_rejected_naming_both_shapes(
    api: SimpleNamespace, argument: str
) -> None:
    value = np.ones((2, 4, 3), bool if argument == "mask" else float)
    with pytest.raises(
        ValueError,
        match=rf"{argument} shape \(2, 4, 3\) does not broadcast to "
        rf"logits shape \(4, 3\)",
    ):
        api.loss(np.zeros((4, 3)), np.zeros((4, 3)), **{argument: value})


def test_targets_must_have_the_logits_shape(api: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"targets shape \(3, 1\) must equal logits shape \(3,\)"):
        api.loss(np.zeros(3), np.zeros((3, 1)))


# -- dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex64, np.uint8])
def test_logits_must_be_floating(api: SimpleNamespace, dtype: type) -> None:
    with pytest.raises(TypeError, match=r"logits must have a floating dtype .* cast it first"):
        api.loss(np.zeros(3, dtype), np.zeros(3))


def test_integer_and_bool_targets_are_cast(api: SimpleNamespace) -> None:
    x = np.array([-1.0, 2.0], np.float32)
    expected = api.loss(x, np.array([0.0, 1.0], np.float32), reduction="none")
    for targets in (np.array([0, 1]), np.array([False, True]), [0, 1]):
        np.testing.assert_array_equal(api.loss(x, targets, reduction="none"), expected)


def test_complex_targets_are_rejected(api: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match="targets must hold real numbers"):
        api.loss(np.zeros(2), np.zeros(2, np.complex128))


def test_integer_mask_is_rejected(api: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match=r"mask must be a boolean array .* mask.astype\(bool\)"):
        api.loss(np.zeros(2), np.zeros(2), mask=np.array([1, 0]))


# -- reductions ---------------------------------------------------------------


def test_reductions(api: SimpleNamespace) -> None:
    x = np.array([[-1.0, 0.5], [2.0, 3.0], [0.0, -4.0]])
    y = np.array([[0.0, 1.0], [1.0, 0.2], [0.5, 0.0]])
    w = np.array([[0.5], [2.0], [1.0]])
    m = np.array([[True, False], [True, True], [False, True]])
    elements = api.loss(x, y, weight=w, reduction="none")
    kept = elements[m]
    full_w = np.broadcast_to(w, x.shape)
    expected = {
        "sum": kept.sum(),
        "mean": kept.sum() / 4,
        "weighted_mean": kept.sum() / full_w[m].sum(),
        "batch_mean": kept.sum() / 3,
    }
    for reduction, value in expected.items():
        got = api.loss(x, y, weight=w, mask=m, reduction=reduction)
        assert float(got) == pytest.approx(value, rel=1e-14), reduction
    np.testing.assert_array_equal(
        api.loss(x, y, weight=w, mask=m, reduction="none"), np.where(m, elements, 0.0)
    )


def test_invalid_reduction_lists_the_valid_names(api: SimpleNamespace) -> None:
    with pytest.raises(
        ValueError,
        match="reduction='avg' is not a valid reduction; use one of "
        "'none', 'sum', 'mean', 'weighted_mean', 'batch_mean'",
    ):
        api.loss([0.0], [1.0], reduction="avg")
    with pytest.raises(ValueError, match="Did you mean 'mean'"):
        api.loss([0.0], [1.0], reduction="maen")


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "batch_mean", "sum"])
@pytest.mark.parametrize("case", ["empty", "all masked"])
def test_zero_denominator_gives_zero_with_zero_gradient(
    api: SimpleNamespace, reduction: str, case: str
) -> None:
    n = 0 if case == "empty" else 3
    x = np.full(n, np.nan if case == "all masked" else 1.0)
    y = np.ones(n)
    options = {"reduction": reduction, "weight": np.ones(n)}
    if case == "all masked":
        options["mask"] = np.zeros(n, bool)
    loss, (g_x, g_w) = api.value_and_grad(x, y, wrt=("logits", "weight"), **options)
    assert float(loss) == 0.0
    assert np.all(g_x == 0.0) and np.all(g_w == 0.0)
    assert g_x.shape == x.shape


@pytest.mark.parametrize("weight", [[0.0, 0.0], [1.0, -1.0]], ids=["zeros", "cancelling"])
def test_weighted_mean_with_zero_total_weight_is_zero(
    api: SimpleNamespace, weight: list[float]
) -> None:
    loss, (g_x, g_w) = api.value_and_grad(
        np.array([1.0, 2.0]),
        np.ones(2),
        weight=np.array(weight),
        reduction="weighted_mean",
        wrt=("logits", "weight"),
    )
    assert float(loss) == 0.0 and np.all(g_x == 0.0) and np.all(g_w == 0.0)
    # Under "mean" a zero weight zeroes the logits gradient, but the loss still depends on w.
    loss, (g_x, g_w) = api.value_and_grad(
        np.array([1.0, 2.0]),
        np.ones(2),
        weight=np.zeros(2),
        reduction="mean",
        wrt=("logits", "weight"),
    )
    assert float(loss) == 0.0 and np.all(g_x == 0.0)
    np.testing.assert_allclose(
        g_w, api.loss(np.array([1.0, 2.0]), np.ones(2), reduction="none") / 2, rtol=1e-15
    )


def test_batch_mean_needs_a_batch_axis(api: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="batch_mean.*0-d"):
        api.loss(np.float64(1.0), np.float64(1.0), reduction="batch_mean")


# -- infinities, NaN, mask ----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infinities(api: SimpleNamespace, dtype: str) -> None:
    x = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf, -np.inf], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype)
    loss = api.loss(x, y, reduction="none")
    np.testing.assert_array_equal(loss, [0.0, 0.0, np.inf, np.inf, np.inf, np.inf])
    _, grad = api.value_and_grad(x, y, reduction="none")
    np.testing.assert_array_equal(grad, [0.0, 0.0, 1.0, -1.0, 0.5, -0.5])


def test_zero_coefficient_contributes_exactly_zero(api: SimpleNamespace) -> None:
    x = np.array([np.inf, -np.inf])
    loss = api.loss(x, np.array([0.0, 1.0]), weight=np.zeros(2), reduction="none")
    np.testing.assert_array_equal(loss, [0.0, 0.0])
    loss = api.loss(np.array([-np.inf]), np.array([1.0]), pos_weight=np.zeros(1), reduction="none")
    np.testing.assert_array_equal(loss, [0.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_in_nan_out(api: SimpleNamespace, dtype: str) -> None:
    x, y = np.array([np.nan, 0.0], dtype), np.array([1.0, 1.0], dtype)
    loss = api.loss(x, y, reduction="none")
    assert np.isnan(loss[0]) and loss[1] == pytest.approx(np.log(2), rel=1e-7)
    _, grad = api.value_and_grad(x, y, reduction="none")
    assert np.isnan(grad[0]) and grad[1] == -0.5
    assert np.isnan(api.loss(x, y))
    assert np.isnan(api.loss(np.zeros(1, dtype), np.array([np.nan], dtype), reduction="none")[0])


def test_masked_elements_contribute_nothing_even_nan(api: SimpleNamespace) -> None:
    x = np.array([0.0, np.nan, np.inf])
    y = np.array([1.0, 1.0, 0.0])
    mask = np.array([True, False, False])
    loss, grad = api.value_and_grad(x, y, mask=mask, reduction="mean")
    assert float(loss) == pytest.approx(np.log(2))
    np.testing.assert_array_equal(grad, [-0.5, 0.0, 0.0])


# -- validation -------------------------------------------------------------


def test_validation_names_the_first_bad_index_and_value(api: SimpleNamespace) -> None:
    y = np.array([[0.0, 1.0], [1.5, -2.0]])
    with pytest.raises(ValueError, match=r"targets\[1, 0\] = 1\.5 is outside \[0, 1\]"):
        api.loss(np.zeros((2, 2)), y, validate=True)
    with pytest.raises(ValueError, match=r"logits\[1\] = nan is NaN"):
        api.loss(np.array([0.0, np.nan]), np.zeros(2), validate=True)
    with pytest.raises(ValueError, match=r"probs\[0\] = 1\.25 is outside \[0, 1\]"):
        api.loss_probs(np.array([1.25]), np.zeros(1), validate=True)
    with pytest.raises(ValueError, match=r"weight\[0\] = nan is NaN"):
        api.loss(np.zeros(1), np.zeros(1), weight=np.array([np.nan]), validate=True)


def test_validation_skips_masked_elements(api: SimpleNamespace) -> None:
    loss = api.loss(
        np.array([0.0, np.nan]), np.array([1.0, 7.0]), mask=np.array([True, False]), validate=True
    )
    assert float(loss) == pytest.approx(np.log(2))


def test_without_validation_bad_probabilities_give_nan(api: SimpleNamespace) -> None:
    loss = api.loss_probs(
        np.array([1.5, -0.5, np.nan, 0.5]), np.array([1.0, 0.0, 0.0, 1.0]), reduction="none"
    )
    assert np.isnan(loss[:3]).all() and loss[3] == pytest.approx(np.log(2))


# -- probability form ---------------------------------------------------------


def test_probability_form_and_its_clamp(api: SimpleNamespace) -> None:
    p = np.array([0.0, 1.0, 0.25, 0.0])
    y = np.array([1.0, 0.0, 0.5, 0.0])
    loss = api.loss_probs(p, y, reduction="none")
    np.testing.assert_allclose(
        loss, [100.0, 100.0, -(0.5 * np.log(0.25) + 0.5 * np.log(0.75)), 0.0], rtol=1e-15
    )
    exact = api.loss_probs(p, y, reduction="none", log_clamp=float("-inf"))
    np.testing.assert_array_equal(exact[[0, 1, 3]], [np.inf, np.inf, 0.0])


def test_probability_form_agrees_with_logits_form(api: SimpleNamespace) -> None:
    x = np.linspace(-5, 5, 11)
    y = np.linspace(0, 1, 11)
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(
        api.loss_probs(p, y, pos_weight=np.array(2.0), reduction="none"),
        api.loss(x, y, pos_weight=np.array(2.0), reduction="none"),
        rtol=1e-12,
    )


def test_log_clamp_must_be_non_positive(api: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="log_clamp=5.0 must be <= 0"):
        api.loss_probs([0.5], [1.0], log_clamp=5)


# -- value_and_grad -----------------------------------------------------------


def test_wrt_tuple_returns_gradients_in_order_and_shapes(api: SimpleNamespace) -> None:
    x = np.zeros((4, 3))
    y = np.full((4, 3), 0.5)
    w = np.ones((4, 1))
    q = np.ones(3)
    loss, grads = api.value_and_grad(
        x, y, weight=w, pos_weight=q, wrt=("pos_weight", "logits", "weight", "targets")
    )
    assert [g.shape for g in grads] == [(3,), (4, 3), (4, 1), (4, 3)]
    _, single = api.value_and_grad(x, y, weight=w, pos_weight=q, wrt="weight")
    np.testing.assert_array_equal(single, grads[2])


def test_wrt_errors(api: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="wrt names 'weight' but weight=None"):
        api.value_and_grad([0.0], [1.0], wrt="weight")
    with pytest.raises(ValueError, match="Did you mean 'logits'"):
        api.value_and_grad([0.0], [1.0], wrt="logit")
    with pytest.raises(ValueError, match="is empty"):
        api.value_and_grad([0.0], [1.0], wrt=())


def central_difference(f, value: np.ndarray, step: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        up, down = value.copy(), value.copy()
        h = step * max(1.0, abs(value[index]))
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "weighted_mean", "batch_mean"])
def test_gradients_match_finite_differences(api: SimpleNamespace, reduction: str) -> None:
    rng = np.random.default_rng(3)
    args = {
        "logits": rng.normal(0, 2, (4, 3)),
        "targets": rng.uniform(0, 1, (4, 3)),
        "weight": rng.uniform(0.5, 2, (4, 1)),
        "pos_weight": rng.uniform(0.5, 2, (3,)),
    }
    options = {
        "mask": rng.uniform(size=(4, 3)) < 0.7,
        "label_smoothing": 0.1,
        "reduction": reduction,
    }
    names = ("logits", "targets", "weight", "pos_weight")
    _, grads = api.value_and_grad(**args, **options, wrt=names)

    for name, grad in zip(names, grads):

        def f(value: np.ndarray, name: str = name) -> float:
            return float(
                np.sum(
                    reference.binary_cross_entropy_with_logits(**{**args, name: value}, **options)
                )
            )

        np.testing.assert_allclose(
            grad, central_difference(f, args[name]), rtol=1e-6, atol=1e-8, err_msg=name
        )


def test_grad_hess_matches_finite_differences(api: SimpleNamespace) -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    y = np.array([0.0, 1.0, 0.3, 1.0, 0.0])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    q = np.array(1.7)
    grad, hess = api.grad_hess(x, y, weight=w, pos_weight=q)

    def loss(v: np.ndarray) -> float:
        return float(
            np.sum(
                reference.binary_cross_entropy_with_logits(
                    v, y, weight=w, pos_weight=q, reduction="sum"
                )
            )
        )

    def first(v: np.ndarray) -> np.ndarray:
        return reference.grad_hess(v, y, weight=w, pos_weight=q)[0]

    np.testing.assert_allclose(grad, central_difference(loss, x), rtol=1e-6, atol=1e-9)
    numeric = np.array(
        [
            (first(x + h * e)[i] - first(x - h * e)[i]) / (2 * h)
            for i, e, h in [(i, np.eye(5)[i], 1e-6) for i in range(5)]
        ]
    )
    np.testing.assert_allclose(hess, numeric, rtol=1e-6, atol=1e-9)


def test_scalar_weight_gets_a_scalar_gradient(api: SimpleNamespace) -> None:
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    for reduction in ("mean", "weighted_mean"):
        _, (g_w, g_q) = api.value_and_grad(
            x,
            y,
            weight=np.array(2.0),
            pos_weight=np.array(1.5),
            reduction=reduction,
            wrt=("weight", "pos_weight"),
        )
        assert g_w.shape == () and g_q.shape == ()
    _, g_q = api.value_and_grad(x, y, pos_weight=np.array(1.5), reduction="sum", wrt="pos_weight")
    expected = float(np.sum(y * np.logaddexp(0, -x)))
    assert float(g_q) == pytest.approx(expected, rel=1e-14)
