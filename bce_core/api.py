"""The public functions: check nothing twice, pick the backend, call it.

Each function accepts arrays of any registered framework (or NumPy arrays,
Python numbers and nested lists) and returns arrays of the input's framework.

Under ``torch.compile(fullgraph=True)`` the registry must exist before the
first compiled call (any eager call, or ``bce_core.get_backend("torch")``,
builds it): building it takes a lock, which the compiler cannot trace.

>>> import numpy as np
>>> loss = binary_cross_entropy_with_logits(np.array([[9.7], [0.0]]), np.array([[0.0], [1.0]]))
>>> round(float(loss), 5)
5.1966
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import parallel
from .dispatch import resolve_backend
from .plugin import Backend
from .spec import DEFAULT_LOG_CLAMP

BackendChoice = str | Backend | None

F = TypeVar("F", bound=Callable[..., Any])


def unconverted(function: F) -> F:
    """Mark ``function`` so that TensorFlow's AutoGraph calls it as it is, without importing
    TensorFlow: the attribute ``tf.autograph.experimental.do_not_convert`` sets. Converted,
    a public function would have AutoGraph walk into the registry and the backends (and warn
    about each function it cannot convert); the backends' methods emit graph operations
    directly.

    >>> hasattr(binary_cross_entropy_with_logits, "autograph_info__")
    True
    """
    function.autograph_info__ = None  # type: ignore[attr-defined]
    return function


@unconverted
def binary_cross_entropy_with_logits(
    logits: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
    mask: Any = None,
    reduction: str = "mean",
    validate: bool = False,
    backend: BackendChoice = None,
    denominator: Any = None,
) -> Any:
    """Binary cross-entropy of sigmoid(logits) against targets, computed stably from the logits.

    Element loss: w [ (1 - y') softplus(x) + q y' softplus(-x) ] with
    y' = y (1 - label_smoothing) + label_smoothing / 2, w = weight and
    q = pos_weight; then reduced by ``reduction`` ("none", "sum", "mean",
    "weighted_mean", "batch_mean") over the elements that ``mask`` keeps.

    ``denominator``: for a shard of a batch (a device's, a process's or a micro-batch's), the
    global denominator of ``reduction`` ("mean", "weighted_mean" or "batch_mean"): the sum
    over the shards of ``bce_core.local_denominator``. The loss is then the shard's sum over
    it (0 where it is 0), and the shards' losses and gradients add up to those of the whole
    batch (see ``bce_core.parallel``). None (the default) reduces this batch on its own.

    >>> float(binary_cross_entropy_with_logits([0.0, 0.0], [1, 0], reduction="sum"))
    1.3862943611198906
    >>> float(binary_cross_entropy_with_logits([0.0, 0.0], [1, 0], denominator=4))
    0.34657359027997264
    """
    impl = resolve_backend(backend, (logits, targets, weight, pos_weight, mask))
    if denominator is not None:
        return parallel.shard_loss(
            impl,
            "binary_cross_entropy_with_logits",
            logits,
            targets,
            denominator,
            {
                "weight": weight,
                "pos_weight": pos_weight,
                "label_smoothing": label_smoothing,
                "mask": mask,
                "reduction": reduction,
                "validate": validate,
            },
        )
    return impl.binary_cross_entropy_with_logits(
        logits,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        mask=mask,
        reduction=reduction,
        validate=validate,
    )


@unconverted
def binary_cross_entropy(
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
    backend: BackendChoice = None,
    denominator: Any = None,
) -> Any:
    """Binary cross-entropy of probabilities against targets.

    Element loss: -w [ q y' max(log p, c) + (1 - y') max(log1p(-p), c) ] with
    c = ``log_clamp`` (-100 by default, as PyTorch; ``float('-inf')`` for the
    exact logarithm). Prefer the logits form: it is exact where this one clamps.
    ``denominator``: the global denominator of a shard's reduction, as in
    :func:`binary_cross_entropy_with_logits`.

    >>> round(float(binary_cross_entropy([0.9, 0.2], [1, 0])), 6)
    0.164252
    """
    impl = resolve_backend(backend, (probs, targets, weight, pos_weight, mask))
    if denominator is not None:
        return parallel.shard_loss(
            impl,
            "binary_cross_entropy",
            probs,
            targets,
            denominator,
            {
                "weight": weight,
                "pos_weight": pos_weight,
                "label_smoothing": label_smoothing,
                "mask": mask,
                "reduction": reduction,
                "log_clamp": log_clamp,
                "validate": validate,
            },
        )
    return impl.binary_cross_entropy(
        probs,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        mask=mask,
        reduction=reduction,
        log_clamp=log_clamp,
        validate=validate,
    )


@unconverted
def value_and_grad(
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
    backend: BackendChoice = None,
    denominator: Any = None,
) -> tuple[Any, Any]:
    """The reduced loss from logits and its gradient with respect to ``wrt``.

    ``wrt`` is "logits", "targets", "weight", "pos_weight" or a tuple of them
    (then the gradient is a tuple in the same order). Each gradient has its
    argument's shape. With reduction="none" the gradient is that of the sum.
    ``denominator``: the global denominator of a shard's reduction, as in
    :func:`binary_cross_entropy_with_logits`; the gradients are the sum's over it (with
    "weighted_mean", not with respect to ``weight``, whose gradient needs the global loss).

    >>> loss, grad = value_and_grad([0.0, 0.0], [1, 0], reduction="mean")
    >>> grad.tolist()
    [-0.25, 0.25]
    """
    impl = resolve_backend(backend, (logits, targets, weight, pos_weight, mask))
    if denominator is not None:
        return parallel.shard_value_and_grad(
            impl,
            logits,
            targets,
            denominator,
            {
                "weight": weight,
                "pos_weight": pos_weight,
                "label_smoothing": label_smoothing,
                "mask": mask,
                "reduction": reduction,
                "validate": validate,
                "wrt": wrt,
            },
        )
    return impl.value_and_grad(
        logits,
        targets,
        weight=weight,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        mask=mask,
        reduction=reduction,
        validate=validate,
        wrt=wrt,
    )


@unconverted
def grad_hess(
    logits: Any,
    targets: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    backend: BackendChoice = None,
) -> tuple[Any, Any]:
    """Elementwise first and second derivative of the loss with respect to the logits.

    Returns (w [(1 - y) sigma(x) - q y sigma(-x)], w (1 + (q - 1) y) sigma(x) sigma(-x)),
    the pair a custom objective of XGBoost or LightGBM returns.

    >>> g, h = grad_hess([0.0, 2.0], [1, 0])
    >>> [round(v, 4) for v in g.tolist()], [round(v, 4) for v in h.tolist()]
    ([-0.5, 0.8808], [0.25, 0.105])
    """
    impl = resolve_backend(backend, (logits, targets, weight, pos_weight))
    return impl.grad_hess(logits, targets, weight=weight, pos_weight=pos_weight)
