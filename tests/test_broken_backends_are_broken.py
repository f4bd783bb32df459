"""Each deliberately wrong backend really has its bug, shown by calling it directly.

So a conformance test that fails one of them cannot pass for another reason, and a suite that
lets one through has missed a real bug.
"""

from __future__ import annotations

import threading
import time

import broken_backends as broken
import numpy as np
import pytest

from bce_numpy.backend import NumpyBackend

RIGHT = NumpyBackend()


def _data(size: int, seed: int = 0, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(size).astype(dtype) * 3, rng.integers(0, 2, size).astype(dtype))


# -- masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_mask_multiplied_after_lets_a_masked_out_value_poison_the_loss(bad: float) -> None:
    x, y = _data(8)
    x[3], y[3] = bad, 0.0  # an infinite loss there: inf * 0 is NaN
    mask = np.ones(8, bool)
    mask[3] = False
    backend = broken.MaskMultipliedAfter()
    right = RIGHT.binary_cross_entropy_with_logits(x, y, mask=mask)
    assert np.isfinite(right)
    assert np.isnan(backend.binary_cross_entropy_with_logits(x, y, mask=mask))
    loss, grad = backend.value_and_grad(x, y, mask=mask)
    assert np.isnan(loss)
    assert np.isnan(grad[3]) == np.isnan(bad)  # d/dx at inf is finite, so 0 after the product
    assert np.isfinite(RIGHT.value_and_grad(x, y, mask=mask)[1]).all()
    # Without a bad value under the mask it agrees with the NumPy backend.
    x[3] = 0.5
    np.testing.assert_allclose(
        backend.binary_cross_entropy_with_logits(x, y, mask=mask),
        RIGHT.binary_cross_entropy_with_logits(x, y, mask=mask),
        rtol=1e-6,
    )


def test_mask_multiplied_after_also_poisons_the_probability_form() -> None:
    p = np.array([0.2, np.nan, 0.7], np.float64)
    y = np.array([0.0, 1.0, 1.0])
    mask = np.array([True, False, True])
    assert np.isfinite(RIGHT.binary_cross_entropy(p, y, mask=mask))
    assert np.isnan(broken.MaskMultipliedAfter().binary_cross_entropy(p, y, mask=mask))


def test_zeroes_masked_in_place_changes_the_callers_logits() -> None:
    x, y = _data(6)
    x[:] = [1.0, 2.0, np.nan, -3.0, 4.0, 5.0]
    before = x.copy()
    mask = np.array([True, True, False, True, False, True])
    loss = broken.ZeroesMaskedInPlace().binary_cross_entropy_with_logits(x, y, mask=mask)
    assert loss == RIGHT.binary_cross_entropy_with_logits(before, y, mask=mask)
    assert x[2] == 0.0 and x[4] == 0.0
    np.testing.assert_array_equal(x[mask], before[mask])
    x[:] = before
    broken.ZeroesMaskedInPlace().value_and_grad(x, y, mask=mask)
    assert x[4] == 0.0


# -- the probability form's clamp --------------------------------------------------------


def test_ignores_log_clamp_always_clamps_at_minus_100() -> None:
    p, y = np.array([0.0, 1e-30]), np.array([1.0, 1.0])
    backend = broken.IgnoresLogClamp()
    for clamp in (float("-inf"), -10.0):
        assert RIGHT.binary_cross_entropy(p, y, log_clamp=clamp, reduction="none")[0] != 100.0
        got = backend.binary_cross_entropy(p, y, log_clamp=clamp, reduction="none")
        np.testing.assert_array_equal(got, RIGHT.binary_cross_entropy(p, y, reduction="none"))
    with pytest.raises(ValueError):
        backend.binary_cross_entropy(p, y, log_clamp=1.0)


# -- sizes -------------------------------------------------------------------------------


def test_wrong_beyond_size_forgets_pos_weight_above_50000_elements() -> None:
    backend = broken.WrongBeyondSize()
    q = np.float32(3.0)
    for size, same in ((broken.LARGE_INPUT, True), (broken.LARGE_INPUT + 1, False)):
        x, y = _data(size)
        assert (
            backend.binary_cross_entropy_with_logits(x, y, pos_weight=q)
            == RIGHT.binary_cross_entropy_with_logits(x, y, pos_weight=q)
        ) == same
        got, want = (
            backend.value_and_grad(x, y, pos_weight=q),
            RIGHT.value_and_grad(x, y, pos_weight=q),
        )
        assert (got[0] == want[0]) == same
        assert np.array_equal(got[1], want[1]) == same


def test_wrong_remainder_drops_the_elements_after_the_last_whole_block() -> None:
    backend = broken.WrongRemainder()
    x, y = _data(2 * backend.block + 100)
    want = RIGHT.binary_cross_entropy_with_logits(x, y, reduction="sum")
    head = RIGHT.binary_cross_entropy_with_logits(x[:-100], y[:-100], reduction="sum")
    got = backend.binary_cross_entropy_with_logits(x, y, reduction="sum")
    assert got != pytest.approx(want, rel=1e-4)
    assert got == pytest.approx(head, rel=1e-5)
    _, grad = backend.value_and_grad(x, y, reduction="sum")
    assert not grad[-100:].any() and RIGHT.value_and_grad(x, y, reduction="sum")[1][-100:].all()
    # One block, or whole blocks only: right.
    for size in (backend.block - 1, 2 * backend.block):
        x, y = _data(size)
        assert backend.binary_cross_entropy_with_logits(x, y) == pytest.approx(
            RIGHT.binary_cross_entropy_with_logits(x, y), rel=1e-6
        )


# -- the caller's arrays -----------------------------------------------------------------


def test_clips_logits_in_place_changes_the_callers_logits() -> None:
    x = np.array([-200.0, -1.0, 0.5, 150.0], np.float32)
    y = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    before = x.copy()
    broken.ClipsLogitsInPlace().binary_cross_entropy_with_logits(x, y)
    assert x[0] == -88.0 and x[3] == 88.0
    np.testing.assert_array_equal(x[1:3], before[1:3])
    x[:] = before
    broken.ClipsLogitsInPlace().value_and_grad(x, y)
    assert x[3] == 88.0


def test_smooths_targets_in_place_is_right_once_and_changes_the_callers_targets() -> None:
    x, y = _data(5)
    before = y.copy()
    backend = broken.SmoothsTargetsInPlace()
    first = backend.binary_cross_entropy_with_logits(x, y, label_smoothing=0.2)
    assert first == pytest.approx(
        float(RIGHT.binary_cross_entropy_with_logits(x, before, label_smoothing=0.2)), rel=1e-6
    )
    np.testing.assert_allclose(y, before * 0.8 + 0.1, rtol=1e-6)
    second = backend.binary_cross_entropy_with_logits(x, y, label_smoothing=0.2)
    assert second != pytest.approx(float(first), rel=1e-4)
    y[:] = before
    backend.value_and_grad(x, y, label_smoothing=0.2)
    assert not np.array_equal(y, before)


# -- threads -----------------------------------------------------------------------------


def test_shared_scratch_buffer_mixes_up_concurrent_calls() -> None:
    backend = broken.SharedScratchBuffer()
    threads = 4
    data = [_data(256, seed) for seed in range(threads)]
    alone = [backend.binary_cross_entropy_with_logits(x, y) for x, y in data]
    assert alone == [RIGHT.binary_cross_entropy_with_logits(x, y) for x, y in data]
    deadline = time.monotonic() + 10.0
    mixed = False
    while not mixed and time.monotonic() < deadline:
        results: list[object] = [None] * threads
        barrier = threading.Barrier(threads)

        def call(i: int) -> None:
            barrier.wait()
            for _ in range(20):
                loss = backend.binary_cross_entropy_with_logits(*data[i])
                if loss != alone[i]:
                    results[i] = loss
                    return

        workers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        mixed = any(r is not None for r in results)
    assert mixed, "concurrent calls never got another call's result"


# -- validation --------------------------------------------------------------------------


def test_validate_changes_result_loses_float64_bits() -> None:
    x, y = _data(64, dtype=np.float64)
    backend = broken.ValidateChangesResult()
    assert backend.binary_cross_entropy_with_logits(x, y) == RIGHT.binary_cross_entropy_with_logits(
        x, y
    )
    got = backend.binary_cross_entropy_with_logits(x, y, validate=True)
    want = RIGHT.binary_cross_entropy_with_logits(x, y, validate=True)
    assert got.dtype == np.float64
    assert abs(got - want) > 1e-12 * abs(want)
    _, grad = backend.value_and_grad(x, y, validate=True)
    assert not np.array_equal(grad, RIGHT.value_and_grad(x, y, validate=True)[1])


# -- torch -------------------------------------------------------------------------------


def test_torch_touches_grad_zeroes_an_accumulated_gradient() -> None:
    torch = pytest.importorskip("torch")
    backend = broken.TorchTouchesGrad()
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    backend.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    accumulated = x.grad.clone()
    assert accumulated.abs().sum() > 0
    backend.binary_cross_entropy_with_logits(x, y, reduction="sum")
    assert torch.equal(x.grad, torch.zeros_like(x))
    # The faithful backend leaves it alone.
    x.grad = accumulated.clone()
    broken.TorchBackend().binary_cross_entropy_with_logits(x, y, reduction="sum")
    assert torch.equal(x.grad, accumulated)
