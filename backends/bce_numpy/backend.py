"""The NumPy backend object.

It computes in float64 and rounds once to the input's dtype (float16,
bfloat16 and float32 inputs gain accuracy from this; float64 inputs are
evaluated with the stable forms of ``kernels``). Results are NumPy arrays of
the input's dtype; reduced losses are 0-d arrays.

The logits loss and ``value_and_grad(wrt="logits")`` of the common call (no
weight, pos_weight or mask; float32, float16 or bfloat16 contiguous arrays)
take the lean pass (``lean``): few ufunc calls into scratch buffers, the
options and operands checked without a detour. Every other logits call runs as
one blocked pass over the data (``fused``). Neither makes input-sized
temporaries; both get loss and gradient from one exponential per element. The
other gradients, ``grad_hess`` and the probability form use the elementwise
forms of ``kernels`` on whole arrays.
Every rule of the spec (checks, smoothed targets, the zero-coefficient rule,
reductions and their gradients, ``wrt``) is the core's: ``bce_core.rules``
through ``bce_core.arrays``.

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

from bce_core import rules
from bce_core.arrays import (
    NUMPY_CONVERTER,
    NUMPY_OPS,
    Operands,
    gradients_of_reduction,
    prepare_operands,
    quiet_float_errors,
    reduce_loss,
    validate_operands,
)
from bce_core.plugin import FrameworkLossBackend
from bce_core.rules import pack_gradients, times, weight_times, zero_safe
from bce_core.spec import DEFAULT_LOG_CLAMP, REDUCTIONS, check_options

from . import lean
from .fused import BLOCK_SIZE, fused_logits, supports_fast_path
from .kernels import LogitParts

#: What every path computes in: float64 serves each dtype's working precision with room to spare.
WORKING = np.float64


def _working(ops: Operands, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """x, y', 1 - y', w, q in working precision (w and q are None when absent)."""
    yp, one_minus_yp = rules.smoothed_targets(ops.targets.astype(WORKING), eps)
    w = None if ops.weight is None else ops.weight.astype(WORKING)
    q = None if ops.pos_weight is None else ops.pos_weight.astype(WORKING)
    return ops.inputs.astype(WORKING), yp, one_minus_yp, w, q


def _lean(ops: Operands) -> bool:
    """Whether the lean path serves these operands: no weight, pos_weight or mask, logits of a
    float32 working precision, contiguous arrays (``lean.serves``)."""
    return (
        ops.weight is None
        and ops.pos_weight is None
        and ops.mask is None
        and lean.serves(ops.inputs, ops.targets)
    )


#: The reductions, for the quick acceptance of the options of the common call.
_REDUCTIONS = frozenset(REDUCTIONS)


def _quick_eps(label_smoothing: Any, reduction: Any) -> float | None:
    """label_smoothing as a float when both options are plain values that ``check_options``
    accepts as they are (a float or int in [0, 1], a reduction's name); else None, and the
    call checks them in full (which raises on a bad one)."""
    if (
        reduction.__class__ is str
        and reduction in _REDUCTIONS
        and label_smoothing.__class__ in (float, int)
        and 0.0 <= label_smoothing <= 1.0
    ):
        return float(label_smoothing)
    return None


def _lean_arrays(logits: Any, targets: Any, weight: Any, pos_weight: Any, mask: Any) -> bool:
    """Whether the call's arrays go to the lean path as they are: NumPy arrays of one dtype and
    shape that ``lean.serves``, nothing else. The spec's dtype and shape checks pass for them
    (a float dtype of the spec for both, equal shapes), so ``prepare_operands`` is skipped; the
    targets must be finite, which leaves the rule for non-finite data nothing to do."""
    return (
        weight is None
        and pos_weight is None
        and mask is None
        and logits.__class__ is np.ndarray
        and targets.__class__ is np.ndarray
        and logits.dtype == targets.dtype
        and logits.shape == targets.shape
        and lean.serves(logits, targets)
        # Non-finite targets take the path that applies the rule for non-finite data.
        and bool(np.isfinite(targets).all())
    )


def _cast(value: Any, like: np.ndarray) -> np.ndarray:
    """A result in the input's dtype (every operand has it), rounded once from float64."""
    return np.asarray(value).astype(like.dtype)


class NumpyBackend(FrameworkLossBackend):
    """bce-core's specification on NumPy arrays: a ``bce_core.plugin.Backend`` (and a
    ``FrameworkLossBackend``), subclassed so that the contract is checked where it is written."""

    name = "numpy"
    #: The rules' array operations and argument conversion, for ``bce_core.parallel``.
    ops = NUMPY_OPS
    converter = NUMPY_CONVERTER

    def version(self) -> str:
        """NumPy's version."""
        return np.__version__

    def devices(self) -> list[str]:
        """Only the CPU."""
        return ["cpu"]

    def asarray(self, array: Any, device: str | None = None) -> np.ndarray:
        """``array`` as a NumPy array; any device but the CPU is a ValueError."""
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r}: the numpy backend has only 'cpu'.")
        return np.asarray(array)

    def to_numpy(self, array: Any) -> np.ndarray:
        """The array itself."""
        return np.asarray(array)

    def device_of(self, array: Any) -> str:
        """Always "cpu"."""
        return "cpu"

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """Where the code path changes: the lean pass switches from NumPy's ``log1p`` and
        ``exp`` to its polynomials at ``lean.LOG1P_POLY_MIN`` and ``lean.EXP_POLY_MIN``
        elements and works in blocks of at most ``lean.BLOCK_SIZE``; the fused pass works in
        blocks of about ``BLOCK_SIZE``.

        >>> NumpyBackend().size_thresholds("cpu")
        (512, 4096, 32768)
        """
        return tuple(sorted({lean.LOG1P_POLY_MIN, lean.EXP_POLY_MIN, lean.BLOCK_SIZE, BLOCK_SIZE}))

    def _prepare(
        self,
        input_name: str,
        inputs: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        validate: bool,
    ) -> Operands:
        ops = prepare_operands(
            input_name, inputs, targets, weight=weight, pos_weight=pos_weight, mask=mask
        )
        if validate:
            validate_operands(ops, input_name, input_in_unit_interval=input_name == "probs")
        return ops

    @quiet_float_errors
    def binary_cross_entropy_with_logits(
        self,
        logits: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
    ) -> np.ndarray:
        """The loss from logits: the lean pass for the common call (``lean``), else one blocked
        pass (``fused``)."""
        if validate is False and _lean_arrays(logits, targets, weight, pos_weight, mask):
            eps = _quick_eps(label_smoothing, reduction)
            if eps is not None:
                return lean.lean_logits(logits, targets, eps, reduction, want_grad=False)[0]
        options = check_options(
            label_smoothing=label_smoothing, reduction=reduction, validate=validate
        )
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if _lean(ops):
            return lean.lean_logits(
                ops.inputs, ops.targets, options.eps, options.reduction, want_grad=False
            )[0]
        loss, _ = fused_logits(ops, options.eps, options.reduction, want_grad=False)
        return loss

    @quiet_float_errors
    def binary_cross_entropy(
        self,
        probs: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        log_clamp: float = DEFAULT_LOG_CLAMP,
        validate: bool = False,
    ) -> np.ndarray:
        """The loss from probabilities, on whole float64 arrays."""
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
            validate=validate,
        )
        ops = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        p, yp, one_minus_yp, w, q = _working(ops, options.eps)
        positive = np.maximum(np.log(p), options.log_clamp)
        negative = np.maximum(np.log1p(-p), options.log_clamp)
        bracket = -(
            zero_safe(NUMPY_OPS, times(q, yp), positive)
            + zero_safe(NUMPY_OPS, one_minus_yp, negative)
        )
        bracket = np.where((p >= 0) & (p <= 1), bracket, np.nan)  # also where a term was 0
        elements = zero_safe(NUMPY_OPS, w, bracket)
        reduced = reduce_loss(elements, options.reduction, mask=ops.mask, weight=w)
        return _cast(reduced.loss, ops.inputs)

    @quiet_float_errors
    def value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
        wrt: str | tuple[str, ...] = "logits",
    ) -> tuple[np.ndarray, Any]:
        """The loss and its gradients: the lean or the fused pass for ``wrt="logits"``, else
        whole arrays."""
        if (
            wrt.__class__ is str
            and wrt == "logits"
            and validate is False
            and _lean_arrays(logits, targets, weight, pos_weight, mask)
        ):
            eps = _quick_eps(label_smoothing, reduction)
            if eps is not None:
                return lean.lean_logits(logits, targets, eps, reduction, want_grad=True)
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            wrt=wrt,
            weight=weight,
            pos_weight=pos_weight,
            validate=validate,
        )
        eps, reduction, names = options.eps, options.reduction, options.wrt
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if supports_fast_path(names):
            if _lean(ops):
                loss, grad = lean.lean_logits(
                    ops.inputs, ops.targets, eps, reduction, want_grad=True
                )
            else:
                loss, grad = fused_logits(ops, eps, reduction, want_grad=True)
            return loss, pack_gradients([grad], options.wrt_as_tuple)
        x, yp, one_minus_yp, w, q = _working(ops, eps)
        parts = LogitParts.of(x)
        sp_pos, sp_neg = parts.softplus_pos, parts.softplus_neg
        bracket = parts.bracket(yp, one_minus_yp, q)
        reduced = reduce_loss(zero_safe(NUMPY_OPS, w, bracket), reduction, mask=ops.mask, weight=w)
        slope = rules.smoothed_target_slope(eps)
        partials = {
            "logits": lambda: parts.slope(yp, one_minus_yp, q, w),
            "targets": lambda: zero_safe(
                NUMPY_OPS,
                weight_times(NUMPY_OPS, w, slope),
                zero_safe(NUMPY_OPS, q, sp_neg) - sp_pos,
            ),
            "weight": lambda: bracket,
            "pos_weight": lambda: zero_safe(NUMPY_OPS, weight_times(NUMPY_OPS, w, yp), sp_neg),
        }
        grads = gradients_of_reduction(names, partials, ops, reduction, reduced)
        return (
            _cast(reduced.loss, ops.inputs),
            pack_gradients([_cast(grad, ops.inputs) for grad in grads], options.wrt_as_tuple),
        )

    @quiet_float_errors
    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """d loss / d x and d2 loss / d x2 per element (no smoothing, mask or reduction)."""
        ops = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        x, y, one_minus_y, w, q = _working(ops, 0.0)
        parts = LogitParts.of(x)
        sig_pos, sig_neg = sigmoids = parts.sigmoids()
        grad = parts.slope(y, one_minus_y, q, w, sigmoids)
        hess = zero_safe(
            NUMPY_OPS, weight_times(NUMPY_OPS, w, one_minus_y + times(q, y)), sig_pos * sig_neg
        )
        return (
            _cast(np.broadcast_to(grad, ops.shape), ops.inputs),
            _cast(np.broadcast_to(hess, ops.shape), ops.inputs),
        )

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
