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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from .profiles import ErrorProfile
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
            lines.append(
                f"  {info['name']}: {info['status']}"
                + (f" ({info['error']})" if info["status"] == "failed" else "")
            )
    for error in report.plugin_errors:
        where = error.get("distribution") or "no distribution"
        lines.append(f"  broken plugin {error['plugin']!r} ({where}): {error['error']}")
    return lines


def summary_table(report: Report) -> Table:
    table = Table(title="bce conformance: parity (pass/fail) and accuracy (worst ULP vs exact)")
    for column in (
        "backend",
        "device",
        "dtype",
        "passed",
        "failed",
        "loss ULP",
        "grad ULP",
        "grade",
    ):
        label = column in ("backend", "device", "dtype")
        table.add_column(column, justify="left" if label else "right", no_wrap=label)
    for row in report.summaries():
        grade = "-" if row.dtype == "errors" else row.grade
        if row.dtype == "errors" and row.failed:
            grade = "F"
        style = GRADE_STYLE[grade]
        ulps = (
            ("", "")
            if row.dtype == "errors"
            else (_number(row.worst_loss_ulp), _number(row.worst_grad_ulp))
        )
        table.add_row(
            row.backend,
            row.device,
            row.dtype,
            str(row.passed),
            f"[red]{row.failed}[/]" if row.failed else "0",
            *ulps,
            f"[{style}]{grade}[/]" if style else grade,
        )
    return table


def print_report(report: Report, console: Console, *, max_failures: int = 40) -> None:
    """The closing table, skips, and failures with reproduction snippets."""
    console.print(summary_table(report))
    console.print(
        "Grades: A = passes and within 4 ULP of exact wherever graded; "
        "B = passes parity, less accurate; F = fails.",
        highlight=False,
    )
    for skip in report.skipped:
        where = " ".join(skip.get(k, "") for k in ("backend", "device", "dtype")).strip()
        console.print(f"[yellow]skipped[/] {where}: {skip['reason']}", highlight=False)
    for failure in report.failures[:max_failures]:
        console.print(
            f"[red]FAILED[/] {failure.backend} {failure.device} {failure.dtype} {failure.case}",
            highlight=False,
        )
        if failure.error:
            console.print(f"    {failure.error}", highlight=False, markup=False)
        for comparison in failure.comparisons:
            if not comparison.passed:
                console.print(
                    f"    {comparison.quantity}: {comparison.detail}", highlight=False, markup=False
                )
        console.print(
            "    " + failure.reproduction().replace("\n", "\n    "), highlight=False, markup=False
        )
    if len(report.failures) > max_failures:
        console.print(
            f"... and {len(report.failures) - max_failures} more failures "
            f"(all are in the --json report)"
        )


def render_text(report: Report) -> str:
    """The console report as plain text."""
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_report(report, console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def write_json(report: Report, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2, default=jsonable))


def jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# -- HTML --------------------------------------------------------------------

#: Errors above this many ULP are drawn at it (a dotted line marks it).
CLIP_ULP = 1e9
#: Errors below this (exact results included) are drawn at it: a log axis has no 0.
FLOOR_ULP = 1e-2
#: The worst error of grade A.
GRADE_A_ULP = 4.0
#: Where the logits -inf and +inf sit on the symlog x axis: a decade past the sweep's 1e3.
INF_POSITION = 1e4
#: Target -> colour of its curves (ours and the framework's).
TARGET_COLOURS = {0.0: "#1f77b4", 1.0: "#ff7f0e", 0.3: "#2ca02c"}

# Figure layout in inches: panels of a fixed size, margins for labels, the legend at the right.
PANEL = (3.1, 2.0)
GAPS = (0.2, 0.45)
MARGINS = {"left": 0.8, "right": 1.9, "top": 0.35, "bottom": 0.5}


def _power(value: float) -> str:
    """1e9 rather than 1e+09."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def figure_size(columns: int, rows: int) -> tuple[float, float]:
    """Width and height in inches of a figure of ``rows`` x ``columns`` panels.

    Panels keep their size, so a backend with one dtype gets a small figure and one
    with four a wide one; the legend has its own column at the right.

    >>> figure_size(1, 2), figure_size(4, 2)
    ((5.8, 5.3), (15.7, 5.3))
    """
    width = MARGINS["left"] + columns * PANEL[0] + (columns - 1) * GAPS[0] + MARGINS["right"]
    height = MARGINS["top"] + rows * PANEL[1] + (rows - 1) * GAPS[1] + MARGINS["bottom"]
    return round(width, 3), round(height, 3)


def _y_limits(profiles: list[ErrorProfile]) -> tuple[float, float, bool]:
    """(bottom, top, whether anything is clipped or non-finite), shared by a figure's panels."""
    values = np.concatenate(
        [v for p in profiles for curves in (p.ours, p.framework or {}) for v in curves.values()]
    )
    finite = values[np.isfinite(values)]
    clipped = bool(np.isinf(values).any() or (finite > CLIP_ULP).any())
    if clipped:
        return FLOOR_ULP * 0.7, CLIP_ULP * 40, True  # room above the clip for NaN/inf marks
    top = max(float(finite.max(initial=0.0)) * 4, GRADE_A_ULP * 5)
    return FLOOR_ULP * 0.7, top, False


def _draw_panel(ax: Any, profile: ErrorProfile, quantity: str) -> None:
    """One quantity ("loss" or "grad") of one profile: ours solid, the framework dashed."""
    positions = np.where(
        np.isinf(profile.logits), np.sign(profile.logits) * INF_POSITION, profile.logits
    )
    for row, (target, colour) in enumerate(TARGET_COLOURS.items()):
        key = f"{quantity} y={target:g}"
        nonfinite_at = CLIP_ULP * 3 * 2.2**row  # one height per target, so marks never hide
        for curves, style, mark in ((profile.ours, "-", "o"), (profile.framework, "--", "x")):
            if not curves:
                continue
            values = curves[key]
            shown = np.clip(values, FLOOR_ULP, CLIP_ULP)
            shown[~np.isfinite(values)] = np.nan  # a gap in the line, and a mark at the top
            ax.plot(positions, shown, linestyle=style, color=colour, linewidth=1.1)
            wrong = np.isinf(values)
            if wrong.any():
                ax.plot(
                    positions[wrong],
                    np.full(int(wrong.sum()), nonfinite_at),
                    mark,
                    color=colour,
                    markersize=5,
                    markerfacecolor="none",
                    linestyle="none",
                )


def _any(profiles: list[ErrorProfile], which: str, test: Any) -> bool:
    """Whether ``test`` holds anywhere on the ``which`` ("ours" or "framework") curves."""
    return any(
        bool(test(values).any()) for p in profiles for values in (getattr(p, which) or {}).values()
    )


def _legend_handles(profiles: list[ErrorProfile]) -> list[Any]:
    """Target colours, line styles and only the marks that the figure uses."""
    from matplotlib.lines import Line2D

    backend = profiles[0].backend
    framework = any(p.framework for p in profiles)
    # The dotted clip line is drawn whenever the axis reaches it: for clipped or NaN/inf marks.
    clipped = any(_any(profiles, which, lambda v: v > CLIP_ULP) for which in ("ours", "framework"))

    handles = [Line2D([], [], color=c, label=f"target {t:g}") for t, c in TARGET_COLOURS.items()]
    handles.append(Line2D([], [], color="black", label=f"bce-core {backend}"))
    if framework:
        handles.append(Line2D([], [], color="black", linestyle="--", label="framework's own"))
    handles.append(
        Line2D([], [], color="grey", linewidth=0.8, label=f"{GRADE_A_ULP:g} ULP (grade A)")
    )
    if clipped:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                linestyle=":",
                linewidth=0.8,
                label=f"clipped at {_power(CLIP_ULP)} ULP",
            )
        )
    if _any(profiles, "framework", np.isinf):
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="x",
                linestyle="none",
                label="wrong NaN/inf\n(framework)",
            )
        )
    if _any(profiles, "ours", np.isinf):
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="o",
                markerfacecolor="none",
                linestyle="none",
                label="wrong NaN/inf (ours)",
            )
        )
    return handles


def plot_backend(profiles: list[ErrorProfile]) -> str:
    """A PNG (base64) for one backend: a column per dtype, loss and gradient rows per device.

    Needs matplotlib (ImportError without it); draws on its own Figure, so it leaves
    pyplot's global state alone.

    >>> from bce_numpy.backend import NumpyBackend
    >>> from bce_conformance.profiles import error_profile
    >>> png = base64.b64decode(plot_backend([error_profile(NumpyBackend(), "cpu", "float32")]))
    >>> png[:4], int.from_bytes(png[16:20], "big")  # PNG width in pixels: figure_size(1, 2)
    (b'\x89PNG', 522)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullLocator

    from .cases import DTYPES

    devices = list(dict.fromkeys(p.device for p in profiles))
    dtypes = [d for d in DTYPES if any(p.dtype == d for p in profiles)]
    dtypes += sorted({p.dtype for p in profiles} - set(dtypes))
    rows = [(device, quantity) for device in devices for quantity in ("loss", "grad")]
    width, height = figure_size(len(dtypes), len(rows))
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(dtypes), sharex=True, sharey=True, squeeze=False)
    figure.subplots_adjust(
        left=MARGINS["left"] / width,
        right=1 - MARGINS["right"] / width,
        bottom=MARGINS["bottom"] / height,
        top=1 - MARGINS["top"] / height,
        wspace=GAPS[0] / PANEL[0],
        hspace=GAPS[1] / PANEL[1],
    )
    bottom, top, clipped = _y_limits(profiles)
    by_key = {(p.device, p.dtype): p for p in profiles}
    ticks = [-INF_POSITION, -100, -1, 0, 1, 100, INF_POSITION]
    for r, (device, quantity) in enumerate(rows):
        for c, dtype in enumerate(dtypes):
            ax = axes[r, c]
            profile = by_key.get((device, dtype))
            if profile is None:
                ax.set_visible(False)
                continue
            _draw_panel(ax, profile, quantity)
            ax.axhline(GRADE_A_ULP, color="grey", linewidth=0.8)
            if clipped:
                ax.axhline(CLIP_ULP, color="black", linestyle=":", linewidth=0.8)
            for edge in (-3e3, 3e3):  # the jump from the sweep's +-1e3 to +-inf
                ax.axvline(edge, color="#dddddd", linewidth=3, zorder=0)
            ax.set_xscale("symlog", linthresh=1e-2, linscale=0.5)
            ax.set_yscale("log")
            ax.set_ylim(bottom, top)
            ax.set_xticks(ticks, ["-inf", "-100", "-1", "0", "1", "100", "+inf"], fontsize=7)
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_locator(LogLocator(numticks=7))  # every other decade: fewer ticks
            ax.yaxis.set_minor_locator(NullLocator())
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, axis="y", color="#eeeeee", linewidth=0.5)
            if quantity == "loss":
                ax.set_title(f"{dtype} on {device}", fontsize=9)
            if c == 0:
                ax.set_ylabel(
                    ("loss" if quantity == "loss" else "d loss / d logit") + "\nULP error",
                    fontsize=8,
                )
            if r == len(rows) - 1:
                ax.set_xlabel("logit", fontsize=8)
    figure.legend(
        handles=_legend_handles(profiles),
        loc="upper left",
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(1 - (MARGINS["right"] - 0.15) / width, 1 - MARGINS["top"] / height),
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures_html(report: Report, profiles: list[ErrorProfile]) -> str:
    """A heading, figure and one-line caption per backend, or a note without matplotlib."""
    escape = html.escape
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "<p>Install matplotlib (<code>pip install 'bce-core[report]'</code>) for plots.</p>"
    versions = {info["name"]: info.get("version", "") for info in report.backends}
    by_backend: dict[str, list[ErrorProfile]] = {}
    for profile in profiles:
        by_backend.setdefault(profile.backend, []).append(profile)
    parts = []
    for name, group in by_backend.items():
        label = next((p.framework_label for p in group if p.framework), "")
        theirs = f"dashed: {escape(label)}" if label else "no framework curve."
        caption = (
            f"Solid: bce-core's {escape(name)} backend; {theirs} Top row of each device: "
            f"element loss; bottom row: d loss / d logit; colour: target 0, 1, 0.3."
        )
        notes = "".join(
            f'<p class="note">{escape(note)}</p>'
            for note in dict.fromkeys(p.note for p in group if p.note)
        )
        parts.append(
            f'<h3 id="backend-{escape(name)}">{escape(name)} '
            f"{escape(str(versions.get(name, '')))}</h3>\n"
            f'<figure><img alt="ULP error versus logit, {escape(name)}" '
            f'src="data:image/png;base64,{plot_backend(group)}">'
            f"<figcaption>{caption}</figcaption></figure>{notes}"
        )
    return "\n".join(parts)


def write_html(report: Report, path: str | Path, profiles: Iterable[ErrorProfile]) -> None:
    """A self-contained HTML page: header, table, failures and a figure per backend.

    >>> import tempfile
    >>> from bce_numpy.backend import NumpyBackend
    >>> from bce_conformance.profiles import error_profile
    >>> from bce_conformance.runner import Report
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     page = Path(folder) / "report.html"
    ...     write_html(Report("1", [], []), page,
    ...                [error_profile(NumpyBackend(), "cpu", "float32")])
    ...     page.read_text().count("<figure>")
    1
    """
    escape = html.escape
    profiles = list(profiles)
    rows = []
    for row in report.summaries():
        grade = "-" if row.dtype == "errors" else row.grade
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(c))}</td>"
                for c in (
                    row.backend,
                    row.device,
                    row.dtype,
                    row.passed,
                    row.failed,
                    "" if row.dtype == "errors" else _number(row.worst_loss_ulp),
                    "" if row.dtype == "errors" else _number(row.worst_grad_ulp),
                    grade,
                )
            )
            + "</tr>"
        )
    failures = []
    for failure in report.failures:
        details = [failure.error] if failure.error else []
        details += [f"{c.quantity}: {c.detail}" for c in failure.comparisons if not c.passed]
        failures.append(
            f"<li><b>{escape(failure.backend)} {escape(failure.device)} "
            f"{escape(failure.case)}</b><pre>{escape(chr(10).join(details))}\n\n"
            f"{escape(failure.reproduction())}</pre></li>"
        )
    figures = _figures_html(report, profiles) if profiles else "<p>No profiles.</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bce conformance</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}pre{{background:#f6f6f6;padding:6px}}
figure{{margin:0}}img{{max-width:100%}}figcaption,.note{{font-size:90%;color:#444}}</style>
</head><body>
<h1>bce conformance</h1>
<pre>{escape(chr(10).join(header_lines(report)))}</pre>
<table><tr><th>backend</th><th>device</th><th>dtype</th><th>passed</th><th>failed</th>
<th>loss ULP</th><th>grad ULP</th><th>grade</th></tr>
{"".join(rows)}</table>
<p>Grades: A = passes and within 4 ULP of exact wherever graded; B = passes parity, less
accurate; F = fails.</p>
<h2>Error versus logit</h2>
<p>ULP error against the exact value along logits from -1e3 to 1e3 and at &plusmn;inf, for
targets 0, 1 and 0.3: each backend (solid) and, where the backend declares it
(<code>framework_loss</code>), its framework's own loss on the same inputs (dashed). Errors
above {_power(CLIP_ULP)} ULP are clipped there; &times; marks a NaN or infinity where the
exact value differs (&#9675; the same for ours).</p>
{figures}
<h2>Failures ({len(report.failures)})</h2>
<ul>{"".join(failures) or "<li>none</li>"}</ul>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
