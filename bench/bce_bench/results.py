"""What a bench run found, as plain dataclasses that turn into JSON.

The ratio is always native time / our time, both medians from the same
interleaved rounds: above 1, bce-core is faster.

>>> ours = Measured("api", "eager", 2e-3, 1000, [2e-3, 2e-3, 3e-3], 1, 0.5)
>>> native = Measured("naive formula", "eager", 3e-3, 1000, [3e-3, 3e-3, 2e-3], 1, 0.5)
>>> row = Comparison("numpy", 1000, "float32", "forward", "loss", ours, native)
>>> row.ratio
1.5
>>> round(ours.throughput)
500000
>>> Comparison.from_json(row.to_json()) == row
True
"""

from __future__ import annotations

import math
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measured:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class Comparison:
    """Our variant against the framework's own (or against nothing, for a backend without one)."""

    backend: str
    size: int
    dtype: str
    task: str
    style: str  # the calling style (variants.Style.name)
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
            "style": self.style,
            "ours": self.ours.to_json(),
            "native": None if self.native is None else self.native.to_json(),
            "ratio_native_over_ours": self.ratio,
            "disagreement": self.disagreement,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        native = data["native"]
        return cls(
            data["backend"],
            data["size"],
            data["dtype"],
            data["task"],
            data["style"],
            Measured.from_json(data["ours"]),
            None if native is None else Measured.from_json(native),
            data.get("disagreement"),
        )


#: The two-sided confidence of the interval around the overhead.
CONFIDENCE_Z = 1.96


@dataclass
class Overhead:
    """Per call of one function at one small size: the public API and the backend object.

    Both were called alternately, one call each per round, so each round's difference
    shares that round's conditions; the overhead is the median of those differences.

    >>> api = Measured("API call", "eager", 0, 10, [5e-6, 9e-6, 6e-6], 1)
    >>> direct = Measured("backend call", "eager", 0, 10, [4e-6, 4e-6, 5e-6], 1)
    >>> round(Overhead("numpy", "loss", 10, api, direct).overhead_s * 1e6, 3)
    1.0
    """

    backend: str
    function: str  # "loss" or "value_and_grad"
    size: int
    api: Measured
    direct: Measured

    def _differences(self) -> list[float]:
        return sorted(a - d for a, d in zip(self.api.samples_s, self.direct.samples_s))

    @property
    def overhead_s(self) -> float:
        """The median of the per-round differences, API call minus backend call."""
        return statistics.median(self._differences())

    @property
    def interval_s(self) -> tuple[float, float]:
        """A 95% distribution-free confidence interval of that median (order statistics)."""
        differences = self._differences()
        n = len(differences)
        k = max(0, math.floor((n - CONFIDENCE_Z * math.sqrt(n)) / 2))
        return differences[min(k, n - 1)], differences[max(n - 1 - k, 0)]

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval_s
        return {
            "backend": self.backend,
            "function": self.function,
            "size": self.size,
            "api": self.api.to_json(),
            "direct": self.direct.to_json(),
            "overhead_s": self.overhead_s,
            "overhead_us": self.overhead_s * 1e6,
            "overhead_interval_95_us": [low * 1e6, high * 1e6],
            "rounds": len(self.api.samples_s),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Overhead:
        return cls(
            data["backend"],
            data["function"],
            data["size"],
            Measured.from_json(data["api"]),
            Measured.from_json(data["direct"]),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackendResult:
        return cls(
            data["name"],
            data["version"],
            data.get("device", ""),
            [Comparison.from_json(row) for row in data.get("comparisons", [])],
            [Overhead.from_json(row) for row in data.get("overhead", [])],
            list(data.get("notes", [])),
            list(data.get("failures", [])),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        """A run saved by ``--json``, as it was measured (to report or plot it again)."""
        return cls(
            data["command"],
            data["machine"],
            data["config"],
            [BackendResult.from_json(b) for b in data.get("backends", [])],
            [Skipped(**s) for s in data.get("skipped", [])],
            data.get("seconds", 0.0),
        )
