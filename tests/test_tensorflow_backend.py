"""The TensorFlow backend against the float64 reference and the exact mpmath oracle.

Covers the forward loss, the fused ``value_and_grad``, ``grad_hess`` and
TensorFlow's own autodiff (tf.GradientTape eager, tf.function and
tf.function(jit_compile=True), first and second order), the 4 ULP accuracy
contract over a dense sweep of logits, dtypes and devices, NumPy operands
next to tensors and variables, and dispatch through the public API (the
contract every backend shares is in test_contract.py and test_spec_rules.py).
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import bce_core  # noqa: E402
from bce_conformance import oracle  # noqa: E402
from bce_core import reference  # noqa: E402
from bce_core.registry import get_registry  # noqa: E402
from bce_core.spec import REDUCTIONS  # noqa: E402
from bce_numpy.backend import NumpyBackend  # noqa: E402
from bce_tensorflow.backend import TensorFlowBackend  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")

BACKEND = TensorFlowBackend()
NUMPY = NumpyBackend()
FLOATS = (np.float32, np.float64)
DTYPE_NAMES = {np.float32: "float32", np.float64: "float64"}
#: Relative tolerance of a parity check against the float64 reference, per dtype.
RTOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 1e-6, "float64": 1e-12}

GPU_DEVICES = [d for d in BACKEND.devices() if d.startswith("gpu")]
DEVICES = ["cpu"] + (GPU_DEVICES or ["gpu:0"])


def on_device(device: str) -> str:
    if device not in BACKEND.devices():
        pytest.skip(f"no TensorFlow device {device!r} here (usable: {BACKEND.devices()})")
    return device


def numpy_dtype(dtype_name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if dtype_name == "bfloat16" else np.dtype(dtype_name)


def close(got, expected, dtype_name: str, *, atol: float = 0.0) -> None:
    """got (a result of dtype ``dtype_name``) equals the float64 ``expected`` rounded to it."""
    got = BACKEND.to_numpy(got) if isinstance(got, (tf.Tensor, tf.Variable)) else got
    rounded = np.asarray(expected).astype(numpy_dtype(dtype_name))
    np.testing.assert_allclose(
        np.asarray(got).astype(np.float64),
        rounded.astype(np.float64),
        rtol=RTOL[dtype_name],
        atol=atol,
    )


# -- the accuracy contract against mpmath ------------------------------------------------


def sweep(dtype: type) -> np.ndarray:
    """Logits from -1e4 to 1e4: dense near 0 and in both tails, tiny, subnormal and extreme."""
    info = np.finfo(dtype)
    values = np.concatenate(
        [
            np.linspace(-110.0, 110.0, 441),  # step 0.5, through ±20, ±50 and ±100
            np.linspace(-105.0, -86.0, 39),  # float32 losses in the subnormal range
            np.linspace(-746.0, -700.0, 47),  # float64 losses in the subnormal range
            np.linspace(700.0, 746.0, 12),
            np.geomspace(1e-30, 1e4, 161),
            -np.geomspace(1e-30, 1e4, 161),
            [
                0.0,
                info.tiny,
                -info.tiny,
                info.smallest_subnormal,
                -info.smallest_subnormal,
                3 * info.smallest_subnormal,
                info.max,
                -info.max,
                1e30,
                -1e30,
            ],
        ]
    )
    return np.unique(values.astype(dtype))


#: (target, label_smoothing, weight, pos_weight): hard, soft, smoothed, weighted.
CONFIGS = [
    (0.0, 0.0, None, None),
    (1.0, 0.0, None, None),
    (0.3, 0.0, None, None),
    (1.0, 0.1, None, None),
    (0.7, 0.05, None, None),
    (0.2, 0.0, 2.5, 0.6),
]


@functools.cache
def exact(dtype: type, config: tuple) -> tuple[np.ndarray, list, list, list | None]:
    """(logits, exact losses, exact gradients, accuracy references of the gradients)."""
    y, eps, w, q = config
    xs = sweep(dtype)
    cast = lambda v, default: default if v is None else float(np.asarray(v, dtype))  # noqa: E731
    args = dict(w=cast(w, 1.0), q=cast(q, 1.0), eps=cast(eps, 0.0))
    y = float(np.asarray(y, dtype))
    losses = [oracle.element_loss(float(x), y, **args) for x in xs]
    grads = [oracle.element_grad(float(x), y, **args) for x in xs]
    hard = y in (0.0, 1.0) and eps == 0.0
    # Soft targets: within 4 ULP of the larger of the gradient's two terms; hard: of the value.
    return xs, losses, [g[0] for g in grads], None if hard else [g[1] for g in grads]


def options_of(config: tuple, dtype: type) -> dict:
    _, eps, w, q = config
    options = dict(reduction="none", label_smoothing=eps)
    if w is not None:
        options.update(weight=np.asarray(w, dtype), pos_weight=np.asarray(q, dtype))
    return options


def logits_and_targets(dtype: type, config: tuple) -> tuple[tf.Tensor, tf.Tensor]:
    xs = exact(dtype, config)[0]
    return tf.constant(xs), tf.constant(np.full_like(xs, config[0]))


def assert_ulp(
    got: tf.Tensor,
    expected: list,
    dtype: type,
    xs: np.ndarray,
    references: list | None = None,
    limit: float = 4.0,
) -> None:
    errors = oracle.ulp_errors(np.asarray(got), expected, DTYPE_NAMES[dtype], references)
    worst = int(np.argmax(errors))
    assert errors[worst] <= limit, (
        f"{errors[worst]:.2f} ULP at logit {xs[worst]!r}: got "
        f"{np.asarray(got)[worst]!r}, exact {float(expected[worst])!r}"
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "y{}-eps{}-w{}-q{}".format(*c))
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_loss_and_gradient_within_4_ulp_of_exact(dtype, config):
    xs, losses, grads, grad_refs = exact(dtype, config)
    x, y = logits_and_targets(dtype, config)
    options = options_of(config, dtype)

    assert_ulp(BACKEND.binary_cross_entropy_with_logits(x, y, **options), losses, dtype, xs)
    loss, grad = BACKEND.value_and_grad(x, y, **options)
    assert_ulp(loss, losses, dtype, xs)
    assert_ulp(grad, grads, dtype, xs, grad_refs)
    for compiled in (False, True):
        loss, (grad,) = BACKEND.autodiff_value_and_grad(
            x, y, wrt=("logits",), compiled=compiled, **options
        )
        assert_ulp(loss, losses, dtype, xs)
        assert_ulp(grad, grads, dtype, xs, grad_refs)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_tape_inside_tf_function_keeps_the_accuracy(dtype):
    config = CONFIGS[4]
    xs, losses, grads, grad_refs = exact(dtype, config)
    x, y = logits_and_targets(dtype, config)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = BACKEND.binary_cross_entropy_with_logits(
                x, y, label_smoothing=config[1], reduction="none"
            )
        return loss, tape.gradient(loss, x)

    loss, grad = step(x, y)
    assert_ulp(loss, losses, dtype, xs)
    assert_ulp(grad, grads, dtype, xs, grad_refs)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_subnormal_results_are_not_flushed(dtype):
    # TensorFlow's CPU kernels flush subnormals; the backend builds them from their bits.
    x = {np.float32: -100.0, np.float64: -720.0}[dtype]
    exact_loss = float(oracle.element_loss(x, 0.0))
    assert float(np.finfo(dtype).smallest_subnormal) < exact_loss < float(np.finfo(dtype).tiny)
    logits, targets = tf.constant([x, -x], dtype), tf.constant([0.0, 1.0], dtype)
    loss = BACKEND.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    _, grad = BACKEND.value_and_grad(logits, targets, reduction="none")
    _, (autodiff,) = BACKEND.autodiff_value_and_grad(
        logits, targets, wrt=("logits",), reduction="none", compiled=True
    )
    expected = np.array([exact_loss, exact_loss], dtype)
    np.testing.assert_array_equal(loss.numpy(), expected)
    np.testing.assert_array_equal(grad.numpy(), [expected[0], -expected[1]])
    np.testing.assert_array_equal(autodiff.numpy(), [expected[0], -expected[1]])
    _, hess = BACKEND.grad_hess(logits, targets)
    np.testing.assert_array_equal(hess.numpy(), expected)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_infinite_and_nan_logits(dtype):
    inf, nan = np.inf, np.nan
    x = np.array([inf, inf, -inf, -inf, nan, inf], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.5], dtype)
    loss = BACKEND.binary_cross_entropy_with_logits(
        tf.constant(x), tf.constant(y), reduction="none"
    )
    np.testing.assert_array_equal(loss.numpy(), [0.0, inf, 0.0, inf, nan, inf])
    _, grad = BACKEND.value_and_grad(tf.constant(x), tf.constant(y), reduction="none")
    _, (autodiff,) = BACKEND.autodiff_value_and_grad(
        tf.constant(x), tf.constant(y), wrt=("logits",), reduction="none"
    )
    np.testing.assert_array_equal(grad.numpy(), [0.0, 1.0, 0.0, -1.0, nan, 0.5])
    np.testing.assert_array_equal(autodiff.numpy(), grad.numpy())


# -- parity with the reference over shapes and options (hypothesis) -----------------------


def _broadcastable(shape: tuple[int, ...]):
    """Shapes that broadcast to ``shape`` without enlarging it."""
    suffixes = [shape[i:] for i in range(len(shape) + 1)]
    return st.sampled_from(suffixes).flatmap(
        lambda s: st.tuples(*[st.sampled_from([d, 1]) for d in s])
    )


@st.composite
def calls(draw):
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple))
    reduction = draw(
        st.sampled_from(REDUCTIONS if shape else [r for r in REDUCTIONS if r != "batch_mean"])
    )
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["hard", "soft", "int", "bool"]))
    x = (rng.normal(size=shape) * draw(st.sampled_from([1.0, 8.0, 60.0]))).astype(dtype)
    y = {
        "hard": lambda: (rng.random(shape) > 0.5).astype(dtype),
        "soft": lambda: rng.random(shape).astype(dtype),
        "int": lambda: rng.integers(0, 2, shape),
        "bool": lambda: rng.random(shape) > 0.5,
    }[kind]()
    options = dict(reduction=reduction, label_smoothing=draw(st.sampled_from([0.0, 0.1])))
    for name, low in (("weight", 0.0), ("pos_weight", 0.25)):
        if draw(st.booleans()):
            options[name] = rng.uniform(low, 3.0, draw(_broadcastable(shape))).astype(dtype)
    if draw(st.booleans()):
        options["mask"] = rng.random(draw(_broadcastable(shape))) > 0.3
    return x, y, kind, options


def _native(options: dict) -> dict:
    return {k: tf.constant(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}


def _atol(x: np.ndarray, options: dict) -> float:
    """Absolute slack for values that cancel to near 0 (a weighted mean's weight gradient, for
    one): terms of this scale, each rounded in the input's dtype (its own working dtype)."""
    scale = 1.0 + float(np.max(np.abs(x), initial=0.0))
    for name in ("weight", "pos_weight"):
        scale *= 1.0 + float(np.max(options.get(name, 1.0), initial=0.0))
    return 64 * (2.0**-53 if x.dtype == np.float64 else 2.0**-24) * scale


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_matches_reference_over_shapes_and_options(call):
    x, y, kind, options = call
    dtype = x.dtype.name
    wrt = (
        ("logits",)
        + (("targets",) if kind in ("hard", "soft") else ())
        + tuple(n for n in ("weight", "pos_weight") if n in options)
    )
    atol = _atol(x, options)
    expected_loss, expected_grads = reference.value_and_grad(x, y, wrt=wrt, **options)
    native = _native(options)

    loss = BACKEND.binary_cross_entropy_with_logits(tf.constant(x), tf.constant(y), **native)
    assert loss.dtype.name == dtype and loss.shape == np.shape(expected_loss)
    close(loss, expected_loss, dtype, atol=atol)
    results = [
        BACKEND.value_and_grad(tf.constant(x), tf.constant(y), wrt=wrt, **native),
        BACKEND.autodiff_value_and_grad(tf.constant(x), tf.constant(y), wrt=wrt, **native),
    ]
    for got_loss, got_grads in results:
        close(got_loss, expected_loss, dtype, atol=atol)
        for name, got, want in zip(wrt, got_grads, expected_grads):
            assert got.dtype.name == dtype and tuple(got.shape) == np.shape(want), name
            close(got, want, dtype, atol=atol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_compiled_autodiff_matches_reference_for_every_reduction(reduction):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3)) * 5
    y = rng.random((4, 3))
    options = dict(
        weight=rng.uniform(0.5, 2.0, (4, 1)),
        pos_weight=rng.uniform(0.5, 2.0, (3,)),
        mask=rng.random((4, 3)) > 0.2,
        label_smoothing=0.1,
        reduction=reduction,
    )
    wrt = ("logits", "targets", "weight", "pos_weight")
    expected_loss, expected = reference.value_and_grad(x, y, wrt=wrt, **options)
    loss, grads = BACKEND.autodiff_value_and_grad(
        tf.constant(x), tf.constant(y), wrt=wrt, compiled=True, **_native(options)
    )
    close(loss, expected_loss, "float64", atol=1e-15)
    for got, want in zip(grads, expected):
        close(got, want, "float64", atol=1e-15)


# -- second order --------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_second_derivative_is_the_analytic_hessian(dtype, compiled):
    x = np.array([-800.0, -50.0, -3.0, -1e-20, 0.0, 0.5, 4.0, 30.0, 200.0], dtype)
    y = np.array([0.0, 1.0, 0.3, 1.0, 0.5, 0.0, 0.9, 1.0, 0.2], dtype)
    w, q = np.linspace(0.5, 2.0, 9).astype(dtype), np.asarray(1.7, dtype)
    _, hess = reference.grad_hess(x, y, weight=w, pos_weight=q)
    got = BACKEND.autodiff_second_derivative(
        tf.constant(x), tf.constant(y), weight=w, pos_weight=q, reduction="sum", compiled=compiled
    )
    assert got.dtype.name == DTYPE_NAMES[dtype]
    close(got, hess, DTYPE_NAMES[dtype])
    mean = BACKEND.autodiff_second_derivative(
        tf.constant(x), tf.constant(y), compiled=compiled, reduction="mean"
    )
    close(mean, reference.grad_hess(x, y)[1] / x.size, DTYPE_NAMES[dtype])


def test_mixed_second_derivatives_match_the_spec():
    x = tf.constant([-4.0, -0.5, 0.0, 2.0, 25.0], tf.float64)
    y = tf.constant([0.0, 0.3, 1.0, 0.8, 1.0], tf.float64)
    w = tf.constant([1.5, 0.5, 2.0, 1.0, 3.0], tf.float64)
    q = tf.constant(0.7, tf.float64)
    eps = 0.1
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([x, y, w, q])
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = BACKEND.binary_cross_entropy_with_logits(
                x, y, weight=w, pos_weight=q, label_smoothing=eps, reduction="sum"
            )
        dx = inner.gradient(loss, x)
        total = tf.reduce_sum(dx)
    xs, ys, ws, qs = (t.numpy() for t in (x, y, w, q))
    sig, sig_neg = reference.sigmoid(xs), reference.sigmoid(-xs)
    yp, one_minus = reference.smoothed_targets(ys, eps)
    np.testing.assert_allclose(
        outer.gradient(total, y), -ws * (1 - eps) * (sig + qs * sig_neg), rtol=1e-13
    )
    np.testing.assert_allclose(
        outer.gradient(total, w), one_minus * sig - qs * yp * sig_neg, rtol=1e-13
    )
    np.testing.assert_allclose(outer.gradient(total, q), np.sum(-ws * yp * sig_neg), rtol=1e-13)
    np.testing.assert_allclose(
        outer.gradient(total, x), ws * (one_minus + qs * yp) * sig * sig_neg, rtol=1e-13
    )


# -- the probability form ------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_probability_form_matches_reference(dtype, compiled):
    p = np.array([0.0, 1e-30, 1e-8, 0.25, 0.5, 0.75, 1 - 1e-7, 1.0], dtype)
    y = np.array([1.0, 1.0, 0.0, 0.3, 1.0, 0.0, 0.6, 0.0], dtype)
    w, q = np.asarray(1.5, dtype), np.linspace(0.5, 2.0, 8).astype(dtype)
    options = dict(weight=w, pos_weight=q, label_smoothing=0.05)
    for clamp in (-100.0, -np.inf):
        loss = BACKEND.binary_cross_entropy(
            tf.constant(p), tf.constant(y), reduction="none", log_clamp=clamp, **options
        )
        close(
            loss,
            reference.binary_cross_entropy(p, y, reduction="none", log_clamp=clamp, **options),
            DTYPE_NAMES[dtype],
        )
    loss, grad = BACKEND.autodiff_probs_grad(
        tf.constant(p), tf.constant(y), reduction="sum", compiled=compiled, **options
    )
    close(
        loss, reference.binary_cross_entropy(p, y, reduction="sum", **options), DTYPE_NAMES[dtype]
    )
    close(grad, reference.probs_grad(p, y, **options), DTYPE_NAMES[dtype])


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16], ids=["float32", "bfloat16"])
def test_subnormal_and_outside_probabilities_in_every_mode(dtype) -> None:
    """log p of a subnormal p exact (TensorFlow reads a subnormal operand as 0), and NaN for p
    outside [0, 1] (a negative subnormal too): eagerly, in tf.function with and without XLA,
    through a tape and through autodiff_probs_grad."""
    # Built on the host: TensorFlow's own casts flush subnormal results to 0.
    p = tf.constant(
        np.array([1e-40, 1e-40, 1e-40, 1.1, -0.1, 1.5, -1e-40, 0.5]).astype(dtype.as_numpy_dtype)
    )
    y = tf.constant(np.array([1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0]).astype(dtype.as_numpy_dtype))
    host_p, host_y = (BACKEND.to_numpy(v).astype(np.float64) for v in (p, y))
    exact = reference.binary_cross_entropy(host_p, host_y, reduction="none", log_clamp=-np.inf)
    slope = reference.probs_grad(host_p, host_y)
    nan = np.isnan(exact)
    assert nan.tolist() == [False] * 3 + [True] * 4 + [False]
    rtol = 1e-6 if dtype == tf.float32 else 4e-3
    for clamp in (-100.0, -np.inf):

        def loss_and_grad(v, clamp=clamp):
            with tf.GradientTape() as tape:
                tape.watch(v)
                losses = BACKEND.binary_cross_entropy(v, y, reduction="none", log_clamp=clamp)
            return losses, tape.gradient(tf.reduce_sum(losses), v)

        runs = [
            loss_and_grad(p),
            tf.function(loss_and_grad, autograph=False)(p),
            tf.function(loss_and_grad, autograph=False, jit_compile=True)(p),
        ]
        for compiled in (False, True):
            _, grad = BACKEND.autodiff_probs_grad(
                p, y, reduction="sum", log_clamp=clamp, compiled=compiled
            )
            runs.append((None, grad))
        for losses, grad in runs:
            for got, want in ((losses, exact), (grad, slope)):
                if got is None:
                    continue
                got = BACKEND.to_numpy(got).astype(np.float64)
                assert np.isnan(got[nan]).all()
                np.testing.assert_allclose(got[~nan], want[~nan], rtol=rtol, atol=1e-38)


# -- half precision ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision_parity(dtype_name):
    dtype = numpy_dtype(dtype_name)
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(6, 5)) * 6).astype(dtype)
    y = rng.random((6, 5)).astype(dtype)
    w = rng.uniform(0.5, 2.0, (5,)).astype(dtype)
    options = dict(weight=w, label_smoothing=0.1, reduction="none")
    native_x = BACKEND.asarray(x)
    loss = BACKEND.binary_cross_entropy_with_logits(native_x, y, **options)
    assert loss.dtype.name == dtype_name
    close(loss, reference.binary_cross_entropy_with_logits(x, y, **options), dtype_name, atol=1e-3)
    _, want = reference.value_and_grad(x, y, wrt=("logits", "weight"), **options)
    for _, grads in (
        BACKEND.value_and_grad(native_x, y, wrt=("logits", "weight"), **options),
        BACKEND.autodiff_value_and_grad(native_x, y, wrt=("logits", "weight"), **options),
    ):
        for got, expected in zip(grads, want):
            assert got.dtype.name == dtype_name
            close(got, expected, dtype_name, atol=2e-2)
    hess = BACKEND.autodiff_second_derivative(native_x, y, reduction="sum")
    close(hess, reference.grad_hess(x, y)[1], dtype_name, atol=1e-3)


# -- masks, zero weights and zero denominators ---------------------------------------------


def test_masked_out_nan_and_inf_inputs_give_zero_loss_and_gradient():
    x = tf.constant([np.nan, 1.0, np.inf, -2.0])
    y = tf.constant([0.5, 1.0, np.nan, 0.0])
    w = tf.constant([np.inf, 2.0, 1.0, 1.0])
    mask = np.array([False, True, False, True])
    wrt = ("logits", "targets", "weight")
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, weight=w, mask=mask, reduction="none")
    assert loss.numpy()[0] == 0.0 and loss.numpy()[2] == 0.0
    expected_loss, expected = reference.value_and_grad(
        np.array([0.0, 1.0, 0.0, -2.0]),
        [0.0, 1.0, 0.0, 0.0],
        weight=[0.0, 2.0, 0.0, 1.0],
        mask=mask,
        wrt=wrt,
    )
    for got_loss, grads in (
        BACKEND.value_and_grad(x, y, weight=w, mask=mask, wrt=wrt),
        BACKEND.autodiff_value_and_grad(x, y, weight=w, mask=mask, wrt=wrt),
        BACKEND.autodiff_value_and_grad(x, y, weight=w, mask=mask, wrt=wrt, compiled=True),
    ):
        close(got_loss, expected_loss, "float32")
        for got, want in zip(grads, expected):
            assert np.all(np.isfinite(got.numpy()))
            assert got.numpy()[0] == 0.0 and got.numpy()[2] == 0.0
            close(got, want, "float32")


@pytest.mark.parametrize(
    "case",
    [
        "fully masked mean",
        "zero weights weighted_mean",
        "empty batch_mean",
        "cancelling weights weighted_mean",
    ],
)
def test_zero_denominators_give_zero_loss_and_zero_gradient(case):
    x, y = tf.constant([[np.inf, -3.0]]), tf.constant([[0.5, 1.0]])
    options = {
        "fully masked mean": dict(mask=np.zeros((1, 2), bool), reduction="mean"),
        "zero weights weighted_mean": dict(
            weight=np.zeros(2, np.float32), reduction="weighted_mean"
        ),
        "empty batch_mean": dict(reduction="batch_mean"),
        "cancelling weights weighted_mean": dict(
            weight=np.array([1.0, -1.0], np.float32), reduction="weighted_mean"
        ),
    }[case]
    if case == "empty batch_mean":
        x, y = tf.zeros((0, 2)), tf.zeros((0, 2))
    wrt = ("logits", "targets") + (("weight",) if "weight" in options else ())
    for loss, grads in (
        BACKEND.value_and_grad(x, y, wrt=wrt, **options),
        BACKEND.autodiff_value_and_grad(x, y, wrt=wrt, **options),
        BACKEND.autodiff_value_and_grad(x, y, wrt=wrt, compiled=True, **options),
    ):
        assert float(loss) == 0.0
        for grad in grads:
            np.testing.assert_array_equal(grad.numpy(), np.zeros(grad.shape))
    second = BACKEND.autodiff_second_derivative(x, y, **options)
    np.testing.assert_array_equal(second.numpy(), np.zeros(second.shape))


def test_zero_weight_gives_zero_loss_and_zero_gradients_even_at_infinite_logits():
    x, y = tf.constant([np.inf, -np.inf, 1.0]), tf.constant([0.0, 1.0, 1.0])
    w = tf.constant([0.0, 0.0, 1.0])
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    np.testing.assert_array_equal(loss.numpy()[:2], [0.0, 0.0])
    _, (dx, dy) = BACKEND.autodiff_value_and_grad(
        x, y, weight=w, wrt=("logits", "targets"), reduction="sum"
    )
    np.testing.assert_array_equal(dx.numpy()[:2], [0.0, 0.0])
    np.testing.assert_array_equal(dy.numpy()[:2], [0.0, 0.0])


# -- compiled paths ------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "jit_compile"])
def test_losses_and_tapes_inside_user_tf_functions(jit):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    y = (rng.random((3, 4)) > 0.5).astype(np.float32)
    w = rng.uniform(0.5, 2.0, (4,)).astype(np.float32)

    @tf.function(jit_compile=jit)
    def step(x, y, w):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                loss = BACKEND.binary_cross_entropy_with_logits(
                    x, y, weight=w, reduction="weighted_mean"
                )
            dx, dw = tape.gradient(loss, [x, w])
            total = tf.reduce_sum(dx)
        return loss, dx, dw, outer.gradient(total, x)

    loss, dx, dw, second = step(tf.constant(x), tf.constant(y), tf.constant(w))
    want_loss, (want_dx, want_dw) = reference.value_and_grad(
        x, y, weight=w, reduction="weighted_mean", wrt=("logits", "weight")
    )
    close(loss, want_loss, "float32")
    close(dx, want_dx, "float32")
    close(dw, want_dw, "float32", atol=1e-7)
    denominator = np.sum(np.broadcast_to(w, x.shape), dtype=np.float64)
    close(second, reference.grad_hess(x, y, weight=w)[1] / denominator, "float32")


def test_validate_under_compilation_raises_a_clear_error():
    step = tf.function(lambda x, y: BACKEND.binary_cross_entropy_with_logits(x, y, validate=True))
    with pytest.raises(ValueError, match="validate=True.*cannot run under tf.function"):
        step(tf.constant([0.0]), tf.constant([1.0]))
    with pytest.raises(ValueError, match="jit"):
        BACKEND.autodiff_value_and_grad(
            tf.constant([0.0]), tf.constant([1.0]), wrt=("logits",), validate=True, compiled=True
        )


# -- dtypes, devices, conversion ---------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_dtype_and_device_are_preserved(dtype_name, device):
    device = on_device(device)
    dtype = numpy_dtype(dtype_name)
    x = BACKEND.asarray(np.array([[-1.0, 0.5], [2.0, 0.0]], dtype), device)
    assert x.dtype.name == dtype_name and BACKEND.to_numpy(x).dtype == dtype
    suffix = "CPU:0" if device == "cpu" else "GPU:" + device.split(":")[1]
    y = np.array([[1, 0], [0, 1]])
    loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    close(loss, reference.binary_cross_entropy_with_logits(x.numpy(), y), dtype_name)
    results = [
        loss,
        *BACKEND.value_and_grad(
            x, [[1.0, 0.0], [0.0, 1.0]], weight=np.ones(2), wrt=("logits", "weight")
        )[1],
        *BACKEND.grad_hess(x, np.ones((2, 2), bool)),
        *BACKEND.autodiff_value_and_grad(x, y, wrt=("logits",), compiled=True)[1],
        BACKEND.binary_cross_entropy(BACKEND.asarray(np.full((2,), 0.5, dtype), device), [1, 0]),
    ]
    for result in results:
        assert result.dtype.name == dtype_name
        assert result.device.endswith(suffix), result.device


def test_asarray_rejects_unknown_devices():
    with pytest.raises(ValueError, match="not usable"):
        BACKEND.asarray(np.zeros(2), "tpu:3")


def test_numpy_scalars_lists_and_variables_next_to_tensors():
    x = tf.Variable([[0.5, -1.0, 3.0]], dtype=tf.float32)
    expected = reference.binary_cross_entropy_with_logits(
        np.float32([[0.5, -1.0, 3.0]]),
        [[1, 0, 1]],
        weight=2.0,
        pos_weight=[1.0, 2.0, 3.0],
        mask=[[True, False, True]],
        reduction="sum",
    )
    got = BACKEND.binary_cross_entropy_with_logits(
        x,
        [[True, False, True]],
        weight=2,
        pos_weight=np.array([1.0, 2.0, 3.0]),
        mask=np.array([[True, False, True]]),
        reduction="sum",
    )
    assert got.dtype == tf.float32
    close(got, expected, "float32")
    # targets are cast to the logits' dtype first (float64 targets, float32 logits).
    close(
        BACKEND.binary_cross_entropy_with_logits(x, tf.constant([[0.1, 0.2, 0.3]], tf.float64)),
        reference.binary_cross_entropy_with_logits(
            np.float32([[0.5, -1.0, 3.0]]), np.float32([[0.1, 0.2, 0.3]])
        ),
        "float32",
    )
    # NumPy logits work when the backend is called explicitly.
    numpy_logits = BACKEND.binary_cross_entropy_with_logits(np.array([0.0, 1.0]), [1.0, 0.0])
    assert isinstance(numpy_logits, tf.Tensor) and numpy_logits.dtype == tf.float64
    with tf.GradientTape() as tape:
        loss = BACKEND.binary_cross_entropy_with_logits(x, [[1.0, 0.0, 1.0]], reduction="sum")
    close(
        tape.gradient(loss, x),
        reference.value_and_grad(
            np.float32([[0.5, -1.0, 3.0]]), [[1.0, 0.0, 1.0]], reduction="sum"
        )[1],
        "float32",
    )


# -- registration and dispatch -------------------------------------------------------------


def test_plugin_claims_tensorflow_tensors_but_not_numpy_or_python_numbers():
    registry = get_registry()
    symbolic_types = []
    tf.function(lambda t: symbolic_types.append(type(t)) or t)(tf.constant(1.0))
    for value_type in (type(tf.constant(1.0)), type(tf.Variable(1.0)), symbolic_types[0]):
        assert registry.owner_of(value_type) == "tensorflow", value_type
    assert registry.owner_of(np.ndarray) == "numpy"
    assert registry.owner_of(float) is None and registry.owner_of(int) is None
    assert registry.owner_of(list) is None


def test_public_api_dispatches_on_the_tensor_type():
    x = tf.constant([[2.0, -1.0]], tf.float64)
    loss = bce_core.binary_cross_entropy_with_logits(x, np.array([[1.0, 0.0]]), reduction="sum")
    assert isinstance(loss, tf.Tensor) and loss.dtype == tf.float64
    close(
        loss,
        reference.binary_cross_entropy_with_logits([[2.0, -1.0]], [[1.0, 0.0]], reduction="sum"),
        "float64",
    )
    assert bce_core.get_backend("tensorflow").name == "tensorflow"
    _, grad = bce_core.value_and_grad(x, [[1.0, 0.0]], wrt="logits")
    assert isinstance(grad, tf.Tensor)
    grad, hess = bce_core.grad_hess(x, [[1.0, 0.0]])
    assert isinstance(hess, tf.Tensor)

    @tf.function
    def compiled(x):
        return bce_core.binary_cross_entropy_with_logits(x, [[1.0, 0.0]], reduction="sum")

    close(compiled(x), loss.numpy(), "float64")


# -- the fused programs: chunks, layouts, retracing, the saved gradient ----------------------

from bce_tensorflow import fused  # noqa: E402
from bce_tensorflow.autodiff import scaled_product  # noqa: E402


@pytest.fixture
def chunked(monkeypatch):
    """Every input takes the large-input program, in chunks of 256 elements (so a sweep spans
    several chunks, the last one overlapping), as 10**7 elements do in chunks of 2**17."""
    monkeypatch.setattr(fused, "SMALL", -1)
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", 256)


def _case_id(value) -> str:
    return getattr(value, "__name__", None) or "y{}-eps{}-w{}-q{}".format(*value)


@pytest.mark.parametrize(
    "dtype, config",
    [(np.float32, CONFIGS[1]), (np.float32, CONFIGS[5]), (np.float64, CONFIGS[4])],
    ids=_case_id,
)
def test_chunked_program_within_4_ulp_of_exact(dtype, config, chunked):
    xs, losses, grads, grad_refs = exact(dtype, config)
    x, y = logits_and_targets(dtype, config)
    options = options_of(config, dtype)
    assert_ulp(BACKEND.binary_cross_entropy_with_logits(x, y, **options), losses, dtype, xs)
    loss, grad = BACKEND.value_and_grad(x, y, **options)
    assert_ulp(loss, losses, dtype, xs)
    assert_ulp(grad, grads, dtype, xs, grad_refs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = BACKEND.binary_cross_entropy_with_logits(x, y, **options)
    assert_ulp(loss, losses, dtype, xs)
    assert_ulp(tape.gradient(loss, x), grads, dtype, xs, grad_refs)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = BACKEND.binary_cross_entropy_with_logits(x, y, **_native(options))
        return loss, tape.gradient(loss, x)

    loss, grad = step(x, y)
    assert_ulp(loss, losses, dtype, xs)
    assert_ulp(grad, grads, dtype, xs, grad_refs)


def _chunked_case(layout: str, dtype: type = np.float32):
    """(logits, targets, options) of 2100 elements with NaN and inf where the mask is False."""
    rng = np.random.default_rng(17)
    shape = (300, 7)
    x = (rng.normal(size=shape) * 8).astype(dtype)
    y = rng.random(shape).astype(dtype)
    if layout == "broadcast":
        options = dict(
            weight=rng.uniform(0.5, 2.0, (7,)).astype(dtype),
            pos_weight=rng.uniform(0.5, 2.0, (300, 1)).astype(dtype),
            mask=rng.random((300, 1)) > 0.2,
        )
        hidden = np.broadcast_to(~options["mask"], shape)
    else:
        options = dict(
            weight=rng.uniform(0.5, 2.0, shape).astype(dtype),
            pos_weight=np.asarray(1.5, dtype),
            mask=rng.random(shape) > 0.2,
        )
        hidden = ~options["mask"]
    bad = np.flatnonzero(hidden)[:3]
    x.flat[bad] = [np.nan, np.inf, -np.inf][: len(bad)]
    return x, y, options


@pytest.mark.parametrize(
    "layout, reduction",
    [("broadcast", r) for r in REDUCTIONS] + [("full", r) for r in REDUCTIONS if r != "none"],
)
def test_chunked_program_matches_reference_with_masks_weights_and_smoothing(
    layout, reduction, chunked
):
    # The reductions share one program (their denominators are arguments): one compilation.
    x, y, options = _chunked_case(layout)
    options.update(reduction=reduction, label_smoothing=0.05)
    clean = np.where(np.broadcast_to(options["mask"], x.shape), x, 0.0)
    expected_loss, expected_grad = reference.value_and_grad(clean, y, **options)
    loss = BACKEND.binary_cross_entropy_with_logits(
        tf.constant(x), tf.constant(y), **_native(options)
    )
    close(loss, expected_loss, "float32", atol=1e-6)
    got_loss, grad = BACKEND.value_and_grad(tf.constant(x), tf.constant(y), **_native(options))
    close(got_loss, expected_loss, "float32", atol=1e-6)
    assert np.all(np.isfinite(grad.numpy()))
    # Where the gradient's two terms cancel, it is held to 4 ULP of the larger term (<= 4 here).
    close(
        grad,
        expected_grad,
        "float32",
        atol=16 * 2.0**-24 * 4 / (1.0 if reduction in ("none", "sum") else 300.0),
    )
    _, (taped,) = BACKEND.autodiff_value_and_grad(
        tf.constant(x), tf.constant(y), wrt=("logits",), **_native(options)
    )
    np.testing.assert_array_equal(taped.numpy(), grad.numpy())


@pytest.mark.parametrize(
    "case",
    ["fully masked mean", "zero weights weighted_mean", "empty batch_mean", "infinite logits sum"],
)
def test_chunked_program_zero_denominators_and_infinities(case, chunked):
    x = np.tile(np.float32([np.inf, -3.0, -np.inf, 2.0]), 300).reshape(300, 4)
    y = np.tile(np.float32([1.0, 1.0, 0.0, 0.5]), 300).reshape(300, 4)
    options = {
        "fully masked mean": dict(mask=np.zeros((300, 1), bool), reduction="mean"),
        "zero weights weighted_mean": dict(
            weight=np.zeros(4, np.float32), reduction="weighted_mean"
        ),
        "empty batch_mean": dict(reduction="batch_mean"),
        "infinite logits sum": dict(reduction="sum"),
    }[case]
    if case == "empty batch_mean":
        x, y = x[:0], y[:0]
    loss, grad = BACKEND.value_and_grad(tf.constant(x), tf.constant(y), **_native(options))
    if case == "infinite logits sum":
        # l(+inf, 1) = l(-inf, 0) = 0, with gradient 0; the finite logits count as usual.
        finite_loss, finite_grad = reference.value_and_grad(
            np.float32([-3.0, 2.0]), [1.0, 0.5], reduction="sum"
        )
        close(loss, 300 * finite_loss, "float32")
        np.testing.assert_array_equal(grad.numpy()[:, [0, 2]], 0.0)
        close(grad.numpy()[:, [1, 3]], np.broadcast_to(finite_grad, (300, 2)), "float32")
        return
    assert float(loss) == 0.0 and grad.shape == x.shape
    np.testing.assert_array_equal(grad.numpy(), np.zeros(x.shape))


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.__name__)
def test_chunked_program_keeps_subnormal_results(dtype, chunked):
    x = {np.float32: -100.0, np.float64: -720.0}[dtype]
    exact_loss = float(oracle.element_loss(x, 0.0))
    logits = tf.constant(np.tile(np.asarray([x, -x], dtype), 400))
    targets = tf.constant(np.tile(np.asarray([0.0, 1.0], dtype), 400))
    expected = np.tile(np.asarray([exact_loss, exact_loss], dtype), 400)
    loss = BACKEND.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), expected)
    _, grad = BACKEND.value_and_grad(logits, targets, reduction="none")
    signs = np.tile(np.asarray([1.0, -1.0], dtype), 400)
    np.testing.assert_array_equal(grad.numpy(), signs * expected)
    for compiled in (False, True):
        _, (taped,) = BACKEND.autodiff_value_and_grad(
            logits, targets, wrt=("logits",), reduction="none", compiled=compiled
        )
        np.testing.assert_array_equal(taped.numpy(), signs * expected)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_chunked_program_half_precision(dtype_name, chunked):
    dtype = numpy_dtype(dtype_name)
    x, y, options = _chunked_case("broadcast")
    x = np.where(np.isfinite(x), x, 0.0).astype(dtype)
    y = y.astype(dtype)
    options = dict(weight=options["weight"].astype(dtype), reduction="none")
    loss, grad = BACKEND.value_and_grad(BACKEND.asarray(x), y, **options)
    assert loss.dtype.name == grad.dtype.name == dtype_name
    want_loss, want_grad = reference.value_and_grad(
        x.astype(np.float64), y.astype(np.float64), **options
    )
    close(loss, want_loss, dtype_name, atol=1e-3)
    close(grad, want_grad, dtype_name, atol=1e-3)


def test_second_derivative_through_the_chunked_program(chunked):
    rng = np.random.default_rng(23)
    x, y = rng.normal(size=(40, 9)) * 6, rng.random((40, 9))
    w = rng.uniform(0.5, 2.0, (9,))
    got = BACKEND.autodiff_second_derivative(
        tf.constant(x), tf.constant(y), weight=w, reduction="sum"
    )
    close(got, reference.grad_hess(x, y, weight=w)[1], "float64")


def test_the_backward_reuses_the_gradient_of_the_forward(monkeypatch):
    rng = np.random.default_rng(29)
    x = tf.constant((rng.normal(size=5000) * 4).astype(np.float32))
    y = tf.constant((rng.random(5000) > 0.5).astype(np.float32))
    calls = []
    original = fused.loss_and_grad

    def counted(*args, **kwargs):
        calls.append(kwargs["grad"])
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "loss_and_grad", counted)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    grad = tape.gradient(loss, x)
    assert calls == [True]  # one program, in the forward, computed the loss and its gradient
    _, fused_grad = BACKEND.value_and_grad(x, y)
    np.testing.assert_array_equal(grad.numpy(), fused_grad.numpy())


def test_gradients_without_a_tape_inside_tf_function(chunked):
    rng = np.random.default_rng(31)
    x = rng.normal(size=(50, 6)) * 3
    y = rng.random((50, 6))
    w = rng.uniform(0.5, 2.0, (6,))

    @tf.function
    def symbolic(x, y, w):
        loss = BACKEND.binary_cross_entropy_with_logits(x, y, weight=w, reduction="weighted_mean")
        return tf.gradients(loss, [x, w])

    dx, dw = symbolic(tf.constant(x), tf.constant(y), tf.constant(w))
    _, (want_dx, want_dw) = reference.value_and_grad(
        x, y, weight=w, reduction="weighted_mean", wrt=("logits", "weight")
    )
    close(dx, want_dx, "float64", atol=1e-15)
    close(dw, want_dw, "float64", atol=1e-15)


def test_a_new_batch_size_reuses_the_traced_programs():
    rng = np.random.default_rng(37)

    def batch(rows: int) -> tuple[tf.Tensor, tf.Tensor]:
        x = (rng.normal(size=(rows, 8)) * 3).astype(np.float32)
        return tf.constant(x), tf.constant((rng.random((rows, 8)) > 0.5).astype(np.float32))

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = BACKEND.binary_cross_entropy_with_logits(x, y, label_smoothing=0.1)
        return loss, tape.gradient(loss, x)

    for rows in (600, 5, 700, 7):  # large then small inputs, each at two batch sizes
        x, y = batch(rows)
        loss, grad = step(x, y)
        value, fused_grad = BACKEND.value_and_grad(x, y, label_smoothing=0.05)
        if rows in (600, 5):
            traced = dict(fused._programs)
    assert fused._programs == traced  # the same programs, traced once, for the new sizes
    want_loss, want_grad = reference.value_and_grad(x.numpy(), y.numpy(), label_smoothing=0.1)
    atol = 8 * 2.0**-24 / x.shape.num_elements()  # smoothed targets: terms that cancel
    close(loss, want_loss, "float32")
    close(grad, want_grad, "float32", atol=atol)
    close(
        fused_grad,
        reference.value_and_grad(x.numpy(), y.numpy(), label_smoothing=0.05)[1],
        "float32",
        atol=atol,
    )


def test_scaled_product_keeps_subnormals_and_zero_factors():
    smallest = np.finfo(np.float32).smallest_subnormal
    saved = np.float32([3 * smallest, -7 * smallest, 1e-39, 2.5e-30, 0.75, 0.0, np.inf])
    for factor in (1.0, 0.5, 3.0, 1e-3):
        for run in (scaled_product, tf.function(scaled_product, jit_compile=True)):
            got = run(tf.constant(saved), tf.constant(np.float32(factor))).numpy()
            want = (saved.astype(np.float64) * factor).astype(np.float32)  # NumPy keeps them
            if factor == 1.0:
                np.testing.assert_array_equal(got, saved)
            np.testing.assert_allclose(got, want, rtol=1e-7, atol=smallest)
    zero = scaled_product(tf.constant(saved), tf.constant(np.float32(0.0))).numpy()
    np.testing.assert_array_equal(zero, np.zeros_like(saved))


def test_a_label_smoothing_schedule_traces_the_programs_once():
    # The smoothing constants and the log clamp are runtime inputs of the traced programs:
    # new values (after a first smoothed call) trace nothing new.
    rng = np.random.default_rng(38)
    x = tf.constant((rng.normal(size=(300, 9)) * 3).astype(np.float32))
    y = tf.constant(rng.random((300, 9)).astype(np.float32))
    p = tf.sigmoid(x)

    def schedule(values: list[float]) -> None:
        for eps in values:
            BACKEND.binary_cross_entropy_with_logits(x, y, label_smoothing=eps)
            BACKEND.value_and_grad(x, y, label_smoothing=eps)
        for clamp in (-100.0, -20.0, -5.0, 0.0, -np.inf):
            BACKEND.binary_cross_entropy(p, y, label_smoothing=values[-1], log_clamp=clamp)

    schedule([0.05])
    traced = dict(fused._programs)
    schedule([0.01 * (i + 1) for i in range(20)])
    assert fused._programs == traced
