"""The contract every backend shares, tested once over every installed backend.

The rules of the specification one by one are in ``test_spec_rules.py`` (float64, every
backend); here: every option, reduction and gradient against the float64 reference in every
dtype and on every device, half precision rounded once, the same errors in the same words,
NumPy and Python operands next to native ones, the caller's arrays and parameters left
untouched, devices and conversion, and plugins that import no framework. Framework-specific
behaviour (compilers, tapes, vmap, autodiff through the framework's own API) stays in the
per-backend test files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from native_backends import (
    BACKEND_FRAMEWORKS,
    OPERANDS,
    float64_enabled,
    installed_backend,
    mark_known_difference,
    native_operand,
    to_numpy,
)

from bce_core import reference
from bce_core.plugin import AutodiffBackend, Backend, ParameterBackend
from bce_core.spec import REDUCTIONS, WRT_NAMES

try:
    import ml_dtypes
except ImportError:  # bfloat16 NumPy arrays need it; everything else does not
    ml_dtypes = None

DTYPES = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")
#: Relative parity tolerance against the float64 reference, per result dtype.
RTOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6, "float64": 1e-13}


@pytest.fixture(params=list(BACKEND_FRAMEWORKS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each installed backend in turn (JAX with float64 on); known disagreements xfail."""
    mark_known_difference(request, request.param)
    loaded = installed_backend(request.param)
    with float64_enabled(request.param):
        yield loaded


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        if ml_dtypes is None:
            pytest.skip("bfloat16 NumPy arrays need ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def as_float64(value: Any) -> np.ndarray:
    return np.asarray(value).astype(np.float64)


def assert_parity(got: Any, expected: Any, dtype: str, what: str) -> None:
    """``got`` (NumPy, of ``dtype``) equals the float64 ``expected`` within the dtype's
    tolerance, relative to each value and to the largest one (for terms that cancel)."""
    got, expected = as_float64(got), as_float64(expected)
    assert got.shape == expected.shape, what
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]), initial=0.0))
    np.testing.assert_allclose(
        got, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=what
    )


def problem(dtype: np.dtype) -> dict[str, np.ndarray]:
    """A (4, 3) call with every operand: far and infinite logits, hard and soft targets,
    a weight per row (one of them 0), a pos_weight per column and a mask."""
    return dict(
        logits=np.array(
            [[-3.0, 0.5, 20.0], [0.0, -25.0, 2.0], [np.inf, 1.5, -0.75], [4.0, -np.inf, 0.25]]
        ).astype(dtype),
        targets=np.array(
            [[0.0, 1.0, 0.3], [1.0, 0.0, 0.5], [1.0, 0.8, 0.0], [0.2, 0.0, 1.0]]
        ).astype(dtype),
        weight=np.array([[0.5], [2.0], [1.0], [0.0]]).astype(dtype),
        pos_weight=np.array([1.5, 0.5, 3.0]).astype(dtype),
        mask=np.array(
            [[True, True, False], [True, True, True], [True, False, True], [True, True, True]]
        ),
    )


def probs_problem(dtype: np.dtype) -> dict[str, np.ndarray]:
    """Probabilities with exact 0 and 1 against both targets (where the clamp acts)."""
    return dict(
        probs=np.array(
            [[0.0, 1.0, 0.25], [0.5, 0.0, 1.0], [0.9, 0.01, 0.6], [1.0, 0.3, 0.0]]
        ).astype(dtype),
        targets=np.array(
            [[1.0, 0.0, 0.5], [1.0, 0.0, 1.0], [0.0, 1.0, 0.3], [0.0, 0.6, 1.0]]
        ).astype(dtype),
        weight=np.array([[0.5], [2.0], [1.0], [1.5]]).astype(dtype),
        pos_weight=np.array([1.5, 0.5, 3.0]).astype(dtype),
        mask=np.array(
            [[True, True, True], [True, False, True], [True, True, True], [False, True, True]]
        ),
    )


def on(backend: Backend, device: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: backend.asarray(v, device) for k, v in arrays.items()}


# -- values, dtypes and devices against the float64 reference ---------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_option_reduction_and_gradient_matches_the_reference(
    backend: Backend, dtype: str
) -> None:
    """The loss, value_and_grad for every wrt (the broadcast weight's and pos_weight's
    gradients of their own shapes), grad_hess and the probability form at three clamps: the
    reference's values, the input's dtype, on the input's device; for an autodiff backend also
    the framework's own gradients."""
    np_dtype = numpy_dtype(dtype)
    arrays, probs = problem(np_dtype), probs_problem(np_dtype)
    operands = ("weight", "pos_weight", "mask")
    for device in backend.devices():
        x = on(backend, device, arrays)
        p = on(backend, device, probs)

        def check(result: Any, expected: Any, what: str) -> None:
            assert backend.device_of(result) == device, what
            got = backend.to_numpy(result)
            assert got.dtype == np_dtype, what
            assert_parity(got, expected, dtype, f"{backend.name} {dtype} {device}: {what}")

        for reduction in REDUCTIONS:
            options = dict(label_smoothing=0.1, reduction=reduction)
            expected_loss, expected_grads = reference.value_and_grad(
                arrays["logits"],
                arrays["targets"],
                **{k: arrays[k] for k in operands},
                wrt=WRT_NAMES,
                **options,
            )
            native = {k: x[k] for k in operands}
            check(
                backend.binary_cross_entropy_with_logits(
                    x["logits"], x["targets"], **native, **options
                ),
                expected_loss,
                f"loss {reduction}",
            )
            loss, grads = backend.value_and_grad(
                x["logits"], x["targets"], **native, wrt=WRT_NAMES, **options
            )
            check(loss, expected_loss, f"value_and_grad loss {reduction}")
            assert isinstance(grads, tuple) and len(grads) == len(WRT_NAMES)
            for name, grad, expected in zip(WRT_NAMES, grads, expected_grads):
                check(grad, expected, f"d/d{name} {reduction}")
                if reduction == "weighted_mean":  # a name alone gives its gradient alone
                    _, single = backend.value_and_grad(
                        x["logits"], x["targets"], **native, wrt=name, **options
                    )
                    check(single, expected, f"d/d{name} alone {reduction}")
            if isinstance(backend, AutodiffBackend):
                loss, grads = backend.autodiff_value_and_grad(
                    x["logits"], x["targets"], **native, wrt=("logits", "weight"), **options
                )
                check(loss, expected_loss, f"autodiff loss {reduction}")
                for name, grad in zip(("logits", "weight"), grads):
                    check(
                        grad,
                        expected_grads[WRT_NAMES.index(name)],
                        f"autodiff d/d{name} {reduction}",
                    )
            for clamp in (-100.0, -10.0, float("-inf")):
                p_options = dict(options, log_clamp=clamp)
                expected = reference.binary_cross_entropy(
                    probs["probs"], probs["targets"], **{k: probs[k] for k in operands}, **p_options
                )
                check(
                    backend.binary_cross_entropy(
                        p["probs"], p["targets"], **{k: p[k] for k in operands}, **p_options
                    ),
                    expected,
                    f"probs loss {reduction} log_clamp={clamp}",
                )
        finite = {
            k: np.where(np.isfinite(v), v, 1.0).astype(v.dtype) if k == "logits" else v
            for k, v in arrays.items()
        }
        expected = reference.grad_hess(
            finite["logits"],
            finite["targets"],
            weight=finite["weight"],
            pos_weight=finite["pos_weight"],
        )
        got = backend.grad_hess(
            backend.asarray(finite["logits"], device),
            x["targets"],
            weight=x["weight"],
            pos_weight=x["pos_weight"],
        )
        assert isinstance(got, tuple) and len(got) == 2
        for name, result, want in zip(("grad", "hess"), got, expected):
            check(result, want, f"grad_hess {name}")


def ulps(got: np.ndarray, exact: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """|got - exact| in units of ``dtype``'s last place at ``exact`` (subnormal spacing
    below the smallest normal number)."""
    info = ml_dtypes.finfo(dtype) if ml_dtypes is not None else np.finfo(dtype)
    at = np.abs(exact)
    exponent = np.floor(np.log2(np.where(at > 0, at, 1.0)))
    exponent = np.where(at > 0, np.maximum(exponent, info.minexp), info.minexp)
    return np.abs(as_float64(got) - exact) / np.ldexp(1.0, (exponent - info.nmant).astype(int))


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_is_computed_wider_and_rounded_once(backend: Backend, dtype: str) -> None:
    """Every elementwise result within one unit in the last place of the exact value (half an
    ULP of rounding plus the float32 working error), and the mean rounded once."""
    np_dtype = numpy_dtype(dtype)
    x = np.linspace(-12, 12, 49).astype(np_dtype)
    y = np.linspace(0, 1, 49).astype(np_dtype)
    w = np.linspace(0.5, 2, 49).astype(np_dtype)
    expected_loss = reference.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    _, expected_grads = reference.value_and_grad(
        x, y, weight=w, reduction="none", wrt=("logits", "weight")
    )
    expected_hess = reference.grad_hess(x, y, weight=w)[1]
    nx, ny, nw = (backend.asarray(v) for v in (x, y, w))
    results = {
        "loss": (
            backend.binary_cross_entropy_with_logits(nx, ny, weight=nw, reduction="none"),
            expected_loss,
        )
    }
    loss, grads = backend.value_and_grad(
        nx, ny, weight=nw, reduction="none", wrt=("logits", "weight")
    )
    results["value_and_grad loss"] = loss, expected_loss
    results["d/dlogits"], results["d/dweight"] = zip(grads, expected_grads)
    results["hess"] = backend.grad_hess(nx, ny, weight=nw)[1], expected_hess
    if isinstance(backend, AutodiffBackend):
        _, (grad,) = backend.autodiff_value_and_grad(
            nx, ny, weight=nw, wrt=("logits",), reduction="none"
        )
        results["autodiff d/dlogits"] = grad, expected_grads[0]
    for what, (result, expected) in results.items():
        got = backend.to_numpy(result)
        assert got.dtype == np_dtype, what
        worst = float(ulps(got, expected, np_dtype).max())
        assert worst <= 1.0, f"{backend.name} {dtype} {what}: {worst:.2f} ULP"
    total = backend.to_numpy(backend.binary_cross_entropy_with_logits(nx, ny, weight=nw))
    assert total.dtype == np_dtype
    expected_total = reference.binary_cross_entropy_with_logits(x, y, weight=w)
    assert float(ulps(total, expected_total, np_dtype)) <= 1.0


# -- subnormal probabilities -----------------------------------------------------------------


def subnormal_probs(dtype: np.dtype) -> np.ndarray:
    """The smallest and the largest positive subnormal of the working dtype (float32 for the
    half dtypes, whose own subnormals are normal there), one between, and their negatives."""
    work = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    info = np.finfo(work)
    tiny, largest = float(info.smallest_subnormal), float(np.nextafter(info.tiny, 0, dtype=work))
    if dtype.itemsize == 2 and dtype.name == "float16":
        info16 = np.finfo(np.float16)  # float16's own subnormals
        tiny, largest = float(info16.smallest_subnormal), float(np.nextafter(info16.tiny, 0))
    between = float(np.sqrt(tiny * largest))
    return np.array([tiny, between, largest, between, between, -between, -tiny]).astype(dtype)


def assert_within(got: Any, exact: np.ndarray, dtype: np.dtype, k: float, what: str) -> None:
    """``got`` within ``k`` ULP of ``exact`` (the same infinity or NaN where it is one); 0 is
    also right where the exact value is below the smallest normal number."""
    got, exact = as_float64(got), np.asarray(exact, np.float64)
    smallest_normal = float((ml_dtypes.finfo if ml_dtypes else np.finfo)(dtype).tiny)
    with np.errstate(over="ignore"):  # an exact value beyond the dtype's range is inf there
        rounded = exact.astype(dtype).astype(np.float64)
    special = ~np.isfinite(rounded)
    np.testing.assert_array_equal(got[special], rounded[special], err_msg=what)
    flushed = (np.abs(exact) < smallest_normal) & (got == 0)
    error = ulps(got[~special], exact[~special], dtype)
    error[flushed[~special]] = 0.0
    assert error.max(initial=0.0) <= k, f"{what}: {error.max():.2f} ULP at {exact[~special]}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_probabilities_have_exact_logarithms(backend: Backend, dtype: str) -> None:
    """log p of a subnormal p is exact at every clamp (XLA and TensorFlow on the CPU read
    subnormal inputs as 0), and so is d loss / d p; a negative subnormal is outside [0, 1]."""
    np_dtype = numpy_dtype(dtype)
    p = subnormal_probs(np_dtype)
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0]).astype(np_dtype)
    k = 1.0 if dtype in HALF else 4.0
    np_p, np_y = backend.asarray(p), backend.asarray(y)
    for clamp in (-100.0, -200.0, -np.inf):
        what = f"{backend.name} {dtype} log_clamp={clamp}"
        expected = reference.binary_cross_entropy(p, y, reduction="none", log_clamp=clamp)
        got = backend.binary_cross_entropy(np_p, np_y, reduction="none", log_clamp=clamp)
        assert_within(backend.to_numpy(got), expected, np_dtype, k, f"{what} loss")
        if isinstance(backend, AutodiffBackend):
            _, grad = backend.autodiff_probs_grad(np_p, np_y, reduction="sum", log_clamp=clamp)
            expected_grad = reference.probs_grad(p, y)
            assert_within(backend.to_numpy(grad), expected_grad, np_dtype, k, f"{what} d/dp")


# -- errors: the same type and the same words everywhere -------------------------------------


X = np.zeros((2, 3), np.float32)
Y = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]], np.float32)
LOGITS, PROBS, GRADIENT = (
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "value_and_grad",
)
#: name -> (function, inputs, targets, options): every argument error of the spec.
BAD_CALLS: dict[str, tuple[str, Any, Any, dict[str, Any]]] = {
    "targets shape": (LOGITS, X, np.zeros((3, 2), np.float32), {}),
    "integer logits": (LOGITS, X.astype(np.int32), Y, {}),
    "bool logits": (LOGITS, X.astype(bool), Y, {}),
    "integer probs": (PROBS, X.astype(np.int64), Y, {}),
    "complex targets": (LOGITS, X, Y.astype(np.complex64), {}),
    "complex weight": (LOGITS, X, Y, {"weight": np.ones(3, np.complex64)}),
    "unknown reduction": (LOGITS, X, Y, {"reduction": "meen"}),
    "reduction not a string": (LOGITS, X, Y, {"reduction": None}),
    "label_smoothing above 1": (LOGITS, X, Y, {"label_smoothing": 1.5}),
    "label_smoothing below 0": (GRADIENT, X, Y, {"label_smoothing": -0.1}),
    "label_smoothing NaN": (PROBS, X, Y, {"label_smoothing": float("nan")}),
    "label_smoothing not a number": (LOGITS, X, Y, {"label_smoothing": "0.1"}),
    "weight enlarges": (LOGITS, X, Y, {"weight": np.ones((4, 2, 3), np.float32)}),
    "pos_weight on the wrong axis": (GRADIENT, X, Y, {"pos_weight": np.ones(2, np.float32)}),
    "mask enlarges": (PROBS, X, Y, {"mask": np.ones((2, 2, 3), bool)}),
    "integer mask": (LOGITS, X, Y, {"mask": np.ones((2, 3), np.int32)}),
    "batch_mean of 0-d": (LOGITS, np.float32(0.0), np.float32(1.0), {"reduction": "batch_mean"}),
    "batch_mean of 0-d gradient": (
        GRADIENT,
        np.float32(0.0),
        np.float32(1.0),
        {"reduction": "batch_mean"},
    ),
    "positive log_clamp": (PROBS, np.full((2, 3), 0.5, np.float32), Y, {"log_clamp": 1.0}),
    "unknown wrt": (GRADIENT, X, Y, {"wrt": "logit"}),
    "unknown name in a wrt tuple": (GRADIENT, X, Y, {"wrt": ("logits", "mask")}),
    "empty wrt": (GRADIENT, X, Y, {"wrt": ()}),
    "wrt weight without weight": (GRADIENT, X, Y, {"wrt": ("logits", "weight")}),
    "wrt pos_weight without pos_weight": (GRADIENT, X, Y, {"wrt": "pos_weight"}),
    "validate target above 1": (
        LOGITS,
        X,
        np.array([[0, 0, 1], [0, 1.5, 0]], np.float32),
        {"validate": True},
    ),
    "validate target below 0 gradient": (
        GRADIENT,
        X,
        np.array([[0, -1, 1], [0, 1, 0]], np.float32),
        {"validate": True},
    ),
    "validate NaN logit": (
        LOGITS,
        np.array([[0, 0, 0], [0, np.nan, 0]], np.float32),
        Y,
        {"validate": True},
    ),
    "validate NaN target": (
        GRADIENT,
        X,
        np.array([[0, 0, np.nan], [0, 1, 0]], np.float32),
        {"validate": True},
    ),
    "validate NaN weight": (
        GRADIENT,
        X,
        Y,
        {"validate": True, "weight": np.array([1, np.nan, 1], np.float32)},
    ),
    "validate NaN pos_weight": (
        LOGITS,
        X,
        Y,
        {"validate": True, "pos_weight": np.array([1, 1, np.nan], np.float32)},
    ),
    "validate probability above 1": (
        PROBS,
        np.array([[0.5, 0.5, 1.25], [0, 1, 0.5]], np.float32),
        Y,
        {"validate": True},
    ),
    "validate probability below 0": (
        PROBS,
        np.array([[0.5, -0.5, 0.5], [0, 1, 0.5]], np.float32),
        Y,
        {"validate": True},
    ),
    "validate NaN probability": (
        PROBS,
        np.array([[0.5, 0.5, 0.5], [np.nan, 1, 0.5]], np.float32),
        Y,
        {"validate": True},
    ),
    "validate probs target above 1": (
        PROBS,
        np.full((2, 3), 0.5, np.float32),
        np.array([[0, 0, 1], [0, 2, 0]], np.float32),
        {"validate": True},
    ),
}
REFERENCE = {
    LOGITS: reference.binary_cross_entropy_with_logits,
    PROBS: reference.binary_cross_entropy,
    GRADIENT: reference.value_and_grad,
}


def raised(call: Callable[[], Any]) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_raise_the_references_error_word_for_word(
    backend: Backend, case: str
) -> None:
    """With native operands and with NumPy ones: the reference's exception type and message
    (validation errors name the first bad index and its value)."""
    function, inputs, targets, options = BAD_CALLS[case]
    expected = raised(lambda: REFERENCE[function](inputs, targets, **options))
    method = getattr(backend, function)
    native = {k: native_operand(backend, v) if k in OPERANDS else v for k, v in options.items()}
    assert (
        raised(
            lambda: method(
                native_operand(backend, inputs), native_operand(backend, targets), **native
            )
        )
        == expected
    )
    assert raised(lambda: method(inputs, targets, **options)) == expected


# -- operands: NumPy and Python next to native arrays, the caller's arrays untouched ----------


def test_numpy_and_python_operands_give_the_native_result(backend: Backend) -> None:
    """Targets as NumPy bool or int, a NumPy float64 weight, a nested list, a Python number:
    each cast to the logits' dtype first, so the result is bit for bit the all-native one;
    NumPy logits give a native result of their dtype."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(0, 3, (3, 4)).astype(np.float32), rng.integers(0, 2, (3, 4))
    w, q, m = rng.uniform(0.5, 2, (3, 1)), rng.uniform(1, 2, 4), rng.uniform(size=(3, 4)) < 0.5
    for device in backend.devices():
        nx = backend.asarray(x, device)

        def native(value: np.ndarray) -> Any:
            return backend.asarray(np.asarray(value, np.float32), device)

        options = dict(mask=backend.asarray(m, device), reduction="none")
        expected = backend.to_numpy(
            backend.binary_cross_entropy_with_logits(
                nx, native(y), weight=native(w), pos_weight=native(q), **options
            )
        )
        _, expected_grad = to_numpy(
            backend,
            backend.value_and_grad(
                nx,
                native(y),
                weight=native(w),
                pos_weight=native(q),
                wrt=("logits", "weight"),
                **options,
            ),
        )
        for targets in (y, y.astype(bool), y.astype(np.float64), y.tolist()):
            mixed = backend.binary_cross_entropy_with_logits(
                nx, targets, weight=w, pos_weight=q.tolist(), mask=m, reduction="none"
            )
            assert backend.device_of(mixed) == device
            np.testing.assert_array_equal(backend.to_numpy(mixed), expected)
            _, grads = backend.value_and_grad(
                nx,
                targets,
                weight=w,
                pos_weight=q,
                mask=m,
                reduction="none",
                wrt=("logits", "weight"),
            )
            for got, want in zip(to_numpy(backend, grads), expected_grad):
                assert got.dtype == np.float32
                np.testing.assert_array_equal(got, want)
        # A Python number is rounded once to the logits' dtype, as a 0-d array of it is.
        for weight, pos_weight in ((0.1, 0.7), (2, 3)):
            with_number = backend.binary_cross_entropy_with_logits(
                nx, y, weight=weight, pos_weight=pos_weight
            )
            with_array = backend.binary_cross_entropy_with_logits(
                nx, y, weight=native(weight), pos_weight=native(pos_weight)
            )
            assert backend.to_numpy(with_number) == backend.to_numpy(with_array)
    all_numpy = backend.binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=q, mask=m, reduction="none"
    )
    # The array_api backend serves NumPy's standard namespace too: NumPy in, NumPy out.
    native = np.ndarray if backend.name == "array_api" else type(backend.asarray(x))
    assert isinstance(all_numpy, native)
    np.testing.assert_array_equal(backend.to_numpy(all_numpy), expected)


def every_call(backend: Backend, x: Any, y: Any, p: Any, options: dict[str, Any]) -> None:
    """Every function of the backend once per reduction, with every gradient."""
    for reduction in REDUCTIONS:
        backend.binary_cross_entropy_with_logits(x, y, reduction=reduction, **options)
        backend.binary_cross_entropy(p, y, reduction=reduction, **options)
        backend.value_and_grad(x, y, reduction=reduction, wrt=WRT_NAMES, **options)
    backend.binary_cross_entropy_with_logits(x, y, validate=True, **options)
    backend.grad_hess(x, y, weight=options["weight"], pos_weight=options["pos_weight"])


def test_the_callers_arrays_are_left_untouched(backend: Backend) -> None:
    """NaN and inf under the mask included (a backend may make them safe, on a copy only)."""
    x = np.array([[np.nan, 0.5, -2.0], [np.inf, 3.0, -np.inf]], np.float32)
    y = np.array([[0.5, 1.0, 0.0], [0.0, 0.25, 1.0]], np.float32)
    p = np.array([[np.nan, 0.5, 0.0], [1.0, 0.25, 1.0]], np.float32)
    arrays = dict(
        x=x,
        y=y,
        p=p,
        weight=np.array([[1.0], [2.0]], np.float32),
        pos_weight=np.array([1.5, 0.5, 2.0], np.float32),
        mask=np.array([[False, True, True], [False, True, True]]),
    )
    copies = {k: v.copy() for k, v in arrays.items()}
    native = {k: backend.asarray(v) for k, v in arrays.items()}

    def call(values: dict[str, Any]) -> None:
        options = {k: values[k] for k in ("weight", "pos_weight", "mask")}
        every_call(backend, values["x"], values["y"], values["p"], options)

    call(native)
    for name, value in native.items():
        np.testing.assert_array_equal(backend.to_numpy(value), copies[name], err_msg=name)
    call(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, copies[name], err_msg=name)
    if isinstance(backend, ParameterBackend):
        for device in backend.devices():
            logits = backend.as_parameter(np.nan_to_num(x), device)
            weight = backend.as_parameter(arrays["weight"], device)
            before = [backend.parameter_state(v) for v in (logits, weight)]
            options = {"weight": weight, "pos_weight": native["pos_weight"], "mask": native["mask"]}
            every_call(backend, logits, native["y"], native["p"], options)
            for what, parameter, state in zip(("logits", "weight"), (logits, weight), before):
                for key, value in backend.parameter_state(parameter).items():
                    if value is None or state[key] is None:
                        assert value is None and state[key] is None, (what, key)
                    else:
                        np.testing.assert_array_equal(value, state[key], err_msg=(what, key))


# -- devices and conversion ---------------------------------------------------------------------


def test_devices_and_the_round_trip_through_native_arrays(backend: Backend) -> None:
    """devices() lists "cpu" first, the same list from every thread; asarray puts an array on
    each and to_numpy gives it back, dtype and bits, from strided and reversed views too."""
    seen: list[list[str]] = []
    threads = [threading.Thread(target=lambda: seen.append(backend.devices())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    devices = backend.devices()
    assert devices[0] == "cpu" and all(d == devices for d in seen)
    dtypes = [np.dtype(d) for d in ("float16", "float32", "float64", "bool", "int64")]
    if ml_dtypes is not None:
        dtypes.append(np.dtype(ml_dtypes.bfloat16))
    strided = np.arange(12.0).reshape(3, 4)[:, ::2]
    for device in devices:
        for dtype in dtypes:
            array = np.array([[0.0, 1.5], [-2.0, 3.25]]).astype(dtype)
            native = backend.asarray(array, device)
            assert backend.device_of(native) == device
            back = backend.to_numpy(native)
            assert back.dtype == dtype and back.tobytes() == array.tobytes(), dtype
        for view in (strided, np.arange(4.0)[::-1]):
            np.testing.assert_array_equal(backend.to_numpy(backend.asarray(view, device)), view)


PLUGINS = f"""
import json, sys
from bce_core.registry import get_registry
registry = get_registry()
names = {list(BACKEND_FRAMEWORKS)!r}
print(json.dumps({{
    "registered": [n for n in names if n in registry.names()],
    "missing": {{n: registry.missing_requirement(n) for n in names if n in registry.names()}},
    "imported": sorted(m for m in ("torch", "tensorflow", "jax", "jaxlib") if m in sys.modules),
}}))
"""


def test_every_plugin_registers_without_importing_its_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PLUGINS], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["registered"] == list(BACKEND_FRAMEWORKS)
    assert result["imported"] == []
    for name, missing in result["missing"].items():
        installed = importlib.util.find_spec(BACKEND_FRAMEWORKS[name]) is not None
        assert (missing is None) == installed, (name, missing)
