"""Contributes ``bce conformance`` to the CLI (entry point ``bce: conformance``).

>>> [command.name for command in bce_commands()]
['conformance']
"""

from __future__ import annotations

from bce_core.plugin import CommandSpec, hookimpl


@hookimpl
def bce_commands() -> list[CommandSpec]:
    # The suite itself is imported only when the command line is built.
    return [
        CommandSpec.lazy(
            "conformance", "Check backends against the specification.", "bce_conformance.cli"
        )
    ]
