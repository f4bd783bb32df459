"""The NumPy backend's fused, blocked loss and d loss / d logits (``bce_numpy.fused``).

Checked against the float64 reference (``bce_core.reference``) with tight tolerances over
hypothesis-generated shapes, dtypes and options, at block boundaries (including one block
that falls back to the exact kernel among fast ones), on non-contiguous inputs, against the
exact oracle for the reduced paths, for memory (tracemalloc) and across threads. No timing.
"""

from __future__ import annotations

import math
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bce_conformance import oracle
from bce_core import reference
from bce_core.arrays import prepare_operands, reduce_loss
from bce_core.spec import REDUCTIONS
from bce_numpy import lean
from bce_numpy.backend import NumpyBackend
from bce_numpy.fused import BLOCK_SIZE, fused_logits

try:
    import ml_dtypes
except ImportError:  # bfloat16 cases need it
    ml_dtypes = None

BACKEND = NumpyBackend()

#: Unit roundoff of each dtype.
UNIT = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}
#: Smallest subnormal of each dtype (absolute error floor).
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}
#: Allowed error in units of UNIT times the scale: the result is rounded once from float64
#: (1 unit), the float64 intermediates of the fast kernel add far less than one more.
UNITS = {"float16": 1.01, "bfloat16": 1.01, "float32": 2.0, "float64": 8.0}

DTYPES = ["float32", "float64", "float16"] + (["bfloat16"] if ml_dtypes is not None else [])
SPECIALS = [
    0.0,
    -0.0,
    1e-30,
    -1e-30,
    1e-45,
    88.0,
    -88.0,
    103.0,
    -103.0,
    750.0,
    -750.0,
    1e4,
    -1e4,
    3e38,
    -3e38,
    np.inf,
    -np.inf,
    np.nan,
]


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


# -- comparison with the reference ---------------------------------------------


def scales(x: np.ndarray, y: np.ndarray, w, q, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-element magnitudes of the loss and of the gradient's two terms (float64)."""
    yp, one_minus = reference.smoothed_targets(y, eps)
    with np.errstate(all="ignore"):
        loss = np.abs(w) * (
            one_minus * reference.softplus(x) + np.abs(q) * yp * reference.softplus(-x)
        )
        grad = np.abs(w) * (
            one_minus * reference.sigmoid(x) + np.abs(q) * yp * reference.sigmoid(-x)
        )
    return loss, grad


def assert_close(got: np.ndarray, expected: np.ndarray, scale, dtype: str, what: str) -> None:
    """|got - expected| <= units * unit(dtype) * scale + tiny, with equal NaN and inf."""
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    scale = np.broadcast_to(np.asarray(scale, np.float64), got.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN")
    np.testing.assert_array_equal(
        got[~finite & ~np.isnan(expected)],
        expected[~finite & ~np.isnan(expected)],
        err_msg=f"{what}: inf",
    )
    with np.errstate(all="ignore"):
        allowed = UNITS[dtype] * UNIT[dtype] * scale + TINY[dtype]
        error = np.abs(got - expected)
    bad = finite & (got != expected) & ~(error <= allowed)  # a NaN scale: equality only
    # A finite expected value beyond the dtype's range is matched by the inf it rounds to.
    largest = float(np.finfo(np.float32 if dtype == "bfloat16" else dtype).max)
    bad &= ~(np.isinf(got) & (np.abs(expected) > largest))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AssertionError(
            f"{what}: at flat index {i} got {got.flat[i]!r}, expected "
            f"{expected.flat[i]!r} (allowed {allowed.flat[i]:.3g})"
        )


def reference_factor(ops, reduction: str) -> np.ndarray:
    """|d(reduced loss)/d(element loss)| per element, from the reference's own reduction."""
    w = None if ops.weight is None else ops.weight.astype(np.float64)
    with np.errstate(all="ignore"):
        factor = reduce_loss(np.ones(ops.shape), reduction, mask=ops.mask, weight=w).factor
    return np.abs(np.broadcast_to(np.asarray(factor, np.float64), ops.shape))


def element_scales(ops, label_smoothing: float, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes that bound the rounding error of each element's loss and gradient, times
    the reduction's factor; 0 where the reduction drops the element."""
    w64 = 1.0 if ops.weight is None else ops.weight.astype(np.float64)
    q64 = 1.0 if ops.pos_weight is None else ops.pos_weight.astype(np.float64)
    loss_scale, grad_scale = scales(
        ops.inputs.astype(np.float64), ops.targets.astype(np.float64), w64, q64, label_smoothing
    )
    factor = reference_factor(ops, reduction)
    with np.errstate(all="ignore"):
        loss_scale = np.where(factor == 0, 0.0, np.broadcast_to(loss_scale, ops.shape) * factor)
        grad_scale = np.where(factor == 0, 0.0, np.broadcast_to(grad_scale, ops.shape) * factor)
    return loss_scale, grad_scale


def check_against_reference(
    x,
    y,
    *,
    weight=None,
    pos_weight=None,
    mask=None,
    label_smoothing=0.0,
    reduction="mean",
    want_grad=True,
    block_size=BLOCK_SIZE,
) -> None:
    """fused_logits against the reference: loss and (optionally) d loss / d logits."""
    ops = prepare_operands("logits", x, y, weight=weight, pos_weight=pos_weight, mask=mask)
    with np.errstate(all="ignore"):
        loss, grad = fused_logits(
            ops, label_smoothing, reduction, want_grad=want_grad, block_size=block_size
        )
    check_results(
        ops,
        loss,
        grad if want_grad else None,
        x,
        y,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    if not want_grad:
        assert grad is None


def check_results(
    ops, loss, grad, x, y, *, weight, pos_weight, mask, label_smoothing, reduction
) -> None:
    """Loss (and gradient, unless None) of the backend against the reference."""
    dtype = np.asarray(x).dtype.name
    result_dtype = np.asarray(x).dtype  # byte order included
    ref_loss, ref_grad = reference.value_and_grad(
        x,
        y,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    assert loss.dtype == result_dtype
    assert loss.shape == np.shape(ref_loss)
    loss_scale, grad_scale = element_scales(ops, label_smoothing, reduction)
    keep = np.ones(ops.shape, bool) if mask is None else np.broadcast_to(mask, ops.shape)
    if reduction == "none":
        assert_close(loss, ref_loss, loss_scale, dtype, "loss")
        assert np.all(np.asarray(loss)[~keep] == 0)
    else:
        # NaN scales are 0 * inf: terms that contribute exactly 0. In float64 the sums (the
        # reference's and ours, the loss's and the weights') add their summation error.
        scale = np.nansum(loss_scale)
        if dtype == "float64":
            scale *= 1 + 2 * math.log2(ops.inputs.size + 1) / UNITS[dtype]
        assert_close(loss, ref_loss, scale, dtype, "reduced loss")
    if grad is not None:
        assert grad.dtype == result_dtype and grad.shape == ops.shape
        assert_close(grad, ref_grad, grad_scale, dtype, "grad")
        assert np.all(np.asarray(grad)[~keep] == 0)


# -- hypothesis strategies ---------------------------------------------------------


@st.composite
def cases(draw):
    """(x, y, options): dtype, shape (small, or one long axis for many small blocks), values
    with occasional specials (inf, NaN, huge, tiny), target kinds, broadcast weight/pos_weight/
    mask with zeros, label smoothing, reduction, with or without gradient, block size."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0 if ndim else 1, 6), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()) and ndim:
        shape = shape[:-1] + (draw(st.integers(7, 60)),)  # several small blocks
    size = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.5, 3.0, 20.0]))
    x = rng.normal(0.0, scale, size)  # size 1 for 0-d
    if size and draw(st.booleans()):
        count = draw(st.integers(1, min(size, 4)))
        x[rng.choice(size, count, replace=False)] = rng.choice(SPECIALS, count)
    with np.errstate(over="ignore"):  # 3e38 in float16 is inf, as intended
        x = x.astype(np_dtype(dtype)).reshape(shape)
    kind = draw(st.sampled_from(["hard", "soft", "int", "bool"]))
    hard = np.asarray(rng.integers(0, 2, shape))
    y = {
        "hard": hard.astype(np_dtype(dtype)),
        "int": hard.astype(np.int64),
        "bool": hard.astype(bool),
        "soft": np.asarray(rng.uniform(0.0, 1.0, shape)).astype(np_dtype(dtype)),
    }[kind]

    def broadcastable() -> tuple[int, ...]:
        lead = draw(st.integers(0, ndim))
        return tuple(1 if draw(st.booleans()) else d for d in shape[lead:])

    options: dict = {}
    if draw(st.booleans()):
        w_shape = broadcastable()
        weight = np.asarray(rng.uniform(0.0, 3.0, w_shape))
        weight[np.asarray(rng.uniform(size=w_shape)) < 0.1] = 0.0
        options["weight"] = weight.astype(np_dtype(dtype))
    if draw(st.booleans()):
        q_shape = broadcastable()
        pos_weight = np.asarray(rng.uniform(0.0, 3.0, q_shape))
        pos_weight[np.asarray(rng.uniform(size=q_shape)) < 0.1] = 0.0
        options["pos_weight"] = pos_weight.astype(np_dtype(dtype))
    if draw(st.booleans()):
        options["mask"] = np.asarray(rng.uniform(size=broadcastable())) < 0.7
    if draw(st.booleans()):
        options["label_smoothing"] = draw(st.sampled_from([0.1, 0.5, 1.0, 1e-30]))
    reductions = [r for r in REDUCTIONS if ndim or r != "batch_mean"]
    options["reduction"] = draw(st.sampled_from(reductions))
    options["want_grad"] = draw(st.booleans())
    options["block_size"] = draw(st.sampled_from([1, 2, 3, 7, 64, BLOCK_SIZE]))
    return x, y, options


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_fused_pass_matches_the_reference(case) -> None:
    x, y, options = case
    check_against_reference(x, y, **options)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_backend_entry_points_use_the_fused_pass(case) -> None:
    """Through the backend: forward and value_and_grad(wrt="logits"), single and tuple wrt."""
    x, y, options = case
    del options["block_size"], options["want_grad"]
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, **options)
    loss_vg, grad = BACKEND.value_and_grad(x, y, **options)
    loss_t, (grad_t,) = BACKEND.value_and_grad(x, y, wrt=("logits",), **options)
    for a, b in ((loss_vg, loss_t), (grad, grad_t)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    arrays = {k: options.get(k) for k in ("weight", "pos_weight", "mask")}
    ops = prepare_operands("logits", x, y, **arrays)
    common = dict(
        arrays, label_smoothing=options.get("label_smoothing", 0.0), reduction=options["reduction"]
    )
    check_results(ops, loss, None, x, y, **common)
    check_results(ops, loss_vg, grad, x, y, **common)


# -- block boundaries ------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 5]
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_default_block_boundaries(size: int, reduction: str) -> None:
    """Sizes around the default block (the pass splits into equal blocks of about BLOCK_SIZE)."""
    rng = np.random.default_rng(size)
    x = (rng.standard_normal(size) * 8).astype(np.float32)
    y = rng.uniform(0, 1, size).astype(np.float32)
    check_against_reference(x, y, reduction=reduction)
    check_against_reference(x, y, reduction=reduction, want_grad=False)


@pytest.mark.parametrize("block_size", [99, 100, 101, 33])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "weighted_mean", "batch_mean"])
def test_many_blocks_with_broadcast_weight_and_mask(block_size: int, reduction: str) -> None:
    """(rows, 3) with weight (rows, 1), pos_weight (3,), mask (rows, 3): nditer hands out blocks
    whose length is a multiple of the inner dimension; one block holds inf/NaN (exact kernel)."""
    rng = np.random.default_rng(block_size)
    rows = 140
    x = (rng.standard_normal((rows, 3)) * 6).astype(np.float32)
    y = rng.uniform(0, 1, (rows, 3)).astype(np.float32)
    y[::5] = np.round(y[::5])
    weight = rng.uniform(0.25, 2.0, (rows, 1)).astype(np.float32)
    pos_weight = np.array([0.5, 1.0, 2.5], np.float32)
    mask = rng.uniform(size=(rows, 3)) < 0.8
    # Block ~2: exact-kernel cases; block ~0: a NaN that is masked out.
    x[70, 0], y[70, 0], mask[70, 0] = np.inf, 0.0, True
    x[71, 1], y[71, 1], mask[71, 1] = -np.inf, 0.0, True
    x[72, 2], y[72, 2], mask[72, 2] = np.inf, 1.0, True
    x[3, 1], mask[3, 1] = np.nan, False
    for options in (
        dict(weight=weight, pos_weight=pos_weight, mask=mask),
        dict(weight=weight, mask=mask),
        dict(mask=mask[:1].repeat(rows, 0)),
        dict(pos_weight=pos_weight, mask=mask, label_smoothing=0.1),
    ):
        for want_grad in (True, False):
            check_against_reference(
                x, y, reduction=reduction, want_grad=want_grad, block_size=block_size, **options
            )


def test_exact_kernel_handles_one_block_among_fast_ones() -> None:
    """Infinite and NaN logits and zero coefficients in one block; the others stay fast."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(1000) * 4).astype(np.float32)
    y = rng.integers(0, 2, 1000).astype(np.float32)
    x[500:506] = [np.inf, -np.inf, np.inf, -np.inf, np.nan, 1e4]
    y[500:506] = [1, 0, 0, 1, 1, 1]
    weight = np.ones(1000, np.float32)
    weight[506] = 0.0
    x[506] = np.inf
    for reduction in ("none", "sum", "mean"):
        for options in ({}, {"weight": weight}):
            check_against_reference(x, y, reduction=reduction, block_size=100, **options)
    loss, grad = BACKEND.value_and_grad(x, y, weight=weight, reduction="none")
    np.testing.assert_array_equal(loss[500:504], [0, 0, np.inf, np.inf])
    np.testing.assert_array_equal(grad[500:504], [0, 0, 1, -1])
    assert np.isnan(loss[504]) and np.isnan(grad[504]) and loss[506] == 0
    mean = BACKEND.binary_cross_entropy_with_logits(x, y, weight=weight)
    assert np.isnan(mean)


def test_large_logits_take_the_exact_kernel_and_stay_exact() -> None:
    """Logits beyond exp's range (float32 allows 3e38) with weights that keep tiny terms alive."""
    x = np.array([709.0, 710.0, 800.0, 3e38, -710.0, -800.0, -3e38, 100.0], np.float32)
    y = np.array([1.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 1.0], np.float32)
    w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3e38], np.float32)
    for reduction in ("none", "sum"):
        check_against_reference(x, y, weight=w, reduction=reduction)
        check_against_reference(x, y, reduction=reduction, want_grad=False)


# -- non-contiguous inputs -------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["strided", "transposed", "reversed", "broadcast"])
def test_non_contiguous_inputs(dtype: str, layout: str) -> None:
    rng = np.random.default_rng(11)
    base_x = (rng.standard_normal((60, 80)) * 5).astype(dtype)
    base_y = rng.uniform(0, 1, (60, 80)).astype(dtype)
    if layout == "strided":
        x, y = base_x[::2, 1::3], base_y[1::2, ::3]
    elif layout == "transposed":
        x, y = base_x.T, base_y.T
    elif layout == "reversed":
        x, y = base_x[::-1, ::-1], base_y[:, ::-1]
    else:
        x, y = np.broadcast_to(base_x[0], (60, 80)), base_y
    assert not x.flags.c_contiguous or not y.flags.c_contiguous
    w = np.broadcast_to(rng.uniform(0.5, 2, (x.shape[0], 1)).astype(dtype), x.shape)
    mask = (rng.uniform(size=x.shape) < 0.8)[:, ::-1]
    for reduction in ("none", "mean", "weighted_mean"):
        check_against_reference(x, y, weight=w, mask=mask, reduction=reduction, block_size=500)
        check_against_reference(x, y, reduction=reduction)
        loss, grad = BACKEND.value_and_grad(x, y, weight=w, mask=mask, reduction=reduction)
        loss_c, grad_c = BACKEND.value_and_grad(
            np.ascontiguousarray(x),
            np.ascontiguousarray(y),
            weight=np.ascontiguousarray(w),
            mask=np.ascontiguousarray(mask),
            reduction=reduction,
        )
        np.testing.assert_allclose(loss, loss_c, rtol=4 * UNIT[dtype])
        np.testing.assert_allclose(grad, grad_c, rtol=4 * UNIT[dtype], atol=TINY[dtype])


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f2"])
def test_byte_order_and_half_precision(dtype: str) -> None:
    """Non-native byte order keeps its kernel (float64 stays exact); results keep the dtype."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((50, 7)) * 9).astype(dtype)
    y = rng.uniform(0, 1, (50, 7)).astype(dtype)
    w = rng.uniform(0.5, 2.0, (7,)).astype(dtype)
    for reduction in ("none", "mean"):
        check_against_reference(x, y, weight=w, reduction=reduction, block_size=64)
        loss, grad = BACKEND.value_and_grad(x, y, weight=w, reduction=reduction)
        assert loss.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)


# -- edge shapes and reductions -------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (1,), (2, 0)])
def test_edge_shapes(dtype: str, shape: tuple[int, ...]) -> None:
    x = np.full(shape, 0.75, np_dtype(dtype))
    y = np.ones(shape, np_dtype(dtype))
    for reduction in REDUCTIONS:
        if reduction == "batch_mean" and not shape:
            with pytest.raises(ValueError, match="batch_mean"):
                BACKEND.binary_cross_entropy_with_logits(x, y, reduction=reduction)
            continue
        check_against_reference(x, y, reduction=reduction)
        check_against_reference(x, y, reduction=reduction, want_grad=False)


def test_fully_masked_and_zero_weight_batches_give_zero() -> None:
    x = np.array([np.nan, 1.0, np.inf], np.float32)
    y = np.ones(3, np.float32)
    for reduction in ("mean", "weighted_mean", "batch_mean"):
        loss, grad = BACKEND.value_and_grad(x, y, mask=np.zeros(3, bool), reduction=reduction)
        assert loss == 0 and np.all(grad == 0)
    loss, grad = BACKEND.value_and_grad(
        x[1:2], y[1:2], weight=np.zeros(1, np.float32), reduction="weighted_mean"
    )
    assert loss == 0 and np.all(grad == 0)


# -- accuracy of the reduced paths against the exact oracle ----------------------


def sweep(dtype: type) -> np.ndarray:
    magnitudes = np.concatenate([np.geomspace(1e-20, 200.0, 90), np.linspace(0.05, 40, 60)])
    return np.concatenate([magnitudes, -magnitudes, [0.0]]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_reduced_and_fused_losses_are_exact_to_a_few_ulp(dtype: type, target: float) -> None:
    """Each element alone through the reduced forward ("sum" of one element) and the loss that
    value_and_grad returns: the sums of the fast kernel (max(x,0) - x y, 2 s, tail) must keep
    the element contract too."""
    x = sweep(dtype)
    name = np.dtype(dtype).name
    exact = [oracle.element_loss(float(v), float(np.asarray(target, dtype))) for v in x]
    forward = [
        BACKEND.binary_cross_entropy_with_logits(
            x[i : i + 1], np.full(1, target, dtype), reduction="sum"
        )
        for i in range(x.size)
    ]
    fused = [
        BACKEND.value_and_grad(x[i : i + 1], np.full(1, target, dtype), reduction="sum")[0]
        for i in range(x.size)
    ]
    for got in (forward, fused):
        errors = oracle.ulp_errors(np.array(got, np.float64), exact, name)
        assert errors.max() <= 4.0, f"{errors.max():.2f} ULP at x={x[errors.argmax()]!r}"


# -- memory and threads ------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none", "weighted_mean"])
def test_float32_loss_and_gradient_peak_memory(reduction: str) -> None:
    """Peak allocation beyond the inputs stays within three input-sized arrays."""
    n = 2_000_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    y = (rng.uniform(size=n) > 0.5).astype(np.float32)
    extra = {}
    if reduction == "weighted_mean":
        extra = dict(
            weight=rng.uniform(0.5, 2.0, n).astype(np.float32), mask=rng.uniform(size=n) < 0.9
        )
    BACKEND.value_and_grad(x[:10], y[:10], reduction=reduction)  # imports, caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        loss, grad = BACKEND.value_and_grad(x, y, reduction=reduction, **extra)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base_fwd, _ = tracemalloc.get_traced_memory()
        BACKEND.binary_cross_entropy_with_logits(x, y, reduction=reduction, **extra)
        _, peak_fwd = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grad.shape == x.shape
    used, used_fwd = (peak - base) / x.nbytes, (peak_fwd - base_fwd) / x.nbytes
    assert used <= 3 and used_fwd <= 3, (used, used_fwd)
    # By design: the outputs (gradient, elementwise loss) plus block-sized scratch.
    outputs = int(reduction == "none")
    assert used <= 1 + outputs + 0.5 and used_fwd <= outputs + 0.5, (used, used_fwd)


def test_concurrent_calls_do_not_share_state() -> None:
    rng = np.random.default_rng(3)
    inputs = [
        (
            (rng.standard_normal(50_000) * (k + 1)).astype(np.float32),
            rng.uniform(0, 1, 50_000).astype(np.float32),
        )
        for k in range(4)
    ]
    expected = [BACKEND.value_and_grad(x, y) for x, y in inputs]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [BACKEND.value_and_grad(*inputs[k]) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, (loss, grad) in enumerate(expected):
        for got_loss, got_grad in results[k]:
            assert got_loss.tobytes() == loss.tobytes()
            assert got_grad.tobytes() == grad.tobytes()


# -- the lean path (no weight, pos_weight or mask; float32 working precision) ------


LEAN_SIZES = sorted(
    {
        1,
        lean.LOG1P_POLY_MIN - 1,
        lean.LOG1P_POLY_MIN,
        lean.LOG1P_POLY_MIN + 1,
        lean.EXP_POLY_MIN - 1,
        lean.EXP_POLY_MIN,
        lean.EXP_POLY_MIN + 1,
        lean.BLOCK_SIZE - 1,
        lean.BLOCK_SIZE,
        lean.BLOCK_SIZE + 1,
        2 * lean.BLOCK_SIZE + 3,
    }
)


def lean_case(size: int, dtype: str, soft: bool, specials: bool, seed: int = 0):
    rng = np.random.default_rng(seed + size)
    x = rng.normal(0.0, 8.0, size)
    if specials:  # one block falls back to the exact kernel; large finite logits stay lean
        at = rng.choice(size, min(size, len(SPECIALS)), replace=False)
        x[at] = np.asarray(SPECIALS)[: at.size]
    with np.errstate(over="ignore"):
        x = x.astype(np_dtype(dtype))
    y = rng.uniform(0.0, 1.0, size) if soft else rng.integers(0, 2, size)
    return x, np.asarray(y).astype(np_dtype(dtype))


@pytest.mark.parametrize("size", LEAN_SIZES)
@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "float64"])
def test_lean_path_at_its_thresholds(size: int, dtype: str, monkeypatch) -> None:
    """Just below and above each size where the lean path switches (NumPy's exp and log1p to
    the polynomials, one block to several), against the reference; the fused pass is not
    used."""
    monkeypatch.setattr("bce_numpy.backend.fused_logits", None)  # calling it would fail
    for soft, specials in ((False, False), (True, False), (True, True)):
        x, y = lean_case(size, dtype, soft, specials)
        for eps in (0.0, 0.1):
            for reduction in ("none", "mean", "sum"):
                options = dict(label_smoothing=eps, reduction=reduction)
                ops = prepare_operands("logits", x, y, weight=None, pos_weight=None, mask=None)
                common = dict(weight=None, pos_weight=None, mask=None, **options)
                loss = BACKEND.binary_cross_entropy_with_logits(x, y, **options)
                check_results(ops, loss, None, x, y, **common)
                loss_vg, grad = BACKEND.value_and_grad(x, y, **options)
                check_results(ops, loss_vg, grad, x, y, **common)


@pytest.mark.parametrize("size", [1, lean.LOG1P_POLY_MIN + 1, lean.EXP_POLY_MIN + 1])
@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_lean_path_is_exact_to_a_few_ulp(size: int, target: float) -> None:
    """Elementwise loss and gradient of the three kernels of the lean path (NumPy's exp and
    log1p, NumPy's exp and the tail polynomial, both polynomials) against the exact oracle,
    float32."""
    x = sweep(np.float32)
    x = np.resize(x, max(size, x.size))  # the sweep repeated up to the size
    y = np.full(x.size, target, np.float32)
    assert lean.serves(x, y)
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, reduction="none")
    _, grad = BACKEND.value_and_grad(x, y, reduction="sum")
    n = sweep(np.float32).size
    exact_loss = [oracle.element_loss(float(v), float(target)) for v in x[:n]]
    exact_grad = [oracle.element_grad(float(v), float(target)) for v in x[:n]]
    loss_errors = oracle.ulp_errors(loss[:n], exact_loss, "float32")
    grad_errors = oracle.ulp_errors(
        grad[:n], [g for g, _ in exact_grad], "float32", [r for _, r in exact_grad]
    )
    for what, errors in (("loss", loss_errors), ("grad", grad_errors)):
        assert errors.max() <= 4.0, f"{what}: {errors.max():.2f} ULP at x={x[errors.argmax()]!r}"


@pytest.mark.parametrize(
    "size", [10, lean.LOG1P_POLY_MIN + 1, lean.EXP_POLY_MIN + 1, lean.BLOCK_SIZE + 1]
)
def test_lean_path_leaves_the_callers_arrays_alone(size: int) -> None:
    x, y = lean_case(size, "float32", soft=True, specials=True)
    x_before, y_before = x.copy(), y.copy()
    for eps in (0.0, 0.2):
        BACKEND.value_and_grad(x, y, label_smoothing=eps, reduction="none")
        BACKEND.binary_cross_entropy_with_logits(x, y, label_smoothing=eps)
    assert x.tobytes() == x_before.tobytes() and y.tobytes() == y_before.tobytes()


def test_lean_path_takes_only_its_calls() -> None:
    """float64, a weight, a non-contiguous array or another byte order go to the fused pass."""
    x = np.linspace(-5, 5, 12, dtype=np.float32).reshape(3, 4)
    y = np.ones((3, 4), np.float32)
    assert lean.serves(x, y)
    assert not lean.serves(x.astype(np.float64), y)
    assert not lean.serves(x.T, y.T)
    assert not lean.serves(x.astype(">f4"), y)
    for options in ({"weight": np.ones(3, np.float32)}, {"mask": np.ones(3, bool)}, {}):
        loss, grad = BACKEND.value_and_grad(x.T, y.T, **options)
        contiguous = BACKEND.value_and_grad(np.ascontiguousarray(x.T), y.T, **options)
        np.testing.assert_allclose(loss, contiguous[0], rtol=4 * UNIT["float32"])
        np.testing.assert_allclose(grad, contiguous[1], rtol=4 * UNIT["float32"], atol=1e-38)


@pytest.mark.parametrize("size", [20, lean.LOG1P_POLY_MIN + 1, lean.EXP_POLY_MIN + 1])
def test_lean_path_with_large_finite_logits(size: int) -> None:
    """Logits beyond exp's range but finite (no inf or NaN to send the block to the exact
    kernel): the clamped exponential keeps the loss and the gradient exact in both kernels."""
    rng = np.random.default_rng(size)
    x = rng.normal(0.0, 3.0, size).astype(np.float32)
    x[:8] = [709.0, 710.0, 1000.0, 3e38, -709.0, -710.0, -1000.0, -3e38]
    y = rng.integers(0, 2, size).astype(np.float32)
    y[:8] = [1, 0, 1, 0, 0, 1, 1, 0]
    ops = prepare_operands("logits", x, y, weight=None, pos_weight=None, mask=None)
    for reduction in ("none", "mean"):
        common = dict(weight=None, pos_weight=None, mask=None, label_smoothing=0.0)
        loss = BACKEND.binary_cross_entropy_with_logits(x, y, reduction=reduction)
        check_results(ops, loss, None, x, y, reduction=reduction, **common)
        loss, grad = BACKEND.value_and_grad(x, y, reduction=reduction)
        assert np.isfinite(grad).all()
        check_results(ops, loss, grad, x, y, reduction=reduction, **common)
