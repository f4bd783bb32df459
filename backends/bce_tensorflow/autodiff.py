"""TensorFlow's own autodiff through the backend's losses, eager or under XLA.

These are the computations behind ``AutodiffBackend``: ``tf.GradientTape``
(nested for the second derivative) around ``binary_cross_entropy_with_logits``
or ``binary_cross_entropy``. With ``compiled=True`` the same Python function
runs as ``tf.function(jit_compile=True)``; one compiled function is kept per
computation and option set, and TensorFlow traces it once per input signature.

>>> import tensorflow as tf
>>> from bce_tensorflow.backend import TensorFlowBackend
>>> runner = Autodiff(TensorFlowBackend())
>>> loss, (grad,) = runner.value_and_grad(tf.constant([0.0, 0.0]), tf.constant([1.0, 0.0]),
...                                       wrt=("logits",), compiled=False, options={})
>>> grad.numpy().tolist()
[-0.25, 0.25]
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

Options = tuple[tuple[str, Any], ...]


def _frozen(options: dict[str, Any]) -> Options:
    # Hashable, order-independent: tf.function keys its traces on non-tensor arguments.
    return tuple(sorted(options.items()))


class Autodiff:
    """Gradient tapes around a backend's losses, with lazily compiled XLA versions."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._compiled: dict[tuple[str, Any], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def _function(self, name: str, compiled: bool, **static: Any) -> Callable[..., Any]:
        """The computation ``name`` with its non-tensor arguments bound; XLA-compiled if asked."""
        eager = functools.partial(getattr(self, f"_{name}"), **static)
        if not compiled:
            return eager
        key = (name, tuple(sorted(static.items())))
        function = self._compiled.get(key)
        if function is None:
            with self._lock:
                function = self._compiled.get(key)
                if function is None:
                    # One function per option set: retracing is then only for new shapes.
                    function = tf.function(eager, jit_compile=True, autograph=False)
                    self._compiled[key] = function
        return function

    # -- the computations (plain Python over tensors; traced as-is when compiled) -------

    def _logits_value_and_grad(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None,
                               q: tf.Tensor | None, m: tf.Tensor | None, *,
                               wrt: tuple[str, ...], options: Options) -> tuple[Any, ...]:
        sources = {"logits": x, "targets": y, "weight": w, "pos_weight": q}
        with tf.GradientTape() as tape:
            for name in wrt:
                tape.watch(sources[name])
            loss = self._backend.binary_cross_entropy_with_logits(
                x, y, weight=w, pos_weight=q, mask=m, **dict(options))
        grads = tape.gradient(loss, [sources[name] for name in wrt],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, tuple(grads)

    def _second_derivative(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None,
                           q: tf.Tensor | None, m: tf.Tensor | None, *,
                           options: Options) -> tf.Tensor:
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = self._backend.binary_cross_entropy_with_logits(
                    x, y, weight=w, pos_weight=q, mask=m, **dict(options))
            total = tf.reduce_sum(inner.gradient(loss, x))
        return outer.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _probs_grad(self, p: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None,
                    q: tf.Tensor | None, m: tf.Tensor | None, *,
                    options: Options) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = self._backend.binary_cross_entropy(p, y, weight=w, pos_weight=q, mask=m,
                                                      **dict(options))
        return loss, tape.gradient(loss, p, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    # -- entry points ---------------------------------------------------------------------

    def value_and_grad(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None = None,
                       q: tf.Tensor | None = None, m: tf.Tensor | None = None, *,
                       wrt: Sequence[str], compiled: bool,
                       options: dict[str, Any]) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        function = self._function("logits_value_and_grad", compiled, wrt=tuple(wrt),
                                  options=_frozen(options))
        return function(x, y, w, q, m)

    def second_derivative(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None = None,
                          q: tf.Tensor | None = None, m: tf.Tensor | None = None, *,
                          compiled: bool, options: dict[str, Any]) -> tf.Tensor:
        function = self._function("second_derivative", compiled, options=_frozen(options))
        return function(x, y, w, q, m)

    def probs_grad(self, p: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None = None,
                   q: tf.Tensor | None = None, m: tf.Tensor | None = None, *,
                   compiled: bool, options: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
        function = self._function("probs_grad", compiled, options=_frozen(options))
        return function(p, y, w, q, m)
