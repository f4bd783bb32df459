"""Our variants: bce-core's public API called on a framework's own tensors.

Every backend gets the forward loss (``bce_core.binary_cross_entropy_with_logits``)
and the fused loss and gradient (``bce_core.value_and_grad``), called eagerly.
Frameworks with autodiff also get their own autodiff through our loss, the way
a training loop uses it: ``loss.backward()`` in PyTorch,
``jax.jit(jax.value_and_grad(...))`` in JAX, and ``tf.GradientTape`` in
TensorFlow, eagerly and in ``tf.function``; and the loss in ``jax.jit`` and in
``tf.function``.

>>> import numpy as np
>>> x, y = np.array([0.0, 2.0], np.float32), np.array([1.0, 0.0], np.float32)
>>> [v.label for v in our_variants("numpy", x, y)]
['api', 'value_and_grad']
>>> round(float(our_variants("numpy", x, y)[0].run()), 4)
1.41
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .variants import COMPILED, EAGER, FORWARD, FORWARD_GRAD, Variant


def _api(backend: str | None) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
    """The loss and value_and_grad of the public API; ``backend`` None: chosen by the arrays."""
    import bce_core

    if backend is None:
        return bce_core.binary_cross_entropy_with_logits, bce_core.value_and_grad
    return (
        functools.partial(bce_core.binary_cross_entropy_with_logits, backend=backend),
        functools.partial(bce_core.value_and_grad, backend=backend),
    )


def _torch(api_loss: Callable[[Any, Any], Any], x: Any, y: Any) -> list[Variant]:
    leaf = x.detach().clone().requires_grad_(True)

    def backward() -> tuple[Any, Any]:
        leaf.grad = None  # a fresh gradient each call, as after zero_grad(set_to_none=True)
        loss = api_loss(leaf, y)
        loss.backward()
        return loss.detach(), leaf.grad

    return [Variant("ours", FORWARD_GRAD, "api + backward()", EAGER, backward)]


def _jax(api_loss: Callable[[Any, Any], Any], x: Any, y: Any) -> list[Variant]:
    import jax

    # Compiled here; the first (warm-up) call traces and compiles, outside the timed rounds.
    forward = jax.jit(api_loss)
    value_and_grad = jax.jit(jax.value_and_grad(api_loss))
    return [
        Variant("ours", FORWARD, "jit(api)", COMPILED, lambda: forward(x, y)),
        Variant(
            "ours", FORWARD_GRAD, "jit(value_and_grad(api))", COMPILED, lambda: value_and_grad(x, y)
        ),
    ]


def _tensorflow(api_loss: Callable[[Any, Any], Any], x: Any, y: Any) -> list[Variant]:
    import tensorflow as tf

    def taped(logits: Any, targets: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = api_loss(logits, targets)
        return loss, tape.gradient(loss, logits)

    # No Python control flow here for AutoGraph to convert.
    forward = tf.function(api_loss, autograph=False)
    graph_taped = tf.function(taped, autograph=False)
    return [
        Variant("ours", FORWARD_GRAD, "api + tape", EAGER, lambda: taped(x, y)),
        Variant("ours", FORWARD, "api @tf.function", COMPILED, lambda: forward(x, y)),
        Variant(
            "ours", FORWARD_GRAD, "api + tape @tf.function", COMPILED, lambda: graph_taped(x, y)
        ),
    ]


AUTODIFF: dict[str, Callable[..., list[Variant]]] = {
    "torch": _torch,
    "jax": _jax,
    "tensorflow": _tensorflow,
}


def our_variants(framework: str, x: Any, y: Any, backend: str | None = None) -> list[Variant]:
    """Our variants on native tensors ``x`` (logits) and ``y`` (targets) of backend ``framework``.

    ``backend`` is passed on to the API (None: the arrays choose the backend, as in user code).
    """
    loss, value_and_grad = _api(backend)
    variants = [
        Variant("ours", FORWARD, "api", EAGER, lambda: loss(x, y)),
        Variant("ours", FORWARD_GRAD, "value_and_grad", EAGER, lambda: value_and_grad(x, y)),
    ]
    extra = AUTODIFF.get(framework)
    return variants + (extra(loss, x, y) if extra is not None else [])
