"""A timed variant (one way to compute a loss, or a loss and its gradient) and how variants pair up.

Our variants are compared with the framework's own variants of the same task
that run the same way: eager with eager, compiled (``tf.function``,
``jax.jit``) with compiled. Our fused ``value_and_grad`` is the call a user
would make instead of any of the framework's autodiff, so it is compared with
each of them.

>>> ours = Variant("ours", FORWARD, "api", "eager", lambda: 0.0)
>>> native = Variant("native", FORWARD, "naive", "eager", lambda: 0.0)
>>> [(a.label, b.label if b else None) for a, b in pairs([ours, native])]
[('api', 'naive')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FORWARD = "forward"
FORWARD_GRAD = "forward+grad"
TASKS = (FORWARD, FORWARD_GRAD)

EAGER = "eager"
COMPILED = "compiled"


@dataclass(frozen=True)
class Variant:
    """One implementation of a task; ``run()`` returns the loss, or (loss, d loss / d logits)."""

    side: str  # "ours" or "native"
    task: str  # FORWARD or FORWARD_GRAD
    label: str
    mode: str  # EAGER or COMPILED
    run: Callable[[], Any]
    fused: bool = False  # our value_and_grad: compared with every native of its task

    @property
    def key(self) -> tuple[str, str]:
        return self.side, self.label


def pairs(variants: Sequence[Variant]) -> list[tuple[Variant, Variant | None]]:
    """(ours, native) for each comparison; (ours, None) where the framework has no counterpart."""
    result: list[tuple[Variant, Variant | None]] = []
    for ours in (v for v in variants if v.side == "ours"):
        matches = [
            v
            for v in variants
            if v.side == "native" and v.task == ours.task and (ours.fused or v.mode == ours.mode)
        ]
        result += [(ours, native) for native in matches] or [(ours, None)]
    return result
