"""Turning one call's arguments into checked JAX arrays.

JAX arrays and tracers are used as they are. NumPy arrays, NumPy scalars,
Python numbers and nested lists are converted with bce-core's own rules (so
errors read exactly as the NumPy backend's) and placed on the device of the
logits; nothing reads a device from a tracer. Targets, weight and pos_weight
are cast to the input's dtype; the mask stays boolean.

>>> import numpy as np
>>> ops = prepare_operands("logits", np.zeros((2, 3), np.float32), [[0, 1, 1]] * 2,
...                        weight=None, pos_weight=np.ones(3), mask=None)
>>> ops.targets.dtype, ops.pos_weight.dtype, ops.shape
(dtype('float32'), dtype('float32'), (2, 3))
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import jax
import numpy as np

from bce_core.arrays import Operands as NumpyOperands
from bce_core.arrays import as_mask, as_operand, validate_operands
from bce_core.spec import check_float_dtype, check_shapes


class Operands(NamedTuple):
    """Checked inputs of one call as JAX arrays (targets and weights in the input's dtype)."""

    inputs: jax.Array
    targets: jax.Array
    weight: jax.Array | None
    pos_weight: jax.Array | None
    mask: jax.Array | None
    shape: tuple[int, ...]


def x64_enabled() -> bool:
    """Whether JAX currently keeps float64 (``jax_enable_x64``, also inside ``enable_x64()``)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.dtype(np.float64)


def is_traced(value: Any) -> bool:
    """True for the abstract values of jit, grad and vmap, which hold no data."""
    return isinstance(value, jax.core.Tracer)


def check_x64(name: str, dtype: np.dtype) -> None:
    """Refuse float64 data while JAX would silently turn it into float32."""
    if np.dtype(dtype) == np.float64 and not x64_enabled():
        raise TypeError(
            f"{name} is float64, but JAX has float64 disabled and would compute in float32; "
            f"enable it with jax.config.update('jax_enable_x64', True) or pass float32 data.")


def device_of(array: Any) -> jax.Device | None:
    """The single device a concrete JAX array lives on; None for tracers, NumPy and sharded data."""
    if not isinstance(array, jax.Array) or is_traced(array):
        return None
    devices = array.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def _place(array: np.ndarray, device: jax.Device | None) -> jax.Array:
    """``array`` on ``device``: uncommitted where JAX puts it by default anyway, so that a call
    with concrete logits and one under ``jax.grad`` (where the device is unknown) pass the same
    kind of array and share one compiled program; committed to ``device`` otherwise.
    (``jax.device_put`` rather than ``jnp.asarray``, which compiles a copy for each new shape.)
    """
    placed = jax.device_put(array)
    if device is not None and placed.devices() != {device}:
        placed = jax.device_put(array, device)
    return placed


# The checks of JAX arrays depend on their dtypes only: made once per dtype (a failed
# check is not cached and raises again), they cost nothing on an eager call's path.


@lru_cache(maxsize=None)
def _check_input_dtype(name: str, dtype: np.dtype) -> None:
    check_float_dtype(name, dtype.name)


@lru_cache(maxsize=None)
def _check_operand_dtype(name: str, dtype: np.dtype, to: np.dtype) -> None:
    # bce-core's check on an empty array of the same dtype: same rule, same message.
    as_operand(name, np.empty(0, dtype), to)


@lru_cache(maxsize=None)
def _check_mask_dtype(dtype: np.dtype) -> None:
    as_mask(np.empty(0, dtype))


def as_input(name: str, value: Any) -> jax.Array:
    """The logits (or probabilities) as a floating JAX array.

    Python numbers and lists take JAX's default float (float32 unless x64 is
    on); a NumPy float64 array needs x64 (else TypeError, never a silent cast).
    """
    if isinstance(value, jax.Array):
        _check_input_dtype(name, np.dtype(value.dtype))
        return value
    array = np.asarray(value)
    if not isinstance(value, (np.ndarray, np.generic)) and array.dtype == np.float64:
        array = array.astype(jax.dtypes.canonicalize_dtype(np.float64))
    check_float_dtype(name, array.dtype.name)
    check_x64(name, array.dtype)
    return jax.device_put(array)  # uncommitted, as jnp.asarray would be, and compiles nothing


def as_native_operand(name: str, value: Any, dtype: np.dtype,
                      device: jax.Device | None) -> jax.Array:
    """A float, int or bool operand as a JAX array of ``dtype``; anything else is a TypeError."""
    if isinstance(value, jax.Array):
        _check_operand_dtype(name, np.dtype(value.dtype), np.dtype(dtype))
        # No cast when the dtype is right: under jax.grad a cast is one more primitive to run.
        if value.dtype == dtype:
            return value
        here = device_of(value)
        if here is not None and here.platform == "cpu":
            # The data is on the host already: NumPy casts it, where an eager cast would
            # compile a program for each new shape.
            return _place(np.asarray(value).astype(dtype), here)
        return value.astype(dtype)
    return _place(as_operand(name, value, dtype), device)


def as_native_mask(value: Any, device: jax.Device | None) -> jax.Array:
    """A boolean mask as a JAX array; integer masks are refused as in bce-core."""
    if isinstance(value, jax.Array):
        _check_mask_dtype(np.dtype(value.dtype))
        return value
    return _place(as_mask(value), device)


def prepare_operands(input_name: str, inputs: Any, targets: Any, *, weight: Any,
                     pos_weight: Any, mask: Any) -> Operands:
    """Apply the dtype and shape rules of the spec to one call's arguments."""
    x = as_input(input_name, inputs)
    # Only operands that are not JAX arrays yet are placed on a device.
    others = (targets, weight, pos_weight, mask)
    device = (None if all(v is None or isinstance(v, jax.Array) for v in others)
              else device_of(x))
    dtype = np.dtype(x.dtype)
    y = as_native_operand("targets", targets, dtype, device)
    w = None if weight is None else as_native_operand("weight", weight, dtype, device)
    q = None if pos_weight is None else as_native_operand("pos_weight", pos_weight, dtype, device)
    m = None if mask is None else as_native_mask(mask, device)
    shape = check_shapes(x.shape, y.shape, input_name=input_name,
                         weight=None if w is None else w.shape,
                         pos_weight=None if q is None else q.shape,
                         mask=None if m is None else m.shape)
    return Operands(x, y, w, q, m, shape)


def validate_data(ops: Operands, input_name: str) -> None:
    """The data checks of ``validate=True``, run on NumPy copies by bce-core.

    They need the values, so they cannot run while JAX traces (jit, grad, vmap).
    """
    arrays = (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask)
    if any(is_traced(array) for array in arrays):
        raise ValueError(
            "validate=True checks the data, which cannot run under jax.jit, jax.grad or "
            "jax.vmap (the values are abstract there); validate before the transformation, "
            "or pass validate=False inside it.")
    host = NumpyOperands(*(None if a is None else np.asarray(a) for a in arrays), ops.shape)
    validate_operands(host, input_name, input_in_unit_interval=input_name == "probs")
