"""Showing a run: rich tables on the terminal, Markdown for the README, and JSON.

>>> from bce_bench.results import BenchResult
>>> text = markdown(BenchResult("bce bench --sizes 100", {"cpu": "Some CPU", "cores": 2,
...     "logical_cpus": 2, "platform": "Linux", "python": "CPython 3.11", "versions": {},
...     "load_average": []}, {}))
>>> "`bce bench --sizes 100`" in text and "Some CPU" in text
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .machine import describe
from .results import BackendResult, BenchResult, Comparison
from .units import fmt_rate, fmt_ratio, fmt_size, fmt_time

RATIO_HEADER = "native ÷ bce-core time (>1: bce-core faster)"
RATIO_EXPLAINED = (
    "native ÷ bce-core is the framework's median time divided by bce-core's, both "
    "measured in the same interleaved rounds: above 1, bce-core is faster"
)


def _ratio_cell(row: Comparison) -> str:
    ratio = row.ratio
    if ratio is None:
        return fmt_ratio(None)
    style = "green" if ratio > 1.05 else "red" if ratio < 0.95 else ""
    return f"[{style}]{fmt_ratio(ratio)}[/]" if style else fmt_ratio(ratio)


def backend_table(result: BackendResult) -> Table:
    """One backend's comparisons, in the order measured."""
    device = f" on {result.device}" if result.device else ""
    table = Table(title=f"{result.name} {result.version}{device}", title_justify="left")
    for header, justify in (
        ("size", "right"),
        ("dtype", "left"),
        ("task", "left"),
        ("bce-core variant", "left"),
        ("native variant", "left"),
        ("bce-core median", "right"),
        ("native median", "right"),
        ("bce-core elem/s", "right"),
        ("native elem/s", "right"),
        (RATIO_HEADER, "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in result.comparisons:
        native = row.native
        table.add_row(
            fmt_size(row.size),
            row.dtype,
            row.task,
            row.ours.label,
            _native_label(row),
            fmt_time(row.ours.median_s),
            "—" if native is None else fmt_time(native.median_s),
            fmt_rate(row.ours.throughput),
            "—" if native is None else fmt_rate(native.throughput),
            _ratio_cell(row),
        )
    return table


def overhead_table(results: list[BackendResult]) -> Table:
    """Per-call time of the top-level API and of the backend object, in µs."""
    table = Table(
        title="per-call overhead: bce_core.binary_cross_entropy_with_logits against "
        "get_backend(name).binary_cross_entropy_with_logits (float32)",
        title_justify="left",
    )
    for header in ("backend", "elements", "API call (µs)", "backend call (µs)", "overhead (µs)"):
        table.add_column(header, justify="left" if header == "backend" else "right")
    for result in results:
        for row in result.overheads:
            table.add_row(
                result.name,
                str(row.size),
                f"{row.api.median_s * 1e6:.2f}",
                f"{row.direct.median_s * 1e6:.2f}",
                f"{row.overhead_s * 1e6:+.2f}",
            )
    return table


def _native_label(row: Comparison, code: bool = False) -> str:
    if row.native is None:
        return "—"
    label = f"`{row.native.label}`" if code else row.native.label
    return label + (" ≠" if row.disagreement else "")


def _notes(result: BackendResult) -> list[str]:
    lines = [f"{result.name}: {note}" for note in result.notes]
    lines += [
        f"≠ {result.name} {fmt_size(row.size)} {row.dtype}: {row.ours.label} and "
        f"{row.native.label} disagree: {row.disagreement}"
        for row in result.comparisons
        if row.disagreement and row.native is not None
    ]
    return lines


def legend_lines(result: BenchResult) -> list[str]:
    """What was run and how to read the tables (the machine is named before the run starts)."""
    return [
        f"command: {result.command}",
        "each time is the median of interleaved rounds of bce-core and the framework's own "
        "loss (elements per second from that median); " + RATIO_EXPLAINED,
    ]


def print_report(result: BenchResult, console: Console) -> None:
    """Every backend's table with its notes, the overhead table, and what was skipped."""
    for backend in result.backends:
        console.print(backend_table(backend))
        for line in _notes(backend):
            console.print(f"  note: {line}", highlight=False, markup=False)
        for failure in backend.failures:
            console.print(f"  [red]failed[/]: {backend.name}: {escape(failure)}", highlight=False)
    if any(backend.overheads for backend in result.backends):
        console.print(overhead_table(result.backends))
    for skipped in result.skipped:
        console.print(
            f"[yellow]skipped[/] {skipped.name} ({skipped.status}): {escape(skipped.reason)}",
            highlight=False,
        )
    console.print(f"measured in {result.seconds:.0f} s", highlight=False)


def markdown(result: BenchResult) -> str:
    """The README section: the machine, the exact command, the comparisons and the overhead."""
    lines = [
        f"Measured with `{result.command}` on {describe(result.machine)}, in "
        f"{result.seconds:.0f} s. Inputs are float32 logits ~ N(0, 3) with 0/1 targets (cast to "
        f"the dtype), reduced by the mean. Each time is the median of interleaved rounds (our "
        f"call and the framework's alternate); {RATIO_EXPLAINED}.",
        "",
        "| backend | size | dtype | task | bce-core | native | bce-core median | native median "
        "| native ÷ bce-core |",
        "|---|---:|---|---|---|---|---:|---:|---:|",
    ]
    for backend in result.backends:
        for row in backend.comparisons:
            native = row.native
            lines.append(
                f"| {backend.name} | {fmt_size(row.size)} | {row.dtype} | {row.task} | "
                f"`{row.ours.label}` | {_native_label(row, code=True)} | "
                f"{fmt_time(row.ours.median_s)} | "
                f"{'—' if native is None else fmt_time(native.median_s)} | "
                f"{fmt_ratio(row.ratio)} |"
            )
    overheads = [row for backend in result.backends for row in backend.overheads]
    if overheads:
        lines += [
            "",
            "Per-call overhead of `bce_core.binary_cross_entropy_with_logits` over "
            "`bce_core.get_backend(name).binary_cross_entropy_with_logits` (float32):",
            "",
            "| backend | elements | API call (µs) | backend call (µs) | overhead (µs) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {row.backend} | {row.size} | {row.api.median_s * 1e6:.2f} | "
            f"{row.direct.median_s * 1e6:.2f} | {row.overhead_s * 1e6:+.2f} |"
            for row in overheads
        ]
    notes = [line for backend in result.backends for line in _notes(backend)]
    notes += [
        f"{backend.name}: {failure}" for backend in result.backends for failure in backend.failures
    ]
    notes += [f"{s.name} not measured ({s.status})" for s in result.skipped]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def write_json(result: BenchResult, path: str | Path) -> None:
    """Every number of the run, as JSON."""
    text = json.dumps(_finite(result.to_json()), indent=2, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
