"""Special values, drawn by Hypothesis, on every backend against the reference.

Each example is a small call (1 to 6 elements) whose operands mix ordinary values with the
values where implementations break: ±0, ±inf, NaN, the smallest subnormal and other
subnormals, the smallest normal number, the dtype's largest values (and values beyond them,
which the cast to the dtype makes infinite), and large logits such as ±40, ±100 and ±1e4;
targets of 0, 1, soft values, NaN, ±inf and values outside [0, 1]; an optional weight,
pos_weight (0, subnormal, huge, inf and NaN among them) and mask; a label smoothing, a
reduction and (probability form) a log clamp. Every dtype of the spec is drawn.

The expected values are the float64 reference's (``bce_core.reference``) on the inputs as
cast to the dtype. In float64 the reference itself can overflow where the exact value is
finite (a product or a sum past 1.8e308), so there the exact mpmath oracle of the
conformance suite gives them. A backend's result then passes under the spec's written rules,
the conformance suite's parity rule (``bce_conformance.checks.compare``):

- NaN where the expected value is NaN, the same infinity where it is infinite (or where the
  exact value is beyond the dtype's largest finite number);
- elsewhere within 8 units of eps(dtype) times the magnitudes of the terms a stable formula
  adds, plus the summation error of a reduction, and an absolute floor of the smallest
  normal number: a result below it may come back as 0 (the flush-to-zero allowance);
- the result in the input's dtype.

Unreduced losses and logit gradients of finite data with targets in [0, 1] are also graded
in ULP against the oracle: the README's 4 ULP (the gradient of soft targets at its larger
term), flush-to-zero allowed.

The examples are derandomized, so every run draws the same ones; a failure names the backend
and dtype, and Hypothesis shrinks it to a minimal call, printed as code to run. JAX and
TensorFlow compile a program per structure (size, operands present and their shapes, mask,
reduction), so they draw fewer calls, on two structures that pass every operand or none;
NumPy and PyTorch draw any structure.

Where a backend disagrees with the spec today, ``finding_of`` names the kind of mismatch by
changing what the kind names (flushing the subnormal operands, say) and seeing it go; KNOWN
lists the (backend, kind) pairs tolerated, and ``test_known_finding`` holds each to a
minimal reproduction under a strict xfail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from native_backends import BACKEND_FRAMEWORKS, float64_enabled, installed_backend, to_numpy

from bce_conformance import golden
from bce_conformance.cases import Case, numpy_dtype
from bce_conformance.checks import LARGEST, Comparison, compare, gradient_scale, reduced_scale
from bce_core import reference
from bce_core.arrays import reduce_loss
from bce_core.plugin import AutodiffBackend, Backend
from bce_core.spec import REDUCTIONS

DTYPES = ("float16", "bfloat16", "float32", "float64")
BACKENDS = tuple(BACKEND_FRAMEWORKS)
#: The README's accuracy of unreduced losses and logit gradients, in ULP of the dtype.
GRADED_ULP = 4.0
#: Above this magnitude float64 products and sums of the operands may overflow float64 in the
#: reference while the exact value is finite: the oracle gives the expected values there.
FLOAT64_OVERFLOW_RISK = 2.0**500

#: The kinds of mismatch ``finding_of`` names.
EPS_ONE = "d/dtargets at label_smoothing=1 is 0, not NaN, for non-finite data"
SUBNORMAL = "a subnormal operand taken as 0"
OVERFLOW = "a weighted element loss overflows before the mean's division, the mean finite"
FLUSHED_FACTOR = "weighted_mean gradient 0: 1 / sum(weight) is subnormal and flushed"
NEGATIVE_SUBNORMAL_P = "negative subnormal probability read as in [0, 1]"
INFINITE_WEIGHT_MEAN = "weighted_mean with an infinite weight is 0, not NaN"
PROBS_SLOPE_NAN = "d/dprobs NaN at p = 0 where q * y' overflows (0 * inf)"

#: Where a backend disagrees with the spec today, by (backend, finding): what differs. A
#: mismatch that ``finding_of`` names precisely, on a backend listed here, is tolerated by the
#: property tests; ``test_known_finding`` holds each entry to a minimal reproduction with a
#: strict xfail, so a fix shows up there (remove the entry then).
KNOWN: dict[tuple[str, str], str] = {
    **{
        (name, EPS_ONE): "the target slope 1 - eps = 0 is taken as a zero coefficient, which "
        "overrides the NaN of the rule for non-finite data (only a weight of 0 may)"
        for name in BACKENDS
    },
    ("tensorflow", SUBNORMAL): "TensorFlow's CPU kernels read subnormal operands as 0: a "
    "subnormal weight of an infinite or NaN element gives 0",
    ("jax", SUBNORMAL): "XLA on CPU reads subnormal operands as 0: a subnormal weight of an "
    "infinite or NaN element gives 0",
    ("torch", SUBNORMAL): "w * y' (a subnormal weight times the smoothed target) underflows "
    "to 0 and is then taken as a zero coefficient of softplus(-x) = inf",
    ("numpy", SUBNORMAL): "d/dpos_weight: w * y' underflows to 0 and is then taken as a zero "
    "coefficient of softplus(-x) = inf",
    ("tensorflow", NEGATIVE_SUBNORMAL_P): "with a non-finite target, weight or pos_weight "
    "in the call, the rule for non-finite data rewrites the probabilities, which flushes a "
    "negative subnormal p to -0: its loss is -0 and its gradient 0, not NaN",
    **{
        (name, FLUSHED_FACTOR): "the factor 1 / sum(weight) of weighted_mean is below the "
        "smallest normal number where sum(weight) > 2**126 and is flushed to 0 (XLA and "
        "TensorFlow on CPU): every gradient is 0"
        for name in ("jax", "tensorflow")
    },
    **{
        (name, PROBS_SLOPE_NAN): "the slope's p * (1 - y' + q y') is 0 * inf where q * y' "
        "overflows the working dtype (a target above 1, q near the largest value): NaN where "
        "the exact slope is beyond the largest finite value (-inf)"
        for name in ("torch", "jax", "tensorflow")
    },
    **{
        (name, OVERFLOW): "a weighted element loss (w softplus(x)) beyond the working dtype's "
        "largest value is inf before the division (the sums themselves are rescaled where "
        "they overflow): inf where the exact mean is finite"
        for name in ("torch", "jax", "tensorflow")
    },
}


#: Calls drawn per backend, form and dtype: fewer where each new structure compiles.
EXAMPLES = {"numpy": 40, "torch": 40, "jax": 8, "tensorflow": 8, "array_api": 40}
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- values -----------------------------------------------------------------------------------


def finfo(dtype: str) -> Any:
    """NumPy's finfo, or ml_dtypes' for bfloat16."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(dtype)


def cast(values: Any, dtype: str) -> np.ndarray:
    """Float64 values rounded to ``dtype`` (those beyond its range become ±inf, quietly)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, np.float64).astype(numpy_dtype(dtype))


def _in_dtype(value: float, dtype: str) -> float:
    return float(cast(value, dtype))


def tiny_values(dtype: str) -> list[float]:
    """±0, the smallest subnormal, a middle and the largest subnormal, the smallest normal."""
    f = finfo(dtype)
    sub, normal = float(f.smallest_subnormal), float(f.tiny)
    return [0.0, -0.0, sub, -sub, _in_dtype(normal / 3, dtype), normal - sub, normal, -normal]


def huge_values(dtype: str) -> list[float]:
    """The largest finite values, the one below, and (below float64) one that rounds to inf."""
    f = finfo(dtype)
    largest = float(f.max)
    below = float(np.nextafter(cast(largest, dtype), cast(0.0, dtype)))
    beyond = [LARGEST[dtype]] if np.isfinite(LARGEST[dtype]) else []
    return [largest, -largest, below, -below, *beyond]


NON_FINITE = [np.inf, -np.inf, np.nan]


def logit_pool(dtype: str) -> list[float]:
    large = [40.0, -40.0, 100.0, -100.0, 1e4, -1e4, 20.0, -20.0, 1e-30]
    return [*tiny_values(dtype), *NON_FINITE, *huge_values(dtype), *large]


def target_pool(dtype: str) -> list[float]:
    below_one = float(np.nextafter(cast(1.0, dtype), cast(0.0, dtype)))
    soft = [0.5, 0.25, 0.9, below_one, float(finfo(dtype).smallest_subnormal)]
    return [0.0, 1.0, *soft, *NON_FINITE, -0.5, 1.5, 2.0, -3.0, -0.0]


def weight_pool(dtype: str) -> list[float]:
    f = finfo(dtype)
    return [0.0, -0.0, float(f.smallest_subnormal), float(f.tiny), 0.5, 1.0, 2.0, 1e4]


def big_weight_pool(dtype: str) -> list[float]:
    return [float(finfo(dtype).max), np.inf, np.nan]


def probs_pool(dtype: str) -> list[float]:
    one = cast(1.0, dtype)
    below_one = float(np.nextafter(one, cast(0.0, dtype)))
    above_one = float(np.nextafter(one, cast(2.0, dtype)))
    sub = float(finfo(dtype).smallest_subnormal)
    inside = [0.0, 1.0, sub, float(finfo(dtype).tiny), 1e-30, 1e-8, 1e-3, 0.25, 0.5, 0.75]
    inside += [1 - 1e-3, below_one, -0.0]
    return [*inside, above_one, -sub, -0.5, 1.5, *NON_FINITE]


def values(pool: list[float], ordinary: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """Mostly special values, some ordinary ones."""
    return st.one_of(st.sampled_from(pool), st.sampled_from(pool), ordinary)


# -- cases ------------------------------------------------------------------------------------


@dataclass
class Drawn:
    """One drawn call: the arrays (in the dtype) and the options."""

    form: str  # "logits" or "probs"
    dtype: str
    arrays: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[self.form].shape)

    @property
    def eps(self) -> float:
        return float(self.options.get("label_smoothing", 0.0))

    @property
    def reduction(self) -> str:
        return str(self.options.get("reduction", "mean"))

    @property
    def wrt(self) -> tuple[str, ...]:
        return ("logits", "targets", *(n for n in ("weight", "pos_weight") if n in self.arrays))

    def __repr__(self) -> str:
        """The call as code to run (the values print exactly: float64 holds every dtype)."""
        dtype = "ml_dtypes.bfloat16" if self.dtype == "bfloat16" else f"np.{self.dtype}"
        args = []
        for name, value in self.arrays.items():
            if value.dtype == bool:
                args.append(f"{name}=np.array({value.tolist()})")
            else:
                listed = [float(v) for v in np.asarray(value, np.float64).ravel()]
                text = repr(listed).replace("nan", "np.nan").replace("inf", "np.inf")
                args.append(f"{name}=np.array({text}, {dtype}).reshape({value.shape})")
        args += [f"{k}={v!r}" for k, v in self.options.items()]
        function = "value_and_grad" if self.form == "logits" else "binary_cross_entropy"
        return f"{function}({', '.join(args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis prints a failing example with this

    def v(self) -> dict[str, Any]:
        """x, y, w, q in float64 (1.0 for an absent weight or pos_weight), as the spec sees them."""

        def as64(name: str) -> Any:
            value = self.arrays.get(name)
            return 1.0 if value is None else np.asarray(value).astype(np.float64)

        return {"x": as64(self.form), "y": as64("targets"), "w": as64("weight"),
                "q": as64("pos_weight")}  # fmt: skip

    def factor(self) -> Any:
        """d(reduced loss)/d(element loss) per element."""
        with np.errstate(all="ignore"):
            return reduce_loss(
                np.ones(self.shape), self.reduction, mask=self.arrays.get("mask"),
                weight=self.v()["w"],
            ).factor  # fmt: skip

    def case(self) -> Case:
        """The conformance Case of this call, for the oracle (its inputs are ours)."""
        clamp = self.options.get("log_clamp")
        return Case(self.form, "edge", self.dtype, self.shape, reduction=self.reduction,
                    label_smoothing=self.eps, log_clamp=clamp)  # fmt: skip

    def oracle(self) -> golden.Expected:
        with np.errstate(all="ignore"):
            return golden._expected(self.case(), self.arrays)

    def needs_oracle(self) -> bool:
        """Whether float64 products or sums may overflow in the float64 reference."""
        if self.dtype != "float64":
            return False
        for name, value in self.arrays.items():
            if name != "mask":
                finite = np.abs(value[np.isfinite(value)])
                if finite.size and finite.max() > FLOAT64_OVERFLOW_RISK:
                    return True
        return False

    def graded(self) -> bool:
        """Whether the unreduced results are held to the README's ULP accuracy: every operand
        finite, targets in [0, 1], no mask."""
        if self.reduction != "none" or "mask" in self.arrays or self.form != "logits":
            return False
        finite = all(np.all(np.isfinite(a)) for n, a in self.arrays.items() if n != "mask")
        y = self.arrays["targets"].astype(np.float64)
        return bool(finite and np.all((y >= 0) & (y <= 1)))


@dataclass(frozen=True)
class Structure:
    """What a compiled program is specialised on: the size, which operands are passed and
    their shapes ("full", "one" for (1,), "scalar" for ()), the mask and the reduction."""

    n: int
    weight: str | None
    pos_weight: str | None
    mask: bool
    reduction: str

    def shape(self, kind: str | None) -> tuple[int, ...]:
        return {"full": (self.n,), "one": (1,), "scalar": ()}[str(kind)]


#: The structures drawn for backends that compile a program per structure (each new one costs
#: a compilation of a fraction of a second): few, each passing many operands.
COMPILED_STRUCTURES = (
    Structure(6, "full", "one", True, "weighted_mean"),
    Structure(4, None, None, False, "none"),
)
COMPILING = ("jax", "tensorflow")
SHAPES = st.sampled_from(["full", "one", "scalar"])


def structures(name: str) -> st.SearchStrategy[Structure]:
    if name in COMPILING:
        return st.sampled_from(COMPILED_STRUCTURES)
    return st.builds(Structure, st.integers(1, 6), st.none() | SHAPES, st.none() | SHAPES,
                     st.booleans(), st.sampled_from(REDUCTIONS))  # fmt: skip


def _operand(draw: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    pool = weight_pool(dtype) + (big_weight_pool(dtype) if draw(st.booleans()) else [])
    ordinary = st.floats(0.0, 4.0, width=32)
    size = shape[0] if shape else 1
    flat = draw(st.lists(values(pool, ordinary), min_size=size, max_size=size))
    return cast(flat, dtype).reshape(shape)


@st.composite
def drawn_calls(draw: Any, form: str, dtype: str, name: str) -> Drawn:
    """A call of the ``form`` in ``dtype``, with a structure that suits the backend ``name``."""
    shape = draw(structures(name))
    n = shape.n
    if form == "logits":
        x = draw(st.lists(values(logit_pool(dtype), st.floats(-8, 8, width=32)), min_size=n,
                          max_size=n))  # fmt: skip
    else:
        x = draw(st.lists(values(probs_pool(dtype), st.floats(0, 1, width=32)), min_size=n,
                          max_size=n))  # fmt: skip
    y = draw(st.lists(values(target_pool(dtype), st.floats(0, 1, width=32)), min_size=n,
                      max_size=n))  # fmt: skip
    arrays = {form: cast(x, dtype), "targets": cast(y, dtype)}
    for operand in ("weight", "pos_weight"):
        kind = getattr(shape, operand)
        if kind is not None:
            arrays[operand] = _operand(draw, shape.shape(kind), dtype)
    if shape.mask:
        arrays["mask"] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    options: dict[str, Any] = {
        "reduction": shape.reduction,
        "label_smoothing": draw(st.sampled_from([0.0, 0.1, 0.3, 1.0])),
    }
    if form == "probs":
        clamp = draw(st.sampled_from([None, -100.0, -np.inf, -10.0, -0.5, 0.0]))
        if clamp is not None:
            options["log_clamp"] = clamp
    return Drawn(form, dtype, arrays, options)


# -- expected values --------------------------------------------------------------------------


@dataclass
class Expected:
    loss: np.ndarray
    grads: dict[str, np.ndarray]


def _with_oracle(d: Drawn, ref: Expected) -> Expected:
    """In float64 near the largest values: the oracle's exact values where the reference is
    not NaN (it overflows where the exact value is finite). The oracle knows no rule for
    non-finite data, so it sees the logits as that rule makes them (NaN at such elements),
    and the reference's NaN, which follow the rule, are kept."""
    arrays = dict(d.arrays)
    data = [arrays[n] for n in ("targets", "weight", "pos_weight") if n in arrays]
    bad = np.zeros(d.shape, bool)
    for value in data:
        bad = bad | ~np.isfinite(np.broadcast_to(value, d.shape))
    arrays[d.form] = np.where(bad, np.nan, arrays[d.form]).astype(arrays[d.form].dtype)
    with np.errstate(all="ignore"):
        exact = golden._expected(Drawn(d.form, d.dtype, arrays, d.options).case(), arrays)

    def pick(reference_value: np.ndarray, oracle_value: np.ndarray) -> np.ndarray:
        either = np.isnan(reference_value) | np.isnan(oracle_value)
        return np.where(either, reference_value, oracle_value)

    return Expected(
        pick(ref.loss, exact.loss), {k: pick(g, exact.grads[k]) for k, g in ref.grads.items()}
    )


def expected_logits(d: Drawn) -> Expected:
    a = d.arrays
    loss, grads = reference.value_and_grad(
        a["logits"], a["targets"], weight=a.get("weight"), pos_weight=a.get("pos_weight"),
        mask=a.get("mask"), wrt=d.wrt, **d.options,
    )  # fmt: skip
    ref = Expected(np.asarray(loss), dict(zip(d.wrt, grads)))
    if d.eps == 1.0:
        # d/dy carries the coefficient 1 - eps = 0: the reference's 0 * inf at an infinite
        # logit is NaN, where the zero-coefficient rule (and the oracle) give 0. Elements with
        # non-finite data stay NaN, by the rule for non-finite data.
        v = d.v()
        finite = np.isfinite(v["y"]) & np.isfinite(v["w"]) & np.isfinite(v["q"])
        infinite_x = np.isinf(v["x"]) & finite
        ref.grads["targets"] = np.where(infinite_x, 0.0, ref.grads["targets"])
    return _with_oracle(d, ref) if d.needs_oracle() else ref


def expected_probs(d: Drawn) -> Expected:
    a = d.arrays
    operands = {k: a[k] for k in ("weight", "pos_weight", "mask") if k in a}
    loss = reference.binary_cross_entropy(a["probs"], a["targets"], **operands, **d.options)
    slope = reference.probs_grad(
        a["probs"], a["targets"], weight=a.get("weight"), pos_weight=a.get("pos_weight"),
        label_smoothing=d.eps,
    )  # fmt: skip
    factor = d.factor()
    with np.errstate(all="ignore"):  # a factor of 0 (masked out, zero denominator) gives 0
        grad = np.where(np.equal(factor, 0), 0.0, slope * factor)
    ref = Expected(np.asarray(loss), {"probs": np.broadcast_to(grad, d.shape)})
    return _with_oracle(d, ref) if d.needs_oracle() else ref


EXPECTED = {"logits": expected_logits, "probs": expected_probs}


# -- findings ---------------------------------------------------------------------------------


def _working_largest(dtype: str) -> float:
    """The largest finite number of the dtype a backend computes ``dtype`` in."""
    return float(finfo("float32" if dtype in ("float16", "bfloat16") else dtype).max)


def _flushed(d: Drawn) -> Drawn:
    """``d`` with every subnormal operand replaced by a zero of its sign."""
    arrays = {}
    for name, value in d.arrays.items():
        if name != "mask":
            as64 = value.astype(np.float64)
            subnormal = (as64 != 0) & (np.abs(as64) < float(finfo(d.dtype).tiny))
            value = cast(np.where(subnormal, np.copysign(0.0, as64), as64), d.dtype)
        arrays[name] = value
    return Drawn(d.form, d.dtype, arrays, d.options)


def _passes(d: Drawn, quantity: str, got: np.ndarray, want: Expected) -> bool:
    with np.errstate(all="ignore"):
        return all(c.passed for c in comparisons(d, {quantity: got}, want))


def name_of(quantity: str) -> str:
    """The argument a gradient's quantity name is taken with respect to."""
    return quantity[:-1].split("[")[1]


def finding_of(d: Drawn, quantity: str, got: np.ndarray, want: Expected) -> str | None:
    """The name of a known kind of mismatch, when this one is precisely of that kind (each is
    checked by changing what the kind names and seeing the mismatch go)."""
    v = d.v()
    expected = want.loss if quantity.endswith("loss") else want.grads[name_of(quantity)]
    if d.form == "probs":
        p = v["x"]
        negative_subnormal = (p < 0) & (p > -float(finfo(d.dtype).tiny))
        if negative_subnormal.any():
            moved = dict(d.arrays, probs=cast(np.where(negative_subnormal, -0.0, p), d.dtype))
            if _passes(d, quantity, got, EXPECTED["probs"](Drawn("probs", d.dtype, moved,
                                                                 d.options))):  # fmt: skip
                return NEGATIVE_SUBNORMAL_P
    if (
        quantity.endswith("loss")
        and d.reduction == "weighted_mean"
        and np.isinf(np.where(np.broadcast_to(d.arrays.get("mask", True), d.shape),
                              np.broadcast_to(v["w"], d.shape), 0.0)).any()
        and np.all(np.isnan(expected))
        and np.all(got == 0)
    ):  # fmt: skip
        return INFINITE_WEIGHT_MEAN
    if d.form == "probs" and quantity.endswith("grad[probs]"):
        beyond = np.isnan(got) & (np.abs(expected) > _working_largest(d.dtype))
        at_zero = np.broadcast_to(v["x"] == 0, d.shape)
        if beyond.any() and np.all(at_zero[beyond]):
            if _passes(d, quantity, np.where(beyond, expected, got), want):
                return PROBS_SLOPE_NAN
    if quantity.endswith("grad[targets]") and d.eps == 1.0:
        nan_as_zero = np.where(np.isnan(expected) & (got == 0), np.nan, got)
        if _passes(d, quantity, nan_as_zero, want):
            return EPS_ONE
    if d.reduction == "weighted_mean" and "weight" in d.arrays:
        keep = np.broadcast_to(d.arrays.get("mask", True), d.shape)
        total = np.sum(np.where(keep, np.broadcast_to(v["w"], d.shape), 0.0))
        if np.isfinite(total) and total > 1 / float(finfo(d.dtype).tiny) / 2:
            zero_as_expected = np.where((got == 0) & np.isfinite(expected), expected, got)
            if not quantity.endswith("loss") and _passes(d, quantity, zero_as_expected, want):
                return FLUSHED_FACTOR
    if d.reduction in ("mean", "weighted_mean", "batch_mean"):
        overflowed = np.isinf(got) & np.isfinite(expected)
        if overflowed.any():
            summed = Drawn(d.form, d.dtype, d.arrays, dict(d.options, reduction="sum"))
            with np.errstate(all="ignore"):
                sums = EXPECTED[d.form](summed)
            total = sums.loss if quantity.endswith("loss") else sums.grads[name_of(quantity)]
            largest = _working_largest(d.dtype)
            elsewhere = np.where(overflowed, expected, got)
            if np.all(np.abs(total[overflowed]) > largest) and _passes(
                d, quantity, elsewhere, want
            ):
                return OVERFLOW
    flushed = _flushed(d)
    if flushed.arrays.keys() == d.arrays.keys() and any(
        not np.array_equal(a, b, equal_nan=True)
        for a, b in zip(flushed.arrays.values(), d.arrays.values())
    ):
        if _passes(d, quantity, got, EXPECTED[d.form](flushed)):
            return SUBNORMAL
    return None


# -- the backend's results --------------------------------------------------------------------


def _native(backend: Backend, d: Drawn) -> tuple[list[Any], dict[str, Any]]:
    a = d.arrays
    native = {k: backend.asarray(v) for k, v in a.items()}
    operands = {k: native[k] for k in ("weight", "pos_weight", "mask") if k in native}
    return [native[d.form], native["targets"]], {**operands, **d.options}


def results(backend: Backend, d: Drawn) -> dict[str, np.ndarray]:
    """Every quantity the backend computes for ``d``, as NumPy arrays, by name."""
    args, options = _native(backend, d)
    out: dict[str, np.ndarray] = {}
    if d.form == "logits":
        out["loss"] = to_numpy(backend, backend.binary_cross_entropy_with_logits(*args, **options))
        loss, grads = backend.value_and_grad(*args, wrt=d.wrt, **options)
        out["value_and_grad loss"] = to_numpy(backend, loss)
        for name, grad in zip(d.wrt, grads):
            out[f"value_and_grad grad[{name}]"] = to_numpy(backend, grad)
    else:
        out["loss"] = to_numpy(backend, backend.binary_cross_entropy(*args, **options))
        if isinstance(backend, AutodiffBackend):
            loss, grad = backend.autodiff_probs_grad(*args, compiled=False, **options)
            out["autodiff loss"] = to_numpy(backend, loss)
            out["autodiff grad[probs]"] = to_numpy(backend, grad)
    return out


def _scales(d: Drawn, loss: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-element magnitudes of the terms a stable formula adds, for the element loss and for
    each derivative (``checks.logit_scales`` and ``checks.probs_loss_scale``, made zero-safe:
    a coefficient of exactly 0, a weight of 0 among them, contributes 0 to the scale even
    times an infinite or NaN value, as it does to the result)."""
    v = d.v()
    yp, one_minus = reference.smoothed_targets(v["y"], d.eps)
    aw, q, term = np.abs(v["w"]), v["q"], reference.term
    positive, negative = np.abs(one_minus), np.abs(q * yp)
    if d.form == "probs":
        p = v["x"]
        clamp = float(d.options.get("log_clamp", -100.0))
        log_p = np.abs(np.maximum(np.log(p), clamp))
        log_1mp = np.abs(np.maximum(np.log1p(-p), clamp))
        bracket = term(negative, log_p) + term(positive, log_1mp) + negative + positive
        slope = (np.abs(p) * (positive + negative) + negative) / np.maximum(
            np.abs(p * (1 - p)), 1e-12
        )
        return term(aw, bracket), {"probs": term(aw, slope)}
    # An infinite logit gives exact results (0, inf, or a gradient of rounded coefficients,
    # whose scale does not involve x): its scale is that of x = 0.
    x = np.where(np.isinf(v["x"]), 0.0, v["x"])
    sp_pos, sp_neg = reference.softplus(x), reference.softplus(-x)
    bracket = term(positive, sp_pos) + term(negative, sp_neg) + np.abs(x) + positive + negative
    # weighted_mean: d/dw = (bracket - loss) / sum(w)
    weight = bracket + (np.abs(loss) if d.reduction == "weighted_mean" else 0.0)
    return term(aw, bracket), {
        "logits": term(aw, positive + negative),
        "targets": term(aw, (1 - d.eps) * (term(np.abs(q), sp_neg) + sp_pos)),
        "weight": weight,
        "pos_weight": term(aw, term(np.abs(yp), sp_neg + np.abs(x) + 1)),
    }


def comparisons(d: Drawn, got: dict[str, np.ndarray], want: Expected) -> list[Comparison]:
    """The spec's parity rule on every quantity."""
    element_loss_scale, element_scales = _scales(d, want.loss)
    loss_scale, terms = reduced_scale(
        element_loss_scale, d.reduction, d.arrays.get("mask"), d.v()["w"]
    )
    factor = d.factor()
    out = []
    for quantity, value in got.items():
        if quantity.endswith("loss"):
            out.append(compare(quantity, value, want.loss, _finite(loss_scale), d.dtype, terms))
        else:
            name = quantity.split("[")[1].rstrip("]")
            expected = want.grads[name]
            scale, count = gradient_scale(element_scales[name], factor, expected.shape)
            out.append(compare(quantity, value, expected, _finite(scale), d.dtype, count))
    return out


def _finite(scale: Any) -> Any:
    """A scale that overflowed float64 (operands near its largest value) as its largest: an
    infinite expected value is matched exactly whatever the scale."""
    return np.minimum(scale, np.finfo(np.float64).max)


def ulp_failures(d: Drawn, got: dict[str, np.ndarray]) -> list[str]:
    """Unreduced losses and logit gradients beyond GRADED_ULP of the oracle's exact values."""
    exact = d.oracle()
    failures = []
    graded = {"loss": exact.exact_elements, "value_and_grad grad[logits]": exact.exact_grads}
    for quantity, values in graded.items():
        assert values is not None
        errors = values.errors(got[quantity])
        if errors.max(initial=0.0) > GRADED_ULP:
            i = int(np.argmax(errors))
            failures.append(
                f"{quantity} at index {i}: got {float(got[quantity].ravel()[i])!r}, exact "
                f"{values.high[i]!r}: {errors[i]:.3g} ULP (allowed {GRADED_ULP:g})"
            )
    return failures


def problems_of(name: str, d: Drawn, *, tolerate: bool = True) -> list[str]:
    """What the backend ``name`` gets wrong on ``d``; with ``tolerate``, less the mismatches
    that are a KNOWN finding of that backend."""
    backend = installed_backend(name)
    with float64_enabled(name):
        got = results(backend, d)
    want = EXPECTED[d.form](d)
    problems = []
    for quantity, value in got.items():
        if np.asarray(value).dtype.name != d.dtype:
            problems.append(f"{quantity}: dtype {np.asarray(value).dtype.name}, expected {d.dtype}")
    with np.errstate(all="ignore"):  # the scales of NaN and infinite operands are NaN or inf
        checked = comparisons(d, got, want)
    for comparison in checked:
        if comparison.passed:
            continue
        finding = finding_of(d, comparison.quantity, got[comparison.quantity], want)
        if tolerate and (name, finding) in KNOWN:
            continue
        named = f" [{finding}]" if finding else ""
        problems.append(f"{comparison.quantity}: {comparison.detail}{named}")
    if d.graded():
        problems += ulp_failures(d, got)
    return problems


def check(name: str, d: Drawn) -> None:
    problems = problems_of(name, d)
    assert not problems, f"{name} {d.dtype}, {d!r}:\n  " + "\n  ".join(problems)


def _call(form: str, dtype: str, options: dict[str, Any], **arrays: Any) -> Drawn:
    native = {k: v if k == "mask" else cast(v, dtype) for k, v in arrays.items()}
    return Drawn(form, dtype, native, options)


SUB32 = float(np.finfo(np.float32).smallest_subnormal)
#: A minimal call that shows each finding, by finding (and by backend where they differ).
REPRODUCTIONS: dict[tuple[str, str | None], Drawn] = {
    (EPS_ONE, None): _call("logits", "float32", {"reduction": "none", "label_smoothing": 1.0},
                        logits=[0.0], targets=[np.inf]),  # fmt: skip
    (SUBNORMAL, None): _call("logits", "float32", {"reduction": "none", "label_smoothing": 0.1},
                             logits=[-np.inf], targets=[0.0], weight=[SUB32]),  # fmt: skip
    (SUBNORMAL, "numpy"): _call("logits", "float64", {"reduction": "none"}, logits=[-np.inf],
                                targets=[0.5], weight=[5e-324], pos_weight=[1.0]),  # fmt: skip
    (OVERFLOW, None): _call("logits", "float32", {"reduction": "mean"}, logits=[3e38, 0.0],
                            targets=[0.0, 0.0], weight=[2.0, 1.0]),
    (NEGATIVE_SUBNORMAL_P, None): _call("probs", "float32", {"reduction": "none"},
                                        probs=[-SUB32, 0.5], targets=[0.0, np.inf]),
    (INFINITE_WEIGHT_MEAN, None): _call("logits", "float32", {"reduction": "weighted_mean"},
                                        logits=[1.0, 2.0], targets=[0.0, 1.0],
                                        weight=[np.inf, 1.0]),
    (PROBS_SLOPE_NAN, None): _call("probs", "float32", {"reduction": "none"}, probs=[0.0],
                                   targets=[1.5], pos_weight=[3.4028234663852886e38]),
    (FLUSHED_FACTOR, None): _call("logits", "float32", {"reduction": "weighted_mean"},
                                  logits=[1.0, 2.0], targets=[0.0, 1.0], weight=[2e38, 1.0]),
}  # fmt: skip


def reproduction(name: str, finding: str) -> Drawn:
    return REPRODUCTIONS.get((finding, name), REPRODUCTIONS[(finding, None)])


# -- the tests --------------------------------------------------------------------------------


def _needs_dtype(dtype: str) -> None:
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 arrays in NumPy need ml_dtypes")


def run_property(name: str, dtype: str, form: str) -> None:
    """The property on ``name`` in ``dtype``: derandomized, EXAMPLES[name] calls."""
    _needs_dtype(dtype)
    installed_backend(name)

    @settings(SETTINGS, max_examples=EXAMPLES[name])
    @given(call=drawn_calls(form, dtype, name))
    def holds(call: Drawn) -> None:
        check(name, call)

    for call in explicit_calls(form, dtype):
        holds = example(call=call)(holds)
    holds()


def explicit_calls(form: str, dtype: str) -> list[Drawn]:
    """Calls run on every backend besides the drawn ones, in the first compiled structure (so
    they cost no compilation): the rule for non-finite data in a weighted mean."""
    inside = [1.0, 2.0, 0.0, -3.0, 0.5, 1.0] if form == "logits" else [0.1, 0.2, 0.0, 1.0, 0.5, 0.9]
    options = {"reduction": "weighted_mean", "label_smoothing": 0.1}
    mask = np.array([True, True, True, True, False, True])
    return [
        _call(form, dtype, options, **{form: inside}, targets=[0.0, 1.0, 0.5, 1.0, 0.0, 0.25],
              weight=weight, pos_weight=[2.0], mask=mask)
        for weight in ([np.inf, 1, 1, 1, 1, 1], [1, np.nan, 1, 1, 1, 1], [1, 1, 1, 1, np.inf, 1])
    ]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_logits_form_special_values(name: str, dtype: str) -> None:
    run_property(name, dtype, "logits")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_probability_form_special_values(name: str, dtype: str) -> None:
    run_property(name, dtype, "probs")


@pytest.mark.parametrize(
    "name,finding",
    [
        pytest.param(*key, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                   reason=f"{key[0]}: {reason}"))
        for key, reason in KNOWN.items()
    ],
)  # fmt: skip
def test_known_finding(name: str, finding: str) -> None:
    """Each KNOWN finding on its minimal reproduction: it fails today, and every problem is
    of the kind named (a fix makes this pass, and the strict xfail fail: remove the entry)."""
    d = reproduction(name, finding)
    _needs_dtype(d.dtype)
    problems = problems_of(name, d, tolerate=False)
    unnamed = [p for p in problems if not p.endswith(f"[{finding}]")]
    if unnamed:
        raise RuntimeError(f"{name}: problems of another kind on {d!r}: {unnamed}")
    assert not problems, f"{name}, {d!r}:\n  " + "\n  ".join(problems)
