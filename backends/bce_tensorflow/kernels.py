"""The elementwise math that the core does not hold, in TensorFlow operations, in the working dtype.

The loss from logits, its slope and curvature are the core's (``LogitParts``, as pairs);
the other derivatives, from the same exponential in single arithmetic (held to parity),
and the probability form are here, with the analytic ``value_and_grad`` and ``grad_hess``.

>>> import tensorflow as tf
>>> terms = LogitTerms.of(tf.constant([0.0, 2.0]), tf.constant([1.0, 0.0]), None, None, 0.0)
>>> [round(v, 4) for v in terms.partial("logits").numpy().tolist()]
[-0.5, 0.8808]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from bce_core import rules
from bce_core.compensated import UNDERFLOW, Coefficients, LogitParts, Smoothing, exact_underflow
from bce_core.spec import PROBS_GRAD_EPS

from .operands import CONVERTER, OPS, PRIMITIVES, Operands, dynamic_shape, working_dtype

#: The operands with derivatives, in argument order ("logits" is the probabilities' place too).
OPERANDS = ("logits", "targets", "weight", "pos_weight")


def weighted(w: tf.Tensor | None, value: tf.Tensor) -> tf.Tensor:
    """w * value, zero-safe; None is an absent weight (1)."""
    return value if w is None else rules.zero_safe(OPS, w, value)


class LogitTerms(NamedTuple):
    """Every partial derivative of the element loss w [a softplus(x) + b softplus(-x)] (a = 1 - y',
    b = q y'; ``w`` and ``q`` None when absent), to second order."""

    parts: LogitParts
    coefficients: Coefficients
    x: tf.Tensor
    w: tf.Tensor | None
    q: tf.Tensor | None
    eps: float

    @classmethod
    def of(
        cls, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor | None, q: tf.Tensor | None, eps: float
    ) -> LogitTerms:
        smoothing = None if eps == 0.0 else Smoothing.opaque(PRIMITIVES, eps, PRIMITIVES.dtype(x))
        return cls(
            LogitParts.of(PRIMITIVES, x), Coefficients.of(PRIMITIVES, y, q, smoothing), x, w, q, eps
        )

    def loss(self) -> tf.Tensor:
        return self.parts.loss(self.coefficients, self.w)

    def _smoothed(self, value: tf.Tensor) -> tf.Tensor:  # (1 - eps) value, zero-safe
        return rules.zero_safe(OPS, rules.smoothed_target_slope(self.eps), value)

    def partial(self, name: str, weighted_: bool = True) -> tf.Tensor:
        """d loss / d ``name`` (of ``OPERANDS``) per element; without ``weighted_``, divided by
        w (d2 loss / d name d w)."""
        w = self.w if weighted_ else None
        c = self.coefficients
        if name == "logits":
            return self.parts.slope(c, w)
        if name == "weight":
            return self.parts.bracket(c)
        sp_pos, sp_neg = self.parts.softpluses()
        if name == "targets":  # (1 - eps) [q softplus(-x) - softplus(x)]: exactly -x when q = 1
            return weighted(
                w, self._smoothed(-self.x if self.q is None else weighted(self.q, sp_neg) - sp_pos)
            )
        return weighted(w, rules.zero_safe(OPS, c.smoothed.hi, sp_neg))  # q: y' softplus(-x)

    def second(self, a: str, b: str) -> tf.Tensor | None:
        """d2 loss / d a d b per element; None where it is 0 (d2/dy2, d2/dw2, d2/dq2)."""
        pair = {a, b}
        if pair in ({"targets"}, {"weight"}, {"pos_weight"}):
            return None
        if "weight" in pair:  # the partial of the other operand, before the weight
            return self.partial((pair - {"weight"}).pop(), weighted_=False)
        c = self.coefficients
        if pair == {"logits"}:  # w (a + b) sigma(x) sigma(-x), a + b summed: NaN targets, NaN
            return self.parts.curvature(weighted(self.w, c.one_minus.hi + c.b.hi))
        sig_pos, sig_neg = self.parts.sigmoids()
        if pair == {"logits", "targets"}:  # -w (1 - eps) [sigma(x) + q sigma(-x)]
            return -weighted(self.w, self._smoothed(sig_pos + weighted(self.q, sig_neg)))
        if pair == {"logits", "pos_weight"}:  # -w y' sigma(-x)
            return -weighted(self.w, rules.zero_safe(OPS, c.smoothed.hi, sig_neg))
        return weighted(self.w, self._smoothed(self.parts.softpluses()[1]))  # yq


def plain_loss_and_slope(
    x: tf.Tensor,
    y: tf.Tensor,
    w: tf.Tensor | None,
    q: tf.Tensor | None,
    smoothing: tuple[tf.Tensor, tf.Tensor] | None,
    *,
    tails: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The element loss w [a softplus(x) + b softplus(-x)] and its slope w [a sigma(x) - b
    sigma(-x)] of float32 logits in float32 arithmetic: one exp and one log1p per element.

    With e = exp(-|x|), l = log1p(e) and r = 1 / (1 + e), softplus(|x|) = |x| + l,
    softplus(-|x|) = l, sigma(|x|) = r and sigma(-|x|) = e r (never 1 - r): every term is
    non-negative and nothing cancels, so single arithmetic stays within the 4 ULP contract
    with TensorFlow's and XLA's exp and log1p (2.3 ULP at worst, measured against the exact
    oracle by ``tests/test_tensorflow_backend.py``). ``smoothing`` is (1 - eps, eps / 2).

    With ``tails``, logits may reach the underflow threshold K (``UNDERFLOW``): there the
    exponential is taken at K - |x| (exact) and the small side kept in units of exp(-K), so
    that a coefficient multiplies it before it is scaled, and a result below the smallest
    normal number (which TensorFlow's CPU flushes) is rebuilt from its bits.

    >>> loss, slope = plain_loss_and_slope(tf.constant([0.0, 2.0]), tf.constant([1.0, 0.0]),
    ...                                    None, None, None, tails=False)
    >>> [round(v, 4) for v in loss.numpy().tolist()], [round(v, 4) for v in slope.numpy().tolist()]
    ([0.6931, 2.1269], [-0.5, 0.8808])
    """
    positive = x >= 0
    ax = tf.abs(x)
    one_minus = 1.0 - y
    if smoothing is not None:
        keep, half = smoothing
        y, one_minus = y * keep + half, one_minus * keep + half
    b = y if q is None else q * y
    a, b = (one_minus, b) if w is None else (w * one_minus, w * b)
    near, far = tf.where(positive, a, b), tf.where(positive, b, a)  # of softplus(|x|), (-|x|)
    if tails:
        threshold = UNDERFLOW[np.dtype(np.float32)].threshold
        tail = ax >= threshold  # False for NaN
        shifted = tf.exp(tf.where(tail, threshold - ax, -ax))
        unit = tf.where(tail, tf.constant(math.exp(-threshold), tf.float32), 1.0)
        e = shifted * unit
    else:
        e = shifted = tf.exp(-ax)
    log1p_e = tf.math.log1p(e)
    r = 1.0 / (1.0 + e)
    zero = tf.zeros_like(x)
    # A zero coefficient contributes exactly 0, also times softplus(|x|) = inf.
    big = tf.where(near == 0, zero, near * (ax + log1p_e))
    signed_far = tf.where(positive, -far, far)  # the coefficient of sigma(-|x|), signed
    if tails:
        loss = big + far * tf.where(tail, shifted, log1p_e) * unit
        slope = tf.where(positive, near, -near) * r + signed_far * (shifted * r) * unit
        loss = exact_underflow(OPS, loss, far, tail, shifted)
        slope = exact_underflow(OPS, slope, signed_far, tail, shifted)
    else:
        loss = big + far * log1p_e
        slope = tf.where(positive, near, -near) * r + signed_far * (e * r)
    # No coefficient (or a zero weight): exactly 0, even at NaN logits, as in the spec.
    slope = tf.where((a == 0) & (b == 0), zero, slope)
    if w is not None:
        zeroed = w == 0
        loss, slope = tf.where(zeroed, zero, loss), tf.where(zeroed, zero, slope)
    return loss, slope


class UnitInterval(NamedTuple):
    """A probability read from its bits, so that subnormal values count: TensorFlow and XLA on
    the CPU read a subnormal operand of an arithmetic operation or comparison as 0, which
    would turn log(1e-40) into -inf and let -1e-40 pass as inside [0, 1]. Integer operations
    on the bits see every value as it is.

    ``scaled`` is p, except p * 2**k for a positive subnormal p (k = the mantissa's bits + 1),
    a normal number: ``scale`` is 2**k there and 1 elsewhere, ``shift`` is k log 2 there and 0
    elsewhere. On normal numbers they change nothing: the common path keeps its roundings.

    >>> parts = UnitInterval.of(tf.constant([1e-40, 0.5, -1e-40, 1.5]))
    >>> parts.valid.numpy().tolist()
    [True, True, False, False]
    >>> round(float(parts.log()[0]), 4)
    -92.1034
    """

    valid: tf.Tensor  # 0 <= p <= 1 (-0 included, NaN not)
    scaled: tf.Tensor
    scale: tf.Tensor
    shift: tf.Tensor

    @classmethod
    def of(cls, p: tf.Tensor) -> UnitInterval:
        dtype = p.dtype.as_numpy_dtype
        info = np.finfo(dtype)
        signed = tf.int32 if info.bits == 32 else tf.int64
        bits = tf.bitcast(p, signed)
        view = signed.as_numpy_dtype
        one = int(np.asarray(1.0, dtype).view(view))  # positive floats order as their bits
        negative_zero = int(np.asarray(-0.0, dtype).view(view))
        valid = ((bits >= 0) & (bits <= one)) | tf.equal(bits, negative_zero)
        subnormal = (bits > 0) & (bits < (1 << info.nmant))
        k = info.nmant + 1
        # A subnormal is its bits (the mantissa) times the smallest subnormal 2**(minexp - nmant);
        # the integer converts exactly, and times 2**(minexp + 1) it is normal.
        lifted = tf.cast(bits, p.dtype) * tf.constant(2.0 ** (info.minexp + 1), p.dtype)

        def pick(there: float, elsewhere: float) -> tf.Tensor:
            return tf.where(subnormal, tf.constant(there, p.dtype), tf.constant(elsewhere, p.dtype))

        # k log 2 rounded once is within 1/8 ULP of log p at these magnitudes.
        return cls(
            valid, tf.where(subnormal, lifted, p), pick(2.0**k, 1.0), pick(k * math.log(2.0), 0.0)
        )

    def log(self) -> tf.Tensor:
        """log p, exact for subnormal p; NaN for p < 0."""
        return tf.math.log(self.scaled) - self.shift


class ProbsTerms(NamedTuple):
    """The element loss -w [q y' max(log p, c) + (1 - y') max(log1p(-p), c)] and its partial
    derivatives; NaN where p is outside [0, 1]. log p is exact for subnormal p; log1p(-p) of
    a subnormal p is below the smallest normal number (it may be 0)."""

    p: tf.Tensor
    logs: tuple[tf.Tensor, tf.Tensor]  # max(log p, c), max(log1p(-p), c)
    smoothed: tuple[tf.Tensor, tf.Tensor]  # y', 1 - y'
    w: tf.Tensor | None
    q: tf.Tensor | None
    eps: float
    bits: UnitInterval

    @classmethod
    def of(
        cls,
        p: tf.Tensor,
        y: tf.Tensor,
        w: tf.Tensor | None,
        q: tf.Tensor | None,
        eps: float,
        clamp: float,
    ) -> ProbsTerms:
        floor = tf.constant(clamp, p.dtype)
        bits = UnitInterval.of(p)
        return cls(
            p,
            (tf.maximum(bits.log(), floor), tf.maximum(tf.math.log1p(-p), floor)),
            rules.smoothed_targets(y, eps),
            w,
            q,
            eps,
            bits,
        )

    def _valid(self, value: tf.Tensor) -> tf.Tensor:
        """``value``, NaN where p is outside [0, 1] (the loss is NaN there, and so its slope)."""
        return OPS.where(self.bits.valid, value, float("nan"))

    def partial(self, name: str) -> tf.Tensor:
        """d loss / d ``name`` (of ``OPERANDS``, "logits" standing for the probabilities)."""
        (log_p, log_1mp), (smoothed, one_minus) = self.logs, self.smoothed
        b = weighted(self.q, smoothed)
        if name == "logits":  # w (p (1 + (q - 1) y') - q y') / max(p (1 - p), 1e-12)
            # Numerator and denominator times the same power of 2 for a subnormal p (read as
            # 0 in p (1 - y'), where p / floor is normal); times 1 elsewhere.
            scaled, scale = self.bits.scaled, self.bits.scale
            numerator = scaled * (one_minus + b) - b * scale
            floor = tf.maximum(self.p * (1.0 - self.p), PROBS_GRAD_EPS)
            return self._valid(weighted(self.w, numerator / (floor * scale)))
        if name == "weight":  # the bracket, the loss before the weight
            return self._valid(
                -(rules.zero_safe(OPS, b, log_p) + rules.zero_safe(OPS, one_minus, log_1mp))
            )
        if name == "targets":  # w (1 - eps) [max(log1p(-p), c) - q max(log p, c)]
            return weighted(
                self.w, rules.zero_safe(OPS, 1.0 - self.eps, log_1mp - weighted(self.q, log_p))
            )
        return weighted(self.w, -rules.zero_safe(OPS, smoothed, log_p))

    def loss(self) -> tf.Tensor:
        return weighted(self.w, self.partial("weight"))


class Working(NamedTuple):
    """One call's operands in the working dtype and element shape, harmless where the mask drops
    an element (the first where of the double where: no inf or NaN there, forward or back)."""

    x: tf.Tensor
    y: tf.Tensor
    w: tf.Tensor | None
    q: tf.Tensor | None
    keep: tf.Tensor | None
    dtype: tf.DType  # the input's dtype, which every result gets

    @classmethod
    def of(cls, ops: Operands[tf.Tensor], *, neutral: float) -> Working:
        work = working_dtype(ops.inputs.dtype)

        def up(value: tf.Tensor | None) -> tf.Tensor | None:
            if value is None:
                return None
            value = value if value.dtype in (work, tf.bool) else tf.cast(value, work)
            return OPS.broadcast_to(value, dynamic_shape(ops.inputs))

        x, y, w, q, keep = map(up, (ops.inputs, ops.targets, ops.weight, ops.pos_weight, ops.mask))
        if keep is not None:
            x, y = OPS.where(keep, x, neutral), OPS.where(keep, y, 0.0)
            w, q = (None if v is None else OPS.where(keep, v, 0.0) for v in (w, q))
        return cls(x, y, w, q, keep, ops.inputs.dtype)

    def out(self, value: tf.Tensor) -> tf.Tensor:
        """A result in the input's dtype, rounded once."""
        return value if value.dtype == self.dtype else tf.cast(value, self.dtype)

    def reduce(self, elements: tf.Tensor, reduction: str) -> rules.Reduced[tf.Tensor]:
        """``rules.reduce_elements`` of (already weighted) element losses."""
        shape = None if elements.shape.is_fully_defined() else dynamic_shape(elements)
        return rules.reduce_elements(
            OPS, elements, reduction, keep=self.keep, weight=self.w, shape=shape
        )


def value_and_grad(
    ops: Operands[tf.Tensor],
    *,
    eps: float,
    reduction: str,
    names: Sequence[str],
    full: bool = False,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The reduced loss and its analytic gradients with respect to ``names`` (long names); with
    ``full``, those of broadcast operands per element, before their sum."""
    v = Working.of(ops, neutral=0.0)
    terms = LogitTerms.of(v.x, v.y, v.w, v.q, eps)
    reduced = v.reduce(terms.loss(), reduction)
    partials = {name: (lambda n=name: terms.partial(n)) for name in OPERANDS}
    shapes = (
        {}
        if full
        else {
            name: None if value is None else CONVERTER.shape_of(value)
            for name, value in (("weight", ops.weight), ("pos_weight", ops.pos_weight))
        }
    )
    grads = rules.reduction_gradients(
        OPS,
        list(names),
        partials,
        shape=dynamic_shape(v.x),
        arg_shapes=shapes,
        reduction=reduction,
        reduced=reduced,
    )
    return v.out(reduced.loss), [v.out(g) for g in grads]


def grad_hess(ops: Operands[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """Elementwise (d loss / d x, d2 loss / d x2) without smoothing, mask or reduction."""
    v = Working.of(ops, neutral=0.0)
    terms = LogitTerms.of(v.x, v.y, v.w, v.q, 0.0)
    return v.out(terms.partial("logits")), v.out(terms.second("logits", "logits"))
