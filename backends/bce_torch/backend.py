"""The Torch backend object.

float32 and float64 tensors are computed natively with the stable forms of
``kernels`` (within 4 ULP of exact, measured against the mpmath oracle);
float16 and bfloat16 are computed in float32 and rounded once. Results are
tensors of the input's dtype on the input's device; reduced losses are 0-d.

The losses are ``torch.autograd.Function``s with analytic derivatives (see
``autodiff``; under torch.compile, ops whose own autodiff is the spec's),
so ``loss.backward()``, ``torch.autograd.grad`` (to second order),
``torch.func`` and ``torch.compile(fullgraph=True)`` all give the spec's
derivatives. ``value_and_grad`` and ``grad_hess`` are fused analytic
evaluations that build no autograd graph.

>>> import torch
>>> backend = TorchBackend()
>>> logits = torch.tensor([[9.7], [0.0]], requires_grad=True)
>>> loss = backend.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0], [1.0]]))
>>> loss.dtype, round(loss.item(), 4)
(torch.float32, 5.1966)
>>> loss.backward()
>>> [round(v, 4) for v in logits.grad.flatten().tolist()]
[0.5, -0.25]
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bce_core.rules import (
    Operands,
    pack_gradients,
    reduce_elements,
    reduction_gradients,
    smoothed_targets,
)
from bce_core.spec import DEFAULT_LOG_CLAMP, check_options, check_wrt, check_wrt_given

from .autodiff import (
    as_tensors,
    autograd_second_derivative,
    autograd_value_and_grad,
    func_second_derivative,
    logit_loss_elements,
    probs_loss_elements,
)
from .fused import (
    DEFAULT_MIN_ELEMENTS,
    CompiledLoss,
    CompiledPrograms,
    Kind,
    applies,
    coefficients,
    compiling_enabled,
    reduction_scale,
    transforms_active,
)
from .kernels import LogitParts, logit_grad, logit_hessian, logit_loss, logit_partials
from .lean import applies as lean_applies
from .lean import lean_loss, lean_value_and_grad
from .operands import (
    TORCH_CONVERTER,
    as_input,
    numpy_to_tensor,
    prepare,
    tensor_to_numpy,
    validate,
    working_dtype,
)
from .operands import TORCH_OPS as OPS

if TYPE_CHECKING:  # Unpack is in typing from Python 3.11
    from typing_extensions import Unpack

    from bce_core.plugin import LogitOptions, ProbsOptions

Working = tuple[
    torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None", "torch.Tensor | None"
]


def _working(ops: Operands[torch.Tensor]) -> Working:
    """x, y, w, q in the working dtype (float32 for float16 and bfloat16) and the mask."""
    dtype = working_dtype(ops.inputs.dtype)
    # No .to() when the dtype already matches: under torch.compile even a no-op cast
    # changes how a later autograd.Function is traced.
    cast = lambda t: t if t is None or t.dtype == dtype else t.to(dtype)  # noqa: E731
    return (cast(ops.inputs), cast(ops.targets), cast(ops.weight), cast(ops.pos_weight), ops.mask)


def _masked_out_made_safe(
    keep: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    q: torch.Tensor | None,
    safe_x: float,
) -> Working:
    """Replace masked-out inputs by harmless values, so no NaN or inf there reaches any
    derivative (of any order): a where() on the output alone would give 0 * NaN."""
    x = torch.where(keep, x, safe_x)
    y = torch.where(keep, y, 0.0)
    w = None if w is None else torch.where(keep, w, 0.0)
    q = None if q is None else torch.where(keep, q, 1.0)
    return x, y, w, q, keep


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.split(":")[0] == "gpu":
        device = "cuda" + device[3:]  # the suite's framework-neutral name
    return torch.device(device)


def _probe_devices() -> list[str]:
    """Devices on which a tiny computation succeeds, as "cpu", "cuda:0", ..., "mps"."""
    candidates = ["cpu"]
    if torch.cuda.is_available():
        candidates += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        candidates.append("mps")
    usable = []
    for name in candidates:
        try:
            if (torch.ones(2, device=name) * 2).sum().item() == 4.0:
                usable.append(name)
        except Exception:  # a listed device that cannot run (driver, capability) is not usable
            continue
    return usable


class TorchBackend:
    """bce-core's specification on torch tensors."""

    name = "torch"
    #: The rules' array operations and argument conversion, for ``bce_core.parallel``.
    ops = OPS
    converter = TORCH_CONVERTER

    def __init__(self, *, one_pass_min_elements: int | None = DEFAULT_MIN_ELEMENTS) -> None:
        """``one_pass_min_elements``: calls on inputs this large use the compiled one-pass
        kernel (see ``compiled``); None never does, and neither does any backend created
        while the environment variable ``BCE_TORCH_COMPILE`` is 0."""
        self._devices: list[str] | None = None
        self._lock = threading.Lock()
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._programs = CompiledPrograms()
        self._one_pass_min = one_pass_min_elements if compiling_enabled() else None

    # -- the Backend protocol: arrays and devices ------------------------------

    def version(self) -> str:
        return torch.__version__

    def devices(self) -> list[str]:
        with self._lock:  # probed once per instance, even when threads ask together
            if self._devices is None:
                self._devices = _probe_devices()
            return list(self._devices)

    def asarray(self, array: Any, device: str | None = None) -> torch.Tensor:
        return numpy_to_tensor(np.asarray(array), _device(device))

    def to_numpy(self, array: Any) -> np.ndarray:
        return tensor_to_numpy(array) if isinstance(array, torch.Tensor) else np.asarray(array)

    def device_of(self, array: torch.Tensor) -> str:
        """The device of a tensor as ``devices()`` names it ("cpu", "cuda:0", "mps").

        >>> TorchBackend().device_of(torch.zeros(1))
        'cpu'
        """
        device = array.device
        if device.type in ("cpu", "mps"):
            return device.type
        return f"{device.type}:{0 if device.index is None else device.index}"

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """Where the code path changes: the compiled one-pass kernel from
        ``one_pass_min_elements`` elements (nothing when compiling is off).

        >>> TorchBackend().size_thresholds("cpu")
        (16384,)
        """
        return () if self._one_pass_min is None else (self._one_pass_min,)

    def as_parameter(self, array: Any, device: str | None = None) -> torch.Tensor:
        """``array`` as a user's parameter: a leaf requiring grad, with a gradient already
        accumulated (which a forward must leave alone).

        >>> TorchBackend().as_parameter(np.zeros(2, np.float32)).grad.tolist()
        [0.25, 0.25]
        """
        leaf = self.asarray(array, device).requires_grad_(True)
        leaf.grad = torch.full_like(leaf, 0.25)
        return leaf

    def parameter_state(self, parameter: torch.Tensor) -> dict[str, np.ndarray | None]:
        """What a call must leave alone: the parameter's values and accumulated gradient."""
        grad = parameter.grad
        return {
            "values": self.to_numpy(parameter.detach()),
            "grad": None if grad is None else self.to_numpy(grad),
        }

    # -- the losses ---------------------------------------------------------------

    @staticmethod
    def _prepare(
        input_name: str,
        inputs: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        validate_data: bool,
    ) -> Operands[torch.Tensor]:
        ops = prepare(input_name, inputs, targets, weight=weight, pos_weight=pos_weight, mask=mask)
        if validate_data:
            validate(ops, input_name)
        return ops

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
    ) -> torch.Tensor:
        options = check_options(
            label_smoothing=label_smoothing, reduction=reduction, validate=validate
        )
        eps, reduction = options.eps, options.reduction
        # The lean path on the caller's tensors when they fit it as they are, else on the
        # converted operands: the same values take the same path whatever their types.
        lean = self._lean_applies(logits, targets, weight, pos_weight, mask, validate, reduction)
        if lean:
            exact = self._exact_loss(targets, weight, pos_weight, mask, eps, reduction)
            loss = lean_loss(logits, targets, weight, pos_weight, mask, eps, reduction, exact)
            if loss is not None:
                return loss
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if not lean and self._lean_applies(
            ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask, validate, reduction
        ):
            operands = (ops.targets, ops.weight, ops.pos_weight, ops.mask)
            exact = self._exact_loss(*operands, eps, reduction)
            loss = lean_loss(ops.inputs, *operands, eps, reduction, exact)
            if loss is not None:
                return loss
        if self._one_pass_applies(ops, (ops.targets, ops.weight, ops.pos_weight)):
            return self._one_pass_loss(ops, eps, reduction)
        return self._eager_logits_loss(ops, eps, reduction)

    def _lean_applies(
        self,
        logits: Any,
        targets: Any,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        validate: bool,
        reduction: str,
    ) -> bool:
        """Whether ``lean`` computes this call: the usual small one (see ``lean.applies``),
        below the one-pass size and outside every transform."""
        return (
            type(logits) is torch.Tensor
            and not validate
            and (self._one_pass_min is None or logits.numel() < self._one_pass_min)
            and lean_applies(logits, targets, reduction, weight, pos_weight, mask)
            and not transforms_active()
        )

    def _exact_loss(
        self,
        targets: torch.Tensor,
        weight: Any,
        pos_weight: Any,
        mask: Any,
        eps: float,
        reduction: str,
    ) -> Callable[..., Any]:
        """The loss of ``targets`` as a function of the logits, through the exact Functions."""

        def exact(z: torch.Tensor) -> torch.Tensor:
            ops = self._prepare("logits", z, targets, weight, pos_weight, mask, False)
            return self._eager_logits_loss(ops, eps, reduction)

        return exact

    def _one_pass_applies(
        self, ops: Operands[torch.Tensor], others: tuple[torch.Tensor | None, ...]
    ) -> bool:
        return self._one_pass_min is not None and applies(
            ops.inputs, ops.shape, others, self._one_pass_min
        )

    def _one_pass_loss(
        self, ops: Operands[torch.Tensor], eps: float, reduction: str
    ) -> torch.Tensor:
        """The loss through the compiled kernel, differentiable in the logits."""
        x = ops.inputs
        w, q, smoothing = coefficients(x, ops.weight, ops.pos_weight, eps)
        scale, factor = reduction_scale(reduction, ops.shape, ops.mask, ops.weight, x.device)

        if not (x.requires_grad and torch.is_grad_enabled()):  # nothing for autograd to record
            loss, _ = self._programs.run(
                Kind(scale, False), x, ops.targets, w, q, smoothing, ops.mask, factor
            )
            return loss.to(x.dtype)

        def recompute(z: torch.Tensor) -> torch.Tensor:
            return self._eager_logits_loss(dataclasses.replace(ops, inputs=z), eps, reduction)

        return CompiledLoss.apply(
            x, ops.targets, w, q, smoothing, ops.mask, factor, self._programs, scale, recompute
        )

    @staticmethod
    def _eager_logits_loss(ops: Operands[torch.Tensor], eps: float, reduction: str) -> torch.Tensor:
        """The loss through the eager Functions, differentiable in every operand, to any order."""
        x, y, w, q, keep = _working(ops)
        if keep is not None:
            x, y, w, q, keep = _masked_out_made_safe(keep, x, y, w, q, 0.0)
        elements = logit_loss_elements(x, y, w, q, eps)
        loss = reduce_elements(OPS, elements, reduction, keep=keep, weight=w).loss
        return loss.to(ops.inputs.dtype)

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
    ) -> torch.Tensor:
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            log_clamp=log_clamp,
            validate=validate,
        )
        eps, reduction, clamp = options.eps, options.reduction, options.log_clamp
        ops = self._prepare("probs", probs, targets, weight, pos_weight, mask, validate)
        p, y, w, q, keep = _working(ops)
        if keep is not None:
            p, y, w, q, keep = _masked_out_made_safe(keep, p, y, w, q, 0.5)
        elements = probs_loss_elements(p, y, w, q, eps, clamp)
        loss = reduce_elements(OPS, elements, reduction, keep=keep, weight=w).loss
        return loss.to(ops.inputs.dtype)

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
    ) -> tuple[torch.Tensor, Any]:
        options = check_options(
            label_smoothing=label_smoothing,
            reduction=reduction,
            wrt=wrt,
            weight=weight,
            pos_weight=pos_weight,
            validate=validate,
        )
        eps, reduction = options.eps, options.reduction
        names, as_tuple = options.wrt, options.wrt_as_tuple
        lean = names == ("logits",) and self._lean_applies(
            logits, targets, weight, pos_weight, mask, validate, reduction
        )
        if lean:
            args = (logits, targets, weight, pos_weight, mask, eps, reduction)
            result = lean_value_and_grad(*args)
            if result is not None:
                return result[0], pack_gradients([result[1]], as_tuple)
        ops = self._prepare("logits", logits, targets, weight, pos_weight, mask, validate)
        if (
            not lean
            and names == ("logits",)
            and self._lean_applies(
                ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask, validate, reduction
            )
        ):
            result = lean_value_and_grad(
                ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask, eps, reduction
            )
            if result is not None:
                return result[0], pack_gradients([result[1]], as_tuple)
        dtype, shape = ops.inputs.dtype, ops.shape
        if names == ("logits",) and self._one_pass_applies(ops, ()):
            x = ops.inputs
            w, q, smoothing = coefficients(x, ops.weight, ops.pos_weight, eps)
            scale, factor = reduction_scale(reduction, shape, ops.mask, ops.weight, x.device)
            with torch.no_grad():
                loss, grad = self._programs.run(
                    Kind(scale, True), x, ops.targets, w, q, smoothing, ops.mask, factor
                )
            return loss.to(dtype), pack_gradients([grad], as_tuple)
        with torch.no_grad():
            x, y, w, q, keep = _working(ops)
            parts = LogitParts.of(x)  # the one exp shared by the loss and every derivative
            yp, one_minus_yp = smoothed_targets(y, eps)
            elements = logit_loss(parts, yp, one_minus_yp, w, q)
            reduced = reduce_elements(OPS, elements, reduction, keep=keep, weight=w)
            partials = logit_partials(parts, yp, one_minus_yp, w, q, eps, names)
            arg_shapes = {
                "weight": None if w is None else tuple(w.shape),
                "pos_weight": None if q is None else tuple(q.shape),
            }
            grads = reduction_gradients(
                OPS,
                names,
                {name: (lambda t=t: t) for name, t in partials.items()},
                shape=shape,
                arg_shapes=arg_shapes,
                reduction=reduction,
                reduced=reduced,
            )
        return reduced.loss.to(dtype), pack_gradients([g.to(dtype) for g in grads], as_tuple)

    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ops = self._prepare("logits", logits, targets, weight, pos_weight, None, False)
        with torch.no_grad():
            x, y, w, q, _ = _working(ops)
            parts = LogitParts.of(x)
            yp, one_minus_yp = smoothed_targets(y, 0.0)
            grad = logit_grad(parts, yp, one_minus_yp, w, q)
            hess = logit_hessian(parts, yp, one_minus_yp, w, q)
        dtype, shape = ops.inputs.dtype, ops.shape
        return grad.expand(shape).to(dtype), hess.expand(shape).to(dtype)

    # -- the AutodiffBackend protocol: torch's own autodiff through the losses ---------

    def _compiled_function(self, name: str) -> Callable[..., Any]:
        """torch.compile(fullgraph=True) of one of the methods, made once per backend.

        The arrays are arguments, never closed over, so a new call reuses the compiled
        code whenever shapes, dtypes and options match.
        """
        with self._lock:
            if name not in self._compiled:
                function = {
                    "logits": self.binary_cross_entropy_with_logits,
                    "probs": self.binary_cross_entropy,
                    "second": self._second_derivative,
                }[name]
                self._compiled[name] = torch.compile(function, fullgraph=True)
            return self._compiled[name]

    def _loss_function(self, form: str, compiled: bool) -> Callable[..., torch.Tensor]:
        if compiled:
            return self._compiled_function(form)
        if form == "logits":
            return self.binary_cross_entropy_with_logits
        return self.binary_cross_entropy

    def _autodiff(
        self,
        form: str,
        inputs: Any,
        targets: Any,
        names: tuple[str, ...],
        compiled: bool,
        options: dict[str, Any],
    ) -> tuple[torch.Tensor, tuple[Any, ...]]:
        input_name = "logits" if form == "logits" else "probs"
        return autograd_value_and_grad(
            self._loss_function(form, compiled),
            input_name,
            inputs,
            targets,
            names,
            options,
            tensors_first=compiled,
        )

    def autodiff_value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        wrt: tuple[str, ...],
        compiled: bool = False,
        **options: Unpack[LogitOptions],
    ) -> tuple[torch.Tensor, tuple[Any, ...]]:
        """(loss, gradients w.r.t. each name in ``wrt``) by torch.autograd through the loss.

        >>> loss, (g,) = TorchBackend().autodiff_value_and_grad(
        ...     torch.tensor([0.0, 0.0]), [0.0, 1.0], wrt=("logits",), reduction="sum")
        >>> g.tolist()
        [0.5, -0.5]
        """
        names, _ = check_wrt(wrt)
        check_wrt_given(names, weight=options.get("weight"), pos_weight=options.get("pos_weight"))
        return self._autodiff("logits", logits, targets, names, compiled, {**options})

    def autodiff_probs_grad(
        self, probs: Any, targets: Any, *, compiled: bool = False, **options: Unpack[ProbsOptions]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, d loss / d probs) of the probability form by torch.autograd.

        >>> loss, grad = TorchBackend().autodiff_probs_grad(torch.tensor([0.25]), [1.0])
        >>> grad.tolist()
        [-4.0]
        """
        loss, (grad,) = self._autodiff("probs", probs, targets, ("probs",), compiled, {**options})
        return loss, grad

    def autodiff_second_derivative(
        self, logits: Any, targets: Any, *, compiled: bool = False, **options: Unpack[LogitOptions]
    ) -> torch.Tensor:
        """d/dlogits of sum(d loss / d logits) by nested autodiff: the diagonal of the Hessian.

        Eager: torch.autograd.grad twice (create_graph=True). Compiled: torch.compile
        cannot differentiate a compiled graph twice, so nested torch.func.grad is compiled.

        >>> TorchBackend().autodiff_second_derivative(torch.tensor([0.0]), [1.0],
        ...                                           reduction="sum").tolist()
        [0.25]
        """
        x = as_input("logits", logits).detach()
        if compiled:
            targets, tensors = as_tensors(x, targets, {**options})
            return self._compiled_function("second")(x, targets, **tensors)
        return autograd_second_derivative(
            self.binary_cross_entropy_with_logits, x, targets, {**options}
        )

    def _second_derivative(self, x: torch.Tensor, targets: Any, **options: Any) -> torch.Tensor:
        """What ``autodiff_second_derivative(compiled=True)`` compiles."""
        return func_second_derivative(self.binary_cross_entropy_with_logits, x, targets, options)

    # -- optional: the framework's own loss, drawn next to ours by `bce conformance --html` --

    def framework_loss(self, logits: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.nn.functional.binary_cross_entropy_with_logits, its gradient by torch.autograd.

        Elementwise (reduction none), in the input's dtype and on its device.

        >>> loss, grad = TorchBackend().framework_loss(torch.tensor([0.0, 20.0]),
        ...                                            torch.tensor([1.0, 1.0]))
        >>> grad.tolist()  # at x = 20 PyTorch's gradient rounds to 0; exact is -2.06e-9
        [-0.5, 0.0]
        """
        x = as_input("logits", logits).detach().requires_grad_(True)
        y = targets if isinstance(targets, torch.Tensor) else self.asarray(np.asarray(targets))
        y = y.detach().to(dtype=x.dtype, device=x.device)
        with torch.enable_grad():  # the caller may be under torch.no_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad
