"""The frameworks' own mean loss and gradient: the baselines we are timed against.

- NumPy: the usual stable formula, max(x, 0) - x y + log1p(exp(-|x|)), and
  the gradient (sigmoid(x) - y) / n;
- PyTorch: ``torch.nn.functional.binary_cross_entropy_with_logits``, with autograd;
- TensorFlow: ``tf.nn.sigmoid_cross_entropy_with_logits`` with ``tf.GradientTape``,
  eager and in ``tf.function``; Keras 3's ``keras.ops.binary_crossentropy``
  (from_logits=True, TensorFlow backend) in ``tf.function``;
- JAX: optax's ``sigmoid_binary_cross_entropy`` (mean), eager and under
  ``jax.jit``, with ``jax.value_and_grad`` under ``jax.jit``.

``native_variants`` returns the variants and notes about the baselines that
are not installed.

>>> import numpy as np
>>> x, y = np.array([0.0, 2.0], np.float32), np.array([1.0, 0.0], np.float32)
>>> variants, notes = native_variants("numpy", x, y)
>>> [v.label for v in variants], notes
(['naive formula', 'naive formula + grad'], [])
>>> loss, grad = variants[1].run()
>>> round(float(loss), 4), [round(float(g), 4) for g in grad]
(1.41, [-0.25, 0.4404])
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from .variants import COMPILED, EAGER, FORWARD, FORWARD_GRAD, Variant

Natives = tuple[list[Variant], list[str]]


def _numpy(x: Any, y: Any) -> Natives:
    import numpy as np

    def loss() -> Any:
        return (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).mean()

    def loss_and_grad() -> tuple[Any, Any]:
        return loss(), (1 / (1 + np.exp(-x)) - y) / x.size

    return [
        Variant("native", FORWARD, "naive formula", EAGER, loss),
        Variant("native", FORWARD_GRAD, "naive formula + grad", EAGER, loss_and_grad),
    ], []


def _torch(x: Any, y: Any) -> Natives:
    import torch

    loss = torch.nn.functional.binary_cross_entropy_with_logits
    leaf = x.detach().clone().requires_grad_(True)

    def backward() -> tuple[Any, Any]:
        leaf.grad = None
        value = loss(leaf, y)
        value.backward()
        return value.detach(), leaf.grad

    return [
        Variant("native", FORWARD, "F.bce_with_logits", EAGER, lambda: loss(x, y)),
        Variant("native", FORWARD_GRAD, "F.bce_with_logits + backward()", EAGER, backward),
    ], []


def _tensorflow(x: Any, y: Any) -> Natives:
    import tensorflow as tf

    def loss(logits: Any, targets: Any) -> Any:
        elements = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_mean(elements)

    def taped(of: Callable[[Any, Any], Any]) -> Callable[[Any, Any], tuple[Any, Any]]:
        def run(logits: Any, targets: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(logits)
                value = of(logits, targets)
            return value, tape.gradient(value, logits)

        return run

    eager_taped = taped(loss)
    graph_loss = tf.function(loss, autograph=False)  # as ours: nothing for AutoGraph to convert
    graph_taped = tf.function(eager_taped, autograph=False)
    variants = [
        Variant("native", FORWARD, "tf.nn.sigmoid_ce", EAGER, lambda: loss(x, y)),
        Variant(
            "native", FORWARD, "tf.nn.sigmoid_ce @tf.function", COMPILED, lambda: graph_loss(x, y)
        ),
        Variant(
            "native", FORWARD_GRAD, "tf.nn.sigmoid_ce + tape", EAGER, lambda: eager_taped(x, y)
        ),
        Variant(
            "native",
            FORWARD_GRAD,
            "tf.nn.sigmoid_ce + tape @tf.function",
            COMPILED,
            lambda: graph_taped(x, y),
        ),
    ]
    keras, note = _keras_on_tensorflow()
    if keras is None:
        return variants, [note]

    def keras_loss(logits: Any, targets: Any) -> Any:
        return keras.ops.mean(keras.ops.binary_crossentropy(targets, logits, from_logits=True))

    keras_graph = tf.function(keras_loss, autograph=False)
    keras_taped = tf.function(taped(keras_loss), autograph=False)
    variants += [
        Variant(
            "native", FORWARD, "keras.ops.bce @tf.function", COMPILED, lambda: keras_graph(x, y)
        ),
        Variant(
            "native",
            FORWARD_GRAD,
            "keras.ops.bce + tape @tf.function",
            COMPILED,
            lambda: keras_taped(x, y),
        ),
    ]
    return variants, []


def _keras_on_tensorflow() -> tuple[Any, str]:
    """Keras 3 with the TensorFlow backend, or None and why not."""
    if importlib.util.find_spec("keras") is None:
        return None, "Keras not installed: keras.ops.binary_crossentropy not timed"
    try:
        import keras
    except Exception as exc:  # a broken Keras must not stop the TensorFlow timings
        return None, f"Keras failed to import ({type(exc).__name__}: {exc}): not timed"
    if not hasattr(keras, "ops"):
        return None, f"Keras {keras.__version__} has no keras.ops (Keras 3 needed): not timed"
    if keras.backend.backend() != "tensorflow":
        return None, (
            f"Keras runs on {keras.backend.backend()!r}, not TensorFlow "
            "(KERAS_BACKEND): keras.ops.binary_crossentropy not timed"
        )
    return keras, ""


def _jax(x: Any, y: Any) -> Natives:
    if importlib.util.find_spec("optax") is None:
        return [], [
            "optax not installed: JAX's own loss (optax.sigmoid_binary_cross_entropy) not timed"
        ]
    import jax
    import optax

    def loss(logits: Any, targets: Any) -> Any:
        return optax.sigmoid_binary_cross_entropy(logits, targets).mean()

    compiled, value_and_grad = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
    return [
        Variant("native", FORWARD, "optax.sigmoid_bce", EAGER, lambda: loss(x, y)),
        Variant("native", FORWARD, "jit(optax.sigmoid_bce)", COMPILED, lambda: compiled(x, y)),
        Variant(
            "native",
            FORWARD_GRAD,
            "jit(value_and_grad(optax))",
            COMPILED,
            lambda: value_and_grad(x, y),
        ),
    ], []


NATIVES: dict[str, Callable[[Any, Any], Natives]] = {
    "numpy": _numpy,
    "torch": _torch,
    "tensorflow": _tensorflow,
    "jax": _jax,
}


def native_variants(framework: str, x: Any, y: Any) -> Natives:
    """The framework's own variants on ``x`` and ``y``, and notes on those not available."""
    make = NATIVES.get(framework)
    if make is None:
        return [], [f"no native baseline known for backend {framework!r}: only bce-core is timed"]
    return make(x, y)
