"""The reduced loss from logits as an operation of TensorFlow's autodiff, fast to first order.

The forward runs one compiled program (``programs``) that computes the loss
and, for the operands some ``tf.GradientTape`` is watching, its gradients;
the backward multiplies what the forward saved by the upstream gradient
(``backward``), with no transcendental function evaluated again. Where no
tape watches any operand, the forward computes the loss alone:

- eagerly with no tape at all, the loss is returned as is (nothing can
  differentiate it);
- inside ``tf.function`` (where ``tf.gradients`` may still ask) or under a
  forward accumulator, the gradients are computed in the backward, when
  asked for.

The backward is itself an operation whose gradient comes from the exact
kernels of ``ops`` (working precision, custom gradients to any order), so
second derivatives, mixed ones included, are the spec's.

>>> import tensorflow as tf
>>> from bce_tensorflow.operands import prepare
>>> x = tf.constant([0.0, 2.0])
>>> with tf.GradientTape() as tape:
...     tape.watch(x)
...     loss = logits_loss(prepare("logits", x, tf.constant([1.0, 0.0]), weight=None,
...                                pos_weight=None, mask=None), eps=0.0, reduction="sum")
>>> [round(g, 4) for g in tape.gradient(loss, x).numpy().tolist()]
[-0.5, 0.8808]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import record

from . import fast
from . import ops as exact
from .backward import upstream_times
from .operands import Operands

#: The operands that can have gradients, in the order of ``Operands``.
NAMES = ("logits", "targets", "weight", "pos_weight")


def logits_loss(ops: Operands, *, eps: float, reduction: str) -> tf.Tensor:
    """The reduced loss, in the logits' dtype, differentiable by TensorFlow's autodiff."""
    given = {name: t for name, t in zip(NAMES, ops) if t is not None}
    watched = tuple(name for name, t in given.items() if record.should_record_backprop([t]))
    if watched:
        with record.stop_recording():
            loss, saved = _value_and_partials(ops, watched, eps, reduction)
        return _attach(ops, loss, watched, lambda: saved, eps, reduction)
    with record.stop_recording():
        loss, _ = fast.loss_and_grad(ops, eps=eps, reduction=reduction, grad=False)
    if tf.executing_eagerly() and not record.could_possibly_record():
        return loss
    # Someone may still ask for gradients (tf.gradients, a forward accumulator): compute them then.
    names = tuple(given)
    return _attach(ops, loss, names, lambda: _partials_apart(ops, names, eps, reduction),
                   eps, reduction)


def value_and_grad(ops: Operands, *, eps: float, reduction: str,
                   names: Sequence[str]) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The loss and its gradients with respect to ``names`` (``value_and_grad``): the fused
    program for the logits alone, the exact kernels for other operands and wherever a tape
    watches an operand (their results are then differentiable as before)."""
    if tuple(names) == ("logits",) and not any(
            t is not None and record.should_record_backprop([t]) for t in ops[:4]):
        loss, grad = fast.loss_and_grad(ops, eps=eps, reduction=reduction, grad=True)
        return loss, [grad]
    return exact.logits_value_and_grad(ops, eps=eps, reduction=reduction, names=names)


def _value_and_partials(ops: Operands, names: tuple[str, ...], eps: float,
                        reduction: str) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The loss and its gradients with respect to ``names``: per element for broadcast operands
    under reduction "none", in each operand's shape otherwise."""
    if names == ("logits",):
        loss, grad = fast.loss_and_grad(ops, eps=eps, reduction=reduction, grad=True)
        return loss, [grad]
    return exact.logits_value_and_grad(ops, eps=eps, reduction=reduction, names=names,
                                       full=reduction == "none")


def _partials_apart(ops: Operands, names: tuple[str, ...], eps: float,
                    reduction: str) -> list[tf.Tensor]:
    """The gradients with respect to ``names`` from separate programs, the logits' from the fused
    one, so that inside a graph those nobody uses are pruned with their program."""
    partials = []
    if "logits" in names:
        partials.append(fast.loss_and_grad(ops, eps=eps, reduction=reduction, grad=True)[1])
    rest = tuple(n for n in names if n != "logits")
    if rest:
        partials += exact.logits_value_and_grad(ops, eps=eps, reduction=reduction, names=rest,
                                                full=reduction == "none")[1]
    return partials


def _attach(ops: Operands, loss: tf.Tensor, names: tuple[str, ...],
            partials: Callable[[], list[tf.Tensor]], eps: float, reduction: str) -> tf.Tensor:
    """``loss`` as the output of an operation on the operands ``names`` whose gradient is
    upstream times ``partials()``."""
    given = dict(zip(NAMES, ops))

    @tf.custom_gradient
    def loss_op(*inputs: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
        def grad(upstream: tf.Tensor) -> list[tf.Tensor]:
            with record.stop_recording():
                saved = partials()
            return _vjp(ops, names, saved, eps, reduction, upstream, *inputs)
        return tf.identity(loss), grad

    return loss_op(*(given[name] for name in names))


def _vjp(ops: Operands, names: tuple[str, ...], saved: Sequence[tf.Tensor], eps: float,
         reduction: str, upstream: tf.Tensor, *inputs: tf.Tensor) -> list[tf.Tensor]:
    """upstream times the saved gradients, as an operation whose own gradient is exact."""

    @tf.custom_gradient
    def vjp_op(upstream: tf.Tensor, *inputs: tf.Tensor) -> tuple[list[tf.Tensor], Any]:
        with record.stop_recording():
            grads = [_times(s, upstream, operand, reduction) for s, operand in zip(saved, inputs)]

        def second(*cotangents: tf.Tensor | None) -> list[tf.Tensor]:
            return _second_order(ops, names, eps, reduction, upstream, inputs, cotangents)
        return grads, second

    return vjp_op(upstream, *inputs)


def _times(saved: tf.Tensor, upstream: tf.Tensor, operand: tf.Tensor,
           reduction: str) -> tf.Tensor:
    """upstream * saved in ``operand``'s shape; for a reduced loss (``saved`` then has the
    operand's shape) ``saved`` itself when upstream is 1, the usual tape.gradient of a loss,
    without a pass over the elements."""
    if reduction == "none" or upstream.shape.rank != 0:
        return upstream_times(saved, upstream, operand)
    if tf.executing_eagerly():
        return saved if float(upstream) == 1.0 else upstream_times(saved, upstream, operand)
    known = tf.get_static_value(upstream)  # tape.gradient of a loss seeds a constant 1
    if known is not None:
        return tf.identity(saved) if known == 1 else upstream_times(saved, upstream, operand)
    return tf.cond(tf.equal(upstream, 1), lambda: tf.identity(saved),
                   lambda: upstream_times(saved, upstream, operand))


def _second_order(ops: Operands, names: tuple[str, ...], eps: float, reduction: str,
                  upstream: tf.Tensor, inputs: Sequence[tf.Tensor],
                  cotangents: Sequence[tf.Tensor | None]) -> list[tf.Tensor]:
    """The gradient of sum(cotangent * upstream * d loss / d input) with respect to upstream and
    the inputs, through the exact kernels (whose own derivatives go to any order)."""
    sources = [upstream, *inputs]
    cotangents = [tf.zeros_like(i) if c is None else c for c, i in zip(cotangents, inputs)]
    with tf.GradientTape() as outer:
        outer.watch(sources)
        with tf.GradientTape() as inner:
            inner.watch(list(inputs))
            replaced = ops._replace(**{_FIELDS[n]: t for n, t in zip(names, inputs)})
            # Derivatives in the other operands are neither asked for nor evaluated.
            loss = exact.logits_loss(replaced, eps=eps, reduction=reduction,
                                     wrt=[exact.OPERANDS[NAMES.index(n)] for n in names])
        firsts = inner.gradient(loss, list(inputs), output_gradients=upstream,
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return outer.gradient(firsts, sources, output_gradients=cotangents,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)


_FIELDS = {"logits": "inputs", "targets": "targets", "weight": "weight",
           "pos_weight": "pos_weight"}
