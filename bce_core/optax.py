"""An optax drop-in: :func:`sigmoid_binary_cross_entropy` computed by bce-core's JAX backend.

It takes what ``optax.losses.sigmoid_binary_cross_entropy`` takes and returns what it
returns: the element losses (no reduction) of the logits against the labels, the two
broadcast against each other, in the logits' dtype (labels of any dtype, integer and bool
included, are cast to it). It is a JAX function: ``jax.jit``, ``jax.vmap``, ``jax.grad`` (with
respect to the logits or the labels) and higher derivatives go through it, so it replaces
optax's in a Flax or optax training step unchanged.

The loss and its gradient are bce-core's: within a few ULP of the exact value for every
finite logit (float16 and bfloat16 are computed in float32 and rounded once). optax's
gradient loses up to 8 ULP in float32 (at logits of about -9 to -15 with label 1, where it is
close to -1), 31 in float64 (about -33) and 4 in bfloat16 and float16, and its loss is NaN
at a logit of +inf with label 1 (or -inf with label 0) where the exact loss is 0. Values
below the smallest normal number may be flushed to 0 (as XLA does on the CPU, in optax too).

Keyword-only extras, each as in :func:`bce_core.binary_cross_entropy_with_logits`:
``pos_weight`` multiplies the positive term (shape (C,) is per class, on the last axis),
``label_smoothing`` ε trains on y (1 - ε) + ε / 2 (the binary smoothing; ``optax.smooth_labels``
divides ε by the size of the last axis instead), ``mask`` gives 0 where it is False, with a
zero gradient. ``pos_weight`` and ``mask`` broadcast to the loss's shape without enlarging it.

>>> import jax
>>> import jax.numpy as jnp
>>> from bce_core.optax import sigmoid_binary_cross_entropy
>>> logits = jnp.array([[0.0, 30.0], [-1.0, 2.0]], dtype=jnp.float32)
>>> labels = jnp.array([[1], [0]])  # one label per row, broadcast as in optax
>>> loss = sigmoid_binary_cross_entropy(logits, labels)
>>> [[float(f"{v:.6g}") for v in row] for row in loss.tolist()]
[[0.693147, 9.35762e-14], [0.313262, 2.12693]]
>>> grad = jax.jit(jax.grad(lambda x: sigmoid_binary_cross_entropy(x, labels).sum()))(logits)
>>> f"{float(grad[0, 1]):.5e}"  # -sigmoid(-30)
'-9.35762e-14'
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .api import binary_cross_entropy_with_logits
from .dispatch import get_backend

__all__ = ["sigmoid_binary_cross_entropy"]


def _broadcast(logits: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
    """``jnp.broadcast_arrays(logits, labels)``, with an error naming both shapes.

    >>> _broadcast(jnp.zeros((2, 3)), jnp.zeros(4))
    Traceback (most recent call last):
    ValueError: labels of shape (4,) do not broadcast against logits of shape (2, 3); pass \
labels of shape (2, 3), or of a shape that broadcasts to it such as (2, 1) or (3,).
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    try:
        broadcast = jnp.broadcast_arrays(logits, labels)
    except ValueError:
        shape = logits.shape
        examples = " or ".join(str(s) for s in (shape[:-1] + (1,), shape[-1:])) if shape else "()"
        raise ValueError(
            f"labels of shape {labels.shape} do not broadcast against logits of shape {shape}; "
            f"pass labels of shape {shape}, or of a shape that broadcasts to it such as "
            f"{examples}."
        ) from None
    return broadcast[0], broadcast[1]


def _cast(value: Any, dtype: Any) -> Any:
    """A JAX array of another dtype cast to ``dtype``; anything else as it is."""
    if isinstance(value, jax.Array) and value.dtype != dtype:
        return value.astype(dtype)
    return value


def sigmoid_binary_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    label_smoothing: float = 0.0,
    mask: Any = None,
) -> jax.Array:
    """``optax.losses.sigmoid_binary_cross_entropy`` computed by bce-core: the element losses.

    ``logits`` are float16, bfloat16, float32 or float64; ``labels`` (targets in [0, 1], hard
    or soft) broadcast against them, and the result has the broadcast shape and the logits'
    dtype. ``pos_weight``, ``label_smoothing`` and ``mask`` are described in the module's
    docstring; ``label_smoothing`` is a Python number (not a traced value).

    >>> import jax.numpy as jnp
    >>> loss = sigmoid_binary_cross_entropy(
    ...     jnp.array([[0.0, 2.0], [1.0, -3.0]]), jnp.array([[1.0, 0.0], [1.0, 1.0]]),
    ...     pos_weight=jnp.array([1.0, 2.0]), mask=jnp.array([[True], [False]]))
    >>> [round(v, 6) for v in loss.ravel().tolist()]
    [0.693147, 2.126928, 0.0, 0.0]
    """
    logits, labels = _broadcast(logits, labels)
    if jnp.issubdtype(logits.dtype, jnp.floating):
        # Cast as optax does (bce-core would cast too): a JAX array of another dtype closed
        # over by a jitted function reaches the backend as a traced value of the right dtype.
        labels = _cast(labels, logits.dtype)
        pos_weight = _cast(pos_weight, logits.dtype)
    loss: jax.Array = binary_cross_entropy_with_logits(
        logits,
        labels,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        mask=mask,
        reduction="none",
        backend=_JAX,
    )
    return loss


# Loaded once, at import: the registry is built outside any traced function.
_JAX = get_backend("jax")
