"""Deliberately wrong backends: the conformance suite must fail each one.

Each is the NumPy backend with one realistic bug. ``ClassicFormula`` is the
opposite: a faithful but less accurate implementation (the textbook formula
in the input's precision) that must pass parity with a lower grade.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bce_core.arrays import Operands, quiet_float_errors
from bce_core.spec import (
    DEFAULT_LOG_CLAMP,
    check_label_smoothing,
    check_log_clamp,
    check_reduction,
    check_wrt,
)
from bce_numpy.backend import NumpyBackend
from bce_numpy.fused import denominator


def _names(wrt: Any) -> tuple[str, ...]:
    return tuple(wrt) if isinstance(wrt, (tuple, list)) else (wrt,)


class UnstableSoftplus(NumpyBackend):
    """softplus as log1p(exp(x)) in the input's precision: overflows for large logits."""

    name = "unstable_softplus"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        x = np.asarray(logits)
        y = np.asarray(targets, np.float32)
        with np.errstate(all="ignore"):
            sp = np.log1p(np.exp(x.astype(np.float32)))
            sp_neg = np.log1p(np.exp(-x.astype(np.float32)))
            elements = (1 - y) * sp + y * sp_neg
        reduction = options.get("reduction", "mean")
        if (
            reduction == "none"
            or options.get("mask") is not None
            or options.get("weight") is not None
            or options.get("pos_weight") is not None
        ):
            return super().binary_cross_entropy_with_logits(logits, targets, **options)
        total = elements.sum()
        value = {
            "sum": total,
            "mean": total / max(elements.size, 1),
            "batch_mean": total / max(elements.shape[0] if elements.ndim else 1, 1),
            "weighted_mean": total / max(elements.size, 1),
        }[reduction]
        return np.asarray(value).astype(x.dtype)


class PosWeightOnNegatives(NumpyBackend):
    """pos_weight multiplies the negative term instead of the positive one."""

    name = "pos_weight_on_negatives"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        q = options.get("pos_weight")
        if q is None:
            return super().binary_cross_entropy_with_logits(logits, targets, **options)
        # Swap the roles: weight the negatives with q by flipping logits and targets.
        y = 1 - np.asarray(targets, np.asarray(logits).dtype)
        return super().binary_cross_entropy_with_logits(-np.asarray(logits), y, **options)


class WeightMissingFromGradient(NumpyBackend):
    """value_and_grad forgets the weight in d loss / d logits."""

    name = "weight_missing_from_gradient"

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss, grads = super().value_and_grad(logits, targets, **options)
        if options.get("weight") is None:
            return loss, grads
        unweighted = {
            **options,
            "weight": None,
            "wrt": tuple(n for n in _names(options.get("wrt", "logits")) if n != "weight")
            or "logits",
        }
        _, plain = super().value_and_grad(logits, targets, **unweighted)
        plain = plain if isinstance(plain, tuple) else (plain,)
        if isinstance(grads, tuple):
            return loss, (plain[0],) + grads[1:]
        return loss, plain[0]


class MeanIgnoresMask(NumpyBackend):
    """The masked mean divides by every element, not by the kept ones."""

    name = "mean_ignores_mask"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        if options.get("reduction", "mean") == "mean" and options.get("mask") is not None:
            total = super().binary_cross_entropy_with_logits(
                logits, targets, **{**options, "reduction": "sum"}
            )
            return np.asarray(total / max(np.asarray(logits).size, 1), total.dtype)
        return super().binary_cross_entropy_with_logits(logits, targets, **options)


class SmoothingTwice(NumpyBackend):
    """Label smoothing applied to targets that were already smoothed."""

    name = "smoothing_twice"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        eps = options.get("label_smoothing", 0.0)
        y = np.asarray(targets, np.float64) * (1 - eps) + eps / 2
        return super().binary_cross_entropy_with_logits(logits, y, **options)


class SoftGradientSign(NumpyBackend):
    """The logits gradient has the wrong sign where the target is soft."""

    name = "soft_gradient_sign"

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss, grads = super().value_and_grad(logits, targets, **options)
        soft = (np.asarray(targets) > 0) & (np.asarray(targets) < 1)
        first = grads[0] if isinstance(grads, tuple) else grads
        flipped = np.where(soft, -first, first)
        return loss, (flipped,) + grads[1:] if isinstance(grads, tuple) else flipped


class HalfAccumulatedInHalf(NumpyBackend):
    """Half-precision sums accumulated one element at a time in half precision."""

    name = "half_accumulated_in_half"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        x = np.asarray(logits)
        if (
            x.dtype.itemsize != 2
            or options.get("reduction", "mean") != "sum"
            or options.get("mask") is not None
        ):
            return super().binary_cross_entropy_with_logits(logits, targets, **options)
        elements = super().binary_cross_entropy_with_logits(
            logits, targets, **{**options, "reduction": "none"}
        )
        with np.errstate(all="ignore"):
            return (
                np.cumsum(elements.ravel(), dtype=x.dtype)[-1]
                if elements.size
                else np.zeros((), x.dtype)
            )


class WrongDtype(NumpyBackend):
    """Reduced float32 losses come back as float64."""

    name = "wrong_dtype"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss = super().binary_cross_entropy_with_logits(logits, targets, **options)
        return loss.astype(np.float64) if loss.dtype == np.float32 else loss


class Elsewhere(np.ndarray):
    """A NumPy array that says it lives on another device."""

    device_name = "accelerator:1"


class WrongDevice(NumpyBackend):
    """Results land on a device other than the inputs'."""

    name = "wrong_device"

    def device_of(self, array: Any) -> str:
        return getattr(array, "device_name", "cpu")

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss = super().binary_cross_entropy_with_logits(logits, targets, **options)
        return np.asarray(loss).view(Elsewhere)


def _keep(ops: Operands) -> np.ndarray:
    return np.broadcast_to(ops.mask, ops.shape).astype(np.float64)


def _reduced(kept: np.ndarray, ops: Operands, reduction: str) -> np.ndarray:
    """Reduce element losses (already masked, in float64) by ``reduction``, in the input's dtype."""
    dtype = ops.inputs.dtype
    if reduction == "none":
        return kept.astype(dtype)
    den = denominator(ops, reduction)
    return np.zeros((), dtype) if den == 0.0 else np.asarray(kept.sum() / den).astype(dtype)


class MaskMultipliedAfter(NumpyBackend):
    """The mask multiplies element losses and gradients computed on every element, instead of
    excluding the masked-out elements: NaN * 0 is NaN (and so is inf * 0), so a NaN or infinite
    logit or target under a False mask poisons the loss and the gradients."""

    name = "mask_multiplied_after"

    @quiet_float_errors
    def binary_cross_entropy_with_logits(
        self,
        logits: Any,
        targets: Any,
        *,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
        **options: Any,
    ) -> Any:
        if mask is None:
            return super().binary_cross_entropy_with_logits(
                logits, targets, reduction=reduction, validate=validate, **options
            )
        reduction = check_reduction(reduction)
        ops = self._prepare(
            "logits",
            logits,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            mask,
            validate,
        )
        elements = super().binary_cross_entropy_with_logits(
            logits, targets, reduction="none", **options
        )
        return _reduced(elements.astype(np.float64) * _keep(ops), ops, reduction)

    @quiet_float_errors
    def binary_cross_entropy(
        self,
        probs: Any,
        targets: Any,
        *,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
        **options: Any,
    ) -> Any:
        if mask is None:
            return super().binary_cross_entropy(
                probs, targets, reduction=reduction, validate=validate, **options
            )
        reduction = check_reduction(reduction)
        ops = self._prepare(
            "probs",
            probs,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            mask,
            validate,
        )
        elements = super().binary_cross_entropy(probs, targets, reduction="none", **options)
        return _reduced(elements.astype(np.float64) * _keep(ops), ops, reduction)

    @quiet_float_errors
    def value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
        wrt: str | tuple[str, ...] = "logits",
        **options: Any,
    ) -> Any:
        # The weight and pos_weight gradients (summed to their shapes) are the right ones.
        loss, grads = super().value_and_grad(
            logits, targets, mask=mask, reduction=reduction, validate=validate, wrt=wrt, **options
        )
        if mask is None:
            return loss, grads
        names, as_tuple = check_wrt(wrt)
        ops = self._prepare(
            "logits",
            logits,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            mask,
            validate,
        )
        loss = self.binary_cross_entropy_with_logits(
            logits, targets, mask=mask, reduction=reduction, **options
        )
        grads = list(grads) if as_tuple else [grads]
        elementwise = tuple(n for n in names if n in ("logits", "targets"))
        if elementwise:
            _, partials = super().value_and_grad(
                logits, targets, reduction="sum", wrt=elementwise, **options
            )
            den = denominator(ops, reduction)
            scale = 0.0 if den == 0.0 else 1.0 / den
            for name, partial in zip(elementwise, partials):
                grads[names.index(name)] = (partial.astype(np.float64) * _keep(ops) * scale).astype(
                    ops.inputs.dtype
                )
        return loss, tuple(grads) if as_tuple else grads[0]


class IgnoresLogClamp(NumpyBackend):
    """The probability form clamps the logarithms at -100 (PyTorch's value) whatever
    ``log_clamp`` says: the argument is checked, then not used."""

    name = "ignores_log_clamp"

    def binary_cross_entropy(
        self, probs: Any, targets: Any, *, log_clamp: float = DEFAULT_LOG_CLAMP, **options: Any
    ) -> Any:
        check_log_clamp(log_clamp)
        return super().binary_cross_entropy(probs, targets, log_clamp=DEFAULT_LOG_CLAMP, **options)


#: Inputs with more elements than this take WrongBeyondSize's large-input path.
LARGE_INPUT = 50_000


class WrongBeyondSize(NumpyBackend):
    """Inputs of more than 50,000 elements take a large-input path that forgets pos_weight (in
    the loss and the logits gradient); smaller inputs are right."""

    name = "wrong_beyond_size"

    def binary_cross_entropy_with_logits(
        self, logits: Any, targets: Any, *, pos_weight: Any = None, **options: Any
    ) -> Any:
        if np.size(logits) > LARGE_INPUT:
            super().binary_cross_entropy_with_logits(
                logits, targets, pos_weight=pos_weight, **options
            )  # the argument checks
            pos_weight = None
        return super().binary_cross_entropy_with_logits(
            logits, targets, pos_weight=pos_weight, **options
        )

    def value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        pos_weight: Any = None,
        wrt: str | tuple[str, ...] = "logits",
        **options: Any,
    ) -> Any:
        loss, grads = super().value_and_grad(
            logits, targets, pos_weight=pos_weight, wrt=wrt, **options
        )
        if np.size(logits) <= LARGE_INPUT or pos_weight is None:
            return loss, grads
        names, as_tuple = check_wrt(wrt)
        loss, fast = super().value_and_grad(logits, targets, wrt="logits", **options)
        grads = list(grads) if as_tuple else [grads]
        if "logits" in names:
            grads[names.index("logits")] = fast
        return loss, tuple(grads) if as_tuple else grads[0]


class WrongRemainder(NumpyBackend):
    """Processes the flattened input in blocks of 4096 elements; for inputs longer than one
    block the loop stops after the last whole block, so the tail (size % 4096 elements) adds
    nothing to the loss and gets a zero logits gradient, while the mean still counts it."""

    name = "wrong_remainder"
    block = 4096

    def _blocked(self, ops: Operands, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Element losses and d(sum)/d logits, block by block (masked-out elements are 0)."""

        def flat(a: Any) -> Any:
            return None if a is None else np.broadcast_to(a, ops.shape).ravel()

        x, y, w, q, m = (
            flat(a) for a in (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask)
        )
        n = x.size
        elements, grad = np.zeros(n, x.dtype), np.zeros(n, x.dtype)
        stop = n if n <= self.block else n - n % self.block
        for start in range(0, stop, self.block):
            s = slice(start, min(start + self.block, stop))
            elements[s], grad[s] = NumpyBackend.value_and_grad(
                self,
                x[s],
                y[s],
                weight=None if w is None else w[s],
                pos_weight=None if q is None else q[s],
                mask=None if m is None else m[s],
                label_smoothing=eps,
                reduction="none",
            )
        return elements.reshape(ops.shape), grad.reshape(ops.shape)

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
    ) -> Any:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        elements, _ = self._blocked(ops, eps)
        return _reduced(elements.astype(np.float64), ops, reduction)

    def value_and_grad(
        self, logits: Any, targets: Any, *, wrt: str | tuple[str, ...] = "logits", **options: Any
    ) -> Any:
        _, grads = super().value_and_grad(logits, targets, wrt=wrt, **options)
        names, as_tuple = check_wrt(wrt)
        eps = check_label_smoothing(options.get("label_smoothing", 0.0))
        reduction = check_reduction(options.get("reduction", "mean"))
        ops = self._prepare(
            "logits",
            logits,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            options.get("mask"),
            False,
        )
        elements, grad = self._blocked(ops, eps)
        loss = _reduced(elements.astype(np.float64), ops, reduction)
        grads = list(grads) if as_tuple else [grads]
        if "logits" in names:
            den = denominator(ops, reduction)
            scale = 0.0 if den == 0.0 else 1.0 / den
            grads[names.index("logits")] = (grad.astype(np.float64) * scale).astype(grad.dtype)
        return loss, tuple(grads) if as_tuple else grads[0]


def _caller_array(value: Any) -> np.ndarray | None:
    """The caller's own NumPy array behind ``value`` when it can be written, else None."""
    return value if isinstance(value, np.ndarray) and value.flags.writeable else None


class ClipsLogitsInPlace(NumpyBackend):
    """Clips the logits to [-88, 88] (float32's exp range) in the caller's array,
    np.clip(x, -88, 88, out=x), before computing: the caller's logits are changed."""

    name = "clips_logits_in_place"

    @staticmethod
    def _clip(logits: Any) -> None:
        x = _caller_array(logits)
        if x is not None:
            np.clip(x, x.dtype.type(-88.0), x.dtype.type(88.0), out=x)

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        self._clip(logits)
        return super().binary_cross_entropy_with_logits(logits, targets, **options)

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        self._clip(logits)
        return super().value_and_grad(logits, targets, **options)


class ZeroesMaskedInPlace(NumpyBackend):
    """Writes 0 into the caller's logits where the mask is False (so that a NaN there cannot
    reach the sum), in place: the numbers are right, the caller's logits are changed."""

    name = "zeroes_masked_in_place"

    def _zero_masked(self, logits: Any, targets: Any, options: dict[str, Any]) -> None:
        ops = self._prepare(
            "logits",
            logits,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            options.get("mask"),
            False,
        )
        x = _caller_array(logits)
        if ops.mask is not None and x is not None:
            np.copyto(x, x.dtype.type(0.0), where=~np.broadcast_to(ops.mask, ops.shape))

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        self._zero_masked(logits, targets, options)
        return super().binary_cross_entropy_with_logits(logits, targets, **options)

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        self._zero_masked(logits, targets, options)
        return super().value_and_grad(logits, targets, **options)


class SmoothsTargetsInPlace(NumpyBackend):
    """Applies label smoothing to the caller's float targets in place (y *= 1 - eps;
    y += eps / 2) and computes with smoothing off: the first call is right, the caller's targets
    are changed (and a second call smooths them again)."""

    name = "smooths_targets_in_place"

    @staticmethod
    def _smooth(targets: Any, options: dict[str, Any]) -> float:
        """Smooth in place if possible; returns the smoothing still to apply."""
        eps = check_label_smoothing(options.get("label_smoothing", 0.0))
        y = _caller_array(targets)
        if eps == 0.0 or y is None or y.dtype.kind != "f":
            return eps
        y *= 1 - eps
        y += eps / 2
        return 0.0

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        eps = self._smooth(targets, options)
        return super().binary_cross_entropy_with_logits(
            logits, targets, **{**options, "label_smoothing": eps}
        )

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        given = check_label_smoothing(options.get("label_smoothing", 0.0))
        eps = self._smooth(targets, options)
        loss, grads = super().value_and_grad(logits, targets, **{**options, "label_smoothing": eps})
        names, as_tuple = check_wrt(options.get("wrt", "logits"))
        if "targets" not in names or eps == given:
            return loss, grads
        grads = list(grads) if as_tuple else [grads]
        at = names.index("targets")  # the chain rule through the smoothing
        grads[at] = (grads[at].astype(np.float64) * (1 - given)).astype(grads[at].dtype)
        return loss, tuple(grads) if as_tuple else grads[0]


class SharedScratchBuffer(NumpyBackend):
    """Element losses go into a scratch buffer kept on the backend object and reused by every
    call, without a lock, and are reduced from there after the denominator is worked out: two
    threads calling at once overwrite each other's elements and get each other's results."""

    name = "shared_scratch_buffer"

    def __init__(self) -> None:
        self._scratch = np.empty(0)

    def binary_cross_entropy_with_logits(
        self, logits: Any, targets: Any, *, reduction: str = "mean", **options: Any
    ) -> Any:
        elements = super().binary_cross_entropy_with_logits(
            logits, targets, reduction="none", **options
        )
        reduction = check_reduction(reduction)
        if self._scratch.size < elements.size:
            self._scratch = np.empty(elements.size)
        scratch = self._scratch[: elements.size]
        np.copyto(scratch, elements.ravel())
        ops = self._prepare(
            "logits",
            logits,
            targets,
            options.get("weight"),
            options.get("pos_weight"),
            options.get("mask"),
            False,
        )
        den = 1.0 if reduction == "none" else denominator(ops, reduction)
        time.sleep(0)  # as any call that releases the GIL here would
        if reduction == "none":
            return scratch.reshape(ops.shape).astype(elements.dtype)
        total = float(np.sum(scratch))
        return np.asarray(0.0 if den == 0.0 else total / den).astype(elements.dtype)


class ValidateChangesResult(NumpyBackend):
    """validate=True scans a float32 copy of float64 logits (half the memory) and then computes
    from that copy: with validation on, float64 inputs lose their low bits (the result still has
    the float64 dtype)."""

    name = "validate_changes_result"

    @staticmethod
    def _checked(logits: Any, validate: bool) -> tuple[Any, Any]:
        x = np.asarray(logits)
        if validate and x.dtype == np.float64:
            return x.astype(np.float32), x.dtype
        return logits, None

    def binary_cross_entropy_with_logits(
        self, logits: Any, targets: Any, *, validate: bool = False, **options: Any
    ) -> Any:
        x, dtype = self._checked(logits, validate)
        loss = super().binary_cross_entropy_with_logits(x, targets, validate=validate, **options)
        return loss if dtype is None else loss.astype(dtype)

    def value_and_grad(
        self, logits: Any, targets: Any, *, validate: bool = False, **options: Any
    ) -> Any:
        x, dtype = self._checked(logits, validate)
        loss, grads = super().value_and_grad(x, targets, validate=validate, **options)
        if dtype is None:
            return loss, grads
        if isinstance(grads, tuple):
            return loss.astype(dtype), tuple(g.astype(dtype) for g in grads)
        return loss.astype(dtype), grads.astype(dtype)


class ClassicFormula(NumpyBackend):
    """The textbook formula in the input's precision: max(x,0) - x*y + log1p(exp(-|x|)) and
    sigma(x) - y. Stable, so it must pass parity; it loses digits in the tails."""

    name = "classic_formula"

    def _classic(self, logits: Any, targets: Any, options: dict[str, Any]) -> tuple[Any, Any]:
        x = np.asarray(logits)
        work = np.float32 if x.dtype.itemsize <= 4 else np.float64
        xw = x.astype(work)
        eps = options.get("label_smoothing", 0.0)
        y = np.asarray(targets).astype(x.dtype).astype(work) * (1 - eps) + eps / 2
        q = np.asarray(
            1.0 if options.get("pos_weight") is None else options["pos_weight"], dtype=x.dtype
        ).astype(work)
        w = np.asarray(
            1.0 if options.get("weight") is None else options["weight"], dtype=x.dtype
        ).astype(work)
        with np.errstate(all="ignore"):
            log_weight = 1 + (q - 1) * y
            elements = (1 - y) * xw + log_weight * (
                np.log1p(np.exp(-np.abs(xw))) + np.maximum(-xw, 0)
            )
            sig = 1 / (1 + np.exp(-xw))
            grad = log_weight * sig - q * y  # d/dx of the line above, simplified
        return w * elements, w * grad

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        checked = super().binary_cross_entropy_with_logits(logits, targets, **options)  # errors
        if not np.all(np.isfinite(np.asarray(logits, np.float64))):
            return checked
        elements, _ = self._classic(logits, targets, options)
        # Reduce with the spec's plumbing: only the element formula is classic.
        from bce_core.arrays import reduce_loss

        reduced = reduce_loss(
            np.broadcast_to(elements, np.shape(logits)).astype(np.float64),
            options.get("reduction", "mean"),
            mask=options.get("mask"),
            weight=options.get("weight"),
        )
        return np.asarray(reduced.loss).astype(np.asarray(logits).dtype)

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss, grads = super().value_and_grad(logits, targets, **options)
        if (
            options.get("reduction", "mean") != "none"
            or options.get("mask") is not None
            or not np.all(np.isfinite(np.asarray(logits, np.float64)))
        ):
            return loss, grads
        names = _names(options.get("wrt", "logits"))
        if "logits" not in names:
            return loss, grads
        _, grad = self._classic(logits, targets, options)
        grad = np.broadcast_to(grad, np.shape(logits)).astype(np.asarray(logits).dtype)
        if not isinstance(grads, tuple):
            return loss, grad
        where = names.index("logits")
        return loss, grads[:where] + (grad,) + grads[where + 1 :]


BROKEN = [
    UnstableSoftplus,
    PosWeightOnNegatives,
    WeightMissingFromGradient,
    MeanIgnoresMask,
    SmoothingTwice,
    SoftGradientSign,
    HalfAccumulatedInHalf,
    WrongDtype,
    WrongDevice,
    MaskMultipliedAfter,
    IgnoresLogClamp,
    WrongBeyondSize,
    WrongRemainder,
    ClipsLogitsInPlace,
    ZeroesMaskedInPlace,
    SmoothsTargetsInPlace,
    SharedScratchBuffer,
    ValidateChangesResult,
]


try:
    import torch

    from bce_torch.backend import TorchBackend
except ImportError:  # the PyTorch wrapper below needs torch
    torch = None
    TorchBackend = object


class TorchBuiltin(TorchBackend):  # type: ignore[misc, valid-type]
    """PyTorch's own binary_cross_entropy_with_logits wherever it can express the call (finite
    logits, no mask, its three reductions); the exact backend elsewhere. Faithful, so it must
    pass parity; PyTorch loses the tails, so it must not be graded A."""

    name = "torch_builtin"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        exact = super().binary_cross_entropy_with_logits(logits, targets, **options)  # checks
        reduction = options.get("reduction", "mean")
        # Where PyTorch departs from the spec (NaN for an empty mean, NaN at infinite logits,
        # a finite second derivative for NaN targets, no gradient for weight) or cannot express
        # the call, use the exact backend.
        work = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
        weights_need_grad = any(
            isinstance(options.get(k), torch.Tensor) and options[k].requires_grad
            for k in ("weight", "pos_weight")
        )
        if (
            torch.compiler.is_compiling()
            or options.get("mask") is not None
            or reduction not in ("none", "sum", "mean")
            or logits.numel() == 0
            or weights_need_grad
            or not bool(torch.isfinite(logits).all())
            or not bool(torch.isfinite(torch.as_tensor(targets, dtype=work)).all())
        ):
            return exact
        eps = options.get("label_smoothing", 0.0)
        y = targets.to(work) * (1 - eps) + eps / 2
        weight, pos_weight = (
            None if options.get(k) is None else torch.as_tensor(options[k]).to(work)
            for k in ("weight", "pos_weight")
        )
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.to(work), y, weight=weight, pos_weight=pos_weight, reduction=reduction
        )
        return loss.to(logits.dtype)


class TorchTouchesGrad(TorchBackend):  # type: ignore[misc, valid-type]
    """The forward "resets stale gradients": it zeroes the .grad of a logits leaf
    (logits.grad.zero_()), which a forward must never touch; gradients accumulated over several
    backward passes before an optimiser step are lost."""

    name = "torch_touches_grad"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        if (
            isinstance(logits, torch.Tensor)
            and not torch.compiler.is_compiling()
            and logits.is_leaf
            and logits.grad is not None
        ):
            logits.grad.zero_()
        return super().binary_cross_entropy_with_logits(logits, targets, **options)


#: Wrong backends that need torch (empty without it).
BROKEN_TORCH = [TorchTouchesGrad] if torch is not None else []
