"""Elementwise math of the Torch backend, in the working dtype (float32 or float64).

One exponential per element serves both softplus terms and both sigmoids:
with e = exp(-|x|), l = log1p(e) and r = 1/(1+e),

    softplus(|x|)  = |x| + l             sigma(|x|)  = r
    softplus(-|x|) = l                   sigma(-|x|) = e r

The loss and both sigmoids are sums and products of non-negative terms, so
nothing cancels (the gradient's one difference is graded against its larger
term), and native float32 arithmetic stays within the 4 ULP contract
(measured by ``tests/test_torch_backend.py`` against the exact oracle).

The small side (l and e r) is subnormal once |x| passes about 87 (float32)
or 708 (float64). Rounding it there and only then multiplying by a weight
would multiply its rounding error too (by 3 for a weight of 3), so past
that threshold the exponential is taken at the exactly shifted argument
K - |x| (exact by Sterbenz's lemma) and the small side is kept in units of
exp(-K): coefficients multiply it first, and one final product by exp(-K)
rounds into the subnormal range once.

Coefficients may be a tensor, a Python number or None (meaning 1, for an
absent weight or pos_weight), so the common unweighted call does no work for
them. A coefficient of exactly 0 contributes exactly 0, even times inf
(``bce_core.rules.zero_safe``, as are the smoothed targets and ``times``).

>>> import torch
>>> parts = LogitParts.of(torch.tensor([-30.0, 0.0, 30.0]))
>>> [round(v, 4) for v in parts.softplus()[0].tolist()]
[0.0, 0.6931, 30.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bce_core.rules import Coefficient, smoothed_target_slope, times, weight_times, zero_safe

from .operands import TORCH_OPS as OPS

#: A zero-safe product (coefficient, value) -> tensor, in place of ``rules.zero_safe``.
Product = Callable[[Coefficient, torch.Tensor], torch.Tensor]

#: Per working dtype: (|x| beyond which exp(-|x|) is subnormal, the shift K). K/2 <= |x| <= 2K
#: holds wherever the small side is still representable, so K - |x| is exact there.
_TAIL: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (87.0, 64.0),
    torch.float64: (708.0, 512.0),
}


class LogitParts:
    """softplus(±x) and sigma(±x) from one exp (and one log1p) per element.

    ``u`` is exp(-|x|), or exp(K - |x|) where ``tail`` is set; the small side of
    softplus and sigma is held in units of ``scale`` (exp(-K) in the tail, else 1;
    see the module docstring). ``e`` is exp(-|x|) itself.
    """

    __slots__ = ("x", "positive", "neg_abs", "u", "tail", "scale", "e")

    def __init__(self, x: torch.Tensor, u: torch.Tensor | None = None) -> None:
        threshold, shift = _TAIL.get(x.dtype, _TAIL[torch.float32])
        self.x = x
        self.positive = x >= 0
        # -|x| as -x or x by side: plain autodiff of everything below is then right on
        # both sides and at x = 0, where abs has derivative 0. (Under torch.compile these
        # ops are differentiated directly; see autodiff.logit_loss_elements.)
        self.neg_abs = torch.where(self.positive, -x, x)
        self.tail = self.neg_abs < -threshold
        if u is None:
            u = torch.exp(torch.where(self.tail, shift + self.neg_abs, self.neg_abs))
        self.u = u
        unit = torch.tensor(math.exp(-shift), dtype=x.dtype, device=x.device)
        self.scale = torch.where(self.tail, unit, 1.0)  # two Python numbers would give float32
        self.e = u * self.scale

    @classmethod
    def of(cls, x: torch.Tensor) -> LogitParts:
        return cls(x)

    @classmethod
    def from_saved(cls, x: torch.Tensor, u: torch.Tensor) -> LogitParts:
        """Rebuild the parts from x and the kept ``u`` (the backward's entry point)."""
        return cls(x, u)

    def softplus_sides(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(softplus(|x|), softplus(-|x|) in units of ``scale``)."""
        log1p_e = torch.log1p(self.e)
        # In the tail log1p(e) rounds to e, which is u in units of scale.
        return log1p_e - self.neg_abs, torch.where(self.tail, self.u, log1p_e)

    def sigmoid_sides(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma(|x|), sigma(-|x|) in units of ``scale``); the small one is e r, never 1 - r."""
        big = 1.0 / (1.0 + self.e)
        return big, self.u * big

    def combine(
        self,
        c_pos: Coefficient,
        c_neg: Coefficient,
        big: torch.Tensor,
        small: torch.Tensor,
        product: Product | None = None,
    ) -> torch.Tensor:
        """c_pos f(x) + c_neg f(-x) for f with f(|x|) = ``big`` and f(-|x|) = ``small`` * scale.

        The coefficient multiplies the small side before it is scaled, so a tiny
        result is rounded once; a zero coefficient contributes exactly 0. ``product``
        forms both terms (``rules.zero_safe`` by default), for an autodiff whose
        derivative in a zero coefficient must still be the value.
        """
        positive = self.positive
        c_pos = 1.0 if c_pos is None else c_pos
        c_neg = 1.0 if c_neg is None else c_neg
        c_big = _select(positive, c_pos, c_neg, big)
        c_small = _select(positive, c_neg, c_pos, big)
        if product is None:
            return zero_safe(OPS, c_big, big) + zero_safe(OPS, c_small, small) * self.scale
        return product(c_big, big) + product(c_small, small) * self.scale

    def softplus(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(softplus(x), softplus(-x)); NaN stays NaN in both."""
        big, small = self.softplus_sides()
        return self._by_sign(big, small * self.scale)

    def sigmoids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma(x), sigma(-x)); NaN stays NaN in both."""
        big, small = self.sigmoid_sides()
        return self._by_sign(big, small * self.scale)

    def _by_sign(self, big: torch.Tensor, small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.where(self.positive, big, small), torch.where(self.positive, small, big)


def _select(
    condition: torch.Tensor,
    first: torch.Tensor | float,
    second: torch.Tensor | float,
    like: torch.Tensor,
) -> torch.Tensor | float:
    """torch.where for coefficients, which may be Python numbers (then of ``like``'s dtype)."""
    if not isinstance(first, torch.Tensor) and not isinstance(second, torch.Tensor):
        if first == second:
            return first
        first = torch.tensor(first, dtype=like.dtype, device=like.device)
    return torch.where(condition, first, second)


def logit_loss(
    parts: LogitParts,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    product: Product | None = None,
) -> torch.Tensor:
    """w [(1 - y') softplus(x) + q y' softplus(-x)], the weight applied before the small side."""
    return parts.combine(
        weight_times(OPS, w, one_minus_yp),
        weight_times(OPS, w, times(q, yp)),
        *parts.softplus_sides(),
        product=product,
    )


def logit_bracket(
    softplus_pos: torch.Tensor,
    softplus_neg: torch.Tensor,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    q: Coefficient,
) -> torch.Tensor:
    """(1 - y') softplus(x) + q y' softplus(-x): the element loss before the weight."""
    return zero_safe(OPS, one_minus_yp, softplus_pos) + zero_safe(OPS, times(q, yp), softplus_neg)


def logit_grad(
    parts: LogitParts, yp: torch.Tensor, one_minus_yp: torch.Tensor, w: Coefficient, q: Coefficient
) -> torch.Tensor:
    """d loss / d x = w (1 - y') sigma(x) - w q y' sigma(-x)."""
    c_neg = weight_times(OPS, w, times(q, yp))
    return parts.combine(
        weight_times(OPS, w, one_minus_yp),
        -1.0 if c_neg is None else -c_neg,
        *parts.sigmoid_sides(),
    )


def logit_hessian(
    parts: LogitParts, yp: torch.Tensor, one_minus_yp: torch.Tensor, w: Coefficient, q: Coefficient
) -> torch.Tensor:
    """d2 loss / d x2 = w (1 + (q - 1) y') sigma(x) sigma(-x), as w ((1 - y') + q y') r (e r)."""
    big, small = parts.sigmoid_sides()
    coefficient = weight_times(OPS, w, one_minus_yp + (yp if q is None else q * yp))
    return zero_safe(OPS, coefficient, big * small * parts.scale)


def logit_partials(
    parts: LogitParts,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    eps: float,
    names: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """d(element loss)/d(name) for each of ``names`` ("logits", "targets", "weight", "pos_weight").

    The softplus terms (one log1p) are computed only when a name other than the
    logits needs them.
    """
    out: dict[str, torch.Tensor] = {}
    if "logits" in names:
        out["logits"] = logit_grad(parts, yp, one_minus_yp, w, q)
    if any(name != "logits" for name in names):
        sp_pos, sp_neg = parts.softplus()
        if "targets" in names:
            out["targets"] = zero_safe(
                OPS,
                weight_times(OPS, w, smoothed_target_slope(eps)),
                zero_safe(OPS, q, sp_neg) - sp_pos,
            )
        if "weight" in names:
            out["weight"] = logit_bracket(sp_pos, sp_neg, yp, one_minus_yp, q)
        if "pos_weight" in names:
            out["pos_weight"] = zero_safe(OPS, weight_times(OPS, w, yp), sp_neg)
    return out


def probs_logs(p: torch.Tensor, log_clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(max(log p, c), max(log1p(-p), c)); -inf clamps nothing."""
    return torch.log(p).clamp_min(log_clamp), torch.log1p(-p).clamp_min(log_clamp)


def probs_bracket(
    p: torch.Tensor,
    log_p: torch.Tensor,
    log_1mp: torch.Tensor,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    q: Coefficient,
) -> torch.Tensor:
    """-(q y' max(log p, c) + (1 - y') max(log1p(-p), c)); NaN where p is outside [0, 1]."""
    bracket = -(zero_safe(OPS, times(q, yp), log_p) + zero_safe(OPS, one_minus_yp, log_1mp))
    # p outside [0, 1] (or NaN) is NaN even where its term's coefficient is 0.
    return torch.where((p >= 0) & (p <= 1), bracket, float("nan"))


def probs_grad(
    p: torch.Tensor,
    yp: torch.Tensor,
    one_minus_yp: torch.Tensor,
    w: Coefficient,
    q: Coefficient,
    floor: float,
) -> torch.Tensor:
    """d loss / d p = w (p (1 + (q - 1) y') - q y') / max(p (1 - p), floor), as torch's BCELoss."""
    qy = times(q, yp)
    numerator = p * (one_minus_yp + qy) - qy
    slope = zero_safe(OPS, w, numerator / (p * (1.0 - p)).clamp_min(floor))
    # Where p is outside [0, 1] the loss is NaN, and so is its slope.
    return torch.where((p >= 0) & (p <= 1), slope, float("nan"))
