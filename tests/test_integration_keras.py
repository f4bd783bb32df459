"""``bce_core.keras``: the Keras 3 drop-ins against Keras's own loss and the reference.

Ordinary inputs match ``keras.losses.BinaryCrossentropy`` and
``keras.losses.binary_crossentropy`` (every Keras reduction, sample weights, label smoothing,
int labels, Keras's rank rule); in the tails the loss is within a few ULP of the float64
reference where Keras's is not (it clips probabilities at 1e-7 on every backend, and loses
the tails of the logits form on PyTorch). Models compiled with either save to a ``.keras``
file and load back. The same seeded model, trained by ``model.fit`` in one process per
Keras backend (TensorFlow in ``tf.function`` and XLA, JAX in ``jax.jit``, PyTorch eagerly),
gives the same loss curve on all three.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_worker import (  # noqa: E402
    TAIL_LOGIT_TARGETS,
    TAIL_LOGITS,
    TAIL_PROB_TARGETS,
    TAIL_PROBS,
    ulps,
    value_and_grad,
)

from bce_core import reference  # noqa: E402
from bce_core.keras import BinaryCrossentropy, binary_crossentropy  # noqa: E402

BACKEND = keras.backend.backend()
ULP_BOUND = 4.0
#: Against Keras on ordinary float32 inputs.
RTOL, ATOL = 2e-6, 1e-7
#: The three loss curves, float32 all through (measured: "ours" the same to the bit on the
#: three backends, the others within 1.5e-7).
CURVE_RTOL = 1e-5
KERAS_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")
WORKER = Path(__file__).with_name("keras_worker.py")
#: The framework each Keras backend needs.
FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
SHAPE = (6, 3)


def operands(*, probs: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (or probabilities) and targets of SHAPE, soft but for a row of hard ones."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.02, 0.98, SHAPE) if probs else rng.normal(0.0, 3.0, SHAPE)
    y = rng.uniform(0.0, 1.0, SHAPE)
    y[0] = np.round(y[0])
    return x.astype(np.float32), y.astype(np.float32)


def numpy(value: Any) -> np.ndarray:
    """A tensor of any Keras backend as a NumPy array (NumPy 2 warns at np.array(a torch
    tensor), which Keras's convert_to_numpy calls)."""
    detach = getattr(value, "detach", None)
    return np.asarray(value if detach is None else detach().cpu().numpy())


# -- construction: Keras's arguments, bce-core's options, clear errors -----------------------


def test_takes_keras_arguments_positionally_and_has_their_config() -> None:
    args = (True, 0.1, 0, "sum", "bce", "float64")
    ours, theirs = BinaryCrossentropy(*args), keras.losses.BinaryCrossentropy(*args)
    assert isinstance(ours, keras.losses.Loss)
    assert (ours.from_logits, ours.label_smoothing, ours.axis) == (True, 0.1, 0)
    assert (ours.reduction, ours.name, ours.dtype) == ("sum", "bce", "float64")
    config, their_config = ours.get_config(), theirs.get_config()
    assert {k: config[k] for k in their_config} == their_config
    assert (config["pos_weight"], config["log_clamp"]) == (None, -100.0)
    x, y = operands()
    np.testing.assert_allclose(numpy(ours(y, x)), numpy(theirs(y, x)), rtol=1e-12)


def test_bad_arguments_raise_errors_that_name_them() -> None:
    with pytest.raises(TypeError, match="from_logits must be True or False, got 'yes'"):
        BinaryCrossentropy(from_logits="yes")
    with pytest.raises(ValueError, match=r"label_smoothing=1\.5 is outside \[0, 1\]"):
        BinaryCrossentropy(label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing"):
        BinaryCrossentropy(label_smoothing="0.1")
    with pytest.raises(ValueError, match="log_clamp=1.0 must be <= 0"):
        BinaryCrossentropy(log_clamp=1.0)
    with pytest.raises(ValueError, match="log_clamp=-5.0 applies to probabilities"):
        BinaryCrossentropy(from_logits=True, log_clamp=-5)
    with pytest.raises(ValueError, match=r"pos_weight=\[1.0, nan\] holds a value that is not"):
        BinaryCrossentropy(pos_weight=[1.0, float("nan")])
    with pytest.raises(ValueError, match=r"pos_weight has shape \(1, 2\)"):
        BinaryCrossentropy(pos_weight=np.ones((1, 2)))
    with pytest.raises(TypeError, match="pos_weight must be a real number"):
        BinaryCrossentropy(pos_weight="2")
    with pytest.raises(TypeError, match="axis=1.5 is of type float"):
        BinaryCrossentropy(axis=1.5)
    with pytest.raises(ValueError, match="reduction=meen"):  # Keras's own check
        BinaryCrossentropy(reduction="meen")
    with pytest.raises(ValueError, match="label_smoothing=2.0 is outside"):
        binary_crossentropy([[1.0]], [[0.5]], label_smoothing=2)


def test_pos_weight_and_axis_are_normalised_for_the_config() -> None:
    loss_fn = BinaryCrossentropy(pos_weight=np.array([1, 2.5]), axis=[0, 1])
    assert loss_fn.pos_weight == [1.0, 2.5] and loss_fn.axis == (0, 1)
    assert BinaryCrossentropy(pos_weight=np.float32(3)).pos_weight == 3.0


# -- parity with Keras on ordinary inputs ------------------------------------------------------


@pytest.mark.parametrize("reduction", KERAS_REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("from_logits", [True, False])
def test_matches_keras_binary_crossentropy(from_logits, label_smoothing, reduction) -> None:
    x, y = operands(probs=not from_logits)
    sample_weight = np.random.default_rng(1).uniform(0.0, 2.0, SHAPE[0]).astype(np.float32)
    options = {"from_logits": from_logits, "label_smoothing": label_smoothing}
    ours = BinaryCrossentropy(reduction=reduction, **options)
    theirs = keras.losses.BinaryCrossentropy(reduction=reduction, **options)
    for weight in (None, sample_weight):
        got = numpy(ours(y, x, sample_weight=weight))
        expected = numpy(theirs(y, x, sample_weight=weight))
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, 0, None])
@pytest.mark.parametrize("from_logits", [True, False])
def test_function_matches_keras_function(from_logits, axis) -> None:
    x, y = operands(probs=not from_logits, seed=2)
    got = numpy(binary_crossentropy(y, x, from_logits, 0.1, axis))
    expected = numpy(keras.losses.binary_crossentropy(y, x, from_logits, 0.1, axis))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("true_shape", "pred_shape"), [((6,), (6, 1)), ((6, 1), (6,))])
def test_ranks_that_differ_by_one_follow_keras(true_shape, pred_shape) -> None:
    x, y = operands(seed=3)
    x, y = x[:, :1].reshape(pred_shape), y[:, :1].reshape(true_shape)
    got = numpy(BinaryCrossentropy(from_logits=True, reduction="none")(y, x))
    expected = numpy(keras.losses.BinaryCrossentropy(from_logits=True, reduction="none")(y, x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_int_and_bool_labels_are_cast_to_the_predictions_dtype() -> None:
    x, _ = operands(seed=4)
    labels = (x > 0.5).astype(np.int32)
    as_float = numpy(binary_crossentropy(labels.astype(np.float32), x, from_logits=True))
    for y in (labels, labels.astype(bool), keras.ops.convert_to_tensor(labels)):
        np.testing.assert_array_equal(numpy(binary_crossentropy(y, x, from_logits=True)), as_float)
        ours = BinaryCrossentropy(from_logits=True, reduction="none")(y, x)
        np.testing.assert_array_equal(numpy(ours), as_float)


def test_keras_label_smoothing_is_bce_cores() -> None:
    """Keras smooths a label y to y (1 - ls) + 0.5 ls, bce-core to y (1 - ε) + ε / 2."""
    x, y = operands(seed=5)
    ls = 0.3
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    # In float64 the two conventions give the same loss to rounding.
    np.testing.assert_allclose(
        reference.binary_cross_entropy_with_logits(x64, y64, label_smoothing=ls, reduction="none"),
        reference.binary_cross_entropy_with_logits(
            x64, y64 * (1.0 - ls) + 0.5 * ls, reduction="none"
        ),
        rtol=1e-14,
    )
    keras_smoothed = y * (1.0 - ls) + 0.5 * ls
    # In float32: smoothing by ours equals feeding ours Keras's smoothed targets.
    smoothed = numpy(binary_crossentropy(y, x, from_logits=True, label_smoothing=ls, axis=None))
    presmoothed = numpy(binary_crossentropy(keras_smoothed, x, from_logits=True, axis=None))
    np.testing.assert_allclose(smoothed, presmoothed, rtol=1e-6)


@pytest.mark.parametrize("pos_weight", [2.5, [1.0, 2.0, 0.5]])
@pytest.mark.parametrize("from_logits", [True, False])
def test_pos_weight_against_the_reference(from_logits, pos_weight) -> None:
    x, y = operands(probs=not from_logits, seed=6)
    loss_fn = BinaryCrossentropy(from_logits=from_logits, pos_weight=pos_weight, reduction="none")
    exact_fn = (
        reference.binary_cross_entropy_with_logits
        if from_logits
        else reference.binary_cross_entropy
    )
    exact = exact_fn(x, y, pos_weight=np.asarray(pos_weight), reduction="none").mean(axis=-1)
    np.testing.assert_allclose(numpy(loss_fn(y, x)), exact, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_the_loss_dtype_is_the_computation_dtype(dtype) -> None:
    if (
        keras.backend.standardize_dtype(keras.ops.convert_to_tensor(np.zeros(1, dtype)).dtype)
        != dtype
    ):
        pytest.skip(f"{dtype} is not a dtype of this Keras backend (JAX without jax_enable_x64)")
    x, y = operands(seed=7)
    loss = BinaryCrossentropy(from_logits=True, reduction="none", dtype=dtype)(y, x)
    assert keras.backend.standardize_dtype(loss.dtype) == dtype
    exact = reference.binary_cross_entropy_with_logits(x, y, reduction="none").mean(axis=-1)
    rtol = {"float16": 2e-3, "bfloat16": 1.6e-2, "float64": 1e-6}[dtype]
    as_numpy = numpy(loss if dtype == "float64" else keras.ops.cast(loss, "float32"))
    np.testing.assert_allclose(as_numpy.astype(np.float64), exact, rtol=rtol)


# -- the tails: exact where Keras is not -----------------------------------------------------------


def test_logits_tails_are_within_a_few_ulp_of_the_reference() -> None:
    exact, exact_grad = reference.value_and_grad(TAIL_LOGITS, TAIL_LOGIT_TARGETS, reduction="none")
    loss_fn = BinaryCrossentropy(from_logits=True, reduction="none")
    loss, grad = value_and_grad(loss_fn, TAIL_LOGIT_TARGETS, TAIL_LOGITS)
    assert loss.dtype == grad.dtype == np.float32
    assert ulps(loss, exact[:, 0]).max() <= ULP_BOUND
    assert ulps(grad, exact_grad).max() <= ULP_BOUND
    assert 1e-35 < loss.min() < 2e-35  # softplus(-80), far below Keras's epsilon


def test_probability_tails_are_exact_where_keras_clips_at_1e_7() -> None:
    exact = reference.binary_cross_entropy(TAIL_PROBS, TAIL_PROB_TARGETS, reduction="none")
    ours = numpy(BinaryCrossentropy(reduction="none")(TAIL_PROB_TARGETS, TAIL_PROBS))
    theirs = numpy(keras.losses.BinaryCrossentropy(reduction="none")(TAIL_PROB_TARGETS, TAIL_PROBS))
    assert ulps(ours, exact[:, 0]).max() <= ULP_BOUND
    assert round(float(ours[0]), 4) == 69.0776  # -log 1e-30
    # Keras: -log 1e-7 = 16.118 where the loss is 69.078, and ~1e-7 where it is 1e-30 or 1e-8.
    assert abs(float(theirs[0]) - 16.118) < 1e-3
    assert theirs[1] > 9e-8 and theirs[2] > 9e-8
    assert ulps(theirs, exact[:, 0]).max() > 1e20


def test_log_clamp_is_the_floor_of_each_log() -> None:
    p, y = np.array([[0.0], [1.0]], "f4"), np.array([[1.0], [0.0]], "f4")
    assert numpy(BinaryCrossentropy(reduction="none")(y, p)).tolist() == [100.0, 100.0]
    clamped = BinaryCrossentropy(reduction="none", log_clamp=-5)(y, p)
    assert numpy(clamped).tolist() == [5.0, 5.0]
    unclamped = BinaryCrossentropy(reduction="none", log_clamp=-math.inf)(y, p)
    assert numpy(unclamped).tolist() == [math.inf, math.inf]


def test_a_sigmoid_activation_output_is_computed_from_its_logits() -> None:
    x, y = np.array([[20.0], [-30.0]], "f4"), np.array([[0.0], [1.0]], "f4")
    exact = reference.binary_cross_entropy_with_logits(x, y, reduction="none")[:, 0]

    def loss_of_sigmoid(logits: Any) -> Any:
        return BinaryCrossentropy(reduction="none")(y, keras.activations.sigmoid(logits))

    ours = numpy(loss_of_sigmoid(keras.ops.convert_to_tensor(x)))
    assert ulps(ours, exact).max() <= ULP_BOUND  # 20 and 30
    if BACKEND == "tensorflow":  # a symbolic tensor carries the logits too
        import tensorflow as tf

        assert ulps(numpy(tf.function(loss_of_sigmoid)(x)), exact).max() <= ULP_BOUND
    # The same probabilities without the logits: sigmoid(20) rounds to 1, log(1 - 1) clamps.
    bare = keras.ops.convert_to_tensor(numpy(keras.activations.sigmoid(x)))
    assert numpy(BinaryCrossentropy(reduction="none")(y, bare))[0] == 100.0


# -- saving and loading -----------------------------------------------------------------------


def test_config_round_trips_through_keras_serialization() -> None:
    loss_fn = BinaryCrossentropy(
        label_smoothing=0.1, pos_weight=[1.0, 3.0], log_clamp=-math.inf, dtype="float64"
    )
    again = keras.losses.deserialize(keras.losses.serialize(loss_fn))
    assert type(again) is BinaryCrossentropy
    assert again.get_config() == loss_fn.get_config()
    assert BinaryCrossentropy.from_config(loss_fn.get_config()).get_config() == loss_fn.get_config()
    assert keras.losses.get(keras.losses.serialize(binary_crossentropy)) is binary_crossentropy


def small_model(activation: str | None = None) -> Any:
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation=activation, name="out")]
    )
    rng = np.random.default_rng(8)
    model.set_weights([rng.normal(0.0, 1.0, (3, 2)).astype("f4"), np.zeros(2, "f4")])
    return model


# Keras's TensorFlow backend saves a variable as np.array(variable), which NumPy 2 warns about.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@pytest.mark.parametrize("which", ["class", "function"])
def test_a_compiled_model_saves_and_loads(tmp_path: Path, which: str) -> None:
    if which == "class":
        loss: Any = BinaryCrossentropy(from_logits=True, label_smoothing=0.1, pos_weight=[1.0, 4.0])
        model = small_model()
    else:
        loss, model = binary_crossentropy, small_model("sigmoid")
    model.compile(optimizer="sgd", loss=loss)
    x, y = operands(seed=9)
    # Moderate logits: inside jax.jit a sigmoid output is taken as probabilities (see the
    # module's notes), eagerly from its logits; the two agree to rounding here.
    x, y = 0.3 * x[:, :3], (y[:, :2] > 0.5).astype("f4")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    if which == "class":
        assert type(loaded.loss) is BinaryCrossentropy
        assert loaded.loss.get_config() == loss.get_config()
    else:
        assert loaded.loss is binary_crossentropy
    expected = model.evaluate(x, y, verbose=0)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-6)
    # One batch: evaluate's loss is the mean of the per-sample losses.
    assert expected == pytest.approx(float(numpy(loss(y, model(x))).mean()), rel=1e-5)


# -- one model, three backends: model.fit in one process each -------------------------------------


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, Any]]:
    """One worker process per Keras backend, all started at once; a backend whose framework
    is missing maps to the reason to skip it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(sys.path))
    started: dict[str, Any] = {}
    for backend, framework in FRAMEWORKS.items():
        if importlib.util.find_spec(framework) is None:
            started[backend] = f"{framework} is not installed"
            continue
        started[backend] = subprocess.Popen(
            [sys.executable, str(WORKER)],
            env=dict(env, KERAS_BACKEND=backend),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        yield started
    finally:
        for process in started.values():
            if isinstance(process, subprocess.Popen) and process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", autouse=True)
def start_workers_first(request: pytest.FixtureRequest) -> None:
    """Start the workers before this module's first test when any test here needs them, so
    that they run while the tests in this process do (they take most of the file's time)."""
    if any(
        "trained" in item.fixturenames
        for item in request.session.items
        # Doctest items (of helper modules next to the tests) have no module attribute.
        if getattr(item, "module", None) is request.module
    ):
        request.getfixturevalue("workers")


@pytest.fixture(scope="module")
def trained(workers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker's JSON by Keras backend, or {"skip": reason}."""
    results: dict[str, dict[str, Any]] = {}
    for backend, process in workers.items():
        if isinstance(process, str):
            results[backend] = {"skip": process}
            continue
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, f"KERAS_BACKEND={backend}:\n{err[-4000:]}"
        results[backend] = json.loads(out.strip().splitlines()[-1])
    return results


def result_of(trained: dict[str, dict[str, Any]], backend: str) -> dict[str, Any]:
    result = trained[backend]
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["backend"] == backend
    return result


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_model_fit_lowers_the_loss_on_each_backend(trained, backend) -> None:
    runs = result_of(trained, backend)["runs"]
    assert set(runs) >= {"ours", "function"}
    for name, curve in runs.items():
        assert len(curve) == 5 and all(math.isfinite(v) for v in curve), name
        assert all(later < earlier for earlier, later in zip(curve, curve[1:])), (name, curve)
        assert curve[-1] < 0.8 * curve[0], (name, curve)


def test_the_loss_curves_agree_across_backends(trained) -> None:
    available = {b: r for b, r in trained.items() if "skip" not in r}
    if len(available) < 2:
        pytest.skip(f"fewer than two Keras backends can run: {sorted(available)}")
    first, *others = available
    for name in ("ours", "function"):
        for other in others:
            np.testing.assert_allclose(
                available[other]["runs"][name],
                available[first]["runs"][name],
                rtol=CURVE_RTOL,
                err_msg=f"{name}: {other} against {first}",
            )
    if "tensorflow" in available:  # XLA, as Keras compiles the step on a GPU
        runs = available["tensorflow"]["runs"]
        np.testing.assert_allclose(runs["ours_xla"], runs["ours"], rtol=CURVE_RTOL)


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_the_tails_on_each_backend(trained, backend) -> None:
    errors = result_of(trained, backend)["tails"]
    assert max(errors["ours_logits"], errors["ours_logits_grad"]) <= ULP_BOUND, errors
    assert errors["ours_probs"] <= ULP_BOUND, errors
    assert errors["keras_probs"] > 1e20, errors  # the clip at 1e-7, on every backend
    if backend == "torch":  # torch's own loss, which Keras calls, drops these tails
        assert min(errors["keras_logits"], errors["keras_logits_grad"]) > 1e6, errors
