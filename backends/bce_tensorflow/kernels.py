"""Elementwise math of the TensorFlow backend, in working precision.

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|) and l = log1p(e), the larger side of each pair is

    softplus(|x|) = |x| + l        sigma(|x|)  = 1 / (1 + e)

and the smaller side is softplus(-|x|) = l and sigma(-|x|) = e / (1 + e), so
x >= 0 picks (big, small) for (f(x), f(-x)) and x < 0 the other way round.
Every quantity of the spec is c1 f(x) + c2 f(-x) for f = softplus or sigma,
which ``Split`` holds as a big part and a small part; nothing is computed as
1 - sigma or x - log sigma.

TensorFlow flushes subnormal results to zero. Where the input's dtype is its
own working precision (float64), the small side beyond |x| = ln(2**1022),
about e and below the normal range, is therefore computed as e x 2**512 from
exp(-|x|/2) squared, and scaled back once at the end (``Split.value``), after
every factor has been applied (``TAILS`` has the constants, float32's too).

A coefficient that is exactly 0 contributes exactly 0, even times inf (``term``).

>>> import tensorflow as tf
>>> parts = LogitParts.of(tf.constant([-30.0, 0.0, 30.0], tf.float64), tails=False)
>>> [round(v, 6) for v in parts.softplus_combo(1.0, None).value().numpy().tolist()]
[0.0, 0.693147, 30.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import tensorflow as tf

from bce_core.spec import PROBS_GRAD_EPS

#: Per working dtype: |x| beyond which exp(-|x|) is subnormal, and the (even) power of two
#: the small side is scaled by there.
TAILS: dict[str, tuple[float, int]] = {
    "float32": (87.33654475055310898657, 64),     # ln(2**126)
    "float64": (708.39641853226410622, 512),      # ln(2**1022)
}

#: A coefficient: a tensor, a Python number, or None for an absent (zero) term.
Coefficient = Union[tf.Tensor, float, int, None]


def _zero(like: tf.Tensor) -> tf.Tensor:
    """A scalar 0 of ``like``'s dtype, which ``tf.where`` broadcasts (no zeros_like to run)."""
    return tf.constant(0, like.dtype)


def _is_number(coefficient: Coefficient) -> bool:
    return coefficient is None or isinstance(coefficient, (int, float))


def terms(coefficient: Coefficient, *values: tf.Tensor) -> list[tf.Tensor]:
    """``term(coefficient, value)`` for each value, testing the coefficient for 0 once.

    >>> import tensorflow as tf
    >>> [float(t) for t in terms(tf.constant(0.0), tf.constant(float("inf")), tf.constant(2.0))]
    [0.0, 0.0]
    """
    if _is_number(coefficient):
        return [term(coefficient, value) for value in values]
    zero = tf.equal(coefficient, 0)
    products = [coefficient * value for value in values]
    return [tf.where(zero, _zero(product), product) for product in products]


def term(coefficient: Coefficient, value: tf.Tensor) -> tf.Tensor:
    """coefficient * value, where a coefficient of exactly 0 (or None) gives exactly 0.

    >>> import tensorflow as tf
    >>> float(term(tf.constant(0.0), tf.constant(float("inf"))))
    0.0
    """
    if coefficient is None:
        return tf.zeros_like(value)
    if isinstance(coefficient, (int, float)):
        if coefficient == 0:
            return tf.zeros_like(value)
        return value if coefficient == 1 else value * coefficient
    return terms(coefficient, value)[0]


def weighted(weight: tf.Tensor | None, value: tf.Tensor) -> tf.Tensor:
    """weight * value, zero-safe; None is an absent weight (1), unlike an absent term."""
    return value if weight is None else term(weight, value)


def negate(coefficient: Coefficient) -> Coefficient:
    """-coefficient, keeping None (zero) as None."""
    return None if coefficient is None else -coefficient


@dataclass(frozen=True)
class Split:
    """big + small, where ``small`` is scaled by 2**shift on the elements of ``tail``.

    Factors are applied to both parts (``times``) before ``value`` scales the
    small part back, so a result below the normal range is rounded only once.
    """

    big: tf.Tensor
    small: tf.Tensor
    tail: tf.Tensor | None = None
    shift: int = 0

    def times(self, factor: Coefficient) -> Split:
        """This value times ``factor`` (zero-safe); None means no factor (an absent weight)."""
        if factor is None or (isinstance(factor, (int, float)) and factor == 1):
            return self
        return Split(*terms(factor, self.big, self.small), self.tail, self.shift)

    def plus(self, offset: tf.Tensor) -> Split:
        """This value plus a normal-range ``offset``."""
        return Split(self.big + offset, self.small, self.tail, self.shift)

    def __add__(self, other: Split) -> Split:
        return Split(self.big + other.big, self.small + other.small, self.tail, self.shift)

    def value(self) -> tf.Tensor:
        """The value as one tensor."""
        if self.tail is None:
            return self.big + self.small
        from .precision import ldexp_down

        small = tf.where(self.tail, ldexp_down(self.small, self.shift), self.small)
        # Adding a subnormal to 0 would flush it; big is exactly 0 when its coefficient is.
        return tf.where(tf.equal(self.big, 0), small, self.big + small)


@dataclass(frozen=True)
class LogitParts:
    """softplus(±x) and sigma(±x) from one exp and one log1p per element, as big and small sides."""

    positive: tf.Tensor
    softplus_big: tf.Tensor
    softplus_small: tf.Tensor
    sigmoid_big: tf.Tensor
    sigmoid_small: tf.Tensor
    tail: tf.Tensor | None
    shift: int

    @classmethod
    def of(cls, x: tf.Tensor, *, tails: bool) -> LogitParts:
        """The parts of ``x``; ``tails`` scales the float64 tails (see the module docstring)."""
        magnitude = tf.abs(x)
        e = tf.exp(-magnitude)
        log1p_e = tf.math.log1p(e)
        one_plus_e = 1.0 + e
        # e / (1 + e) rather than e * sigma(|x|): one rounding fewer.
        sigmoid_small = e / one_plus_e
        tail, shift = None, 0
        if tails:
            start, shift = TAILS[x.dtype.name]
            tail = magnitude > start
            half = tf.exp(-0.5 * magnitude) * 2.0 ** (shift // 2)
            scaled = half * half  # e x 2**shift; log1p(e) = e/(1+e) = e there
            log1p_e = tf.where(tail, scaled, log1p_e)
            sigmoid_small = tf.where(tail, scaled, sigmoid_small)
            big_softplus = magnitude + tf.where(tail, _zero(e), log1p_e)
        else:
            big_softplus = magnitude + log1p_e
        return cls(x >= 0, big_softplus, log1p_e, 1.0 / one_plus_e, sigmoid_small, tail, shift)

    def _combo(self, at_x: Coefficient, at_minus_x: Coefficient, big: tf.Tensor,
               small: tf.Tensor) -> Split:
        if _is_number(at_x) and _is_number(at_minus_x):  # each term a product at most
            on_big = tf.where(self.positive, term(at_x, big), term(at_minus_x, big))
            on_small = tf.where(self.positive, term(at_minus_x, small), term(at_x, small))
        else:
            # Element by element, where(p, term(a, v), term(b, v)) is term(where(p, a, b), v):
            # picking the coefficient first leaves one zero-safe product per side.
            on_big = term(self._pick(at_x, at_minus_x, big), big)
            on_small = term(self._pick(at_minus_x, at_x, small), small)
        return Split(on_big, on_small, self.tail, self.shift)

    def _pick(self, at_x: Coefficient, at_minus_x: Coefficient, like: tf.Tensor) -> tf.Tensor:
        """``at_x`` where x >= 0, else ``at_minus_x`` (None as 0), in ``like``'s dtype."""
        def tensor(c: Coefficient) -> tf.Tensor:
            return tf.constant(0 if c is None else c, like.dtype) if _is_number(c) else c
        return tf.where(self.positive, tensor(at_x), tensor(at_minus_x))

    def softplus_combo(self, at_x: Coefficient, at_minus_x: Coefficient) -> Split:
        """at_x * softplus(x) + at_minus_x * softplus(-x)."""
        return self._combo(at_x, at_minus_x, self.softplus_big, self.softplus_small)

    def sigmoid_combo(self, at_x: Coefficient, at_minus_x: Coefficient) -> Split:
        """at_x * sigma(x) + at_minus_x * sigma(-x)."""
        return self._combo(at_x, at_minus_x, self.sigmoid_big, self.sigmoid_small)

    def sigmoid_product(self, coefficient: Coefficient) -> Split:
        """coefficient * sigma(x) * sigma(-x)."""
        small = term(coefficient, self.sigmoid_big * self.sigmoid_small)
        return Split(tf.zeros_like(small), small, self.tail, self.shift)


@dataclass(frozen=True)
class LogitTerms:
    """Every partial derivative of the element loss from logits, as ``Split`` values.

    ``w`` and ``q`` are None when absent (1). With a = 1 - y' and b = q y':
    loss = w (a softplus(x) + b softplus(-x)).
    """

    parts: LogitParts
    y_smoothed: tf.Tensor        # y'
    one_minus: tf.Tensor         # 1 - y', from (1 - y) so that it keeps relative accuracy
    w: tf.Tensor | None
    q: tf.Tensor | None
    eps: float

    @classmethod
    def of(cls, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None,
           eps: float, *, tails: bool) -> LogitTerms:
        if eps == 0.0:
            y_smoothed, one_minus = y, 1.0 - y
        else:
            y_smoothed = y * (1.0 - eps) + eps / 2
            one_minus = (1.0 - y) * (1.0 - eps) + eps / 2
        return cls(LogitParts.of(x, tails=tails), y_smoothed, one_minus, w, q, eps)

    @property
    def b(self) -> tf.Tensor:
        """q y', the coefficient of softplus(-x)."""
        return self.y_smoothed if self.q is None else term(self.q, self.y_smoothed)

    @property
    def q_or_one(self) -> Coefficient:
        return 1.0 if self.q is None else self.q

    # First order.

    def bracket(self) -> Split:
        """(1 - y') softplus(x) + q y' softplus(-x): the loss before the weight, and d loss/d w."""
        return self.parts.softplus_combo(self.one_minus, self.b)

    def loss(self) -> Split:
        return self.bracket().times(self.w)

    def grad_logits(self, weighted: bool = True) -> Split:
        """w [ (1 - y') sigma(x) - q y' sigma(-x) ]."""
        split = self.parts.sigmoid_combo(self.one_minus, -self.b)
        return split.times(self.w) if weighted else split

    def grad_targets(self, weighted: bool = True) -> Split:
        """w (1 - eps) [ q softplus(-x) - softplus(x) ]."""
        split = self.parts.softplus_combo(-1.0, self.q_or_one).times(1.0 - self.eps)
        return split.times(self.w) if weighted else split

    def grad_pos_weight(self, weighted: bool = True) -> Split:
        """w y' softplus(-x)."""
        split = self.parts.softplus_combo(None, self.y_smoothed)
        return split.times(self.w) if weighted else split

    # Second order (the Hessian of the element loss in x, y, w, q; d2/dy2 = d2/dw2 = d2/dq2 = 0).

    def hessian(self) -> Split:
        """d2/dx2 = w (1 + (q - 1) y') sigma(x) sigma(-x), with 1 + (q-1)y' = (1 - y') + q y'."""
        return self.parts.sigmoid_product(self.one_minus + self.b).times(self.w)

    def logits_targets(self) -> Split:
        """d2/dx dy = -w (1 - eps) [ sigma(x) + q sigma(-x) ]."""
        return self.parts.sigmoid_combo(-1.0, negate(self.q_or_one)).times(
            1.0 - self.eps).times(self.w)

    def logits_pos_weight(self) -> Split:
        """d2/dx dq = -w y' sigma(-x)."""
        return self.parts.sigmoid_combo(None, -self.y_smoothed).times(self.w)

    def targets_pos_weight(self) -> Split:
        """d2/dy dq = w (1 - eps) softplus(-x)."""
        return self.parts.softplus_combo(None, 1.0).times(1.0 - self.eps).times(self.w)


@dataclass(frozen=True)
class ProbsTerms:
    """The element loss from probabilities and its partial derivatives.

    loss = -w [ q y' max(log p, c) + (1 - y') max(log1p(-p), c) ], NaN for p outside [0, 1].
    """

    p: tf.Tensor
    log_p: tf.Tensor
    log_1mp: tf.Tensor
    y_smoothed: tf.Tensor
    one_minus: tf.Tensor
    w: tf.Tensor | None
    q: tf.Tensor | None
    eps: float

    @classmethod
    def of(cls, p: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None,
           eps: float, clamp: float) -> ProbsTerms:
        if eps == 0.0:
            y_smoothed, one_minus = y, 1.0 - y
        else:
            y_smoothed = y * (1.0 - eps) + eps / 2
            one_minus = (1.0 - y) * (1.0 - eps) + eps / 2
        floor = tf.constant(clamp, p.dtype)
        return cls(p, tf.maximum(tf.math.log(p), floor), tf.maximum(tf.math.log1p(-p), floor),
                   y_smoothed, one_minus, w, q, eps)

    @property
    def b(self) -> tf.Tensor:
        return self.y_smoothed if self.q is None else term(self.q, self.y_smoothed)

    def bracket(self) -> tf.Tensor:
        """The loss before the weight (d loss / d w); NaN where p is outside [0, 1]."""
        bracket = -(term(self.b, self.log_p) + term(self.one_minus, self.log_1mp))
        valid = (self.p >= 0) & (self.p <= 1)  # also False for NaN
        return tf.where(valid, bracket, tf.fill(tf.shape(bracket), tf.constant(float("nan"),
                                                                               bracket.dtype)))

    def loss(self) -> tf.Tensor:
        return weighted(self.w, self.bracket())

    def grad_probs(self) -> tf.Tensor:
        """w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12), the spec's normative form."""
        numerator = self.p * (self.one_minus + self.b) - self.b
        value = weighted(self.w, numerator / tf.maximum(self.p * (1.0 - self.p), PROBS_GRAD_EPS))
        # Where p is outside [0, 1] the loss is NaN, and so is its slope.
        valid = (self.p >= 0) & (self.p <= 1)
        return tf.where(valid, value, tf.fill(tf.shape(value), tf.constant(float("nan"),
                                                                           value.dtype)))

    def grad_targets(self) -> tf.Tensor:
        """-w (1 - eps) [ q max(log p, c) - max(log1p(-p), c) ]."""
        q = 1.0 if self.q is None else self.q
        return weighted(self.w, term(-(1.0 - self.eps), term(q, self.log_p) - self.log_1mp))

    def grad_pos_weight(self) -> tf.Tensor:
        """-w y' max(log p, c)."""
        return weighted(self.w, -term(self.y_smoothed, self.log_p))
