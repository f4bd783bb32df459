"""Contributes ``bce bench`` to the CLI (entry point ``bce: bench``).

>>> [command.name for command in bce_commands()]
['bench']
"""

from __future__ import annotations

import argparse

from bce_core.plugin import CommandSpec, hookimpl


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_arguments  # imported only when the command is used

    add_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from .cli import run

    return run(args)


@hookimpl
def bce_commands() -> list[CommandSpec]:
    return [CommandSpec("bench", "Time bce-core against each framework's own loss.",
                        _add_arguments, _run)]
