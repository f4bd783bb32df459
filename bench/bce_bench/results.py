"""What a bench run found, as plain dataclasses that turn into JSON.

The ratio is always native time / our time, both medians from the same
interleaved rounds: above 1, bce-core is faster.

>>> ours = Measured("api", "eager", 2e-3, 1000, [2e-3, 2e-3, 3e-3], 1, 0.5)
>>> native = Measured("naive formula", "eager", 3e-3, 1000, [3e-3, 3e-3, 2e-3], 1, 0.5)
>>> row = Comparison("numpy", 1000, "float32", "forward", ours, native)
>>> row.ratio
1.5
>>> round(ours.throughput)
500000
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Measured:
    """One timed variant in one comparison."""

    label: str
    mode: str
    median_s: float
    size: int
    samples_s: list[float]
    number: int  # calls per sample
    loss: float | None = None  # the warm-up call's loss, to check that both sides agree

    @property
    def throughput(self) -> float:
        """Elements per second."""
        return self.size / self.median_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_per_s": self.throughput, "repeat": len(self.samples_s)}


@dataclass
class Comparison:
    """Our variant against the framework's own (or against nothing, for a backend without one)."""

    backend: str
    size: int
    dtype: str
    task: str
    ours: Measured
    native: Measured | None = None
    #: Relative difference of the two losses (and gradient sums), when it is above tolerance.
    disagreement: str | None = None

    @property
    def ratio(self) -> float | None:
        """native time / our time: above 1, bce-core is faster."""
        return None if self.native is None else self.native.median_s / self.ours.median_s

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "size": self.size,
            "dtype": self.dtype,
            "task": self.task,
            "ours": self.ours.to_json(),
            "native": None if self.native is None else self.native.to_json(),
            "ratio_native_over_ours": self.ratio,
            "disagreement": self.disagreement,
        }


@dataclass
class Overhead:
    """Per-call time of the top-level API and of the backend object, at one small size."""

    backend: str
    size: int
    api: Measured
    direct: Measured

    @property
    def overhead_s(self) -> float:
        """The median of the per-round differences: both ran in each round, so the pair shares
        that round's conditions."""
        return statistics.median(a - d for a, d in zip(self.api.samples_s, self.direct.samples_s))

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "size": self.size,
            "api": self.api.to_json(),
            "direct": self.direct.to_json(),
            "overhead_s": self.overhead_s,
        }


@dataclass
class BackendResult:
    """Everything measured on one backend."""

    name: str
    version: str
    device: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    overheads: list[Overhead] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # baselines or dtypes not timed, and why
    failures: list[str] = field(default_factory=list)  # variants that raised

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "device": self.device,
            "comparisons": [c.to_json() for c in self.comparisons],
            "overhead": [o.to_json() for o in self.overheads],
            "notes": self.notes,
            "failures": self.failures,
        }


@dataclass
class Skipped:
    """A backend that was not timed: its status (not "ok") and the reason."""

    name: str
    status: str
    reason: str


@dataclass
class BenchResult:
    """A whole run."""

    command: str
    machine: dict[str, Any]
    config: dict[str, Any]
    backends: list[BackendResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine,
            "config": self.config,
            "ratio": "native median time / bce-core median time (above 1: bce-core is faster)",
            "backends": [b.to_json() for b in self.backends],
            "skipped": [asdict(s) for s in self.skipped],
            "seconds": self.seconds,
        }
