"""Train one small model with ``model.fit`` on the Keras backend that ``KERAS_BACKEND`` names.

Run as ``KERAS_BACKEND=jax python tests/keras_worker.py``: the model, its starting weights and
the data are the same fixed NumPy arrays on every backend, the batches are not shuffled, and
the last line of standard output is a JSON object of the loss history of each run, by name:

- "ours": ``bce_core.keras.BinaryCrossentropy`` from logits, with ``pos_weight``,
  ``label_smoothing``, ``sample_weight`` and int labels;
- "function": ``bce_core.keras.binary_crossentropy`` on a sigmoid output (computed from the
  logits the activation keeps on TensorFlow and PyTorch, from the probabilities on JAX);
- on TensorFlow, "ours_xla": "ours" with ``jit_compile=True`` (XLA, as Keras picks on a GPU).

It also holds "tails": the largest error, in float32 ULPs of the float64 reference, of ours
and of ``keras.losses.BinaryCrossentropy`` on :data:`TAIL_LOGITS` (loss and gradient) and on
:data:`TAIL_PROBS` (loss).

Keras traces the train step in ``tf.function`` on TensorFlow and in ``jax.jit`` on JAX, and
runs it eagerly on PyTorch.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from bce_core import reference  # noqa: E402
from bce_core.keras import BinaryCrossentropy, binary_crossentropy  # noqa: E402

EPOCHS = 5
BATCH_SIZE = 16

#: Logits of ±30..±80 with the target that makes each loss tiny (one element per sample).
TAIL_LOGITS = np.array([[30.0], [-30.0], [40.0], [-40.0], [60.0], [-60.0], [80.0], [-80.0]], "f4")
TAIL_LOGIT_TARGETS = np.array([[1.0], [0.0]] * 4, "f4")
#: Probabilities beyond Keras's clip at 1e-7, and 1 - 2**-24, the float32 next to 1.
TAIL_PROBS = np.array([[1e-30], [1e-30], [1e-8], [1.0 - 2.0**-24]], "f4")
TAIL_PROB_TARGETS = np.array([[1.0], [0.0], [0.0], [1.0]], "f4")


def ulps(ours: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|ours - exact| in float32 ULPs of the exact value."""
    ours, exact = np.asarray(ours, np.float64), np.asarray(exact, np.float64)
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(ours - exact) / spacing


def value_and_grad(loss_fn: Any, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[Any, Any]:
    """``loss_fn(y_true, y_pred)`` and the gradient of its sum with respect to ``y_pred``, by
    the autodiff of the Keras backend, as NumPy arrays."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(y_pred)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(tf.constant(y_true), x)
        return np.asarray(loss), np.asarray(tape.gradient(loss, x))
    if backend == "jax":
        import jax

        loss, pullback = jax.vjp(lambda x: loss_fn(y_true, x), y_pred)
        return np.asarray(loss), np.asarray(pullback(jax.numpy.ones_like(loss))[0])
    import torch

    x = torch.tensor(y_pred, requires_grad=True)
    loss = loss_fn(torch.tensor(y_true), x)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def tails() -> dict[str, float]:
    """The largest ULP error of each loss (and gradient) against the reference in the tails."""
    exact, exact_grad = reference.value_and_grad(TAIL_LOGITS, TAIL_LOGIT_TARGETS, reduction="none")
    exact_probs = reference.binary_cross_entropy(TAIL_PROBS, TAIL_PROB_TARGETS, reduction="none")
    errors = {}
    for name, loss_class in (
        ("ours", BinaryCrossentropy),
        ("keras", keras.losses.BinaryCrossentropy),
    ):
        loss, grad = value_and_grad(
            loss_class(from_logits=True, reduction="none"), TAIL_LOGIT_TARGETS, TAIL_LOGITS
        )
        probs_loss = loss_class(reduction="none")(TAIL_PROB_TARGETS, TAIL_PROBS)
        errors[f"{name}_logits"] = float(ulps(loss, exact[:, 0]).max())
        errors[f"{name}_logits_grad"] = float(ulps(grad, exact_grad).max())
        errors[f"{name}_probs"] = float(ulps(np.asarray(probs_loss), exact_probs[:, 0]).max())
    return errors


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64 samples of 8 features, int labels of shape (64, 1), and sample weights."""
    rng = np.random.default_rng(20261204)
    x = rng.normal(0.0, 1.0, (64, 8)).astype(np.float32)
    direction = rng.normal(0.0, 1.0, (8, 1))
    noise = rng.normal(0.0, 0.5, (64, 1))
    y = (x @ direction + noise > 0.0).astype(np.int32)
    sample_weight = rng.uniform(0.5, 2.0, 64).astype(np.float32)
    return x, y, sample_weight


def starting_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(0.0, 0.5, (8, 4)).astype(np.float32),
        rng.normal(0.0, 0.1, (4,)).astype(np.float32),
        rng.normal(0.0, 0.5, (4, 1)).astype(np.float32),
        rng.normal(0.0, 0.1, (1,)).astype(np.float32),
    ]


def history(
    loss: object, *, sigmoid: bool = False, weighted: bool = False, **compile_options: object
) -> list[float]:
    """The per-epoch training loss of Dense(4, tanh) -> Dense(1) trained with ``loss``."""
    x, y, sample_weight = data()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1, activation="sigmoid" if sigmoid else None),
        ]
    )
    model.set_weights(starting_weights())
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=loss, **compile_options)
    fitted = model.fit(
        x,
        y,
        sample_weight=sample_weight if weighted else None,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
    )
    return [float(v) for v in fitted.history["loss"]]


def main() -> None:
    ours = BinaryCrossentropy(from_logits=True, label_smoothing=0.1, pos_weight=[2.0])
    runs = {
        "ours": history(ours, weighted=True),
        "function": history(binary_crossentropy, sigmoid=True),
    }
    if keras.backend.backend() == "tensorflow":
        runs["ours_xla"] = history(ours, weighted=True, jit_compile=True)
    print(json.dumps({"backend": keras.backend.backend(), "runs": runs, "tails": tails()}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
