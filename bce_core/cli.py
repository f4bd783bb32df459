"""The ``bce`` command line.

``bce backends`` is built in; other subcommands (``bce conformance``, ...) are
contributed by plugins through the ``bce_commands`` hook, so the core never
imports the packages that own them.

Every command checks its whole command line before it starts any work: a bad
value, an output file that cannot be written, an input file that does not
exist, a missing optional dependency. A bad argument exits with status 2 and a
one-line message that names the option and its value, as argparse does; no
command shows a traceback (``BCE_TRACEBACK=1`` shows one for an unexpected
error, to report it).

>>> "backends" in build_parser().format_help()
True
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
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
from .quiet import quiet_framework_logs
from .registry import BackendInfo, get_registry
from .spec import SPEC_VERSION

#: Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
TRACEBACK_VARIABLE = "BCE_TRACEBACK"

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


class UsageError(ValueError):
    """A command line found unworkable by a command, before it starts: reported like an
    argparse error, with exit status 2."""


def _ends_in_separator(path: str) -> bool:
    return path.endswith(os.sep) or bool(os.altsep and path.endswith(os.altsep))


def output_problem(path: str) -> str | None:
    """Why a file cannot be written at ``path``, or None when it can; writes nothing.

    The folder must exist already (it is never created, so a mistyped path is not
    silently made), and ``path`` must not be a folder.

    >>> output_problem("report.json") is None  # in the current directory
    True
    >>> output_problem("/nonexistent/dir/x.json")
    "directory '/nonexistent/dir' does not exist; create it or choose another path"
    >>> output_problem(".")
    "'.' is a directory; give a file name"
    """
    if not path:
        return "an empty path; give a file name"
    target = os.path.abspath(path)
    if os.path.isdir(target) or _ends_in_separator(path):
        return f"{path!r} is a directory; give a file name"
    folder = os.path.dirname(path) or os.curdir
    if not os.path.exists(folder):
        return f"directory {folder!r} does not exist; create it or choose another path"
    if not os.path.isdir(folder):
        return f"{folder!r} is not a directory; choose another path"
    if os.path.exists(target):
        if not os.access(target, os.W_OK):
            return f"{path!r} is not writable; choose another path"
    elif not os.access(folder, os.W_OK | os.X_OK):
        return f"directory {folder!r} is not writable; choose another path"
    return None


def input_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as a file, or None when it can; reads nothing.

    >>> input_problem("/nonexistent/x.json")
    "'/nonexistent/x.json' does not exist; give the path of an existing file"
    >>> input_problem(".")
    "'.' is a directory; give the path of a file"
    """
    if not path:
        return "an empty path; give the path of an existing file"
    if os.path.isdir(path):
        return f"{path!r} is a directory; give the path of a file"
    if not os.path.exists(path):
        return f"{path!r} does not exist; give the path of an existing file"
    if not os.access(path, os.R_OK):
        return f"{path!r} is not readable; choose another file"
    return None


def _naming(path: str, problem: str) -> str:
    """The problem, led by the path it concerns (once)."""
    return problem if problem.startswith(repr(path)) else f"{path!r}: {problem}"


def output_file(text: str) -> str:
    """An argparse ``type`` for an option naming a file to write, checked as it is parsed.

    argparse reports the error as ``error: argument --json: '<path>': <why>`` (exit 2).

    >>> output_file("report.json")
    'report.json'
    >>> output_file("/nonexistent/dir/x.json")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '/nonexistent/dir/x.json': directory '/nonexistent/dir' \
does not exist; create it or choose another path
    """
    problem = output_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(_naming(text, problem))
    return text


def input_file(text: str) -> str:
    """An argparse ``type`` for an option naming an existing file to read.

    >>> input_file("/nonexistent/x.json")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '/nonexistent/x.json' does not exist; give the path of an \
existing file
    """
    problem = input_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(_naming(text, problem))
    return text


def distinct_outputs(**paths: str | None) -> None:
    """Raise UsageError when two options would write the same file (the last would win).

    Keyword names are the options without their dashes, ``_`` for ``-``.

    >>> distinct_outputs(json="a.json", html="a.html")
    >>> distinct_outputs(json="out", html="./out")
    Traceback (most recent call last):
    ...
    bce_core.cli.UsageError: --json 'out' and --html './out' name the same file; give each its own
    """
    seen: dict[str, tuple[str, str]] = {}
    for option, path in paths.items():
        if not path:
            continue
        key = os.path.realpath(path)
        if key in seen:
            first, first_path = seen[key]
            raise UsageError(
                f"--{first.replace('_', '-')} {first_path!r} and --{option.replace('_', '-')} "
                f"{path!r} name the same file; give each its own"
            )
        seen[key] = (option, path)


def missing_module(option: str, module: str, extra: str) -> str | None:
    """Why ``option`` cannot work (``module`` does not import), or None when it can.

    >>> missing_module("--html", "json", "report") is None
    True
    >>> missing_module("--html", "no_such_module_here", "report")
    "--html needs no_such_module_here (pip install 'bce-core[report]')"
    """
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{option} needs {module} (pip install 'bce-core[{extra}]')"
    except Exception as exc:  # installed but broken: say so, not "install it"
        return f"{option} needs {module}, which fails to import: {type(exc).__name__}: {exc}"
    return None


def check_backend_names(names: Sequence[str] | None) -> None:
    """Raise UnknownBackendError (naming the closest backend) for a name no plugin registers,
    or BackendConflictError for one registered twice; imports no framework.

    >>> check_backend_names(["numpy"])
    >>> check_backend_names(["nupmy"])
    Traceback (most recent call last):
    ...
    bce_core.errors.UnknownBackendError: no backend named 'nupmy'; ... Did you mean 'numpy'?
    """
    registry = get_registry()
    for name in names or ():
        registry.record(name)


def run_command(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str
) -> int:
    """Run one command, turning every error into a message on stderr and an exit status:
    2 for a bad command line, 1 for a failure, 130 when interrupted."""
    try:
        return int(run(args) or 0)
    except (UsageError, UnknownBackendError, BackendUnavailableError, BackendConflictError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``bce backends | head``): nothing left to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get(TRACEBACK_VARIABLE) == "1":
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc}\n"
            f"(this is a bug in bce-core or one of its plugins; run again with "
            f"{TRACEBACK_VARIABLE}=1 to see the traceback, and report it)",
            file=sys.stderr,
        )
        return 1


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
        detail = info.error or info.detail or ""
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
        sub.set_defaults(run=command.run, prog=sub.prog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bce`` command; returns the exit code."""
    quiet_framework_logs()
    args = build_parser().parse_args(argv)
    return run_command(args.run, args, getattr(args, "prog", "bce"))
