"""JAX's side of the core's rules: its converter, its array operations, its primitives.

- :class:`JaxConverter` is the ``bce_core.rules.Converter``: JAX arrays and
  tracers are used as they are; NumPy arrays, NumPy scalars, Python numbers and
  nested lists are converted with bce-core's own rules (so errors read exactly
  as the NumPy backend's) and placed on the device of the logits; nothing reads
  a device from a tracer. Targets, weight and pos_weight are cast to the
  input's dtype; the mask stays boolean.
- ``OPS`` is the ``bce_core.rules.ArrayOps`` and ``PRIMITIVES`` the
  ``bce_core.compensated.Primitives`` of JAX (``jnp`` and ``lax`` functions;
  ``opaque`` is an optimization barrier, which XLA's simplifier cannot fold).
- devices, x64 and the working dtype.

>>> import numpy as np
>>> ops = prepare_operands("logits", np.zeros((2, 3), np.float32), [[0, 1, 1]] * 2,
...                        weight=None, pos_weight=np.ones(3), mask=None)
>>> ops.targets.dtype, ops.pos_weight.dtype, ops.shape
(dtype('float32'), dtype('float32'), (2, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bce_core import rules
from bce_core.arrays import (
    as_mask,
    as_numpy,
    as_operand,
    validate_operands,
    validation_under_tracing,
)
from bce_core.rules import Operands
from bce_core.spec import check_float_dtype

Array = jax.Array


# -- the array operations of the core's rules and its compensated arithmetic ------------------


class JaxOps:
    """``bce_core.rules.ArrayOps`` in ``jnp``: they trace, so the rules run inside programs."""

    broadcast_to = staticmethod(jnp.broadcast_to)
    reshape = staticmethod(jnp.reshape)
    zeros_like = staticmethod(jnp.zeros_like)

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> Array:
        return jnp.where(condition, if_true, if_false)

    @staticmethod
    def total(array: Array) -> Array:
        return jnp.sum(array)

    @staticmethod
    def count(keep: Array, shape: tuple[int, ...], like: Array) -> Array:
        return jnp.sum(jnp.broadcast_to(keep, shape)).astype(like.dtype)

    @staticmethod
    def sum_axes(array: Array, axes: tuple[int, ...]) -> Array:
        return jnp.sum(array, axis=axes)

    @staticmethod
    def cast_like(array: Array, like: Array) -> Array:
        return jnp.asarray(array).astype(like.dtype)

    @staticmethod
    def unless_finite(
        check: Array,
        value: Callable[[Array], Array],
        otherwise: Callable[[], Array],
        *,
        cheap: bool = False,
    ) -> Array:
        finite = jnp.isfinite(check)
        if cheap:  # a few scalar operations: a select costs less than a conditional
            return jnp.where(finite, value(jnp.where(finite, check, 0)), otherwise())
        # Otherwise a conditional, whose branch runs only when taken (with a select XLA would
        # compute the elements twice, once for each sum). Only the branch taken is
        # differentiated, so the plain value needs no finite stand-in.
        plain = value(check)
        return lax.cond(finite, lambda: plain, otherwise)


OPS = JaxOps()


class JaxPrimitives:
    """``bce_core.compensated.Primitives`` in ``jnp`` and ``lax`` (dtypes as NumPy dtypes).

    >>> from bce_core.compensated import LogitParts
    >>> parts = LogitParts.of(PRIMITIVES, jnp.array([-30.0, 0.0, 30.0]))
    >>> [round(float(v), 6) for v in parts.softpluses()[0]]
    [0.0, 0.693147, 30.0]
    """

    where = staticmethod(JaxOps.where)
    isfinite = staticmethod(jnp.isfinite)
    abs = staticmethod(jnp.abs)
    exp = staticmethod(jnp.exp)
    maximum = staticmethod(jnp.maximum)
    minimum = staticmethod(jnp.minimum)
    round = staticmethod(jnp.round)
    zeros_like = staticmethod(jnp.zeros_like)
    ones_like = staticmethod(jnp.ones_like)
    bitwise_and = staticmethod(jnp.bitwise_and)
    bitwise_or = staticmethod(jnp.bitwise_or)

    @staticmethod
    def dtype(a: Array) -> np.dtype[Any]:
        return np.dtype(a.dtype)

    @staticmethod
    def constant(value: Any, dtype: np.dtype[Any]) -> Array:
        return jnp.asarray(value, dtype)

    @staticmethod
    def opaque(value: Any, dtype: np.dtype[Any]) -> Array:
        # XLA folds (a + 1) - 1 to a, which would lose the rounding error being recovered.
        return lax.optimization_barrier(jnp.asarray(value, dtype))

    @staticmethod
    def astype(a: Array, dtype: np.dtype[Any]) -> Array:
        return a.astype(dtype)

    @staticmethod
    def bitcast(a: Array, dtype: np.dtype[Any]) -> Array:
        return lax.bitcast_convert_type(a, dtype)


PRIMITIVES = JaxPrimitives()


def working_dtype(dtype: Any) -> np.dtype[Any]:
    """The dtype the programs compute in (``bce_core.rules.working_dtype_name``).

    >>> working_dtype(jnp.bfloat16)
    dtype('float32')
    """
    return np.dtype(rules.working_dtype_name(np.dtype(dtype).name))


# -- devices and x64 ----------------------------------------------------------------------------


def x64_enabled() -> bool:
    """Whether JAX currently keeps float64 (``jax_enable_x64``, also inside ``enable_x64()``)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.dtype(np.float64)


def is_traced(value: Any) -> bool:
    """True for the abstract values of jit, grad and vmap, which hold no data."""
    return isinstance(value, jax.core.Tracer)


def check_x64(name: str, dtype: np.dtype[Any]) -> None:
    """Refuse float64 data while JAX would silently turn it into float32."""
    if np.dtype(dtype) == np.float64 and not x64_enabled():
        raise TypeError(
            f"{name} is float64, but JAX has float64 disabled and would compute in float32; "
            f"enable it with jax.config.update('jax_enable_x64', True) or pass float32 data."
        )


def device_of(array: Any) -> jax.Device | None:
    """The single device a concrete JAX array lives on; None for tracers, NumPy and sharded data."""
    if not isinstance(array, jax.Array) or is_traced(array):
        return None
    devices = array.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def _place(array: np.ndarray, device: jax.Device | None) -> Array:
    """``array`` on ``device``: uncommitted where JAX puts it by default anyway, so that a call
    with concrete logits and one under ``jax.grad`` (where the device is unknown) pass the same
    kind of array and share one compiled program; committed to ``device`` otherwise.
    (``jax.device_put`` rather than ``jnp.asarray``, which compiles a copy for each new shape.)
    """
    placed = jax.device_put(array)
    # Under a trace (a jitted function's constant) the placement is the trace's to decide.
    if device is not None and not is_traced(placed) and placed.devices() != {device}:
        placed = jax.device_put(array, device)
    return placed


# -- the converter --------------------------------------------------------------------------

# The checks of JAX arrays depend on their dtypes only: made once per dtype (a failed
# check is not cached and raises again), they cost nothing on an eager call's path.


@cache
def _check_input_dtype(name: str, dtype: np.dtype[Any]) -> None:
    check_float_dtype(name, dtype.name)


@cache
def _check_operand_dtype(name: str, dtype: np.dtype[Any], to: np.dtype[Any]) -> None:
    # bce-core's check on an empty array of the same dtype: same rule, same message.
    as_operand(name, np.empty(0, dtype), to)


@cache
def _check_mask_dtype(dtype: np.dtype[Any]) -> None:
    as_mask(np.empty(0, dtype))


class JaxConverter:
    """The ``bce_core.rules.Converter`` of JAX: operands that are not JAX arrays yet (the mask
    too) are placed on the input's device."""

    @staticmethod
    def as_input(name: str, value: Any) -> Array:
        """The logits (or probabilities) as a floating JAX array.

        Python numbers and lists take JAX's default float (float32 unless x64 is
        on); a NumPy float64 array needs x64 (else TypeError, never a silent cast).
        """
        if isinstance(value, jax.Array):
            _check_input_dtype(name, np.dtype(value.dtype))
            return value
        array = as_numpy(name, value)
        if not isinstance(value, (np.ndarray, np.generic)) and array.dtype == np.float64:
            array = array.astype(jax.dtypes.canonicalize_dtype(np.float64))
        check_float_dtype(name, array.dtype.name)
        check_x64(name, array.dtype)
        # Uncommitted, as jnp.asarray would be, and compiles nothing.
        return jax.device_put(array)

    @staticmethod
    def as_operand(name: str, value: Any, like: Array) -> Array:
        """A float, int or bool operand as a JAX array of ``like``'s dtype; anything else is a
        TypeError."""
        dtype = np.dtype(like.dtype)
        if isinstance(value, jax.Array):
            _check_operand_dtype(name, np.dtype(value.dtype), dtype)
            # No cast when the dtype is right: under jax.grad a cast is one more primitive to run.
            if value.dtype == dtype:
                return value
            here = device_of(value)
            if here is not None and here.platform == "cpu":
                # The data is on the host already: NumPy casts it, where an eager cast would
                # compile a program for each new shape.
                return _place(np.asarray(value).astype(dtype), here)
            return value.astype(dtype)
        return _place(as_operand(name, value, dtype), device_of(like))

    @staticmethod
    def as_mask(value: Any, like: Array) -> Array:
        """A boolean mask as a JAX array; integer masks are refused as in bce-core."""
        if isinstance(value, jax.Array):
            _check_mask_dtype(np.dtype(value.dtype))
            return value
        return _place(as_mask(value), device_of(like))

    @staticmethod
    def shape_of(array: Array) -> tuple[int, ...]:
        return tuple(array.shape)

    @staticmethod
    def isfinite(array: Array) -> Array:
        return jnp.isfinite(array)

    @staticmethod
    def nan_where_not(finite: Array, array: Array) -> Array:
        return jnp.where(finite, array, array + jnp.nan)


CONVERTER = JaxConverter()


def prepare_operands(
    input_name: str, inputs: Any, targets: Any, *, weight: Any, pos_weight: Any, mask: Any
) -> Operands[Array]:
    """``bce_core.rules.prepare_operands`` with JAX's converter. The rule for non-finite data
    is left to the compiled programs (``fused``), where it costs no eager dispatch."""
    return rules.prepare_operands(
        CONVERTER,
        input_name,
        inputs,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
        data_rule=False,
    )


def validate_data(ops: Operands[Array], input_name: str) -> None:
    """The data checks of ``validate=True``, run on NumPy copies by bce-core.

    They need the values, so they cannot run while JAX traces (jit, grad, vmap).
    """
    arrays = (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask)
    if any(is_traced(array) for array in arrays):
        raise validation_under_tracing("jax.jit, jax.grad or jax.vmap")
    host = Operands(*(None if a is None else np.asarray(a) for a in arrays), ops.shape)
    validate_operands(host, input_name, input_in_unit_interval=input_name == "probs")
