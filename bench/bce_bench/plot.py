"""The picture of a run: native ÷ bce-core time against the number of elements.

One panel per backend, one line per calling style (and dtype, when the run
has several), both axes logarithmic, the 1.0 line marked: above it bce-core is
faster. Needs matplotlib (``pip install 'bce-core[report]'``); it is imported
only here, when a picture is asked for, and draws on its own Figure, so it
leaves pyplot's global state alone.

Each line carries an id (``ratio-<n>``) that the SVG keeps, so a reader (or a
test) can find the lines among the axes' own paths.

>>> from bce_bench.results import BenchResult, BackendResult, Comparison, Measured
>>> def row(size, ours, native):
...     return Comparison("numpy", size, "float32", "forward", "loss",
...                       Measured("api", "eager", ours, size, [ours], 1),
...                       Measured("naive formula", "eager", native, size, [native], 1))
>>> run = BenchResult("bce bench", {"cpu": "Some CPU", "cores": 2}, {},
...                   [BackendResult("numpy", "2.0", comparisons=[row(100, 2e-6, 1e-6),
...                                                               row(1000, 3e-6, 4e-6)])])
>>> import io
>>> buffer = io.BytesIO()
>>> write_plot(run, buffer, "svg")
1
>>> b'id="ratio-0"' in buffer.getvalue()
True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any

from .options import PLOT_FORMATS
from .report import RATIO_HEADER, lines
from .results import BenchResult
from .units import fmt_size

#: Inches: one panel, and the room of the legend under it.
PANEL = (6.0, 3.6)
LEGEND_ROW = 0.22
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
EVEN = "1.0: as fast as the framework's own (above: bce-core faster)"


def matplotlib_missing() -> str | None:
    """Why no picture can be drawn (matplotlib not installed), or None when one can."""
    from bce_core.cli import missing_module

    return missing_module("--plot", "matplotlib", "report")


def plot_format(path: str | Path) -> str:
    """ "png" or "svg", from the file name (checked by ``options.plot_path`` already).

    >>> plot_format("docs/bench.SVG")
    'svg'
    """
    extension = str(path).rpartition(".")[2].lower()
    if extension not in PLOT_FORMATS:
        raise ValueError(f"{path}: not a .png or .svg file name")
    return extension


def title(result: BenchResult) -> str:
    """The picture's title: what is plotted, the dtypes, and the machine."""
    machine = result.machine
    dtypes = list(
        dict.fromkeys(row.dtype for backend in result.backends for row in backend.comparisons)
    )
    where = machine.get("cpu", "unknown CPU")
    if machine.get("cores"):
        where += f", {machine['cores']} cores"
    return f"{RATIO_HEADER}\n{', '.join(dtypes)} on {where}"


def write_plot(result: BenchResult, target: str | Path | IO[bytes], fmt: str) -> int:
    """Draw ``result`` to ``target`` (a path or a binary file) as ``fmt``; returns the lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    found = lines(result)
    backends = list(dict.fromkeys(line.backend for line in found))
    several_dtypes = len({line.dtype for line in found}) > 1
    columns = 1 if len(backends) <= 1 else 2
    rows = max(1, math.ceil(len(backends) / columns))
    most = max((sum(line.backend == b for line in found) for b in backends), default=1)
    legend_height = LEGEND_ROW * (most + 1) + 0.3
    width, height = PANEL[0] * columns, (PANEL[1] + legend_height) * rows + 0.8
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    figure.subplots_adjust(
        left=0.7 / width,
        right=1 - 0.2 / width,
        top=1 - 0.8 / height,
        bottom=(legend_height + 0.5) / height,
        hspace=(legend_height + 0.6) / PANEL[1],
        wspace=0.25,
    )
    sizes = sorted({size for line in found for size in line.by_size})
    ratios = [row.ratio for line in found for row in line.by_size.values() if row.ratio is not None]
    low = min([*ratios, 1.0]) / 1.3
    high = max([*ratios, 1.0]) * 1.3
    drawn = 0
    for index, ax in enumerate(axes.flat):
        if index >= len(backends):
            ax.set_visible(False)
            continue
        backend = backends[index]
        ax.axhline(1.0, color="black", linewidth=1.2, zorder=1, label=EVEN)
        for n, line in enumerate(item for item in found if item.backend == backend):
            points = [
                (size, row.ratio)
                for size, row in sorted(line.by_size.items())
                if row.ratio is not None and row.ratio > 0
            ]
            if not points:
                continue
            label = f"{line.style}: {line.ours} vs {line.native}"
            if several_dtypes:
                label += f" ({line.dtype})"
            (artist,) = ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=MARKERS[n % len(MARKERS)],
                markersize=4,
                linewidth=1.4,
                label=label,
                zorder=2,
            )
            artist.set_gid(f"ratio-{drawn}")
            drawn += 1
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: fmt_size(round(value))))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", color="#eeeeee", linewidth=0.5)
        version = next((b.version for b in result.backends if b.name == backend), "")
        ax.set_title(f"{backend} {version}".strip(), fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("native ÷ bce-core", fontsize=8)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), fontsize=7, frameon=False, ncols=1)
    figure.suptitle(title(result), fontsize=9)
    options: dict[str, Any] = {"format": fmt}
    if fmt == "png":
        options["dpi"] = 110
    else:
        options["metadata"] = {"Date": None}  # the same run gives the same file
    figure.savefig(target, **options)
    return drawn
