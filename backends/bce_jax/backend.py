"""The JAX backend object.

Results are JAX arrays of the input's dtype on the input's device; reduced
losses are 0-d arrays. float32 is computed natively (see ``bce_core.compensated``
for how it stays within a few ULP); float16 and bfloat16 are computed in float32 and
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

from bce_core import rules
from bce_core.rules import Operands
from bce_core.spec import DEFAULT_LOG_CLAMP, check_options

from . import autodiff, chunks, fused
from .operands import CONVERTER, OPS, check_x64, prepare_operands, validate_data

#: Spellings of device platforms that JAX calls "gpu".
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def _device_name(platform: str, index: int) -> str:
    return "cpu" if (platform, index) == ("cpu", 0) else f"{platform}:{index}"


def _ones(value: jax.Array, traced: bool) -> Any:
    """A cotangent of ones like ``value``, as ``jax.grad`` of a sum gives: inside a jit, part of
    the trace; otherwise a NumPy array, since an eager ``jnp.ones`` (and ``jnp.sum``, whose
    transpose it is) compiles a program for each new shape.

    >>> _ones(jnp.zeros((2,), jnp.bfloat16), traced=False).dtype.name
    'bfloat16'
    """
    if traced:
        return jnp.ones_like(value)
    return np.ones(np.shape(value), value.dtype)


def _arrays(prepared: Operands[jax.Array]) -> tuple[Any, ...]:
    return (prepared.inputs, prepared.targets, prepared.weight, prepared.pos_weight, prepared.mask)


def _works(device: jax.Device) -> bool:
    """A device counts only when a tiny computation on it gives the right answer."""
    try:
        return float(jax.device_put(np.float32(1.0), device) + 1) == 2.0
    except Exception:  # a broken driver or runtime means the device is not usable
        return False


class JaxBackend:
    """bce-core's specification on JAX arrays."""

    name = "jax"
    #: The rules' array operations and argument conversion, for ``bce_core.parallel``.
    ops = OPS
    converter = CONVERTER

    def __init__(self) -> None:
        self._devices: tuple[str, ...] | None = None
        self._devices_lock = threading.Lock()
        self._compiled_functions: dict[tuple, Callable[..., Any]] = {}
        self._compiled_lock = threading.Lock()

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
                    found += [
                        _device_name(platform, i) for i, d in enumerate(candidates) if _works(d)
                    ]
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
            raise ValueError(
                f"device={name!r} is not a JAX device here; use one of "
                f"{', '.join(map(repr, self.devices()))}."
            ) from None

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

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """Where the code path changes: one program for every output up to ``fused.SMALL``
        elements, and on the CPU a loop over chunks from ``chunks.MIN_ELEMENTS``.

        >>> JaxBackend().size_thresholds("cpu")
        (16385, 2097152)
        """
        if device.split(":")[0] == "cpu":
            return (fused.SMALL + 1, chunks.MIN_ELEMENTS)
        return (fused.SMALL + 1,)

    @staticmethod
    def _prepare(
        input_name: str,
        inputs: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        check_data: bool,
    ) -> tuple[Any, ...]:
        """(inputs, targets, weight, pos_weight, mask) checked and converted (``operands``)."""
        prepared = prepare_operands(
            input_name, inputs, targets, weight=weight, pos_weight=pos_weight, mask=mask
        )
        if check_data:
            validate_data(prepared, input_name)
        return _arrays(prepared)

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
    ) -> jax.Array:
        options = check_options(
            label_smoothing=label_smoothing, reduction=reduction, validate=validate
        )
        prepared = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        return autodiff.loss(
            fused.LOGITS, *prepared, (("eps", options.eps), ("reduction", options.reduction))
        )

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
    ) -> jax.Array:
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
            validate=validate,
        )
        prepared = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        return autodiff.loss(
            fused.PROBS,
            *prepared,
            (("clamp", options.log_clamp), ("eps", options.eps), ("reduction", options.reduction)),
        )

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
    ) -> tuple[jax.Array, Any]:
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            wrt=wrt,
            weight=weight,
            pos_weight=pos_weight,
            validate=validate,
        )
        prepared = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        # One program per set of names, whatever their order or repetition.
        keys = tuple(f"grad:{name}" for name in fused.NAMES if name in options.wrt)
        out = fused.outputs(
            fused.LOGITS,
            *prepared,
            (("eps", options.eps), ("reduction", options.reduction)),
            ("loss", *keys),
        )
        return out["loss"], rules.pack_gradients(
            [out[f"grad:{name}"] for name in options.wrt], options.wrt_as_tuple
        )

    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[jax.Array, jax.Array]:
        """Elementwise (d loss / dx, d2 loss / dx2), weights applied, in the logits' shape."""
        prepared = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        out = fused.outputs(
            fused.LOGITS,
            *prepared[:4],
            None,
            (("eps", 0.0), ("reduction", "none")),
            ("grad:logits", "curvature"),
        )
        return out["grad:logits"], out["curvature"]

    # -- JAX's own autodiff through the loss ----------------------------------

    def _differentiable(
        self,
        form: str,
        inputs: Any,
        targets: Any,
        *,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        validate: bool,
        **options: Any,
    ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], jax.Array], tuple]:
        """The checked arrays by name (mask included), the loss as a function of such a dict,
        and a hashable key of the other ``options``. Validated once here, outside any
        transformation, since validation cannot run on traced values."""
        input_name = "logits" if form == "logits" else "probs"
        check_options(validate=validate, **options)
        prepared = self._prepare(input_name, inputs, targets, weight, pos_weight, mask, validate)
        arrays = dict(zip((input_name, "targets", "weight", "pos_weight", "mask"), prepared))
        method = (
            self.binary_cross_entropy_with_logits if form == "logits" else self.binary_cross_entropy
        )

        def loss(values: dict[str, Any]) -> jax.Array:
            return method(
                values[input_name],
                values["targets"],
                weight=values["weight"],
                pos_weight=values["pos_weight"],
                mask=values["mask"],
                **options,
            )

        return arrays, loss, (form, *sorted(options.items()))

    def _compiled(self, key: tuple, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """``jax.jit(build())``, made once per key: a compiled call with the same options and
        shapes then reuses its compilation instead of tracing a fresh closure each time."""
        with self._compiled_lock:
            function = self._compiled_functions.get(key)
            if function is None:
                function = self._compiled_functions[key] = jax.jit(build())
            return function

    def autodiff_value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        wrt: tuple[str, ...],
        compiled: bool = False,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """(loss, gradients of the summed loss w.r.t. each name in ``wrt``) by JAX's reverse
        mode: ``jax.vjp`` with a cotangent of ones, which is ``jax.grad`` of the sum.

        >>> loss, (g,) = JaxBackend().autodiff_value_and_grad(
        ...     jnp.array([0.0, 0.0]), [0.0, 1.0], wrt=("logits",), reduction="sum")
        >>> g.tolist()
        [0.5, -0.5]
        """
        names = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            wrt=wrt,
            weight=weight,
            pos_weight=pos_weight,
            validate=validate,
        ).wrt
        arrays, loss, key = self._differentiable(
            "logits",
            logits,
            targets,
            weight=weight,
            pos_weight=pos_weight,
            mask=mask,
            validate=validate,
            label_smoothing=label_smoothing,
            reduction=reduction,
        )
        moving = tuple(dict.fromkeys(names))

        def build() -> Callable[..., Any]:
            def run(diff: dict[str, jax.Array], rest: dict[str, Any]) -> tuple[Any, Any]:
                value, pullback = jax.vjp(lambda values: loss({**rest, **values}), diff)
                return value, pullback(_ones(value, compiled))[0]

            return run

        run = self._compiled(("value_and_grad", moving, key), build) if compiled else build()
        value, grads = run(
            {n: arrays[n] for n in moving}, {n: v for n, v in arrays.items() if n not in moving}
        )
        return value, tuple(grads[n] for n in names)

    def autodiff_second_derivative(
        self,
        logits: Any,
        targets: Any,
        *,
        compiled: bool = False,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
    ) -> jax.Array:
        """d/dlogits of sum(d loss / d logits) by nested reverse mode (``jax.vjp`` with
        cotangents of ones, as nested ``jax.grad`` of sums): the Hessian's diagonal.

        >>> JaxBackend().autodiff_second_derivative(jnp.array([0.0]), [1.0],
        ...                                         reduction="sum").tolist()
        [0.25]
        """
        arrays, loss, key = self._differentiable(
            "logits",
            logits,
            targets,
            weight=weight,
            pos_weight=pos_weight,
            mask=mask,
            validate=validate,
            label_smoothing=label_smoothing,
            reduction=reduction,
        )

        def build() -> Callable[..., Any]:
            def second(x: jax.Array, rest: dict[str, Any]) -> jax.Array:
                def first(v: jax.Array) -> jax.Array:
                    value, pullback = jax.vjp(lambda u: loss({**rest, "logits": u}), v)
                    return pullback(_ones(value, compiled))[0]

                gradient, pullback = jax.vjp(first, x)
                return pullback(_ones(gradient, compiled))[0]

            return second

        run = self._compiled(("second", key), build) if compiled else build()
        return run(arrays["logits"], {n: v for n, v in arrays.items() if n != "logits"})

    def autodiff_probs_grad(
        self,
        probs: Any,
        targets: Any,
        *,
        compiled: bool = False,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        log_clamp: float = DEFAULT_LOG_CLAMP,
        validate: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """(loss, d summed loss / d probs) of the probability form by JAX's reverse mode.

        >>> loss, grad = JaxBackend().autodiff_probs_grad(jnp.array([0.25]), [1.0])
        >>> grad.tolist()
        [-4.0]
        """
        arrays, loss, key = self._differentiable(
            "probs",
            probs,
            targets,
            weight=weight,
            pos_weight=pos_weight,
            mask=mask,
            validate=validate,
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
        )

        def build() -> Callable[..., Any]:
            def run(p: jax.Array, rest: dict[str, Any]) -> tuple[Any, Any]:
                value, pullback = jax.vjp(lambda v: loss({**rest, "probs": v}), p)
                return value, pullback(_ones(value, compiled))[0]

            return run

        run = self._compiled(("probs", key), build) if compiled else build()
        return run(arrays["probs"], {n: v for n, v in arrays.items() if n != "probs"})

    # -- optional: the framework's own loss, drawn next to ours by `bce conformance --html` --

    def framework_loss(self, logits: Any, targets: Any) -> tuple[jax.Array, jax.Array]:
        """optax.sigmoid_binary_cross_entropy, its gradient by jax.grad (ImportError without optax).

        Elementwise (reduction none), in the input's dtype and on its device; jitted, as
        training code runs it, and compiled once per shape and dtype.

        >>> loss, grad = JaxBackend().framework_loss(jnp.array([0.0, jnp.inf], jnp.float32),
        ...                                        jnp.ones(2, jnp.float32))
        >>> loss.tolist()  # optax gives NaN at x = +inf; the exact loss is 0
        [0.6931471824645996, nan]
        """
        import optax  # optional: only this method needs it

        def build() -> Callable[..., Any]:
            def run(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
                loss = optax.sigmoid_binary_cross_entropy(x, y)
                grad = jax.grad(lambda v: jnp.sum(optax.sigmoid_binary_cross_entropy(v, y)))(x)
                return loss, grad

            return run

        x = logits if isinstance(logits, jax.Array) else jnp.asarray(logits)
        y = (targets if isinstance(targets, jax.Array) else jnp.asarray(targets)).astype(x.dtype)
        return self._compiled(("framework_loss",), build)(x, y)
