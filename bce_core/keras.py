"""Keras 3 drop-ins: :class:`BinaryCrossentropy` and :func:`binary_crossentropy` by bce-core.

Both take what ``keras.losses``'s take (``from_logits``, ``label_smoothing``, ``axis``, and
for the class ``reduction``, ``name`` and ``dtype``), plus ``pos_weight`` (a number or one
per class, on the last axis) and ``log_clamp`` for the probability form. The loss of a
sample is the mean over ``axis`` of the element losses, which
:func:`bce_core.binary_cross_entropy_with_logits` (or :func:`bce_core.binary_cross_entropy`)
computes on the backend of the tensors Keras passes: TensorFlow, JAX or PyTorch, whichever
Keras runs on. Keras then applies its own reduction, ``sample_weight`` and mask, so
``reduction`` takes Keras's values. The loss works where Keras traces its train step
(``tf.function``, with or without XLA, and ``jax.jit``) and where it runs it eagerly
(PyTorch). Both are registered with Keras (package "bce_core"), so a model compiled with
either saves to a ``.keras`` file and loads back once this module is imported.

Keras smooths labels as bce-core does: y (1 - ε) + ε / 2. Where Keras clips probabilities
to [1e-7, 1 - 1e-7] (so no log is below -16.12), the probability form here is exact down to
``log_clamp`` (-100 by default, as PyTorch; ``float("-inf")`` for no clamp). As Keras's own
loss does on TensorFlow, a ``y_pred`` that a Keras sigmoid activation produced carries its
logits, and the loss is then computed from them: on TensorFlow (eager and in
``tf.function``), PyTorch and eager JAX. Inside ``jax.jit``, where Keras trains on JAX, a
traced array cannot carry them, and the probabilities are used. The logits form is exact
for every finite logit, its gradient too.

At p = 1e-30 with target 1 the loss is -log p = 69.08; Keras's is -log 1e-7 = 16.12:

>>> import keras
>>> from bce_core.keras import BinaryCrossentropy
>>> y_true, y_pred = [[1.0, 0.0]], [[1e-30, 0.5]]
>>> round(float(BinaryCrossentropy()(y_true, y_pred)), 3)  # (-log 1e-30 - log 0.5) / 2
34.885
>>> round(float(keras.losses.BinaryCrossentropy()(y_true, y_pred)), 3)
8.406
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar

import keras
import numpy as np
from keras import ops

from .api import binary_cross_entropy, binary_cross_entropy_with_logits
from .spec import DEFAULT_LOG_CLAMP, check_label_smoothing, check_log_clamp, check_number

__all__ = ["BinaryCrossentropy", "binary_crossentropy"]

#: pos_weight as it is stored in a config: one number, or one per class.
PosWeight = float | list[float] | None
#: The axes the mean is taken over, as ``keras.ops.mean`` takes them.
Axis = int | tuple[int, ...] | None

T = TypeVar("T")
#: Registers a loss by the name "bce_core>NAME", which ``keras.saving`` looks up on loading.
_serializable: Callable[[T], T] = keras.saving.register_keras_serializable(package="bce_core")


def _check_from_logits(from_logits: object) -> bool:
    """``from_logits`` when it is True or False, else TypeError (a string is always truthy).

    >>> _check_from_logits("False")
    Traceback (most recent call last):
    TypeError: from_logits must be True or False, got 'False' of type str; pass \
from_logits=True when y_pred holds logits, or from_logits=False for probabilities.
    """
    if from_logits is True or from_logits is False:
        return from_logits
    if isinstance(from_logits, np.bool_):
        return bool(from_logits)
    raise TypeError(
        f"from_logits must be True or False, got {reprlib.repr(from_logits)} of type "
        f"{type(from_logits).__name__}; pass from_logits=True when y_pred holds logits, or "
        f"from_logits=False for probabilities."
    )


def _check_axis(axis: object) -> Axis:
    """``axis`` as an int, a tuple of ints or None (a config stores a tuple as a list).

    >>> _check_axis([0, -1])
    (0, -1)
    >>> _check_axis(1.0)
    Traceback (most recent call last):
    TypeError: axis=1.0 is of type float; pass an int (such as -1, the last axis), a tuple of \
ints, or None for all axes.
    """
    if axis is None or (isinstance(axis, (int, np.integer)) and not isinstance(axis, bool)):
        return None if axis is None else int(axis)
    if isinstance(axis, (list, tuple)) and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis
    ):
        return tuple(int(a) for a in axis)
    raise TypeError(
        f"axis={reprlib.repr(axis)} is of type {type(axis).__name__}; pass an int (such as -1, "
        f"the last axis), a tuple of ints, or None for all axes."
    )


def _check_pos_weight(pos_weight: Any) -> PosWeight:
    """``pos_weight`` as a float or a list of floats (one per class), each finite.

    >>> _check_pos_weight(np.array([1, 2.5]))
    [1.0, 2.5]
    >>> _check_pos_weight([1.0, float("inf")])
    Traceback (most recent call last):
    ValueError: pos_weight=[1.0, inf] holds a value that is not finite, which makes the loss of \
its elements NaN; pass finite numbers, such as 2.0 or one per class [1.0, 3.0].
    """
    if pos_weight is None:
        return None
    values: float | list[float]
    if isinstance(pos_weight, (list, tuple)) or getattr(pos_weight, "ndim", 0) == 1:
        values = [
            check_number("pos_weight", v, "2.0")
            for v in (pos_weight.tolist() if hasattr(pos_weight, "tolist") else pos_weight)
        ]
    elif getattr(pos_weight, "ndim", 0) > 1:
        raise ValueError(
            f"pos_weight has shape {tuple(pos_weight.shape)}; pass one number or one per "
            f"class (a list of the last axis's length), such as 2.0 or [1.0, 3.0]."
        )
    else:
        values = check_number("pos_weight", pos_weight, "2.0")
    if not all(math.isfinite(v) for v in (values if isinstance(values, list) else [values])):
        raise ValueError(
            f"pos_weight={reprlib.repr(values)} holds a value that is not finite, which makes "
            f"the loss of its elements NaN; pass finite numbers, such as 2.0 or one per class "
            f"[1.0, 3.0]."
        )
    return values


def _same_rank(y_true: Any, y_pred: Any) -> tuple[Any, Any, bool]:
    """Keras's rule for a rank that differs by one (a trailing axis of size 1 is dropped, or
    added to a rank-1 ``y_true``), and whether ``y_pred`` was squeezed."""
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            return y_true, ops.expand_dims(y_pred, -1), False
        return ops.squeeze(y_true, -1), y_pred, False
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return ops.expand_dims(y_true, -1), y_pred, False
        return y_true, ops.squeeze(y_pred, -1), True
    return y_true, y_pred, False


def _per_sample(
    y_true: Any,
    y_pred: Any,
    *,
    from_logits: bool,
    label_smoothing: float,
    axis: Axis,
    pos_weight: PosWeight,
    log_clamp: float,
) -> Any:
    """The mean over ``axis`` of bce-core's element losses, on the tensors' backend."""
    y_pred = ops.convert_to_tensor(y_pred)
    # Set by keras.activations.sigmoid; Keras's own loss reads it on TensorFlow.
    logits = None if from_logits else getattr(y_pred, "_keras_logits", None)
    y_true = ops.cast(y_true, y_pred.dtype)  # int or bool labels
    y_true, y_pred, squeezed = _same_rank(y_true, y_pred)
    q = None if pos_weight is None else ops.convert_to_tensor(pos_weight, dtype=y_pred.dtype)
    if logits is not None:
        logits = ops.cast(logits, y_pred.dtype)
        from_logits, y_pred = True, ops.squeeze(logits, -1) if squeezed else logits
    if from_logits:
        elements = binary_cross_entropy_with_logits(
            y_pred, y_true, pos_weight=q, label_smoothing=label_smoothing, reduction="none"
        )
    else:
        elements = binary_cross_entropy(
            y_pred,
            y_true,
            pos_weight=q,
            label_smoothing=label_smoothing,
            log_clamp=log_clamp,
            reduction="none",
        )
    return ops.mean(elements, axis=axis)


@_serializable
def binary_crossentropy(
    y_true: Any,
    y_pred: Any,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: Axis = -1,
) -> Any:
    """``keras.losses.binary_crossentropy`` computed by bce-core: the loss of each sample.

    ``y_true`` is cast to ``y_pred``'s dtype; the result has ``y_pred``'s shape without
    ``axis``. Pass it as ``model.compile(loss=binary_crossentropy)``.

    >>> loss = binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
    >>> [round(v, 4) for v in np.asarray(loss).tolist()]
    [0.9163, 0.7136]
    """
    return _per_sample(
        y_true,
        y_pred,
        from_logits=_check_from_logits(from_logits),
        label_smoothing=check_label_smoothing(label_smoothing),
        axis=_check_axis(axis),
        pos_weight=None,
        log_clamp=DEFAULT_LOG_CLAMP,
    )


@_serializable
class BinaryCrossentropy(keras.losses.Loss):  # type: ignore[misc]
    """``keras.losses.BinaryCrossentropy`` computed by bce-core, exact in the tails.

    ``pos_weight`` weighs the positive term: one number, or a list with one per class (the
    last axis). ``log_clamp`` is the floor of each log in the probability form (only there:
    it is refused with ``from_logits=True``). ``reduction`` is Keras's:
    "sum_over_batch_size" (the default), "sum", "mean", "mean_with_sample_weight", "none".

    >>> loss_fn = BinaryCrossentropy(from_logits=True, pos_weight=[1.0, 2.0], reduction="sum")
    >>> round(float(loss_fn([[1, 1], [0, 1]], [[0.0, 30.0], [-1.0, 2.0]])), 6)
    0.630132
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: Axis = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "binary_crossentropy",
        dtype: Any = None,
        *,
        pos_weight: Any = None,
        log_clamp: float = DEFAULT_LOG_CLAMP,
    ) -> None:
        self.from_logits = _check_from_logits(from_logits)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.axis = _check_axis(axis)
        self.pos_weight = _check_pos_weight(pos_weight)
        self.log_clamp = check_log_clamp(log_clamp)
        if self.from_logits and self.log_clamp != DEFAULT_LOG_CLAMP:
            raise ValueError(
                f"log_clamp={self.log_clamp!r} applies to probabilities, and from_logits=True; "
                f"drop log_clamp (the logits form takes no log to clamp), or pass "
                f"from_logits=False."
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._dtype_given = dtype is not None

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """The loss of each sample: the mean over ``axis`` of the element losses."""
        return _per_sample(
            y_true,
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
            axis=self.axis,
            pos_weight=self.pos_weight,
            log_clamp=self.log_clamp,
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as ``from_config`` (and ``keras.saving``) takes them.

        >>> BinaryCrossentropy(from_logits=True, pos_weight=2).get_config()["pos_weight"]
        2.0
        """
        config: dict[str, Any] = super().get_config()
        config.update(
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
            axis=self.axis,
            dtype=self._dtype_policy.name if self._dtype_given else None,
            pos_weight=self.pos_weight,
            log_clamp=self.log_clamp,
        )
        return config
