"""Contributes ``bce conformance`` to the CLI (entry point ``bce: conformance``).

>>> [command.name for command in bce_commands()]
['conformance']
"""

from __future__ import annotations

import argparse

from bce_core.plugin import CommandSpec, hookimpl


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_arguments  # the suite loads only when the command is used

    add_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from .cli import run

    return run(args)


@hookimpl
def bce_commands() -> list[CommandSpec]:
    return [CommandSpec("conformance", "Check backends against the specification.",
                        _add_arguments, _run)]
