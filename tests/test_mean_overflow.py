"""The dividing reductions without intermediate overflow, on every backend and code path.

"mean", "weighted_mean" and "batch_mean" divide the sum of the element losses by their
denominator. The sum of finite element losses may overflow the dtype while the quotient is
representable: logits [3e38, -3e38] with targets [0, 1] in float32 have element losses of
3e38 each, a sum of 6e38 (above float32's 3.4e38) and a mean of exactly 3e38. The rule: the
reduced loss, and every gradient, is the exact value rounded to the dtype (within a few ULP),
finite whenever that value is representable, and inf only where the exact quotient itself
overflows. The expected values are the reference's element losses and partial derivatives
(float64) combined exactly, in rational arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from native_backends import NativeCalls, float64_enabled, installed_backend, to_numpy

from bce_core import reference

#: The largest finite float of each dtype, to four significant digits and below it.
LARGE = {"float16": 6.0e4, "bfloat16": 3.0e38, "float32": 3.0e38, "float64": 1.7e308}
NUMPY_DTYPES: dict[str, Any] = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float32": np.float32,
    "float64": np.float64,
}
ULPS = 4


@dataclass(frozen=True)
class Case:
    """One call: logits and the other operands as multiples of the dtype's LARGE value."""

    name: str
    reduction: str
    logits: tuple[Any, ...]
    targets: tuple[Any, ...]
    weight: tuple[Any, ...] | None = None
    pos_weight: tuple[float, ...] | None = None
    mask: tuple[Any, ...] | None = None
    wrt: tuple[str, ...] = ("logits",)
    #: Whether the exact reduced loss exceeds the dtype's range (then it must be inf).
    overflows: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


MANY = 1024  # a sum of 1024 losses near the largest float: 10 doublings above the range

CASES = [
    Case("mean", "mean", (1.0, -1.0), (0.0, 1.0)),
    Case("mean_masked", "mean", (1.0, -1.0, 0.5), (0.0, 1.0, 1.0), mask=(True, True, False)),
    Case("mean_many", "mean", (1.0, -1.0) * (MANY // 2), (0.0, 1.0) * (MANY // 2)),
    Case(
        "mean_pos_weight",
        "mean",
        (1.0, -1.0),
        (0.0, 1.0),
        pos_weight=(1.0,),
        wrt=("logits", "pos_weight"),
    ),
    Case("batch_mean", "batch_mean", ((1.0, 0.0), (-1.0, 0.0)), ((0.0, 0.0), (1.0, 1.0))),
    Case("batch_mean_overflows", "batch_mean", ((1.0, -1.0),), ((0.0, 1.0),), overflows=True),
    Case(
        "weighted_mean",
        "weighted_mean",
        (1.0, -0.5),
        (0.0, 1.0),
        weight=(1.0, 1.5),
        wrt=("logits", "weight"),
    ),
    Case(
        "weighted_mean_broadcast",
        "weighted_mean",
        (1.0, -0.5),
        (0.0, 1.0),
        weight=(0.75,),
        wrt=("logits", "weight"),
    ),
]


def arrays_of(case: Case, dtype: str) -> dict[str, Any]:
    """The case's operands as NumPy arrays of ``dtype`` (logits scaled by LARGE)."""
    kind = NUMPY_DTYPES[dtype]
    out: dict[str, Any] = {
        "logits": (np.array(case.logits, np.float64) * LARGE[dtype]).astype(kind),
        "targets": np.array(case.targets, np.float64).astype(kind),
    }
    if case.weight is not None:
        out["weight"] = np.array(case.weight, np.float64).astype(kind)
    if case.pos_weight is not None:
        out["pos_weight"] = np.array(case.pos_weight, np.float64).astype(kind)
    if case.mask is not None:
        out["mask"] = np.array(case.mask, bool)
    return out


def _float64(arrays: dict[str, Any]) -> dict[str, Any]:
    return {k: v if v.dtype == bool else v.astype(np.float64) for k, v in arrays.items()}


def _exact(values: Any) -> list[Fraction]:
    return [Fraction(float(v)) for v in np.asarray(values, np.float64).ravel()]


def _to_float(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def expected(case: Case, dtype: str) -> dict[str, Any]:
    """The exact loss and gradients as float64 (inf where beyond float64), with the scale each
    is held to: the largest term that enters it."""
    a = _float64(arrays_of(case, dtype))
    shape = a["logits"].shape
    full = {k: np.broadcast_to(a[k], shape) for k in ("weight", "pos_weight") if k in a}
    options = {k: a[k] for k in ("mask",) if k in a}
    elements = reference.binary_cross_entropy_with_logits(
        a["logits"], a["targets"], reduction="none", **full, **options
    )
    keep = np.broadcast_to(a.get("mask", True), shape)
    if case.reduction == "mean":
        by = Fraction(int(keep.sum()))
    elif case.reduction == "batch_mean":
        by = Fraction(shape[0])
    else:
        by = sum(_exact(np.where(keep, full["weight"], 0.0)), Fraction(0))
    loss = sum(_exact(elements), Fraction(0)) / by
    _, partials = reference.value_and_grad(
        a["logits"], a["targets"], reduction="sum", wrt=case.wrt, **full, **options
    )
    out: dict[str, Any] = {"loss": (_to_float(loss), 0.0)}
    for name, partial in zip(case.wrt, partials):
        terms = [p / by for p in _exact(partial)]
        # The scale of the terms a backend adds (autodiff adds B_i / W and -loss / W apart).
        scale = _to_float(sum((abs(t) for t in terms), Fraction(0)))
        if name == "weight" and case.reduction == "weighted_mean":
            terms = [t - loss / by if k else Fraction(0) for t, k in zip(terms, keep.ravel())]
            scale += _to_float(abs(loss / by)) * int(keep.sum())
        own = a["logits"] if name == "logits" else a[name]
        grad = np.zeros(own.shape, np.float64)
        # Sum each term into the element of the argument it was broadcast from.
        index = np.broadcast_to(np.arange(own.size).reshape(own.shape), shape).ravel()
        sums = [Fraction(0)] * own.size
        for i, t in zip(index, terms):
            sums[i] += t
        grad.ravel()[:] = [_to_float(s) for s in sums]
        out[name] = (grad, scale)
    return out


def ulp(value: float, dtype: str) -> float:
    """The spacing of ``dtype`` at ``value``."""
    info = ml_dtypes.finfo(NUMPY_DTYPES[dtype])
    magnitude = abs(value)
    if math.isinf(magnitude):
        return math.inf
    if magnitude < float(info.tiny):
        return float(info.smallest_subnormal)
    return float(info.eps) * 2.0 ** math.floor(math.log2(magnitude))


def assert_close(
    got: Any, want: Any, scale: float, dtype: str, what: str, ulps: float = ULPS
) -> None:
    """Each element within ULPS of the exact value rounded to ``dtype`` (ULPs at the larger of
    the value and ``scale``, for a difference of two terms); inf exactly where it overflows."""
    got = np.asarray(got).astype(np.float64).ravel()
    want = np.asarray(want, np.float64).ravel()
    kind = NUMPY_DTYPES[dtype]
    with np.errstate(over="ignore"):  # beyond the dtype's range: inf, which is the point
        rounded_all = want.astype(kind).astype(np.float64)
    for i, (g, w, rounded) in enumerate(zip(got, want, rounded_all)):
        if math.isinf(rounded):
            assert g == rounded, f"{what}[{i}]: {g!r}, the exact value overflows {dtype}"
            continue
        assert math.isfinite(g), f"{what}[{i}]: {g!r}, exact {w!r} is finite in {dtype}"
        tol = ulps * ulp(max(abs(w), scale), dtype)
        assert abs(g - rounded) <= tol, f"{what}[{i}]: {g!r}, exact {w!r} (± {tol:.3g})"


# -- the code paths ---------------------------------------------------------------------------

Run = Callable[[Case, dict[str, Any]], tuple[Any, Any, Any]]


def _options(case: Case, arrays: dict[str, Any]) -> dict[str, Any]:
    given = {k: arrays[k] for k in ("weight", "pos_weight", "mask") if k in arrays}
    return {"reduction": case.reduction, **given}


_MADE: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}


def backend_calls(name: str, **kwargs: Any) -> Run:
    """The backend's own loss and value_and_grad, eagerly (``kwargs``: a backend made with
    them, once, so that its compiled programs are reused)."""

    def run(case: Case, arrays: dict[str, Any]) -> tuple[Any, Any, Any]:
        backend = installed_backend(name)
        if kwargs:
            key = (name, tuple(sorted(kwargs.items())))
            if key not in _MADE:
                _MADE[key] = type(backend)(**kwargs)
            backend = _MADE[key]
        calls = NativeCalls(backend)
        x, y, options = arrays["logits"], arrays["targets"], _options(case, arrays)
        loss = calls.loss(x, y, **options)
        value, grads = calls.value_and_grad(x, y, wrt=case.wrt, **options)
        return loss, value, grads

    return run


def autodiff_calls(name: str, compiled: bool) -> Run:
    """The loss differentiated by the framework's autodiff (compiled: torch.compile,
    jax.jit, tf.function)."""

    def run(case: Case, arrays: dict[str, Any]) -> tuple[Any, Any, Any]:
        backend = installed_backend(name)
        calls = NativeCalls(backend)
        x, y, options = arrays["logits"], arrays["targets"], _options(case, arrays)
        value, grads = calls._call(
            backend.autodiff_value_and_grad, x, y, wrt=case.wrt, compiled=compiled, **options
        )
        return value, value, grads

    return run


def jax_jit_calls(case: Case, arrays: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The backend's loss and value_and_grad inside a caller's jax.jit."""
    import jax

    backend = installed_backend("jax")
    names = [k for k in ("logits", "targets", "weight", "pos_weight", "mask") if k in arrays]
    native = [backend.asarray(arrays[k]) for k in names]

    def both(*values: Any) -> Any:
        given = dict(zip(names, values))
        x, y = given.pop("logits"), given.pop("targets")
        loss = backend.binary_cross_entropy_with_logits(x, y, reduction=case.reduction, **given)
        value, grads = backend.value_and_grad(x, y, reduction=case.reduction, wrt=case.wrt, **given)
        return loss, value, grads

    return to_numpy(backend, jax.jit(both)(*native))


def tf_function_calls(case: Case, arrays: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The backend's loss and value_and_grad inside a caller's tf.function."""
    backend = installed_backend("tensorflow")
    import tensorflow as tf

    names = [k for k in ("logits", "targets", "weight", "pos_weight", "mask") if k in arrays]
    native = [backend.asarray(arrays[k]) for k in names]

    @tf.function
    def both(*values: Any) -> Any:
        given = dict(zip(names, values))
        x, y = given.pop("logits"), given.pop("targets")
        loss = backend.binary_cross_entropy_with_logits(x, y, reduction=case.reduction, **given)
        value, grads = backend.value_and_grad(x, y, reduction=case.reduction, wrt=case.wrt, **given)
        return loss, value, grads

    return to_numpy(backend, both(*native))


ALL = ("float16", "bfloat16", "float32", "float64")
#: (path id, backend, run, dtypes). torch.compile takes seconds a program: two dtypes.
PATHS: list[tuple[str, str, Run, tuple[str, ...]]] = [
    ("numpy", "numpy", backend_calls("numpy"), ALL),
    ("torch-eager", "torch", backend_calls("torch", one_pass_min_elements=None), ALL),
    ("torch-one-pass", "torch", backend_calls("torch", one_pass_min_elements=1), ALL),
    ("torch-autograd", "torch", autodiff_calls("torch", False), ALL),
    ("torch-compile", "torch", autodiff_calls("torch", True), ("float32", "float64")),
    ("jax", "jax", backend_calls("jax"), ALL),
    ("jax-jit", "jax", jax_jit_calls, ALL),
    ("jax-autodiff-jit", "jax", autodiff_calls("jax", True), ALL),
    ("tensorflow", "tensorflow", backend_calls("tensorflow"), ALL),
    ("tf-function", "tensorflow", tf_function_calls, ALL),
    ("tf-tape-function", "tensorflow", autodiff_calls("tensorflow", True), ALL),
]

#: The paths that compile a program per case (a second or more each here), and their cases.
COMPILING = {"torch-one-pass", "jax-jit", "jax-autodiff-jit", "tf-function", "tf-tape-function"}
COMPILED_CASES = ("mean", "mean_many", "mean_pos_weight", "batch_mean_overflows", "weighted_mean")


def _selected(path: str, case: Case) -> bool:
    if path == "torch-compile":
        return case.name in ("mean", "weighted_mean")
    return path not in COMPILING or case.name in COMPILED_CASES


PARAMS = [
    pytest.param(path, backend, run, dtype, case, id=f"{path}-{dtype}-{case.name}")
    for path, backend, run, dtypes in PATHS
    for dtype in dtypes
    for case in CASES
    if _selected(path, case)
]


@pytest.mark.parametrize(("path", "backend", "run", "dtype", "case"), PARAMS)
def test_dividing_reductions_do_not_overflow(
    path: str, backend: str, run: Run, dtype: str, case: Case
) -> None:
    installed_backend(backend)
    want = expected(case, dtype)
    arrays = arrays_of(case, dtype)
    if dtype == "float64":
        with float64_enabled(backend):
            loss, value, grads = run(case, arrays)
    else:
        loss, value, grads = run(case, arrays)
    grads = grads if isinstance(grads, tuple) else (grads,)
    want_loss, _ = want["loss"]
    # A sum of n elements carries up to log2(n) roundings (pairwise), each of up to an ULP.
    ulps = ULPS * max(1, math.ceil(math.log2(arrays["logits"].size)))
    assert_close(loss, want_loss, 0.0, dtype, f"{path} loss", ulps)
    assert_close(value, want_loss, 0.0, dtype, f"{path} value", ulps)
    for name, grad in zip(case.wrt, grads):
        want_grad, scale = want[name]
        assert np.shape(grad) == want_grad.shape, name
        assert_close(grad, want_grad, scale, dtype, f"{path} d/d{name}")


@pytest.mark.parametrize("dtype", ALL)
def test_the_expected_values_are_the_exact_quotients(dtype: str) -> None:
    """The oracle of this file on the first case: a mean of exactly LARGE, and the overflowing
    batch mean twice that (inf in the dtype)."""
    large = float(np.array(LARGE[dtype]).astype(NUMPY_DTYPES[dtype]))
    assert expected(CASES[0], dtype)["loss"][0] == large
    assert expected(CASES[5], dtype)["loss"][0] == 2 * large
