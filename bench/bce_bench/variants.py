"""Timed variants (one way to compute a loss, or a loss and its gradient) and the calling
styles that pair them.

A calling style is the way a user calls a loss in a framework (eagerly, in
``tf.function``, under ``jax.jit``, with ``loss.backward()`` or a tape): each
style names our call and the framework's own call made the same way, and the
report gives native time ÷ ours for each. Our fused ``value_and_grad`` has its
own style: it is the call a user would make instead of the framework's
autodiff, so it is paired with that autodiff.

>>> ours = Variant("ours", FORWARD, "api", EAGER, lambda: 0.0)
>>> native = Variant("native", FORWARD, "naive formula", EAGER, lambda: 0.0)
>>> [(s.name, a.label, b.label if b else None) for s, a, b in pairs(styles_for("numpy"),
...                                                                 [ours, native])]
[('loss', 'api', 'naive formula')]
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

    @property
    def key(self) -> tuple[str, str]:
        return self.side, self.label


@dataclass(frozen=True)
class Style:
    """A calling style: our variant's label and that of the native one called the same way."""

    name: str
    task: str
    ours: str
    native: str | None = None  # None: the framework has no counterpart


#: Every framework's calling styles, in the order reported. The labels are those of
#: ``ours.our_variants`` and ``natives.native_variants``.
STYLES: dict[str, tuple[Style, ...]] = {
    "numpy": (
        Style("loss", FORWARD, "api", "naive formula"),
        Style("value_and_grad", FORWARD_GRAD, "value_and_grad", "naive formula + grad"),
    ),
    "torch": (
        Style("eager loss", FORWARD, "api", "F.bce_with_logits"),
        Style(
            "eager loss + backward()",
            FORWARD_GRAD,
            "api + backward()",
            "F.bce_with_logits + backward()",
        ),
        Style(
            "eager value_and_grad", FORWARD_GRAD, "value_and_grad", "F.bce_with_logits + backward()"
        ),
    ),
    "tensorflow": (
        Style("eager loss", FORWARD, "api", "tf.nn.sigmoid_ce"),
        Style("eager loss + tape", FORWARD_GRAD, "api + tape", "tf.nn.sigmoid_ce + tape"),
        Style("eager value_and_grad", FORWARD_GRAD, "value_and_grad", "tf.nn.sigmoid_ce + tape"),
        Style("tf.function loss", FORWARD, "api @tf.function", "tf.nn.sigmoid_ce @tf.function"),
        Style(
            "tf.function loss + tape",
            FORWARD_GRAD,
            "api + tape @tf.function",
            "tf.nn.sigmoid_ce + tape @tf.function",
        ),
        Style(
            "tf.function loss, Keras baseline",
            FORWARD,
            "api @tf.function",
            "keras.ops.bce @tf.function",
        ),
        Style(
            "tf.function loss + tape, Keras baseline",
            FORWARD_GRAD,
            "api + tape @tf.function",
            "keras.ops.bce + tape @tf.function",
        ),
    ),
    "jax": (
        Style("eager loss", FORWARD, "api", "optax.sigmoid_bce"),
        Style("jit loss", FORWARD, "jit(api)", "jit(optax.sigmoid_bce)"),
        Style(
            "jit value_and_grad",
            FORWARD_GRAD,
            "jit(value_and_grad(api))",
            "jit(value_and_grad(optax))",
        ),
        Style("eager value_and_grad", FORWARD_GRAD, "value_and_grad", "jit(value_and_grad(optax))"),
    ),
}
#: A backend of another framework: our two calls, with nothing to compare them with.
GENERIC_STYLES = (
    Style("loss", FORWARD, "api"),
    Style("value_and_grad", FORWARD_GRAD, "value_and_grad"),
)


def styles_for(framework: str) -> tuple[Style, ...]:
    """The calling styles timed for backend ``framework``.

    >>> [s.name for s in styles_for("mine")]
    ['loss', 'value_and_grad']
    """
    return STYLES.get(framework, GENERIC_STYLES)


def pairs(
    styles: Sequence[Style], variants: Sequence[Variant]
) -> list[tuple[Style, Variant, Variant | None]]:
    """(style, ours, native) for each style whose variant of ours is among ``variants``.

    The native is None where it is missing (not installed, or it raised): our time is still
    reported.
    """
    by_key = {v.key: v for v in variants}
    result: list[tuple[Style, Variant, Variant | None]] = []
    for style in styles:
        ours = by_key.get(("ours", style.ours))
        if ours is None or ours.task != style.task:
            continue
        native = None if style.native is None else by_key.get(("native", style.native))
        result.append((style, ours, native))
    return result
