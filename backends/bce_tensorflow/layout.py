"""What a compiled program needs to know about one call's operands, and nothing more.

A ``Layout`` is the working dtype, the logits' rank and, for each optional
operand, which of its axes span the logits' axes and which are broadcast
(size 1). Batch sizes are left out: the programs are traced once per layout
and option set with shape-polymorphic input signatures, and XLA compiles each
concrete shape without tracing the Python again.

>>> import tensorflow as tf
>>> layout = Layout("float32", 2, weight=(True,), pos_weight=None, mask=(True, False),
...                 chunked=True, padded=False)
>>> layout.flat
False
>>> [spec.shape.as_list() for spec in layout.signature()]
[[None, None], [None, None], [None], [None, 1]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tensorflow as tf

#: Per axis of an operand (right-aligned with the logits): True where it spans the logits' axis,
#: False where it has size 1 and is broadcast.
Pattern = tuple[bool, ...]


def pattern_of(tensor: tf.Tensor | None) -> Pattern | None:
    """The pattern of ``tensor``'s static shape (an unknown axis is taken as spanning)."""
    if tensor is None:
        return None
    return tuple(d != 1 for d in tensor.shape.as_list())


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """Whether TensorFlow places operations on a GPU by default here."""
    return bool(tf.config.list_logical_devices("GPU"))


def runs_on_cpu(tensor: tf.Tensor) -> bool:
    """Whether ``tensor``'s computations run on a CPU (where the chunked loop pays off)."""
    device = getattr(tensor, "device", "") or ""
    if device:
        return "CPU" in device.rsplit("/", 1)[-1].upper()
    return not has_gpu()


@dataclass(frozen=True)
class Layout:
    """The static facts about one call's operands that a compiled program is specialised on."""

    dtype: str
    rank: int
    weight: Pattern | None
    pos_weight: Pattern | None
    mask: Pattern | None
    #: Work a chunk of rows at a time (on CPU, see ``chunks``).
    chunked: bool
    #: The leading axis is padded (a small input): a ``valid`` argument counts the real rows.
    padded: bool

    @property
    def optional(self) -> tuple[tuple[str, Pattern], ...]:
        """(name, pattern) of the optional operands that are given, in argument order."""
        named = (("weight", self.weight), ("pos_weight", self.pos_weight), ("mask", self.mask))
        return tuple((name, p) for name, p in named if p is not None)

    def spans(self, pattern: Pattern) -> bool:
        """Whether an operand of ``pattern`` has the logits' full shape."""
        return len(pattern) == self.rank and all(pattern)

    @property
    def flat(self) -> bool:
        """Whether every operand has the full shape or a single element, so that the elementwise
        pass can run over the flattened elements whatever the logits' shape."""
        return all(self.spans(p) or not any(p) for _, p in self.optional)

    def sliced(self, pattern: Pattern) -> bool:
        """Whether an operand of ``pattern`` is cut into the same rows as the logits."""
        return len(pattern) == self.rank and self.rank > 0 and pattern[0]

    def signature(self) -> list[tf.TensorSpec]:
        """Input signature of the operands: logits, targets, then the optional operands."""
        dtype = tf.as_dtype(self.dtype)
        full = tf.TensorSpec([None] * self.rank, dtype)
        specs = [full, full]
        for name, pattern in self.optional:
            specs.append(tf.TensorSpec([None if p else 1 for p in pattern],
                                       tf.bool if name == "mask" else dtype))
        return specs
