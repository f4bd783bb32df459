"""Masked reductions of element losses, differentiable and free of data-dependent branches.

A zero denominator (an empty or fully masked batch, weights summing to 0)
gives a loss of 0 and a zero gradient, never NaN: the denominator is
replaced by 1 before dividing and the result by 0 after ("double where"),
so autograd sees a finite quotient. Denominators that depend on the data
stay tensors, so nothing here synchronises with the device or breaks a
torch.compile graph.

>>> import torch
>>> reduce_elements(torch.tensor([1.0, 3.0]), "mean", keep=torch.tensor([False, False]),
...                 weight=None).loss.item()
0.0
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch

from bce_core.spec import check_batch_mean

Factor = Union[torch.Tensor, float]


class Reduced(NamedTuple):
    """A reduced loss and the factor that turns an element's derivative into the loss's."""

    loss: torch.Tensor
    #: d(loss)/d(element loss): 0 where masked out or where the denominator is 0.
    factor: Factor


def reduce_elements(elements: torch.Tensor, reduction: str, *, keep: torch.Tensor | None,
                    weight: torch.Tensor | None) -> Reduced:
    """Apply ``reduction`` to (already weighted) element losses over the elements ``keep`` keeps."""
    shape = elements.shape
    if keep is not None:
        elements = torch.where(keep, elements, 0.0)
    if reduction == "none":
        return Reduced(elements, 1.0 if keep is None else keep.expand(shape).to(elements.dtype))
    total = elements.sum()
    denominator: torch.Tensor | int
    if reduction == "sum":
        denominator = 1
    elif reduction == "batch_mean":
        check_batch_mean(tuple(shape))
        denominator = shape[0]
    elif reduction == "mean" or weight is None:  # weighted_mean without weights is mean
        denominator = elements.numel() if keep is None else \
            keep.expand(shape).sum(dtype=elements.dtype)
    else:  # weighted_mean
        full_weight = weight.expand(shape)
        if keep is not None:
            full_weight = torch.where(keep, full_weight, 0.0)
        denominator = full_weight.sum()
    if not isinstance(denominator, torch.Tensor):
        if denominator == 0:  # no elements: total is an exact 0 (and stays in the graph)
            return Reduced(total, 0.0)
        scale = 1.0 / denominator
        return Reduced(total / denominator,
                       scale if keep is None else keep.to(elements.dtype) * scale)
    zero = denominator == 0
    safe = torch.where(zero, 1.0, denominator)
    scale = torch.where(zero, 0.0, 1.0 / safe)
    factor = scale if keep is None else torch.where(keep, scale, 0.0)
    return Reduced(torch.where(zero, 0.0, total / safe), factor)
