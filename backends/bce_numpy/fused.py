"""Fused, blocked loss and d loss / d logits for the NumPy backend.

One pass over the data computes the reduced (or elementwise) loss and, when
asked, the gradient with respect to the logits. ``np.nditer`` (buffered,
external loop) hands out blocks of about ``BLOCK_SIZE`` elements in float64,
broadcasting weight, pos_weight and mask and casting each operand per block;
the outputs are written back through the same buffers in the input's dtype.
Nothing input-sized is allocated besides the outputs; sums are taken per block
(pairwise ``np.add.reduce`` in float64) and added with ``math.fsum``. The
spec's rules come from ``bce_core.rules``: the denominator (summed block by
block) and the zero-denominator rule, the smoothing constants, and, in the
exact kernel, the smoothed targets, the zero-coefficient and the mask rules.

Two block kernels:

- ``_fast_block`` for float32, float16 and bfloat16 inputs: one float64
  ``exp`` per element; the rest in float64 except a small float32 correction,
  rounded once into the input's dtype (within 0.62 ULP of exact in float32).
- ``_exact_block`` for float64 inputs, and for any block of the fast kernel
  whose loss is not finite (infinite or NaN operands, logits beyond exp's
  range, overflowing weights): the stable forms of ``kernels`` with the core's
  zero-coefficient and mask rules, the same formulas as the float64 reference.
  Where everything is finite a zero coefficient times a finite value is
  exactly 0, so the fast kernel needs no rule of its own.

Why float64 ``exp``: NumPy's float32 ``exp`` (the only vectorised one on AVX2)
is up to 3.57 units of 2^-24 off in relative terms (exhaustive over
[-104, 0]), which alone would take a tail loss or gradient past the 4-ULP
contract after rounding; float64 ``log``/``log1p`` are scalar libm calls as
slow as ``exp``, so ``log1p(e)`` is not computed with them:

    log1p(e) = 2 atanh(s) = 2 s + tail,   s = e / (2 + e) in [0, 1/3],
    tail = s z R(z), z = s^2,             R: a degree-3 fit, float32

The tail is at most 4% of log1p(e), so float32 (and the fit) cost at most
1.4e-8 of log1p(e) (0.23 units of 2^-24, measured densely). The loss, with
``A = w (1 - y')`` and ``B = w q y'``, is

    loss = A max(x, 0) + B max(-x, 0) + (A + B) log1p(exp(-|x|))

a sum of non-negative terms (targets in [0, 1]). Without pos_weight and label
smoothing, ``A max(x, 0) + B max(-x, 0) = w (max(x, 0) - x y)``: x y is exact
in float64 (x and y carry at most 24 significant bits), so this cheaper form
is also exact to one rounding, and a reduced loss is the sum of three sums of
non-negative terms (max(x, 0) - x y, 2 s, tail), nothing cancelling. The
forward gets ``2 s = 1 / (exp(|x|) + 1/2)``; ``value_and_grad`` gets both
sigmoids from ``F = exp(x)``: ``sigma(-x) = f / (1 + F)``,
``sigma(x) = F sigma(-x)`` with the reduction's factor f (1 / denominator)
folded into the division, then ``s = m / (2 f - m)`` with
``m = min(sigma(x), sigma(-x))``, the grad ``A sigma(x) - B sigma(-x)``.

>>> import numpy as np
>>> from bce_core.arrays import prepare_operands
>>> ops = prepare_operands("logits", np.array([-20.0, 0.0, 20.0], np.float32),
...                        np.array([0.0, 1.0, 1.0], np.float32), weight=None,
...                        pos_weight=None, mask=None)
>>> loss, grad = fused_logits(ops, 0.0, "none", want_grad=True)
>>> loss.dtype, bool(loss[0] == np.float32(2.0611537e-09)), bool(grad[2] == -loss[0])
(dtype('float32'), True, True)
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from bce_core import rules
from bce_core.arrays import NUMPY_OPS, NumpyOps, Operands
from bce_core.rules import zero_safe

from .kernels import LogitParts

#: Elements per block: large enough that NumPy's per-call overhead is small, small enough for L2/L3.
BLOCK_SIZE = 32768

#: Float32 coefficients of R(z) ~ (2 atanh(sqrt z) / sqrt z - 2) / z on [0, 1/9]: a minimax fit
#: of z R(z) (error 9e-9; 2e-8 evaluated in float32 by Horner's rule).
_ATANH_COEFFICIENTS = (
    0.6666641235351562,
    0.4002169966697693,
    0.27999138832092285,
    0.2802446782588959,
)

#: The same polynomial for t = 2 s: s z R(z) = t z' R'(z') with z' = t^2 and c'_i = c_i / (8 4^i)
#: (exact rescalings by powers of two).
_ATANH_COEFFICIENTS_2S = tuple(c / (8.0 * 4.0**i) for i, c in enumerate(_ATANH_COEFFICIENTS))

_ITER_FLAGS = ("external_loop", "buffered", "zerosize_ok")


# -- denominators ---------------------------------------------------------------


class _Lazy(NamedTuple):
    """``values`` broadcast to ``shape``, where ``condition`` (None: everywhere) else
    ``otherwise``: what ``_BlockedSums.total`` is to sum, not yet computed."""

    values: Any
    shape: tuple[int, ...]
    condition: Any = None
    otherwise: float = 0.0


def _total(sums: list[float]) -> float:
    """Exact sum of finite block sums (fsum); plain addition when one is inf or NaN, or when
    the sum is beyond float64 (then inf, for ``rules.finish_total``)."""
    if all(map(math.isfinite, sums)):
        try:
            return math.fsum(sums)
        except OverflowError:
            pass
    return sum(sums)


class _BlockedSums(NumpyOps):
    """NumPy's ops for ``rules.denominator`` without an input-sized temporary: ``broadcast_to``
    and ``where`` (of a broadcast and a number) only record what to sum, and ``total`` sums it
    block by block over the operands' own broadcast, each element counted as often as the full
    shape repeats it, in float64 (pairwise in a block, exactly across blocks)."""

    @staticmethod
    def broadcast_to(array: Any, shape: tuple[int, ...]) -> Any:  # type: ignore[override]
        return _Lazy(array, tuple(shape))

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> Any:  # type: ignore[override]
        return if_true._replace(condition=condition, otherwise=if_false)

    @staticmethod
    def total(array: Any) -> Any:
        if not isinstance(array, _Lazy):
            array = _Lazy(array, np.shape(array))
        operands = [array.values] if array.condition is None else [array.values, array.condition]
        iterator = np.nditer(
            operands,
            flags=list(_ITER_FLAGS),
            op_flags=[["readonly"]] * len(operands),
            op_dtypes=[np.float64, np.bool_][: len(operands)],
            casting="unsafe",
            buffersize=BLOCK_SIZE,
        )
        repeats = math.prod(array.shape) // max(1, iterator.itersize)
        with iterator:
            if array.condition is None:
                sums = [float(np.add.reduce(block)) for block in iterator]
            else:
                sums = [
                    float(np.add.reduce(np.where(keep, block, array.otherwise)))
                    for block, keep in iterator
                ]
        return _total(sums) * repeats

    @staticmethod
    def count(keep: Any, shape: tuple[int, ...], like: Any) -> Any:
        # Broadcasting repeats each element of keep size / keep.size times.
        return int(np.count_nonzero(keep)) * (math.prod(shape) // max(1, np.size(keep)))


_BLOCKED_SUMS = _BlockedSums()


def denominator(ops: Operands, reduction: str) -> float:
    """``rules.denominator`` of the operands (1 for "none"), without materialising the
    broadcast weight or mask.

    >>> from bce_core.arrays import prepare_operands
    >>> ops = prepare_operands("logits", np.zeros((4, 3)), np.zeros((4, 3)),
    ...                        weight=np.full(3, 0.5), pos_weight=None, mask=[True, False, True])
    >>> denominator(ops, "weighted_mean"), denominator(ops, "mean"), denominator(ops, "sum")
    (4.0, 8.0, 1.0)
    """
    return float(
        rules.denominator(
            _BLOCKED_SUMS, reduction, ops.shape, keep=ops.mask, weight=ops.weight, like=None
        )
    )


# -- block kernels --------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _fast_kernel_serves(dtype: np.dtype) -> bool:
    """Whether the fast kernel (float64 arithmetic with a float32 tail) is accurate enough: for a
    float32 working precision (float32, float16, bfloat16, any byte order), not for float64."""
    return rules.working_dtype_name(dtype.name) == "float32"


class _Workspace:
    """Block-sized scratch arrays and constants of one call (never shared between calls)."""

    def __init__(self, size: int, factor: float, want_grad: bool, count: int = 8) -> None:
        # One allocation: the allocator keeps a single large block mapped between calls, where
        # many block-sized ones would be returned to the system and page-faulted in again.
        self.size = size
        memory = np.empty(count * size + (3 * size + 1) // 2)
        self.f64 = list(memory[: count * size].reshape(count, size))
        self.f32 = tuple(memory[count * size :].view(np.float32)[: 3 * size].reshape(3, size))
        # 0-d operands (views of one small array): NumPy takes them a little faster than Python
        # floats, and this runs once per ufunc call.
        constants = np.array([0.0, 1.0, 0.5, factor, 2.0 * factor])
        self.zero, self.one, self.half, self.factor, self.twice_factor = (
            constants[i, ...] for i in range(5)
        )
        # The tail polynomial in s (value_and_grad) or in t = 2 s (the forward).
        polynomial = np.array(
            _ATANH_COEFFICIENTS if want_grad else _ATANH_COEFFICIENTS_2S, np.float32
        )
        self.coefficients = tuple(polynomial[i, ...] for i in range(4))

    def take(self, k: int) -> list[np.ndarray]:
        if k == self.size:
            return self.f64
        return [buffer[:k] for buffer in self.f64]


def _atanh_tail(s: np.ndarray, work: _Workspace) -> np.ndarray:
    """log1p(e) - 2 s = s z R(z) in float32, for s = e / (2 + e) in [0, 1/3] and z = s^2
    (or the same from t = 2 s, with the forward's coefficients).

    log1p(e) = 2 atanh(s) = 2 s + s z R(z); the tail is at most 4% of log1p(e), so its float32
    rounding and the fit stay below 1.4e-8 of log1p(e).
    """
    k = s.shape[0]
    s32, z, r = work.f32 if k == work.size else (b[:k] for b in work.f32)
    c0, c1, c2, c3 = work.coefficients
    np.copyto(s32, s, casting="same_kind")
    np.multiply(s32, s32, out=z)
    np.multiply(z, c3, out=r)
    r += c2
    r *= z
    r += c1
    r *= z
    r += c0
    r *= z
    r *= s32
    return r


def _fast_block(
    work: _Workspace,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    q: np.ndarray | None,
    m: np.ndarray | None,
    eps: float,
    loss_out: np.ndarray | None,
    grad_out: np.ndarray | None,
) -> float:
    """Loss elements (into loss_out, or only summed) and factor * d loss / d x of one block.

    Returns the sum of the loss elements; it is not finite when the block needs the exact
    kernel (an infinite or NaN operand, or a logit above 709 when the gradient is asked for).
    """
    t0, t1, t2, t3, t4, t5, t6, t7 = work.take(x.shape[0])
    log1p_e = t0
    if grad_out is None:
        twice_s = t1
        np.abs(x, out=t0)
        np.exp(t0, out=t0)  # exp(|x|); inf above 709 gives s = 0, as it should
        np.add(t0, work.half, out=twice_s)
        np.divide(work.one, twice_s, out=twice_s)  # 2 s = 2 e / (2 + e) = 1 / (exp(|x|) + 1/2)
        tail = _atanh_tail(twice_s, work)
        if q is None and eps == 0.0 and w is None and m is None and loss_out is None:
            # loss = (max(x, 0) - x y) + 2 s + tail: sums of non-negative terms (targets in
            # [0, 1]); x y is exact in float64 (x, y have at most 24-bit significands).
            part = t4
            np.maximum(x, work.zero, out=part)
            np.multiply(x, y, out=t5, dtype=np.float64)
            np.subtract(part, t5, out=part)
            return (
                float(np.add.reduce(part))
                + float(np.add.reduce(twice_s))
                + float(np.add.reduce(tail, dtype=np.float64))
            )
        np.add(twice_s, tail, out=log1p_e)
    else:
        big, sig_neg, sig_pos, s = t0, t1, t2, t3
        np.exp(x, out=big)  # F = exp(x); inf above 709 (NaN below: exact kernel)
        np.add(big, work.one, out=sig_neg)
        np.divide(work.factor, sig_neg, out=sig_neg)  # factor sigma(-x) = factor / (1 + F)
        np.multiply(big, sig_neg, out=sig_pos)  # factor sigma(x) = F factor sigma(-x)
        small = big
        np.minimum(sig_pos, sig_neg, out=small)  # factor sigma(-|x|) = factor e / (1 + e)
        np.subtract(work.twice_factor, small, out=s)
        np.divide(small, s, out=s)  # s = e / (2 + e)
        tail = _atanh_tail(s, work)
        if q is None and eps == 0.0 and w is None and m is None and loss_out is None:
            part = t4
            np.maximum(x, work.zero, out=part)
            np.multiply(x, y, out=t5)
            np.subtract(part, t5, out=part)
            _plain_grad(work, y, sig_pos, sig_neg, None, grad_out, t7)
            return (
                float(np.add.reduce(part))
                + 2.0 * float(np.add.reduce(s))
                + float(np.add.reduce(tail, dtype=np.float64))
            )
        np.add(s, s, out=log1p_e)
        np.add(log1p_e, tail, out=log1p_e)
    plain = q is None and eps == 0.0
    spare = t1 if grad_out is None else t3  # 2 s or s: no longer needed
    relu = t5
    np.maximum(x, work.zero, out=relu)
    if plain:
        # w (max(x, 0) - x y + log1p(e)), max(x, 0) - x y = (1 - y) max(x, 0) + y max(-x, 0)
        # rounded once (x y is exact).
        part = t4 if loss_out is None else loss_out
        np.multiply(x, y, out=part)
        np.subtract(relu, part, out=part)
        scale = w if m is None else (m if w is None else np.multiply(w, m, out=t6))
        if grad_out is not None:
            _plain_grad(work, y, sig_pos, sig_neg, scale, grad_out, t7)
        np.add(part, log1p_e, out=part)
        if scale is not None:
            np.multiply(part, scale, out=part)
        return float(np.add.reduce(part))
    # General coefficients: A = w (1 - y'), B = w q y' (0 where masked: the mask is a 0/1
    # coefficient here, exact while everything is finite), and
    # loss = A max(x, 0) + B max(-x, 0) + (A + B) log1p(e).
    a, b = t6, t7
    keep, half = rules.smoothing_floats(eps)

    def smooth_into(v: np.ndarray) -> np.ndarray:  # v keep + half, in the buffer it goes to
        out = a if v is a else b
        np.multiply(v, keep, out=out)
        return np.add(out, half, out=out)

    smoothed, _ = rules.smoothed_targets(
        y, eps, affine=smooth_into, complement=lambda v: np.subtract(work.one, v, out=a)
    )
    if smoothed is y:  # no smoothing: b starts as y itself
        np.copyto(b, y)
    if q is not None:
        np.multiply(b, q, out=b)
    for coefficient in (w, m):
        if coefficient is not None:
            np.multiply(a, coefficient, out=a)
            np.multiply(b, coefficient, out=b)
    loss = t4 if loss_out is None else loss_out
    relu_neg = spare
    np.subtract(relu, x, out=relu_neg)  # max(-x, 0), exactly
    np.multiply(a, relu, out=loss)
    np.multiply(relu_neg, b, out=relu_neg)
    np.add(loss, relu_neg, out=loss)
    np.add(a, b, out=relu)
    np.multiply(relu, log1p_e, out=relu)
    np.add(loss, relu, out=loss)
    if grad_out is not None:
        np.multiply(sig_pos, a, out=sig_pos)
        np.multiply(sig_neg, b, out=sig_neg)
        np.subtract(sig_pos, sig_neg, out=grad_out)
    return float(np.add.reduce(loss))


def _plain_grad(
    work: _Workspace,
    y: np.ndarray,
    sig_pos: np.ndarray,
    sig_neg: np.ndarray,
    scale: np.ndarray | None,
    grad_out: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """grad = scale ((1 - y) sigma(x) - y sigma(-x)), the sigmoids already times the factor."""
    np.subtract(work.one, y, out=scratch)
    np.multiply(sig_pos, scratch, out=sig_pos)
    np.multiply(sig_neg, y, out=sig_neg)
    np.subtract(sig_pos, sig_neg, out=grad_out)
    if scale is not None:
        np.multiply(grad_out, scale, out=grad_out)


def _exact_block(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    q: np.ndarray | None,
    m: np.ndarray | None,
    eps: float,
    factor: float,
    loss_out: np.ndarray | None,
    grad_out: np.ndarray | None,
    shift: int,
) -> tuple[float, float]:
    """The reference's formulas on one block, with the core's zero-coefficient and mask rules;
    returns the sum of the loss elements, and that sum times 2**-shift without intermediate
    overflow (``rules.scaled_total``)."""
    y = y.astype(np.float64, copy=False)  # the plain forward passes float32 targets
    yp, one_minus = rules.smoothed_targets(y, eps)
    parts = LogitParts.of(x)
    elements = zero_safe(NUMPY_OPS, w, parts.bracket(yp, one_minus, q))
    kept = rules.reduce_elements(
        NUMPY_OPS, elements, "none", keep=None if m is None else m != 0, weight=None
    )
    if loss_out is not None:
        loss_out[...] = kept.loss
    if grad_out is not None:
        # d(loss)/d(element): the reduction's factor where kept, exactly 0 where masked out.
        scale = zero_safe(NUMPY_OPS, kept.factor, factor)
        grad_out[...] = zero_safe(NUMPY_OPS, scale, parts.slope(yp, one_minus, q, w))
    total = np.add.reduce(kept.loss)
    return float(total), float(rules.scaled_total(NUMPY_OPS, kept.loss, total, shift))


# -- the pass -------------------------------------------------------------------


def fused_logits(
    ops: Operands, eps: float, reduction: str, *, want_grad: bool, block_size: int = BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (reduced, or elementwise for "none") and, if ``want_grad``, d loss / d logits.

    Results have the logits' dtype and follow the reference's semantics exactly: masked-out
    elements contribute 0 (even NaN), a zero denominator gives 0 with a zero gradient.
    """
    x = ops.inputs
    dtype = x.dtype
    size = math.prod(ops.shape)
    elementwise = reduction == "none"
    by = denominator(ops, reduction)
    _, factor = rules.divide_or_zero(NUMPY_OPS, 1.0, by)
    if by == 0.0:  # a zero denominator: nothing to compute, the loss and gradient are 0
        loss = np.zeros(ops.shape if elementwise else (), dtype)
        return loss, (np.zeros(ops.shape, dtype) if want_grad else None)

    loss_elements = np.empty(ops.shape, dtype) if elementwise else None
    grad = np.empty(ops.shape, dtype) if want_grad else None
    # Block tuples hold x, y, then weight, pos_weight, mask, loss, grad where present.
    slots = [ops.weight, ops.pos_weight, ops.mask, loss_elements, grad]
    inputs = [x, ops.targets] + [value for value in slots[:3] if value is not None]
    outputs = [value for value in slots[3:] if value is not None]
    positions = iter(range(2, 2 + len(inputs) + len(outputs)))
    at = [-1 if value is None else next(positions) for value in slots]  # -1: the None below
    fast = _fast_kernel_serves(dtype)
    op_dtypes: list[np.dtype[Any]] = [np.dtype(np.float64)] * (len(inputs) + len(outputs))
    if fast and not want_grad and len(inputs) == 2 and not elementwise and eps == 0.0:
        # The plain forward uses the targets once, in x * y: no need for a float64 copy.
        op_dtypes[1] = np.dtype(np.float32)
    # Equal blocks of about block_size (never a small last one: each block costs ~25 calls).
    block = -(-size // max(1, round(size / block_size))) if size else 1
    iterator = np.nditer(
        inputs + outputs,
        flags=list(_ITER_FLAGS),
        op_flags=[["readonly"]] * len(inputs) + [["writeonly"]] * len(outputs),
        op_dtypes=op_dtypes,
        casting="unsafe",
        buffersize=block,
    )
    work = _Workspace(block, factor, want_grad) if fast else None
    sums: list[float] = []
    scaled: list[float] = []  # the sums times 2**-shift, for a total beyond float64
    shift = rules.overflow_shift(size)
    with iterator:
        for blocks in iterator:
            wb, qb, mb, lb, gb = map((*blocks, None).__getitem__, at)
            total = math.inf
            if work is not None:
                total = _fast_block(work, blocks[0], blocks[1], wb, qb, mb, eps, lb, gb)
                low = total * 2.0**-shift
            if not math.isfinite(total):  # float64 inputs, or inf/NaN/overflow in this block
                total, low = _exact_block(
                    blocks[0], blocks[1], wb, qb, mb, eps, factor, lb, gb, shift
                )
            sums.append(total)
            scaled.append(low)
    if elementwise:
        return loss_elements, grad
    loss = rules.finish_total(
        NUMPY_OPS,
        _total(sums),
        lambda: _total(scaled),
        lambda total: rules.divide_or_zero(NUMPY_OPS, total, by)[0],
        shift,
    )
    return np.asarray(loss).astype(dtype), grad


def supports_fast_path(names: tuple[str, ...]) -> bool:
    """Whether ``value_and_grad(wrt=names)`` is served by the fused pass."""
    return names == ("logits",)


__all__ = ["BLOCK_SIZE", "denominator", "fused_logits", "supports_fast_path"]
