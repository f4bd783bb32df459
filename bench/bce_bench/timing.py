"""An interleaved timer: several functions timed round by round in one process.

A shared, noisy machine slows whole stretches of time; timing one function
after another would charge such a stretch to one of them. Here every round
runs each function once (one sample each), and the order rotates from round
to round, so a slow stretch falls on all of them alike. Medians of the
samples are compared within one call of :func:`interleaved`.

>>> import itertools
>>> counter = itertools.count()
>>> timings = interleaved({"a": lambda: next(counter), "b": lambda: sum(range(100))}, repeat=3)
>>> sorted(timings), len(timings["a"].samples)
(['a', 'b'], 3)
>>> timings["a"].median > 0
True
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

Key = TypeVar("Key", bound=Hashable)

#: Default wall time aimed at per function (all its samples together), in seconds.
TARGET_SECONDS = 0.3
MIN_REPEAT = 5
MAX_REPEAT = 50
#: A sample is this fraction of the target at least: fast calls are looped so the clock's
#: resolution and the loop's own cost do not matter.
SAMPLE_FRACTION = 1 / 20
#: Calls at most in the estimate of a fast function's time.
MAX_ESTIMATE_CALLS = 20


@dataclass
class Timing:
    """The samples of one function: seconds per call, one value per round.

    >>> Timing(number=10, samples=[3e-6, 1e-6, 2e-6]).median
    2e-06
    """

    number: int  # calls per sample
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def repeat(self) -> int:
        return len(self.samples)


def _time_once(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def estimate(function: Callable[[], Any], budget: float, enough: float) -> float:
    """Seconds per call: the fastest of a few calls.

    Calls stop after 20, or after 3 once ``budget`` seconds are spent, or as
    soon as ``enough`` seconds are: one call delayed by another process does
    not decide the loop count, and a slow function is not called in vain.
    """
    fastest, spent, calls = math.inf, 0.0, 0
    while calls < MAX_ESTIMATE_CALLS and spent < enough and (calls < 3 or spent < budget):
        elapsed = _time_once(function)
        fastest, spent, calls = min(fastest, elapsed), spent + elapsed, calls + 1
    return max(fastest, 1e-9)


def _sample(function: Callable[[], Any], number: int) -> float:
    # The collector would run at moments that depend on the other functions' garbage.
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            function()
        elapsed = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed / number


def rounds(functions: Mapping[Key, Any], repeat: int) -> list[list[Key]]:
    """The order of each round: the keys rotated by one place per round.

    >>> rounds({"ours": 0, "native": 1}, 3)
    [['ours', 'native'], ['native', 'ours'], ['ours', 'native']]
    """
    keys = list(functions)
    return [keys[r % len(keys) :] + keys[: r % len(keys)] for r in range(repeat)] if keys else []


def interleaved(
    functions: Mapping[Key, Callable[[], Any]],
    *,
    repeat: int | None = None,
    target: float = TARGET_SECONDS,
    warm_up: bool = True,
    known: Mapping[Key, float] | None = None,
) -> dict[Key, Timing]:
    """Time ``functions`` interleaved; each must return only once its work is done.

    Each function is called once to warm up (compilation, caches, allocation;
    ``warm_up=False`` when the caller has done so), then its time is estimated
    (see :func:`estimate`). Fast functions are looped ``number`` times per
    sample. With ``repeat=None`` the number of rounds aims at ``target``
    seconds for the slowest function, between 5 and 50 rounds.

    ``known`` holds the seconds of calls the caller has already timed (its
    warm-up): a function that took ``target`` or more is called once more,
    and if that call too takes ``target`` or more it is slow enough for one
    call per sample and is not estimated further.
    """
    numbers: dict[Key, int] = {}
    sample_seconds: dict[Key, float] = {}
    sample_target = target * SAMPLE_FRACTION
    for key, function in functions.items():
        if warm_up:
            function()
        seen = (known or {}).get(key, 0.0)
        if seen >= target:
            # A slow first call may have compiled (a backend's own jit, torch.compile):
            # one more call tells a slow function from one that has become fast.
            seen = _time_once(function)
        per_call = seen if seen >= target else estimate(function, sample_target, target)
        numbers[key] = max(1, int(sample_target / per_call))
        sample_seconds[key] = per_call * numbers[key]
    if repeat is None:
        slowest = max(sample_seconds.values(), default=1.0)
        repeat = min(MAX_REPEAT, max(MIN_REPEAT, math.ceil(target / slowest)))
    timings = {key: Timing(numbers[key]) for key in functions}
    for order in rounds(functions, repeat):
        for key in order:
            timings[key].samples.append(_sample(functions[key], numbers[key]))
    return timings


#: Rounds of :func:`paired` when not given: as many as fit in ``target`` seconds, within these.
MIN_PAIRED_ROUNDS = 200
MAX_PAIRED_ROUNDS = 20_000
#: Warm-up calls of each function before :func:`paired` times them.
PAIRED_WARM_UP_CALLS = 20


def paired(
    first: Callable[[], Any],
    second: Callable[[], Any],
    *,
    rounds: int | None = None,
    target: float = TARGET_SECONDS,
    settle: Callable[[Any], Any] | None = None,
) -> tuple[Timing, Timing]:
    """Single calls of two functions, alternated: one call of each per round.

    Made to measure a small difference between two similar calls (the cost of one
    layer of dispatch): the order swaps every round, so neither call is always the
    first after the other, and ``samples[i]`` of both come from the same moment.
    With ``rounds=None`` the rounds go on for ``target`` seconds (200 to 20,000 rounds).
    ``settle`` is called on each result outside the timed span (to wait for queued
    device work, so that it does not pile up and land on later calls).

    >>> a, b = paired(lambda: sum(range(50)), lambda: None, rounds=4)
    >>> (a.number, a.repeat, b.repeat)
    (1, 4, 4)
    """
    for _ in range(PAIRED_WARM_UP_CALLS):
        first()
        second()
    timings = Timing(1), Timing(1)
    clock = time.perf_counter
    enabled = gc.isenabled()
    gc.disable()  # the collector would land on one call of a pair
    began = clock()
    try:
        r = 0
        while (
            r < rounds
            if rounds is not None
            else r < MAX_PAIRED_ROUNDS and (r < MIN_PAIRED_ROUNDS or clock() - began < target)
        ):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for index in order:
                function = first if index == 0 else second
                start = clock()
                result = function()
                timings[index].samples.append(clock() - start)
                if settle is not None:
                    settle(result)
            r += 1
            if r % 1000 == 0 and enabled:
                gc.collect()  # between rounds, untimed: garbage does not pile up
    finally:
        if enabled:
            gc.enable()
    return timings
