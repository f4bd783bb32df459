"""``bce conformance``: run the suite, show progress, print the table, write reports.

    bce conformance [--backend NAME ...] [--device cpu|gpu|all] [--require-device]
                    [--dtype ...] [--json out.json] [--html out.html] [--isolate]
                    [--jobs N]

Exit code 1 when any case fails (or, with --require-device, when no requested
device is usable), 0 otherwise. The command line is checked before anything
runs: 2 for a bad option, an unknown backend, or a report that cannot be
written (its folder missing or not writable, a folder named instead of a file);
1 when --html lacks matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bce_core.cli import (
    check_backend_names,
    distinct_outputs,
    missing_module,
    output_file,
    run_command,
)
from bce_core.quiet import quiet_framework_logs
from bce_core.registry import get_registry

from .cases import DTYPES
from .profiles import ErrorProfile, error_profile
from .report import header_lines, jsonable, print_report, write_html, write_json
from .runner import CaseResult, Report, run_suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bce conformance``."""
    parser.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="backend to check (repeatable); default: every installed backend",
    )
    parser.add_argument(
        "--dtype",
        action="append",
        choices=DTYPES,
        help="dtype to check (repeatable); default: all four",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu", "all"),
        default="cpu",
        help="which devices to run on (default: cpu)",
    )
    parser.add_argument(
        "--require-device",
        action="store_true",
        help="fail, rather than skip, when no requested device is usable",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="PATH", help="write the full report as JSON"
    )
    parser.add_argument(
        "--html",
        type=output_file,
        metavar="PATH",
        help="write an HTML report with error-versus-logit plots (needs matplotlib)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each backend in its own process, so one crash or import "
        "clash cannot take the others down",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        metavar="N",
        help="run up to N backends at once, each in its own process (implies --isolate; default 1)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profiles", action="store_true", help=argparse.SUPPRESS)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of processes: give a whole number, "
            f"1 or more (this machine has {os.cpu_count()} CPUs)"
        )
    return value


def _run_in_process(args: argparse.Namespace, console: Console) -> Report:
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(
        *columns, console=console, transient=True, disable=args.worker or not console.is_terminal
    ) as progress:
        task = progress.add_task("conformance", total=None)
        return run_suite(
            args.backend,
            dtypes=tuple(args.dtype or DTYPES),
            device=args.device,
            on_total=lambda total: progress.update(task, total=total),
            on_step=lambda what: progress.update(task, advance=1, description=what),
        )


def _worker(name: str, args: argparse.Namespace) -> tuple[Report, list[ErrorProfile]]:
    """Run one backend in a child process; its report (and profiles) come back as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [
            sys.executable,
            "-m",
            "bce_conformance.cli",
            "--worker",
            "--backend",
            name,
            "--device",
            args.device,
            "--json",
            str(out),
        ]
        if args.html:
            command.append("--profiles")
        for dtype in args.dtype or ():
            command += ["--dtype", dtype]
        finished = subprocess.run(command, capture_output=True, text=True)
        if out.exists():
            data = json.loads(out.read_text())
            return (
                Report.from_json(data),
                [ErrorProfile.from_json(p) for p in data.get("profiles", [])],
            )
    tail = "\n".join(finished.stderr.strip().splitlines()[-5:])
    part = Report(_spec_version(), [], [])
    part.results.append(
        CaseResult(
            name, args.device, "-", "process", error=f"exited with {finished.returncode}: {tail}"
        )
    )
    return part, []


def _run_isolated(args: argparse.Namespace, console: Console) -> tuple[Report, list[ErrorProfile]]:
    """Each backend in its own process, up to ``--jobs`` at once; reports merged in order."""
    names = args.backend or get_registry().names()
    parts: dict[str, tuple[Report, list[ErrorProfile]]] = {}
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with (
        Progress(
            *columns, console=console, transient=True, disable=not console.is_terminal
        ) as progress,
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
    ):
        task = progress.add_task("backends, each in its own process", total=len(names))
        futures = {pool.submit(_worker, name, args): name for name in names}
        for future in as_completed(futures):
            name = futures[future]
            parts[name] = future.result()
            progress.update(task, advance=1)
            console.print(f"{name}: done in its own process", highlight=False)
    merged = Report(_spec_version(), [], [])
    profiles: list[ErrorProfile] = []
    for name in names:
        part, part_profiles = parts[name]
        merged.backends += part.backends
        merged.results += part.results
        merged.skipped += part.skipped
        merged.plugin_errors = merged.plugin_errors or part.plugin_errors
        profiles += part_profiles
    return merged, profiles


def _profiles(report: Report) -> list[ErrorProfile]:
    registry = get_registry()
    return [
        error_profile(registry.get(row.backend), row.device, row.dtype)
        for row in report.summaries()
        if row.dtype not in ("errors", "-")
    ]  # only dtypes the backend could run


def _spec_version() -> str:
    from bce_core import SPEC_VERSION

    return SPEC_VERSION


def _device_failures(report: Report, args: argparse.Namespace) -> list[str]:
    """With --require-device: every named backend, or else at least one, ran on the device."""
    if not args.require_device or args.device == "cpu":
        return []
    ran = {r.backend for r in report.results if r.device.split(":")[0] != "cpu"}
    wanted = args.backend or []
    missing = [name for name in wanted if name not in ran]
    if not wanted and not ran:
        missing = ["any backend"]
    return [f"no usable {args.device} device for {name}" for name in missing]


def _check_before_running(args: argparse.Namespace) -> str | None:
    """Raise UsageError (or UnknownBackendError) for a bad command line; return why the
    run cannot deliver what was asked, or None: all found before the suite starts."""
    check_backend_names(args.backend)
    distinct_outputs(json=args.json, html=args.html)
    if args.html and not args.worker:  # a worker only measures; its parent draws
        return missing_module("--html", "matplotlib", "report")
    return None


def _write(path: str, write: Callable[[], None]) -> bool:
    """Write one report; False, with the reason on stderr, when the file cannot be written
    after all (its folder, checked before the run, removed since; a full disk)."""
    try:
        write()
    except OSError as exc:
        print(
            f"bce conformance: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr
        )
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Entry point of ``bce conformance``."""
    problem = _check_before_running(args)
    if problem is not None:
        print(f"bce conformance: error: {problem}", file=sys.stderr)
        return 1
    console = Console(stderr=args.worker)
    profiles: list[ErrorProfile] | None = None
    if (args.isolate or args.jobs > 1) and not args.worker:
        report, profiles = _run_isolated(args, console)
    else:
        report = _run_in_process(args, console)
    if args.worker:
        data = report.to_json()
        if args.profiles:
            data["profiles"] = [p.to_json() for p in _profiles(report)]
        Path(args.json).write_text(json.dumps(data, default=jsonable))
        return 0
    json_written = html_written = True
    if args.json:
        json_written = _write(args.json, lambda: write_json(report, args.json))
    for line in header_lines(report):
        console.print(line, highlight=False, markup=False)
    print_report(report, console)
    if args.html:
        pictures = _profiles(report) if profiles is None else profiles
        html_written = _write(args.html, lambda: write_html(report, args.html, pictures))
        if html_written:
            console.print(f"wrote {args.html}")
    if args.json and json_written:
        console.print(f"wrote {args.json}")
    problems = _device_failures(report, args)
    for problem in problems:
        console.print(f"[red]FAILED[/] {problem} (--require-device)", highlight=False)
    if not report.results:
        console.print("[red]no backend was checked[/]")
        return 1
    passed = len(report.results) - len(report.failures)
    console.print(f"{passed} passed, {len(report.failures)} failed", highlight=False)
    return 1 if report.failures or problems or not (json_written and html_written) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bce_conformance.cli``: the same command without the ``bce`` front end."""
    quiet_framework_logs()
    parser = argparse.ArgumentParser(prog="bce conformance")
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    raise SystemExit(main())
