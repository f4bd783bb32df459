"""The losses as differentiable TensorFlow computations, and the fused value-and-gradient.

``logit_elements`` computes element losses under ``tf.custom_gradient``. Its
gradient is another custom-gradient op (``_logit_vjp``) whose own gradient is
the analytic Hessian of the spec, so ``tf.GradientTape`` gives the spec's
derivatives to second order with the forward's accuracy, in eager mode,
under ``tf.function`` and under XLA. Each op multiplies its upstream gradient
in before the one final rounding, and treats an upstream of exactly 0 as
contributing exactly 0, so masked-out elements and zero denominators never
turn an inf or NaN input into a NaN gradient. Reductions are ordinary
TensorFlow ops with the "double where" for zero denominators.

>>> import tensorflow as tf
>>> x = tf.Variable([0.0, 2.0], dtype=tf.float64)
>>> with tf.GradientTape() as tape:
...     loss = tf.reduce_sum(logit_elements(x, tf.constant([1.0, 0.0], tf.float64), None, None,
...                                         eps=0.0, tails=True))
>>> [round(g, 4) for g in tape.gradient(loss, x).numpy().tolist()]
[-0.5, 0.8808]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from bce_core.spec import check_batch_mean

from .kernels import LogitTerms, ProbsTerms, Split, term
from .operands import Operands
from .precision import from_working, scales_tails, to_working


# -- operands in working precision ---------------------------------------------------


@dataclass(frozen=True)
class Working:
    """One call's operands in working precision, broadcast to the element shape.

    Masked-out elements are replaced by harmless values (the first "where" of
    the double where), so they produce no inf or NaN anywhere, forward or back.
    """

    inputs: tf.Tensor
    targets: tf.Tensor
    weight: tf.Tensor | None
    pos_weight: tf.Tensor | None
    keep: tf.Tensor | None
    dtype: tf.DType          # the input's dtype, which every result gets

    @classmethod
    def of(cls, ops: Operands, *, neutral_input: float) -> Working:
        x = to_working(ops.inputs)
        y = to_working(ops.targets)
        w = None if ops.weight is None else _broadcast(to_working(ops.weight), x)
        q = None if ops.pos_weight is None else _broadcast(to_working(ops.pos_weight), x)
        keep = None if ops.mask is None else _broadcast(ops.mask, x)
        if keep is not None:
            x = tf.where(keep, x, tf.fill(tf.shape(x), tf.constant(neutral_input, x.dtype)))
            y = tf.where(keep, y, tf.zeros_like(y))
            w = None if w is None else tf.where(keep, w, tf.zeros_like(w))
            q = None if q is None else tf.where(keep, q, tf.zeros_like(q))
        return cls(x, y, w, q, keep, ops.inputs.dtype)


def _broadcast(value: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    if value.shape.is_fully_defined() and value.shape == like.shape:
        return value
    return tf.broadcast_to(value, tf.shape(like))


def sum_to_shape(grad: tf.Tensor, operand: tf.Tensor) -> tf.Tensor:
    """Sum a full-shape gradient over the axes along which ``operand`` was broadcast."""
    full = grad.shape.as_list()
    own = operand.shape.as_list()
    lead = len(full) - len(own)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(own)
                                if d == 1 and full[lead + i] != 1]
    if axes:
        grad = tf.reduce_sum(grad, axis=axes)
    return tf.reshape(grad, tf.shape(operand))


# -- reductions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reduced:
    """A reduced loss and d(loss)/d(element loss) per element (0 where masked out)."""

    loss: tf.Tensor
    factor: tf.Tensor | float


def reduce_elements(elements: tf.Tensor, reduction: str, *, keep: tf.Tensor | None,
                    weight: tf.Tensor | None) -> Reduced:
    """Apply ``reduction`` to element losses (already weighted) in working precision.

    A zero denominator gives a loss of 0 and a factor of 0, and (through the
    where on the denominator) a zero gradient under autodiff.
    """
    kept = 1.0 if keep is None else tf.cast(keep, elements.dtype)
    if keep is not None:
        elements = tf.where(keep, elements, tf.zeros_like(elements))
    if reduction == "none":
        return Reduced(elements, kept)
    total = tf.reduce_sum(elements)
    if reduction == "sum":
        return Reduced(total, kept)
    if reduction == "mean":
        denominator = (tf.cast(tf.size(elements), elements.dtype) if keep is None
                       else tf.reduce_sum(kept))
    elif reduction == "batch_mean":
        check_batch_mean(tuple(elements.shape))
        denominator = tf.cast(tf.shape(elements)[0], elements.dtype)
    else:  # weighted_mean; masked-out weights are already 0
        denominator = (tf.reduce_sum(weight) if weight is not None else
                       tf.cast(tf.size(elements), elements.dtype) if keep is None
                       else tf.reduce_sum(kept))
    zero = tf.equal(denominator, 0)
    safe = tf.where(zero, tf.ones_like(denominator), denominator)
    loss = tf.where(zero, tf.zeros_like(total), total / safe)
    scale = tf.where(zero, tf.zeros_like(safe), 1.0 / safe)
    return Reduced(loss, scale if keep is None else kept * scale)


# -- the element loss from logits, differentiable to second order ----------------------


#: The operands of the element loss from logits, in argument order.
OPERANDS = ("x", "y", "w", "q")


def logit_elements(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None, *,
                   eps: float, tails: bool, wrt: Sequence[str] | None = None) -> tf.Tensor:
    """Element losses from logits (working precision, full shape), with the spec's gradients.

    ``wrt`` names the operands (of ``OPERANDS``) that get gradients, by default every one
    given; the others are constants of the operation, which then evaluates no derivative with
    respect to them (the second derivative in the logits alone needs a quarter of the terms).
    """
    given = dict(zip(OPERANDS, (x, y, w, q)))
    present = tuple(name for name in OPERANDS if given[name] is not None)
    names = present if wrt is None else tuple(name for name in present if name in wrt)
    dropped = len(names) < len(present)

    @tf.custom_gradient
    def elements(*args: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
        values = {**given, **dict(zip(names, args))}
        terms = LogitTerms.of(values["x"], values["y"], values["w"], values["q"], eps,
                              tails=tails)

        def grad(upstream: tf.Tensor) -> list[tf.Tensor]:
            return _logit_vjp(terms, names, dropped, upstream, *args)
        return terms.loss().value(), grad

    return elements(*[given[name] for name in names])


def _first_order(terms: LogitTerms, names: Sequence[str]) -> list[Split]:
    """d loss/d operand per element, for the operands ``names``."""
    partials = {"x": terms.grad_logits, "y": terms.grad_targets, "w": terms.bracket,
                "q": terms.grad_pos_weight}
    return [partials[name]() for name in names]


def _second_order(terms: LogitTerms, names: Sequence[str]) -> dict[tuple[int, int], Split]:
    """The nonzero entries (i <= j) of the Hessian in the operands ``names``, by their index."""
    index = {name: i for i, name in enumerate(names)}
    table = {("x", "x"): terms.hessian, ("x", "y"): terms.logits_targets,
             ("x", "w"): lambda: terms.grad_logits(weighted=False),
             ("x", "q"): terms.logits_pos_weight,
             ("y", "w"): lambda: terms.grad_targets(weighted=False),
             ("y", "q"): terms.targets_pos_weight,
             ("w", "q"): lambda: terms.grad_pos_weight(weighted=False)}
    return {(index[a], index[b]): entry() for (a, b), entry in table.items()
            if a in index and b in index}


def _accumulate(splits: Sequence[tuple[Split, tf.Tensor | None]], dropped: bool) -> Split | None:
    """The sum of split * factor. With ``dropped``, terms of operands left out of the operation
    would have been added as exactly +0 (their cotangents are zeros): adding +0 once keeps the
    sign that a zero total then had."""
    total = None
    for split, factor in splits:
        if factor is None:
            continue
        part = split.times(factor)
        total = part if total is None else total + part
    if dropped and total is not None:
        zero = tf.constant(0, total.big.dtype)
        total = Split(total.big + zero, total.small + zero, total.tail, total.shift)
    return total


def _logit_vjp(terms: LogitTerms, names: Sequence[str], dropped: bool, upstream: tf.Tensor,
               *args: tf.Tensor) -> list[tf.Tensor]:
    """upstream * d loss/d operand for each operand ``names`` (``args``), as a custom-gradient
    op (for second order); ``dropped``: some given operands are not among them."""

    @tf.custom_gradient
    def vjp(upstream: tf.Tensor, *args: tf.Tensor) -> tuple[list[tf.Tensor], Callable[..., Any]]:
        firsts = _first_order(terms, names)

        def grad(*cotangents: tf.Tensor | None) -> list[tf.Tensor]:
            hessian = _second_order(terms, names)
            d_upstream = _accumulate(list(zip(firsts, cotangents)), dropped)
            grads = [tf.zeros_like(upstream) if d_upstream is None else d_upstream.value()]
            for i, operand in enumerate(args):
                row = [(hessian[min(i, j), max(i, j)], cotangents[j])
                       for j in range(len(args)) if (min(i, j), max(i, j)) in hessian]
                total = _accumulate(row, dropped)
                grads.append(tf.zeros_like(operand) if total is None
                             else total.times(upstream).value())
            return grads

        return [split.times(upstream).value() for split in firsts], grad

    return vjp(upstream, *args)


# -- the element loss from probabilities ------------------------------------------------


def probs_elements(p: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None, *,
                   eps: float, clamp: float) -> tf.Tensor:
    """Element losses from probabilities, with the spec's (clamped, PyTorch-style) gradient."""
    has_w, has_q = w is not None, q is not None

    @tf.custom_gradient
    def elements(*args: tf.Tensor) -> tuple[tf.Tensor, Callable[..., Any]]:
        p, y, *rest = args
        terms = ProbsTerms.of(p, y, rest[0] if has_w else None,
                              rest[-1] if has_q else None, eps, clamp)

        def grad(upstream: tf.Tensor) -> list[tf.Tensor]:
            partials = [terms.grad_probs(), terms.grad_targets()]
            if has_w:
                partials.append(terms.bracket())
            if has_q:
                partials.append(terms.grad_pos_weight())
            return [term(upstream, partial) for partial in partials]
        return terms.loss(), grad

    return elements(*[t for t in (p, y, w, q) if t is not None])


# -- the public computations ------------------------------------------------------------


def logits_loss(ops: Operands, *, eps: float, reduction: str,
                wrt: Sequence[str] | None = None) -> tf.Tensor:
    """The reduced loss from logits, in the input's dtype, differentiable by tf.GradientTape
    with respect to the operands ``wrt`` (of ``OPERANDS``; default: all of them)."""
    v = Working.of(ops, neutral_input=0.0)
    elements = logit_elements(v.inputs, v.targets, v.weight, v.pos_weight, eps=eps,
                              tails=scales_tails(v.dtype), wrt=wrt)
    reduced = reduce_elements(elements, reduction, keep=v.keep, weight=v.weight)
    return from_working(reduced.loss, v.dtype)


def probs_loss(ops: Operands, *, eps: float, reduction: str, clamp: float) -> tf.Tensor:
    """The reduced loss from probabilities, in the input's dtype, differentiable."""
    v = Working.of(ops, neutral_input=0.5)
    elements = probs_elements(v.inputs, v.targets, v.weight, v.pos_weight, eps=eps, clamp=clamp)
    reduced = reduce_elements(elements, reduction, keep=v.keep, weight=v.weight)
    return from_working(reduced.loss, v.dtype)


def logits_value_and_grad(ops: Operands, *, eps: float, reduction: str, names: Sequence[str],
                          full: bool = False) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The reduced loss and its analytic gradients, sharing one exp per element (no autodiff);
    with ``full``, the gradients of broadcast operands per element, before their sum."""
    v = Working.of(ops, neutral_input=0.0)
    terms = LogitTerms.of(v.inputs, v.targets, v.weight, v.pos_weight, eps,
                          tails=scales_tails(v.dtype))
    reduced = reduce_elements(terms.loss().value(), reduction, keep=v.keep, weight=v.weight)

    def weight_partial() -> Split:
        if reduction == "weighted_mean":  # d/dw_i of sum(w B) / sum(w) = (B_i - loss) / sum(w)
            return terms.bracket().plus(-reduced.loss)
        return terms.bracket()

    partials: dict[str, Callable[[], Split]] = {
        "logits": terms.grad_logits, "targets": terms.grad_targets,
        "weight": weight_partial, "pos_weight": terms.grad_pos_weight}
    operands = {"logits": ops.inputs, "targets": ops.targets, "weight": ops.weight,
                "pos_weight": ops.pos_weight}
    grads = []
    for name in names:
        grad = partials[name]().times(reduced.factor).value()
        if not full:
            grad = sum_to_shape(grad, operands[name])
        grads.append(from_working(grad, v.dtype))
    return from_working(reduced.loss, v.dtype), grads


def logits_grad_hess(ops: Operands) -> tuple[tf.Tensor, tf.Tensor]:
    """Elementwise (d loss/d x, d2 loss/d x2) without smoothing, mask or reduction."""
    v = Working.of(ops, neutral_input=0.0)
    terms = LogitTerms.of(v.inputs, v.targets, v.weight, v.pos_weight, 0.0,
                          tails=scales_tails(v.dtype))
    return (from_working(terms.grad_logits().value(), v.dtype),
            from_working(terms.hessian().value(), v.dtype))
