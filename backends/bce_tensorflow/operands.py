"""TensorFlow's side of the core: its converter, its array operations, its primitives, devices.

``CONVERTER`` is the ``rules.Converter``, ``OPS`` the ``rules.ArrayOps`` and ``PRIMITIVES``
the ``compensated.Primitives`` of TensorFlow; ``validate`` runs the core's data checks.

>>> import numpy as np, tensorflow as tf
>>> ops = prepare("logits", tf.zeros((2, 3)), np.array([[0, 1, 1]] * 2), weight=None,
...               pos_weight=[1.0, 2.0, 3.0], mask=None)
>>> ops.targets.dtype.name, ops.pos_weight.dtype.name, ops.shape
('float32', 'float32', (2, 3))
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from bce_core import arrays, rules
from bce_core.rules import Operands
from bce_core.spec import check_float_dtype


def is_native(value: Any) -> bool:
    """True for TensorFlow tensors (eager or symbolic) and variables."""
    return isinstance(value, (tf.Tensor, tf.Variable))


def working_dtype(dtype: tf.DType) -> tf.DType:
    """The dtype inputs of ``dtype`` are computed in (``rules.working_dtype_name``)."""
    return tf.as_dtype(rules.working_dtype_name(dtype.name))


def on_device_of(tensor: tf.Tensor) -> contextlib.AbstractContextManager[Any]:
    """The eager ``tensor``'s device as a context, so that results stay where the input is."""
    device = getattr(tensor, "device", "") if tf.executing_eagerly() else ""
    return tf.device(device) if device else contextlib.nullcontext()


@functools.cache
def _has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def runs_on_cpu(tensor: tf.Tensor) -> bool:
    """Whether ``tensor``'s computations run on a CPU (where the chunked loop pays off)."""
    device = getattr(tensor, "device", "") or ""
    return "CPU" in device.rsplit("/", 1)[-1].upper() if device else not _has_gpu()


def _where(condition: Any, if_true: Any, if_false: Any) -> tf.Tensor:
    """tf.where, Python numbers taking the other branch's dtype (tf.where mixes none); of two
    numbers, float64, which the caller casts (see ``kernels.Working``)."""
    if isinstance(if_true, (int, float)):
        like = tf.float64 if isinstance(if_false, (int, float)) else if_false.dtype
        if_true = tf.constant(if_true, like)
    if isinstance(if_false, (int, float)):
        if_false = tf.constant(if_false, if_true.dtype)
    return tf.where(condition, if_true, if_false)


def _numpy_probe(dtype: tf.DType) -> np.ndarray:
    """An empty NumPy array of ``dtype``, to get the core's dtype errors for a tensor."""
    try:
        return np.empty((0,), dtype=dtype.as_numpy_dtype)
    except TypeError:
        return np.empty((0,), dtype=object)


class TensorFlowConverter:
    """The ``rules.Converter`` of TensorFlow."""

    @staticmethod
    def as_input(name: str, value: Any) -> tf.Tensor:
        if is_native(value):
            tensor = tf.convert_to_tensor(value)  # reads a variable, differentiably
            check_float_dtype(name, tensor.dtype.name)
            return tensor
        return tf.constant(arrays.as_float_input(name, value))

    @staticmethod
    def as_operand(name: str, value: Any, like: tf.Tensor) -> tf.Tensor:
        if is_native(value):
            tensor = tf.convert_to_tensor(value)
            if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
                arrays.as_operand(name, _numpy_probe(tensor.dtype), like.dtype.as_numpy_dtype)
            return tensor if tensor.dtype == like.dtype else tf.cast(tensor, like.dtype)
        array = arrays.as_operand(name, value, np.dtype(like.dtype.as_numpy_dtype))
        with on_device_of(like):
            return tf.constant(array)

    @staticmethod
    def as_mask(value: Any, like: tf.Tensor) -> tf.Tensor:
        """A boolean mask (TensorFlow places it with the operation that uses it)."""
        if is_native(value):
            tensor = tf.convert_to_tensor(value)
            if tensor.dtype != tf.bool:
                arrays.as_mask(_numpy_probe(tensor.dtype))
            return tensor
        return tf.constant(arrays.as_mask(value))

    @staticmethod
    def shape_of(array: tf.Tensor) -> tuple[int, ...]:
        """The static shape, with -1 for a dimension unknown while tracing."""
        return tuple(-1 if d is None else int(d) for d in array.shape.as_list())

    @staticmethod
    def dynamic_shape(array: tf.Tensor) -> tuple[Any, ...]:
        """The shape with a scalar tensor for each dimension unknown while tracing (the
        denominators of ``bce_core.parallel`` are computed from it)."""
        return dynamic_shape(array)

    @staticmethod
    def isfinite(array: tf.Tensor) -> tf.Tensor:
        return tf.math.is_finite(array)

    @staticmethod
    def nan_where_not(finite: tf.Tensor, array: tf.Tensor) -> tf.Tensor:
        # TensorFlow's CPU kernels flush subnormals in arithmetic (and in a where's gradient),
        # so the usual call, all finite, passes the inputs through untouched; where the data
        # is not finite an added NaN carries the upstream gradient through (NaN) as well.
        dtype = array.dtype

        def with_nan() -> tf.Tensor:
            return array + tf.where(finite, tf.zeros([], dtype), tf.constant(float("nan"), dtype))

        return tf.cond(tf.reduce_all(finite), lambda: tf.identity(array), with_nan)


CONVERTER = TensorFlowConverter()


def prepare(
    input_name: str, inputs: Any, targets: Any, *, weight: Any, pos_weight: Any, mask: Any
) -> Operands[tf.Tensor]:
    """``rules.prepare_operands`` for TensorFlow."""
    return rules.prepare_operands(
        CONVERTER, input_name, inputs, targets, weight=weight, pos_weight=pos_weight, mask=mask
    )


def validate(ops: Operands[tf.Tensor], input_name: str) -> None:
    """The data checks of ``validate=True`` (the core's, on NumPy copies); eager only."""
    if not tf.executing_eagerly():
        raise arrays.validation_under_tracing("tf.function or XLA (jit_compile) tracing")
    copies = Operands(
        *(
            None if t is None else np.asarray(t.numpy())
            for t in (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask)
        ),
        ops.shape,
    )
    arrays.validate_operands(copies, input_name, input_in_unit_interval=input_name == "probs")


def dynamic_shape(tensor: tf.Tensor) -> tuple[Any, ...]:
    """The shape, a scalar tensor for each dimension unknown while tracing (so that the core's
    shape arithmetic, a product or the first dimension, gives a tensor there)."""
    return tuple(
        tf.shape(tensor)[i] if d is None else d for i, d in enumerate(tensor.shape.as_list())
    )


class TensorFlowArrays:
    """TensorFlow's ``rules.ArrayOps`` (sums accumulate in float64) and its
    ``compensated.Primitives`` (whose dtypes in and out are NumPy's), in one."""

    where = staticmethod(_where)
    reshape = staticmethod(tf.reshape)
    zeros_like = staticmethod(tf.zeros_like)
    ones_like = staticmethod(tf.ones_like)
    isfinite = staticmethod(tf.math.is_finite)
    abs = staticmethod(tf.abs)
    exp = staticmethod(tf.exp)
    maximum = staticmethod(tf.maximum)
    minimum = staticmethod(tf.minimum)
    round = staticmethod(tf.round)
    bitwise_and = staticmethod(tf.bitwise.bitwise_and)
    bitwise_or = staticmethod(tf.bitwise.bitwise_or)

    @staticmethod
    def total(array: tf.Tensor) -> tf.Tensor:
        if array.dtype == tf.float64:
            return tf.reduce_sum(array)
        return tf.cast(tf.reduce_sum(tf.cast(array, tf.float64)), array.dtype)

    @staticmethod
    def count(keep: tf.Tensor, shape: tuple[int, ...], like: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.broadcast_to(keep, shape), like.dtype))

    @staticmethod
    def broadcast_to(array: Any, shape: tuple[int, ...]) -> tf.Tensor:
        array = tf.convert_to_tensor(array)
        return array if array.shape.as_list() == list(shape) else tf.broadcast_to(array, shape)

    @staticmethod
    def sum_axes(array: tf.Tensor, axes: tuple[int, ...]) -> tf.Tensor:
        return tf.reduce_sum(array, axis=list(axes))

    @staticmethod
    def cast_like(array: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        return tf.cast(array, like.dtype)

    @staticmethod
    def unless_finite(
        check: tf.Tensor,
        value: Callable[[tf.Tensor], tf.Tensor],
        otherwise: Callable[[], tf.Tensor],
        *,
        cheap: bool = False,
    ) -> tf.Tensor:
        # Eagerly tf.cond runs one branch; in a graph it is a conditional op (whose gradient
        # takes the branch taken only).
        plain = value(check)
        return tf.cond(tf.math.is_finite(check), lambda: plain, otherwise)

    @staticmethod
    def dtype(a: tf.Tensor) -> np.dtype:
        return np.dtype(a.dtype.as_numpy_dtype)

    @staticmethod
    def constant(value: Any, dtype: np.dtype) -> tf.Tensor:
        return tf.constant(value, tf.as_dtype(dtype))

    @staticmethod
    def opaque(value: Any, dtype: np.dtype) -> tf.Tensor:
        # XLA folds (a + 1) - 1 to a; the barrier keeps the rounding error being recovered.
        return xla.optimization_barrier(tf.constant(value, tf.as_dtype(dtype)))[0]

    @staticmethod
    def astype(a: tf.Tensor, dtype: np.dtype) -> tf.Tensor:
        return tf.cast(a, tf.as_dtype(dtype))

    @staticmethod
    def bitcast(a: tf.Tensor, dtype: np.dtype) -> tf.Tensor:
        return tf.bitcast(a, tf.as_dtype(dtype))


OPS = PRIMITIVES = TensorFlowArrays()
