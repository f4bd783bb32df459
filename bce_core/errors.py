"""Exceptions raised by the registry and dispatch.

Argument errors are plain ValueError and TypeError, as the spec says; these
classes subclass the builtin a caller would expect, so ``except ValueError``
still catches an unknown backend name.
"""

from __future__ import annotations


class UnknownBackendError(ValueError):
    """No plugin registers a backend of that name."""


class BackendUnavailableError(ImportError):
    """The backend is registered but cannot be used: its framework is not
    installed, or loading it failed."""


class BackendConflictError(RuntimeError):
    """Two plugins register a backend under the same name."""


class MixedFrameworksError(TypeError):
    """Arrays of two different frameworks were passed to one call."""
