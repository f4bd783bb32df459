"""Torch's side of the core's rules: its ``rules.Converter``, its ``rules.ArrayOps``,
the dtype mapping and the devices of operands.

Torch tensors are used as they are; NumPy arrays (bfloat16 from ml_dtypes
included), Python numbers and nested lists are converted onto the input's
device. The dtype, shape and option rules are those of ``bce_core.spec`` and
``bce_core.rules``, so the errors read exactly as the NumPy backend's.

>>> import torch
>>> ops = prepare("logits", torch.zeros(2, 3), [[0, 1, 1]] * 2, weight=None,
...               pos_weight=[1.0, 2.0, 3.0], mask=None)
>>> ops.targets.dtype, ops.pos_weight.dtype, ops.shape
(torch.float32, torch.float32, (2, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bce_core import rules
from bce_core.arrays import (
    as_float_input,
    as_mask,
    as_numpy,
    as_operand,
    validate_operands,
    validation_under_tracing,
)
from bce_core.rules import Operands
from bce_core.spec import check_float_dtype, check_mask_dtype, check_operand_dtype

_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
}


def dtype_name(dtype: torch.dtype) -> str:
    """The NumPy-style name of a torch dtype ("float32", "bfloat16", "int64", ...).

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return _DTYPE_NAMES.get(dtype) or str(dtype).removeprefix("torch.")


_FLOAT_DTYPES: dict[str, torch.dtype] = {
    name: dtype for dtype, name in _DTYPE_NAMES.items() if dtype.is_floating_point
}


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """``rules.working_dtype_name`` as a torch dtype: float32 for float16 and bfloat16.

    >>> working_dtype(torch.bfloat16), working_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return _FLOAT_DTYPES[rules.working_dtype_name(dtype_name(dtype))]


class TorchOps:
    """The array operations of ``bce_core.rules``, for torch tensors (traceable by Dynamo).

    >>> TORCH_OPS.count(torch.tensor([True, False]), (3, 2), torch.zeros((), dtype=torch.float64))
    tensor(3., dtype=torch.float64)
    """

    reshape = staticmethod(torch.reshape)
    zeros_like = staticmethod(torch.zeros_like)

    @staticmethod
    def where(condition: torch.Tensor, if_true: Any, if_false: Any) -> torch.Tensor:
        return torch.where(condition, if_true, if_false)

    @staticmethod
    def total(array: torch.Tensor) -> torch.Tensor:
        return array.sum()

    @staticmethod
    def count(keep: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return keep.expand(shape).sum(dtype=like.dtype)

    @staticmethod
    def broadcast_to(array: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return array if array.shape == shape else array.expand(shape)  # no view when it fits

    @staticmethod
    def sum_axes(array: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        return array.sum(dim=axes)

    @staticmethod
    def cast_like(array: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return array.to(like.dtype)

    @staticmethod
    def unless_finite(
        check: torch.Tensor,
        value: Callable[[torch.Tensor], torch.Tensor],
        otherwise: Callable[[], torch.Tensor],
        *,
        cheap: bool = False,
    ) -> torch.Tensor:
        # Eagerly on the CPU a scalar reads at no cost, so the second sum runs only when needed;
        # on a GPU (no synchronisation) and when traced, a select.
        if check.is_cpu and not transforms_active():
            plain = value(check)
            return plain if math.isfinite(check.item()) else otherwise()
        finite = torch.isfinite(check)
        return torch.where(finite, value(torch.where(finite, check, 0.0)), otherwise())


TORCH_OPS = TorchOps()


def numpy_to_tensor(array: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """A tensor with ``array``'s values and dtype (ml_dtypes bfloat16 becomes torch.bfloat16).

    Shares memory with a writable CPU array, as ``torch.from_numpy`` does; strided
    views stay strided.

    >>> numpy_to_tensor(np.arange(3.0)).tolist()
    [0.0, 1.0, 2.0]
    """
    array = np.asarray(array)
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        array = array.copy()  # torch.from_numpy refuses both
    if array.dtype.name == "bfloat16":  # unknown to torch.from_numpy; reinterpret the bits
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor if device is None else tensor.to(device)


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy array of a tensor's values, on the CPU; bfloat16 as ml_dtypes.bfloat16.

    >>> tensor_to_numpy(torch.tensor([1.5], dtype=torch.bfloat16)).dtype.name
    'bfloat16'
    """
    tensor = tensor.detach().cpu().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        try:
            import ml_dtypes
        except ImportError:  # torch has bfloat16 without ml_dtypes; float32 holds it exactly
            return tensor.float().numpy()
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


#: Integer dtypes allowed for targets, weight and pos_weight (cast to the input's dtype).
_INTEGER_DTYPES = frozenset(
    getattr(torch, name)
    for name in ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    if hasattr(torch, name)
)


def _real_dtype(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype == torch.bool or dtype in _INTEGER_DTYPES


def _on_device(name: str, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.device == device:
        return tensor
    if tensor.ndim == 0 and tensor.device.type == "cpu":
        return tensor.to(device)  # a CPU scalar goes anywhere, as in torch itself
    raise ValueError(
        f"{name} is on {tensor.device} but the input is on {device}; move it with "
        f"{name}.to({str(device)!r})."
    )


def _traced_array(value: Any, device: torch.device | None) -> torch.Tensor | None:
    """Under torch.compile, a NumPy array or list as a tensor (Dynamo cannot read an ndarray's
    dtype, so the NumPy-side checks are skipped and the tensor's dtype is checked instead)."""
    if not tracing():
        return None
    tensor = torch.as_tensor(value)
    return tensor if device is None else tensor.to(device)


def as_input(name: str, value: Any) -> torch.Tensor:
    """The logits or probabilities as a tensor with a floating dtype of the spec."""
    if not isinstance(value, torch.Tensor):
        traced = _traced_array(value, None)
        if traced is None:
            return numpy_to_tensor(as_float_input(name, value))
        value = traced
    check_float_dtype(name, dtype_name(value.dtype))
    return value


def as_operand_tensor(name: str, value: Any, like: torch.Tensor) -> torch.Tensor:
    """targets, weight or pos_weight: float, int or bool, cast to ``like``'s dtype and device."""
    if not isinstance(value, (torch.Tensor, bool, int, float)) and tracing():
        value = _traced_array(value, like.device)
    if isinstance(value, torch.Tensor):
        check_operand_dtype(name, dtype_name(value.dtype), is_real=_real_dtype(value.dtype))
        value = _on_device(name, value, like.device)
        return value if value.dtype == like.dtype else value.to(like.dtype)
    if isinstance(value, (bool, int, float)):  # straight to the dtype: one rounding, as NumPy's
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    array = as_numpy(name, value)
    array = as_operand(name, array, array.dtype)  # the dtype check, with NumPy's message
    return numpy_to_tensor(array, like.device).to(like.dtype)


def as_mask_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    """A boolean mask on ``like``'s device; integer masks are refused, as in NumPy.

    A caller's tensor must already be there (or be a CPU scalar); one made from
    NumPy or Python values is moved.
    """
    if isinstance(value, torch.Tensor):
        mask = value
    else:
        mask = _traced_array(value, None) if tracing() else numpy_to_tensor(as_mask(value))
    check_mask_dtype(dtype_name(mask.dtype))
    if mask.device == like.device:
        return mask
    return _on_device("mask", mask, like.device) if mask is value else mask.to(like.device)


def transforms_active() -> bool:
    """True inside torch.compile, a jit trace, a torch.func transform or a forward-AD level,
    where the eager Functions (which support all of them) must be used."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None)
    if peek is None or peek() is not None:  # unknown torch: assume a transform may be active
        return True
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


class TorchConverter:
    """The ``rules.Converter`` of torch tensors (and of NumPy arrays, lists and numbers)."""

    as_input = staticmethod(as_input)
    as_operand = staticmethod(as_operand_tensor)
    as_mask = staticmethod(as_mask_tensor)

    @staticmethod
    def shape_of(array: torch.Tensor) -> tuple[int, ...]:
        return tuple(array.shape)

    @staticmethod
    def isfinite(array: torch.Tensor) -> Any:
        finite = torch.isfinite(array)
        # Reading the answer costs nothing on the CPU (no device to wait for) and spares the
        # where; traced or transformed code has no answer to read.
        if array.device.type == "cpu" and not transforms_active() and bool(finite.all()):
            return True
        return finite

    @staticmethod
    def nan_where_not(finite: Any, array: torch.Tensor) -> torch.Tensor:
        # The NaN branch is a function of ``array`` so that its gradient reaches it (NaN).
        return torch.where(finite, array, array + float("nan"))


TORCH_CONVERTER = TorchConverter()


def prepare(
    input_name: str, inputs: Any, targets: Any, *, weight: Any, pos_weight: Any, mask: Any
) -> Operands[torch.Tensor]:
    """``rules.prepare_operands`` with torch's converter, every operand on the input's device."""
    return rules.prepare_operands(
        TORCH_CONVERTER,
        input_name,
        inputs,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
    )


def tracing() -> bool:
    """True under torch.compile, TorchScript or a torch.jit trace (no data to look at)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())


_UNDER_TRACING = "torch.compile, torch.jit or a torch.func transform"


class _ValidationUnderCompileError(ValueError, AssertionError):
    """The ValueError of ``validate=True`` under torch.compile. It is an AssertionError too
    only because Dynamo hands an AssertionError raised while it traces to the caller as it is,
    where it would wrap a ValueError in its own error (and report a raise that it traces as
    unsupported under fullgraph=True)."""


@torch.compiler.assume_constant_result  # run by Dynamo itself while it traces, not traced
def _refuse_under_compile() -> bool:
    raise validation_under_tracing(_UNDER_TRACING, _ValidationUnderCompileError)


def validate(ops: Operands[torch.Tensor], input_name: str) -> None:
    """The data checks of ``validate=True``: ``bce_core.arrays.validate_operands`` on NumPy copies.

    Raises ValueError under torch.compile, a jit trace or a torch.func transform,
    where the data cannot be read.
    """
    if torch.compiler.is_compiling():
        _refuse_under_compile()
    if tracing():
        raise validation_under_tracing(_UNDER_TRACING)
    try:
        copies = (
            None if t is None else tensor_to_numpy(t)
            for t in (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask)
        )
        arrays = Operands(*copies, ops.shape)
    except RuntimeError as exc:  # functorch wrappers and fake tensors have no data
        raise validation_under_tracing(_UNDER_TRACING) from exc
    validate_operands(arrays, input_name, input_in_unit_interval=input_name == "probs")
