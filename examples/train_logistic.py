"""Logistic regression on scikit-learn's breast-cancer data, written once against bce-core.

The loss is ``bce_core.binary_cross_entropy_with_logits`` whatever the
backend; gradients come from each framework's own autodiff (torch.autograd,
jax.grad, tf.GradientTape; NumPy uses ``bce_core.value_and_grad`` and the
chain rule) and the step from its own optimiser (torch.optim.SGD, optax.sgd,
keras SGD; plain NumPy). The same seed gives the same curve on every
backend, to float32 rounding.

    python examples/train_logistic.py --backend torch --backend jax
    python examples/train_logistic.py            # every installed backend

>>> result = train("numpy", steps=5)
>>> result.curve[-1] < result.curve[0]
True
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import bce_core

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class Data:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass
class Result:
    backend: str
    curve: list[float]  # training loss before each step
    final_loss: float
    test_accuracy: float


def load_data(seed: int = 0) -> Data:
    """The breast-cancer data set (it ships inside scikit-learn), standardised, split 80/20."""
    from sklearn.datasets import load_breast_cancer

    features, labels = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    features, labels = features[order], labels[order]
    split = int(0.8 * len(labels))
    mean, std = features[:split].mean(0), features[:split].std(0)
    features = ((features - mean) / std).astype(np.float32)
    labels = labels.astype(np.float32)
    return Data(features[:split], labels[:split], features[split:], labels[split:])


def initial_parameters(n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return (rng.normal(0, 0.01, n_features).astype(np.float32), np.zeros((), np.float32))


Step = Callable[[], float]


def numpy_trainer(data: Data, w: np.ndarray, b: np.ndarray, lr: float) -> tuple[Step, Callable]:
    params = {"w": w.copy(), "b": b.copy()}

    def step() -> float:
        logits = data.train_x @ params["w"] + params["b"]
        loss, grad = bce_core.value_and_grad(logits, data.train_y)  # d loss / d logits
        params["w"] -= lr * (data.train_x.T @ grad)
        params["b"] -= lr * grad.sum()
        return float(loss)

    return step, lambda x: x @ params["w"] + params["b"]


def torch_trainer(data: Data, w: np.ndarray, b: np.ndarray, lr: float) -> tuple[Step, Callable]:
    import torch

    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    weight = torch.tensor(w, requires_grad=True)
    bias = torch.tensor(b, requires_grad=True)
    optimiser = torch.optim.SGD([weight, bias], lr=lr)

    def step() -> float:
        optimiser.zero_grad()
        loss = bce_core.binary_cross_entropy_with_logits(x @ weight + bias, y)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (torch.from_numpy(features) @ weight + bias).numpy()

    return step, predict


def jax_trainer(data: Data, w: np.ndarray, b: np.ndarray, lr: float) -> tuple[Step, Callable]:
    import jax
    import jax.numpy as jnp
    import optax

    x, y = jnp.asarray(data.train_x), jnp.asarray(data.train_y)
    optimiser = optax.sgd(lr)
    state = {"params": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}
    state["opt"] = optimiser.init(state["params"])

    def loss_fn(params: dict) -> jax.Array:
        return bce_core.binary_cross_entropy_with_logits(x @ params["w"] + params["b"], y)

    @jax.jit
    def update(params: dict, opt_state: optax.OptState):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimiser.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    def step() -> float:
        state["params"], state["opt"], loss = update(state["params"], state["opt"])
        return float(loss)

    def predict(features: np.ndarray) -> np.ndarray:
        params = state["params"]
        return np.asarray(jnp.asarray(features) @ params["w"] + params["b"])

    return step, predict


def tensorflow_trainer(
    data: Data, w: np.ndarray, b: np.ndarray, lr: float
) -> tuple[Step, Callable]:
    import tensorflow as tf

    x, y = tf.constant(data.train_x), tf.constant(data.train_y)
    weight, bias = tf.Variable(w), tf.Variable(b)
    optimiser = tf.keras.optimizers.SGD(learning_rate=lr)

    @tf.function
    def update() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = bce_core.binary_cross_entropy_with_logits(tf.linalg.matvec(x, weight) + bias, y)
        optimiser.apply_gradients(zip(tape.gradient(loss, [weight, bias]), [weight, bias]))
        return loss

    def predict(features: np.ndarray) -> np.ndarray:
        return (tf.linalg.matvec(tf.constant(features), weight) + bias).numpy()

    return lambda: float(update()), predict


TRAINERS = {
    "numpy": numpy_trainer,
    "torch": torch_trainer,
    "jax": jax_trainer,
    "tensorflow": tensorflow_trainer,
}


def train(backend: str, *, steps: int = 200, lr: float = 0.5, seed: int = 0) -> Result:
    """Train with ``backend``'s autodiff and optimiser; the curve is the loss before each step."""
    data = load_data(seed)
    w, b = initial_parameters(data.train_x.shape[1], seed)
    step, predict = TRAINERS[backend](data, w, b, lr)
    curve = [step() for _ in range(steps)]
    final = float(bce_core.binary_cross_entropy_with_logits(predict(data.train_x), data.train_y))
    accuracy = float(np.mean((predict(data.test_x) > 0) == (data.test_y > 0.5)))
    return Result(backend, curve, final, accuracy)


def installed_backends() -> list[str]:
    return [
        info.name
        for info in bce_core.available_backends()
        if info.status == "ok" and info.name in TRAINERS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        action="append",
        choices=sorted(TRAINERS),
        help="backend to train with (repeatable; default: every installed one)",
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{'backend':<12} {'first loss':>11} {'final loss':>11} {'test accuracy':>14}")
    for name in args.backend or installed_backends():
        result = train(name, steps=args.steps, lr=args.lr, seed=args.seed)
        print(
            f"{name:<12} {result.curve[0]:>11.6f} {result.final_loss:>11.6f} "
            f"{result.test_accuracy:>14.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
