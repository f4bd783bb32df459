"""Infinite and NaN operands, the spec's rule for each, on the reference and every backend.

The rule: a target, weight or pos_weight that is infinite or NaN makes its element's loss, and
each of that element's derivatives, NaN (``validate=True`` refuses them); an infinite or NaN
logit or probability follows the formulas (the README's table). A weight of exactly 0 is a
zero coefficient: its element contributes exactly 0 to the loss and to every derivative but
the one with respect to the weight, whatever the other operands hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from native_backends import BACKEND_FRAMEWORKS, NativeCalls, float64_enabled, installed_backend

from bce_core import reference

BACKENDS = ("reference", *BACKEND_FRAMEWORKS)
DTYPES = ("float32", "float64")
BAD = (np.inf, -np.inf, np.nan)


class ReferenceCalls:
    """The float64 reference with the methods of ``NativeCalls``."""

    name = "reference"
    loss = staticmethod(reference.binary_cross_entropy_with_logits)
    loss_probs = staticmethod(reference.binary_cross_entropy)
    value_and_grad = staticmethod(reference.value_and_grad)
    grad_hess = staticmethod(reference.grad_hess)


def calls_for(name: str) -> Any:
    return ReferenceCalls() if name == "reference" else NativeCalls(installed_backend(name))


def operands(dtype: str) -> dict[str, np.ndarray]:
    return {
        "logits": np.array([0.5, -2.0, 3.0], dtype),
        "probs": np.array([0.6, 0.2, 0.9], dtype),
        "targets": np.array([1.0, 0.0, 0.5], dtype),
        "weight": np.array([1.0, 2.0, 0.5], dtype),
        "pos_weight": np.array([1.5, 1.0, 2.0], dtype),
    }


def with_bad(dtype: str, name: str, index: int, bad: float) -> dict[str, np.ndarray]:
    arrays = operands(dtype)
    arrays[name] = arrays[name].copy()
    arrays[name][index] = bad
    return arrays


def assert_nan_only_at(values: Any, index: int) -> None:
    values = np.asarray(values, np.float64)
    assert np.isnan(values[index]), values
    others = np.delete(values, index)
    assert np.all(np.isfinite(others)), values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("operand", ["targets", "weight", "pos_weight"])
@pytest.mark.parametrize("bad", BAD, ids=["inf", "-inf", "nan"])
def test_non_finite_data_makes_its_element_nan(
    name: str, dtype: str, operand: str, bad: float
) -> None:
    calls = calls_for(name)
    a = with_bad(dtype, operand, 1, bad)
    data = {"weight": a["weight"], "pos_weight": a["pos_weight"]}
    with float64_enabled(name):
        loss = calls.loss(a["logits"], a["targets"], reduction="none", **data)
        loss_p = calls.loss_probs(a["probs"], a["targets"], reduction="none", **data)
        total, grads = calls.value_and_grad(
            a["logits"], a["targets"], reduction="sum", wrt=("logits", "targets"), **data
        )
        g, h = calls.grad_hess(a["logits"], a["targets"], **data)
    for values in (loss, loss_p, grads[0], grads[1], g, h):
        assert_nan_only_at(values, 1)
    assert np.isnan(total)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    "operand,bad",
    [
        ("logits", np.nan),
        ("logits", np.inf),
        ("logits", -np.inf),
        ("targets", np.inf),
        ("targets", np.nan),
        ("pos_weight", np.inf),
        ("pos_weight", np.nan),
    ],
)
def test_a_zero_weight_contributes_exactly_zero(
    name: str, dtype: str, operand: str, bad: float
) -> None:
    calls = calls_for(name)
    a = with_bad(dtype, operand, 0, bad)
    a["weight"][0] = 0.0
    data = {"weight": a["weight"], "pos_weight": a["pos_weight"]}
    wrt = ("logits", "targets", "pos_weight")
    with float64_enabled(name):
        loss = calls.loss(a["logits"], a["targets"], reduction="none", **data)
        total, grads = calls.value_and_grad(
            a["logits"], a["targets"], reduction="sum", wrt=wrt, **data
        )
        g, h = calls.grad_hess(a["logits"], a["targets"], **data)
        if operand != "logits":
            loss_p = calls.loss_probs(a["probs"], a["targets"], reduction="none", **data)
            assert loss_p[0] == 0 and np.all(np.isfinite(loss_p)), loss_p
    assert loss[0] == 0 and np.all(np.isfinite(loss)), loss
    assert np.isfinite(total)
    for values in (*grads, g, h):
        assert values[0] == 0 and np.all(np.isfinite(values)), values


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("operand", ["weight", "pos_weight"])
def test_validation_refuses_an_infinite_weight(name: str, operand: str) -> None:
    calls = calls_for(name)
    a = with_bad("float32", operand, 2, np.inf)
    with pytest.raises(ValueError, match=operand):
        calls.loss(
            a["logits"], a["targets"], weight=a["weight"], pos_weight=a["pos_weight"], validate=True
        )


def test_torch_autograd_gives_the_element_nan() -> None:
    installed_backend("torch")
    import torch

    import bce_core

    a = with_bad("float32", "targets", 1, np.inf)
    x = torch.tensor(a["logits"], requires_grad=True)
    bce_core.binary_cross_entropy_with_logits(
        x, torch.tensor(a["targets"]), reduction="sum"
    ).backward()
    assert_nan_only_at(x.grad.numpy(), 1)
    a = with_bad("float32", "targets", 0, np.inf)
    a["weight"][0] = 0.0
    x = torch.tensor(a["logits"], requires_grad=True)
    loss = bce_core.binary_cross_entropy_with_logits(
        x, torch.tensor(a["targets"]), weight=torch.tensor(a["weight"]), reduction="sum"
    )
    loss.backward()
    assert torch.isfinite(loss) and x.grad[0] == 0 and torch.isfinite(x.grad).all()


def test_jax_grad_gives_the_element_nan() -> None:
    installed_backend("jax")
    import jax
    import jax.numpy as jnp

    import bce_core

    a = with_bad("float32", "weight", 1, np.nan)

    def loss(x: Any) -> Any:
        return bce_core.binary_cross_entropy_with_logits(
            x, jnp.asarray(a["targets"]), weight=jnp.asarray(a["weight"]), reduction="sum"
        )

    for function in (jax.grad(loss), jax.jit(jax.grad(loss))):
        assert_nan_only_at(np.asarray(function(jnp.asarray(a["logits"]))), 1)


def test_tensorflow_tape_gives_the_element_nan() -> None:
    installed_backend("tensorflow")
    import tensorflow as tf

    import bce_core

    a = with_bad("float32", "pos_weight", 1, np.inf)
    x = tf.Variable(a["logits"])

    def gradient() -> Any:
        with tf.GradientTape() as tape:
            loss = bce_core.binary_cross_entropy_with_logits(
                x,
                tf.constant(a["targets"]),
                pos_weight=tf.constant(a["pos_weight"]),
                reduction="sum",
            )
        return tape.gradient(loss, x)

    for function in (gradient, tf.function(gradient)):
        assert_nan_only_at(function().numpy(), 1)


@pytest.mark.parametrize("size", [3, 5000])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_non_finite_targets_without_other_operands(name: str, dtype: str, size: int) -> None:
    """The calls without weight or pos_weight, which have fast paths of their own."""
    calls = calls_for(name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=size).astype(dtype)
    y = rng.uniform(size=size).astype(dtype)
    y[1] = np.inf
    with float64_enabled(name):
        loss = calls.loss(x, y, reduction="none")
        mean = calls.loss(x, y)
        _, grad = calls.value_and_grad(x, y)
    assert_nan_only_at(loss, 1)
    assert_nan_only_at(grad, 1)
    assert np.isnan(mean)
