"""The one-pass path for large inputs: loss and gradient from one compiled kernel.

``one_pass`` is the loss from logits written as plain tensor operations on the
``kernels`` math: it reads x, y (and weight, pos_weight, mask) once and
writes the reduced loss (summed in float64) and, when asked, d loss / d x,
from one exponential per element. ``torch.compile`` turns it into a single
fused loop (C++ with vector instructions on the CPU, Triton on CUDA), which
is what makes the Torch backend faster than PyTorch's own loss: eager
PyTorch makes one pass over memory per operation.

``CompiledPrograms`` keeps one compiled program per kind of call (reduced or
not, with or without the gradient) and argument layout (dtypes, which options
are given, broadcast dimensions), with sizes dynamic, so new batch sizes do
not recompile. Compiling takes seconds (once per kind and
process; torch caches the code on disk), so the backend uses this path only
from ``DEFAULT_MIN_ELEMENTS`` elements. ``BCE_TORCH_COMPILE=0`` turns it off;
when compiling fails (no C++ compiler, for example) the backend warns once
and computes eagerly, with the same results.

``CompiledLoss`` is the autograd Function around it: its forward runs the
program with the gradient when the logits require grad, and its backward
scales that gradient by the upstream one. Differentiating twice
(``create_graph=True``) recomputes through the exact eager Functions.

>>> import torch
>>> x, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
>>> half = torch.tensor(0.5, dtype=torch.float64)  # d loss / d element sum of a mean of 2
>>> loss, grad = one_pass(x, y, None, None, None, None, half, scale="total", with_grad=True)
>>> round(loss.item(), 4), [round(v, 4) for v in grad.tolist()]
(1.41, [-0.25, 0.4404])
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from bce_core import rules
from bce_core.rules import smoothed_targets, smoothing_floats, zero_safe

from .kernels import LogitParts, logit_grad, logit_loss
from .operands import TORCH_OPS as OPS
from .operands import transforms_active, working_dtype

#: Inputs with fewer elements are computed eagerly (no compile wait for small calls).
DEFAULT_MIN_ELEMENTS = 1 << 14

#: Inductor options of the compile: a small first size must not make the CPU loop
#: single-threaded for good.
_COMPILE_OPTIONS = {"cpp.min_chunk_size": 1}

#: Set to 0 (or "off", "false") to never compile.
COMPILE_ENV = "BCE_TORCH_COMPILE"


class CompileFallbackWarning(UserWarning):
    """The one-pass kernel could not be compiled; the backend computes eagerly instead."""


def compiling_enabled() -> bool:
    """False when ``BCE_TORCH_COMPILE`` is 0, off, false or no.

    >>> isinstance(compiling_enabled(), bool)
    True
    """
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def coefficients(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    label_smoothing: float,
) -> tuple[torch.Tensor | None, ...]:
    """weight, pos_weight and the smoothing in the working dtype; None where absent (or 0).

    The smoothing is the tensor (1 - eps, eps / 2) of ``rules.smoothing_floats``, so
    one compiled program serves every value (a Python number would be compiled in).

    >>> coefficients(torch.zeros(2, dtype=torch.float16), None, None, 0.1)
    (None, None, tensor([0.9000, 0.0500]))
    """
    dtype = working_dtype(x.dtype)
    smoothing = (
        None
        if label_smoothing == 0
        else torch.tensor(smoothing_floats(label_smoothing), dtype=dtype, device=x.device)
    )
    return (
        None if weight is None else weight.to(dtype),
        None if pos_weight is None else pos_weight.to(dtype),
        smoothing,
    )


def one_pass(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    q: torch.Tensor | None,
    smoothing: torch.Tensor | None,
    keep: torch.Tensor | None,
    factor: torch.Tensor | None,
    *,
    scale: str,
    with_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss, d loss / d x) of w [(1 - y') softplus(x) + q y' softplus(-x)].

    ``smoothing`` is (1 - eps, eps / 2) as a tensor (see ``coefficients``), or None.
    ``scale`` is "none" (per element) or "total": factor * the float64 sum of the
    element losses (0 where the factor is 0, a zero denominator), returned in
    float64, with the gradient scaled by the factor. The gradient has x's dtype.
    Masked-out elements (``keep`` False) get harmless values and contribute exactly 0.
    """
    dtype = working_dtype(x.dtype)
    xw, yw = x.to(dtype), y.to(dtype)
    if keep is not None:
        xw, yw = torch.where(keep, xw, 0.0), torch.where(keep, yw, 0.0)
        w = keep.to(dtype) if w is None else torch.where(keep, w, 0.0)
    if smoothing is None:
        yp, one_minus_yp = smoothed_targets(yw, 0.0)
    else:  # the smoothing is a run-time input here, not a number to branch on
        keep_part, half = smoothing[0], smoothing[1]
        yp, one_minus_yp = smoothed_targets(yw, None, affine=lambda v: v * keep_part + half)
    parts = LogitParts(xw)
    if w is None and q is None:
        elements = _unweighted_loss(parts, yp, one_minus_yp)
    else:
        elements = logit_loss(parts, yp, one_minus_yp, w, q)
    grad = logit_grad(parts, yp, one_minus_yp, w, q) if with_grad else None
    if keep is not None:
        elements = torch.where(keep, elements, 0.0)
        grad = None if grad is None else torch.where(keep, grad, 0.0)
    if scale == "none":
        return elements.to(x.dtype), None if grad is None else grad.to(x.dtype)
    assert factor is not None
    elements = elements.to(torch.float64)
    if x.dtype == torch.float64:  # a float64 sum of narrower elements cannot overflow
        loss = rules.reduce_total(OPS, elements, lambda total: zero_safe(OPS, factor, total))
    else:
        loss = zero_safe(OPS, factor, elements.sum())
    if grad is not None:
        grad = zero_safe(OPS, factor.to(dtype), grad).to(x.dtype)
    return loss, grad


def applies(
    x: torch.Tensor,
    shape: tuple[int, ...],
    others: tuple[torch.Tensor | None, ...],
    min_elements: int,
) -> bool:
    """Whether the one-pass path can compute this call: a large enough floating input of
    the loss's full shape on the CPU or CUDA, no transform active, and no other operand
    that autograd must differentiate (those calls take the eager Functions).

    >>> applies(torch.zeros(4), (4,), (torch.zeros(4),), min_elements=1)
    True
    """
    if x.numel() < max(min_elements, 1) or tuple(x.shape) != shape:
        return False
    if x.device.type not in ("cpu", "cuda"):
        return False
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in others):
        return False
    return not transforms_active()


def _unweighted_loss(
    parts: LogitParts, yp: torch.Tensor, one_minus_yp: torch.Tensor
) -> torch.Tensor:
    """(1 - y') softplus(x) + y' softplus(-x) as c |x| + softplus(-|x|), c the target weight
    on x's side: the same value (the two target weights sum to 1), with fewer operations.

    Both terms are non-negative, so nothing cancels; a zero c gives exactly 0 at |x| = inf.
    """
    c = torch.where(parts.positive, one_minus_yp, yp)
    linear = torch.where(c == 0, 0.0, c * -parts.neg_abs)
    return linear + parts.softplus_sides()[1] * parts.scale


#: Stands for the float64 dtype of the factor's count (``rules.denominator`` reads its dtype).
_FLOAT64 = torch.zeros((), dtype=torch.float64)


def reduction_scale(
    reduction: str,
    shape: tuple[int, ...],
    keep: torch.Tensor | None,
    weight: torch.Tensor | None,
    device: torch.device,
) -> tuple[str, torch.Tensor | None]:
    """``one_pass``'s scale for ``reduction`` and its factor (d loss / d element sum), a
    float64 tensor, so that one compiled program serves every reduction and batch size:
    1 / ``rules.denominator``, or 0 for a zero denominator (``rules.divide_or_zero``).

    >>> reduction_scale("mean", (4,), torch.tensor([True, False, True, True]), None, "cpu")
    ('total', tensor(0.3333, dtype=torch.float64))
    """
    if reduction == "none":
        return "none", None
    by = rules.denominator(
        OPS,
        reduction,
        shape,
        keep=keep,
        like=_FLOAT64,
        weight=None if weight is None else weight.to(torch.float64),
    )
    _, factor = rules.divide_or_zero(OPS, 1.0, by)
    if not isinstance(factor, torch.Tensor):
        factor = torch.tensor(factor, dtype=torch.float64, device=device)
    return "total", factor


class Kind(NamedTuple):
    """What a compiled program computes: ``one_pass``'s scale, and whether the gradient."""

    scale: str
    with_grad: bool


def _layout(tensor: torch.Tensor | None) -> tuple[Any, ...] | None:
    """What the compiler specializes on besides sizes: dtype, device and the dimensions of
    size 0 or 1 (broadcast dimensions); other sizes stay symbolic."""
    if tensor is None:
        return None
    return (tensor.dtype, tensor.device.type, tuple(s if s < 2 else 2 for s in tensor.shape))


def _own_function(kind: Kind, number: int) -> Callable[..., Any]:
    """``one_pass`` for ``kind`` as a function with a code object of its own.

    torch.compile keeps compiled code, and its limit of recompiles, per code object;
    closures of one ``def`` share theirs, so every program would count against one limit.
    """

    def run(*args: Any) -> Any:
        return one_pass(*args, scale=kind.scale, with_grad=kind.with_grad)

    code = run.__code__.replace(co_name=f"one_pass_{number}")
    return types.FunctionType(code, run.__globals__, code.co_name, None, run.__closure__)


class CompiledPrograms:
    """``one_pass`` compiled once per ``Kind`` and argument layout, shared by the threads
    of one backend.

    A failed compile is remembered (``failure``): later calls go eager, and the
    warning is given once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._programs: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self.failure: str | None = None

    def program(self, kind: Kind, args: tuple[Any, ...]) -> Callable[..., Any]:
        """The program for ``kind`` and the arguments' layouts: one compile each, so the
        compiler's own limit on recompiles per program is never reached."""
        key = (kind, *map(_layout, args))
        program = self._programs.get(key)  # one dict read: no lock once compiled
        if program is not None:
            return program
        with self._lock:
            if key not in self._programs:
                compiled = torch.compile(
                    _own_function(kind, len(self._programs)), fullgraph=True, dynamic=True
                )
                self._programs[key] = self._compiling_first(key, compiled)
            return self._programs[key]

    def _compiling_first(
        self, key: tuple[Any, ...], compiled: Callable[..., Any]
    ) -> Callable[..., Any]:
        """``compiled``, whose first call (the compile) runs under ``_COMPILE_OPTIONS``.

        The options are applied to that call only: passed to torch.compile they would
        be patched in and out of Inductor's config around every call, which costs more
        than the kernel itself at 10^5 elements.
        """

        def first(*args: Any) -> Any:
            with torch._inductor.config.patch(_COMPILE_OPTIONS):
                result = compiled(*args)
            self._programs[key] = compiled  # later calls go straight to the compiled code
            return result

        return first

    def run(self, kind: Kind, *args: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The compiled program on ``args``; eager ``one_pass`` once compiling has failed."""
        # Detached: the program computes values; autograd is CompiledLoss's business.
        args = tuple(
            a.detach() if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args
        )
        if self.failure is None:
            try:
                return self.program(kind, args)(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager path
                self._fail(exc)
        return one_pass(*args, scale=kind.scale, with_grad=kind.with_grad)

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            first = self.failure is None
            self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        if first:
            warnings.warn(
                f"bce-core could not compile its one-pass Torch kernel "
                f"({self.failure}); computing eagerly from now on. Set "
                f"{COMPILE_ENV}=0 to skip compiling.",
                CompileFallbackWarning,
                stacklevel=4,
            )


class CompiledLoss(torch.autograd.Function):
    """The reduced (or per-element) loss through ``CompiledPrograms``, differentiable in x.

    ``apply(x, y, w, q, smoothing, keep, factor, programs, scale, recompute)``: the
    targets and coefficients must not require grad. ``recompute(x)`` gives the
    same loss through the eager Functions, for derivatives of the gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        q: torch.Tensor,
        smoothing: torch.Tensor,
        keep: torch.Tensor | None,
        factor: torch.Tensor,
        programs: CompiledPrograms,
        scale: str,
        recompute: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        with_grad = bool(ctx.needs_input_grad[0])
        kind = Kind(scale, with_grad)
        loss, grad = programs.run(kind, x, y, w, q, smoothing, keep, factor)
        if with_grad:
            ctx.save_for_backward(x)
            # Not a saved tensor: the backward hands it on (or scales it in place), so
            # autograd can keep it as the gradient instead of copying it.
            ctx.grad, ctx.total, ctx.recompute = grad, scale != "none", recompute
        return loss.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        grad = ctx.__dict__.pop("grad", None)
        create_graph = torch.is_grad_enabled()
        if grad is None or create_graph:
            # A second backward (retain_graph=True), or create_graph=True: the eager
            # Functions give a gradient that can itself be differentiated.
            with torch.enable_grad():
                (grad_x,) = torch.autograd.grad(
                    ctx.recompute(x), x, upstream, create_graph=create_graph
                )
        elif not ctx.total:
            # A zero upstream gives exactly 0.
            grad_x = zero_safe(OPS, upstream.to(grad.dtype), grad)
        elif upstream.device.type == "cpu" and upstream.item() == 1.0:
            grad_x = grad  # loss.backward(): no pass over the gradient at all
        else:
            grad_x = grad.mul_(upstream.to(grad.dtype))
        return (grad_x,) + (None,) * 9
