"""Every installed backend, called the way its framework's users call it.

``installed_backend(name)`` loads a built-in backend or skips the test naming the missing
framework; ``NativeCalls`` wraps a backend so that NumPy operands reach it as native arrays
(``backend.asarray``) and its results come back as NumPy arrays (``backend.to_numpy``). Only
the public contract is used: ``bce_core.get_backend`` and the ``Backend`` protocol.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import bce_core
from bce_core.plugin import Backend

#: The built-in backends and the framework each needs.
BACKEND_FRAMEWORKS = {
    "numpy": "numpy",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "array_api": "array_api_compat",
}
#: Where a backend disagrees with the specification today, by (test function, backend): what
#: differs. Those tests are marked xfail(strict=True), so a fix shows up as a failure here.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}
#: The operands a call converts to native arrays.
OPERANDS = ("logits", "probs", "targets", "weight", "pos_weight", "mask")


def mark_known_difference(request: pytest.FixtureRequest, name: str) -> None:
    """xfail(strict=True) the requesting test on backend ``name`` if it is a known difference."""
    known = KNOWN_DIFFERENCES.get((request.function.__name__, name))
    if known:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{name}: {known}"))


def installed_backend(name: str) -> Backend:
    """The backend ``name``, or skip the test naming the framework that is missing."""
    framework = BACKEND_FRAMEWORKS[name]
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"the {name} backend needs {framework}, which is not installed here")
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    return bce_core.get_backend(name)


@contextlib.contextmanager
def float64_enabled(name: str) -> Iterator[None]:
    """JAX has float64 only with x64 on: on for the test, then as it was."""
    if name != "jax":
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


def native_operand(backend: Backend, value: Any) -> Any:
    """An array operand (NumPy array or scalar, nested list) as the backend's native array;
    Python numbers and None as they are."""
    if isinstance(value, (np.ndarray, np.generic, list, tuple)):
        return backend.asarray(np.asarray(value))
    return value


def to_numpy(backend: Backend, result: Any) -> Any:
    """A result (an array or a tuple of arrays) as NumPy arrays."""
    if isinstance(result, tuple):
        return tuple(to_numpy(backend, r) for r in result)
    return backend.to_numpy(result)


class NativeCalls:
    """A backend's four functions taking NumPy operands: each is converted to a native array
    with ``backend.asarray`` first, and the results come back with ``backend.to_numpy``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    def _call(self, method: Callable[..., Any], *arrays: Any, **options: Any) -> Any:
        native = [native_operand(self.backend, a) for a in arrays]
        options = {
            k: native_operand(self.backend, v) if k in OPERANDS else v for k, v in options.items()
        }
        return to_numpy(self.backend, method(*native, **options))

    def loss(self, *arrays: Any, **options: Any) -> Any:
        return self._call(self.backend.binary_cross_entropy_with_logits, *arrays, **options)

    def loss_probs(self, *arrays: Any, **options: Any) -> Any:
        return self._call(self.backend.binary_cross_entropy, *arrays, **options)

    def value_and_grad(self, *arrays: Any, **options: Any) -> Any:
        return self._call(self.backend.value_and_grad, *arrays, **options)

    def grad_hess(self, *arrays: Any, **options: Any) -> Any:
        return self._call(self.backend.grad_hess, *arrays, **options)
