"""Short human-readable numbers: times, rates and element counts.

>>> fmt_time(0.000_012_34), fmt_time(1.5), fmt_time(0.0421)
('12.3 µs', '1.50 s', '42.1 ms')
>>> fmt_rate(2.5e9), fmt_rate(810.0)
('2.50 G/s', '810 /s')
>>> fmt_size(10_000_000), fmt_size(100), fmt_size(300), fmt_size(10)
('1e7', '1e2', '300', '10')
>>> fmt_ratio(1.234), fmt_ratio(None)
('1.23×', '—')
"""

from __future__ import annotations

import math


def _three_digits(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_time(seconds: float) -> str:
    """Seconds in s, ms, µs or ns, three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            value = seconds / scale
            return (
                f"{value:.2f} {unit}"
                if unit == "s" and value < 10
                else f"{_three_digits(value)} {unit}"
            )
    return f"{_three_digits(seconds / 1e-9)} ns"


def fmt_rate(per_second: float) -> str:
    """Elements per second with an SI prefix."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return (
                f"{per_second / scale:.2f} {prefix}/s"
                if per_second / scale < 10
                else f"{_three_digits(per_second / scale)} {prefix}/s"
            )
    return f"{_three_digits(per_second)} /s"


def fmt_size(elements: int) -> str:
    """Powers of ten from 100 up as 1eN (as the --sizes option takes them), others in full."""
    exponent = round(math.log10(elements)) if elements > 0 else 0
    return f"1e{exponent}" if exponent >= 2 and 10**exponent == elements else str(elements)


def fmt_ratio(ratio: float | None) -> str:
    """native time / our time, or a dash where there is no native counterpart."""
    return "—" if ratio is None else f"{ratio:.2f}×"
