"""Choosing the backend for a call.

Order: an explicit ``backend=`` (a name or a backend object); else the
framework of the arrays, detected from their type's module and class name
without importing any framework; else the innermost ``use_backend`` context;
else the process default (``set_default_backend``); else ``"numpy"``.

NumPy arrays and Python numbers are the interchange format: every backend
accepts them next to its own arrays, so they never make a call "mixed".
Arrays of two other frameworks in one call raise MixedFrameworksError.

>>> import numpy as np
>>> resolve_backend(None, (np.zeros(2),)).name
'numpy'
>>> with use_backend("numpy"):
...     resolve_backend(None, ([0.0],)).name
'numpy'
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import MixedFrameworksError
from .plugin import Backend
from .registry import get_registry

#: The backend whose arrays every backend accepts as input.
INTERCHANGE_BACKEND = "numpy"

_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bce_backend", default=None
)
# The process default; one atomic reference assignment, read without a lock.
_default_backend: str | None = None


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, loaded on first use.

    >>> get_backend("numpy").name
    'numpy'
    """
    return get_registry().get(name)


def set_default_backend(name: str | None) -> None:
    """Set the process-wide default backend (None restores ``"numpy"``).

    The name is checked at once, so a typo fails here and not at the first loss.

    >>> set_default_backend("numpy"); set_default_backend(None)
    """
    global _default_backend
    if name is not None:
        get_registry().record(name)
    _default_backend = name


@contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Use backend ``name`` for calls in this block whose arrays do not choose one.

    The choice lives in a context variable, so threads and asyncio tasks each
    see their own.

    >>> with use_backend("numpy") as backend:
    ...     backend.name
    'numpy'
    """
    backend = get_registry().get(name)
    token = _context_backend.set(name)
    try:
        yield backend
    finally:
        _context_backend.reset(token)


def _frameworks_of(arrays: Sequence[Any]) -> dict[str, type]:
    registry = get_registry()
    owners: dict[str, type] = {}
    for array in arrays:
        if array is not None:
            owner = registry.owner_of(type(array))  # cached per type after the first call
            if owner is not None:
                owners.setdefault(owner, type(array))
    return owners


def _all_of_type(arrays: Sequence[Any], array_type: type) -> bool:
    for array in arrays:  # a loop, not all(): no generator on the per-call path
        if array is not None and type(array) is not array_type:
            return False
    return True


#: Types already found to be backend objects: the protocol check reads every method's name,
#: a set lookup does not.
_BACKEND_TYPES: set[type] = set()


def _chosen_backend(backend: Any) -> Backend:
    """The backend an explicit ``backend=`` names; anything but a name or a backend object is a
    TypeError, the same whatever the arrays.

    >>> _chosen_backend(3)
    Traceback (most recent call last):
    TypeError: backend=3 is of type int; pass a backend name (a str such as 'numpy'; \
bce_core.available_backends() lists them) or a backend object from bce_core.get_backend(name).
    """
    if isinstance(backend, str):
        return get_registry().get(backend)
    kind = type(backend)
    if kind in _BACKEND_TYPES:
        return backend  # type: ignore[no-any-return]
    if isinstance(backend, Backend) and not isinstance(backend, type):
        _BACKEND_TYPES.add(kind)
        return backend
    raise TypeError(
        f"backend={backend!r} is of type {kind.__qualname__}; pass a backend name (a str such as "
        f"'numpy'; bce_core.available_backends() lists them) or a backend object from "
        f"bce_core.get_backend(name)."
    )


def resolve_backend(backend: str | Backend | None, arrays: Sequence[Any]) -> Backend:
    """Pick the backend for a call on ``arrays`` (None entries are ignored)."""
    if backend is not None:
        return _chosen_backend(backend)
    registry = get_registry()
    # The usual call: every array of one type whose owner is known. One dict read, no loop
    # over the owners; written once per type (a race writes the same backend).
    first = type(arrays[0])
    known = registry.backend_of_type.get(first)
    if known is not None and _all_of_type(arrays, first):
        return known
    owners = _frameworks_of(arrays)
    if len(owners) > 1:
        owners.pop(INTERCHANGE_BACKEND, None)
    if len(owners) > 1:
        described = ", ".join(
            f"{t.__module__}.{t.__qualname__} ({name})" for name, t in owners.items()
        )
        raise MixedFrameworksError(
            f"arrays of different frameworks in one call: {described}; convert them to one "
            f"framework (NumPy arrays are accepted next to any framework)."
        )
    if not owners:
        name = _context_backend.get() or _default_backend or INTERCHANGE_BACKEND
        return registry.get(name)
    ((name, owned_type),) = owners.items()
    chosen = registry.get(name)
    if owned_type is first and _all_of_type(arrays, first):
        registry.backend_of_type[first] = chosen
    return chosen
