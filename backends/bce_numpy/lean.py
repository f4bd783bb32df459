"""The lean path of the NumPy backend: the logits loss and d loss / d logits of the common call.

It serves float32, float16 and bfloat16 logits with targets of the same shape and no weight,
pos_weight or mask (any label smoothing and reduction), on C-contiguous arrays: few ufunc
calls on whole arrays (in blocks of ``BLOCK_SIZE`` beyond that), each into a preallocated
float64 buffer, every result rounded once into the input's dtype. Anything else takes the
general blocked pass (``fused``), and so does any block whose loss is not finite (infinite
or NaN operands): ``fused._exact_block``, the reference's formulas.

The math, in float64, with F = exp(x) for the gradient and T = exp(|x|) for the loss alone,
e = exp(-|x|), f the reduction's factor (1 / denominator) and A = 1 - y', B = y' (the
smoothed targets):

    f sigma(-x) = f / (1 + F) = N          f sigma(x) = F N = P
    grad        = A P - B N                (a difference only where both terms are present)
    log1p(e)    = 2 s + s z R(z),          s = e / (2 + e) = m / (2 f - m), m = min(P, N)
                                           (2 s = 1 / (T + 1/2) for the loss alone)
    loss        = max(x, 0) - x y + log1p(e)                 (no smoothing: x y is exact)
                = A max(x, 0) + B max(-x, 0) + log1p(e)      (smoothing)

Every term is a sum or product of non-negative float64 values (the exact product x y of two
24-bit significands aside), so the float64 results are within a few units of 2^-53 of exact,
and rounding once gives the float32 contract (at most 4 ULP) with room to spare. R is the
float32 fit of ``fused``; its error is under 1e-8 of log1p(e).

Below ``LOG1P_POLY_MIN`` elements log1p(e) is NumPy's float64 ``log1p`` of e = min(F, 1 / F)
(or of exp(-|x|)): one call, where the tail polynomial is ten; small arrays are all per-call
cost. The exponential: below ``EXP_POLY_MIN`` elements NumPy's float64 ``exp`` (a scalar libm
call, about 10 ns an element, but one ufunc call), the logit clamped to +-708 first; above it
a vectorised 2^p on p = x log2(e), clamped to [-1022, 1023]: p = k + r with k = round(p)
(the 1.5 2^52 shift) and |r| <= 1/2, 2^r from a degree-6 polynomial (relative error 1.9e-9),
2^k from the exponent bits; about 20 ufunc calls that NumPy vectorises, cheaper per element
on large blocks. The clamp leaves the
results correct for every finite logit: where it acts, exp(-|x|) is below 1e-307 and
contributes nothing that survives rounding to float32.

>>> import numpy as np
>>> x = np.array([-20.0, 0.0, 20.0], np.float32)
>>> y = np.array([0.0, 1.0, 1.0], np.float32)
>>> loss, grad = lean_logits(x, y, 0.0, "none", want_grad=True)
>>> loss.dtype, bool(loss[0] == np.float32(2.0611537e-09)), bool(grad[2] == -loss[0])
(dtype('float32'), True, True)
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from bce_core import rules
from bce_core.spec import check_batch_mean

from .fused import _ATANH_COEFFICIENTS, _exact_block, _total

#: Largest block of the lean pass: a call of more elements is cut into equal blocks of at most
#: this many (seven float64 scratch arrays of a block, 1.8 MiB, kept per thread). Large, because
#: each block costs about 50 ufunc calls.
BLOCK_SIZE = 32768

#: From this many elements (in a call, or in one block) log1p(e) is the atanh tail polynomial,
#: and from ``EXP_POLY_MIN`` the exponential is the vectorised polynomial; below them NumPy's
#: ``log1p`` and ``exp`` (fewer ufunc calls, which is what small arrays cost). Measured
#: crossovers on a 2-core x86-64 (AVX2) machine.
LOG1P_POLY_MIN = 512
EXP_POLY_MIN = 4096

#: 2^r on [-1/2, 1/2], degree 6, a relative-error fit (1.9e-9 at most).
_EXP2_COEFFICIENTS = (
    1.0000000005541745,
    0.6931472057374954,
    0.2402264689059333,
    0.0555032877646611,
    0.009618488959713942,
    0.0013399931422330633,
    0.00015345811783628455,
)
_LOG2E = 1.4426950408889634
#: Adding 1.5 * 2^52 rounds a float64 of magnitude below 2^51 to an integer, kept in the
#: low bits of the sum's significand.
_SHIFT = 1.5 * 2.0**52
_SHIFT_BITS = int(np.array(_SHIFT).view(np.int64))
#: Tail coefficients as float64 (the float32 fit of ``fused``, exactly).
_TAIL = tuple(float(np.float32(c)) for c in _ATANH_COEFFICIENTS)

#: Per logits dtype: whether it computes in float32 (float32, float16, bfloat16, native byte
#: order). A dict, because ``dtype.name`` costs microseconds per call.
_SERVED: dict[np.dtype[Any], bool] = {}
_FLOAT32 = np.dtype(np.float32)


def serves(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the lean path takes these operands (the spec's checks already passed).

    >>> serves(np.zeros(3, np.float32), np.zeros(3, np.float32)), serves(np.zeros(3), np.zeros(3))
    (True, False)
    """
    dtype = x.dtype
    served = _SERVED.get(dtype)
    if served is None:
        served = _SERVED[dtype] = (
            dtype.isnative and rules.working_dtype_name(dtype.name) == "float32"
        )
    return served and x.flags.c_contiguous and y.flags.c_contiguous


def _constant(value: float) -> np.ndarray:
    """A read-only 0-d float64 array: NumPy takes it as a ufunc operand in about half the time
    of a Python float, and every call here is a few dozen ufunc calls."""
    array = np.array(value)
    array.flags.writeable = False
    return array


_C = [_constant(c) for c in _EXP2_COEFFICIENTS]
_T = [_constant(c) for c in _TAIL]
_T2 = [_constant(c / (8.0 * 4.0**i)) for i, c in enumerate(_TAIL)]  # the same, in t = 2 s
_ZERO, _HALF, _ONE, _TWO = (_constant(v) for v in (0.0, 0.5, 1.0, 2.0))
_SHIFT_A, _LOG2E_A, _LOW, _HIGH = (_constant(v) for v in (_SHIFT, _LOG2E, -708.0, 708.0))
_EXPONENT_BIAS = np.array(1023 - _SHIFT_BITS, np.int64)
_EXPONENT_SHIFT = np.array(52, np.int64)

add, subtract, multiply, divide = np.add, np.subtract, np.multiply, np.divide
minimum, maximum, copyto = np.minimum, np.maximum, np.copyto


def _exp_into(arg: np.ndarray, out: np.ndarray, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    """exp(arg) into ``out`` by the vectorised polynomial (``t``, ``k``: scratch); arguments
    beyond +-708 are clamped there."""
    np.clip(arg, _LOW, _HIGH, t)
    multiply(t, _LOG2E_A, t)  # p
    add(t, _SHIFT_A, k)
    subtract(k, _SHIFT_A, out)  # round(p), exactly
    subtract(t, out, t)  # r = p - round(p), exactly, |r| <= 1/2
    c = _C
    multiply(t, c[6], out)
    for coefficient in (c[5], c[4], c[3], c[2], c[1]):
        add(out, coefficient, out)
        multiply(out, t, out)
    add(out, c[0], out)
    bits = k.view(np.int64)
    add(bits, _EXPONENT_BIAS, bits)  # the integer round(p) + 1023 ...
    np.left_shift(bits, _EXPONENT_SHIFT, bits)  # ... in the exponent field: 2^round(p)
    multiply(out, k, out)
    return out


def _log1p_into(s: np.ndarray, double: bool, out: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log1p(e) from s = e / (2 + e) (``double``: from t = 2 s), into ``out``:
    s (2 + z R(z)), z = s^2 (t (1 + z' R'(z')), z' = t^2)."""
    c0, c1, c2, c3 = _T2 if double else _T
    multiply(s, s, z)
    multiply(z, c3, out)
    add(out, c2, out)
    multiply(out, z, out)
    add(out, c1, out)
    multiply(out, z, out)
    add(out, c0, out)
    multiply(out, z, out)
    add(out, _ONE if double else _TWO, out)
    multiply(out, s, out)
    return out


def _block(
    work: list[np.ndarray],
    xb: np.ndarray,
    yb: np.ndarray,
    eps: float,
    factor: float,
    loss_out: np.ndarray | None,
    grad_out: np.ndarray | None,
) -> float:
    """One block of float32 logits and targets: loss elements into ``loss_out`` (if given),
    factor * grad into ``grad_out`` (if given); returns the sum of the loss elements (not
    finite: the block needs the exact kernel)."""
    k = xb.shape[0]
    x, y, b0, b1, b2, b3, b4 = work if work[0].shape[0] == k else [w[:k] for w in work]
    # float64 copies first: a ufunc on mixed dtypes casts in its inner loop, about 1 µs more
    # per call on small arrays.
    copyto(x, xb)
    copyto(y, yb)
    libm_exp = k < EXP_POLY_MIN  # fewer calls: NumPy's exp
    libm_log = k < LOG1P_POLY_MIN  # and NumPy's log1p
    if grad_out is None:
        np.abs(x, b0)
        if libm_log:
            np.negative(b0, b0)
            np.exp(b0, b0)  # e = exp(-|x|)
            log1p_e = np.log1p(b0, b0)
        else:
            if libm_exp:
                np.exp(b0, b1)  # T = exp(|x|); inf above 709 gives 2 s = 0, as it should
            else:
                _exp_into(b0, b1, b2, b3)  # T = exp(|x|)
            add(b1, _HALF, b1)
            divide(_ONE, b1, b1)  # 2 s = 1 / (T + 1/2)
            log1p_e = _log1p_into(b1, True, b0, b2)
        loss, spare = b1, b3
    else:
        f = np.array(factor)
        if libm_exp:
            # F = exp(x), clamped as the polynomial is: beyond +-708 the small side is below
            # 1e-307, nothing that survives rounding (unclamped, F = inf would make P NaN).
            np.clip(x, _LOW, _HIGH, b0)
            np.exp(b0, b0)
        else:
            _exp_into(x, b0, b1, b2)  # F = exp(x)
        if libm_log:
            divide(_ONE, b0, b3)
            minimum(b0, b3, out=b3)  # e = exp(-|x|) = min(F, 1 / F)
            log1p_e = np.log1p(b3, b3)
        add(b0, _ONE, b1)
        divide(f, b1, b1)  # N = f sigma(-x) = f / (1 + F)
        multiply(b0, b1, b0)  # P = f sigma(x) = F N
        positive, negative = b0, b1
        if not libm_log:
            minimum(positive, negative, out=b2)  # m = f sigma(-|x|) = f e / (1 + e)
            subtract(np.array(2.0 * factor), b2, b3)
            divide(b2, b3, b2)  # s = e / (2 + e)
            log1p_e = _log1p_into(b2, False, b3, b4)
        loss = b2
        subtract(_ONE, y, b2)
        if eps != 0.0:
            keep, half = (np.array(v) for v in rules.smoothing_floats(eps))
            multiply(b2, keep, b2)
            add(b2, half, b2)  # A = (1 - y)(1 - eps) + eps / 2
            multiply(y, keep, y)
            add(y, half, y)  # B = y (1 - eps) + eps / 2
            coefficient_a = b2
            loss, spare = b0, b1  # free once the gradient is made
        multiply(positive, b2, positive)  # A P
        multiply(negative, y, negative)  # B N
        subtract(positive, negative, grad_out, casting="unsafe")
    if eps == 0.0:
        maximum(x, _ZERO, out=loss)
        multiply(x, y, x)  # x y, exactly
        subtract(loss, x, loss)
    else:
        if grad_out is None:
            keep, half = (np.array(v) for v in rules.smoothing_floats(eps))
            coefficient_a = b2
            subtract(_ONE, y, coefficient_a)
            multiply(coefficient_a, keep, coefficient_a)
            add(coefficient_a, half, coefficient_a)
            multiply(y, keep, y)
            add(y, half, y)
        maximum(x, _ZERO, out=loss)
        subtract(loss, x, spare)  # max(-x, 0), exactly
        multiply(loss, coefficient_a, loss)
        multiply(spare, y, spare)
        add(loss, spare, loss)
    add(loss, log1p_e, loss)
    if loss_out is not None:
        copyto(loss_out, loss, casting="unsafe")
    return float(np.add.reduce(loss))


def lean_logits(
    x: np.ndarray, y: np.ndarray, eps: float, reduction: str, *, want_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (reduced, or elementwise for "none") and, if ``want_grad``, d loss / d logits, for
    operands that ``serves`` accepts (``y`` already in ``x``'s dtype and shape)."""
    dtype, shape, size = x.dtype, x.shape, x.size
    elementwise = reduction == "none"
    if elementwise or reduction == "sum":
        by = 1
    elif reduction == "batch_mean":
        check_batch_mean(shape)
        by = shape[0]
    else:  # mean, and weighted_mean without weights: the count
        by = size
    if by == 0 or size == 0:
        loss = np.zeros(shape if elementwise else (), dtype)
        return loss, (np.zeros(shape, dtype) if want_grad else None)
    factor = 1.0 / by
    if dtype != _FLOAT32:  # float16, bfloat16: exactly widened (results round once from float64)
        x, y = x.astype(_FLOAT32), y.astype(_FLOAT32)
    loss_elements = np.empty(shape, dtype) if elementwise else None
    grad = np.empty(shape, dtype) if want_grad else None
    if len(shape) != 1:
        x, y = x.reshape(-1), y.reshape(-1)
    flat_loss = (
        loss_elements if loss_elements is None or len(shape) == 1 else loss_elements.reshape(-1)
    )
    flat_grad = grad if grad is None or len(shape) == 1 else grad.reshape(-1)
    # Equal blocks (a small last block would cost as many calls as a full one).
    blocks = -(-size // BLOCK_SIZE)
    step = -(-size // blocks)
    work = _workspace(step)
    sums = []
    for start in range(0, size, step):
        end = start + step
        if blocks == 1:
            xb, yb, lb, gb = x, y, flat_loss, flat_grad
        else:
            xb, yb = x[start:end], y[start:end]
            lb = None if flat_loss is None else flat_loss[start:end]
            gb = None if flat_grad is None else flat_grad[start:end]
        total = _block(work, xb, yb, eps, factor, lb, gb)
        if not math.isfinite(total):
            x64, y64 = xb.astype(np.float64), yb.astype(np.float64)
            # (float32 losses: their float64 sum cannot overflow, so no scaled sum is needed)
            total = _exact_block(x64, y64, None, None, None, eps, factor, lb, gb, 1)[0]
        sums.append(total)
    if elementwise:
        return loss_elements, grad  # type: ignore[return-value]
    total = sums[0] if blocks == 1 else _total(sums)
    return np.array(total if by == 1 else total / by, dtype), grad


_local = threading.local()


def _workspace(size: int) -> list[np.ndarray]:
    """Seven float64 scratch arrays of ``size`` elements, kept per thread for the next call of
    that size (they never leave a call)."""
    cached = getattr(_local, "work", None)
    if cached is None or cached[0].shape[0] != size:
        cached = _local.work = list(np.empty((7, size)))
    return cached


__all__ = ["BLOCK_SIZE", "EXP_POLY_MIN", "lean_logits", "serves"]
