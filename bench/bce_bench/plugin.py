"""Contributes ``bce bench`` to the CLI (entry point ``bce: bench``).

>>> [command.name for command in bce_commands()]
['bench']
"""

from __future__ import annotations

from bce_core.plugin import CommandSpec, hookimpl


@hookimpl
def bce_commands() -> list[CommandSpec]:
    # Timing code and frameworks are imported only when the command line is built or run.
    return [
        CommandSpec.lazy(
            "bench", "Time bce-core against each framework's own loss.", "bce_bench.cli"
        )
    ]
