"""The types each option accepts: one rule (``bce_core.spec.check_options``), applied the same
way by the reference and by every backend, through every entry point.

A wrong type raises TypeError and a wrong value ValueError, with the same words everywhere;
the words name the argument, the value (or its shape) and its type.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from native_backends import BACKEND_FRAMEWORKS, float64_enabled, installed_backend

from bce_core import reference

X = np.array([[-2.0, 0.5], [1.5, 3.0]])
Y = np.array([[0.0, 1.0], [0.25, 1.0]])
P = np.array([[0.1, 0.5], [0.75, 0.9]])


def _framework_arrays(value: Any) -> list[tuple[str, Any]]:
    """``value`` as an array of each installed framework, named."""
    arrays: list[tuple[str, Any]] = [("numpy", np.asarray(value))]
    if importlib.util.find_spec("torch"):
        import torch

        arrays.append(("torch", torch.tensor(value)))
    if importlib.util.find_spec("tensorflow"):
        import tensorflow as tf

        arrays.append(("tensorflow", tf.constant(value)))
    if importlib.util.find_spec("jax"):
        import jax.numpy as jnp

        arrays.append(("jax", jnp.asarray(value)))
    return arrays


def _bad_numbers(good: float) -> list[tuple[str, Any, type]]:
    """(id, value, the exception it raises) for a numeric option whose valid example is good."""
    cases: list[tuple[str, Any, type]] = [
        ("str", str(good), TypeError),
        ("bytes", b"0", TypeError),
        ("True", True, TypeError),
        ("False", False, TypeError),
        ("np.bool_", np.bool_(True), TypeError),
        ("None", None, TypeError),
        ("complex", complex(good, 0), TypeError),
        ("list", [good], TypeError),
        ("nan", float("nan"), ValueError),
        ("np.nan", np.float32("nan"), ValueError),
    ]
    for name, array in _framework_arrays([good]):
        cases.append((f"one-element {name} array", array, TypeError))
    for name, array in _framework_arrays(True):
        cases.append((f"0-d bool {name} array", array, TypeError))
    return cases


BAD = {
    "label_smoothing": [
        *_bad_numbers(0.1),
        ("-0.1", -0.1, ValueError),
        ("1.5", 1.5, ValueError),
        ("inf", float("inf"), ValueError),
    ],
    "log_clamp": [*_bad_numbers(-5.0), ("5", 5.0, ValueError), ("+inf", float("inf"), ValueError)],
    "validate": [
        ("'no'", "no", TypeError),
        ("''", "", TypeError),
        ("0", 0, TypeError),
        ("1", 1, TypeError),
        ("None", None, TypeError),
        ("numpy array", np.array([True]), TypeError),
    ],
    "reduction": [("'avg'", "avg", ValueError), ("None", None, ValueError), ("3", 3, ValueError)],
}

#: Good values of the numeric options: every one gives the result of the plain float.
GOOD = {
    "label_smoothing": [0, 0.1, np.float32(0.25), np.float64(0.1), np.int64(1)]
    + [array for _, array in _framework_arrays(0.1)],
    "log_clamp": [-5, -5.0, float("-inf"), np.float32(-5.0), np.int32(-5)]
    + [array for _, array in _framework_arrays(-5.0)],
}


def _as_float(value: Any) -> float:
    detach = getattr(value, "detach", None)
    return float(value if detach is None else detach())


class Api:
    """The entry points of one implementation that take ``option``, on its native arrays."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "reference":
            self.impl: Any = reference
            self.native: Callable[[Any], Any] = lambda a: a
        else:
            backend = installed_backend(name)
            self.impl = backend
            self.native = lambda a: backend.asarray(np.asarray(a))

    def calls(self, option: str) -> list[tuple[str, Callable[[Any], Any]]]:
        """(entry point, function of the option's value) for each entry point taking it."""
        impl, x, y, p = self.impl, self.native(X), self.native(Y), self.native(P)
        probs: list[tuple[str, Callable[[Any], Any]]] = [
            ("binary_cross_entropy", lambda v: impl.binary_cross_entropy(p, y, **{option: v}))
        ]
        if hasattr(impl, "autodiff_probs_grad"):
            probs.append(
                ("autodiff_probs_grad", lambda v: impl.autodiff_probs_grad(p, y, **{option: v}))
            )
        if option == "log_clamp":
            return probs
        logits: list[tuple[str, Callable[[Any], Any]]] = [
            ("with_logits", lambda v: impl.binary_cross_entropy_with_logits(x, y, **{option: v})),
            ("value_and_grad", lambda v: impl.value_and_grad(x, y, **{option: v})),
            (
                "value_and_grad wrt tuple",
                lambda v: impl.value_and_grad(x, y, wrt=("logits", "targets"), **{option: v}),
            ),
        ]
        if hasattr(impl, "autodiff_value_and_grad"):
            logits += [
                (
                    "autodiff_value_and_grad",
                    lambda v: impl.autodiff_value_and_grad(x, y, wrt=("logits",), **{option: v}),
                ),
                (
                    "autodiff_second_derivative",
                    lambda v: impl.autodiff_second_derivative(x, y, **{option: v}),
                ),
            ]
        return logits + probs


@pytest.fixture(params=["reference", *BACKEND_FRAMEWORKS])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    with float64_enabled(request.param):
        yield Api(request.param)


def _message(call: Callable[[Any], Any], value: Any, expected: type) -> str:
    with pytest.raises(expected) as info:
        call(value)
    return str(info.value)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [pytest.param(o, v, e, id=f"{o}={i}") for o, cases in BAD.items() for i, v, e in cases],
)
def test_a_bad_option_raises_the_same_error_everywhere(
    api: Api, option: str, value: Any, expected: type
) -> None:
    # The reference's words are the rule's: every backend and entry point says the same.
    calls = Api("reference").calls(option)[:1]
    want = _message(calls[0][1], value, expected)
    assert option in want
    if expected is TypeError:
        assert type(value).__name__ in want
    for entry, call in api.calls(option):
        assert _message(call, value, expected) == want, entry


@pytest.mark.parametrize("option", ["label_smoothing", "log_clamp"])
def test_good_numbers_give_the_result_of_the_plain_float(api: Api, option: str) -> None:
    for entry, call in api.calls(option)[:3]:
        for value in GOOD[option]:
            got = call(value)
            expected = call(_as_float(value))
            got, expected = (r[0] if isinstance(r, tuple) else r for r in (got, expected))
            assert np.asarray(got).tobytes() == np.asarray(expected).tobytes(), (entry, value)


@pytest.mark.parametrize("validate", [True, False, np.bool_(True), np.bool_(False)])
def test_validate_takes_python_and_numpy_bools(api: Api, validate: Any) -> None:
    for _entry, call in api.calls("validate"):
        call(validate)  # the data is valid: no error either way
    bad = np.array([[0.0, 1.0], [2.0, 1.0]])  # a target outside [0, 1]
    impl, native = api.impl, api.native
    if bool(validate):
        with pytest.raises(ValueError, match="targets"):
            impl.binary_cross_entropy_with_logits(native(X), native(bad), validate=validate)
    else:
        impl.binary_cross_entropy_with_logits(native(X), native(bad), validate=validate)


def test_validate_no_does_not_validate_silently() -> None:
    # The call that once validated because "no" is a truthy string.
    import bce_core

    with pytest.raises(TypeError, match="validate must be True or False, got 'no' of type str"):
        bce_core.binary_cross_entropy_with_logits(X, Y, validate="no")
