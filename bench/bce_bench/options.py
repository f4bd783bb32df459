"""Parsing and checking the values of ``bce bench``'s options.

Each parser is an argparse ``type``: it raises ``argparse.ArgumentTypeError``,
which argparse reports as ``bce bench: error: argument --sizes: ...``.

>>> parse_sizes("1e3,1e5, 100")
(1000, 100000, 100)
>>> parse_dtypes("float32,bfloat16")
('float32', 'bfloat16')
>>> parse_names("torch,jax")
['torch', 'jax']
>>> plot_path("docs/bench.svg")
'docs/bench.svg'
"""

from __future__ import annotations

import argparse

from bce_core.cli import output_file
from bce_core.spec import FLOAT_DTYPES, closest_name

#: The backends timed by default, when installed, each against its framework's own loss.
DEFAULT_BACKENDS: tuple[str, ...] = ("numpy", "torch", "tensorflow", "jax")
#: From one training batch (256 samples x 1 to 1,000 labels) up to a large evaluation.
DEFAULT_SIZES: tuple[int, ...] = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
DEFAULT_DTYPES: tuple[str, ...] = ("float32",)
#: The picture formats of ``--plot``, by file extension.
PLOT_FORMATS: tuple[str, ...] = ("png", "svg")
#: Elements per call in the per-call overhead measurement.
OVERHEAD_SIZES: tuple[int, ...] = (1, 100, 1_000)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_size(text: str) -> int:
    """One element count: a positive integer, written as ``1000``, ``1e3`` or ``10_000``.

    >>> parse_size("1e7")
    10000000
    >>> parse_size("2.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '2.5' is not a positive integer (write sizes as 1000 or 1e3)
    """
    problem = argparse.ArgumentTypeError(
        f"{text!r} is not a positive integer (write sizes as 1000 or 1e3)"
    )
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise problem from None
        # Scientific notation is a float; accept it only when it names a whole number exactly.
        if not number.is_integer():
            raise problem from None
        value = int(number)
    if value <= 0:
        raise problem
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    """Comma-separated element counts, duplicates dropped, in the order given."""
    items = _items(text)
    if not items:
        raise argparse.ArgumentTypeError("no size given (e.g. --sizes 1e3,1e5)")
    return tuple(dict.fromkeys(parse_size(item) for item in items))


def parse_dtypes(text: str) -> tuple[str, ...]:
    """Comma-separated dtype names among float16, bfloat16, float32 and float64."""
    items = _items(text)
    if not items:
        raise argparse.ArgumentTypeError(f"no dtype given; choose from {', '.join(FLOAT_DTYPES)}")
    for item in items:
        if item not in FLOAT_DTYPES:
            hint = closest_name(item, FLOAT_DTYPES)
            did_you_mean = f"; did you mean {hint!r}?" if hint else ""
            raise argparse.ArgumentTypeError(
                f"unknown dtype {item!r}; choose from {', '.join(FLOAT_DTYPES)}{did_you_mean}"
            )
    return tuple(dict.fromkeys(items))


def parse_names(text: str) -> list[str]:
    """Backend names, comma-separated (the option may also be repeated)."""
    items = _items(text)
    if not items:
        raise argparse.ArgumentTypeError("empty backend name")
    return items


def positive_int(text: str) -> int:
    """A count of at least 1.

    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '0' is not a positive integer
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def plot_path(text: str) -> str:
    """A file name for ``--plot``: its extension chooses the format, PNG or SVG; its folder
    must exist and be writable.

    >>> plot_path("bench.pdf")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'bench.pdf' does not end in .png or .svg (the picture's formats)
    """
    extension = text.rpartition(".")[2].lower() if "." in text.rpartition("/")[2] else ""
    if extension not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in .png or .svg (the picture's formats)"
        )
    return output_file(text)
