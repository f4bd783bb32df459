"""The JAX backend object.

Results are JAX arrays of the input's dtype on the input's device; reduced
losses are 0-d arrays. float32 is computed natively (see ``kernels`` for how
it stays within a few ULP); float16 and bfloat16 are computed in float32 and
rounded once. float64 needs JAX's x64 mode
(``jax.config.update("jax_enable_x64", True)``): without it JAX has no
float64, so a float64 NumPy input is refused with a TypeError rather than
silently computed in float32 (Python numbers and lists take JAX's default
float, float32 unless x64 is on).

``binary_cross_entropy_with_logits`` and ``binary_cross_entropy`` are
differentiable by JAX itself (``jax.grad``, ``jax.jvp``, ``jax.hessian``,
under ``jax.jit`` and ``jax.vmap``) with the spec's derivatives, to any order.

>>> import jax, jax.numpy as jnp
>>> backend = JaxBackend()
>>> logits = jnp.array([[9.7], [0.0]], dtype=jnp.float32)
>>> targets = jnp.array([[0.0], [1.0]], dtype=jnp.float32)
>>> loss = backend.binary_cross_entropy_with_logits(logits, targets)
>>> loss.dtype, round(float(loss), 4)
(dtype('float32'), 5.1966)
>>> grad = jax.grad(backend.binary_cross_entropy_with_logits)(logits, targets)
>>> [round(float(g), 4) for g in grad.ravel()]
[0.5, -0.25]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bce_core.spec import (DEFAULT_LOG_CLAMP, check_label_smoothing, check_log_clamp,
                           check_reduction, check_wrt, check_wrt_given)

from . import compute
from .operands import Operands, check_x64, prepare_operands, validate_data

#: Spellings of device platforms that JAX calls "gpu".
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def _device_name(platform: str, index: int) -> str:
    return "cpu" if (platform, index) == ("cpu", 0) else f"{platform}:{index}"


def _works(device: jax.Device) -> bool:
    """A device counts only when a tiny computation on it gives the right answer."""
    try:
        return float(jax.device_put(np.float32(1.0), device) + 1) == 2.0
    except Exception:  # a broken driver or runtime means the device is not usable
        return False


class JaxBackend:
    """bce-core's specification on JAX arrays."""

    name = "jax"

    def __init__(self) -> None:
        self._devices: tuple[str, ...] | None = None
        self._devices_lock = threading.Lock()

    # -- arrays and devices -------------------------------------------------

    def version(self) -> str:
        return jax.__version__

    def devices(self) -> list[str]:
        """Usable devices, such as ["cpu", "gpu:0"]; probed once per backend object."""
        with self._devices_lock:
            if self._devices is None:
                found = []
                for platform in ("cpu", "gpu", "tpu"):
                    try:
                        candidates = jax.local_devices(backend=platform)
                    except RuntimeError:  # no such platform in this installation
                        continue
                    found += [_device_name(platform, i) for i, d in enumerate(candidates)
                              if _works(d)]
                self._devices = tuple(found)
            return list(self._devices)

    def device(self, name: str | None) -> jax.Device | None:
        """The JAX device called ``name`` ("cpu", "gpu:0", "cuda:0", ...); None for the default."""
        if name is None:
            return None
        platform, _, index = str(name).partition(":")
        platform = _PLATFORM_ALIASES.get(platform, platform)
        try:
            return jax.local_devices(backend=platform)[int(index or 0)]
        except (RuntimeError, IndexError, ValueError):
            raise ValueError(f"device={name!r} is not a JAX device here; use one of "
                             f"{', '.join(map(repr, self.devices()))}.") from None

    def asarray(self, array: Any, device: str | None = None) -> jax.Array:
        """A JAX array of the same dtype on ``device`` (bfloat16 from ml_dtypes stays bfloat16).

        float64 needs x64 (TypeError otherwise); 64-bit integers become JAX's default
        integer width, as ``jnp.asarray`` does.

        >>> JaxBackend().asarray(np.zeros(2, np.float32), "cpu").dtype
        dtype('float32')
        """
        host = np.asarray(array)
        check_x64("array", host.dtype)
        return jax.device_put(host, self.device(device))

    def to_numpy(self, array: Any) -> np.ndarray:
        """A NumPy copy (bfloat16 as an ml_dtypes.bfloat16 array)."""
        return np.asarray(jax.device_get(array))

    # -- the loss -------------------------------------------------------------

    def device_of(self, array: Any) -> str:
        """The device of a JAX array, named as ``devices()`` names it."""
        device = next(iter(array.devices()))
        return _device_name(_PLATFORM_ALIASES.get(device.platform, device.platform), device.id)

    @staticmethod
    def _prepare(input_name: str, inputs: Any, targets: Any, weight: Any, pos_weight: Any,
                 mask: Any, check_data: bool) -> Operands:
        ops = prepare_operands(input_name, inputs, targets, weight=weight, pos_weight=pos_weight,
                               mask=mask)
        if check_data:
            validate_data(ops, input_name)
        return ops

    def binary_cross_entropy_with_logits(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        validate: bool = False,
    ) -> jax.Array:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        return compute.logits_loss(ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask,
                                   eps=eps, reduction=reduction)

    def binary_cross_entropy(
        self, probs: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        log_clamp: float = DEFAULT_LOG_CLAMP, validate: bool = False,
    ) -> jax.Array:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        clamp = check_log_clamp(log_clamp)
        ops = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        return compute.probs_loss(ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask,
                                  eps=eps, reduction=reduction, clamp=clamp)

    def value_and_grad(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None,
        label_smoothing: float = 0.0, mask: Any = None, reduction: str = "mean",
        validate: bool = False, wrt: str | tuple[str, ...] = "logits",
    ) -> tuple[jax.Array, Any]:
        eps = check_label_smoothing(label_smoothing)
        reduction = check_reduction(reduction)
        names, as_tuple = check_wrt(wrt)
        check_wrt_given(names, weight=weight, pos_weight=pos_weight)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        loss, grads = compute.logits_value_and_grad(
            ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask, eps=eps,
            reduction=reduction, names=names)
        return loss, grads if as_tuple else grads[0]

    def grad_hess(self, logits: Any, targets: Any, *, weight: Any = None,
                  pos_weight: Any = None) -> tuple[jax.Array, jax.Array]:
        ops = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        return compute.logits_grad_hess(ops.inputs, ops.targets, ops.weight, ops.pos_weight)

    # -- JAX's own autodiff through the loss ----------------------------------

    def _differentiable(self, form: str, inputs: Any, targets: Any,
                        options: dict[str, Any]) -> tuple[dict[str, Any], Callable[..., Any]]:
        """The checked arguments by name, and the loss as a function of them (validated once here,
        outside any transformation, since validation cannot run on traced values)."""
        options = dict(options)
        input_name = "logits" if form == "logits" else "probs"
        ops = self._prepare(input_name, inputs, targets, options.pop("weight", None),
                            options.pop("pos_weight", None), options.pop("mask", None),
                            options.pop("validate", False))
        args = {input_name: ops.inputs, "targets": ops.targets, "weight": ops.weight,
                "pos_weight": ops.pos_weight}
        method = (self.binary_cross_entropy_with_logits if form == "logits"
                  else self.binary_cross_entropy)

        def loss(**values: Any) -> jax.Array:
            merged = {**args, **values}
            return method(merged[input_name], merged["targets"], weight=merged["weight"],
                          pos_weight=merged["pos_weight"], mask=ops.mask, **options)

        return args, loss

    def autodiff_value_and_grad(self, logits: Any, targets: Any, *, wrt: tuple[str, ...],
                                compiled: bool = False,
                                **options: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """(loss, gradients of the summed loss w.r.t. each name in ``wrt``) by ``jax.grad``."""
        names, _ = check_wrt(wrt)
        check_wrt_given(names, weight=options.get("weight"), pos_weight=options.get("pos_weight"))
        args, loss = self._differentiable("logits", logits, targets, options)

        def objective(values: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
            value = loss(**values)
            return jnp.sum(value), value

        run = jax.value_and_grad(objective, has_aux=True)
        (_, value), grads = (jax.jit(run) if compiled else run)({n: args[n] for n in names})
        return value, tuple(grads[n] for n in names)

    def autodiff_second_derivative(self, logits: Any, targets: Any, *, compiled: bool = False,
                                   **options: Any) -> jax.Array:
        """d/dlogits of sum(d loss / d logits) by nested ``jax.grad``: the Hessian's diagonal."""
        args, loss = self._differentiable("logits", logits, targets, options)

        def first(x: jax.Array) -> jax.Array:
            return jax.grad(lambda v: jnp.sum(loss(logits=v)))(x)

        second = jax.grad(lambda x: jnp.sum(first(x)))
        return (jax.jit(second) if compiled else second)(args["logits"])

    def autodiff_probs_grad(self, probs: Any, targets: Any, *, compiled: bool = False,
                            **options: Any) -> tuple[jax.Array, jax.Array]:
        """(loss, d summed loss / d probs) of the probability form by ``jax.grad``."""
        args, loss = self._differentiable("probs", probs, targets, options)

        def objective(p: jax.Array) -> tuple[jax.Array, jax.Array]:
            value = loss(probs=p)
            return jnp.sum(value), value

        run = jax.value_and_grad(objective, has_aux=True)
        (_, value), grad = (jax.jit(run) if compiled else run)(args["probs"])
        return value, grad
