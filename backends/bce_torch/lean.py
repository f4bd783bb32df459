"""The lean path for the usual small call: five operations forward, five backward, one node.

At 10^2 to 10^4 elements an eager training step pays per operation, not per
element: each torch operation called from Python costs microseconds of
dispatch and allocation. The usual call (float32 or float64 logits on the
CPU, targets of the same shape and dtype, a weight, a pos_weight and a bool
mask broadcasting to that shape or none, any label smoothing) is computed with
the fewest operations that keep the accuracy contract. Without label smoothing:

    loss elements = lerp(softplus(x), q softplus(-x), y) w
                  = w [(1 - y) softplus(x) + q y softplus(-x)]

with each softplus one kernel (one exp and one log1p; threshold 40, beyond
which softplus(x) = x to within exp(-40) relative, below float64's rounding).
Both terms are non-negative, so nothing cancels, and torch's lerp returns
either end exactly for y = 0 and y = 1 (for other y it works from the nearer
end, so its rounding is that of the smaller term). The gradient is
lerp(sigma(x), -q sigma(-x), y) w = w [(1 - y) sigma(x) - q y sigma(-x)]. A weight
and a pos_weight add one multiplication each way (half an ULP each). With label
smoothing the two coefficients w (1 - y') and w q y' are formed once per call
(``terms``, 1 - y' from 1 - y so that it keeps its relative accuracy where y' is
near 1), and each way is a product and a fused multiply-add of the two terms.
A mask is one ``where`` each way: a masked-out element is exactly 0, whatever it
holds, and the mean divides by the count (or the kept weights' sum).

A non-finite loss (an infinite logit, where the lerp meets 0 * inf, an infinite
or NaN weight, pos_weight or target, or a NaN logit) is recomputed by the exact
path, which follows the spec there; so are a mean over no kept element, a
weighted mean whose kept weights sum to 0 and the gradient of the gradient
(``create_graph=True``).

>>> x = torch.tensor([0.0, 2.0], requires_grad=True)
>>> loss = lean_loss(x, torch.tensor([1.0, 0.0]), None, None, None, 0.0, "mean", lambda z: None)
>>> round(loss.item(), 4)
1.41
>>> loss.backward()
>>> [round(v, 4) for v in x.grad.tolist()]
[-0.25, 0.4404]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from bce_core import rules

#: Beyond this, softplus(x) = x: exp(-40) is below half an ulp of 40 in float64.
_THRESHOLD = 40.0

#: The dtypes the lean path computes in (others are converted by the exact path).
DTYPES = (torch.float32, torch.float64)

#: The reductions the lean path computes: the sum divided by a Python number.
REDUCTIONS = ("mean", "sum", "none", "batch_mean", "weighted_mean")

Exact = Callable[[torch.Tensor], "torch.Tensor | None"]


class Lerp(NamedTuple):
    """An element's coefficients without smoothing: one lerp between the two terms reads y."""

    y: torch.Tensor
    w: torch.Tensor | None
    q: torch.Tensor | None


class Smoothed(NamedTuple):
    """An element's coefficients with label smoothing: w (1 - y') of softplus(x) and w q y' of
    softplus(-x), 1 - y' taken as (1 - y)(1 - eps) + eps / 2 (``rules.smoothed_targets``)."""

    negative: torch.Tensor
    positive: torch.Tensor


Terms = Lerp | Smoothed


def terms(y: torch.Tensor, w: torch.Tensor | None, q: torch.Tensor | None, eps: float) -> Terms:
    """The coefficients of a call: a ``Lerp`` without smoothing (no operation), else the two
    products (five to seven operations, once per call).

    >>> [round(v, 6) for v in terms(torch.tensor([1.0, 0.0]), None, None, 0.2).negative.tolist()]
    [0.1, 0.9]
    """
    if eps == 0.0:
        return Lerp(y, w, q)
    keep, half = rules.smoothing_floats(eps)
    positive = torch.mul(y, keep).add_(half)
    negative = torch.rsub(y, 1.0).mul_(keep).add_(half)
    if q is not None:
        positive.mul_(q)
    if w is not None:
        positive.mul_(w)
        negative.mul_(w)
    return Smoothed(negative, positive)


def elements(x: torch.Tensor, negated: torch.Tensor, of: Terms) -> torch.Tensor:
    """w [(1 - y') softplus(x) + q y' softplus(-x)], elementwise; ``negated`` is -x.

    >>> x = torch.tensor([0.0, 30.0])
    >>> values = elements(x, -x, terms(torch.tensor([1.0, 1.0]), None, None, 0.0))
    >>> [round(v, 4) for v in values.tolist()]
    [0.6931, 0.0]
    """
    softplus = F.softplus
    if isinstance(of, Smoothed):
        values = softplus(x, 1.0, _THRESHOLD).mul_(of.negative)
        return values.addcmul_(of.positive, softplus(negated, 1.0, _THRESHOLD))
    positive = softplus(negated, 1.0, _THRESHOLD)
    values = torch.lerp(
        softplus(x, 1.0, _THRESHOLD), positive if of.q is None else positive * of.q, of.y
    )
    return values if of.w is None else values.mul_(of.w)


def gradient(x: torch.Tensor, negated: torch.Tensor, of: Terms) -> torch.Tensor:
    """d(element loss)/dx = w [(1 - y') sigma(x) - q y' sigma(-x)]: a difference only where
    the two terms are of the same size, and then graded against the larger one.

    >>> x = torch.tensor([0.0])
    >>> gradient(x, -x, terms(torch.tensor([1.0]), None, None, 0.0)).tolist()
    [-0.5]
    """
    if isinstance(of, Smoothed):
        values = torch.sigmoid(x).mul_(of.negative)
        return values.addcmul_(of.positive, torch.sigmoid(negated), value=-1)
    positive = torch.sigmoid(negated).neg_()
    values = torch.lerp(torch.sigmoid(x), positive if of.q is None else positive.mul_(of.q), of.y)
    return values if of.w is None else values.mul_(of.w)


def _reduce(values: torch.Tensor, reduction: str, divisor: float) -> torch.Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    return total if divisor == 1 else total / divisor


def divisor(
    reduction: str,
    shape: tuple[int, ...],
    numel: int,
    w: torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> float | None:
    """What the element sum is divided by (the gradient's scale), a Python number; None for a
    mean over nothing (every element masked out) or a weighted mean whose kept weights sum to
    0 or to a non-finite value: the exact path gives the spec's answer there.

    >>> divisor("weighted_mean", (2, 3), 6, torch.tensor([1.0, 0.5, 0.5]))
    4.0
    >>> divisor("mean", (2, 3), 6, None, torch.tensor([True, False, True]))
    4
    """
    if reduction == "weighted_mean" and w is not None:
        if mask is None:  # the sum of w broadcast to the shape
            total = float(w.sum()) * (numel // w.numel())
        else:  # the kept weights only (a masked-out weight may be inf or NaN)
            total = float(torch.where(mask, w, 0.0).sum()) * (numel // _broadcast_numel(w, mask))
        return total if total != 0 and math.isfinite(total) else None
    if reduction in ("mean", "weighted_mean"):  # weighted_mean without a weight is the mean
        count = numel if mask is None else int(mask.sum()) * (numel // mask.numel())
        return count if count else None
    if reduction == "batch_mean":
        return shape[0]
    return 1


def _broadcast_numel(first: torch.Tensor, second: torch.Tensor) -> int:
    """The number of elements of ``first`` and ``second`` broadcast together."""
    return math.prod(torch.broadcast_shapes(first.shape, second.shape))


def _fits(coefficient: Any, x: torch.Tensor, dtype: torch.dtype | None = None) -> bool:
    """Whether a weight, pos_weight or mask can be used as it is: None, or a CPU tensor of
    x's dtype (``dtype`` for a mask) that broadcasts to x's shape without enlarging it and
    that autograd need not differentiate (any other shape goes to the exact path, which
    raises the spec's error)."""
    if coefficient is None:
        return True
    return (
        type(coefficient) is torch.Tensor
        and coefficient.dtype == (x.dtype if dtype is None else dtype)
        and coefficient.device.type == "cpu"
        and coefficient.ndim <= x.ndim
        and coefficient.numel() > 0
        and all(d in (1, n) for d, n in zip(reversed(coefficient.shape), reversed(x.shape)))
        and not (coefficient.requires_grad and torch.is_grad_enabled())
    )


def applies(
    x: torch.Tensor, y: Any, reduction: str, w: Any = None, q: Any = None, mask: Any = None
) -> bool:
    """Whether the lean path computes a call (any label smoothing): CPU tensors of one lean
    dtype (the targets of the logits' shape, a weight and a pos_weight broadcasting to it, a
    bool mask too), a nonempty batch, and operands other than the logits that autograd need
    not differentiate.

    >>> applies(torch.zeros(3), torch.ones(3), "mean", q=torch.tensor([2.0]))
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
        and _fits(w, x)
        and _fits(q, x)
        and _fits(mask, x, torch.bool)
    )


class LeanLoss(torch.autograd.Function):
    """The reduced (or per-element) loss of ``elements``, differentiable in x.

    ``apply(x, reduction, divisor, exact, kind, mask, *fields)``: ``kind(*fields)`` are the
    ``Terms`` (tensors, saved for backward), ``mask`` the elements kept or None; ``exact(x)``
    is the same loss through the exact Functions, for ``create_graph=True``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        reduction: str,
        divisor: float,
        exact: Exact,
        kind: type[Terms],
        mask: torch.Tensor | None,
        *fields: torch.Tensor | None,
    ) -> torch.Tensor:
        negated = torch.neg(x)
        ctx.save_for_backward(x, negated, mask, *fields)
        ctx.reduction, ctx.divisor, ctx.exact, ctx.kind = reduction, divisor, exact, kind
        values = _kept(elements(x, negated, kind(*fields)), mask)
        return _reduce(values, reduction, divisor)

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[Any, ...]:
        x, negated, mask, *fields = ctx.saved_tensors
        unused = (None,) * (5 + len(fields))
        if torch.is_grad_enabled():  # create_graph=True: a gradient exact to differentiate
            (grad,) = torch.autograd.grad(ctx.exact(x), x, upstream, create_graph=True)
            return (grad, *unused)
        grad = _kept(gradient(x, negated, ctx.kind(*fields)), mask)
        if ctx.reduction == "none":
            return (grad.mul_(upstream), *unused)
        scale = upstream.item() / ctx.divisor
        return (grad if scale == 1.0 else grad.mul_(scale), *unused)


def lean_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    q: torch.Tensor | None,
    mask: torch.Tensor | None,
    eps: float,
    reduction: str,
    exact: Exact,
) -> torch.Tensor | None:
    """The loss of ``elements`` reduced by ``reduction``, differentiable in x; None where the
    sum is not finite or the weights sum to 0 (the caller then computes exactly).

    ``exact(z)`` computes the same loss through the exact path, for second derivatives.
    """
    scale = divisor(reduction, tuple(x.shape), x.numel(), w, mask)
    if scale is None:
        return None
    of = terms(y, w, q, eps)
    if x.requires_grad and torch.is_grad_enabled():
        loss = LeanLoss.apply(x, reduction, scale, exact, type(of), mask, *of)
    else:
        loss = _reduce(_kept(elements(x, torch.neg(x), of), mask), reduction, scale)
    return loss if _finite(loss) else None


def lean_value_and_grad(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    q: torch.Tensor | None,
    mask: torch.Tensor | None,
    eps: float,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(loss, d loss / d x) without autograd; None where the sum is not finite or the weights
    sum to 0.

    >>> loss, grad = lean_value_and_grad(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]),
    ...                                  None, torch.tensor([3.0]), None, 0.0, "mean")
    >>> grad.tolist()
    [-0.75, 0.25]
    """
    scale = divisor(reduction, tuple(x.shape), x.numel(), w, mask)
    if scale is None:
        return None
    with torch.no_grad():
        of = terms(y, w, q, eps)
        negated = torch.neg(x)
        loss = _reduce(_kept(elements(x, negated, of), mask), reduction, scale)
        if not _finite(loss):
            return None
        grad = _kept(gradient(x, negated, of), mask)
    return loss, (grad if scale == 1 else grad.div_(scale))


def _kept(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``values`` where ``mask`` keeps them, exactly 0 elsewhere (even where they are NaN)."""
    return values if mask is None else torch.where(mask, values, 0.0)


def _finite(loss: torch.Tensor) -> bool:
    """Whether the loss (or the sum of its elements) is finite: one read of a CPU scalar."""
    return math.isfinite((loss if loss.ndim == 0 else loss.sum()).item())
