"""The one-pass path: compiled programs that compute, in one pass over the elements, whichever
of the loss, its gradients and its curvature a call asks for.

Each program takes the operands (already in the input's dtype, see
``operands``) plus static options, computes in the working dtype, and rounds
once to the input's dtype. ``jax.jit`` makes an eager call one dispatch, and
inside a caller's own jit it simply inlines. The loss and its slope and
curvature are ``bce_core.compensated``'s; the reductions are the core's
(``bce_core.rules``), planned before any loss is computed so that a large
input can run a chunk of rows at a time (``chunks``).

``outputs`` chooses the outputs a call computes, so that few programs are
compiled: up to ``SMALL`` elements one per option set computes every output;
"sum", "mean" and "batch_mean" share one program, whose denominator is a
runtime input (``SCALED``).

>>> import jax.numpy as jnp
>>> out = logits_program(jnp.array([0.0, 0.0], jnp.bfloat16), jnp.array([1.0, 0.0], jnp.bfloat16),
...                      None, None, None, reduction="sum", want=("loss",))
>>> out["loss"].dtype, float(out["loss"])
(dtype(bfloat16), 1.3828125)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bce_core import rules
from bce_core.compensated import LogitParts, Smoothing

from . import chunks, kernels
from .operands import CONVERTER, OPS, PRIMITIVES, working_dtype

Array = jax.Array

#: The arguments of the logits form that have gradients, in their canonical order.
NAMES = ("logits", "targets", "weight", "pos_weight")

#: Up to this many elements, one program per option set computes every output: computing the
#: outputs nobody asked for costs microseconds, and a compilation a tenth of a second.
SMALL = 1 << 14

#: The reduction of a program that takes the denominator of "sum", "mean" or "batch_mean" at
#: run time (see ``runtime_denominator``): one compilation serves the three.
SCALED = "scaled"
#: The reductions that ``SCALED`` stands for.
SCALED_REDUCTIONS = ("sum", "mean", "batch_mean")
#: The runtime denominator that means: the number of elements the mask keeps.
COUNT_KEPT = -1.0


def runtime_denominator(reduction: str, shape: tuple[int, ...], *, masked: bool) -> float:
    """The runtime input of a ``SCALED`` program: the core's denominator of ``reduction``, or
    ``COUNT_KEPT`` for the mean of a masked input (the program counts the kept elements).

    >>> runtime_denominator("sum", (4, 3), masked=True), runtime_denominator("mean", (4, 3),
    ...                                                                      masked=False)
    (1.0, 12.0)
    """
    if reduction == "mean" and masked:
        return COUNT_KEPT
    return float(rules.denominator(OPS, reduction, shape, keep=None, weight=None, like=None))


#: The largest input whose overflow branch is a select (both sums computed), not a conditional.
SELECT_MAX = 4096


class Plan(NamedTuple):
    """The reduction of one program, planned on the whole input before any loss is computed."""

    reduction: str
    shape: tuple[int, ...]
    #: Full-shape bool of the elements that count; None when all of them do.
    keep: Array | None
    #: The denominator (``rules.denominator``); None for "none".
    by: Any
    #: d(loss)/d(sum of element losses): 1 / by, or 0 for a zero denominator.
    scale: Any
    #: For ``SCALED`` with a mask: whether the denominator is the mask's count.
    counted: Array | None = None
    #: The doublings a total beyond the dtype's range is scaled down by (``rules.finish_total``)
    shift: int = 1
    #: Whether ``total`` sums the losses times 2**-shift (the program run for that total).
    scaled: bool = False

    @classmethod
    def of(
        cls,
        reduction: str,
        shape: tuple[int, ...],
        *,
        mask: Array | None,
        weight: Array | None,
        dtype: np.dtype[Any],
        denominator: Any = None,
    ) -> Plan:
        """The plan of ``reduction`` (for ``SCALED``, with the runtime ``denominator``)."""
        keep = None if mask is None else jnp.broadcast_to(mask, shape)
        if reduction == "none":
            return cls(reduction, shape, keep, None, 1.0)
        counted = None
        if reduction == SCALED:
            by = jnp.asarray(denominator, dtype)
            if keep is not None:
                counted = by == COUNT_KEPT
                by = jnp.where(
                    counted,
                    rules.denominator(OPS, "mean", shape, keep=keep, weight=None, like=by),
                    by,
                )
        else:
            by = rules.denominator(
                OPS, reduction, shape, keep=keep, weight=weight, like=jnp.zeros((), dtype)
            )
        scale = rules.divide_or_zero(OPS, 1.0, by)[1]
        shift = rules.overflow_shift(math.prod(shape))
        return cls(reduction, shape, keep, by, scale, counted, shift)

    def within(self, shape: tuple[int, ...], keep: Array | None) -> Plan:
        """This plan for a chunk of rows of ``shape`` (``keep``: its rows of ``self.keep``):
        the same reduction and denominator, so the chunks' sums add up to the result."""
        return self._replace(shape=shape, keep=keep)

    def total(self, elements: Array) -> Array:
        """The sum of the element losses that count (for "none", those losses themselves);
        for a ``scaled`` plan, the sum of the losses times 2**-shift."""
        summed = "none" if self.reduction == "none" else "sum"
        if self.scaled and summed == "sum":
            elements = elements * 2.0**-self.shift
        return rules.reduce_elements(OPS, elements, summed, keep=self.keep, weight=None).loss

    def finish(self, total: Array, rescaled: Callable[[], Array] | None) -> Array:
        """The reduced loss from the ``total`` of the whole input, without intermediate
        overflow (``rules.finish_total``): ``rescaled()`` is the total of a ``scaled`` plan,
        computed (in a conditional) only where ``total`` is beyond the dtype's range."""
        if self.by is None:
            return total
        if rescaled is None:
            return self._divide(total)
        # Up to SELECT_MAX elements XLA computes the scaled sum as well for less than a
        # conditional costs (a few microseconds); beyond, the conditional runs it only if taken.
        cheap = math.prod(self.shape) <= SELECT_MAX
        return rules.finish_total(OPS, total, rescaled, self._divide, self.shift, cheap=cheap)

    def _divide(self, total: Array) -> Array:
        quotient, _ = rules.divide_or_zero(OPS, total, self.by)
        if self.reduction != SCALED:
            return quotient
        # XLA divides by a compiled-in constant as a product with its rounded reciprocal, so a
        # given denominator divides that way: the same bits as when it is compiled in (as it
        # is under a caller's jit). A sum is never multiplied, not even by 1: XLA on CPU
        # would flush its subnormals. A mask's count is divided by.
        product = jnp.where(self.by == 1, total, total * self.scale)
        return product if self.counted is None else jnp.where(self.counted, quotient, product)

    def gradient(
        self,
        name: str,
        element_partial: Array,
        like_shape: tuple[int, ...] | None,
        loss: Array | None,
    ) -> Array:
        """d(element loss)/d(name) turned into the gradient of the reduced loss with respect to
        an argument of ``like_shape`` (None: the element shape); ``loss`` is the whole input's
        reduced loss, which the weight's gradient under "weighted_mean" needs."""
        factor = self.scale if self.keep is None else jnp.where(self.keep, self.scale, 0.0)
        return rules.reduction_gradients(
            OPS,
            [name],
            {name: lambda: element_partial},
            shape=self.shape,
            arg_shapes={name: like_shape},
            reduction=self.reduction,
            reduced=rules.Reduced(loss, factor),
        )[0]


# -- the programs ---------------------------------------------------------------------------


def _up(value: Array | None, dtype: np.dtype[Any]) -> Array | None:
    return None if value is None else value.astype(dtype)


def _with_data_rule(
    x: Array, y: Array, w: Array | None, q: Array | None
) -> tuple[Array | None, ...]:
    """The operands with the spec's rule for non-finite data applied to the input."""
    return (rules.nan_where_data_is_not_finite(CONVERTER, x, y, w, q), y, w, q)


def _output_shape(
    key: str, names: tuple[str, ...], operands: tuple[Array | None, ...], reduction: str
) -> tuple[int, ...]:
    """The shape of output ``key`` (see ``logits_program``)."""
    kind, _, name = key.partition(":")
    shape = operands[0].shape
    if key == "loss":
        return shape if reduction == "none" else ()
    if kind == "grad":
        return operands[names.index(name)].shape
    return shape  # "full:NAME" and "curvature"


#: outputs_of(keys, loss, plan, *operands) -> {key: value}: the outputs ``keys`` of the
#: operands (a chunk of rows, see ``chunks``) in the working dtype; the loss is their sum
#: (not yet divided), and ``loss`` is the whole input's reduced loss (None if not known).
OutputsOf = Callable[..., dict[str, Array]]


def _check_outputs(
    program: str, want: tuple[str, ...], names: tuple[str, ...], curvature: bool
) -> None:
    for key in want:
        kind, _, name = key.partition(":")
        if not (
            key == "loss"
            or (key == "curvature" and curvature)
            or (kind in ("grad", "full") and name in names)
        ):
            raise ValueError(f"{program} has no output {key!r}")


def _evaluate(
    outputs_of: OutputsOf,
    names: tuple[str, ...],
    operands: tuple[Array | None, ...],
    plan: Plan,
    want: tuple[str, ...],
    dtype: np.dtype[Any],
    rescaled: Callable[[], Array] | None = None,
) -> dict[str, Array]:
    """The outputs ``want`` in ``dtype``: in one pass over the operands' chunks, except those
    that need the whole input's loss (the weight's gradient under "weighted_mean"), which
    take a second pass once it is known. ``rescaled()`` is the loss's total from a scaled
    plan (``Plan.finish``); for a scaled plan itself, "loss" is that total."""
    late = tuple(
        key
        for key in want
        if plan.reduction == "weighted_mean" and key in ("grad:weight", "full:weight")
    )
    early = tuple(key for key in want if key not in late)
    if late and "loss" not in early:
        early = ("loss", *early)

    def run(keys: tuple[str, ...], loss: Array | None, *values: Array | None) -> dict:
        *args, keep = values
        return outputs_of(keys, loss, plan.within(args[0].shape, keep), *args)

    out_shapes = {key: _output_shape(key, names, operands, plan.reduction) for key in early}
    out = chunks.by_chunks(
        partial(run, early, None), (*operands, plan.keep), operands[0].shape, out_shapes
    )
    if plan.scaled:
        return {"loss": out["loss"]}
    if "loss" in out:
        out["loss"] = plan.finish(out["loss"], rescaled)
    if late:
        out.update(run(late, out["loss"], *operands, plan.keep))
    return {key: out[key].astype(dtype) for key in want}


def _gradients(
    keys: tuple[str, ...],
    plan: Plan,
    loss: Array | None,
    shapes: dict[str, tuple[int, ...] | None],
    partial_of: Callable[[str], Array],
) -> dict[str, Array]:
    """The outputs "grad:NAME" (in NAME's shape) and "full:NAME" (per element) among ``keys``."""
    out = {}
    for key in keys:
        kind, _, name = key.partition(":")
        if kind in ("grad", "full"):
            out[key] = plan.gradient(
                name, partial_of(name), shapes[name] if kind == "grad" else None, loss
            )
    return out


def _logits_outputs(
    eps: kernels.Smooth,
    keys: tuple[str, ...],
    loss: Array | None,
    plan: Plan,
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
) -> dict[str, Array]:
    """The outputs ``keys`` of ``logits_program`` on (a chunk of) its operands."""
    if w is None and q is None and kernels.unsmoothed(eps):
        return _plain_logits_outputs(keys, loss, plan, x, y)
    coefficients = kernels.coefficients(y, q, eps)
    parts = LogitParts.of(PRIMITIVES, x)

    # The loss and its slope carry their coefficients as pairs (they are held to a few ULP);
    # the other outputs are held to parity only, and single arithmetic keeps the program small.
    def partial_of(name: str) -> Array:
        if name == "logits":
            return parts.slope(coefficients, w)
        return kernels.logit_partial(name, x, parts.softpluses(), y, w, q, eps)

    out = _gradients(
        keys,
        plan,
        loss,
        {
            "logits": x.shape,
            "targets": y.shape,
            "weight": None if w is None else w.shape,
            "pos_weight": None if q is None else q.shape,
        },
        partial_of,
    )
    if "loss" in keys:
        out["loss"] = plan.total(parts.loss(coefficients, w))
    if "curvature" in keys:
        smoothed, one_minus = kernels.smoothed_targets(y, eps)
        c = one_minus + rules.zero_safe(OPS, q, smoothed)
        out["curvature"] = plan.gradient(
            "logits", parts.curvature(kernels.weighted(w, c)), None, loss
        )
    return out


def _plain_logits_outputs(
    keys: tuple[str, ...], loss: Array | None, plan: Plan, x: Array, y: Array
) -> dict[str, Array]:
    """``_logits_outputs`` without weight, pos_weight or smoothing (``kernels.PlainParts``)."""
    parts = kernels.PlainParts.of(x)

    def partial_of(name: str) -> Array:
        # d/dy of (1 - y) softplus(x) + y softplus(-x) is exactly -x.
        return parts.slope(y) if name == "logits" else -x

    out = _gradients(keys, plan, loss, {"logits": x.shape, "targets": y.shape}, partial_of)
    if "loss" in keys:
        out["loss"] = plan.total(parts.loss(y))
    if "curvature" in keys:
        smoothed, one_minus = rules.smoothed_targets(y, 0.0)
        out["curvature"] = plan.gradient(
            "logits", parts.curvature(one_minus + smoothed), None, loss
        )
    return out


@partial(jax.jit, static_argnames=("reduction", "want"))
def logits_program(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    denominator: float | Array | None = None,
    smoothing: Array | None = None,
    *,
    reduction: str,
    want: tuple[str, ...],
) -> dict[str, Array]:
    """The outputs named in ``want``, each in the input's dtype:

    - ``"loss"``: the reduced loss;
    - ``"grad:NAME"``: its gradient with respect to argument NAME, in NAME's shape;
    - ``"full:NAME"``: the same before the sum over NAME's broadcast axes (element shape);
    - ``"curvature"``: the derivative of ``grad:logits`` with respect to each logit (the
      Hessian's diagonal; the loss is elementwise in the logits).

    One exp and one log1p per element serve them all, in one pass over the elements
    (``chunks``). Not differentiable itself: ``autodiff`` gives the loss its derivatives.
    ``reduction`` may be ``SCALED``, with its runtime ``denominator``. Label smoothing is a
    runtime input too (``smoothing_input``; None for none, which has a program of its own):
    one compilation serves every eps, so a schedule of values compiles once.
    """
    _check_outputs("logits_program", want, NAMES, curvature=True)
    return _logits_body(x, y, w, q, mask, denominator, smoothing, reduction, want, scaled=False)


def _logits_body(
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    denominator: float | Array | None,
    smoothing: Array | None,
    reduction: str,
    want: tuple[str, ...],
    *,
    scaled: bool,
) -> dict[str, Array]:
    """``logits_program``'s outputs; ``scaled``: only the loss's total times 2**-shift, which
    the overflow branch computes from the program's own parameters (so that the program need
    not write any intermediate out to keep it for the branch)."""
    dtype, work = x.dtype, working_dtype(x.dtype)
    operands = _with_data_rule(*(_up(v, work) for v in (x, y, w, q)))
    plan = Plan.of(
        reduction, x.shape, mask=mask, weight=operands[2], dtype=work, denominator=denominator
    )._replace(scaled=scaled)
    eps = 0.0 if smoothing is None else smoothing

    def rescaled() -> Array:
        args = (x, y, w, q, mask, denominator, smoothing, reduction, ("loss",))
        return _logits_body(*args, scaled=True)["loss"]

    outputs_of = partial(_logits_outputs, eps)
    return _evaluate(outputs_of, NAMES, operands, plan, want, dtype, rescaled)


def _probs_outputs(
    eps: kernels.Smooth,
    clamp: float | Array,
    keys: tuple[str, ...],
    loss: Array | None,
    plan: Plan,
    p: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
) -> dict[str, Array]:
    """The outputs ``keys`` of ``probs_program`` on (a chunk of) its operands."""
    logs = kernels.probs_logs(p, clamp)

    def partial_of(name: str) -> Array:
        if name == "probs":
            return kernels.probs_slope(p, y, w, q, eps)
        return kernels.probs_partial(name, logs, y, w, q, eps)

    out = _gradients(
        keys,
        plan,
        loss,
        {
            "probs": p.shape,
            "targets": y.shape,
            "weight": None if w is None else w.shape,
            "pos_weight": None if q is None else q.shape,
        },
        partial_of,
    )
    if "loss" in keys:
        out["loss"] = plan.total(kernels.weighted(w, partial_of("weight")))
    return out


@partial(jax.jit, static_argnames=("reduction", "want"))
def probs_program(
    p: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    denominator: float | Array | None = None,
    smoothing: Array | None = None,
    *,
    reduction: str,
    clamp: float | Array,
    want: tuple[str, ...],
) -> dict[str, Array]:
    """``logits_program`` for probabilities (NAMES with "probs" first; no curvature). The log
    clamp and the smoothing are runtime values: one compilation serves every clamp and eps."""
    _check_outputs("probs_program", want, ("probs", *NAMES[1:]), curvature=False)
    args = (p, y, w, q, mask, denominator, smoothing, reduction, clamp)
    return _probs_body(*args, want, scaled=False)


def _probs_body(
    p: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    denominator: float | Array | None,
    smoothing: Array | None,
    reduction: str,
    clamp: float | Array,
    want: tuple[str, ...],
    *,
    scaled: bool,
) -> dict[str, Array]:
    """``probs_program``'s outputs; ``scaled`` as in ``_logits_body``."""
    dtype, work = p.dtype, working_dtype(p.dtype)
    operands = _with_data_rule(*(_up(v, work) for v in (p, y, w, q)))
    plan = Plan.of(
        reduction, p.shape, mask=mask, weight=operands[2], dtype=work, denominator=denominator
    )._replace(scaled=scaled)
    eps = 0.0 if smoothing is None else smoothing

    def rescaled() -> Array:
        args = (p, y, w, q, mask, denominator, smoothing, reduction, clamp)
        return _probs_body(*args, ("loss",), scaled=True)["loss"]

    outputs_of = partial(_probs_outputs, eps, clamp)
    return _evaluate(outputs_of, ("probs", *NAMES[1:]), operands, plan, want, dtype, rescaled)


# -- which outputs a call computes ------------------------------------------------------------


class Form(NamedTuple):
    """A form of the loss (from logits or from probabilities) and its program."""

    #: The arguments with gradients, in their canonical order (the input first).
    names: tuple[str, ...]
    #: (x, y, w, q, mask, *, want, **options) -> {output: array} (see logits_program).
    program: Callable[..., dict[str, Array]]
    #: Whether the program has a "curvature" output.
    curvature: bool


LOGITS = Form(NAMES, logits_program, True)
PROBS = Form(("probs", *NAMES[1:]), probs_program, False)

#: Static options of a call, as a hashable tuple of (name, value) pairs.
Options = tuple[tuple[str, Any], ...]


def _all_outputs(
    form: Form, x: Array, w: Array | None, q: Array | None, reduction: str
) -> tuple[str, ...]:
    keys = ["loss", f"grad:{form.names[0]}", "grad:targets"]
    for name, value in (("weight", w), ("pos_weight", q)):
        if value is not None:
            keys.append(f"grad:{name}")
            if reduction == "none" and np.shape(value) != np.shape(x):
                keys.append(f"full:{name}")
    return (*keys, "curvature") if form.curvature else tuple(keys)


def _rounded_up(form: Form, want: tuple[str, ...], everything: tuple[str, ...]) -> tuple[str, ...]:
    """The outputs a large eager call computes for ``want``: a gradient other than the input's
    brings every gradient (and the loss), and the curvature the input's gradient. Those calls
    are rare next to the loss and the input's gradient, which keep programs of their own; so
    JAX's eager derivatives and ``grad_hess`` share the compilations of ``value_and_grad``.

    >>> _rounded_up(LOGITS, ("loss", "grad:targets"), _all_outputs(LOGITS, np.zeros(3), None,
    ...                                                            None, "sum"))
    ('loss', 'grad:logits', 'grad:targets')
    >>> _rounded_up(LOGITS, ("curvature",), _all_outputs(LOGITS, np.zeros(3), None, None, "none"))
    ('grad:logits', 'curvature')
    """
    own = f"grad:{form.names[0]}"
    chosen = set(want)
    if any(key.startswith(("grad:", "full:")) and key != own for key in want):
        chosen.update(key for key in everything if key == "loss" or key.startswith("grad:"))
    if "curvature" in want:
        chosen.add(own)
    # In the order of ``everything``, so that the same outputs make the same program.
    return (*(k for k in everything if k in chosen), *(k for k in want if k not in everything))


def outputs(
    form: Form,
    x: Array,
    y: Array,
    w: Array | None,
    q: Array | None,
    mask: Array | None,
    options: Options,
    want: tuple[str, ...],
) -> dict[str, Array]:
    """The program's outputs ``want`` (and for small inputs, every output; for large eager
    ones, see ``_rounded_up``)."""
    kwargs = dict(options)
    reduction = kwargs["reduction"]
    everything = _all_outputs(form, x, w, q, reduction)
    if np.size(x) <= SMALL:
        if all(key in everything for key in want):
            want = everything
    elif not any(isinstance(a, jax.core.Tracer) for a in (x, y, w, q, mask)):
        want = _rounded_up(form, want, everything)
    denominator = None
    if reduction in SCALED_REDUCTIONS:  # one program for the three, the denominator an input
        kwargs["reduction"] = SCALED
        denominator = runtime_denominator(reduction, np.shape(x), masked=mask is not None)
    smoothing = smoothing_input(kwargs.pop("eps"), working_dtype(x.dtype))
    return form.program(x, y, w, q, mask, denominator, smoothing, want=want, **kwargs)


@lru_cache(maxsize=256)
def _smoothing_values(eps: float, dtype: str) -> np.ndarray:
    values = np.asarray(Smoothing.values(eps, np.dtype(dtype)), dtype)
    values.flags.writeable = False  # shared by every call with this eps
    return values


def smoothing_input(eps: float, dtype: np.dtype[Any]) -> np.ndarray | None:
    """The runtime input of a program for label smoothing ``eps`` in the working ``dtype``:
    ``Smoothing.values`` (1 - eps and eps / 2 as pairs, exact as compiled-in constants are),
    or None for no smoothing. Made once per value (the exact constants take Fractions).

    >>> smoothing_input(0.5, np.dtype(np.float32)).tolist(), smoothing_input(0.0, np.float32)
    ([0.5, 0.0, 0.25, 0.0], None)
    """
    return None if eps == 0.0 else _smoothing_values(float(eps), np.dtype(dtype).name)
