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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from bce_core.spec import REDUCTIONS

DTYPE_ABBREVIATIONS = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
DTYPES = tuple(DTYPE_ABBREVIATIONS)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of ``name``; bfloat16 comes from ml_dtypes (ImportError when absent)."""
    if name == "bfloat16":
        import ml_dtypes  # installed with JAX and TensorFlow; the suite skips bfloat16 without it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def edge_logits(dtype: str) -> np.ndarray:
    """The logits where implementations break: zero, tiny, subnormal, tails, extremes, inf, NaN."""
    info = np.finfo(np.float32 if dtype == "bfloat16" else dtype)
    largest = float(numpy_dtype(dtype).type(3.3895313892515355e38)) if dtype == "bfloat16" \
        else float(info.max)
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

    form: str                       # "logits" or "probs"
    values: str                     # "edge" or "random:<scale>"
    dtype: str
    shape: tuple[int, ...]
    targets: str = "hard"           # "hard", "soft", "int" or "bool"
    reduction: str = "mean"
    weight: tuple[int, ...] | None = None
    pos_weight: tuple[int, ...] | None = None
    mask: tuple[int, ...] | None = None
    label_smoothing: float = 0.0
    strided: bool = False           # inputs are non-contiguous views
    seed: int = 0
    #: "compile": also run through the backend's compiler (kept few: compiling is slow).
    tags: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        shape = "(" + ",".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        parts = [self.form, self.values, DTYPE_ABBREVIATIONS[self.dtype], shape, self.targets,
                 self.reduction]
        for name in ("weight", "pos_weight", "mask"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}{value}".replace(" ", ""))
        if self.label_smoothing:
            parts.append(f"ls{self.label_smoothing}")
        if self.strided:
            parts.append("strided")
        if self.seed:
            parts.append(f"seed{self.seed}")
        return "/".join(parts)

    def options(self) -> dict[str, Any]:
        """Keyword options of the call, without the arrays."""
        return {"label_smoothing": self.label_smoothing, "reduction": self.reduction}

    def inputs(self) -> dict[str, np.ndarray]:
        """The case's NumPy arrays: input, targets and the optional weight, pos_weight, mask."""
        rng = np.random.default_rng([self.seed, len(self.shape), sum(self.shape)])
        size = int(np.prod(self.shape))
        dtype = numpy_dtype(self.dtype)
        if self.values == "edge":
            pool = edge_logits(self.dtype) if self.form == "logits" else edge_probs(self.dtype)
            flat = np.resize(pool, size) if size else pool[:0]
        else:
            scale = float(self.values.split(":")[1])
            flat = (rng.standard_normal(size) * scale if self.form == "logits"
                    else rng.uniform(0.0, 1.0, size)).astype(dtype)
        x = flat.astype(dtype).reshape(self.shape)
        result = {self.form: x, "targets": self._targets(rng, self.shape, dtype)}
        if self.weight is not None:
            result["weight"] = rng.uniform(0.25, 2.0, self.weight).astype(dtype)
        if self.pos_weight is not None:
            result["pos_weight"] = rng.uniform(0.5, 3.0, self.pos_weight).astype(dtype)
        if self.mask is not None:
            keep = rng.uniform(size=self.mask) < 0.7
            result["mask"] = keep
        if self.strided:
            result = {k: _strided_view(v) for k, v in result.items()}
        return result

    def _targets(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> Any:
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
    cases = [Case("logits", "edge", dtype, (20,), targets=t, reduction=r,
                  tags=("compile",) if (t, r) == ("hard", "none") else ())
             for t in ("hard", "soft") for r in ("none", "mean")]
    cases += [Case("logits", "edge", dtype, (20,), targets="soft", reduction="sum",
                   label_smoothing=0.1)]
    cases += [Case("logits", f"random:{scale}", dtype, shape, targets=t, reduction=r)
              for scale, shape, t, r in [
                  (1, (), "hard", "mean"), (1, (0,), "hard", "mean"), (1, (0, 3), "soft", "sum"),
                  (3, (7,), "soft", "none"), (3, (4, 3), "int", "sum"), (30, (2, 3, 4), "bool", "mean"),
                  (3, (2, 1, 3, 2), "soft", "batch_mean"), (1000, (5, 4), "hard", "mean")]]
    for reduction in REDUCTIONS:
        cases.append(Case("logits", "random:4", dtype, (6, 4), targets="soft", reduction=reduction,
                          weight=(6, 1), pos_weight=(4,), mask=(6, 4), label_smoothing=0.05,
                          tags=("compile",) if reduction == "weighted_mean" else ()))
    cases += [
        Case("logits", "random:4", dtype, (6, 4), weight=(), reduction="weighted_mean"),
        Case("logits", "random:4", dtype, (6, 4), targets="soft", mask=(4,), reduction="mean"),
        Case("logits", "random:4", dtype, (3, 5), targets="soft", strided=True, reduction="none",
             weight=(3, 5), pos_weight=(5,)),
        Case("logits", "random:2", dtype, (4,), mask=(4,), reduction="mean", seed=7),
        # Long enough that accumulating in the input's precision shows in half precision.
        Case("logits", "random:3", dtype, (64, 32), targets="soft", reduction="sum"),
    ]
    return cases


def probs_cases(dtype: str) -> list[Case]:
    """The probability-form grid for one dtype."""
    cases = [Case("probs", "edge", dtype, (10,), targets=t, reduction="none")
             for t in ("hard", "soft")]
    cases += [Case("probs", "random:1", dtype, shape, targets=t, reduction=r, **extra)
              for shape, t, r, extra in [
                  ((4, 3), "soft", "mean", {"pos_weight": (3,), "tags": ("compile",)}),
                  ((5,), "int", "sum", {"weight": (5,), "label_smoothing": 0.2}),
                  ((2, 3), "soft", "weighted_mean", {"weight": (2, 1), "mask": (2, 3)})]]
    return cases


@lru_cache(maxsize=None)
def all_cases(dtypes: tuple[str, ...] = DTYPES) -> tuple[Case, ...]:
    """Every case of the grid for ``dtypes``."""
    return tuple(itertools.chain.from_iterable(logits_cases(d) + probs_cases(d) for d in dtypes))


def case_by_id(case_id: str) -> Case:
    """Look a case up by its id (as printed in failure reports)."""
    for case in all_cases():
        if case.id == case_id:
            return case
    raise KeyError(f"no conformance case with id {case_id!r}")


# -- error cases ----------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    """A bad call and the exception type every backend must raise for it."""

    name: str
    function: str                   # "logits", "probs" or "value_and_grad"
    error: type[Exception]
    logits: Any = ((0.5, -0.5), (1.0, 2.0))
    targets: Any = ((0.0, 1.0), (1.0, 0.0))
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    #: Which inputs are converted to the backend's arrays (others stay NumPy or Python values).
    native: tuple[str, ...] = ("input", "targets")

    def arrays(self) -> dict[str, Any]:
        dtype = np.int64 if self.name == "integer logits" else np.float32
        return {"input": np.array(self.logits, dtype=dtype),
                "targets": np.array(self.targets, dtype=np.float32)}


ERROR_CASES: tuple[ErrorCase, ...] = (
    ErrorCase("targets shape mismatch", "logits", ValueError, targets=((0.0, 1.0),)),
    ErrorCase("integer logits", "logits", TypeError),
    ErrorCase("unknown reduction", "logits", ValueError, options={"reduction": "avg"}),
    ErrorCase("label smoothing above 1", "logits", ValueError, options={"label_smoothing": 1.5}),
    ErrorCase("label smoothing below 0", "logits", ValueError, options={"label_smoothing": -0.1}),
    ErrorCase("weight enlarges the shape", "logits", ValueError,
              options={"weight": np.ones((3, 2, 2), np.float32)}),
    ErrorCase("pos_weight enlarges the shape", "logits", ValueError,
              options={"pos_weight": np.ones((2, 2, 2), np.float32)}),
    ErrorCase("mask enlarges the shape", "logits", ValueError,
              options={"mask": np.ones((2, 2, 2), bool)}),
    ErrorCase("integer mask", "logits", TypeError, options={"mask": np.ones((2, 2), np.int64)}),
    ErrorCase("batch_mean of a 0-d input", "logits", ValueError, logits=0.5, targets=1.0,
              options={"reduction": "batch_mean"}),
    ErrorCase("validate: target above 1", "logits", ValueError, targets=((0.0, 1.0), (2.0, 0.0)),
              options={"validate": True}),
    ErrorCase("validate: NaN logit", "logits", ValueError, logits=((0.5, np.nan), (1.0, 2.0)),
              options={"validate": True}),
    ErrorCase("validate: probability above 1", "probs", ValueError, logits=((0.5, 1.5), (0.1, 0.2)),
              options={"validate": True}),
    ErrorCase("positive log_clamp", "probs", ValueError, logits=((0.5, 0.5), (0.1, 0.2)),
              options={"log_clamp": 1.0}),
    ErrorCase("unknown wrt", "value_and_grad", ValueError, options={"wrt": "logit"}),
    ErrorCase("wrt weight without weight", "value_and_grad", ValueError,
              options={"wrt": "weight"}),
)
