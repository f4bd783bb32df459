"""Runs the case grid on backends and reports: ``bce conformance``.

For each backend, device and dtype, every case's forward loss,
``value_and_grad`` gradients and ``grad_hess`` are compared with the float64
reference under the parity rule of ``checks``, and the result dtype is checked.

>>> report = run_suite(["numpy"], dtypes=("float64",))
>>> report.failures
[]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import bce_core
from bce_core import reference
from bce_core.registry import get_registry

from .cases import DTYPES, Case, all_cases, case_by_id, numpy_dtype
from .checks import Comparison, compare, gradient_scale, logit_scales, probs_loss_scale, reduced_scale


@dataclass
class CaseResult:
    """All comparisons of one case on one backend and device."""

    backend: str
    device: str
    dtype: str
    case: str
    comparisons: list[Comparison] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.comparisons)

    def worst(self, prefix: str) -> float:
        values = [c.worst for c in self.comparisons if c.quantity.startswith(prefix)]
        return max(values, default=0.0)

    def reproduction(self) -> str:
        return ("from bce_conformance.runner import reproduce\n"
                f"reproduce({self.backend!r}, {self.case!r}, device={self.device!r})")


@dataclass
class Report:
    """Everything one run found, printable as a table and as JSON."""

    spec_version: str
    backends: list[dict[str, Any]]
    plugin_errors: list[dict[str, Any]]
    results: list[CaseResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def groups(self) -> dict[tuple[str, str, str], list[CaseResult]]:
        grouped: dict[tuple[str, str, str], list[CaseResult]] = {}
        for result in self.results:
            grouped.setdefault((result.backend, result.device, result.dtype), []).append(result)
        return grouped

    def to_json(self) -> dict[str, Any]:
        summary = [{"backend": b, "device": d, "dtype": t, "cases": len(rs),
                    "passed": sum(r.passed for r in rs),
                    "worst_loss": max(r.worst("loss") for r in rs),
                    "worst_grad": max(r.worst("grad") for r in rs)}
                   for (b, d, t), rs in self.groups().items()]
        failures = [dict(asdict(r), reproduction=r.reproduction()) for r in self.failures]
        return {"spec_version": self.spec_version, "backends": self.backends,
                "plugin_errors": self.plugin_errors, "summary": summary,
                "skipped": self.skipped, "failures": failures}


# -- one case -----------------------------------------------------------------


def _float64(inputs: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, Any]:
    """The case's values as the backend sees them (cast to the input dtype), in float64."""
    def as64(name: str, default: Any = 1.0) -> Any:
        value = inputs.get(name)
        return default if value is None else np.asarray(value).astype(dtype).astype(np.float64)
    return {"x": as64("logits") if "logits" in inputs else as64("probs"), "y": as64("targets"),
            "w": as64("weight"), "q": as64("pos_weight")}


def run_case(backend: Any, case: Case, device: str) -> CaseResult:
    """Run one case on ``backend`` and compare every result with the reference."""
    result = CaseResult(backend.name, device, case.dtype, case.id)
    inputs = case.inputs()
    try:
        native = {name: backend.asarray(value, device) for name, value in inputs.items()}
        if case.form == "logits":
            result.comparisons = _check_logits(backend, case, inputs, native)
        else:
            result.comparisons = _check_probs(backend, case, inputs, native)
    except Exception as exc:  # a backend that raises fails the case, with its error
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _dtype_check(quantity: str, backend: Any, value: Any, dtype: str) -> Comparison:
    got = backend.to_numpy(value).dtype.name
    return Comparison(f"dtype[{quantity}]", got == dtype, 0.0 if got == dtype else np.inf,
                      "" if got == dtype else f"result dtype {got}, expected {dtype}")


def _check_logits(backend: Any, case: Case, inputs: dict[str, np.ndarray],
                  native: dict[str, Any]) -> list[Comparison]:
    options = case.options()
    arrays = {k: native.get(k) for k in ("weight", "pos_weight", "mask")}
    ref_arrays = {k: inputs.get(k) for k in ("weight", "pos_weight", "mask")}
    v = _float64(inputs, numpy_dtype(case.dtype))
    scales = logit_scales(v["x"], v["y"], v["w"], v["q"], case.label_smoothing)
    mask, weight = inputs.get("mask"), v["w"]
    loss_scale, terms = reduced_scale(scales.loss, case.reduction, mask, weight)
    out: list[Comparison] = []

    loss = backend.binary_cross_entropy_with_logits(native["logits"], native["targets"], **arrays,
                                                   **options)
    expected = reference.binary_cross_entropy_with_logits(inputs["logits"], inputs["targets"],
                                                          **ref_arrays, **options)
    out += [compare("loss", backend.to_numpy(loss), expected, loss_scale, case.dtype, terms),
            _dtype_check("loss", backend, loss, case.dtype)]

    wrt = ["logits"] + (["targets"] if case.targets in ("hard", "soft") else [])
    wrt += [name for name in ("weight", "pos_weight") if name in inputs]
    loss, grads = backend.value_and_grad(native["logits"], native["targets"], **arrays,
                                         wrt=tuple(wrt), **options)
    expected_loss, expected_grads = reference.value_and_grad(
        inputs["logits"], inputs["targets"], **ref_arrays, wrt=tuple(wrt), **options)
    out.append(compare("loss[value_and_grad]", backend.to_numpy(loss), expected_loss, loss_scale,
                       case.dtype, terms))
    factor = reference_factor(case, inputs, v)
    element_scales = {"logits": scales.grad_logits, "targets": scales.grad_targets,
                      # weighted_mean: d/dw = (bracket - loss) / sum(w)
                      "weight": scales.bracket + np.abs(expected_loss),
                      "pos_weight": scales.grad_pos_weight}
    for name, grad, expected_grad in zip(wrt, grads, expected_grads):
        scale, count = gradient_scale(element_scales[name], factor, np.shape(expected_grad))
        out += [compare(f"grad[{name}]", backend.to_numpy(grad), expected_grad, scale, case.dtype,
                        count),
                _dtype_check(f"grad[{name}]", backend, grad, case.dtype)]

    if case.reduction == "none" and "mask" not in inputs and not case.label_smoothing:
        grad, hess = backend.grad_hess(native["logits"], native["targets"],
                                       weight=arrays["weight"], pos_weight=arrays["pos_weight"])
        expected_grad, expected_hess = reference.grad_hess(
            inputs["logits"], inputs["targets"], weight=ref_arrays["weight"],
            pos_weight=ref_arrays["pos_weight"])
        out += [compare("grad[grad_hess]", backend.to_numpy(grad), expected_grad,
                        scales.grad_logits, case.dtype),
                compare("hessian", backend.to_numpy(hess), expected_hess, scales.hessian,
                        case.dtype)]
    return out


def reference_factor(case: Case, inputs: dict[str, np.ndarray], v: dict[str, Any]) -> Any:
    """d(reduced loss)/d(element loss) per element, from the reference's reduction."""
    dummy = np.ones(case.shape)
    return reduce_factor(dummy, case.reduction, inputs.get("mask"), v["w"])


def reduce_factor(elements: np.ndarray, reduction: str, mask: Any, weight: Any) -> Any:
    from bce_core.arrays import reduce_loss

    return reduce_loss(elements, reduction, mask=mask, weight=weight).factor


def _check_probs(backend: Any, case: Case, inputs: dict[str, np.ndarray],
                 native: dict[str, Any]) -> list[Comparison]:
    options = case.options()
    arrays = {k: native.get(k) for k in ("weight", "pos_weight", "mask")}
    ref_arrays = {k: inputs.get(k) for k in ("weight", "pos_weight", "mask")}
    v = _float64(inputs, numpy_dtype(case.dtype))
    scale = probs_loss_scale(v["x"], v["y"], v["w"], v["q"], case.label_smoothing, -100.0)
    loss_scale, terms = reduced_scale(scale, case.reduction, inputs.get("mask"), v["w"])
    loss = backend.binary_cross_entropy(native["probs"], native["targets"], **arrays, **options)
    expected = reference.binary_cross_entropy(inputs["probs"], inputs["targets"], **ref_arrays,
                                              **options)
    return [compare("loss", backend.to_numpy(loss), expected, loss_scale, case.dtype, terms),
            _dtype_check("loss", backend, loss, case.dtype)]


def reproduce(backend: str, case_id: str, device: str = "cpu") -> CaseResult:
    """Re-run one case and print what it compared; returns the result."""
    result = run_case(bce_core.get_backend(backend), case_by_id(case_id), device)
    print(f"{backend} on {device}, case {case_id}: {'passed' if result.passed else 'FAILED'}")
    if result.error:
        print(f"  error: {result.error}")
    for comparison in result.comparisons:
        mark = "ok  " if comparison.passed else "FAIL"
        print(f"  {mark} {comparison.quantity}: worst {comparison.worst:.3g} {comparison.detail}")
    return result


# -- the suite ----------------------------------------------------------------


def _supports(backend: Any, dtype: str, device: str) -> str | None:
    """None if ``backend`` can hold ``dtype`` arrays on ``device``, else why not."""
    try:
        probe = np.zeros(2, dtype=numpy_dtype(dtype))
    except ImportError as exc:
        return f"{dtype} needs ml_dtypes in NumPy ({exc})"
    try:
        converted = backend.to_numpy(backend.asarray(probe, device))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if converted.dtype.name != dtype:
        return f"{dtype} arrays come back as {converted.dtype.name} (not enabled in this framework)"
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
    plan: list[tuple[Any, str, Case]] = []
    for info in infos:
        if info.status != "ok":
            report.skipped.append({"backend": info.name, "reason": f"{info.status}: {info.error}"})
            continue
        backend = registry.get(info.name)
        devices = select_devices(backend, device)
        if not devices:
            report.skipped.append({"backend": info.name, "reason": f"no {device} device"})
        for dev in devices:
            for dtype in dtypes:
                reason = _supports(backend, dtype, dev)
                if reason:
                    report.skipped.append({"backend": info.name, "device": dev, "dtype": dtype,
                                           "reason": reason})
                    continue
                plan += [(backend, dev, case) for case in all_cases((dtype,))]
    if on_total:
        on_total(len(plan))
    for backend, dev, case in plan:
        if on_step:
            on_step(f"{backend.name} {dev} {case.dtype}")
        report.results.append(run_case(backend, case, dev))
    return report


# -- the command --------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bce conformance``."""
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="Backend to check (repeatable); default: every installed backend.")
    parser.add_argument("--dtype", action="append", choices=DTYPES,
                        help="Dtype to check (repeatable); default: all four.")
    parser.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu",
                        help="Which devices to run on (default: cpu).")
    parser.add_argument("--json", metavar="PATH", help="Also write the full report as JSON.")


def _ulps(value: float) -> str:
    return "inf" if not np.isfinite(value) else f"{value:.3g}"


def print_report(report: Report, console: Console) -> None:
    """The closing table, skips and failures with reproduction snippets."""
    table = Table(title="bce conformance (worst error in units of eps x term magnitude)")
    for column in ("backend", "device", "dtype", "passed", "failed", "worst loss", "worst grad"):
        table.add_column(column, justify="right" if column not in ("backend", "device", "dtype")
                         else "left")
    for (backend, device, dtype), results in report.groups().items():
        failed = sum(not r.passed for r in results)
        style = "red" if failed else "green"
        table.add_row(backend, device, dtype, f"[{style}]{len(results) - failed}[/]",
                      f"[{style}]{failed}[/]",
                      _ulps(max(r.worst("loss") for r in results)),
                      _ulps(max(r.worst("grad") for r in results)))
    console.print(table)
    for skip in report.skipped:
        where = " ".join(skip.get(k, "") for k in ("backend", "device", "dtype")).strip()
        console.print(f"[yellow]skipped[/] {where}: {skip['reason']}", highlight=False)
    for failure in report.failures[:50]:
        console.print(f"[red]FAILED[/] {failure.backend} {failure.device} {failure.case}",
                      highlight=False)
        if failure.error:
            console.print(f"    {failure.error}", highlight=False, markup=False)
        for comparison in failure.comparisons:
            if not comparison.passed:
                console.print(f"    {comparison.quantity}: {comparison.detail}", highlight=False,
                              markup=False)
        console.print("    " + failure.reproduction().replace("\n", "\n    "), highlight=False,
                      markup=False)
    if len(report.failures) > 50:
        console.print(f"... and {len(report.failures) - 50} more failures (see --json)")


def print_header(console: Console, registry: Any, names: Sequence[str]) -> None:
    console.print(f"bce-core {bce_core.__version__}, spec {bce_core.SPEC_VERSION}", highlight=False)
    for error in registry.plugin_errors:
        console.print(f"[red]plugin {error.plugin} failed to load:[/] {error.error}", highlight=False)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point of ``bce conformance``; returns 1 on any failure."""
    console = Console()
    registry = get_registry()
    print_header(console, registry, args.backend or registry.names())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("conformance", total=None)
        report = run_suite(
            args.backend, dtypes=tuple(args.dtype or DTYPES), device=args.device,
            on_total=lambda total: progress.update(task, total=total),
            on_step=lambda what: progress.update(task, advance=1, description=what))
    for info in report.backends:
        state = info["status"] if info["status"] != "ok" else \
            f"{info['version']} on {', '.join(info['devices'])}"
        console.print(f"  {info['name']}: {state}", highlight=False)
    print_report(report, console)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report.to_json(), handle, indent=2, default=str)
        console.print(f"wrote {args.json}")
    if not report.results:
        console.print("[red]no backend was checked[/]")
        return 1
    print(f"{len(report.results) - len(report.failures)} passed, {len(report.failures)} failed",
          file=sys.stderr if report.failures else sys.stdout)
    return 1 if report.failures else 0
