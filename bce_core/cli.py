"""The ``bce`` command line.

``bce backends`` is built in; other subcommands (``bce conformance``, ...) are
contributed by plugins through the ``bce_commands`` hook, so the core never
imports the packages that own them.

>>> "backends" in build_parser().format_help()
True
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from . import __version__, available_backends
from .errors import BackendConflictError, BackendUnavailableError, UnknownBackendError
from .registry import BackendInfo, get_registry
from .spec import SPEC_VERSION

STATUS_STYLE = {
    "ok": "green",
    "installed": "green",
    "not installed": "yellow",
    "failed": "red",
    "conflict": "red",
}


def _load_with_progress(names: Sequence[str]) -> list[BackendInfo]:
    """Load each backend (importing its framework) to list its devices, showing progress."""
    registry = get_registry()
    console = Console(stderr=True)  # stdout stays the table or the JSON
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    infos = []
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task("loading backends", total=len(names))
        for name in names:
            progress.update(task, description=f"importing {name}")
            infos.append(registry.info(name))
            progress.advance(task)
    return infos


def _backends_command(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.devices:
        infos = _load_with_progress(registry.names())
    else:
        infos = available_backends(load=False)
    if args.json:
        payload = {
            "spec_version": SPEC_VERSION,
            "backends": [asdict(i) for i in infos],
            "plugin_errors": [asdict(e) for e in registry.plugin_errors],
        }
        print(json.dumps(payload, indent=2))
        return 0
    console = Console()
    table = Table(title=f"bce-core {__version__} backends (spec {SPEC_VERSION})")
    columns = ["backend", "status", "version", "plugin", "detail"]
    if args.devices:
        columns.insert(3, "devices")
    else:
        table.caption = "--devices: load each framework and list its devices"
    for column in columns:
        table.add_column(column, overflow="fold")
    for info in infos:
        detail = info.error or ""
        if info.status == "not installed" and info.extra:
            detail = f"pip install 'bce-core[{info.extra}]'"
        style = STATUS_STYLE.get(info.status, "")
        row = [
            info.name,
            f"[{style}]{info.status}[/]",
            info.version or "",
            info.distribution or info.plugin or "",
            escape(detail),
        ]
        if args.devices:
            row.insert(3, ", ".join(info.devices))
        table.add_row(*row)
    console.print(table)
    for error in registry.plugin_errors:
        # One line per plugin, never wrapped: the message names the field and what it expects.
        console.print(
            f"[red]broken plugin[/] {error.plugin!r} ({error.distribution or 'no distribution'}): "
            f"{escape(error.error)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the subcommands of every loaded plugin."""
    parser = argparse.ArgumentParser(
        prog="bce", description="Binary cross-entropy, one specification across frameworks."
    )
    parser.add_argument(
        "--version", action="version", version=f"bce-core {__version__} (spec {SPEC_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    backends = commands.add_parser(
        "backends",
        help="List registered backends, their framework's version and broken plugins.",
        description="List registered backends from package metadata, without importing any "
        "framework, and the plugins that were rejected.",
    )
    backends.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    backends.add_argument(
        "--devices",
        action="store_true",
        help="Load each installed backend (importing its framework) and list its devices.",
    )
    backends.set_defaults(run=_backends_command)
    for command in get_registry().commands:
        try:
            sub = commands.add_parser(
                command.name,
                help=command.help,
                aliases=list(command.aliases),
                description=command.help,
            )
            command.add_arguments(sub)
        except Exception as exc:  # a broken plugin command never takes the CLI down
            print(
                f"bce: plugin command {command.name!r} is unavailable: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bce`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UnknownBackendError, BackendUnavailableError, BackendConflictError) as exc:
        print(f"bce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
