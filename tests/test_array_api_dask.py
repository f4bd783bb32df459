"""The Dask path of the array_api backend (``bce_array_api.chunked``) against the NumPy
backend on the same data, in process: every reduction, broadcast weight, pos_weight and
mask, uneven chunks, zero denominators, non-finite data, laziness and one task per block,
and the data checks of validate=True with the NumPy backend's messages."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dask.array")

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import bce_core  # noqa: E402
from bce_array_api import chunked  # noqa: E402
from bce_core.arrays import sum_to_shape  # noqa: E402
from bce_core.rules import Operands  # noqa: E402

SHAPE = (37, 11)
#: Uneven chunks of the logits; the other operands get chunks of their own.
CHUNKS = ((10, 20, 7), (4, 7))
REDUCTIONS = ("none", "sum", "mean", "weighted_mean", "batch_mean")

#: (weight shape, pos_weight shape, mask shape): None for an absent operand.
LAYOUTS = {
    "plain": (None, None, None),
    "full": (SHAPE, (11,), SHAPE),
    "columns": ((37, 1), (1, 11), (11,)),
    "scalars": ((), (), (37, 1)),
}


@pytest.fixture(autouse=True)
def synchronous() -> Any:
    with dask.config.set(scheduler="synchronous"):
        yield


def numpy_backend() -> Any:
    return bce_core.get_backend("numpy")


def data(dtype: str, layout: str, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> dict[str, Any]:
    """NumPy operands of one case (targets soft and hard, weights with exact zeros)."""
    rng = np.random.default_rng(seed)
    w_shape, q_shape, m_shape = LAYOUTS[layout]
    y = rng.uniform(0, 1, shape)
    y[rng.uniform(size=shape) < 0.3] = 1.0
    y[rng.uniform(size=shape) < 0.3] = 0.0
    out: dict[str, Any] = {
        "x": (rng.standard_normal(shape) * 4).astype(dtype),
        "y": y.astype(dtype),
        "w": None,
        "q": None,
        "m": None,
    }
    if w_shape is not None:
        w = rng.uniform(0, 2, w_shape)
        if w.ndim:
            w[rng.uniform(size=w_shape) < 0.2] = 0.0
        out["w"] = np.asarray(w, dtype)
    if q_shape is not None:
        out["q"] = np.asarray(rng.uniform(0.5, 3, q_shape), dtype)
    if m_shape is not None:
        m = rng.uniform(size=m_shape) < 0.7
        m.reshape(-1)[0] = True
        out["m"] = m
    return out


def lazy(arrays: dict[str, Any], chunks: Any = CHUNKS) -> Operands[Any]:
    """Dask operands: the logits with ``chunks``, the others with chunks of their own."""

    def own(a: Any) -> Any:
        return None if a is None else da.from_array(a, chunks=3 if a.ndim else ())

    x = da.from_array(arrays["x"], chunks=chunks)
    y = da.from_array(arrays["y"], chunks=5)
    return Operands(
        x, y, own(arrays["w"]), own(arrays["q"]), own(arrays["m"]), tuple(arrays["x"].shape)
    )


def in_memory(
    arrays: dict[str, Any], reduction: str, eps: float = 0.0, wrt: tuple[str, ...] = ("logits",)
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    return numpy_backend().value_and_grad(
        arrays["x"],
        arrays["y"],
        weight=arrays["w"],
        pos_weight=arrays["q"],
        mask=arrays["m"],
        label_smoothing=eps,
        reduction=reduction,
        wrt=wrt,
    )


def assert_parity(got: Any, expected: Any, *, ulps: float, scale: Any = None) -> None:
    """|got - expected| <= ulps * eps(dtype) * scale (+ the smallest normal), NaN where NaN;
    ``scale`` defaults to |expected|."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    info = np.finfo(expected.dtype)
    g, e = got.astype(np.float64), expected.astype(np.float64)
    scale = np.abs(e) if scale is None else np.asarray(scale, np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
    finite = np.isfinite(e)
    np.testing.assert_array_equal(g[~finite & ~np.isnan(e)], e[~finite & ~np.isnan(e)])
    bound = ulps * float(info.eps) * np.broadcast_to(scale, e.shape) + float(info.tiny)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf, replaced
        excess = np.where(finite, np.abs(g - e) - bound, 0.0)
    assert (excess <= 0).all(), (
        f"worst excess {excess.max():.3g} at {np.unravel_index(excess.argmax(), e.shape)}"
    )


ULPS = {"float32": 2, "float64": 16}


def summed_scale(arrays: dict[str, Any], reduction: str, eps: float, name: str) -> np.ndarray:
    """The parity scale of a broadcast operand's gradient: the sum over its broadcast of the
    magnitudes of the full-shape gradient (plus the loss's share in a weighted mean's)."""
    key = {"weight": "w", "pos_weight": "q"}[name]
    full = dict(arrays)
    full[key] = np.broadcast_to(arrays[key], SHAPE).copy()
    loss, (grad,) = in_memory(full, reduction, eps, (name,))
    magnitude = np.abs(grad.astype(np.float64))
    if name == "weight" and reduction == "weighted_mean":
        keep = np.ones(SHAPE) if arrays["m"] is None else np.broadcast_to(arrays["m"], SHAPE)
        weights = np.broadcast_to(arrays["w"], SHAPE).astype(np.float64)
        magnitude = magnitude + abs(float(loss)) * keep / max(np.sum(weights * keep), 1e-300)
    return sum_to_shape(magnitude, np.shape(arrays[key]))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_and_every_gradient_match_numpy(dtype: str, reduction: str, layout: str) -> None:
    arrays = data(dtype, layout)
    eps = 0.1 if layout == "columns" else 0.0
    names = ("logits", "targets") + tuple(
        n for n, k in (("weight", "w"), ("pos_weight", "q")) if arrays[k] is not None
    )
    ops = lazy(arrays)
    loss, grads = chunked.value_and_grad(ops, eps, reduction, names)
    alone = chunked.logits_loss(ops, eps, reduction)
    assert isinstance(loss, da.Array) and all(isinstance(g, da.Array) for g in grads)
    assert grads[0].chunks == ops.inputs.chunks and grads[1].chunks == ops.inputs.chunks
    if reduction == "none":
        assert loss.chunks == ops.inputs.chunks
    got_loss, got_alone, *got = dask.compute(loss, alone, *grads)
    expected_loss, expected = in_memory(arrays, reduction, eps, names)
    ulps = ULPS[dtype]
    assert_parity(got_loss, expected_loss, ulps=ulps)
    assert_parity(got_alone, expected_loss, ulps=ulps)
    for name, g, e in zip(names, got, expected):
        own = None if name in ("logits", "targets") else summed_scale(arrays, reduction, eps, name)
        assert_parity(g, e, ulps=ulps, scale=own)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_probs_loss_matches_numpy(dtype: str, reduction: str) -> None:
    arrays = data(dtype, "full")
    p = 1 / (1 + np.exp(-arrays["x"].astype(np.float64)))
    p[0, :3] = (0.0, 1.0, 1e-50)
    arrays["x"] = p.astype(dtype)
    for clamp in (-100.0, -np.inf):
        got = chunked.probs_loss(lazy(arrays), 0.05, reduction, clamp).compute()
        expected = numpy_backend().binary_cross_entropy(
            arrays["x"],
            arrays["y"],
            weight=arrays["w"],
            pos_weight=arrays["q"],
            mask=arrays["m"],
            label_smoothing=0.05,
            reduction=reduction,
            log_clamp=clamp,
        )
        assert_parity(got, expected, ulps=ULPS[dtype])


@pytest.mark.parametrize("layout", ["plain", "columns"])
def test_grad_hess_matches_numpy(layout: str) -> None:
    arrays = data("float32", layout)
    grad, hess = chunked.grad_hess(lazy(arrays))
    assert grad.chunks == hess.chunks == CHUNKS
    expected = numpy_backend().grad_hess(
        arrays["x"], arrays["y"], weight=arrays["w"], pos_weight=arrays["q"]
    )
    for g, e in zip(dask.compute(grad, hess), expected):
        assert_parity(g, e, ulps=2)


@pytest.mark.parametrize("reduction", ["sum", "mean", "weighted_mean", "batch_mean"])
def test_fully_masked_gives_zero_and_a_zero_gradient(reduction: str) -> None:
    arrays = data("float32", "full")
    arrays["m"] = np.zeros(SHAPE, bool)
    arrays["x"][0, 0] = np.nan  # masked out: contributes nothing, not even NaN
    names = ("logits", "targets", "weight", "pos_weight")
    loss, grads = dask.compute(*chunked.value_and_grad(lazy(arrays), 0.0, reduction, names))
    assert float(loss) == 0.0 and loss.dtype == np.float32
    assert all(not np.any(g) for g in grads)
    assert float(chunked.logits_loss(lazy(arrays), 0.0, reduction).compute()) == 0.0


def test_weights_summing_to_zero_give_zero() -> None:
    arrays = data("float64", "plain")
    w = np.ones(SHAPE)
    w[::2] = -1.0
    w[-1] = 0.0  # 18 rows of +1 and 18 of -1
    arrays["w"] = w
    names = ("logits", "weight")
    loss, (g, gw) = dask.compute(*chunked.value_and_grad(lazy(arrays), 0.0, "weighted_mean", names))
    expected_loss, (eg, egw) = in_memory(arrays, "weighted_mean", 0.0, names)
    assert float(loss) == float(expected_loss) == 0.0
    assert not g.any() and not gw.any() and not eg.any() and not egw.any()
    assert float(chunked.logits_loss(lazy(arrays), 0.0, "weighted_mean").compute()) == 0.0


def test_empty_and_zero_d_operands() -> None:
    empty = Operands(
        da.zeros((0, 3), chunks=1), da.zeros((0, 3), chunks=1), None, None, None, (0, 3)
    )
    for reduction in ("sum", "mean", "batch_mean"):
        loss, (grad,) = dask.compute(*chunked.value_and_grad(empty, 0.0, reduction, ("logits",)))
        assert float(loss) == 0.0 and grad.shape == (0, 3)
    x, y = np.float32(1.5), np.float32(1.0)
    zero_d = Operands(da.from_array(x), da.from_array(y), None, None, None, ())
    loss, (grad,) = dask.compute(*chunked.value_and_grad(zero_d, 0.0, "mean", ("logits",)))
    expected, (e_grad,) = numpy_backend().value_and_grad(x, y, reduction="mean", wrt=("logits",))
    assert loss == expected and grad == e_grad and loss.dtype == np.float32


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_non_finite_data_follow_the_spec(reduction: str) -> None:
    arrays = data("float32", "full")
    arrays["x"][1, 2], arrays["x"][2, 3], arrays["x"][3, 4] = np.inf, -np.inf, np.nan
    arrays["y"][1, 2] = 1.0  # loss(+inf, 1) = 0
    arrays["y"][5, 5] = np.nan  # the rule for non-finite data: NaN there
    arrays["w"][5, 5] = 1.0
    arrays["w"][6, 6] = np.inf
    arrays["w"][7, 7], arrays["y"][7, 7] = 0.0, np.inf  # weight 0: a zero coefficient... of NaN
    arrays["m"][8, 8], arrays["y"][8, 8] = False, np.nan  # masked out: nothing
    arrays["m"][5, 5] = arrays["m"][6, 6] = arrays["m"][3, 4] = True
    names = ("logits", "targets", "weight", "pos_weight")
    got_loss, got = dask.compute(*chunked.value_and_grad(lazy(arrays), 0.0, reduction, names))
    expected_loss, expected = in_memory(arrays, reduction, 0.0, names)
    assert_parity(got_loss, expected_loss, ulps=2)
    if reduction == "none":
        assert np.isnan(got_loss[5, 5]) and np.isnan(got_loss[6, 6]) and got_loss[8, 8] == 0
    else:
        assert np.isnan(got_loss)
    for name, g, e in zip(names, got, expected):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e), err_msg=name)
    # (In a weighted mean the infinite weight makes the denominator inf, the factor 0.)
    assert np.isnan(got[0][5, 5]) != (reduction == "weighted_mean") and got[0][8, 8] == 0.0


def test_float64_sum_beyond_the_largest_float_gives_a_finite_mean() -> None:
    x = np.full((6, 4), -1e308)
    y = np.ones((6, 4))
    ops = Operands(
        da.from_array(x, chunks=((1, 2, 3), 4)),
        da.from_array(y, chunks=2),
        None,
        None,
        None,
        x.shape,
    )
    for reduction in ("mean", "weighted_mean"):  # batch_mean's quotient, 4e308, overflows
        loss, (grad,) = dask.compute(*chunked.value_and_grad(ops, 0.0, reduction, ("logits",)))
        expected, (e_grad,) = in_memory(
            {"x": x, "y": y, "w": None, "q": None, "m": None}, reduction
        )
        assert np.isfinite(loss) and loss == expected
        np.testing.assert_array_equal(grad, e_grad)
    assert np.isinf(chunked.logits_loss(ops, 0.0, "sum").compute())


def test_half_precision_rounds_once() -> None:
    arrays = data("float16", "columns")
    loss, grads = chunked.value_and_grad(lazy(arrays), 0.0, "mean", ("logits", "pos_weight"))
    loss, *grads = dask.compute(loss, *grads)
    expected_loss, expected = in_memory(arrays, "mean", 0.0, ("logits", "pos_weight"))
    assert loss.dtype == np.float16
    assert_parity(loss, expected_loss, ulps=1)
    assert_parity(grads[0], expected[0], ulps=1)


def counted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every block task of ``chunked`` (the graph captures the function when built)."""
    calls: list[Any] = []
    original = chunked._block

    def block(task: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(task.form)
        return original(task, *args, **kwargs)

    monkeypatch.setattr(chunked, "_block", block)
    return calls


@pytest.mark.parametrize("layout", ["plain", "full"])
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "none"])
def test_lazy_and_one_task_per_block(
    monkeypatch: pytest.MonkeyPatch, reduction: str, layout: str
) -> None:
    calls = counted(monkeypatch)
    arrays = data("float32", layout)
    names = ("logits",) if arrays["w"] is None else ("logits", "weight", "pos_weight")
    loss, grads = chunked.value_and_grad(lazy(arrays), 0.0, reduction, names)
    assert calls == []  # nothing computed yet
    dask.compute(loss, *grads)
    assert len(calls) == 6  # 3 x 2 blocks, each computed once for the loss and the gradients
    calls.clear()
    chunked.logits_loss(lazy(arrays), 0.0, reduction).compute()
    assert len(calls) == 6


def test_threads_raise_no_floating_point_warning() -> None:
    """The scheduler's threads do not see the caller's errstate: every task sets its own (a
    NumPy warning in a task would be raised here, warnings being errors)."""
    arrays = data("float32", "full")
    arrays["x"][0] = 3e38  # exp overflows, 0 * inf terms appear: all of it in quiet tasks
    arrays["x"][1] = -3e38
    arrays["w"][2] = 3e38
    names = ("logits", "targets", "weight", "pos_weight")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in REDUCTIONS:
            loss, grads = chunked.value_and_grad(lazy(arrays), 0.0, reduction, names)
            loss, *grads = dask.compute(loss, *grads, scheduler="threads", num_workers=2)
            with np.errstate(all="ignore"):
                expected_loss, expected = in_memory(arrays, reduction, 0.0, names)
            assert_parity(loss, expected_loss, ulps=2)
            assert_parity(grads[0], expected[0], ulps=2)


# -- validate=True --------------------------------------------------------------------------


def numpy_error(arrays: dict[str, Any], probs: bool = False) -> str | None:
    function = (
        numpy_backend().binary_cross_entropy
        if probs
        else numpy_backend().binary_cross_entropy_with_logits
    )
    try:
        function(
            arrays["x"],
            arrays["y"],
            weight=arrays["w"],
            pos_weight=arrays["q"],
            mask=arrays["m"],
            validate=True,
        )
    except ValueError as error:
        return str(error)
    return None


def dask_error(arrays: dict[str, Any], probs: bool = False) -> str | None:
    try:
        chunked.validate(lazy(arrays), "probs" if probs else "logits", unit_interval=probs)
    except ValueError as error:
        return str(error)
    return None


def test_validate_finds_the_first_bad_index_in_c_order_across_chunks() -> None:
    arrays = data("float32", "full")
    # (9, 0) lies in the first block, (0, 8) in a later one, and comes first in C order.
    arrays["y"][9, 0] = 2.0
    arrays["y"][0, 8] = -0.5
    arrays["m"][9, 0] = arrays["m"][0, 8] = True
    message = dask_error(arrays)
    assert message == numpy_error(arrays) and message is not None
    assert message.startswith("targets[0, 8] = -0.5 is outside [0, 1]")


@pytest.mark.parametrize(
    "case",
    ["clean", "nan_target", "nan_weight", "inf_pos_weight", "nan_logit", "masked_out", "probs"],
)
def test_validate_raises_the_numpy_backends_error(case: str) -> None:
    arrays = data("float32", "full")
    probs = case == "probs"
    arrays["m"][:] = True
    if case == "nan_target":
        arrays["y"][20, 9] = np.nan
        arrays["y"][30, 1] = 3.0  # NaN is checked first
    elif case == "nan_weight":
        arrays["w"][36, 10] = np.nan
    elif case == "inf_pos_weight":
        arrays["q"][7] = -np.inf
    elif case == "nan_logit":
        arrays["x"][12, 3] = np.nan
    elif case == "masked_out":
        arrays["y"][3, 3] = np.nan
        arrays["m"][3, 3] = False
    elif probs:
        arrays["x"] = (1 / (1 + np.exp(-arrays["x"]))).astype(np.float32)
        arrays["x"][25, 6] = 1.25
    expected = numpy_error(arrays, probs)
    assert dask_error(arrays, probs) == expected
    assert (expected is None) == (case in ("clean", "masked_out"))


# -- through the public API -----------------------------------------------------------------

ALL_NAMES = ("logits", "targets", "weight", "pos_weight")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_the_public_api_takes_dask_arrays_to_the_array_api_backend(reduction: str) -> None:
    arrays = data("float32", "columns")
    ops = lazy(arrays)
    lazy_operands = dict(weight=ops.weight, pos_weight=ops.pos_weight, mask=ops.mask)
    options = dict(label_smoothing=0.1, reduction=reduction)
    x, y = ops.inputs, ops.targets
    assert bce_core.dispatch.resolve_backend(None, (x, y)).name == "array_api"
    loss, grads = bce_core.value_and_grad(x, y, **lazy_operands, **options, wrt=ALL_NAMES)
    alone = bce_core.binary_cross_entropy_with_logits(x, y, **lazy_operands, **options)
    assert all(isinstance(a, da.Array) for a in (loss, alone, *grads))
    assert grads[0].chunks == grads[1].chunks == CHUNKS
    got_loss, got_alone, got = dask.compute(loss, alone, grads)
    expected_loss, expected = in_memory(arrays, reduction, 0.1, ALL_NAMES)
    assert_parity(got_loss, expected_loss, ulps=2)
    assert_parity(got_alone, expected_loss, ulps=2)
    for name, g, e in zip(ALL_NAMES, got, expected):
        own = None if name in ("logits", "targets") else summed_scale(arrays, reduction, 0.1, name)
        assert_parity(g, e, ulps=2, scale=own)


def test_the_public_api_probs_grad_hess_and_validate() -> None:
    arrays = data("float64", "full")
    ops = lazy(arrays)
    p = da.clip(1 / (1 + da.exp(-ops.inputs)), 0, 1)
    got = bce_core.binary_cross_entropy(p, ops.targets, weight=ops.weight, mask=ops.mask)
    expected = numpy_backend().binary_cross_entropy(
        1 / (1 + np.exp(-arrays["x"])), arrays["y"], weight=arrays["w"], mask=arrays["m"]
    )
    assert_parity(got.compute(), expected, ulps=16)
    grad, hess = bce_core.grad_hess(ops.inputs, ops.targets, pos_weight=ops.pos_weight)
    e_grad, e_hess = numpy_backend().grad_hess(arrays["x"], arrays["y"], pos_weight=arrays["q"])
    assert grad.chunks == CHUNKS
    assert_parity(grad.compute(), e_grad, ulps=16)
    assert_parity(hess.compute(), e_hess, ulps=16)
    bad = ops.targets * 1.5
    with pytest.raises(ValueError) as error:
        bce_core.binary_cross_entropy_with_logits(ops.inputs, bad, mask=ops.mask, validate=True)
    with pytest.raises(ValueError) as expected_error:
        numpy_backend().binary_cross_entropy_with_logits(
            arrays["x"], arrays["y"] * 1.5, mask=arrays["m"], validate=True
        )
    assert str(error.value) == str(expected_error.value)


def test_the_public_api_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counted(monkeypatch)
    arrays = data("float32", "full")
    ops = lazy(arrays)
    loss, (grad, grad_w) = bce_core.value_and_grad(
        ops.inputs,
        ops.targets,
        weight=ops.weight,
        mask=ops.mask,
        reduction="weighted_mean",
        wrt=("logits", "weight"),
    )
    assert calls == []
    dask.compute(loss, grad, grad_w)
    assert len(calls) == 6


def test_micro_batches_with_the_global_denominator_add_up_to_the_whole_batch() -> None:
    arrays = data("float32", "full")
    ops = lazy(arrays)
    x, y, w, q, m = ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask
    parts = [slice(0, 10), slice(10, 30), slice(30, None)]  # along the logits' chunks
    for reduction in ("mean", "weighted_mean"):
        total = sum(
            bce_core.local_denominator(x[s], reduction=reduction, mask=m[s], weight=w[s])
            for s in parts
        )
        shards = [
            bce_core.value_and_grad(
                x[s],
                y[s],
                weight=w[s],
                pos_weight=q,
                mask=m[s],
                reduction=reduction,
                denominator=total,
            )
            for s in parts
        ]
        assert all(isinstance(loss, da.Array) for loss, _ in shards)
        (losses, grads) = zip(*dask.compute(shards)[0])
        expected_loss, expected = in_memory(arrays, reduction)
        assert_parity(np.float32(sum(losses)), expected_loss, ulps=4)
        assert_parity(np.concatenate(grads), expected[0], ulps=4)
