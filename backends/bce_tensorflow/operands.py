"""Argument handling: TensorFlow tensors, NumPy arrays and Python numbers in, checked tensors out.

The dtype and shape rules are bce-core's (``bce_core.spec`` and
``bce_core.arrays``), so every error has the NumPy backend's type and words.
NumPy arrays, Python numbers and nested lists are placed on the device of the
logits. ``validate=True`` copies the operands to NumPy and runs bce-core's
checks, which needs eager execution.

>>> import numpy as np, tensorflow as tf
>>> ops = prepare("logits", tf.zeros((2, 3)), np.array([[0, 1, 1]] * 2), weight=None,
...               pos_weight=[1.0, 2.0, 3.0], mask=None)
>>> ops.targets.dtype.name, ops.pos_weight.dtype.name, ops.shape
('float32', 'float32', (2, 3))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from bce_core import arrays
from bce_core.spec import check_float_dtype, check_shapes


class Operands(NamedTuple):
    """Checked inputs of one call as tensors (targets, weight, pos_weight in the input's dtype)."""

    inputs: tf.Tensor
    targets: tf.Tensor
    weight: tf.Tensor | None
    pos_weight: tf.Tensor | None
    mask: tf.Tensor | None
    shape: tuple[int, ...]


def is_native(value: Any) -> bool:
    """True for TensorFlow tensors (eager or symbolic) and variables."""
    return isinstance(value, (tf.Tensor, tf.Variable))


def device_of(tensor: tf.Tensor) -> str | None:
    """The device an eager tensor lives on; None under tracing, where placement is TensorFlow's."""
    if tf.executing_eagerly() and hasattr(tensor, "device") and tensor.device:
        return tensor.device
    return None


@contextlib.contextmanager
def on_device_of(tensor: tf.Tensor) -> Iterator[None]:
    """Run the block on ``tensor``'s device (eager), so results stay where the input is."""
    device = device_of(tensor)
    if device is None:
        yield
    else:
        with tf.device(device):
            yield


def _numpy_probe(dtype: tf.DType) -> np.ndarray:
    """An empty NumPy array of ``dtype``, to get bce-core's dtype errors for a tensor."""
    try:
        return np.empty((0,), dtype=dtype.as_numpy_dtype)
    except TypeError:
        return np.empty((0,), dtype=object)


def as_input(name: str, value: Any) -> tf.Tensor:
    """The logits or probabilities as a tensor; its dtype must be one of the spec's floats."""
    if is_native(value):
        tensor = tf.convert_to_tensor(value)  # reads a variable, differentiably
        check_float_dtype(name, tensor.dtype.name)
        return tensor
    return tf.constant(arrays.as_float_input(name, value))


def as_operand(name: str, value: Any, like: tf.Tensor) -> tf.Tensor:
    """A float, int or bool operand cast to ``like``'s dtype, on ``like``'s device."""
    if is_native(value):
        tensor = tf.convert_to_tensor(value)
        if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
            arrays.as_operand(name, _numpy_probe(tensor.dtype), like.dtype.as_numpy_dtype)
        return tensor if tensor.dtype == like.dtype else tf.cast(tensor, like.dtype)
    array = arrays.as_operand(name, value, np.dtype(like.dtype.as_numpy_dtype))
    with on_device_of(like):
        return tf.constant(array)


def as_mask(value: Any, like: tf.Tensor) -> tf.Tensor:
    """A boolean mask tensor (integer masks are refused, as bce-core does)."""
    if is_native(value):
        tensor = tf.convert_to_tensor(value)
        if tensor.dtype != tf.bool:
            arrays.as_mask(_numpy_probe(tensor.dtype))
        return tensor
    array = arrays.as_mask(value)
    with on_device_of(like):
        return tf.constant(array)


def static_shape(tensor: tf.Tensor) -> tuple[int, ...]:
    """The static shape, with -1 for a dimension unknown while tracing."""
    return tuple(-1 if d is None else int(d) for d in tensor.shape.as_list())


def prepare(input_name: str, inputs: Any, targets: Any, *, weight: Any, pos_weight: Any,
            mask: Any) -> Operands:
    """Apply the dtype and shape rules of the spec to one call's arguments."""
    x = as_input(input_name, inputs)
    y = as_operand("targets", targets, x)
    w = None if weight is None else as_operand("weight", weight, x)
    q = None if pos_weight is None else as_operand("pos_weight", pos_weight, x)
    m = None if mask is None else as_mask(mask, x)
    shape = check_shapes(static_shape(x), static_shape(y), input_name=input_name,
                         weight=None if w is None else static_shape(w),
                         pos_weight=None if q is None else static_shape(q),
                         mask=None if m is None else static_shape(m))
    return Operands(x, y, w, q, m, shape)


def validate(ops: Operands, input_name: str) -> None:
    """The data checks of ``validate=True`` (bce-core's, on NumPy copies); eager only."""
    if not tf.executing_eagerly():
        raise ValueError(
            "validate=True checks the data, which cannot run under tf.function or XLA "
            "(jit_compile) tracing; validate the data eagerly before the compiled step, or pass "
            "validate=False inside it.")

    def numpy(t: tf.Tensor | None) -> np.ndarray | None:
        return None if t is None else np.asarray(t.numpy())

    copies = arrays.Operands(numpy(ops.inputs), numpy(ops.targets), numpy(ops.weight),
                             numpy(ops.pos_weight), numpy(ops.mask), ops.shape)
    arrays.validate_operands(copies, input_name, input_in_unit_interval=input_name == "probs")
