"""Losses over one shard of a batch that add up to the loss of the whole batch.

A batch split across devices, processes or micro-batches is reduced shard by
shard; with a mask, weights or uneven shards each shard's ``mean`` divides by
its own count, and averaging the shards' losses or gradients is not the mean
of the whole batch. The global reduction is the sum of every shard's element
losses divided by the *global* denominator, and it splits exactly:

    loss = sum over shards s of (sum of s's element losses) / D,  D = sum over s of D_s

:func:`local_denominator` gives a shard's D_s (the number of kept elements for
``mean``, the sum of their weights for ``weighted_mean``, ``shape[0]`` for
``batch_mean``); adding them up (``jax.lax.psum``, ``torch.distributed.all_reduce``,
a replica context's ``all_reduce``, or a Python sum over micro-batches) gives D;
the public functions' ``denominator=D`` then return the shard's share, whose
sum over the shards (and whose gradients' sum) is the loss (and gradient) of
one call on the whole batch. A denominator of 0 (every element of every shard
masked out) gives a loss of 0 and a zero gradient, as the spec's reductions do.

How each framework combines the shards decides the recipe:

- PyTorch ``DistributedDataParallel`` averages the ranks' gradients:
  ``D = bce_core.torch.global_denominator(logits, mask=m)`` (the all-reduced sum over the
  world size), then ``loss = ...(logits, y, mask=m, denominator=D)``; without DDP, with the
  gradients summed by ``all_reduce``, ``global_denominator(..., averaged=False)``.
- JAX ``shard_map``: ``D = jax.lax.psum(local_denominator(logits, mask=m), axis)``; the
  ``psum`` of the shards' losses is the global loss, and its gradient (taken outside
  ``shard_map``, or inside, where with ``check_vma`` JAX sums a replicated parameter's
  gradient over the axis itself) the global gradient. ``jax.jit`` on sharded arrays needs
  nothing: the plain call is already over the whole batch.
- TensorFlow ``MirroredStrategy`` sums the replicas' gradients:
  ``D = tf.distribute.get_replica_context().all_reduce("sum", local_denominator(...))``.
- Gradient accumulation: D is the sum of every micro-batch's local denominator, up front;
  each micro-batch's ``loss = ...(..., denominator=D)`` is then backpropagated as it is.

``reduction="sum"`` needs none of this where the shards are summed (under DDP's average,
multiply each rank's loss by the world size).

Two micro-batches of uneven valid counts give the full batch's mean:

>>> import numpy as np
>>> import bce_core
>>> x, y = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.0, 0.0, 1.0, 1.0])
>>> m = np.array([True, True, True, False])
>>> parts = [(x[:1], y[:1], m[:1]), (x[1:], y[1:], m[1:])]
>>> D = sum(local_denominator(xs, mask=ms) for xs, _, ms in parts)
>>> float(D)
3.0
>>> total = sum(bce_core.binary_cross_entropy_with_logits(xs, ys, mask=ms, denominator=D)
...             for xs, ys, ms in parts)
>>> bool(np.isclose(total, bce_core.binary_cross_entropy_with_logits(x, y, mask=m)))
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import rules
from .dispatch import resolve_backend
from .plugin import Backend
from .registry import get_registry
from .rules import ArrayOps, Converter
from .spec import HALF_DTYPES, _dims, _dtype_name, check_options, check_shapes

__all__ = ["GLOBAL_REDUCTIONS", "local_denominator", "shard_loss", "shard_value_and_grad"]

#: The reductions that divide by a denominator, and so have a global form.
GLOBAL_REDUCTIONS: tuple[str, ...] = ("mean", "weighted_mean", "batch_mean")


def _global_reduction(reduction: object, caller: str) -> str:
    """``reduction`` checked as the loss checks it, then refused unless it has a denominator;
    ``caller`` is "denominator=" or "local_denominator", for the error.

    >>> _global_reduction("sum", "denominator=")
    Traceback (most recent call last):
    ValueError: denominator= is given with reduction='sum', which divides by no denominator (a \
shard's sum is already its share of the global sum); drop denominator=, or use reduction='mean', \
'weighted_mean' or 'batch_mean'.
    """
    checked = check_options(reduction=reduction).reduction
    if checked in GLOBAL_REDUCTIONS:
        return checked
    why = (
        "a shard's sum is already its share of the global sum"
        if checked == "sum"
        else "each element's loss is already the whole batch's"
    )
    others = "reduction='mean', 'weighted_mean' or 'batch_mean'"
    if caller == "local_denominator":
        raise ValueError(
            f"local_denominator(reduction={checked!r}) has nothing to count: reduction="
            f"{checked!r} divides by no denominator ({why}); combine the shards' losses as "
            f"they are, or pass {others}."
        )
    raise ValueError(
        f"{caller} is given with reduction={checked!r}, which divides by no denominator "
        f"({why}); drop {caller}, or use {others}."
    )


def _array_ops(backend: Backend) -> tuple[ArrayOps, Converter]:
    """The backend's ``rules.ArrayOps`` and ``rules.Converter`` (its optional ``ops`` and
    ``converter`` attributes), or a TypeError saying that it lacks them."""
    ops = getattr(backend, "ops", None)
    converter = getattr(backend, "converter", None)
    if ops is None or converter is None:
        name = getattr(backend, "name", type(backend).__qualname__)
        raise TypeError(
            f"the {name!r} backend has no 'ops' and 'converter' attributes (its "
            f"bce_core.rules.ArrayOps and Converter), which global reductions need; give the "
            f"backend class both (see bce_core.plugin.Backend), or reduce with "
            f"reduction='sum' and divide by the global denominator yourself."
        )
    return ops, converter


def _working_like(converter: Converter, inputs: Any) -> Any:
    """An array of the dtype denominators are computed in: the input's, or float32 for float16
    and bfloat16 (whose counts would round from 2049 on, and whose sums overflow at 65504).
    Only its dtype is used."""
    if _dtype_name(inputs) in HALF_DTYPES:
        return converter.as_input("logits", np.zeros((), np.float32))
    return inputs


def local_denominator(
    logits: Any,
    *,
    reduction: str = "mean",
    mask: Any = None,
    weight: Any = None,
    backend: str | Backend | None = None,
) -> Any:
    """This shard's share of ``reduction``'s denominator, as a 0-d array of the logits'
    framework, in the logits' dtype (float32 for float16 and bfloat16 logits).

    ``mean``: the number of elements ``mask`` (broadcast to the logits' shape) keeps;
    ``weighted_mean``: the sum of the kept elements' weights (broadcast likewise; the count
    without a weight); ``batch_mean``: ``shape[0]``. The shards' denominators add up to the
    global one, which ``denominator=`` of the public functions takes. ``logits`` may be
    probabilities: only their shape, dtype and device are read. ``weight`` and ``mask``
    follow the loss's dtype and shape rules.

    >>> import numpy as np
    >>> local_denominator(np.zeros((2, 3), np.float32), mask=np.array([True, False, True]))
    array(4., dtype=float32)
    >>> float(local_denominator(np.zeros((2, 3)), reduction="weighted_mean", weight=[[1.0], [2.5]]))
    10.5
    >>> local_denominator(np.zeros(3), reduction="sum")
    Traceback (most recent call last):
    ValueError: local_denominator(reduction='sum') has nothing to count: reduction='sum' divides \
by no denominator (a shard's sum is already its share of the global sum); combine the shards' \
losses as they are, or pass reduction='mean', 'weighted_mean' or 'batch_mean'.
    """
    impl = resolve_backend(backend, (logits, mask, weight))
    checked = _global_reduction(reduction, "local_denominator")
    ops, convert = _array_ops(impl)
    x = convert.as_input("logits", logits)
    w = None if weight is None else convert.as_operand("weight", weight, x)
    keep = None if mask is None else convert.as_mask(mask, x)
    shape_of = convert.shape_of
    static = shape_of(x)
    check_shapes(
        static,
        static,
        weight=None if w is None else shape_of(w),
        mask=None if keep is None else shape_of(keep),
    )
    dims = getattr(convert, "dynamic_shape", shape_of)(x)
    like = _working_like(convert, x)
    if w is not None and checked == "weighted_mean":
        w = ops.cast_like(w, like)
    by = rules.denominator(
        ops, checked, dims, keep=keep, weight=w if checked == "weighted_mean" else None, like=like
    )
    if isinstance(by, (int, float)):
        # One kept element, counted in the working dtype on the logits' device, times the size.
        one = ops.count(convert.as_mask(np.True_, x), (), like)
        return ops.cast_like(one * by, like)
    return by


def _checked_denominator(backend: Backend, denominator: Any) -> Any:
    """``denominator`` as a float (a Python or NumPy number, checked to be finite and >= 0) or
    as the 0-d array of ``backend``'s framework it is (followed as arithmetic: its value may
    be traced)."""
    if isinstance(denominator, bool) or isinstance(denominator, np.bool_):
        raise TypeError(
            f"denominator={denominator!r} is a bool; pass the global denominator, the sum of "
            f"the shards' bce_core.local_denominator(...)."
        )
    dims = _dims(denominator)
    owner = None if dims is None else get_registry().owner_of(type(denominator))
    if isinstance(denominator, (int, float, np.generic)) or owner == "numpy":
        if dims not in (None, ()):
            raise ValueError(
                f"denominator must be a number or a 0-d array, got an array of shape {dims}; "
                f"pass its value (a 0-d array, or float(denominator.reshape(())))."
            )
        value = float(denominator)
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"denominator={value!r} must be a finite number >= 0 (a count of elements or a "
                f"sum of weights); pass the sum of the shards' bce_core.local_denominator(...)."
            )
        return value
    if dims is None:
        raise TypeError(
            f"denominator={denominator!r} is of type {type(denominator).__qualname__}; pass a "
            f"number or a 0-d array, the sum of the shards' bce_core.local_denominator(...)."
        )
    if owner is not None and owner != backend.name:
        raise TypeError(
            f"denominator is an array of the {owner!r} backend's framework, but the loss is "
            f"computed by the {backend.name!r} backend; pass a number or a 0-d array of the "
            f"loss's framework (bce_core.local_denominator returns one)."
        )
    if dims != ():
        raise ValueError(
            f"denominator must be 0-d, got an array of shape {dims}; reshape it to () (for "
            f"example denominator.reshape(()))."
        )
    return denominator


class _Shard:
    """What one shard's call needs: the backend's operations, the inputs converted (in float32
    when they are float16 or bfloat16, so that the shard's sum neither overflows nor rounds
    twice) and the checked denominator in the dtype of the division."""

    def __init__(
        self, backend: Backend, input_name: str, inputs: Any, denominator: Any, reduction: str
    ) -> None:
        _global_reduction(reduction, "denominator=")
        self.ops, convert = _array_ops(backend)
        checked = _checked_denominator(backend, denominator)
        self.original = convert.as_input(input_name, inputs)
        like = _working_like(convert, self.original)
        self.half = like is not self.original
        self.inputs = self.ops.cast_like(self.original, like) if self.half else self.original
        self.denominator = (
            checked if isinstance(checked, float) else self.ops.cast_like(checked, like)
        )

    def divide(self, total: Any) -> tuple[Any, Any]:
        """(the shard's loss, the factor of its sum's gradients): the sum over the global
        denominator, with the spec's zero-denominator rule."""
        loss, scale = rules.divide_or_zero(self.ops, total, self.denominator)
        return self.back(loss), scale

    def scale(self, grad: Any, scale: Any) -> Any:
        """A gradient of the shard's sum as one of its loss: times 1/D, exactly 0 where D is 0."""
        ops = self.ops
        if isinstance(scale, float):
            scaled = ops.zeros_like(grad) if scale == 0 else grad * scale
        else:
            scaled = ops.where(scale == 0, 0.0, grad * scale)
        return self.back(scaled)

    def back(self, value: Any) -> Any:
        """``value`` in the input's own dtype (rounded once from float32 for half inputs)."""
        return self.ops.cast_like(value, self.original) if self.half else value


def shard_loss(
    backend: Backend,
    method: str,
    inputs: Any,
    targets: Any,
    denominator: Any,
    options: dict[str, Any],
) -> Any:
    """The public loss ``method`` with ``denominator=``: the shard's loss with
    ``reduction="sum"`` over the global ``denominator`` (0 where it is 0). ``options`` are the
    call's keyword options, ``reduction`` among them. Differentiable by the framework's
    autodiff; the denominator is a constant of it unless it is computed differentiably.

    >>> import numpy as np
    >>> from bce_core.dispatch import get_backend
    >>> float(shard_loss(get_backend("numpy"), "binary_cross_entropy_with_logits",
    ...                  np.zeros(2), np.ones(2), 4, {"reduction": "mean"}))
    0.34657359027997264
    """
    reduction = options.get("reduction", "mean")
    input_name = "probs" if method == "binary_cross_entropy" else "logits"
    shard = _Shard(backend, input_name, inputs, denominator, reduction)
    total = getattr(backend, method)(shard.inputs, targets, **{**options, "reduction": "sum"})
    return shard.divide(total)[0]


def shard_value_and_grad(
    backend: Backend, logits: Any, targets: Any, denominator: Any, options: dict[str, Any]
) -> tuple[Any, Any]:
    """``value_and_grad`` with ``denominator=``: the sum's loss and gradients over the global
    ``denominator`` (0 where it is 0).

    With ``reduction="weighted_mean"`` the gradient with respect to ``weight`` holds a term in
    the global loss (d/dw_i of sum(w B) / sum(w) is (B_i - loss) / sum(w)), which no shard
    has: asking for it is a ValueError.

    >>> import numpy as np
    >>> from bce_core.dispatch import get_backend
    >>> loss, grad = shard_value_and_grad(get_backend("numpy"), np.zeros(2), np.ones(2), 4,
    ...                                   {"reduction": "mean", "wrt": "logits"})
    >>> grad.tolist()
    [-0.125, -0.125]
    """
    reduction = options.get("reduction", "mean")
    wrt = options.get("wrt", "logits")
    names = wrt if isinstance(wrt, (tuple, list)) else (wrt,)
    shard = _Shard(backend, "logits", logits, denominator, reduction)
    if reduction == "weighted_mean" and "weight" in names:
        raise ValueError(
            "value_and_grad(wrt=...) names 'weight' with reduction='weighted_mean' and "
            "denominator=: the gradient with respect to the weights holds the global loss, "
            "which one shard does not have; take the gradient with respect to the weights of "
            "the global loss (on one device), or use reduction='mean' or 'batch_mean'."
        )
    total, grads = backend.value_and_grad(shard.inputs, targets, **{**options, "reduction": "sum"})
    loss, scale = shard.divide(total)
    if isinstance(grads, tuple):
        return loss, tuple(shard.scale(g, scale) for g in grads)
    return loss, shard.scale(grads, scale)
