"""Running the bench: which backends, then for each one every size, dtype and task, then the
per-call overhead.

Each (backend, size, dtype, task) is one group: our variants and the
framework's own are called once each (compilation, and a check that the
losses agree), then timed interleaved; each calling style of the task
(``variants.STYLES``) then pairs one of ours with one of theirs. A variant
that raises is listed and the others are still timed; a backend whose status
is not "ok" is skipped and listed.

>>> config = Config(backends=["numpy"], sizes=(50,), dtypes=("float32",), repeat=2,
...                 overhead_sizes=(10,))
>>> result = run_bench(config, command="bce bench", machine={})
>>> [(c.style, c.ours.label, c.native.label) for c in result.backends[0].comparisons]
[('loss', 'api', 'naive formula'), ('value_and_grad', 'value_and_grad', 'naive formula + grad')]
>>> [(o.function, o.size) for o in result.backends[0].overheads]
[('loss', 10), ('value_and_grad', 10)]
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bce_core.registry import get_registry

from .frameworks import Framework, framework_for
from .inputs import SEED, make_inputs
from .natives import native_variants
from .options import DEFAULT_BACKENDS, OVERHEAD_SIZES
from .ours import our_variants
from .results import BackendResult, BenchResult, Comparison, Measured, Overhead, Skipped
from .timing import TARGET_SECONDS, Timing, interleaved, paired
from .units import fmt_size
from .variants import EAGER, TASKS, Style, Variant, pairs, styles_for

#: Relative difference above which our loss and a native one are reported as disagreeing.
TOLERANCE = {"float16": 3e-2, "bfloat16": 3e-2, "float32": 1e-3, "float64": 1e-6}
#: Wall time aimed at per (function, size) in the overhead measurement, both calls together.
OVERHEAD_TARGET_SECONDS = 0.3
#: The functions whose per-call overhead is measured: the public API's name for each.
OVERHEAD_FUNCTIONS = ("binary_cross_entropy_with_logits", "value_and_grad")


@dataclass
class Config:
    """What to measure; ``backends=None`` means every installed default backend."""

    backends: list[str] | None
    sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    repeat: int | None = None
    target: float = TARGET_SECONDS
    overhead_sizes: tuple[int, ...] = OVERHEAD_SIZES
    overhead_target: float = OVERHEAD_TARGET_SECONDS
    seed: int = SEED

    def to_json(self) -> dict[str, Any]:
        return {
            "backends": self.backends,
            "sizes": list(self.sizes),
            "dtypes": list(self.dtypes),
            "repeat": self.repeat,
            "target_seconds_per_variant": self.target,
            "overhead_sizes": list(self.overhead_sizes),
            "overhead_functions": list(OVERHEAD_FUNCTIONS),
            "overhead_target_seconds": self.overhead_target,
            "seed": self.seed,
            "inputs": "float32 logits ~ N(0, 3) and targets in {0, 1}, 1-d, cast to the dtype",
        }


@dataclass
class Progress:
    """Callbacks for a progress display: the number of steps, then one call per step."""

    on_total: Callable[[int], None] = lambda total: None
    on_step: Callable[[str], None] = lambda description: None
    on_done: Callable[[], None] = lambda: None


@dataclass
class _Outcome:
    """A variant's warm-up call: its time, its loss and gradient summary, or its error."""

    seconds: float = 0.0
    loss: float | None = None
    grad_sum: float | None = None
    error: str | None = None


def select_backends(names: list[str] | None) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """(name, version) of the backends to time, and those skipped with their status.

    An unknown name raises UnknownBackendError (with a suggestion) before anything loads.
    """
    registry = get_registry()
    if names is None:
        names = [name for name in DEFAULT_BACKENDS if name in registry.names()]
    for name in names:
        if name not in registry.names():
            registry.record(name)  # raises, naming the closest known backend
    chosen, skipped = [], []
    for name in dict.fromkeys(names):
        info = registry.info(name)  # loads the backend, and so imports its framework
        if info.status == "ok":
            chosen.append((name, info.version or ""))
        else:
            skipped.append(Skipped(name, info.status, info.error or ""))
    return chosen, skipped


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _warm(framework: Framework, run: Callable[[], Any]) -> _Outcome:
    """The first call (compilation happens here, outside the timed rounds) and its result."""
    try:
        start = time.perf_counter()
        result = framework.sync(run())
        seconds = time.perf_counter() - start
    except Exception as exc:  # an incomplete backend or baseline: listed, the rest still timed
        return _Outcome(error=_short(exc))
    loss, grad = result if isinstance(result, tuple) else (result, None)
    try:
        return _Outcome(
            seconds,
            float(framework.to_numpy(loss)),
            None if grad is None else float(np.abs(framework.to_numpy(grad)).sum()),
        )
    except Exception:  # the result cannot reach NumPy (bfloat16 without ml_dtypes): no check
        return _Outcome(seconds)


def _disagreement(ours: _Outcome, native: _Outcome, dtype: str) -> str | None:
    problems = []
    for what, a, b in (
        ("loss", ours.loss, native.loss),
        ("sum |gradient|", ours.grad_sum, native.grad_sum),
    ):
        if a is None or b is None:
            continue
        relative = abs(a - b) / max(abs(a), abs(b), 1e-30)
        if not relative <= TOLERANCE[dtype]:  # also catches NaN
            problems.append(f"{what} {a:.6g} vs {b:.6g} (relative difference {relative:.2g})")
    return "; ".join(problems) or None


def _measured(variant: Variant, timing: Timing, size: int, outcome: _Outcome) -> Measured:
    return Measured(
        variant.label,
        variant.mode,
        timing.median,
        size,
        timing.samples,
        timing.number,
        outcome.loss,
    )


def _group(
    framework: Framework,
    styles: tuple[Style, ...],
    variants: list[Variant],
    size: int,
    dtype: str,
    config: Config,
    result: BackendResult,
) -> None:
    """Warm up, check and time one task's variants; append the comparisons to ``result``."""
    outcomes = {v.key: _warm(framework, v.run) for v in variants}
    for variant in variants:
        error = outcomes[variant.key].error
        if error is not None:
            result.failures.append(
                f"{variant.side} {variant.label!r} ({fmt_size(size)} {dtype}) raised {error}"
            )
    alive = [v for v in variants if outcomes[v.key].error is None]
    sync = framework.sync
    functions = {v.key: (lambda run=v.run: sync(run())) for v in alive}
    # A compiling variant's first call includes its compilation: no estimate of later calls.
    known = {v.key: outcomes[v.key].seconds for v in alive if v.mode == EAGER}
    try:
        timings = interleaved(
            functions, repeat=config.repeat, target=config.target, warm_up=False, known=known
        )
    except Exception as exc:
        result.failures.append(
            f"timing {variants[0].task} ({fmt_size(size)} {dtype}) raised {_short(exc)}"
        )
        return
    for style, ours, native in pairs(styles, alive):
        row = Comparison(
            framework.name,
            size,
            dtype,
            ours.task,
            style.name,
            _measured(ours, timings[ours.key], size, outcomes[ours.key]),
        )
        if native is not None:
            row.native = _measured(native, timings[native.key], size, outcomes[native.key])
            row.disagreement = _disagreement(outcomes[ours.key], outcomes[native.key], dtype)
        result.comparisons.append(row)


def _route(framework: Framework, seed: int, result: BackendResult) -> str | None:
    """None when the backend's own arrays select it in the API; else its name, to pass explicitly.

    A third-party backend may take another framework's arrays (NumPy's, say); the API
    would then run that framework's backend, so it is named in each call instead.
    """
    from bce_core.dispatch import resolve_backend

    owner = resolve_backend(None, (framework.tensor(make_inputs(1, seed)[0], "float32"),)).name
    if owner == framework.name:
        return None
    result.notes.append(
        f"its arrays select the {owner!r} backend, so bce-core is called with "
        f"backend={framework.name!r}"
    )
    return framework.name


def _overhead(
    framework: Framework, config: Config, route: str | None, result: BackendResult
) -> None:
    """Per call: ``bce_core.<function>(x, y)`` against ``get_backend(name).<function>(x, y)``.

    Nothing else differs between the two calls (the same arguments; the wait for the
    result is outside the timed span), so the paired difference is the public API's own
    cost: resolving the backend and passing the options on.
    """
    import bce_core

    for function in OVERHEAD_FUNCTIONS:
        api = getattr(bce_core, function)
        if route is not None:
            api = functools.partial(api, backend=route)
        direct = getattr(framework.backend, function)
        name = "loss" if function == "binary_cross_entropy_with_logits" else function
        for size in config.overhead_sizes:
            logits, targets = make_inputs(size, config.seed)
            x, y = framework.tensor(logits, "float32"), framework.tensor(targets, "float32")
            try:
                timings = paired(
                    functools.partial(api, x, y),
                    functools.partial(direct, x, y),
                    rounds=config.repeat,
                    target=config.overhead_target,
                    settle=framework.sync,
                )
            except Exception as exc:
                result.failures.append(f"{name} overhead at {size} elements raised {_short(exc)}")
                break
            measured = [
                Measured(label, EAGER, t.median, size, t.samples, t.number)
                for label, t in zip(("API call", "backend call"), timings)
            ]
            result.overheads.append(Overhead(framework.name, name, size, *measured))


def run_backend(name: str, version: str, config: Config, progress: Progress) -> BackendResult:
    """Every comparison and the overhead of one loaded backend."""
    import bce_core

    framework = framework_for(name, bce_core.get_backend(name))
    result = BackendResult(name, version)
    route = _route(framework, config.seed, result)
    styles = styles_for(name)
    unavailable: set[str] = set()
    for size in config.sizes:
        logits, targets = make_inputs(size, config.seed)
        for dtype in config.dtypes:
            try:
                x, y = framework.tensor(logits, dtype), framework.tensor(targets, dtype)
            except Exception as exc:  # a dtype the framework (or this installation) lacks
                if dtype not in unavailable:
                    unavailable.add(dtype)
                    result.notes.append(f"{dtype} not timed: {_short(exc)}")
                for task in TASKS:
                    progress.on_step(f"{name} {fmt_size(size)} {dtype} {task} (skipped)")
                continue
            result.device = result.device or framework.device(x)
            natives, notes = native_variants(name, x, y)
            result.notes += [note for note in notes if note not in result.notes]
            variants = our_variants(name, x, y, route) + natives
            for task in TASKS:
                progress.on_step(f"{name} {fmt_size(size)} {dtype} {task}")
                group = [v for v in variants if v.task == task]
                _group(framework, styles, group, size, dtype, config, result)
            del x, y, variants, natives  # free the large inputs before the next size
    progress.on_step(f"{name} per-call overhead")
    _overhead(framework, config, route, result)
    return result


def run_bench(
    config: Config, *, command: str, machine: dict[str, Any], progress: Progress | None = None
) -> BenchResult:
    """Measure every selected backend."""
    progress = progress or Progress()
    start = time.perf_counter()
    chosen, skipped = select_backends(config.backends)
    result = BenchResult(command, machine, config.to_json(), skipped=skipped)
    progress.on_total(len(chosen) * (len(config.sizes) * len(config.dtypes) * len(TASKS) + 1))
    for name, version in chosen:
        try:
            result.backends.append(run_backend(name, version, config, progress))
        except Exception as exc:  # e.g. a backend whose asarray fails: the others still run
            result.backends.append(
                BackendResult(name, version, failures=[f"stopped: {_short(exc)}"])
            )
    progress.on_done()
    result.seconds = time.perf_counter() - start
    return result
