"""``torch.nn`` drop-ins: :class:`BCEWithLogitsLoss` and :class:`BCELoss` computed by bce-core.

Each is a ``torch.nn.Module`` whose constructor takes what ``torch.nn``'s takes
(``weight``, ``reduction``, and ``pos_weight`` for the logits form), plus
``label_smoothing`` (and ``log_clamp`` for the probability form). ``weight`` and
``pos_weight`` are registered buffers, as in ``torch.nn``: ``.to(device)``, ``.half()``
and ``.double()`` move and cast them, and ``state_dict()`` holds those that are set, under
the same names, so a state dict loads from one module into the other in both directions.
``forward(input, target, mask=None)`` calls :func:`bce_core.binary_cross_entropy_with_logits`
or :func:`bce_core.binary_cross_entropy` on the torch backend: the loss is exact in the
tails where ``torch.nn``'s is not, and ``loss.backward()``, ``torch.compile`` (with
``fullgraph=True``) and ``DistributedDataParallel`` work through it.

The reductions are bce-core's: ``"none"``, ``"sum"`` and ``"mean"`` as in ``torch.nn``,
and ``"weighted_mean"`` (the sum over the sum of the weights) and ``"batch_mean"`` (the
sum over ``shape[0]``). ``mask`` drops elements from the loss, its gradient and the counts.
The deprecated ``size_average`` and ``reduce`` are refused with the ``reduction`` to use.

Under ``torch.distributed`` (with or without ``DistributedDataParallel``), a rank's mean is not
the mean of the whole batch when the ranks keep different numbers of elements;
:func:`global_denominator` gives the denominator whose ``forward(..., denominator=D)`` makes
DDP's averaged gradient the whole batch's (see its docstring for the two-line recipe).

At logit 30 with target 1, ``torch.nn.BCEWithLogitsLoss`` gives a gradient of 0; the
exact one is -q sigma(-30) / n:

>>> import torch
>>> from bce_core.torch import BCEWithLogitsLoss
>>> loss_fn = BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0]))
>>> logits = torch.tensor([[0.0, 30.0], [-1.0, 2.0]], requires_grad=True)
>>> loss = loss_fn(logits, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
>>> round(loss.item(), 6)
0.315066
>>> loss.backward()
>>> f"{logits.grad[0, 1].item():.4e}"  # 2 * sigmoid(-30) / 4
'-4.6788e-14'
"""

from __future__ import annotations

import reprlib
from typing import Any

import torch

from .api import binary_cross_entropy, binary_cross_entropy_with_logits
from .dispatch import get_backend
from .parallel import local_denominator
from .spec import DEFAULT_LOG_CLAMP, check_label_smoothing, check_log_clamp, check_reduction

__all__ = ["BCELoss", "BCEWithLogitsLoss", "global_denominator"]


def global_denominator(
    logits: torch.Tensor,
    *,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    group: Any = None,
    averaged: bool = True,
) -> torch.Tensor:
    """The denominator of ``reduction`` over every rank's batch, for ``denominator=``.

    Each rank's :func:`bce_core.local_denominator`, summed over the ranks of ``group`` (the
    default group when None) with ``torch.distributed.all_reduce``; with ``averaged=True``
    divided by the group's size, because ``DistributedDataParallel`` averages the gradients
    of the ranks: each rank's loss is then ``world_size * its sum / D``, the ranks' average
    gradient is that of the whole batch, and so is the average of their losses. Pass
    ``averaged=False`` where the gradients (or the losses) are summed over the ranks, as an
    ``all_reduce`` of SUM does. Without an initialised process group, the local denominator
    (one process). The result is a detached 0-d tensor on the logits' device: the weights of
    ``weighted_mean`` are constants of the gradient.

    The recipe, on each rank (``model`` wrapped in DDP or not)::

        D = global_denominator(logits, mask=mask)
        loss = bce_core.binary_cross_entropy_with_logits(logits, y, mask=mask, denominator=D)

    >>> x = torch.zeros(2, 3)
    >>> global_denominator(x, mask=torch.tensor([True, False, True]))  # one process
    tensor(4.)
    """
    local: torch.Tensor = local_denominator(
        logits, reduction=reduction, mask=mask, weight=weight, backend="torch"
    )
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return local.detach()
    total = local.detach().clone()
    distributed.all_reduce(total, op=distributed.ReduceOp.SUM, group=group)
    if averaged:
        total = total / distributed.get_world_size(group)
    return total


def _legacy_reduction(size_average: Any, reduce: Any) -> str:
    """The reduction that torch.nn reads from the deprecated pair (None counts as True)."""
    if reduce is not None and not reduce:
        return "none"
    return "mean" if size_average is None or size_average else "sum"


def _refuse_legacy(size_average: Any, reduce: Any) -> None:
    """Raise TypeError for the deprecated arguments, naming the ``reduction`` they mean.

    >>> _refuse_legacy(False, None)
    Traceback (most recent call last):
    TypeError: size_average=False is deprecated in torch.nn and not accepted here; pass \
reduction='sum' instead, which means the same.
    """
    given = [
        f"{name}={value!r}"
        for name, value in (("size_average", size_average), ("reduce", reduce))
        if value is not None
    ]
    if not given:
        return
    verb = "is" if len(given) == 1 else "are"
    raise TypeError(
        f"{' and '.join(given)} {verb} deprecated in torch.nn and not accepted here; pass "
        f"reduction={_legacy_reduction(size_average, reduce)!r} instead, which means the same."
    )


def _tensor_or_none(argument: str, value: Any) -> torch.Tensor | None:
    """``value`` if it is a tensor or None, else a TypeError naming ``argument``.

    >>> _tensor_or_none("weight", [1.0, 2.0])
    Traceback (most recent call last):
    TypeError: weight=[1.0, 2.0] is of type list; pass a torch.Tensor (torch.as_tensor(...) \
converts it) or None.
    """
    if value is None or isinstance(value, torch.Tensor):
        return value
    raise TypeError(
        f"{argument}={reprlib.repr(value)} is of type {type(value).__qualname__}; pass a "
        f"torch.Tensor (torch.as_tensor(...) converts it) or None."
    )


class _BCEModule(torch.nn.Module):
    """What the two losses share: the options, the buffers and the repr."""

    reduction: str
    label_smoothing: float
    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None,
        size_average: Any,
        reduce: Any,
        reduction: str,
        pos_weight: torch.Tensor | None,
        label_smoothing: float,
    ) -> None:
        _refuse_legacy(size_average, reduce)
        checked_reduction = check_reduction(reduction)
        eps = check_label_smoothing(label_smoothing)
        weight = _tensor_or_none("weight", weight)
        pos_weight = _tensor_or_none("pos_weight", pos_weight)
        get_backend("torch")  # loads the backend, and builds the registry outside torch.compile
        super().__init__()
        self.reduction = checked_reduction
        self.label_smoothing = eps
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An unpickled module (torch.load, a spawned process) may be compiled before any
        # eager call: the registry must exist by then.
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        get_backend("torch")

    def _options_repr(self) -> list[str]:
        options = [] if self.reduction == "mean" else [f"reduction={self.reduction!r}"]
        if self.label_smoothing != 0.0:
            options.append(f"label_smoothing={self.label_smoothing!r}")
        return options

    def extra_repr(self) -> str:
        """The options that differ from the defaults (torch.nn's repr shows none).

        >>> BCEWithLogitsLoss(reduction="sum", label_smoothing=0.1)
        BCEWithLogitsLoss(reduction='sum', label_smoothing=0.1)
        """
        return ", ".join(self._options_repr())


class BCEWithLogitsLoss(_BCEModule):
    """``torch.nn.BCEWithLogitsLoss`` computed by bce-core, exact for every finite logit.

    ``weight`` and ``pos_weight`` broadcast to the logits' shape and may not enlarge it (a
    ``pos_weight`` of shape (C,) is per class, on the last axis). ``label_smoothing`` ε
    replaces each target y by y (1 - ε) + ε / 2. ``reduction`` is "none", "sum", "mean",
    "weighted_mean" or "batch_mean".

    >>> loss_fn = BCEWithLogitsLoss(reduction="sum", label_smoothing=0.2)
    >>> round(loss_fn(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0])).item(), 6)
    3.441735
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
        pos_weight: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction, pos_weight, label_smoothing)

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        denominator: Any = None,
    ) -> torch.Tensor:
        """The loss of the logits ``input`` against ``target`` (of the same shape); ``mask``,
        if given, broadcasts to that shape and keeps the elements where it is True.
        ``denominator``: the global denominator of a shard's reduction
        (:func:`global_denominator`), or None for this batch's own."""
        loss: torch.Tensor = binary_cross_entropy_with_logits(
            input,
            target,
            weight=self.weight,
            pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing,
            mask=mask,
            reduction=self.reduction,
            backend="torch",
            denominator=denominator,
        )
        return loss


class BCELoss(_BCEModule):
    """``torch.nn.BCELoss`` computed by bce-core, from probabilities.

    As in ``torch.nn``, each log is clamped at ``log_clamp`` = -100, so a loss is finite at
    p = 0 and p = 1; ``log_clamp=float("-inf")`` takes the exact logarithm. ``pos_weight``
    weighs the positive term as in :class:`BCEWithLogitsLoss` (``torch.nn.BCELoss`` has
    none). Prefer the logits form: it is exact where this one clamps.

    >>> loss_fn = BCELoss(weight=torch.tensor([1.0, 2.0]), reduction="sum")
    >>> round(loss_fn(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])).item(), 6)
    0.551648
    """

    log_clamp: float

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
        *,
        pos_weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        log_clamp: float = DEFAULT_LOG_CLAMP,
    ) -> None:
        clamp = DEFAULT_LOG_CLAMP if log_clamp is DEFAULT_LOG_CLAMP else check_log_clamp(log_clamp)
        super().__init__(weight, size_average, reduce, reduction, pos_weight, label_smoothing)
        self.log_clamp = clamp

    def _options_repr(self) -> list[str]:
        options = super()._options_repr()
        if self.log_clamp != DEFAULT_LOG_CLAMP:
            options.append(f"log_clamp={self.log_clamp!r}")
        return options

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        denominator: Any = None,
    ) -> torch.Tensor:
        """The loss of the probabilities ``input`` against ``target`` (of the same shape);
        ``mask``, if given, broadcasts to that shape and keeps the elements where it is True.
        ``denominator``: the global denominator of a shard's reduction
        (:func:`global_denominator`), or None for this batch's own."""
        loss: torch.Tensor = binary_cross_entropy(
            input,
            target,
            weight=self.weight,
            pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing,
            mask=mask,
            reduction=self.reduction,
            log_clamp=self.log_clamp,
            backend="torch",
            denominator=denominator,
        )
        return loss
