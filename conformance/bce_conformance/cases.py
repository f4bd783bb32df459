"""The case database: declarative, deterministic inputs for every rule of the spec.

A Case names its shape, dtype, value pattern, target kind, options and seed;
``Case.inputs()`` turns it into NumPy arrays, the same bits on every machine.
Case ids are stable, so a failure can be reproduced from its id alone:

>>> case = case_by_id("logits/edge/f32/(20,)/hard/mean")
>>> inputs = case.inputs()
>>> inputs["logits"].dtype.name, inputs["logits"].shape
('float32', (20,))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from bce_core.spec import DEFAULT_LOG_CLAMP, REDUCTIONS

DTYPE_ABBREVIATIONS = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
DTYPES = tuple(DTYPE_ABBREVIATIONS)

#: Period of the values of a tiled (large) case: a prime, so no block size divides it.
TILE = 61

#: The dominant last logit of a tiled case, per dtype (its loss outweighs the other elements').
LARGEST_TAIL = {"float16": 6e4, "bfloat16": 1e37, "float32": 1e37, "float64": 1e300}

#: Data outside the spec's ranges, which validate=False must compute rather than reject.
OUTSIDE_TARGETS = (-0.5, 1.5, 2.0, np.nan, 0.25, -3.0, 1.0, 0.0)
OUTSIDE_PROBS = (-0.5, 1.5, np.nan, 0.25, 2.0, -np.inf, np.inf, 0.75)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of ``name``; bfloat16 comes from ml_dtypes (ImportError when absent)."""
    if name == "bfloat16":
        import ml_dtypes  # installed with JAX and TensorFlow; the suite skips bfloat16 without it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def edge_logits(dtype: str) -> np.ndarray:
    """The logits where implementations break: zero, tiny, subnormal, tails, extremes, inf, NaN."""
    info = np.finfo(np.float32 if dtype == "bfloat16" else dtype)
    largest = (
        float(numpy_dtype(dtype).type(3.3895313892515355e38))
        if dtype == "bfloat16"
        else float(info.max)
    )
    tiny = float(info.smallest_subnormal) if dtype != "bfloat16" else 9.2e-41
    magnitudes = [0.0, 1e-30, tiny, 1.0, 20.0, 50.0, 100.0, 1e4, largest]
    values = sorted({s * m for m in magnitudes for s in (1.0, -1.0)}) + [np.inf, -np.inf, np.nan]
    return np.array(values, dtype=np.float64).astype(numpy_dtype(dtype))


def edge_probs(dtype: str) -> np.ndarray:
    """Probabilities at and near 0 and 1, where the log clamp matters."""
    values = [0.0, 1e-30, 1e-8, 1e-3, 0.25, 0.5, 0.75, 1 - 1e-3, 1 - 1e-7, 1.0]
    return np.array(values, dtype=np.float64).astype(numpy_dtype(dtype))


@dataclass(frozen=True)
class Case:
    """One conformance case: everything needed to build its inputs deterministically."""

    form: str  # "logits" or "probs"
    values: str  # "edge", "random:<scale>", "outside" (probs) or "tiled"
    dtype: str
    shape: tuple[int, ...]
    targets: str = "hard"  # "hard", "soft", "int", "bool" or "outside" ([0, 1])
    reduction: str = "mean"
    weight: tuple[int, ...] | None = None
    pos_weight: tuple[int, ...] | None = None
    mask: tuple[int, ...] | None = None
    label_smoothing: float = 0.0
    strided: bool = False  # inputs are non-contiguous views
    seed: int = 0
    #: Probability form: the log_clamp passed (None: the default, not passed).
    log_clamp: float | None = None
    validate: bool = False
    #: "nonfinite": NaN and +-inf in masked-out elements of every full-shape operand;
    #: "all": nothing is kept, and every element is non-finite.
    masked: str | None = None
    #: "compile": also run through the backend's compiler (kept few: compiling is slow).
    tags: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        shape = "(" + ",".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        parts = [
            self.form,
            self.values,
            DTYPE_ABBREVIATIONS[self.dtype],
            shape,
            self.targets,
            self.reduction,
        ]
        for name in ("weight", "pos_weight", "mask"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}{value}".replace(" ", ""))
        if self.label_smoothing:
            parts.append(f"ls{self.label_smoothing}")
        if self.strided:
            parts.append("strided")
        if self.log_clamp is not None:
            parts.append(f"clamp{self.log_clamp:g}")
        if self.validate:
            parts.append("validate")
        if self.masked:
            parts.append(f"masked-{self.masked}")
        if self.seed:
            parts.append(f"seed{self.seed}")
        return "/".join(parts)

    @property
    def log_clamp_value(self) -> float:
        """The clamp in force: the one passed, else the spec's default."""
        return DEFAULT_LOG_CLAMP if self.log_clamp is None else self.log_clamp

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def options(self) -> dict[str, Any]:
        """Keyword options of the call, without the arrays."""
        options: dict[str, Any] = {
            "label_smoothing": self.label_smoothing,
            "reduction": self.reduction,
        }
        if self.log_clamp is not None:
            options["log_clamp"] = self.log_clamp
        if self.validate:
            options["validate"] = True
        return options

    def inputs(self) -> dict[str, np.ndarray]:
        """The case's NumPy arrays: input, targets and the optional weight, pos_weight, mask."""
        if self.values == "tiled":
            return self._tiled_inputs()
        rng = np.random.default_rng([self.seed, len(self.shape), sum(self.shape)])
        size = int(np.prod(self.shape))
        dtype = numpy_dtype(self.dtype)
        if self.values == "outside":  # out-of-range data, for validate=False
            pool = OUTSIDE_PROBS if self.form == "probs" else edge_logits(self.dtype)
            flat = np.resize(np.asarray(pool, np.float64).astype(dtype), size)
        elif self.values == "edge":
            pool = edge_logits(self.dtype) if self.form == "logits" else edge_probs(self.dtype)
            flat = np.resize(pool, size) if size else pool[:0]
        else:
            scale = float(self.values.split(":")[1])
            flat = (
                rng.standard_normal(size) * scale
                if self.form == "logits"
                else rng.uniform(0.0, 1.0, size)
            ).astype(dtype)
        x = flat.astype(dtype).reshape(self.shape)
        result = {self.form: x, "targets": self._targets(rng, self.shape, dtype)}
        if self.weight is not None:
            result["weight"] = rng.uniform(0.25, 2.0, self.weight).astype(dtype)
        if self.pos_weight is not None:
            result["pos_weight"] = rng.uniform(0.5, 3.0, self.pos_weight).astype(dtype)
        if self.mask is not None:
            keep = rng.uniform(size=self.mask) < 0.7
            result["mask"] = keep
        if self.masked:
            result = self._poison_masked_out(result)
        if self.strided:
            result = {k: _strided_view(v) for k, v in result.items()}
        return result

    def _poison_masked_out(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """NaN and +-inf wherever the mask drops an element, in every full-shape float operand."""
        if self.masked == "all":
            arrays["mask"] = np.zeros(self.mask, bool)
        dropped = ~np.broadcast_to(arrays["mask"], self.shape)
        poison = np.resize(np.array([np.nan, np.inf, -np.inf]), self.shape)
        for name, value in arrays.items():
            if name != "mask" and value.shape == self.shape and value.dtype.kind == "f":
                arrays[name] = np.where(dropped, poison, value.astype(np.float64)).astype(
                    value.dtype
                )
        return arrays

    def _tiled_inputs(self) -> dict[str, np.ndarray]:
        """A large 1-d case: a pool of TILE values, element k holding entry k % TILE of each pool,
        so that the oracle runs once per pool entry. The last element is kept, finite and
        dominant (its loss outweighs the rest), so a dropped tail shows in a sum."""
        pool = Case(
            self.form,
            "random:4" if self.form == "logits" else "random:1",
            self.dtype,
            (TILE,),
            targets=self.targets,
            reduction=self.reduction,
            weight=None if self.weight is None else (TILE,),
            pos_weight=None if self.pos_weight is None else (TILE,),
            mask=None if self.mask is None else (TILE,),
            masked=self.masked,
            seed=self.seed,
        ).inputs()
        if self.form == "logits" and not self.masked:  # the tails too, where nothing is masked
            edges = edge_logits(self.dtype)
            pool["logits"][: edges.size] = edges
        index = np.arange(self.size) % TILE
        arrays = {name: value[index] for name, value in pool.items()}
        last = arrays[self.form]
        last[-1] = LARGEST_TAIL[self.dtype] if self.form == "logits" else 1.0
        arrays["targets"][-1] = 0
        if "mask" in arrays:
            arrays["mask"][-1] = True
        for name in ("weight", "pos_weight"):
            if name in arrays:
                arrays[name][-1] = 1
        return arrays

    def _targets(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        if self.targets == "outside":  # outside [0, 1] and NaN, for validate=False
            return np.resize(np.array(OUTSIDE_TARGETS), shape).astype(dtype)
        hard = rng.integers(0, 2, shape)
        if self.targets == "hard":
            return hard.astype(dtype)
        if self.targets == "int":
            return hard.astype(np.int64)
        if self.targets == "bool":
            return hard.astype(bool)
        return rng.uniform(0.0, 1.0, shape).astype(dtype)


def _strided_view(array: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view (every other element of a doubled buffer)."""
    if array.ndim == 0:
        return array
    doubled = np.repeat(array, 2, axis=-1)
    return doubled[..., ::2]


def logits_cases(dtype: str) -> list[Case]:
    """The logits-form grid for one dtype."""
    cases = [
        Case(
            "logits",
            "edge",
            dtype,
            (20,),
            targets=t,
            reduction=r,
            tags=("compile",) if (t, r) == ("hard", "none") else (),
        )
        for t in ("hard", "soft")
        for r in ("none", "mean")
    ]
    cases += [
        Case("logits", "edge", dtype, (20,), targets="soft", reduction="sum", label_smoothing=0.1)
    ]
    cases += [
        Case("logits", f"random:{scale}", dtype, shape, targets=t, reduction=r)
        for scale, shape, t, r in [
            (1, (), "hard", "mean"),
            (1, (0,), "hard", "mean"),
            (1, (0, 3), "soft", "sum"),
            (3, (7,), "soft", "none"),
            (3, (4, 3), "int", "sum"),
            (30, (2, 3, 4), "bool", "mean"),
            (3, (2, 1, 3, 2), "soft", "batch_mean"),
            (1000, (5, 4), "hard", "mean"),
        ]
    ]
    for reduction in REDUCTIONS:
        cases.append(
            Case(
                "logits",
                "random:4",
                dtype,
                (6, 4),
                targets="soft",
                reduction=reduction,
                weight=(6, 1),
                pos_weight=(4,),
                mask=(6, 4),
                label_smoothing=0.05,
                tags=("compile",) if reduction == "weighted_mean" else (),
            )
        )
    cases += [
        Case("logits", "random:4", dtype, (6, 4), weight=(), reduction="weighted_mean"),
        Case("logits", "random:4", dtype, (6, 4), targets="soft", mask=(4,), reduction="mean"),
        Case(
            "logits",
            "random:4",
            dtype,
            (3, 5),
            targets="soft",
            strided=True,
            reduction="none",
            weight=(3, 5),
            pos_weight=(5,),
        ),
        Case("logits", "random:2", dtype, (4,), mask=(4,), reduction="mean", seed=7),
        # Long enough that accumulating in the input's precision shows in half precision.
        Case("logits", "random:3", dtype, (64, 32), targets="soft", reduction="sum"),
    ]
    # Masked-out elements hold NaN and +-inf in every operand: they must add nothing.
    cases += [
        Case(
            "logits",
            "random:4",
            dtype,
            (6, 4),
            targets="soft",
            reduction=reduction,
            weight=(6, 4),
            pos_weight=(6, 4),
            mask=(6, 4),
            label_smoothing=0.05,
            masked="nonfinite",
        )
        for reduction in REDUCTIONS
    ]
    cases += [
        Case(
            "logits",
            "random:4",
            dtype,
            (6, 4),
            targets="soft",
            weight=(6, 1),
            pos_weight=(4,),
            mask=(6, 4),
            masked="nonfinite",
            validate=True,
        ),
        # Nothing kept: zero denominators, with non-finite values everywhere.
        Case(
            "logits",
            "random:4",
            dtype,
            (3, 4),
            targets="soft",
            weight=(3, 4),
            mask=(3, 4),
            masked="all",
        ),
        Case(
            "logits",
            "random:4",
            dtype,
            (3, 4),
            targets="soft",
            reduction="weighted_mean",
            weight=(3, 4),
            pos_weight=(4,),
            mask=(3, 4),
            masked="all",
        ),
        # validate=False computes the formula on targets outside [0, 1] (and NaN gives NaN);
        # validate=True on good data changes nothing.
        Case("logits", "random:3", dtype, (8,), targets="outside", reduction="none"),
        Case(
            "logits",
            "random:3",
            dtype,
            (4, 3),
            targets="soft",
            reduction="sum",
            weight=(4, 1),
            pos_weight=(3,),
            validate=True,
        ),
    ]
    return cases


def probs_cases(dtype: str) -> list[Case]:
    """The probability-form grid for one dtype."""
    cases = [
        Case("probs", "edge", dtype, (10,), targets=t, reduction="none") for t in ("hard", "soft")
    ]
    cases += [
        Case("probs", "random:1", dtype, shape, targets=t, reduction=r, **extra)
        for shape, t, r, extra in [
            ((4, 3), "soft", "mean", {"pos_weight": (3,), "tags": ("compile",)}),
            ((5,), "int", "sum", {"weight": (5,), "label_smoothing": 0.2}),
            ((2, 3), "soft", "weighted_mean", {"weight": (2, 1), "mask": (2, 3)}),
        ]
    ]
    cases += [
        Case(
            "probs",
            "random:1",
            dtype,
            (6, 4),
            targets="soft",
            reduction=reduction,
            weight=(6, 1),
            pos_weight=(4,),
            mask=(6, 4),
            label_smoothing=0.05,
        )
        for reduction in REDUCTIONS
    ]
    # Every log_clamp regime: exact logarithms, a clamp that bites early, everything clamped.
    cases += [
        Case("probs", "edge", dtype, (10,), targets="soft", reduction="none", log_clamp=c)
        for c in (-np.inf, -10.0, 0.0)
    ]
    cases += [
        Case(
            "probs",
            "random:1",
            dtype,
            (6, 4),
            targets="soft",
            weight=(6, 4),
            mask=(6, 4),
            masked="nonfinite",
            validate=True,
        ),
        Case("probs", "outside", dtype, (8,), targets="soft", reduction="none"),
        Case(
            "probs",
            "random:1",
            dtype,
            (4, 3),
            targets="hard",
            reduction="sum",
            log_clamp=-20.0,
            validate=True,
        ),
    ]
    return cases


# -- size regimes -------------------------------------------------------------


def is_prime(n: int) -> bool:
    """Trial division (the sizes here are a few million at most).

    >>> [n for n in range(20) if is_prime(n)]
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def next_prime(n: int) -> int:
    """The smallest prime >= ``n``.

    >>> next_prime(16385)
    16411
    """
    while not is_prime(n):
        n += 1
    return n


#: Sizes run on a backend that declares no thresholds: primes above 2^12, 2^16 and 2^20.
DEFAULT_LARGE_SIZES = (4099, 65537, 1048583)

#: A large prime size run on every backend, whatever it declares: a path it did not declare
#: (or a bug past every threshold) shows here.
LARGE_PRIME = 1048583


def regime_sizes(thresholds: Sequence[int] | None) -> tuple[int, ...]:
    """The sizes that exercise a backend's paths: for each threshold t (the first size of a
    new path), t - 1 (the old path's last size) and the first prime above t (the new path, with
    a remainder that no power-of-two block divides), and ``LARGE_PRIME``. Without thresholds,
    ``DEFAULT_LARGE_SIZES``.

    >>> regime_sizes([16384])
    (16383, 16411, 1048583)
    >>> regime_sizes(None) == DEFAULT_LARGE_SIZES
    True
    """
    if not thresholds:
        return DEFAULT_LARGE_SIZES
    sizes = {LARGE_PRIME}
    for threshold in thresholds:
        sizes |= {int(threshold) - 1, next_prime(int(threshold) + 1)}
    return tuple(sorted(s for s in sizes if s > 0))


def size_cases(dtype: str, size: int) -> list[Case]:
    """The large cases of one size: every element graded, options with masked-out non-finite
    values through a reduction, and the probability form."""
    n = (size,)
    return [
        Case("logits", "tiled", dtype, n, targets="soft", reduction="none"),
        Case(
            "logits",
            "tiled",
            dtype,
            n,
            reduction="mean",
            weight=n,
            pos_weight=n,
            mask=n,
            label_smoothing=0.1,
            masked="nonfinite",
        ),
        Case("probs", "tiled", dtype, n, targets="soft", reduction="sum"),
    ]


@cache
def all_cases(dtypes: tuple[str, ...] = DTYPES) -> tuple[Case, ...]:
    """Every case of the grid for ``dtypes``."""
    return tuple(itertools.chain.from_iterable(logits_cases(d) + probs_cases(d) for d in dtypes))


@dataclass(frozen=True)
class ThreadCase:
    """Two threads calling one backend at once on different data must each get exactly the
    results of a single-threaded call."""

    dtype: str
    cases: tuple[Case, Case]
    rounds: int = 4

    @property
    def id(self) -> str:
        return f"threads/{DTYPE_ABBREVIATIONS[self.dtype]}/({self.cases[0].size},)"


def thread_cases(dtype: str, sizes: Sequence[int]) -> list[ThreadCase]:
    """A small pair of calls with every option, and a pair of the second smallest of
    ``sizes`` (from ``regime_sizes``: the first past the lowest threshold).

    >>> [case.id for case in thread_cases("float32", [16383, 16411, 1048583])]
    ['threads/f32/(2048,)', 'threads/f32/(16411,)']
    """
    large_size = sorted(sizes)[1] if len(sizes) > 1 else sizes[0]
    small = [
        Case(
            "logits",
            "random:4",
            dtype,
            (2048,),
            targets="soft",
            weight=(2048,),
            pos_weight=(),
            mask=(2048,),
            label_smoothing=0.1,
            seed=seed,
        )
        for seed in (1, 2)
    ]
    large = [
        Case("logits", "tiled", dtype, (large_size,), targets="soft", seed=seed) for seed in (1, 2)
    ]
    return [
        ThreadCase(dtype, (small[0], small[1]), rounds=8),
        ThreadCase(dtype, (large[0], large[1]), rounds=2),
    ]


def case_by_id(case_id: str) -> Case:
    """Look a case up by its id (as printed in failure reports), size cases included.

    >>> case_by_id("logits/tiled/f32/(16411,)/soft/none").size
    16411
    """
    parts = case_id.split("/")
    candidates: Sequence[Case] = all_cases()
    if len(parts) > 3 and parts[1] == "tiled":
        dtype = {v: k for k, v in DTYPE_ABBREVIATIONS.items()}.get(parts[2], "float32")
        candidates = size_cases(dtype, int(parts[3].strip("(,)")))
    for case in candidates:
        if case.id == case_id:
            return case
    raise KeyError(f"no conformance case with id {case_id!r}")


# -- error cases ----------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    """A bad call and the exception type every backend must raise for it."""

    name: str
    function: str  # "logits", "probs" or "value_and_grad"
    error: type[Exception]
    logits: Any = ((0.5, -0.5), (1.0, 2.0))
    targets: Any = ((0.0, 1.0), (1.0, 0.0))
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    #: Which inputs are converted to the backend's arrays (others stay NumPy or Python values).
    native: tuple[str, ...] = ("input", "targets")

    def arrays(self) -> dict[str, Any]:
        dtype = np.int64 if self.name == "integer logits" else np.float32
        return {
            "input": np.array(self.logits, dtype=dtype),
            "targets": np.array(self.targets, dtype=np.float32),
        }


ERROR_CASES: tuple[ErrorCase, ...] = (
    ErrorCase("targets shape mismatch", "logits", ValueError, targets=((0.0, 1.0),)),
    ErrorCase("integer logits", "logits", TypeError),
    ErrorCase("unknown reduction", "logits", ValueError, options={"reduction": "avg"}),
    ErrorCase("label smoothing above 1", "logits", ValueError, options={"label_smoothing": 1.5}),
    ErrorCase("label smoothing below 0", "logits", ValueError, options={"label_smoothing": -0.1}),
    ErrorCase(
        "weight enlarges the shape",
        "logits",
        ValueError,
        options={"weight": np.ones((3, 2, 2), np.float32)},
    ),
    ErrorCase(
        "pos_weight enlarges the shape",
        "logits",
        ValueError,
        options={"pos_weight": np.ones((2, 2, 2), np.float32)},
    ),
    ErrorCase(
        "mask enlarges the shape", "logits", ValueError, options={"mask": np.ones((2, 2, 2), bool)}
    ),
    ErrorCase("integer mask", "logits", TypeError, options={"mask": np.ones((2, 2), np.int64)}),
    ErrorCase(
        "batch_mean of a 0-d input",
        "logits",
        ValueError,
        logits=0.5,
        targets=1.0,
        options={"reduction": "batch_mean"},
    ),
    ErrorCase(
        "validate: target above 1",
        "logits",
        ValueError,
        targets=((0.0, 1.0), (2.0, 0.0)),
        options={"validate": True},
    ),
    ErrorCase(
        "validate: NaN logit",
        "logits",
        ValueError,
        logits=((0.5, np.nan), (1.0, 2.0)),
        options={"validate": True},
    ),
    ErrorCase(
        "validate: probability above 1",
        "probs",
        ValueError,
        logits=((0.5, 1.5), (0.1, 0.2)),
        options={"validate": True},
    ),
    ErrorCase(
        "positive log_clamp",
        "probs",
        ValueError,
        logits=((0.5, 0.5), (0.1, 0.2)),
        options={"log_clamp": 1.0},
    ),
    ErrorCase("unknown wrt", "value_and_grad", ValueError, options={"wrt": "logit"}),
    ErrorCase("wrt weight without weight", "value_and_grad", ValueError, options={"wrt": "weight"}),
)
