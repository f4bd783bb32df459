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
from typing import Any, NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .machine import describe
from .results import BackendResult, BenchResult, Comparison, Overhead
from .units import fmt_rate, fmt_ratio, fmt_size, fmt_time
from .variants import styles_for

RATIO_HEADER = "native ÷ bce-core time (>1: bce-core faster)"
RATIO_EXPLAINED = (
    "native ÷ bce-core is the framework's median time divided by bce-core's, both "
    "measured in the same interleaved rounds: above 1, bce-core is faster"
)


def _styled_ratio(ratio: float | None) -> str:
    if ratio is None:
        return fmt_ratio(None)
    style = "green" if ratio > 1.05 else "red" if ratio < 0.95 else ""
    return f"[{style}]{fmt_ratio(ratio)}[/]" if style else fmt_ratio(ratio)


def _ratio_cell(row: Comparison) -> str:
    return _styled_ratio(row.ratio)


def _style_order(result: BackendResult) -> list[str]:
    """The calling styles of a backend: in ``variants.STYLES`` order, then any others."""
    known = [style.name for style in styles_for(result.name)]
    found = list(dict.fromkeys(row.style for row in result.comparisons))
    return [name for name in known if name in found] + [name for name in found if name not in known]


def ordered(result: BackendResult) -> list[Comparison]:
    """A backend's comparisons grouped by calling style, then dtype, then size."""
    styles = {name: i for i, name in enumerate(_style_order(result))}
    dtypes = {d: i for i, d in enumerate(dict.fromkeys(row.dtype for row in result.comparisons))}
    return sorted(
        result.comparisons, key=lambda row: (styles[row.style], dtypes[row.dtype], row.size)
    )


def backend_table(result: BackendResult) -> Table:
    """One backend's comparisons, a section per calling style."""
    device = f" on {result.device}" if result.device else ""
    table = Table(title=f"{result.name} {result.version}{device}", title_justify="left")
    for header, justify in (
        ("calling style", "left"),
        ("size", "right"),
        ("dtype", "left"),
        ("bce-core call", "left"),
        ("native call", "left"),
        ("bce-core median", "right"),
        ("native median", "right"),
        ("bce-core elem/s", "right"),
        ("native elem/s", "right"),
        (RATIO_HEADER, "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    rows = ordered(result)
    for i, row in enumerate(rows):
        native = row.native
        first = i == 0 or rows[i - 1].style != row.style
        last = i == len(rows) - 1 or rows[i + 1].style != row.style
        table.add_row(
            escape(row.style) if first else "",
            fmt_size(row.size),
            row.dtype,
            escape(row.ours.label),
            escape(_native_label(row)),
            fmt_time(row.ours.median_s),
            "—" if native is None else fmt_time(native.median_s),
            fmt_rate(row.ours.throughput),
            "—" if native is None else fmt_rate(native.throughput),
            _ratio_cell(row),
            end_section=last,
        )
    return table


class _Line(NamedTuple):
    """One calling style of one backend (and dtype): its comparisons by size."""

    backend: str
    style: str
    dtype: str
    ours: str
    native: str
    by_size: dict[int, Comparison]


def lines(result: BenchResult) -> list[_Line]:
    """Every (backend, calling style, dtype) with its rows by size, in report order.

    The rows of the summary tables and the lines of the picture.
    """
    found: dict[tuple[str, str, str], _Line] = {}
    for backend in result.backends:
        for row in ordered(backend):
            key = (backend.name, row.style, row.dtype)
            if key not in found:
                native = _native_label(row)
                found[key] = _Line(*key, row.ours.label, native, {})
            found[key].by_size[row.size] = row
    return list(found.values())


def _sizes(result: BenchResult) -> list[int]:
    return sorted({row.size for backend in result.backends for row in backend.comparisons})


def _several_dtypes(result: BenchResult) -> bool:
    return len({row.dtype for b in result.backends for row in b.comparisons}) > 1


def summary_table(result: BenchResult) -> Table:
    """native ÷ bce-core for every backend and calling style (rows) and size (columns)."""
    sizes, dtypes = _sizes(result), _several_dtypes(result)
    table = Table(
        title=f"{RATIO_HEADER}, by calling style and size", title_justify="left", show_lines=False
    )
    headers = ["backend", "calling style"] + (["dtype"] if dtypes else [])
    for header in headers + ["bce-core call", "native call"]:
        table.add_column(header)
    for size in sizes:
        table.add_column(fmt_size(size), justify="right")
    found = lines(result)
    for i, line in enumerate(found):
        cells = [line.backend, line.style] + ([line.dtype] if dtypes else [])
        table.add_row(
            *(escape(cell) for cell in cells + [line.ours, line.native]),
            *(_ratio_cell(line.by_size[size]) if size in line.by_size else "" for size in sizes),
            end_section=i + 1 < len(found) and found[i + 1].backend != line.backend,
        )
    return table


OVERHEAD_TITLE = (
    "per-call overhead of the public API: bce_core.<function>(x, y) against "
    "bce_core.get_backend(name).<function>(x, y), float32, in µs; the overhead is the "
    "median of the per-round differences of alternated single calls"
)
OVERHEAD_HEADERS = (
    "backend",
    "function",
    "elements",
    "API call",
    "backend call",
    "overhead",
    "95% interval",
    "rounds",
)


def _overhead_cells(row: Overhead) -> list[str]:
    low, high = row.interval_s
    return [
        row.backend,
        row.function,
        str(row.size),
        f"{row.api.median_s * 1e6:.2f}",
        f"{row.direct.median_s * 1e6:.2f}",
        f"{row.overhead_s * 1e6:+.2f}",
        f"{low * 1e6:+.2f} to {high * 1e6:+.2f}",
        str(len(row.api.samples_s)),
    ]


def overhead_table(results: list[BackendResult]) -> Table:
    """Per-call time of the top-level API and of the backend object, in µs."""
    table = Table(title=OVERHEAD_TITLE, title_justify="left")
    for header in OVERHEAD_HEADERS:
        table.add_column(header, justify="left" if header in ("backend", "function") else "right")
    for result in results:
        for i, row in enumerate(result.overheads):
            table.add_row(*_overhead_cells(row), end_section=i == len(result.overheads) - 1)
    return table


def _native_label(row: Comparison, code: bool = False) -> str:
    if row.native is None:
        return "—"
    label = f"`{row.native.label}`" if code else row.native.label
    return label + (" ≠" if row.disagreement else "")


def _notes(result: BackendResult) -> list[str]:
    lines = [f"{result.name}: {note}" for note in result.notes]
    lines += [
        f"≠ {result.name} {fmt_size(row.size)} {row.dtype} {row.style}: {row.ours.label} and "
        f"{row.native.label} disagree: {row.disagreement}"
        for row in result.comparisons
        if row.disagreement and row.native is not None
    ]
    return lines


def busy_note(machine: dict[str, Any]) -> str | None:
    """A warning when the machine had more runnable work than cores as the run began.

    >>> busy_note({"load_average": [7.4, 6.0, 4.0], "cores": 2})[:40]
    'the machine was busy (load average 7.4 o'
    >>> busy_note({"load_average": [0.5], "cores": 2}) is None
    True
    """
    load, cores = machine.get("load_average") or [], machine.get("cores") or 0
    if not load or not cores or load[0] <= cores:
        return None
    return (
        f"the machine was busy (load average {load[0]:g} on {cores} cores at the start): "
        "times are noisy, small sizes most, where a framework's thread pool can wait for "
        "a thread another process holds"
    )


def legend_lines(result: BenchResult) -> list[str]:
    """What was run and how to read the tables (the machine is named before the run starts)."""
    busy = busy_note(result.machine)
    return ([f"warning: {busy}"] if busy else []) + [
        f"command: {result.command}",
        "each time is the median of interleaved rounds of bce-core and the framework's own "
        "loss (elements per second from that median); " + RATIO_EXPLAINED,
        "a calling style is how a user calls the loss (eagerly, in tf.function, under "
        "jax.jit, with backward() or a tape): each pairs our call with the framework's own "
        "call made the same way",
    ]


def print_report(result: BenchResult, console: Console) -> None:
    """Every backend's table with its notes, the summary, the overhead, and what was skipped."""
    for backend in result.backends:
        console.print(backend_table(backend))
        for line in _notes(backend):
            console.print(f"  note: {line}", highlight=False, markup=False)
        for failure in backend.failures:
            console.print(f"  [red]failed[/]: {backend.name}: {escape(failure)}", highlight=False)
    if any(backend.comparisons for backend in result.backends):
        console.print(summary_table(result))
    if any(backend.overheads for backend in result.backends):
        console.print(overhead_table(result.backends))
    for skipped in result.skipped:
        console.print(
            f"[yellow]skipped[/] {skipped.name} ({skipped.status}): {escape(skipped.reason)}",
            highlight=False,
        )
    console.print(f"measured in {result.seconds:.0f} s", highlight=False)


def _code(label: str) -> str:
    return (
        "—"
        if label == "—"
        else f"`{label.removesuffix(' ≠')}`" + (" ≠" if label.endswith(" ≠") else "")
    )


def _markdown_table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown(result: BenchResult, picture: str | None = None) -> str:
    """The README section: the machine, the exact command, the ratios by calling style and
    size, the times, the overhead; ``picture``: the path of the plot, relative to the README.
    """
    dtypes = sorted({row.dtype for b in result.backends for row in b.comparisons})
    lines_ = [
        f"Measured with `{result.command}` on {describe(result.machine)}, in "
        f"{result.seconds:.0f} s. Inputs are float32 logits ~ N(0, 3) with 0/1 targets (cast to "
        f"{', '.join(dtypes) or 'the dtype'}), reduced by the mean. Each time is the median of "
        f"interleaved rounds (our call and the framework's alternate); {RATIO_EXPLAINED}.",
        "",
    ]
    if picture:
        lines_ += [f"![native ÷ bce-core time against size, per calling style]({picture})", ""]
    sizes, several = _sizes(result), _several_dtypes(result)
    found = lines(result)
    key_header = ["backend", "calling style"] + (["dtype"] if several else [])
    key_align = ["---"] * len(key_header)

    def key(line: _Line) -> list[str]:
        return [line.backend, line.style] + ([line.dtype] if several else [])

    lines_ += ["native ÷ bce-core time, by calling style and number of elements:", ""]
    lines_ += _markdown_table(
        key_header + ["bce-core", "native"] + [fmt_size(size) for size in sizes],
        key_align + ["---", "---"] + ["---:"] * len(sizes),
        [
            key(line)
            + [_code(line.ours), _code(line.native)]
            + [fmt_ratio(line.by_size[s].ratio) if s in line.by_size else "" for s in sizes]
            for line in found
        ],
    )

    def times(row: Comparison) -> str:
        native = "—" if row.native is None else fmt_time(row.native.median_s)
        return f"{fmt_time(row.ours.median_s)} / {native}"

    lines_ += ["", "<details><summary>Median times, bce-core / native</summary>", ""]
    lines_ += _markdown_table(
        key_header + [fmt_size(size) for size in sizes],
        key_align + ["---:"] * len(sizes),
        [
            key(line) + [times(line.by_size[s]) if s in line.by_size else "" for s in sizes]
            for line in found
        ],
    )
    lines_ += ["", "</details>"]
    overheads = [row for backend in result.backends for row in backend.overheads]
    if overheads:
        lines_ += [
            "",
            "Per-call overhead of the public API, `bce_core.<function>(x, y)`, over "
            "`bce_core.get_backend(name).<function>(x, y)` (float32, µs): the median of the "
            "per-round differences of alternated single calls, with its 95% interval:",
            "",
        ]
        lines_ += _markdown_table(
            list(OVERHEAD_HEADERS),
            ["---", "---"] + ["---:"] * (len(OVERHEAD_HEADERS) - 2),
            [_overhead_cells(row) for row in overheads],
        )
    busy = busy_note(result.machine)
    notes = [busy] if busy else []
    notes += [line for backend in result.backends for line in _notes(backend)]
    notes += [
        f"{backend.name}: {failure}" for backend in result.backends for failure in backend.failures
    ]
    notes += [f"{s.name} not measured ({s.status})" for s in result.skipped]
    if notes:
        lines_ += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines_)


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


def read_json(path: str | Path) -> BenchResult:
    """A run written by :func:`write_json`; raises OSError, or ValueError for a file that
    is not one (not JSON, or JSON of another shape).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json") as saved:
    ...     _ = saved.write("[1, 2]")
    ...     saved.flush()
    ...     read_json(saved.name)
    Traceback (most recent call last):
    ...
    ValueError: not a run saved by bce bench --json (a list)
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    shape = {"command": str, "machine": dict, "config": dict, "backends": list, "skipped": list}
    if not isinstance(data, dict):
        raise ValueError(f"not a run saved by bce bench --json (a {type(data).__name__})")
    for key, kind in shape.items():
        if key in data and not isinstance(data[key], kind):
            raise ValueError(
                f"not a run saved by bce bench --json ({key!r} is a {type(data[key]).__name__}, "
                f"not a {kind.__name__})"
            )
    try:
        return BenchResult.from_json(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"not a run saved by bce bench --json ({type(exc).__name__}: {exc})"
        ) from None
