"""The Array API backend object.

Every method works on whole arrays of the call's namespace with the standard's
functions only (``kernels``), in float64 where the namespace has it on the
input's device (float16, bfloat16 and float32 inputs gain accuracy from this),
rounding once to the input's dtype. Dask arrays take the blockwise path of
``chunked`` instead: lazy, one pass over the chunks, exact sums across them.
Every rule of the spec (checks, smoothed targets, the zero-coefficient rule,
reductions and their gradients, ``wrt``) is the core's: ``bce_core.rules``
with this backend's ``operands.OPS``.

NumPy arrays, Python numbers and nested lists are accepted next to the
namespace's arrays; a backend made with ``ArrayApiBackend(namespace)`` turns
inputs that are not arrays into arrays of that namespace.

>>> import array_api_strict as xp
>>> backend = ArrayApiBackend()
>>> loss = backend.binary_cross_entropy_with_logits(xp.asarray([[9.7], [0.0]], dtype=xp.float32),
...                                                 xp.asarray([[0.0], [1.0]]))
>>> loss.dtype == xp.float32, round(float(loss), 4)
(True, 5.1966)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from bce_core import rules
from bce_core.arrays import quiet_float_errors, validate_operands
from bce_core.plugin import Backend
from bce_core.rules import Operands, pack_gradients, weight_times, zero_safe
from bce_core.spec import DEFAULT_LOG_CLAMP, check_options

from . import operands
from .kernels import LogitParts, probability_bracket
from .operands import OPS, is_dask, namespace_of, to_numpy

#: The device of Dask arrays (their chunks are NumPy arrays on the CPU).
DASK_DEVICE = "cpu:dask"


def _working(ops: Operands[Any], eps: float) -> tuple[Any, Any, Any, Any, Any]:
    """x, y', 1 - y', w, q in working precision (w and q are None when absent)."""
    x = ops.inputs
    xp = namespace_of(x)
    dtype = working_dtype(xp, x)

    def up(array: Any) -> Any:
        return None if array is None else xp.astype(array, dtype)

    yp, one_minus_yp = rules.smoothed_targets(up(ops.targets), eps)
    return up(x), yp, one_minus_yp, up(ops.weight), up(ops.pos_weight)


def working_dtype(xp: ModuleType, like: Any) -> Any:
    """float64 where the namespace has it on ``like``'s device, else ``like``'s dtype.

    >>> import array_api_strict as xp
    >>> working_dtype(xp, xp.zeros(1, dtype=xp.float32)) == xp.float64
    True
    """
    try:
        info = xp.__array_namespace_info__()
        available = info.dtypes(device=array_api_compat.device(like), kind="real floating")
    except (AttributeError, TypeError, ValueError):  # a namespace before the inspection API
        return getattr(xp, "float64", like.dtype)
    return available.get("float64", like.dtype)


def _cast(value: Any, like: Any) -> Any:
    """A result in the input's dtype (every operand has it), rounded once from working; a
    NumPy result is an array (NumPy's arithmetic makes scalars of 0-d arrays)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return np.asarray(value).astype(like.dtype)
    return namespace_of(value).astype(value, like.dtype)


def _reduce(elements: Any, reduction: str, ops: Operands[Any], w: Any) -> rules.Reduced[Any]:
    return rules.reduce_elements(OPS, elements, reduction, keep=ops.mask, weight=w)


def _chunked() -> ModuleType:
    return importlib.import_module("bce_array_api.chunked")


class ArrayApiBackend(Backend):
    """bce-core's specification on arrays of any Array API namespace: a
    ``bce_core.plugin.Backend``, subclassed so that the contract is checked where it is
    written.

    ``namespace`` (a module or its name, e.g. ``"array_api_strict"``) is where inputs that are
    not arrays (lists, NumPy arrays) go; by default they stay NumPy arrays. Arrays of a
    namespace always stay in it.
    """

    name = "array_api"
    #: The rules' array operations: one object for every namespace (found from the arrays).
    ops = OPS

    def __init__(self, namespace: ModuleType | str | None = None) -> None:
        if isinstance(namespace, str):
            namespace = array_api_compat.array_namespace(
                importlib.import_module(namespace).asarray([0.0])
            )
        self.namespace = namespace
        #: The rules' conversion of arguments, into ``namespace`` for those that are not arrays.
        self.converter = operands.NamespaceConverter(namespace)

    def version(self) -> str:
        """array-api-compat's version (the namespaces' own: ``operands.found_namespaces``)."""
        return str(array_api_compat.__version__)

    def devices(self) -> list[str]:
        """ "cpu" (array-api-strict, the strict reference namespace, where installed, else
        NumPy), "cpu:dask" (Dask arrays) and "cuda:N" (CuPy), as installed and usable here."""
        found = operands.found_namespaces()
        devices = ["cpu"]
        if "dask.array" in found:
            devices.append(DASK_DEVICE)
        if "cupy" in found:
            try:
                import cupy

                devices += [f"cuda:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]
            except Exception:  # no driver or no GPU: CuPy is installed but cannot run here
                pass
        return devices

    def asarray(self, array: Any, device: str | None = None) -> Any:
        """``array`` as an array of the namespace ``device`` names: "cpu" array-api-strict (or
        NumPy, see ``devices``), "cpu:dask" Dask in uneven chunks along the first axis,
        "cuda:N" CuPy."""
        array = np.asarray(array)
        if device in (None, "cpu"):
            # float16 and bfloat16 are not in the standard: those stay NumPy arrays.
            if "array_api_strict" not in operands.found_namespaces() or array.dtype.name in (
                "float16",
                "bfloat16",
            ):
                return array
            import array_api_strict

            return array_api_strict.asarray(array)
        if device == DASK_DEVICE:
            import dask.array as da

            return da.from_array(array, chunks=_uneven_chunks(array.shape))
        if device.startswith("cuda:") and device in self.devices():
            import cupy

            with cupy.cuda.Device(int(device.partition(":")[2])):
                return cupy.asarray(array)
        raise ValueError(f"device={device!r}: the array_api backend has {self.devices()}.")

    def to_numpy(self, array: Any) -> np.ndarray:
        """A NumPy copy (Dask arrays are computed)."""
        return to_numpy(array)

    def device_of(self, array: Any) -> str:
        """The device as ``devices()`` names it."""
        if is_dask(array):
            return DASK_DEVICE
        if array_api_compat.is_cupy_array(array):
            return f"cuda:{array.device.id}"
        if array_api_compat.is_torch_array(array):
            return str(array.device)
        return "cpu"

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """One code path at every size (Dask's chunks are the caller's)."""
        return ()

    def _prepare(
        self,
        input_name: str,
        inputs: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        validate: bool,
    ) -> Operands[Any]:
        ops = operands.prepare(
            self.converter,
            input_name,
            inputs,
            targets,
            weight=weight,
            pos_weight=pos_weight,
            mask=mask,
        )
        if validate:
            unit = input_name == "probs"
            if is_dask(ops.inputs):
                _chunked().validate(ops, input_name, unit_interval=unit)
            else:
                validate_operands(_on_numpy(ops), input_name, input_in_unit_interval=unit)
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
    ) -> Any:
        """The loss from logits, on whole arrays (Dask: blockwise)."""
        options = check_options(
            label_smoothing=label_smoothing, reduction=reduction, validate=validate
        )
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if is_dask(ops.inputs):
            return _chunked().logits_loss(ops, options.eps, options.reduction)
        x, yp, one_minus_yp, w, q = _working(ops, options.eps)
        elements = zero_safe(OPS, w, LogitParts.of(x).bracket(yp, one_minus_yp, q))
        return _cast(_reduce(elements, options.reduction, ops, w).loss, ops.inputs)

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
    ) -> Any:
        """The loss from probabilities, on whole arrays (Dask: blockwise)."""
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
            validate=validate,
        )
        ops = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        if is_dask(ops.inputs):
            return _chunked().probs_loss(ops, options.eps, options.reduction, options.log_clamp)
        p, yp, one_minus_yp, w, q = _working(ops, options.eps)
        bracket = probability_bracket(p, yp, one_minus_yp, q, options.log_clamp)
        elements = zero_safe(OPS, w, bracket)
        return _cast(_reduce(elements, options.reduction, ops, w).loss, ops.inputs)

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
    ) -> tuple[Any, Any]:
        """The loss and its gradients, on whole arrays (Dask: blockwise)."""
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
        if is_dask(ops.inputs):
            loss, grads = _chunked().value_and_grad(ops, eps, reduction, tuple(names))
            return loss, pack_gradients(grads, options.wrt_as_tuple)
        x, yp, one_minus_yp, w, q = _working(ops, eps)
        parts = LogitParts.of(x)
        bracket = parts.bracket(yp, one_minus_yp, q)
        reduced = _reduce(zero_safe(OPS, w, bracket), reduction, ops, w)
        slope = rules.smoothed_target_slope(eps)
        partials = {
            "logits": lambda: parts.slope(yp, one_minus_yp, q, w),
            "targets": lambda: zero_safe(
                OPS,
                weight_times(OPS, w, slope),
                zero_safe(OPS, q, parts.softplus_neg) - parts.softplus_pos,
            ),
            "weight": lambda: bracket,
            "pos_weight": lambda: zero_safe(OPS, weight_times(OPS, w, yp), parts.softplus_neg),
        }
        shapes = {
            "weight": None if ops.weight is None else tuple(ops.weight.shape),
            "pos_weight": None if ops.pos_weight is None else tuple(ops.pos_weight.shape),
        }
        grads = rules.reduction_gradients(
            OPS,
            names,
            partials,
            shape=ops.shape,
            arg_shapes=shapes,
            reduction=reduction,
            reduced=reduced,
        )
        return (
            _cast(reduced.loss, ops.inputs),
            pack_gradients([_cast(g, ops.inputs) for g in grads], options.wrt_as_tuple),
        )

    @quiet_float_errors
    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[Any, Any]:
        """d loss / d x and d2 loss / d x2 per element (no smoothing, mask or reduction)."""
        ops = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        if is_dask(ops.inputs):
            grad, hess = _chunked().grad_hess(ops)
            return grad, hess
        x, y, one_minus_y, w, q = _working(ops, 0.0)
        xp = namespace_of(x)
        parts = LogitParts.of(x)
        sig_pos, sig_neg = parts.sigmoids()
        grad = parts.slope(y, one_minus_y, q, w)
        coefficient = one_minus_y + (y if q is None else q * y)
        hess = zero_safe(OPS, weight_times(OPS, w, coefficient), sig_pos * sig_neg)
        return (
            _cast(xp.broadcast_to(grad, ops.shape), ops.inputs),
            _cast(xp.broadcast_to(hess, ops.shape), ops.inputs),
        )


def _uneven_chunks(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | str:
    """Chunks for the suite's Dask arrays: the first axis in three uneven pieces (so that every
    reduction crosses chunk boundaries), the others whole."""
    if not shape or shape[0] < 3:
        return tuple((d,) for d in shape) if shape else ()
    first = shape[0]
    small = max(1, first // 5)
    middle = max(1, (first - small) // 2 + 1)
    rest = first - small - middle
    pieces = tuple(p for p in (small, middle, rest) if p > 0)
    return (pieces,) + tuple((d,) for d in shape[1:])


def _on_numpy(ops: Operands[Any]) -> Operands[np.ndarray]:
    """NumPy copies of the operands, for the core's data checks (errors as NumPy's)."""

    def copy(array: Any) -> Any:
        return None if array is None else to_numpy(array)

    return Operands(
        to_numpy(ops.inputs),
        to_numpy(ops.targets),
        copy(ops.weight),
        copy(ops.pos_weight),
        copy(ops.mask),
        ops.shape,
    )
