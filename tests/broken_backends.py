"""Deliberately wrong backends: the conformance suite must fail each one.

Each is the NumPy backend with one realistic bug. ``ClassicFormula`` is the
opposite: a faithful but less accurate implementation (the textbook formula
in the input's precision) that must pass parity with a lower grade.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bce_numpy.backend import NumpyBackend


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
        if reduction == "none" or options.get("mask") is not None or \
                options.get("weight") is not None or options.get("pos_weight") is not None:
            return super().binary_cross_entropy_with_logits(logits, targets, **options)
        total = elements.sum()
        value = {"sum": total, "mean": total / max(elements.size, 1),
                 "batch_mean": total / max(elements.shape[0] if elements.ndim else 1, 1),
                 "weighted_mean": total / max(elements.size, 1)}[reduction]
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
        unweighted = {**options, "weight": None,
                      "wrt": tuple(n for n in _names(options.get("wrt", "logits"))
                                   if n != "weight") or "logits"}
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
                logits, targets, **{**options, "reduction": "sum"})
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
        if x.dtype.itemsize != 2 or options.get("reduction", "mean") != "sum" \
                or options.get("mask") is not None:
            return super().binary_cross_entropy_with_logits(logits, targets, **options)
        elements = super().binary_cross_entropy_with_logits(
            logits, targets, **{**options, "reduction": "none"})
        with np.errstate(all="ignore"):
            return np.cumsum(elements.ravel(), dtype=x.dtype)[-1] if elements.size else \
                np.zeros((), x.dtype)


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
        q = np.asarray(1.0 if options.get("pos_weight") is None else options["pos_weight"],
                       dtype=x.dtype).astype(work)
        w = np.asarray(1.0 if options.get("weight") is None else options["weight"],
                       dtype=x.dtype).astype(work)
        with np.errstate(all="ignore"):
            log_weight = 1 + (q - 1) * y
            elements = (1 - y) * xw + log_weight * (np.log1p(np.exp(-np.abs(xw)))
                                                    + np.maximum(-xw, 0))
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

        reduced = reduce_loss(np.broadcast_to(elements, np.shape(logits)).astype(np.float64),
                              options.get("reduction", "mean"), mask=options.get("mask"),
                              weight=options.get("weight"))
        return np.asarray(reduced.loss).astype(np.asarray(logits).dtype)

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss, grads = super().value_and_grad(logits, targets, **options)
        if options.get("reduction", "mean") != "none" or options.get("mask") is not None or \
                not np.all(np.isfinite(np.asarray(logits, np.float64))):
            return loss, grads
        _, grad = self._classic(logits, targets, options)
        grad = np.broadcast_to(grad, np.shape(logits)).astype(np.asarray(logits).dtype)
        return loss, (grad,) + grads[1:] if isinstance(grads, tuple) else grad


BROKEN = [UnstableSoftplus, PosWeightOnNegatives, WeightMissingFromGradient, MeanIgnoresMask,
          SmoothingTwice, SoftGradientSign, HalfAccumulatedInHalf, WrongDtype, WrongDevice]


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
        # no gradient for weight) or cannot express the call, use the exact backend.
        weights_need_grad = any(isinstance(options.get(k), torch.Tensor) and
                                options[k].requires_grad for k in ("weight", "pos_weight"))
        if (torch.compiler.is_compiling() or options.get("mask") is not None
                or reduction not in ("none", "sum", "mean") or logits.numel() == 0
                or weights_need_grad or not bool(torch.isfinite(logits).all())):
            return exact
        work = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
        eps = options.get("label_smoothing", 0.0)
        y = targets.to(work) * (1 - eps) + eps / 2
        weight, pos_weight = (None if options.get(k) is None else
                              torch.as_tensor(options[k]).to(work)
                              for k in ("weight", "pos_weight"))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.to(work), y, weight=weight, pos_weight=pos_weight, reduction=reduction)
        return loss.to(logits.dtype)
