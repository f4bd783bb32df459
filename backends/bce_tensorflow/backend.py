"""The TensorFlow backend object: argument checks through the core, then one of two paths.

Results have the input's dtype and device, computed in the working dtype, rounded once: the
loss from logits and its gradient by one XLA program (``fused``, reused by tapes through
``autodiff``), other derivatives and the probability form by ``kernels``, to second order.

>>> import tensorflow as tf
>>> backend = TensorFlowBackend()
>>> loss = backend.binary_cross_entropy_with_logits(tf.constant([[9.7], [0.0]]),
...                                                 tf.constant([[0.0], [1.0]]))
>>> loss.dtype.name, round(float(loss), 4)
('float32', 5.1966)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from bce_core.rules import Operands, pack_gradients
from bce_core.spec import DEFAULT_LOG_CLAMP, check_options

from . import autodiff, fused, kernels
from .operands import CONVERTER, OPS, is_native, on_device_of, prepare, validate

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from bce_core.plugin import LogitOptions, ProbsOptions

_no_autograph = tf.autograph.experimental.do_not_convert

#: The options of a tape that ``spec.check_options`` checks (the others are operands).
_OPTIONS = ("label_smoothing", "reduction", "log_clamp", "validate")


@functools.cache
def _probe_devices() -> tuple[str, ...]:
    """'cpu' and 'gpu:N' for each logical device on which a tiny computation succeeds."""
    usable = []
    for device in tf.config.list_logical_devices():
        kind, index = device.device_type.lower(), int(device.name.rsplit(":", 1)[-1])
        if kind not in ("cpu", "gpu"):
            continue
        try:
            with tf.device(device.name):
                ok = float((tf.constant(1.0) + tf.constant(1.0)).numpy()) == 2.0
        except Exception:  # a device listed but unusable (driver, memory) is left out
            ok = False
        if ok:
            usable.append("cpu" if kind == "cpu" and index == 0 else f"{kind}:{index}")
    return tuple(usable)


def _tensorflow_device(device: str) -> str:
    """'cpu', 'gpu:1', 'cuda:1' (and 'gpu', 'cuda' for index 0) as TensorFlow's '/GPU:1'."""
    kind, _, index = str(device).lower().partition(":")
    kind = {"cuda": "gpu"}.get(kind, kind)
    return f"/{kind.upper()}:{index or 0}"


class TensorFlowBackend:
    """bce-core's specification on TensorFlow tensors."""

    name = "tensorflow"
    #: The rules' array operations and argument conversion, for ``bce_core.parallel``.
    ops = OPS
    converter = CONVERTER

    def __init__(self) -> None:
        self._autodiff = autodiff.Autodiff(self)

    def version(self) -> str:
        return tf.__version__

    def devices(self) -> list[str]:
        """Usable devices, probed once: ``"cpu" in TensorFlowBackend().devices()``."""
        return list(_probe_devices())

    def asarray(self, array: Any, device: str | None = None) -> tf.Tensor:
        """A tensor holding the NumPy ``array`` (same dtype, bfloat16 included) on ``device``.

        >>> TensorFlowBackend().asarray(np.arange(3.0), "cpu").device.endswith("CPU:0")
        True
        """
        array = np.asarray(array)
        if device is None:
            return tf.constant(array)
        placement = _tensorflow_device(device)
        available = [_tensorflow_device(d) for d in self.devices()]
        if placement not in available:
            raise ValueError(
                f"device={device!r} is not usable by the tensorflow backend; "
                f"usable devices: {', '.join(self.devices())}."
            )
        with tf.device(placement):
            return tf.identity(tf.constant(array))

    def to_numpy(self, array: Any) -> np.ndarray:
        """A NumPy copy (bfloat16 as ml_dtypes.bfloat16); needs an eager tensor."""
        if is_native(array) and not tf.executing_eagerly():
            raise ValueError(
                "to_numpy needs an eager tensor; it cannot run under tf.function tracing."
            )
        return np.asarray(array.numpy() if is_native(array) else array)

    def device_of(self, array: Any) -> str:
        """The device of an eager tensor, named as ``devices()`` names it ("cpu", "gpu:1")."""
        kind, _, index = array.device.rsplit("device:", 1)[-1].lower().partition(":")
        return "cpu" if (kind, index) == ("cpu", "0") else f"{kind}:{index}"

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """Where the path changes: past ``fused.SMALL`` elements, and on the CPU past a chunk.

        >>> TensorFlowBackend().size_thresholds("cpu")
        (4097, 131073)
        """
        first = fused.SMALL + 1
        return (first, fused.CHUNK_ELEMENTS + 1) if device.split(":")[0] == "cpu" else (first,)

    def as_parameter(self, array: Any, device: str | None = None) -> tf.Variable:
        """``array`` as a user's parameter: a ``tf.Variable`` (which a call must not assign)."""
        return tf.Variable(self.asarray(array, device), trainable=True)

    def parameter_state(self, parameter: tf.Variable) -> dict[str, np.ndarray]:
        """What a call must leave alone: the variable's values."""
        return {"values": self.to_numpy(tf.convert_to_tensor(parameter))}

    # -- the losses -------------------------------------------------------------------------

    @staticmethod
    def _operands(
        input_name: str,
        inputs: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        check_data: bool = False,
    ) -> Operands[tf.Tensor]:
        """The checked operands as tensors (with ``check_data``, the data checks too)."""
        ops = prepare(input_name, inputs, targets, weight=weight, pos_weight=pos_weight, mask=mask)
        if check_data:
            validate(ops, input_name)
        return ops

    @_no_autograph
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
    ) -> tf.Tensor:
        o = check_options(label_smoothing=label_smoothing, reduction=reduction, validate=validate)
        ops = self._operands("logits", logits, targets, weight, pos_weight, mask, validate)
        with on_device_of(ops.inputs):
            return autodiff.logits_loss(ops, eps=o.eps, reduction=o.reduction)

    @_no_autograph
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
    ) -> tf.Tensor:
        o = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
            validate=validate,
        )
        ops = self._operands("probs", probs, targets, weight, pos_weight, mask, validate)
        with on_device_of(ops.inputs):
            return autodiff.probs_loss(ops, eps=o.eps, reduction=o.reduction, clamp=o.log_clamp)

    @_no_autograph
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
    ) -> tuple[tf.Tensor, Any]:
        o = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            wrt=wrt,
            weight=weight,
            pos_weight=pos_weight,
            validate=validate,
        )
        ops = self._operands("logits", logits, targets, weight, pos_weight, mask, validate)
        with on_device_of(ops.inputs):
            loss, grads = autodiff.value_and_grad(
                ops, eps=o.eps, reduction=o.reduction, names=o.wrt
            )
        return loss, pack_gradients(grads, o.wrt_as_tuple)

    @_no_autograph
    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        ops = self._operands("logits", logits, targets, weight, pos_weight, None)
        with on_device_of(ops.inputs):
            return kernels.grad_hess(ops)

    # -- TensorFlow's own autodiff (bce_core.plugin.AutodiffBackend) ------------------------

    def _tape(
        self,
        name: str,
        input_name: str,
        inputs: Any,
        targets: Any,
        compiled: bool,
        options: dict[str, Any],
        **static: Any,
    ) -> Any:
        """The tape ``name`` of ``autodiff.Autodiff`` on the operands as tensors (so that a tape
        can watch them); compiled functions are kept per option set."""
        # Checked before any tracing, so that a bad option raises here; the loss inside the
        # tape checks them again, as every call does.
        check_options(**{k: v for k, v in options.items() if k in _OPTIONS})
        ops = self._operands(
            input_name,
            inputs,
            targets,
            options.pop("weight", None),
            options.pop("pos_weight", None),
            options.pop("mask", None),
        )
        with on_device_of(ops.inputs):
            return self._autodiff.run(
                name,
                ops.inputs,
                ops.targets,
                ops.weight,
                ops.pos_weight,
                ops.mask,
                compiled=compiled,
                options=options,
                **static,
            )

    def autodiff_value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        wrt: tuple[str, ...],
        compiled: bool = False,
        **options: Unpack[LogitOptions],
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """(loss, gradients w.r.t. each name in ``wrt``) by tf.GradientTape.

        >>> loss, (g,) = TensorFlowBackend().autodiff_value_and_grad(
        ...     tf.constant([0.0]), tf.constant([1.0]), wrt=("logits",), reduction="sum")
        >>> g.numpy().tolist()
        [-0.5]
        """
        names = check_options(
            wrt=tuple(wrt), weight=options.get("weight"), pos_weight=options.get("pos_weight")
        ).wrt
        return self._tape(
            "value_and_grad", "logits", logits, targets, compiled, dict(options), wrt=names
        )

    def autodiff_second_derivative(
        self, logits: Any, targets: Any, *, compiled: bool = False, **options: Unpack[LogitOptions]
    ) -> tf.Tensor:
        """d/dlogits of sum(d loss/d logits), by nested tf.GradientTape.

        >>> TensorFlowBackend().autodiff_second_derivative(
        ...     tf.constant([0.0]), tf.constant([1.0]), reduction="sum").numpy().tolist()
        [0.25]
        """
        return self._tape("second_derivative", "logits", logits, targets, compiled, dict(options))

    def autodiff_probs_grad(
        self, probs: Any, targets: Any, *, compiled: bool = False, **options: Unpack[ProbsOptions]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(loss, d loss/d probs) of the probability form by tf.GradientTape.

        >>> loss, g = TensorFlowBackend().autodiff_probs_grad(
        ...     tf.constant([0.25]), tf.constant([1.0]), reduction="sum")
        >>> g.numpy().tolist()
        [-4.0]
        """
        return self._tape("probs_grad", "probs", probs, targets, compiled, dict(options))

    # -- optional: the framework's own loss, drawn next to ours by `bce conformance --html` --

    def framework_loss(self, logits: Any, targets: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """tf.nn.sigmoid_cross_entropy_with_logits, its gradient by tf.GradientTape.

        >>> loss, grad = TensorFlowBackend().framework_loss(tf.constant([0.0, np.inf]),
        ...                                                 tf.constant([1.0, 1.0]))
        >>> loss.numpy().tolist()  # inf - inf at x = +inf; the exact loss is 0
        [0.6931471824645996, nan]
        """
        x = logits if is_native(logits) else self.asarray(logits)
        y = tf.cast(targets if is_native(targets) else self.asarray(targets), x.dtype)
        with on_device_of(x), tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x)
        return loss, tape.gradient(loss, x)
