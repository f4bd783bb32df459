"""``bce bench``: time bce-core against each framework's own loss, in one process.

    bce bench [--backend NAME ...] [--sizes 1e2,1e3,...,1e7] [--dtype float32,bfloat16]
              [--repeat N] [--json out.json] [--plot bench.svg]
              [--write-readme [--readme README.md]]
    bce bench --from-json out.json [--plot bench.png] [--write-readme ...]

Each backend is timed in each of its framework's usual calling styles (eager,
``tf.function``, ``jax.jit``, with ``backward()`` or a tape), our call paired
with the framework's own call made the same way; then the per-call overhead of
the public API over the backend object. ``--plot`` draws native ÷ bce-core
against size, one line per backend and calling style, as PNG or SVG by the
file's extension (needs matplotlib). ``--from-json`` reports, plots or writes
the README from a run saved by ``--json`` instead of timing again.

Exit code 0 when at least one backend was timed; 1 when none could be, when
``--plot`` lacks matplotlib, when ``--write-readme`` finds no bench markers in
the README, when ``--from-json`` names a file that is not a saved run, or when
a file cannot be written after all; 2 for a bad option: an unknown backend, a
``--plot`` name that ends neither in .png nor in .svg, a file to write whose
folder is missing or not writable, a file to read that does not exist. All
but the last write are checked before anything is timed.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="bce bench")
>>> add_arguments(parser)
>>> args = parser.parse_args(["--backend", "numpy", "--sizes", "1e3,100", "--repeat", "3"])
>>> args.sizes, args.repeat, command_line(args)
((1000, 100), 3, 'bce bench --backend numpy --sizes 1e3,1e2 --repeat 3')
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bce_core.cli import (
    UsageError,
    check_backend_names,
    distinct_outputs,
    input_file,
    input_problem,
    output_file,
    output_problem,
    run_command,
)

from .machine import describe, machine_info
from .options import (
    DEFAULT_DTYPES,
    DEFAULT_SIZES,
    parse_dtypes,
    parse_names,
    parse_sizes,
    plot_path,
    positive_int,
)
from .readme import MarkersMissing, replace_section, write_section
from .report import legend_lines, markdown, print_report, read_json, write_json
from .results import BenchResult
from .suite import Config, run_bench
from .suite import Progress as ProgressCallbacks
from .units import fmt_size

DEFAULT_README = "README.md"
#: Narrower output (a pipe, a file) would wrap the ten-column tables beyond reading.
MIN_WIDTH_OFF_TERMINAL = 180


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bce bench``."""
    parser.add_argument(
        "--backend",
        action="append",
        type=parse_names,
        metavar="NAME",
        help="backend to time (repeatable, or comma-separated); default: every "
        "installed one among numpy, torch, tensorflow and jax",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        metavar="N,N,...",
        help="element counts, e.g. 1e3,1e5; default: 1e2,1e3,1e4,1e5,1e6,1e7",
    )
    parser.add_argument(
        "--dtype",
        type=parse_dtypes,
        metavar="DTYPE,...",
        help="float16, bfloat16, float32, float64, comma-separated (default: float32)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="N",
        help="timed rounds per comparison and per overhead measurement; default: "
        "adaptive, about 0.3 s per variant (5 to 50 rounds) and per overhead pair "
        "(200 to 20,000 rounds)",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="PATH", help="write every number of the run as JSON"
    )
    parser.add_argument(
        "--plot",
        type=plot_path,
        metavar="FILE",
        help="draw native ÷ bce-core against size, one line per backend and calling style, "
        "to FILE (.png or .svg; needs matplotlib)",
    )
    parser.add_argument(
        "--from-json",
        type=input_file,
        metavar="PATH",
        help="report a run saved by --json instead of timing one (with --plot, "
        "--write-readme); takes no timing option",
    )
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="replace the section between <!-- bench:begin --> and "
        "<!-- bench:end --> in the README",
    )
    parser.add_argument(
        "--readme",
        metavar="PATH",
        default=DEFAULT_README,
        help=f"the README that --write-readme rewrites (default: {DEFAULT_README} "
        "in the current directory)",
    )


def _backends(args: argparse.Namespace) -> list[str] | None:
    if not args.backend:
        return None
    return list(dict.fromkeys(name for names in args.backend for name in names))


def command_line(args: argparse.Namespace) -> str:
    """The command as the user would type it again to reproduce the run."""
    parts = ["bce", "bench"]
    for name in _backends(args) or ():
        parts += ["--backend", name]
    if args.sizes:
        parts += ["--sizes", ",".join(fmt_size(size) for size in args.sizes)]
    if args.dtype:
        parts += ["--dtype", ",".join(args.dtype)]
    if args.repeat:
        parts += ["--repeat", str(args.repeat)]
    if args.json:
        parts += ["--json", args.json]
    if args.plot:
        parts += ["--plot", args.plot]
    if args.write_readme:
        parts.append("--write-readme")
        if args.readme != DEFAULT_README:
            parts += ["--readme", args.readme]
    return shlex.join(parts)


def _console() -> Console:
    console = Console()
    if not console.is_terminal and console.width < MIN_WIDTH_OFF_TERMINAL:
        console = Console(width=MIN_WIDTH_OFF_TERMINAL)
    return console


def _check_readme(path: Path) -> str | None:
    """Why the README cannot take the bench section, or None when it can; raises UsageError
    when ``--readme`` names no file that can be read and rewritten."""
    problem = input_problem(str(path)) or output_problem(str(path))
    if problem is not None:
        raise UsageError(f"--readme {str(path)!r}: {problem}")
    try:
        replace_section(path.read_text(encoding="utf-8"), "")
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except MarkersMissing as exc:
        return f"{path}: {exc}"
    return None


def _problems_before_timing(args: argparse.Namespace) -> list[str]:
    """What would make the run fail at its end: found before minutes of timing.

    A bad command line raises UsageError or UnknownBackendError instead."""
    check_backend_names(_backends(args))
    distinct_outputs(
        json=args.json, plot=args.plot, readme=args.readme if args.write_readme else None
    )
    problems = []
    if args.from_json:
        given = [
            option
            for option, value in (
                ("--backend", args.backend),
                ("--sizes", args.sizes),
                ("--dtype", args.dtype),
                ("--repeat", args.repeat),
                ("--json", args.json),
            )
            if value
        ]
        if given:
            problems.append(f"--from-json reports a saved run: {', '.join(given)} cannot apply")
    if args.plot:
        from .plot import matplotlib_missing  # the module imports no matplotlib

        missing = matplotlib_missing()
        if missing is not None:
            problems.append(missing)
    if args.write_readme:
        problem = _check_readme(Path(args.readme))
        if problem is not None:
            problems.append(problem)
    return problems


def _measure(args: argparse.Namespace, console: Console) -> BenchResult:
    config = Config(
        backends=_backends(args),
        sizes=args.sizes or DEFAULT_SIZES,
        dtypes=args.dtype or DEFAULT_DTYPES,
        repeat=args.repeat,
    )
    machine = machine_info()
    console.print(f"bce bench on {describe(machine)}", highlight=False, markup=False)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task("loading backends", total=None)
        started: list[str] = []

        def on_step(description: str) -> None:
            # Called as each step starts: the previous one is then complete.
            progress.update(task, advance=1 if started else 0, description=description)
            started.append(description)

        callbacks = ProgressCallbacks(
            on_total=lambda total: progress.update(task, total=total),
            on_step=on_step,
            on_done=lambda: progress.update(task, advance=1),
        )
        return run_bench(config, command=command_line(args), machine=machine, progress=callbacks)


def _picture_link(plot: str, readme: Path) -> str:
    """The picture's path as the README links it: relative to the README's folder."""
    return Path(os.path.relpath(Path(plot).resolve(), readme.resolve().parent)).as_posix()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``bce bench``."""
    console = _console()
    readme = Path(args.readme)
    problems = _problems_before_timing(args)
    for problem in problems:
        print(f"bce bench: error: {problem}", file=sys.stderr)
    if problems:
        return 1
    if args.from_json:
        try:
            result = read_json(args.from_json)
        except (OSError, ValueError) as exc:
            print(f"bce bench: error: cannot read {args.from_json}: {exc}", file=sys.stderr)
            return 1
        console.print(f"bce bench: the run saved in {args.from_json}", highlight=False)
        console.print(f"measured on {describe(result.machine)}", highlight=False, markup=False)
    else:
        result = _measure(args, console)
    for line in legend_lines(result):
        console.print(line, highlight=False, markup=False)
    print_report(result, console)
    if args.json:
        try:
            write_json(result, args.json)
        except OSError as exc:
            print(f"bce bench: error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 1
        console.print(f"wrote {args.json}", highlight=False, markup=False)
    if not any(backend.comparisons for backend in result.backends):
        console.print("[red]no backend was timed[/]")
        return 1
    if args.plot:
        from .plot import plot_format, write_plot

        try:
            drawn = write_plot(result, args.plot, plot_format(args.plot))
        except OSError as exc:
            print(f"bce bench: error: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 1
        console.print(f"wrote {args.plot} ({drawn} lines)", highlight=False, markup=False)
    if args.write_readme:
        picture = _picture_link(args.plot, readme) if args.plot else None
        try:
            write_section(readme, markdown(result, picture))
        except (OSError, MarkersMissing) as exc:
            print(f"bce bench: error: cannot update {readme}: {exc}", file=sys.stderr)
            return 1
        console.print(f"updated {readme}", highlight=False, markup=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bce_bench.cli``: the same command without the ``bce`` front end."""
    parser = argparse.ArgumentParser(prog="bce bench")
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
