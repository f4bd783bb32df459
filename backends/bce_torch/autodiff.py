"""The losses as ``torch.autograd.Function``s, so torch's own autodiff gives the spec's derivatives.

``LogitLoss`` computes the element loss from logits with one exp per
element and keeps that exp for its backward, which is ``LogitLossGrad``:
another Function whose forward gives every first derivative from the kept
exp and whose backward gives the analytic second derivatives (for example
d2/dx2 = w (1 + (q - 1) y') sigma(x) sigma(-x)), built on ``Logistic``, a
primitive whose derivatives are its own outputs, so every order is
analytic. ``ProbsLoss`` is the probability form with PyTorch's gradient
(the derivative of the unclamped logs over max(p (1 - p), 1e-12)).

They use ``setup_context`` and ``generate_vmap_rule`` and define ``jvp``
next to ``backward``, so they work under ``torch.func`` (grad, vmap, jacrev,
jacfwd, hessian) and forward-mode AD. Inputs are float32 or float64 tensors;
weight and pos_weight may be None (meaning 1) or broadcast to the logits'
shape; their gradients are summed back to their shapes.

``logit_loss_elements`` and ``probs_loss_elements`` are the entry points.
They also decide what torch.compile traces, which has two limits: it
refuses a Function that defines ``jvp``, and when it traces torch.func
transforms it treats a Function's backward as a constant (second
derivatives come out as 0). So under torch.compile the logits form is left
to the compiler as plain ops written so that their own autodiff is the
spec's, and the probability form uses ``ProbsLoss`` without its ``jvp``.

>>> import torch
>>> x = torch.tensor([0.0, 2.0], requires_grad=True)
>>> logit_loss_elements(x, torch.tensor([1.0, 0.0]), None, None, 0.0).sum().backward()
>>> [round(v, 4) for v in x.grad.tolist()]
[-0.5, 0.8808]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bce_core.rules import (
    Coefficient,
    smoothed_target_slope,
    smoothed_targets,
    sum_to_shape,
    times,
    weight_times,
    zero_safe,
)
from bce_core.spec import PROBS_GRAD_EPS

from .kernels import (
    LogitParts,
    logit_bracket,
    logit_loss,
    logit_partials,
    probs_bracket,
    probs_grad,
    probs_logs,
)
from .operands import TORCH_OPS as OPS
from .operands import as_input, as_mask_tensor, as_operand_tensor

#: The differentiable arguments, in the order the Functions take them.
ARGUMENTS: tuple[str, ...] = ("logits", "targets", "weight", "pos_weight")
PROBS_ARGUMENTS: tuple[str, ...] = ("probs", "targets", "weight", "pos_weight")


def _sum_to(grad: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    """Sum a full-shape gradient over the axes ``like`` was broadcast along."""
    if grad is None or like is None:
        return None
    return sum_to_shape(OPS, grad, tuple(like.shape))


def _add(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    return term if total is None else total + term


class Logistic(torch.autograd.Function):
    """(softplus(x), softplus(-x), sigma(x), sigma(-x)), differentiable to any order.

    The derivatives are sigma(x), -sigma(-x), and +-sigma(x) sigma(-x): products of
    this Function's own saved outputs, so differentiating the backward again goes
    through this Function again (exact at x = 0, where |x| has no derivative).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = LogitParts.of(x)
        return (*parts.softplus(), *parts.sigmoids())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        ctx.save_for_backward(output[2], output[3])
        ctx.save_for_forward(output[2], output[3])

    @staticmethod
    def backward(
        ctx: Any,
        d_sp_pos: torch.Tensor,
        d_sp_neg: torch.Tensor,
        d_sig_pos: torch.Tensor,
        d_sig_neg: torch.Tensor,
    ) -> torch.Tensor:
        sig_pos, sig_neg = ctx.saved_tensors
        curvature = sig_pos * sig_neg
        return d_sp_pos * sig_pos - d_sp_neg * sig_neg + (d_sig_pos - d_sig_neg) * curvature

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sig_pos, sig_neg = ctx.saved_tensors
        curvature = sig_pos * sig_neg * tangent
        return sig_pos * tangent, -sig_neg * tangent, curvature, -curvature


class LogitLoss(torch.autograd.Function):
    """Element loss w [(1 - y') softplus(x) + q y' softplus(-x)] and its exponential.

    ``apply(x, y, w, q, eps)`` returns ``(loss, u)``; u (exp(-|x|), see
    ``kernels.LogitParts``) is returned only so that the backward can reuse it
    (torch.func requires saved intermediates to be outputs). It is differentiable
    (du/dx = -u for x >= 0, u below) rather than marked non-differentiable, because
    forward-mode AD under vmap (torch.func.hessian) needs a tangent for every output.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: torch.Tensor, y: torch.Tensor, w: Coefficient, q: Coefficient, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = LogitParts.of(x)
        yp, one_minus_yp = smoothed_targets(y, eps)
        return logit_loss(parts, yp, one_minus_yp, w, q), parts.u

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        x, y, w, q, eps = inputs
        ctx.set_materialize_grads(False)  # an unused u gets None, not a tensor of zeros
        ctx.save_for_backward(x, y, w, q, output[1])
        ctx.save_for_forward(x, y, w, q, output[1])
        ctx.eps = eps

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor | None, grad_u: torch.Tensor | None
    ) -> tuple[Any, ...]:
        x, y, w, q, u = ctx.saved_tensors
        names = tuple(name for name, needed in zip(ARGUMENTS, ctx.needs_input_grad) if needed)
        grads: dict[str, Any] = {}
        if names and grad is not None:
            # The names travel as one string: torch.func would flatten a tuple.
            outputs = LogitLossGrad.apply(grad, x, y, w, q, u, ctx.eps, ",".join(names))
            grads = dict(zip(names, outputs))
        if grad_u is not None and "logits" in names:
            grads["logits"] = _add(grads.get("logits"), zero_safe(OPS, grad_u, _u_derivative(x, u)))
        return (
            grads.get("logits"),
            grads.get("targets"),
            _sum_to(grads.get("weight"), w),
            _sum_to(grads.get("pos_weight"), q),
            None,
        )

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, w, q, u = ctx.saved_tensors
        given = {name: t for name, t in zip(ARGUMENTS, tangents) if t is not None}
        yp, one_minus_yp = smoothed_targets(y, ctx.eps)
        partials = logit_partials(
            LogitParts.from_saved(x, u), yp, one_minus_yp, w, q, ctx.eps, tuple(given)
        )
        tangent_x = given.get("logits")
        tangent_u = (
            torch.zeros_like(u)
            if tangent_x is None
            else zero_safe(OPS, tangent_x, _u_derivative(x, u))
        )
        return _directional(partials, given, x), tangent_u


class LogitLossGrad(torch.autograd.Function):
    """grad * d(element loss)/d(name) for each name, from the exp kept by ``LogitLoss``.

    ``apply(grad, x, y, w, q, u, eps, names)``, names comma-separated (for example
    ``"logits,weight"``), returns a tuple in that order, each of the logits' shape.
    A zero ``grad`` gives exactly 0 (masked-out elements, zero denominators), even
    where the derivative itself is infinite or NaN. Its own derivatives are the second
    derivatives of the loss (``_second_partials``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        grad: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        w: Coefficient,
        q: Coefficient,
        u: torch.Tensor,
        eps: float,
        names: str,
    ) -> tuple[torch.Tensor, ...]:
        return _grad_times_partials(grad, x, y, w, q, u, eps, tuple(names.split(",")))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        grad, x, y, w, q, _u, eps, names = inputs
        ctx.save_for_backward(grad, x, y, w, q)
        ctx.save_for_forward(grad, x, y, w, q)
        ctx.eps, ctx.names = eps, tuple(names.split(","))

    @staticmethod
    def backward(ctx: Any, *upstream: torch.Tensor) -> tuple[Any, ...]:
        grad, x, y, w, q = ctx.saved_tensors
        needs = dict(zip(("grad",) + ARGUMENTS, ctx.needs_input_grad))
        first, second = _derivative_tables(x, y, w, q, ctx.eps)
        out: dict[str, torch.Tensor | None] = dict.fromkeys(("grad",) + ARGUMENTS)
        for name, up in zip(ctx.names, upstream):
            if needs["grad"]:
                out["grad"] = _add(out["grad"], zero_safe(OPS, up, first[name]()))
            scaled = grad * up
            for other in ARGUMENTS:
                entry = second.get(frozenset((name, other)))
                if needs[other] and entry is not None:
                    out[other] = _add(out[other], zero_safe(OPS, scaled, entry()))
        full = x.shape
        grads = {k: v if v is None or v.shape == full else v.expand(full) for k, v in out.items()}
        return (
            grads["grad"],
            grads["logits"],
            grads["targets"],
            _sum_to(grads["weight"], w),
            _sum_to(grads["pos_weight"], q),
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx: Any, grad_tangent: Any, *tangents: Any) -> tuple[torch.Tensor, ...]:
        grad, x, y, w, q = ctx.saved_tensors
        given = {name: t for name, t in zip(ARGUMENTS, tangents[:4]) if t is not None}
        first, second = _derivative_tables(x, y, w, q, ctx.eps)
        out = []
        for name in ctx.names:
            total = None if grad_tangent is None else zero_safe(OPS, grad_tangent, first[name]())
            for other, tangent in given.items():
                entry = second.get(frozenset((name, other)))
                if entry is not None:
                    total = _add(total, zero_safe(OPS, grad * tangent, entry()))
            out.append(torch.zeros_like(x) if total is None else total.expand(x.shape))
        return tuple(out)


def _u_derivative(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """du/dx for LogitLoss's second output u = exp(-|x|) (or its shifted form)."""
    return torch.where(x >= 0, -u, u)


def _grad_times_partials(
    grad: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    u: torch.Tensor | None,
    eps: float,
    names: tuple[str, ...],
) -> tuple[torch.Tensor, ...]:
    """grad * d(element loss)/d(name) for each name (u = None: recomputed from x)."""
    yp, one_minus_yp = smoothed_targets(y, eps)
    partials = logit_partials(LogitParts(x, u), yp, one_minus_yp, w, q, eps, names)
    return tuple(zero_safe(OPS, grad, partials[name]) for name in names)


def _directional(
    partials: dict[str, torch.Tensor], tangents: dict[str, torch.Tensor], like: torch.Tensor
) -> torch.Tensor:
    """The sum of tangent * partial over names (a zero tangent contributes exactly 0)."""
    total = None
    for name, tangent in tangents.items():
        total = _add(total, zero_safe(OPS, tangent, partials[name]))
    return torch.zeros_like(like) if total is None else total.expand(like.shape)


def _derivative_tables(
    x: torch.Tensor, y: torch.Tensor, w: Coefficient, q: Coefficient, eps: float
) -> tuple[dict[str, Any], dict[frozenset, Any]]:
    """First and second partial derivatives of the element loss, as lazy expressions.

    Built on ``Logistic``, so they can be differentiated again, to any order.
    """
    sp_pos, sp_neg, sig_pos, sig_neg = Logistic.apply(x)
    yp, one_minus_yp = smoothed_targets(y, eps)
    first = {
        "logits": lambda: (
            zero_safe(OPS, weight_times(OPS, w, one_minus_yp), sig_pos)
            - zero_safe(OPS, weight_times(OPS, w, times(q, yp)), sig_neg)
        ),
        "targets": lambda: zero_safe(
            OPS,
            weight_times(OPS, w, smoothed_target_slope(eps)),
            zero_safe(OPS, q, sp_neg) - sp_pos,
        ),
        "weight": lambda: logit_bracket(sp_pos, sp_neg, yp, one_minus_yp, q),
        "pos_weight": lambda: zero_safe(OPS, weight_times(OPS, w, yp), sp_neg),
    }
    return first, _second_partials(sp_pos, sp_neg, sig_pos, sig_neg, yp, one_minus_yp, w, q, eps)


def _second_partials(
    sp_pos: torch.Tensor,
    sp_neg: torch.Tensor,
    sig_pos: torch.Tensor,
    sig_neg: torch.Tensor,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    eps: float,
) -> dict[frozenset, Any]:
    """The non-zero entries of the Hessian of the element loss in (x, y, w, q), lazily.

    With a = 1 - eps (= dy'/dy): d2/dx2 = w (1 - y' + q y') s(x) s(-x),
    d2/dxdy = -w a (s(x) + q s(-x)), d2/dxdw = (1 - y') s(x) - q y' s(-x),
    d2/dxdq = -w y' s(-x), d2/dydw = a (q sp(-x) - sp(x)), d2/dydq = w a sp(-x),
    d2/dwdq = y' sp(-x); d2/dy2 = d2/dw2 = d2/dq2 = 0 (the loss is linear in each).
    """
    a = smoothed_target_slope(eps)
    qyp = times(q, yp)
    return {
        frozenset(("logits",)): lambda: zero_safe(
            OPS,
            weight_times(OPS, w, one_minus_yp + (yp if qyp is None else qyp)),
            sig_pos * sig_neg,
        ),
        frozenset(("logits", "targets")): lambda: (
            -zero_safe(OPS, weight_times(OPS, w, a), sig_pos + zero_safe(OPS, q, sig_neg))
        ),
        frozenset(("logits", "weight")): lambda: (
            zero_safe(OPS, one_minus_yp, sig_pos) - zero_safe(OPS, qyp, sig_neg)
        ),
        frozenset(("logits", "pos_weight")): lambda: (
            -zero_safe(OPS, weight_times(OPS, w, yp), sig_neg)
        ),
        frozenset(("targets", "weight")): lambda: zero_safe(
            OPS, a, zero_safe(OPS, q, sp_neg) - sp_pos
        ),
        frozenset(("targets", "pos_weight")): lambda: zero_safe(
            OPS, weight_times(OPS, w, a), sp_neg
        ),
        frozenset(("weight", "pos_weight")): lambda: zero_safe(OPS, yp, sp_neg),
    }


class _ProbsLossNoJvp(torch.autograd.Function):
    """Element loss -w [q y' max(log p, c) + (1 - y') max(log1p(-p), c)], torch's gradient.

    ``apply(p, y, w, q, eps, log_clamp)``. d/dp is w (p (1 + (q - 1) y') - q y') /
    max(p (1 - p), 1e-12), as ``torch.nn.BCELoss`` and the reference define it (it
    stays finite at p = 0 and p = 1); the other derivatives are those of the clamped
    logs. The derivatives are made of differentiable ops, so they can be differentiated
    again (by autograd through those ops).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        p: torch.Tensor,
        y: torch.Tensor,
        w: Coefficient,
        q: Coefficient,
        eps: float,
        log_clamp: float,
    ) -> torch.Tensor:
        yp, one_minus_yp = smoothed_targets(y, eps)
        return zero_safe(OPS, w, probs_bracket(p, *probs_logs(p, log_clamp), yp, one_minus_yp, q))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        p, y, w, q, eps, log_clamp = inputs
        ctx.save_for_backward(p, y, w, q)
        ctx.save_for_forward(p, y, w, q)
        ctx.eps, ctx.log_clamp = eps, log_clamp

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        p, y, w, q = ctx.saved_tensors
        names = tuple(name for name, needed in zip(PROBS_ARGUMENTS, ctx.needs_input_grad) if needed)
        partials = _probs_partials(p, y, w, q, ctx.eps, ctx.log_clamp, names)
        grads = {name: zero_safe(OPS, grad, partial) for name, partial in partials.items()}
        return (
            grads.get("probs"),
            grads.get("targets"),
            _sum_to(grads.get("weight"), w),
            _sum_to(grads.get("pos_weight"), q),
            None,
            None,
        )


class ProbsLoss(_ProbsLossNoJvp):
    """The probability-form loss with forward-mode AD (torch.compile traces the base class)."""

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> torch.Tensor:
        p, y, w, q = ctx.saved_tensors
        given = {name: t for name, t in zip(PROBS_ARGUMENTS, tangents) if t is not None}
        partials = _probs_partials(p, y, w, q, ctx.eps, ctx.log_clamp, tuple(given))
        return _directional(partials, given, p)


def _probs_partials(
    p: torch.Tensor,
    y: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    eps: float,
    log_clamp: float,
    names: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """d(element loss)/d(name) of the probability form, for each of ``names``."""
    yp, one_minus_yp = smoothed_targets(y, eps)
    out: dict[str, torch.Tensor] = {}
    if "probs" in names:
        out["probs"] = probs_grad(p, yp, one_minus_yp, w, q, PROBS_GRAD_EPS)
    if any(name != "probs" for name in names):
        log_p, log_1mp = probs_logs(p, log_clamp)
        if "targets" in names:
            out["targets"] = -zero_safe(
                OPS,
                weight_times(OPS, w, smoothed_target_slope(eps)),
                zero_safe(OPS, q, log_p) - log_1mp,
            )
        if "weight" in names:
            out["weight"] = probs_bracket(p, log_p, log_1mp, yp, one_minus_yp, q)
        if "pos_weight" in names:
            out["pos_weight"] = -zero_safe(OPS, weight_times(OPS, w, yp), log_p)
    return out


class ZeroSafeProduct(torch.autograd.Function):
    """coefficient * value with 0 * inf = 0, whose derivative in the coefficient is still the value.

    ``rules.zero_safe`` as plain ops gives 0 for d/d(coefficient) where the coefficient is 0;
    the spec's d loss / d targets with a hard target is the value there (+-inf at x = +-inf).
    Used under torch.compile only (its backward is first order, which is all that the
    coefficient path needs there).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(coefficient: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return zero_safe(OPS, coefficient, value)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any]:
        coefficient, value = ctx.saved_tensors
        return (
            _sum_to(zero_safe(OPS, grad, value), coefficient),
            _sum_to(zero_safe(OPS, grad, coefficient), value),
        )


def _zero_safe_product(coefficient: Coefficient, value: torch.Tensor) -> torch.Tensor:
    return ZeroSafeProduct.apply(coefficient, value)


def logit_loss_elements(
    x: torch.Tensor, y: torch.Tensor, w: Coefficient, q: Coefficient, eps: float
) -> torch.Tensor:
    """Differentiable element loss from logits: ``LogitLoss``, or plain ops under torch.compile.

    Under torch.compile the loss is the plain ops of ``kernels.logit_loss``, whose own
    autodiff gives the spec's derivatives (they are written for it), so AOTAutograd
    derives a fused backward and torch.func transforms, nested grad included, work.
    The one Function left is ``ZeroSafeProduct``, for each coefficient's product: no plain op
    gives 0 * inf = 0 with the derivative inf (the value) in a zero coefficient.

    >>> x, y = torch.tensor([0.0]), torch.tensor([1.0])
    >>> round(logit_loss_elements(x, y, None, None, 0.0).item(), 6)
    0.693147
    """
    if torch.compiler.is_compiling():
        yp, one_minus_yp = smoothed_targets(y, eps)
        return logit_loss(LogitParts(x), yp, one_minus_yp, w, q, product=_zero_safe_product)
    return LogitLoss.apply(x, y, w, q, eps)[0]


def probs_loss_elements(
    p: torch.Tensor, y: torch.Tensor, w: Coefficient, q: Coefficient, eps: float, log_clamp: float
) -> torch.Tensor:
    """Differentiable element loss from probabilities (``ProbsLoss``).

    >>> p, y = torch.tensor([0.5]), torch.tensor([1.0])
    >>> round(probs_loss_elements(p, y, None, None, 0.0, -100.0).item(), 6)
    0.693147
    """
    # torch.compile refuses a Function that defines jvp: trace the class without one.
    function = _ProbsLossNoJvp if torch.compiler.is_compiling() else ProbsLoss
    return function.apply(p, y, w, q, eps, log_clamp)


# -- what the backend's autodiff_* methods need ------------------------------------------------

#: A loss method of the backend: (inputs, targets, **options) -> tensor.
LossFunction = Callable[..., torch.Tensor]


def as_tensors(
    x: torch.Tensor, targets: Any, options: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """targets, weight, pos_weight and mask as tensors on x's device, before compiled code
    sees them (Dynamo's handling of NumPy arrays under torch.func is unreliable).

    >>> y, options = as_tensors(torch.zeros(2), [0, 1], {"mask": [True, False]})
    >>> y.dtype, options["mask"].dtype
    (torch.float32, torch.bool)
    """

    def convert(name: str, value: Any) -> Any:
        if value is None or isinstance(value, torch.Tensor):
            return value
        return as_mask_tensor(value, x) if name == "mask" else as_operand_tensor(name, value, x)

    converted = {
        k: convert(k, v) if k in ("weight", "pos_weight", "mask") else v for k, v in options.items()
    }
    return convert("targets", targets), converted


def _leaves(
    input_name: str, inputs: Any, targets: Any, options: dict[str, Any], names: tuple[str, ...]
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """The call's arguments, with fresh leaf tensors requiring grad for each of ``names``."""
    x = as_input(input_name, inputs)
    arguments = {
        input_name: x,
        "targets": targets,
        "weight": options.get("weight"),
        "pos_weight": options.get("pos_weight"),
    }
    leaves = []
    for name in names:
        key = input_name if name in ("logits", "probs") else name
        value = arguments[key]
        tensor = x if key == input_name else as_operand_tensor(key, value, x)
        arguments[key] = tensor.detach().clone().requires_grad_(True)
        leaves.append(arguments[key])
    return arguments, leaves


def autograd_value_and_grad(
    loss: LossFunction,
    input_name: str,
    inputs: Any,
    targets: Any,
    names: tuple[str, ...],
    options: dict[str, Any],
    *,
    tensors_first: bool,
) -> tuple[torch.Tensor, tuple[Any, ...]]:
    """(loss, its gradients w.r.t. ``names``) by torch.autograd through ``loss``; with
    ``tensors_first`` the operands are made tensors before ``loss`` (compiled code) sees them.

    >>> from bce_torch.backend import TorchBackend
    >>> autograd_value_and_grad(TorchBackend().binary_cross_entropy_with_logits, "logits",
    ...                         torch.zeros(2), [0, 1], ("logits",), {}, tensors_first=False)[1]
    (tensor([ 0.2500, -0.2500]),)
    """
    if tensors_first:
        targets, options = as_tensors(as_input(input_name, inputs), targets, options)
    arguments, leaves = _leaves(input_name, inputs, targets, options, names)
    rest = {k: v for k, v in options.items() if k not in ("weight", "pos_weight")}
    value = loss(
        arguments[input_name],
        arguments["targets"],
        weight=arguments["weight"],
        pos_weight=arguments["pos_weight"],
        **rest,
    )
    # reduction="none": the gradient of the sum, as value_and_grad defines it.
    grads = torch.autograd.grad(value.sum(), leaves)
    return value.detach(), grads


def autograd_second_derivative(
    loss: LossFunction, x: torch.Tensor, targets: Any, options: dict[str, Any]
) -> torch.Tensor:
    """d/dx of sum(d loss / d x): torch.autograd.grad twice (create_graph=True).

    >>> from bce_torch.backend import TorchBackend
    >>> autograd_second_derivative(TorchBackend().binary_cross_entropy_with_logits,
    ...                            torch.zeros(1), [1.0], {"reduction": "sum"}).tolist()
    [0.25]
    """
    x = x.detach().clone().requires_grad_(True)
    value = loss(x, targets, **options)
    (first,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    return second


def func_second_derivative(
    loss: LossFunction, x: torch.Tensor, targets: Any, options: dict[str, Any]
) -> torch.Tensor:
    """The same by nested torch.func.grad, which torch.compile can compile (it cannot
    differentiate a compiled graph twice).

    >>> from bce_torch.backend import TorchBackend
    >>> func_second_derivative(TorchBackend().binary_cross_entropy_with_logits,
    ...                        torch.zeros(1), [1.0], {"reduction": "sum"}).tolist()
    [0.25]
    """

    def total(z: torch.Tensor) -> torch.Tensor:
        return loss(z, targets, **options).sum()

    return torch.func.grad(lambda z: torch.func.grad(total)(z).sum())(x)
