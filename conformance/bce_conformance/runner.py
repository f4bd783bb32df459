"""Runs the case grid on a backend and device, and grades the results.

For every case: the forward loss, ``value_and_grad`` for every applicable
argument, ``grad_hess``, and for backends with autodiff the framework's own
first and second derivatives, eager and (for cases tagged "compile")
compiled, are compared with the exact golden values under the parity rule of
``checks``; result dtype and device are checked, and the forward is run twice
to check it is deterministic. Error cases check the exception type. Cases
with elementwise results are also graded in ULP against the oracle.

>>> report = run_suite(["numpy"], dtypes=("float64",))
>>> report.failures, report.summaries()[0].grade
([], 'A')
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import bce_core
from bce_core.plugin import AutodiffBackend, ParameterBackend
from bce_core.registry import get_registry

from .cases import (
    DTYPE_ABBREVIATIONS,
    DTYPES,
    ERROR_CASES,
    Case,
    ErrorCase,
    ThreadCase,
    all_cases,
    case_by_id,
    numpy_dtype,
    regime_sizes,
    size_cases,
    thread_cases,
)
from .checks import (
    Comparison,
    compare,
    gradient_scale,
    logit_scales,
    probs_grad_scale,
    probs_loss_scale,
    reduced_scale,
)
from .golden import Expected, expected

#: A backend graded A is within this many ULP of exact everywhere it is graded.
GRADE_A_ULP = 4.0


@dataclass
class CaseResult:
    """All comparisons of one case on one backend and device."""

    backend: str
    device: str
    dtype: str
    case: str
    comparisons: list[Comparison] = field(default_factory=list)
    error: str | None = None
    #: Worst ULP error against the oracle by quantity ("loss", "grad"), for graded cases.
    ulps: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.comparisons)

    def worst(self, prefix: str) -> float:
        values = [c.worst for c in self.comparisons if c.quantity.split(" ")[-1].startswith(prefix)]
        return max(values, default=0.0)

    def reproduction(self) -> str:
        return (
            "from bce_conformance.runner import reproduce\n"
            f"reproduce({self.backend!r}, {self.case!r}, device={self.device!r})"
        )


@dataclass
class Summary:
    """One row of the closing table: a backend on a device in a dtype."""

    backend: str
    device: str
    dtype: str
    passed: int
    failed: int
    worst_loss_ulp: float
    worst_grad_ulp: float
    worst_loss_parity: float
    worst_grad_parity: float

    @property
    def grade(self) -> str:
        """A: passes and within 4 ULP wherever graded; B: passes parity only; F: fails."""
        if self.failed:
            return "F"
        return "A" if max(self.worst_loss_ulp, self.worst_grad_ulp) <= GRADE_A_ULP else "B"


@dataclass
class Report:
    """Everything one run found."""

    spec_version: str
    backends: list[dict[str, Any]]
    plugin_errors: list[dict[str, Any]]
    results: list[CaseResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def summaries(self) -> list[Summary]:
        grouped: dict[tuple[str, str, str], list[CaseResult]] = {}
        for result in self.results:
            grouped.setdefault((result.backend, result.device, result.dtype), []).append(result)
        return [
            Summary(
                b,
                d,
                t,
                sum(r.passed for r in rs),
                sum(not r.passed for r in rs),
                max((r.ulps.get("loss", 0.0) for r in rs), default=0.0),
                max((r.ulps.get("grad", 0.0) for r in rs), default=0.0),
                max(r.worst("loss") for r in rs),
                max(r.worst("grad") for r in rs),
            )
            for (b, d, t), rs in grouped.items()
        ]

    def to_json(self) -> dict[str, Any]:
        summary = [dict(asdict(s), grade=s.grade) for s in self.summaries()]
        return {
            "spec_version": self.spec_version,
            "backends": self.backends,
            "plugin_errors": self.plugin_errors,
            "summary": summary,
            "skipped": self.skipped,
            "failures": [dict(asdict(r), reproduction=r.reproduction()) for r in self.failures],
            "results": [asdict(r) for r in self.results],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        report = cls(
            data["spec_version"], data["backends"], data["plugin_errors"], skipped=data["skipped"]
        )
        for result in data["results"]:
            comparisons = [Comparison(**c) for c in result.pop("comparisons")]
            report.results.append(CaseResult(comparisons=comparisons, **result))
        return report


# -- one case -----------------------------------------------------------------


def _float64(inputs: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, Any]:
    """The case's values as the backend sees them (cast to the input dtype), in float64."""

    def as64(name: str) -> Any:
        value = inputs.get(name)
        return 1.0 if value is None else np.asarray(value).astype(dtype).astype(np.float64)

    return {
        "x": as64("logits") if "logits" in inputs else as64("probs"),
        "y": as64("targets"),
        "w": as64("weight"),
        "q": as64("pos_weight"),
    }


class CaseRunner:
    """Runs cases on one backend and device."""

    def __init__(self, backend: Any, device: str) -> None:
        self.backend = backend
        self.device = device
        self.autodiff = isinstance(backend, AutodiffBackend)

    def run(self, case: Case) -> CaseResult:
        result = CaseResult(self.backend.name, self.device, case.dtype, case.id)
        try:
            inputs = case.inputs()
            native = {
                name: self.backend.asarray(value, self.device) for name, value in inputs.items()
            }
            before = {name: self._snapshot(value) for name, value in native.items()}
            golden = expected(case)
            check = self._check_logits if case.form == "logits" else self._check_probs
            check(case, inputs, native, golden, result)
            # Every call above got the caller's arrays: none may have written into them.
            result.comparisons += [
                _unchanged(
                    f"unchanged[{name}]",
                    before[name],
                    self._snapshot(value),
                    "the caller's " + name,
                )
                for name, value in native.items()
            ]
            result.comparisons += self._parameters(case, inputs, native, golden)
        except Exception as exc:  # a backend that raises fails the case, with its error
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    def _snapshot(self, value: Any) -> np.ndarray:
        return np.array(self.backend.to_numpy(value), copy=True)

    def _parameters(
        self, case: Case, inputs: dict[str, np.ndarray], native: dict[str, Any], golden: Expected
    ) -> list[Comparison]:
        """The input as a user's trainable parameter (a torch leaf with a gradient already
        accumulated, a tf.Variable), for backends that can make one: the loss is the same,
        and neither the forward nor ``value_and_grad`` touches the parameter or its gradient."""
        b = self.backend
        if not isinstance(b, ParameterBackend):
            return []
        parameter = b.as_parameter(inputs[case.form], self.device)
        before = {
            k: None if v is None else np.array(v, copy=True)
            for k, v in b.parameter_state(parameter).items()
        }
        options = self._options(case, native)
        v = _float64(inputs, numpy_dtype(case.dtype))
        if case.form == "logits":
            scales = logit_scales(v["x"], v["y"], v["w"], v["q"], case.label_smoothing)
            loss = b.binary_cross_entropy_with_logits(parameter, native["targets"], **options)
            b.value_and_grad(parameter, native["targets"], **options)
            scale = scales.loss
        else:
            loss = b.binary_cross_entropy(parameter, native["targets"], **options)
            scale = probs_loss_scale(
                v["x"], v["y"], v["w"], v["q"], case.label_smoothing, case.log_clamp_value
            )
        loss_scale, terms = reduced_scale(scale, case.reduction, inputs.get("mask"), v["w"])
        out = [
            compare("parameter loss", self._numpy(loss), golden.loss, loss_scale, case.dtype, terms)
        ]
        after = b.parameter_state(parameter)
        out += [
            _unchanged(
                f"unchanged[parameter {key}]", before[key], after.get(key), f"the parameter's {key}"
            )
            for key in before
        ]
        return out

    # -- helpers --

    def _numpy(self, value: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(value))

    def _placement(self, quantity: str, value: Any, dtype: str) -> list[Comparison]:
        """The result's dtype and device."""
        out = []
        got = self._numpy(value).dtype.name
        out.append(
            Comparison(
                f"dtype[{quantity}]",
                got == dtype,
                0.0 if got == dtype else np.inf,
                "" if got == dtype else f"result dtype {got}, expected {dtype}",
            )
        )
        where = self.backend.device_of(value)
        ok = where == self.device
        out.append(
            Comparison(
                f"device[{quantity}]",
                ok,
                0.0 if ok else np.inf,
                "" if ok else f"result on {where}, expected {self.device}",
            )
        )
        return out

    def _deterministic(self, first: Any, second: Any) -> Comparison:
        a, b = self._numpy(first), self._numpy(second)
        same = a.shape == b.shape and a.tobytes() == b.tobytes()
        return Comparison(
            "determinism[loss]",
            same,
            0.0 if same else np.inf,
            "" if same else "two identical calls gave different bits",
        )

    @staticmethod
    def _options(case: Case, native: dict[str, Any]) -> dict[str, Any]:
        arrays = {k: native[k] for k in ("weight", "pos_weight", "mask") if k in native}
        return {**arrays, **case.options()}

    # -- logits form --

    def _check_logits(
        self,
        case: Case,
        inputs: dict[str, np.ndarray],
        native: dict[str, Any],
        golden: Expected,
        result: CaseResult,
    ) -> None:
        b, out = self.backend, result.comparisons
        options = self._options(case, native)
        v = _float64(inputs, numpy_dtype(case.dtype))
        scales = logit_scales(v["x"], v["y"], v["w"], v["q"], case.label_smoothing)
        loss_scale, terms = reduced_scale(scales.loss, case.reduction, inputs.get("mask"), v["w"])
        factor = _factor(case, inputs, v)
        x, y = native["logits"], native["targets"]

        loss = b.binary_cross_entropy_with_logits(x, y, **options)
        out.append(compare("loss", self._numpy(loss), golden.loss, loss_scale, case.dtype, terms))
        out += self._placement("loss", loss, case.dtype)
        out.append(self._deterministic(loss, b.binary_cross_entropy_with_logits(x, y, **options)))

        wrt = ["logits"] + (["targets"] if case.targets in ("hard", "soft") else [])
        wrt += [name for name in ("weight", "pos_weight") if name in inputs]
        element_scales = {
            "logits": scales.grad_logits,
            "targets": scales.grad_targets,
            # weighted_mean: d/dw = (bracket - loss) / sum(w)
            "weight": scales.bracket + np.abs(golden.loss),
            "pos_weight": scales.grad_pos_weight,
        }

        def check_grads(label: str, loss: Any, grads: Sequence[Any]) -> None:
            out.append(
                compare(
                    f"{label}loss", self._numpy(loss), golden.loss, loss_scale, case.dtype, terms
                )
            )
            for name, grad in zip(wrt, grads):
                expected_grad = golden.grads[name]
                scale, count = gradient_scale(element_scales[name], factor, expected_grad.shape)
                out.append(
                    compare(
                        f"{label}grad[{name}]",
                        self._numpy(grad),
                        expected_grad,
                        scale,
                        case.dtype,
                        count,
                    )
                )
                out.extend(self._placement(f"{label}grad[{name}]", grad, case.dtype))

        loss, grads = b.value_and_grad(x, y, wrt=tuple(wrt), **options)
        check_grads("value_and_grad ", loss, grads)
        grad_sources = [("value_and_grad", grads[0])]
        # Each name alone, as a string (a single gradient, not a tuple), and the default wrt;
        # on the small cases, where every option set is (large ones test sizes, not wrt).
        singles = (
            []
            if case.values == "tiled"
            else [(name, b.value_and_grad(x, y, wrt=name, **options)[1]) for name in wrt[1:]]
            + [("logits", b.value_and_grad(x, y, **options)[1])]
        )
        for name, grad in singles:
            expected_grad = golden.grads[name]
            scale, count = gradient_scale(element_scales[name], factor, expected_grad.shape)
            if isinstance(grad, (tuple, list)):
                out.append(
                    Comparison(
                        f"value_and_grad wrt={name!r}",
                        False,
                        np.inf,
                        f"a single name gave a {type(grad).__name__}, not an array",
                    )
                )
                continue
            out.append(
                compare(
                    f"value_and_grad wrt={name!r} grad[{name}]",
                    self._numpy(grad),
                    expected_grad,
                    scale,
                    case.dtype,
                    count,
                )
            )

        if golden.grad_hess is not None and case.reduction == "none":
            grad, hess = b.grad_hess(
                x, y, weight=native.get("weight"), pos_weight=native.get("pos_weight")
            )
            out += [
                compare(
                    "grad_hess grad[logits]",
                    self._numpy(grad),
                    golden.grad_hess[0],
                    scales.grad_logits,
                    case.dtype,
                ),
                compare(
                    "grad_hess hessian",
                    self._numpy(hess),
                    golden.grad_hess[1],
                    scales.hessian,
                    case.dtype,
                ),
            ]

        if self.autodiff:
            modes = [False] + ([True] if "compile" in case.tags else [])
            for compiled in modes:
                label = "compiled " if compiled else "autodiff "
                loss, grads = b.autodiff_value_and_grad(
                    x, y, wrt=tuple(wrt), compiled=compiled, **options
                )
                check_grads(label, loss, grads)
                grad_sources.append((label.strip(), grads[0]))
                second = b.autodiff_second_derivative(x, y, compiled=compiled, **options)
                scale, _ = gradient_scale(scales.hessian, factor, case.shape)
                out.append(
                    compare(
                        f"{label}second derivative",
                        self._numpy(second),
                        golden.second_derivative,
                        scale,
                        case.dtype,
                    )
                )
        if case.reduction == "none" and "mask" not in inputs:
            self._grade(
                case,
                v,
                golden,
                loss_value=b.binary_cross_entropy_with_logits(x, y, **options),
                grads=[g for _, g in grad_sources],
                result=result,
            )

    def _grade(
        self,
        case: Case,
        v: dict[str, Any],
        golden: Expected,
        loss_value: Any,
        grads: list[Any],
        result: CaseResult,
    ) -> None:
        """Worst ULP error against the oracle, elementwise."""
        loss_ulps = golden.exact_elements.errors(self._numpy(loss_value))
        grad_ulps = [golden.exact_grads.errors(self._numpy(g)) for g in grads]
        result.ulps = {
            "loss": float(np.max(loss_ulps, initial=0.0)),
            "grad": float(max((np.max(u, initial=0.0) for u in grad_ulps), default=0.0)),
        }

    # -- probability form --

    def _check_probs(
        self,
        case: Case,
        inputs: dict[str, np.ndarray],
        native: dict[str, Any],
        golden: Expected,
        result: CaseResult,
    ) -> None:
        b, out = self.backend, result.comparisons
        options = self._options(case, native)
        v = _float64(inputs, numpy_dtype(case.dtype))
        scale = probs_loss_scale(
            v["x"], v["y"], v["w"], v["q"], case.label_smoothing, case.log_clamp_value
        )
        loss_scale, terms = reduced_scale(scale, case.reduction, inputs.get("mask"), v["w"])
        p, y = native["probs"], native["targets"]
        loss = b.binary_cross_entropy(p, y, **options)
        out.append(compare("loss", self._numpy(loss), golden.loss, loss_scale, case.dtype, terms))
        out += self._placement("loss", loss, case.dtype)
        out.append(self._deterministic(loss, b.binary_cross_entropy(p, y, **options)))
        if self.autodiff:
            grad_scale, count = gradient_scale(
                probs_grad_scale(v["x"], v["y"], v["w"], v["q"], case.label_smoothing),
                _factor(case, inputs, v),
                case.shape,
            )
            modes = [False] + ([True] if "compile" in case.tags else [])
            for compiled in modes:
                label = "compiled " if compiled else "autodiff "
                loss, grad = b.autodiff_probs_grad(p, y, compiled=compiled, **options)
                out += [
                    compare(
                        f"{label}loss",
                        self._numpy(loss),
                        golden.loss,
                        loss_scale,
                        case.dtype,
                        terms,
                    ),
                    compare(
                        f"{label}grad[probs]",
                        self._numpy(grad),
                        golden.grads["probs"],
                        grad_scale,
                        case.dtype,
                        count,
                    ),
                ]

    # -- threads --

    def run_threads(self, case: ThreadCase) -> CaseResult:
        """Two threads, each calling the loss and ``value_and_grad`` ``case.rounds`` times on
        its own data, started together: every result must have the single-threaded bits."""
        result = CaseResult(self.backend.name, self.device, case.dtype, case.id)
        b = self.backend

        def call(native: dict[str, Any], options: dict[str, Any]) -> bytes:
            loss = b.binary_cross_entropy_with_logits(
                native["logits"], native["targets"], **options
            )
            _, grad = b.value_and_grad(native["logits"], native["targets"], **options)
            return self._numpy(loss).tobytes() + self._numpy(grad).tobytes()

        try:
            calls = []
            for single in case.cases:
                native = {k: b.asarray(v, self.device) for k, v in single.inputs().items()}
                calls.append((native, self._options(single, native)))
            alone = [call(*c) for c in calls]
            start = threading.Barrier(len(calls), timeout=60)
            problems: list[str] = []

            def worker(index: int) -> None:
                try:
                    start.wait()
                    for round_ in range(case.rounds):
                        if call(*calls[index]) != alone[index]:
                            problems.append(
                                f"thread {index}, round {round_}: results differ "
                                f"from the single-threaded call on the same data"
                            )
                except Exception as exc:  # reported as the case's failure
                    problems.append(f"thread {index}: {type(exc).__name__}: {exc}")

            threads = [
                threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            if any(thread.is_alive() for thread in threads):
                problems.append("a thread did not finish within 300 s")
            result.comparisons.append(
                Comparison(
                    "threads", not problems, np.inf if problems else 0.0, "; ".join(problems[:3])
                )
            )
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    # -- error cases --

    def run_error(self, case: ErrorCase) -> CaseResult:
        result = CaseResult(self.backend.name, self.device, "errors", f"error/{case.name}")
        arrays = case.arrays()
        values = {
            k: self.backend.asarray(v, self.device) if k in case.native else v
            for k, v in arrays.items()
        }
        function = {
            "logits": self.backend.binary_cross_entropy_with_logits,
            "probs": self.backend.binary_cross_entropy,
            "value_and_grad": self.backend.value_and_grad,
        }[case.function]
        try:
            function(values["input"], values["targets"], **case.options)
        except case.error:
            result.comparisons.append(Comparison(f"raises {case.error.__name__}", True, 0.0))
        except Exception as exc:
            result.comparisons.append(
                Comparison(
                    f"raises {case.error.__name__}",
                    False,
                    np.inf,
                    f"raised {type(exc).__name__}: {exc}",
                )
            )
        else:
            result.comparisons.append(
                Comparison(
                    f"raises {case.error.__name__}", False, np.inf, "returned without raising"
                )
            )
        return result


def _unchanged(quantity: str, before: np.ndarray | None, after: Any, what: str) -> Comparison:
    """Whether ``after`` holds exactly the bits of ``before`` (NaN payloads included); None
    stands for an absent value (a parameter without a gradient)."""
    if before is None or after is None:
        if before is None and after is None:
            return Comparison(quantity, True, 0.0)
        return Comparison(
            quantity, False, np.inf, f"the call {'removed' if after is None else 'set'} {what}"
        )
    after = np.asarray(after)
    if (
        before.shape == after.shape
        and before.dtype == after.dtype
        and before.tobytes() == after.tobytes()
    ):
        return Comparison(quantity, True, 0.0)
    if before.shape != after.shape or before.dtype != after.dtype:
        return Comparison(
            quantity,
            False,
            np.inf,
            f"the call changed {what} from {before.dtype}{before.shape} to "
            f"{after.dtype}{after.shape}",
        )
    a, b = before.astype(np.float64).ravel(), after.astype(np.float64).ravel()
    changed = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
    first = int(changed[0]) if changed.size else 0
    index = tuple(int(i) for i in np.unravel_index(first, before.shape)) if before.ndim else ()
    return Comparison(
        quantity,
        False,
        np.inf,
        f"the call wrote into {what}: {changed.size} element(s) changed, first at "
        f"index {index}: {float(a[first])!r} became {float(b[first])!r}",
    )


def _factor(case: Case, inputs: dict[str, np.ndarray], v: dict[str, Any]) -> Any:
    """d(reduced loss)/d(element loss) per element."""
    from bce_core.arrays import reduce_loss

    with np.errstate(all="ignore"):
        return reduce_loss(
            np.ones(case.shape), case.reduction, mask=inputs.get("mask"), weight=v["w"]
        ).factor


def reproduce(backend: str, case_id: str, device: str = "cpu") -> CaseResult:
    """Re-run one case and print what it compared; returns the result."""
    runner = CaseRunner(bce_core.get_backend(backend), device)
    if case_id.startswith("error/"):
        name = case_id.split("/", 1)[1]
        result = runner.run_error(next(c for c in ERROR_CASES if c.name == name))
    elif case_id.startswith("threads/"):
        _, abbreviation, size = case_id.split("/")
        dtype = {v: k for k, v in DTYPE_ABBREVIATIONS.items()}[abbreviation]
        result = runner.run_threads(
            next(c for c in thread_cases(dtype, [int(size.strip("(,)"))]) if c.id == case_id)
        )
    else:
        result = runner.run(case_by_id(case_id))
    print(f"{backend} on {device}, case {case_id}: {'passed' if result.passed else 'FAILED'}")
    if result.error:
        print(f"  error: {result.error}")
    for comparison in result.comparisons:
        mark = "ok  " if comparison.passed else "FAIL"
        print(f"  {mark} {comparison.quantity}: worst {comparison.worst:.3g} {comparison.detail}")
    return result


# -- the suite ----------------------------------------------------------------


def supports(backend: Any, dtype: str, device: str) -> str | None:
    """None if ``backend`` can hold ``dtype`` arrays on ``device``, else why not."""
    try:
        probe = np.zeros(2, dtype=numpy_dtype(dtype))
    except ImportError as exc:
        return f"{dtype} needs ml_dtypes in NumPy ({exc})"
    try:
        converted = backend.to_numpy(backend.asarray(probe, device))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if np.asarray(converted).dtype.name != dtype:
        return f"{dtype} arrays come back as {np.asarray(converted).dtype.name} (not enabled)"
    return None


def backend_sizes(backend: Any, device: str) -> tuple[int, ...]:
    """The large sizes to run on ``backend``: around the thresholds its
    ``size_thresholds(device)`` declares, else (none declared) ``DEFAULT_LARGE_SIZES``."""
    return regime_sizes(tuple(backend.size_thresholds(device)))


def cases_for(backend: Any, device: str, dtype: str) -> list[Case | ThreadCase]:
    """Every case one backend runs on one device in one dtype: the grid, the size regimes and
    the thread checks."""
    sizes = backend_sizes(backend, device)
    plan: list[Case | ThreadCase] = list(all_cases((dtype,)))
    for size in sizes:
        plan += size_cases(dtype, size)
    return plan + thread_cases(dtype, sizes)


def select_devices(backend: Any, which: str) -> list[str]:
    """The backend's usable devices for ``--device cpu|gpu|all``."""
    devices = list(backend.devices())
    if which == "cpu":
        return [d for d in devices if d.split(":")[0] == "cpu"]
    if which == "gpu":
        return [d for d in devices if d.split(":")[0] != "cpu"]
    return devices


def run_suite(
    backend_names: Sequence[str] | None = None,
    *,
    dtypes: Sequence[str] = DTYPES,
    device: str = "cpu",
    on_step: Callable[[str], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Report:
    """Run the grid on every named (default: every installed) backend."""
    registry = get_registry()
    infos = [registry.info(name) for name in (backend_names or registry.names())]
    report = Report(
        bce_core.SPEC_VERSION,
        [asdict(i) for i in infos],
        [asdict(e) for e in registry.plugin_errors],
    )
    plan: list[tuple[CaseRunner, Case | ErrorCase]] = []
    for info in infos:
        if info.status != "ok":
            if backend_names:  # asked for by name: not being able to run it is a failure
                report.results.append(
                    CaseResult(info.name, device, "-", "load", error=f"{info.status}: {info.error}")
                )
            else:
                report.skipped.append(
                    {"backend": info.name, "reason": f"{info.status}: {info.error}"}
                )
            continue
        backend = registry.get(info.name)
        devices = select_devices(backend, device)
        if not devices:
            report.skipped.append({"backend": info.name, "reason": f"no usable {device} device"})
        for dev in devices:
            runner = CaseRunner(backend, dev)
            plan += [(runner, case) for case in ERROR_CASES]
            for dtype in dtypes:
                reason = supports(backend, dtype, dev)
                if reason:
                    report.skipped.append(
                        {"backend": info.name, "device": dev, "dtype": dtype, "reason": reason}
                    )
                    continue
                plan += [(runner, case) for case in cases_for(backend, dev, dtype)]
    if on_total:
        on_total(len(plan))
    for runner, case in plan:
        if on_step:
            on_step(f"{runner.backend.name} {runner.device}")
        if isinstance(case, ErrorCase):
            report.results.append(runner.run_error(case))
        elif isinstance(case, ThreadCase):
            report.results.append(runner.run_threads(case))
        else:
            report.results.append(runner.run(case))
    return report
