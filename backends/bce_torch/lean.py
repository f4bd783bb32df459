"""The lean path for the usual small call: five operations forward, five backward, one node.

At 10^2 to 10^4 elements an eager training step pays per operation, not per
element: each torch operation called from Python costs microseconds of
dispatch and allocation. The usual call (float32 or float64 logits on the
CPU, targets of the same shape and dtype, no weight, pos_weight or mask, no
label smoothing) is computed with the fewest operations that keep the
accuracy contract:

    loss elements = lerp(softplus(x), softplus(-x), y) = (1 - y) softplus(x) + y softplus(-x)

with each softplus one kernel (one exp and one log1p; threshold 40, beyond
which softplus(x) = x to within exp(-40) relative, below float64's rounding).
Both terms are non-negative, so nothing cancels, and torch's lerp returns
either end exactly for y = 0 and y = 1 (for other y it works from the nearer
end, so its rounding is that of the smaller term). The gradient is
lerp(sigma(x), -sigma(-x), y) = (1 - y) sigma(x) - y sigma(-x).

A non-finite loss (an infinite logit, where the lerp meets 0 * inf, or a NaN)
is recomputed by the exact path, which follows the spec there; so is the
gradient of the gradient (``create_graph=True``).

>>> x = torch.tensor([0.0, 2.0], requires_grad=True)
>>> loss = lean_loss(x, torch.tensor([1.0, 0.0]), "mean", lambda z: None)
>>> round(loss.item(), 4)
1.41
>>> loss.backward()
>>> [round(v, 4) for v in x.grad.tolist()]
[-0.25, 0.4404]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

#: Beyond this, softplus(x) = x: exp(-40) is below half an ulp of 40 in float64.
_THRESHOLD = 40.0

#: The dtypes the lean path computes in (others are converted by the exact path).
DTYPES = (torch.float32, torch.float64)

#: The reductions the lean path computes: the sum divided by a Python number.
REDUCTIONS = ("mean", "sum", "none", "batch_mean", "weighted_mean")

Exact = Callable[[torch.Tensor], "torch.Tensor | None"]


def elements(x: torch.Tensor, negated: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - y) softplus(x) + y softplus(-x), elementwise; ``negated`` is -x.

    >>> x = torch.tensor([0.0, 30.0])
    >>> [round(v, 4) for v in elements(x, -x, torch.tensor([1.0, 1.0])).tolist()]
    [0.6931, 0.0]
    """
    softplus = F.softplus
    return torch.lerp(softplus(x, 1.0, _THRESHOLD), softplus(negated, 1.0, _THRESHOLD), y)


def gradient(x: torch.Tensor, negated: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(element loss)/dx = (1 - y) sigma(x) - y sigma(-x): a difference only where the two
    terms are of the same size, and then graded against the larger one.

    >>> x = torch.tensor([0.0])
    >>> gradient(x, -x, torch.tensor([1.0])).tolist()
    [-0.5]
    """
    return torch.lerp(torch.sigmoid(x), torch.sigmoid(negated).neg_(), y)


def _reduce(values: torch.Tensor, reduction: str, shape: tuple[int, ...]) -> torch.Tensor:
    if reduction in ("mean", "weighted_mean"):  # weighted_mean without a weight is the mean
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "batch_mean":
        return values.sum() / shape[0]
    return values


def _divisor(reduction: str, shape: tuple[int, ...], numel: int) -> int:
    """What the element sum is divided by (the gradient's scale), a Python int."""
    if reduction in ("mean", "weighted_mean"):
        return numel
    if reduction == "batch_mean":
        return shape[0]
    return 1


def applies(x: torch.Tensor, y: Any, reduction: str) -> bool:
    """Whether the lean path computes a call whose weight, pos_weight and mask are None and
    whose label smoothing is 0: CPU tensors of one lean dtype and shape, a nonempty batch, and
    targets that autograd need not differentiate.

    >>> applies(torch.zeros(3), torch.ones(3), "mean")
    True
    >>> applies(torch.zeros(3), [1.0, 1.0, 1.0], "mean")
    False
    """
    return (
        type(y) is torch.Tensor
        and x.dtype in DTYPES
        and y.dtype == x.dtype
        and x.device.type == "cpu"
        and y.device.type == "cpu"
        and y.shape == x.shape
        and x.numel() > 0
        and reduction in REDUCTIONS
        and not (y.requires_grad and torch.is_grad_enabled())
        and (reduction != "batch_mean" or x.ndim > 0)
    )


class LeanLoss(torch.autograd.Function):
    """The reduced (or per-element) loss of ``elements``, differentiable in x.

    ``apply(x, y, reduction, exact)``; ``exact(x)`` is the same loss through the exact
    Functions, for ``create_graph=True``.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, reduction: str, exact: Exact
    ) -> torch.Tensor:
        negated = torch.neg(x)
        ctx.save_for_backward(x, negated, y)
        ctx.reduction, ctx.exact = reduction, exact
        return _reduce(elements(x, negated, y), reduction, tuple(x.shape))

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[Any, ...]:
        x, negated, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a gradient exact to differentiate
            (grad,) = torch.autograd.grad(ctx.exact(x), x, upstream, create_graph=True)
            return grad, None, None, None
        grad = gradient(x, negated, y)
        if ctx.reduction == "none":
            return grad.mul_(upstream), None, None, None
        scale = upstream.item() / _divisor(ctx.reduction, tuple(x.shape), x.numel())
        return (grad if scale == 1.0 else grad.mul_(scale)), None, None, None


def lean_loss(
    x: torch.Tensor, y: torch.Tensor, reduction: str, exact: Exact
) -> torch.Tensor | None:
    """The loss of ``elements`` reduced by ``reduction``, differentiable in x; None where the
    sum is not finite (the caller then computes exactly).

    ``exact(z)`` computes the same loss through the exact path, for second derivatives.
    """
    if x.requires_grad and torch.is_grad_enabled():
        loss = LeanLoss.apply(x, y, reduction, exact)
    else:
        loss = _reduce(elements(x, torch.neg(x), y), reduction, tuple(x.shape))
    return loss if _finite(loss) else None


def lean_value_and_grad(
    x: torch.Tensor, y: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(loss, d loss / d x) without autograd; None where the sum is not finite.

    >>> loss, grad = lean_value_and_grad(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]),
    ...                                  "mean")
    >>> grad.tolist()
    [-0.25, 0.25]
    """
    with torch.no_grad():
        negated = torch.neg(x)
        loss = _reduce(elements(x, negated, y), reduction, tuple(x.shape))
        if not _finite(loss):
            return None
        grad = gradient(x, negated, y)
        divisor = _divisor(reduction, tuple(x.shape), x.numel())
    return loss, (grad if divisor == 1 else grad.div_(divisor))


def _finite(loss: torch.Tensor) -> bool:
    """Whether the loss (or the sum of its elements) is finite: one read of a CPU scalar."""
    return math.isfinite((loss if loss.ndim == 0 else loss.sum()).item())
