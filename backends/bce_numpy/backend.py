"""The NumPy backend object.

It computes in float64 and rounds once to the input's dtype (float16,
bfloat16 and float32 inputs gain accuracy from this; float64 inputs are
evaluated with the stable forms of ``kernels``). Results are NumPy arrays of
the input's dtype; reduced losses are 0-d arrays.

The logits loss and ``value_and_grad(wrt="logits")`` run as one blocked pass
over the data (``fused``): no input-sized temporaries, loss and gradient from
one exponential per element. The other gradients, ``grad_hess`` and the
probability form use the elementwise forms of ``kernels`` on whole arrays.

>>> import numpy as np
>>> backend = NumpyBackend()
>>> loss = backend.binary_cross_entropy_with_logits(np.array([[9.7], [0.0]], np.float32),
...                                                 np.array([[0.0], [1.0]]))
>>> loss.dtype, round(float(loss), 4)
(dtype('float32'), 5.1966)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bce_core.arrays import (Operands, gradients_of_reduction, prepare_operands,
                             quiet_float_errors, reduce_loss, validate_operands)
from bce_core.spec import (DEFAULT_LOG_CLAMP, PROBS_GRAD_EPS, check_label_smoothing,
                           check_log_clamp, check_reduction, check_wrt, check_wrt_given)

from .fused import BLOCK_SIZE, fused_logits, supports_fast_path
from .kernels import LogitParts, zero_safe

WORKING = np.float64


def _working(ops: Operands, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """x, y', 1 - y', w, q in working precision (w and q are 1.0 when absent)."""
    y = ops.targets.astype(WORKING)
    if eps == 0.0:
        yp, one_minus_yp = y, 1.0 - y
    else:
        # 1 - y' from (1 - y) keeps its relative accuracy when y' is near 1.
        yp, one_minus_yp = y * (1.0 - eps) + eps / 2, (1.0 - y) * (1.0 - eps) + eps / 2
    w = 1.0 if ops.weight is None else ops.weight.astype(WORKING)
    q = 1.0 if ops.pos_weight is None else ops.pos_weight.astype(WORKING)
    return ops.inputs.astype(WORKING), yp, one_minus_yp, w, q


def _cast(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(value).astype(like.dtype)




class NumpyBackend:
    """bce-core's specification on NumPy arrays."""

    name = "numpy"

    def version(self) -> str:
        return np.__version__

    def devices(self) -> list[str]:
        return ["cpu"]

    def asarray(self, array: Any, device: str | None = None) -> np.ndarray:
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r}: the numpy backend has only 'cpu'.")
        return np.asarray(array)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def device_of(self, array: Any) -> str:
        return "cpu"

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """Where the code path changes: the fused pass works in blocks of ``BLOCK_SIZE``.

        >>> NumpyBackend().size_thresholds("cpu")
        (32768,)
        """
        return (BLOCK_SIZE,)

    def _prepare(self, input_name: str, inputs: Any, targets: Any, weight: Any, pos_weight: Any,
                 mask: Any, validate: bool) -> Operands:
        ops = prepare_operands(input_name, inputs, targets, weight=weight, pos_weight=pos_weight,
                               mask=mask)
        if validate:
            validate_operands(ops, input_name, input_in_unit_interval=input_name == "probs")
        return ops

    @quiet_float_errors
    def binary_cross_entropy_with_logits(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        validate: bool = False,
    ) -> np.ndarray:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        loss, _ = fused_logits(ops, eps, reduction, want_grad=False)
        return loss

    @quiet_float_errors
    def binary_cross_entropy(
        self, probs: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        log_clamp: float = DEFAULT_LOG_CLAMP, validate: bool = False,
    ) -> np.ndarray:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        clamp = check_log_clamp(log_clamp)
        ops = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        p, yp, one_minus_yp, w, q = _working(ops, eps)
        with np.errstate(invalid="ignore", divide="ignore"):
            positive = np.maximum(np.log(p), clamp)
            negative = np.maximum(np.log1p(-p), clamp)
        bracket = -(zero_safe(q * yp, positive) + zero_safe(one_minus_yp, negative))
        bracket = np.where((p >= 0) & (p <= 1), bracket, np.nan)  # also where a term was 0
        loss = reduce_loss(zero_safe(w, bracket), reduction, mask=ops.mask, weight=w).loss
        return _cast(loss, ops.inputs)

    @quiet_float_errors
    def value_and_grad(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        validate: bool = False, wrt: str | tuple[str, ...] = "logits",
    ) -> tuple[np.ndarray, Any]:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        names, as_tuple = check_wrt(wrt)
        check_wrt_given(names, weight=weight, pos_weight=pos_weight)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if supports_fast_path(names):
            loss, grad = fused_logits(ops, eps, reduction, want_grad=True)
            return loss, (grad,) if as_tuple else grad
        x, yp, one_minus_yp, w, q = _working(ops, eps)
        parts = LogitParts.of(x)
        sp_pos, sp_neg = parts.softplus_pos, parts.softplus_neg
        bracket = zero_safe(one_minus_yp, sp_pos) + zero_safe(q * yp, sp_neg)
        reduced = reduce_loss(zero_safe(w, bracket), reduction, mask=ops.mask, weight=w)

        def logits_partial() -> np.ndarray:
            sig_pos, sig_neg = parts.sigmoids()
            return zero_safe(w * one_minus_yp, sig_pos) - zero_safe(w * q * yp, sig_neg)

        partials = {
            "logits": logits_partial,
            "targets": lambda: zero_safe(w * (1.0 - eps), zero_safe(q, sp_neg) - sp_pos),
            "weight": lambda: bracket,
            "pos_weight": lambda: zero_safe(w * yp, sp_neg),
        }
        grads = gradients_of_reduction(names, partials, ops, reduction, reduced)
        cast = tuple(_cast(grad, ops.inputs) for grad in grads)  # every operand has x's dtype
        return _cast(reduced.loss, ops.inputs), cast if as_tuple else cast[0]

    @quiet_float_errors
    def grad_hess(self, logits: Any, targets: Any, *, weight: Any = None,
                  pos_weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        ops = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        x, y, one_minus_y, w, q = _working(ops, 0.0)
        sig_pos, sig_neg = LogitParts.of(x).sigmoids()
        grad = zero_safe(w * one_minus_y, sig_pos) - zero_safe(w * q * y, sig_neg)
        hess = w * (one_minus_y + q * y) * sig_pos * sig_neg
        shape = ops.shape
        return (_cast(np.broadcast_to(grad, shape), ops.inputs),
                _cast(np.broadcast_to(hess, shape), ops.inputs))

    # -- optional: the framework's own loss, drawn next to ours by `bce conformance --html` --

    def framework_loss(self, logits: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """The textbook max(x, 0) - x y + log1p(exp(-|x|)) and sigmoid(x) - y, in the input's dtype.

        NumPy has no loss of its own, so this is the formula most code writes by hand:
        elementwise (reduction none), every step rounded to the input's dtype.

        >>> loss, grad = NumpyBackend().framework_loss(np.array([0.0, 20.0], np.float32),
        ...                                            np.array([1.0, 1.0], np.float32))
        >>> loss.dtype.name, grad.tolist()  # at x = 20 sigmoid rounds to 1: the gradient is lost
        ('float32', [-0.5, 0.0])
        """
        x = np.asarray(logits)
        y = np.asarray(targets).astype(x.dtype)
        one = x.dtype.type(1)
        with np.errstate(all="ignore"):  # inf - inf at x = +-inf is part of what is shown
            loss = np.maximum(x, x.dtype.type(0)) - x * y + np.log1p(np.exp(-np.abs(x)))
            grad = one / (one + np.exp(-x)) - y
        return loss.astype(x.dtype), grad.astype(x.dtype)
