"""Contributes ``bce conformance`` to the CLI (entry point ``bce: conformance``)."""

from __future__ import annotations

import argparse

from bce_core.plugin import CommandSpec, hookimpl


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from .runner import add_arguments
    add_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from .runner import run_from_args
    return run_from_args(args)


@hookimpl
def bce_commands() -> list[CommandSpec]:
    return [CommandSpec("conformance", "Check installed backends against the specification.",
                        _add_arguments, _run)]
