"""Any Array API namespace's side of the core's rules: its ``rules.Converter``, its
``rules.ArrayOps``, dtype names, devices, and the namespaces installed here.

A call's namespace is the logits' (``array_api_compat.array_namespace``); the
other operands are converted into it on the logits' device. NumPy arrays,
Python numbers and nested lists are read through NumPy with the core's checks
(``bce_core.arrays``) and then moved into the namespace, so every error reads
exactly as the NumPy backend's. Nothing here is outside the standard.

>>> import array_api_strict as xp
>>> ops = prepare(NamespaceConverter(), "logits", xp.zeros((2, 3)), [[0, 1, 1]] * 2,
...               weight=None, pos_weight=[1.0, 2.0, 3.0], mask=None)
>>> dtype_name(ops.targets.dtype), dtype_name(ops.pos_weight.dtype), ops.shape
('float64', 'float64', (2, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from bce_core import rules
from bce_core.arrays import as_float_input, as_mask, as_numpy, as_operand
from bce_core.rules import Operands
from bce_core.spec import check_float_dtype, check_mask_dtype, check_operand_dtype

from .plugin import found_namespaces

#: NumPy's standard namespace (array-api-compat's wrapper of NumPy).
_NUMPY = array_api_compat.array_namespace(np.zeros(0))

__all__ = [
    "OPS",
    "NamespaceConverter",
    "NamespaceOps",
    "dtype_name",
    "found_namespaces",
    "is_array",
    "is_dask",
    "is_lazy",
    "namespace_of",
    "prepare",
    "to_numpy",
]

#: The dtype names the spec's checks know, looked up in a namespace by name (the standard names
#: its dtypes; float16 and bfloat16 exist only in some namespaces).
_DTYPE_NAMES = (
    "float32", "float64", "float16", "bfloat16", "bool", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "complex64", "complex128",
)  # fmt: skip
_REAL = frozenset(_DTYPE_NAMES[:-2])


def namespace_of(array: Any) -> ModuleType:
    """The standard namespace of an array (``array_api_compat.array_namespace``); NumPy's for a
    NumPy scalar (NumPy's arithmetic on 0-d arrays returns those)."""
    if isinstance(array, np.generic):
        return _NUMPY
    return array_api_compat.array_namespace(array)


def is_array(value: Any) -> bool:
    """Whether ``value`` is an array of some namespace (NumPy's included)."""
    return bool(array_api_compat.is_array_api_obj(value)) and not isinstance(value, np.generic)


def is_lazy(array: Any) -> bool:
    """Whether the array's values cannot be read without computing a graph (Dask, a JAX
    tracer, ndonnx): rules then select rather than branch on data."""
    return bool(array_api_compat.is_lazy_array(array))


def is_dask(array: Any) -> bool:
    """Whether ``array`` is a Dask array (``chunked`` computes those)."""
    return bool(array_api_compat.is_dask_array(array))


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of an array of any namespace.

    >>> import array_api_strict as xp
    >>> to_numpy(xp.asarray([1.5])).tolist()
    [1.5]
    """
    if is_dask(array):
        return np.asarray(array.compute())
    if array_api_compat.is_cupy_array(array):
        return np.asarray(array.get())
    if array_api_compat.is_torch_array(array):
        return np.asarray(array.detach().cpu().numpy())
    if isinstance(array, np.ndarray) or array_api_compat.is_jax_array(array):
        return np.asarray(array)
    return np.from_dlpack(array)


def dtype_name(dtype: Any) -> str:
    """The spec's name of a namespace's dtype ("float32", "bool", ...).

    >>> import array_api_strict as xp
    >>> dtype_name(xp.float32), dtype_name(np.dtype("int8"))
    ('float32', 'int8')
    """
    if isinstance(dtype, np.dtype):
        return dtype.name
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    text = str(dtype)
    return text.rpartition(".")[2] if text.rpartition(".")[2] in _DTYPE_NAMES else text


def _namespace_name(xp: ModuleType) -> str:
    return xp.__name__.removeprefix("array_api_compat.")


def _readable_by_numpy(value: Any) -> bool:
    """Whether an operand of another namespace joins a NumPy input as a NumPy copy: NumPy is
    the interchange format, and an eager CPU array converts without a device transfer (torch
    and JAX arrays are left to the error: a copy would cut them off from autodiff)."""
    if is_lazy(value) or array_api_compat.is_torch_array(value):
        return False
    return (
        not array_api_compat.is_jax_array(value)
        and "cpu" in str(array_api_compat.device(value)).lower()
    )


def _same_namespace(name: str, value: Any, like: Any) -> None:
    """A TypeError where an operand is an array of another namespace than the input's."""
    if not isinstance(value, np.ndarray) and namespace_of(value) is not namespace_of(like):
        theirs, ours = _namespace_name(namespace_of(value)), _namespace_name(namespace_of(like))
        raise TypeError(
            f"{name} is an array of {theirs} but the input is an array of {ours}; convert it "
            f"with {ours}.asarray (through NumPy, or with from_dlpack) so that every array of "
            f"the call is of one namespace."
        )


def _on_device(name: str, array: Any, like: Any) -> Any:
    where, wanted = array_api_compat.device(array), array_api_compat.device(like)
    if where == wanted or where is None or wanted is None:  # None: not known while tracing
        return array
    if array.ndim == 0:  # a scalar goes anywhere, as in torch and CuPy
        return array_api_compat.to_device(array, wanted)
    raise ValueError(
        f"{name} is on {where} but the input is on {wanted}; move it there with "
        f"array_api_compat.to_device({name}, device(input))."
    )


def _into(xp: ModuleType, array: np.ndarray, like: Any) -> Any:
    """A NumPy array as an array of ``xp`` on ``like``'s device, in ``like``'s dtype."""
    if array_api_compat.is_numpy_namespace(xp):
        return np.asarray(array, dtype=like.dtype)
    return xp.asarray(array, dtype=like.dtype, device=array_api_compat.device(like))


class NamespaceConverter:
    """The ``rules.Converter`` of arrays of any namespace; inputs that are not arrays (lists,
    numbers) become arrays of ``default`` (the NumPy namespace when None).

    >>> import array_api_strict as xp
    >>> converter = NamespaceConverter(xp)
    >>> dtype_name(converter.as_input("logits", [0.5, 1.0]).dtype)
    'float64'
    """

    def __init__(self, default: ModuleType | None = None) -> None:
        self.default = default
        #: Whether inputs that are not arrays become Dask arrays (then ``chunked`` computes).
        self.makes_dask = default is not None and bool(array_api_compat.is_dask_namespace(default))

    def as_input(self, name: str, value: Any) -> Any:
        if is_array(value) and not isinstance(value, np.ndarray):
            check_float_dtype(name, dtype_name(value.dtype))
            return value
        array = as_float_input(name, value)
        if self.default is None or array_api_compat.is_numpy_namespace(self.default):
            return array
        return self.default.asarray(array)

    @staticmethod
    def as_operand(name: str, value: Any, like: Any) -> Any:
        xp = namespace_of(like)
        if is_array(value) and not isinstance(value, np.ndarray):
            if isinstance(like, np.ndarray) and _readable_by_numpy(value):
                value = to_numpy(value)
        if is_array(value) and not isinstance(value, np.ndarray):
            _same_namespace(name, value, like)
            own = dtype_name(value.dtype)
            check_operand_dtype(name, own, is_real=own in _REAL)
            value = _on_device(name, value, like)
            return value if value.dtype == like.dtype else xp.astype(value, like.dtype)
        if isinstance(value, (bool, int, float)):  # straight to the dtype: one rounding
            return _into(xp, np.asarray(value, dtype=np.float64), like)
        array = as_numpy(name, value)
        array = as_operand(name, array, array.dtype)  # the dtype check, with NumPy's message
        return _into(xp, array, like)

    @staticmethod
    def as_mask(value: Any, like: Any) -> Any:
        xp = namespace_of(like)
        if is_array(value) and not isinstance(value, np.ndarray):
            if isinstance(like, np.ndarray) and _readable_by_numpy(value):
                value = to_numpy(value)
        if is_array(value) and not isinstance(value, np.ndarray):
            _same_namespace("mask", value, like)
            check_mask_dtype(dtype_name(value.dtype))
            return _on_device("mask", value, like)
        mask = as_mask(value)
        if array_api_compat.is_numpy_namespace(xp):
            return mask
        return xp.asarray(mask, device=array_api_compat.device(like))

    @staticmethod
    def shape_of(array: Any) -> tuple[int, ...]:
        shape = tuple(array.shape)
        if any(d is None or (isinstance(d, float) and math.isnan(d)) for d in shape):
            raise ValueError(
                f"an array of shape {shape} has dimensions of unknown size; the loss needs "
                f"them: compute them first (Dask: array.compute_chunk_sizes())."
            )
        return shape

    @staticmethod
    def isfinite(array: Any) -> Any:
        xp = namespace_of(array)
        finite = xp.isfinite(array)
        if not is_lazy(finite) and bool(xp.all(finite)):
            return True
        return finite

    @staticmethod
    def nan_where_not(finite: Any, array: Any) -> Any:
        return namespace_of(array).where(finite, array, math.nan)


def _xp(*values: Any) -> ModuleType:
    """The namespace of the arrays among ``values`` (Python numbers are left out, NumPy scalars
    are NumPy's)."""
    arrays = [v for v in values if not isinstance(v, (bool, int, float, np.generic))]
    return array_api_compat.array_namespace(*arrays) if arrays else _NUMPY


def _array(value: Any) -> Any:
    """A 0-d NumPy array for a NumPy scalar: the rules take a Python float (which NumPy's
    float64 scalar is) for a denominator known without the data."""
    return np.asarray(value) if isinstance(value, np.generic) else value


class NamespaceOps:
    """The ``rules.ArrayOps`` of any namespace, found from the arguments on each call."""

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> Any:
        return _xp(condition, if_true, if_false).where(condition, if_true, if_false)

    @staticmethod
    def broadcast_to(array: Any, shape: tuple[int, ...]) -> Any:
        return _xp(array).broadcast_to(array, shape)

    @staticmethod
    def reshape(array: Any, shape: tuple[int, ...]) -> Any:
        return _xp(array).reshape(array, shape)

    @staticmethod
    def zeros_like(array: Any) -> Any:
        return _xp(array).zeros_like(array)

    @staticmethod
    def total(array: Any) -> Any:
        return _array(_xp(array).sum(array))

    @staticmethod
    def count(keep: Any, shape: tuple[int, ...], like: Any) -> Any:
        xp = _xp(keep)
        return _array(xp.astype(xp.count_nonzero(xp.broadcast_to(keep, shape)), like.dtype))

    @staticmethod
    def sum_axes(array: Any, axes: tuple[int, ...]) -> Any:
        return _xp(array).sum(array, axis=axes)

    @staticmethod
    def cast_like(array: Any, like: Any) -> Any:
        xp = _xp(like)
        if isinstance(array, (bool, int, float)):
            return xp.asarray(array, dtype=like.dtype, device=array_api_compat.device(like))
        return _array(xp.astype(array, like.dtype))

    @staticmethod
    def unless_finite(
        check: Any,
        value: Callable[[Any], Any],
        otherwise: Callable[[], Any],
        *,
        cheap: bool = False,
    ) -> Any:
        xp = _xp(check)
        finite = xp.isfinite(check)
        if not is_lazy(finite):
            plain = value(check)
            return plain if bool(finite) else otherwise()
        # A graph: both branches, selected, with a finite stand-in for the branch not taken.
        plain = value(xp.where(finite, check, 0.0))
        return xp.where(finite, plain, otherwise())


OPS = NamespaceOps()


def prepare(
    converter: NamespaceConverter,
    input_name: str,
    inputs: Any,
    targets: Any,
    *,
    weight: Any,
    pos_weight: Any,
    mask: Any,
) -> Operands[Any]:
    """``rules.prepare_operands`` in the input's namespace; the rule for non-finite data is left
    to ``chunked`` on Dask arrays (it applies it block by block)."""
    return rules.prepare_operands(
        converter,
        input_name,
        inputs,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
        data_rule=not (is_dask(inputs) or converter.makes_dask),
    )
