"""Presenting a conformance report: the console table, JSON, and an HTML page with plots.

>>> from bce_conformance.runner import run_suite
>>> report = run_suite(["numpy"], dtypes=("float32",))
>>> "numpy" in render_text(report)
True
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from .runner import Report

GRADE_STYLE = {"A": "green", "B": "yellow", "F": "red", "-": ""}


def _number(value: float) -> str:
    if not np.isfinite(value):
        return "inf"
    return f"{value:.2g}" if value < 100 else f"{value:.3g}"


def header_lines(report: Report) -> list[str]:
    """What is under test: spec version, backends with versions and devices, failed plugins."""
    lines = [f"bce conformance, spec {report.spec_version}"]
    for info in report.backends:
        if info["status"] == "ok":
            lines.append(f"  {info['name']} {info['version']} on {', '.join(info['devices'])}")
        else:
            lines.append(f"  {info['name']}: {info['status']}"
                         + (f" ({info['error']})" if info["status"] == "failed" else ""))
    for error in report.plugin_errors:
        lines.append(f"  plugin {error['plugin']} failed to load: {error['error']}")
    return lines


def summary_table(report: Report) -> Table:
    table = Table(title="bce conformance: parity (pass/fail) and accuracy (worst ULP vs exact)")
    for column in ("backend", "device", "dtype", "passed", "failed", "loss ULP", "grad ULP",
                   "grade"):
        label = column in ("backend", "device", "dtype")
        table.add_column(column, justify="left" if label else "right", no_wrap=label)
    for row in report.summaries():
        grade = "-" if row.dtype == "errors" else row.grade
        if row.dtype == "errors" and row.failed:
            grade = "F"
        style = GRADE_STYLE[grade]
        ulps = ("", "") if row.dtype == "errors" else (_number(row.worst_loss_ulp),
                                                        _number(row.worst_grad_ulp))
        table.add_row(row.backend, row.device, row.dtype, str(row.passed),
                      f"[red]{row.failed}[/]" if row.failed else "0", *ulps,
                      f"[{style}]{grade}[/]" if style else grade)
    return table


def print_report(report: Report, console: Console, *, max_failures: int = 40) -> None:
    """The closing table, skips, and failures with reproduction snippets."""
    console.print(summary_table(report))
    console.print("Grades: A = passes and within 4 ULP of exact wherever graded; "
                  "B = passes parity, less accurate; F = fails.", highlight=False)
    for skip in report.skipped:
        where = " ".join(skip.get(k, "") for k in ("backend", "device", "dtype")).strip()
        console.print(f"[yellow]skipped[/] {where}: {skip['reason']}", highlight=False)
    for failure in report.failures[:max_failures]:
        console.print(f"[red]FAILED[/] {failure.backend} {failure.device} {failure.dtype} "
                      f"{failure.case}", highlight=False)
        if failure.error:
            console.print(f"    {failure.error}", highlight=False, markup=False)
        for comparison in failure.comparisons:
            if not comparison.passed:
                console.print(f"    {comparison.quantity}: {comparison.detail}",
                              highlight=False, markup=False)
        console.print("    " + failure.reproduction().replace("\n", "\n    "),
                      highlight=False, markup=False)
    if len(report.failures) > max_failures:
        console.print(f"... and {len(report.failures) - max_failures} more failures "
                      f"(all are in the --json report)")


def render_text(report: Report) -> str:
    """The console report as plain text."""
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_report(report, console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def write_json(report: Report, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# -- HTML --------------------------------------------------------------------


def error_profile(backend: Any, device: str, dtype: str) -> dict[str, np.ndarray]:
    """ULP error of loss and gradient along a sweep of logits (targets 0, 1 and 0.3)."""
    from . import oracle
    from .cases import numpy_dtype

    magnitudes = np.geomspace(1e-3, 1e3, 61)
    logits = np.concatenate([-magnitudes[::-1], [0.0], magnitudes]).astype(numpy_dtype(dtype))
    profile: dict[str, np.ndarray] = {"logits": logits.astype(np.float64)}
    for target in (0.0, 1.0, 0.3):
        x = backend.asarray(logits, device)
        y = backend.asarray(np.full(logits.shape, target, numpy_dtype(dtype)), device)
        loss = np.asarray(backend.to_numpy(backend.binary_cross_entropy_with_logits(
            x, y, reduction="none")), np.float64)
        _, grad = backend.value_and_grad(x, y, reduction="none")
        grad = np.asarray(backend.to_numpy(grad), np.float64)
        exact_t = float(np.asarray(target, numpy_dtype(dtype)).astype(np.float64))
        points = [float(v) for v in profile["logits"]]
        grads = [oracle.element_grad(v, exact_t) for v in points]
        profile[f"loss y={target:g}"] = oracle.ulp_errors(
            loss, [oracle.element_loss(v, exact_t) for v in points], dtype)
        profile[f"grad y={target:g}"] = oracle.ulp_errors(
            grad, [g[0] for g in grads], dtype,
            None if target in (0.0, 1.0) else [g[1] for g in grads])
    return profile


def _plot(profiles: dict[str, dict[str, np.ndarray]]) -> str:
    """A PNG (base64) of ULP error against logit: one panel per backend/device/dtype."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(profiles)
    columns = 4
    rows = max(1, -(-len(keys) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.ravel(), keys):
        profile = profiles[key]
        for name, values in profile.items():
            if name != "logits":
                ax.plot(profile["logits"], np.maximum(np.minimum(values, 1e9), 1e-3),
                        label=name, linewidth=1, linestyle="-" if "loss" in name else "--")
        ax.set_xscale("symlog", linthresh=1e-2)
        ticks = [-1e3, -1, 0, 1, 1e3]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.axhline(4, color="grey", linewidth=0.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("logit")
        ax.set_ylabel("ULP error")
    axes.ravel()[0].legend(fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_html(report: Report, path: str | Path, profiles: dict[str, dict[str, np.ndarray]]
               ) -> None:
    """A self-contained HTML page: header, table, failures and the error-versus-logit plot."""
    escape = html.escape
    rows = []
    for row in report.summaries():
        grade = "-" if row.dtype == "errors" else row.grade
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
            row.backend, row.device, row.dtype, row.passed, row.failed,
            "" if row.dtype == "errors" else _number(row.worst_loss_ulp),
            "" if row.dtype == "errors" else _number(row.worst_grad_ulp), grade)) + "</tr>")
    failures = []
    for failure in report.failures:
        details = [failure.error] if failure.error else []
        details += [f"{c.quantity}: {c.detail}" for c in failure.comparisons if not c.passed]
        failures.append(f"<li><b>{escape(failure.backend)} {escape(failure.device)} "
                        f"{escape(failure.case)}</b><pre>{escape(chr(10).join(details))}\n\n"
                        f"{escape(failure.reproduction())}</pre></li>")
    plot = ""
    if profiles:
        try:
            plot = f'<img alt="ULP error versus logit" src="data:image/png;base64,{_plot(profiles)}">'
        except ImportError:
            plot = "<p>Install matplotlib (<code>pip install 'bce-core[report]'</code>) for plots.</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bce conformance</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}pre{{background:#f6f6f6;padding:6px}}</style>
</head><body>
<h1>bce conformance</h1>
<pre>{escape(chr(10).join(header_lines(report)))}</pre>
<table><tr><th>backend</th><th>device</th><th>dtype</th><th>passed</th><th>failed</th>
<th>loss ULP</th><th>grad ULP</th><th>grade</th></tr>
{''.join(rows)}</table>
<p>Grades: A = passes and within 4 ULP of exact wherever graded; B = passes parity, less
accurate; F = fails.</p>
<h2>Error versus logit</h2>
<p>ULP error of the element loss (solid) and of d loss / d logit (dashed) against the exact
value, for targets 0, 1 and 0.3; the grey line is 4 ULP.</p>
{plot}
<h2>Failures ({len(report.failures)})</h2>
<ul>{''.join(failures) or '<li>none</li>'}</ul>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
