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

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import bce_core
from bce_core.registry import get_registry

from . import oracle
from .cases import DTYPES, ERROR_CASES, Case, ErrorCase, all_cases, case_by_id, numpy_dtype
from .checks import (Comparison, compare, gradient_scale, logit_scales, probs_grad_scale,
                     probs_loss_scale, reduced_scale)
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
        values = [c.worst for c in self.comparisons
                  if c.quantity.split(" ")[-1].startswith(prefix)]
        return max(values, default=0.0)

    def reproduction(self) -> str:
        return ("from bce_conformance.runner import reproduce\n"
                f"reproduce({self.backend!r}, {self.case!r}, device={self.device!r})")


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
        return [Summary(b, d, t, sum(r.passed for r in rs), sum(not r.passed for r in rs),
                        max((r.ulps.get("loss", 0.0) for r in rs), default=0.0),
                        max((r.ulps.get("grad", 0.0) for r in rs), default=0.0),
                        max(r.worst("loss") for r in rs), max(r.worst("grad") for r in rs))
                for (b, d, t), rs in grouped.items()]

    def to_json(self) -> dict[str, Any]:
        summary = [dict(asdict(s), grade=s.grade) for s in self.summaries()]
        return {"spec_version": self.spec_version, "backends": self.backends,
                "plugin_errors": self.plugin_errors, "summary": summary,
                "skipped": self.skipped,
                "failures": [dict(asdict(r), reproduction=r.reproduction())
                             for r in self.failures],
                "results": [asdict(r) for r in self.results]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        report = cls(data["spec_version"], data["backends"], data["plugin_errors"],
                     skipped=data["skipped"])
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
    return {"x": as64("logits") if "logits" in inputs else as64("probs"), "y": as64("targets"),
            "w": as64("weight"), "q": as64("pos_weight")}


class CaseRunner:
    """Runs cases on one backend and device."""

    def __init__(self, backend: Any, device: str) -> None:
        self.backend = backend
        self.device = device
        self.autodiff = all(hasattr(backend, name) for name in (
            "autodiff_value_and_grad", "autodiff_second_derivative", "autodiff_probs_grad"))

    def run(self, case: Case) -> CaseResult:
        result = CaseResult(self.backend.name, self.device, case.dtype, case.id)
        try:
            inputs = case.inputs()
            native = {name: self.backend.asarray(value, self.device)
                      for name, value in inputs.items()}
            check = self._check_logits if case.form == "logits" else self._check_probs
            check(case, inputs, native, expected(case), result)
        except Exception as exc:  # a backend that raises fails the case, with its error
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    # -- helpers --

    def _numpy(self, value: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(value))

    def _placement(self, quantity: str, value: Any, dtype: str) -> list[Comparison]:
        """The result's dtype and device."""
        out = []
        got = self._numpy(value).dtype.name
        out.append(Comparison(f"dtype[{quantity}]", got == dtype, 0.0 if got == dtype else np.inf,
                              "" if got == dtype else f"result dtype {got}, expected {dtype}"))
        device_of = getattr(self.backend, "device_of", None)
        if device_of is not None:
            where = device_of(value)
            ok = where == self.device
            out.append(Comparison(f"device[{quantity}]", ok, 0.0 if ok else np.inf,
                                  "" if ok else f"result on {where}, expected {self.device}"))
        return out

    def _deterministic(self, first: Any, second: Any) -> Comparison:
        a, b = self._numpy(first), self._numpy(second)
        same = a.shape == b.shape and a.tobytes() == b.tobytes()
        return Comparison("determinism[loss]", same, 0.0 if same else np.inf,
                          "" if same else "two identical calls gave different bits")

    @staticmethod
    def _options(case: Case, native: dict[str, Any]) -> dict[str, Any]:
        arrays = {k: native[k] for k in ("weight", "pos_weight", "mask") if k in native}
        return {**arrays, **case.options()}

    # -- logits form --

    def _check_logits(self, case: Case, inputs: dict[str, np.ndarray], native: dict[str, Any],
                      golden: Expected, result: CaseResult) -> None:
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
        element_scales = {"logits": scales.grad_logits, "targets": scales.grad_targets,
                          # weighted_mean: d/dw = (bracket - loss) / sum(w)
                          "weight": scales.bracket + np.abs(golden.loss),
                          "pos_weight": scales.grad_pos_weight}

        def check_grads(label: str, loss: Any, grads: Sequence[Any]) -> None:
            out.append(compare(f"{label}loss", self._numpy(loss), golden.loss, loss_scale,
                               case.dtype, terms))
            for name, grad in zip(wrt, grads):
                expected_grad = golden.grads[name]
                scale, count = gradient_scale(element_scales[name], factor, expected_grad.shape)
                out.append(compare(f"{label}grad[{name}]", self._numpy(grad), expected_grad,
                                   scale, case.dtype, count))
                out.extend(self._placement(f"{label}grad[{name}]", grad, case.dtype))

        loss, grads = b.value_and_grad(x, y, wrt=tuple(wrt), **options)
        check_grads("value_and_grad ", loss, grads)
        grad_sources = [("value_and_grad", grads[0])]

        if golden.grad_hess is not None and case.reduction == "none":
            grad, hess = b.grad_hess(x, y, weight=native.get("weight"),
                                     pos_weight=native.get("pos_weight"))
            out += [compare("grad_hess grad[logits]", self._numpy(grad), golden.grad_hess[0],
                            scales.grad_logits, case.dtype),
                    compare("grad_hess hessian", self._numpy(hess), golden.grad_hess[1],
                            scales.hessian, case.dtype)]

        if self.autodiff:
            modes = [False] + ([True] if "compile" in case.tags else [])
            for compiled in modes:
                label = "compiled " if compiled else "autodiff "
                loss, grads = b.autodiff_value_and_grad(x, y, wrt=tuple(wrt), compiled=compiled,
                                                        **options)
                check_grads(label, loss, grads)
                grad_sources.append((label.strip(), grads[0]))
                second = b.autodiff_second_derivative(x, y, compiled=compiled, **options)
                scale, _ = gradient_scale(scales.hessian, factor, case.shape)
                out.append(compare(f"{label}second derivative", self._numpy(second),
                                   golden.second_derivative, scale, case.dtype))
        if case.reduction == "none" and "mask" not in inputs:
            self._grade(case, v, golden, loss_value=b.binary_cross_entropy_with_logits(
                x, y, **options), grads=[g for _, g in grad_sources], result=result)

    def _grade(self, case: Case, v: dict[str, Any], golden: Expected, loss_value: Any,
               grads: list[Any], result: CaseResult) -> None:
        """Worst ULP error against the oracle, elementwise."""
        loss_ulps = oracle.ulp_errors(self._numpy(loss_value).astype(np.float64),
                                      golden.exact_elements, case.dtype)
        hard = np.broadcast_to((v["y"] == 0) | (v["y"] == 1), case.shape).ravel() & \
            (case.label_smoothing == 0)
        # Hard targets are graded against the exact gradient, soft ones against the larger term.
        references = [None if h else s for h, s in zip(hard, golden.exact_grad_scales)]
        grad_ulps = [oracle.ulp_errors(self._numpy(g).astype(np.float64), golden.exact_grads,
                                       case.dtype, references) for g in grads]
        result.ulps = {"loss": float(np.max(loss_ulps, initial=0.0)),
                       "grad": float(max((np.max(u, initial=0.0) for u in grad_ulps),
                                         default=0.0))}

    # -- probability form --

    def _check_probs(self, case: Case, inputs: dict[str, np.ndarray], native: dict[str, Any],
                     golden: Expected, result: CaseResult) -> None:
        b, out = self.backend, result.comparisons
        options = self._options(case, native)
        v = _float64(inputs, numpy_dtype(case.dtype))
        scale = probs_loss_scale(v["x"], v["y"], v["w"], v["q"], case.label_smoothing, -100.0)
        loss_scale, terms = reduced_scale(scale, case.reduction, inputs.get("mask"), v["w"])
        p, y = native["probs"], native["targets"]
        loss = b.binary_cross_entropy(p, y, **options)
        out.append(compare("loss", self._numpy(loss), golden.loss, loss_scale, case.dtype, terms))
        out += self._placement("loss", loss, case.dtype)
        out.append(self._deterministic(loss, b.binary_cross_entropy(p, y, **options)))
        if self.autodiff:
            grad_scale, count = gradient_scale(
                probs_grad_scale(v["x"], v["y"], v["w"], v["q"], case.label_smoothing),
                _factor(case, inputs, v), case.shape)
            modes = [False] + ([True] if "compile" in case.tags else [])
            for compiled in modes:
                label = "compiled " if compiled else "autodiff "
                loss, grad = b.autodiff_probs_grad(p, y, compiled=compiled, **options)
                out += [compare(f"{label}loss", self._numpy(loss), golden.loss, loss_scale,
                                case.dtype, terms),
                        compare(f"{label}grad[probs]", self._numpy(grad), golden.grads["probs"],
                                grad_scale, case.dtype, count)]

    # -- error cases --

    def run_error(self, case: ErrorCase) -> CaseResult:
        result = CaseResult(self.backend.name, self.device, "errors", f"error/{case.name}")
        arrays = case.arrays()
        values = {k: self.backend.asarray(v, self.device) if k in case.native else v
                  for k, v in arrays.items()}
        function = {"logits": self.backend.binary_cross_entropy_with_logits,
                    "probs": self.backend.binary_cross_entropy,
                    "value_and_grad": self.backend.value_and_grad}[case.function]
        try:
            function(values["input"], values["targets"], **case.options)
        except case.error:
            result.comparisons.append(Comparison(f"raises {case.error.__name__}", True, 0.0))
        except Exception as exc:
            result.comparisons.append(Comparison(
                f"raises {case.error.__name__}", False, np.inf,
                f"raised {type(exc).__name__}: {exc}"))
        else:
            result.comparisons.append(Comparison(f"raises {case.error.__name__}", False, np.inf,
                                                 "returned without raising"))
        return result


def _factor(case: Case, inputs: dict[str, np.ndarray], v: dict[str, Any]) -> Any:
    """d(reduced loss)/d(element loss) per element."""
    from bce_core.arrays import reduce_loss

    with np.errstate(all="ignore"):
        return reduce_loss(np.ones(case.shape), case.reduction, mask=inputs.get("mask"),
                           weight=v["w"]).factor


def reproduce(backend: str, case_id: str, device: str = "cpu") -> CaseResult:
    """Re-run one case and print what it compared; returns the result."""
    runner = CaseRunner(bce_core.get_backend(backend), device)
    if case_id.startswith("error/"):
        name = case_id.split("/", 1)[1]
        result = runner.run_error(next(c for c in ERROR_CASES if c.name == name))
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


def select_devices(backend: Any, which: str) -> list[str]:
    """The backend's usable devices for ``--device cpu|gpu|all``."""
    devices = list(backend.devices())
    if which == "cpu":
        return [d for d in devices if d.split(":")[0] == "cpu"]
    if which == "gpu":
        return [d for d in devices if d.split(":")[0] != "cpu"]
    return devices


def run_suite(backend_names: Sequence[str] | None = None, *, dtypes: Sequence[str] = DTYPES,
              device: str = "cpu", on_step: Callable[[str], None] | None = None,
              on_total: Callable[[int], None] | None = None) -> Report:
    """Run the grid on every named (default: every installed) backend."""
    registry = get_registry()
    infos = [registry.info(name) for name in (backend_names or registry.names())]
    report = Report(bce_core.SPEC_VERSION, [asdict(i) for i in infos],
                    [asdict(e) for e in registry.plugin_errors])
    plan: list[tuple[CaseRunner, Case | ErrorCase]] = []
    for info in infos:
        if info.status != "ok":
            if backend_names:  # asked for by name: not being able to run it is a failure
                report.results.append(CaseResult(info.name, device, "-", "load",
                                                 error=f"{info.status}: {info.error}"))
            else:
                report.skipped.append({"backend": info.name,
                                       "reason": f"{info.status}: {info.error}"})
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
                    report.skipped.append({"backend": info.name, "device": dev, "dtype": dtype,
                                           "reason": reason})
                    continue
                plan += [(runner, case) for case in all_cases((dtype,))]
    if on_total:
        on_total(len(plan))
    for runner, case in plan:
        if on_step:
            on_step(f"{runner.backend.name} {runner.device}")
        if isinstance(case, ErrorCase):
            report.results.append(runner.run_error(case))
        else:
            report.results.append(runner.run(case))
    return report
