"""Error profiles: the ULP error of the element loss and of d loss / d logit along a sweep
of logits, for a backend and, when the backend declares it, for its framework's own loss.

The sweep is the same for every backend of one dtype, so its exact values are computed
once per dtype (``exact_sweep``) and reused for every curve drawn on it.

>>> from bce_numpy.backend import NumpyBackend
>>> profile = error_profile(NumpyBackend(), "cpu", "float32")
>>> bool(profile.ours["loss y=1"].max() <= 4), profile.framework is not None
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from bce_core.plugin import FrameworkLossBackend

from . import oracle
from .cases import numpy_dtype
from .oracle import ExactValues

#: The targets of the sweep: both hard labels and a soft one.
TARGETS = (0.0, 1.0, 0.3)


def sweep_logits(dtype: str) -> np.ndarray:
    """The sweep in ``dtype``: -inf, -1e3 ... -1e-3 (61 log-spaced per side), 0, 1e-3 ... +inf.

    >>> x = sweep_logits("float16")
    >>> x.dtype.name, x.size, float(x[0]), float(x[-2])
    ('float16', 125, -inf, 1000.0)
    """
    magnitudes = np.geomspace(1e-3, 1e3, 61)
    values = np.concatenate([[-np.inf], -magnitudes[::-1], [0.0], magnitudes, [np.inf]])
    return values.astype(numpy_dtype(dtype))


@dataclass(frozen=True)
class ExactSweep:
    """The sweep's inputs (every target after another) and its exact loss and gradient."""

    dtype: str
    logits: np.ndarray
    targets: np.ndarray
    loss: ExactValues
    grad: ExactValues

    def split(self, errors: np.ndarray) -> list[np.ndarray]:
        """ULP errors of the whole sweep, one array per target of ``TARGETS``."""
        return np.split(errors, len(TARGETS))


@cache
def exact_sweep(dtype: str) -> ExactSweep:
    """The sweep of ``dtype`` and its exact values, evaluated once per dtype (mpmath is slow).

    >>> exact_sweep("float32") is exact_sweep("float32")
    True
    """
    x = sweep_logits(dtype)
    logits = np.tile(x, len(TARGETS))
    targets = np.repeat(np.array(TARGETS).astype(x.dtype), x.size)
    losses, grads, references = [], [], []
    for xi, yi in zip(logits.astype(np.float64).tolist(), targets.astype(np.float64).tolist()):
        losses.append(oracle.element_loss(xi, yi))
        grad, larger = oracle.element_grad(xi, yi)
        grads.append(grad)
        # Soft targets: the gradient's error is measured against its larger term, as graded.
        references.append(None if yi in (0.0, 1.0) else larger)
    return ExactSweep(
        dtype,
        logits,
        targets,
        ExactValues.of(losses, dtype),
        ExactValues.of(grads, dtype, references),
    )


@dataclass
class ErrorProfile:
    """ULP errors along the sweep of one backend, device and dtype.

    ``ours`` and ``framework`` map "loss y=0", "grad y=0", ... to arrays over
    ``logits``; ``framework`` is None when the backend has no ``framework_loss``
    or it failed, and ``note`` then says why.
    """

    backend: str
    device: str
    dtype: str
    logits: np.ndarray
    ours: dict[str, np.ndarray]
    framework: dict[str, np.ndarray] | None = None
    #: What the framework curve is: the first line of ``framework_loss``'s docstring.
    framework_label: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain lists and numbers (inf as a string), for a worker process to send back.

        >>> from bce_numpy.backend import NumpyBackend
        >>> profile = error_profile(NumpyBackend(), "cpu", "float32")
        >>> again = ErrorProfile.from_json(profile.to_json())
        >>> bool(np.array_equal(again.ours["loss y=1"], profile.ours["loss y=1"], equal_nan=True))
        True
        """
        curves = lambda c: None if c is None else {k: _listed(v) for k, v in c.items()}  # noqa
        return {
            "backend": self.backend,
            "device": self.device,
            "dtype": self.dtype,
            "logits": _listed(self.logits),
            "ours": curves(self.ours),
            "framework": curves(self.framework),
            "framework_label": self.framework_label,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorProfile:
        curves = lambda c: None if c is None else {k: _unlisted(v) for k, v in c.items()}  # noqa
        return cls(
            data["backend"],
            data["device"],
            data["dtype"],
            _unlisted(data["logits"]),
            curves(data["ours"]),
            curves(data["framework"]),
            data["framework_label"],
            data["note"],
        )


def _listed(values: np.ndarray) -> list[float | str]:
    return [v if math.isfinite(v) else repr(v) for v in np.asarray(values, np.float64).tolist()]


def _unlisted(values: list[float | str]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _curves(sweep: ExactSweep, loss: Any, grad: Any) -> dict[str, np.ndarray]:
    size = sweep.logits.size
    loss, grad = np.asarray(loss), np.asarray(grad)
    if loss.size != size or grad.size != size:
        raise ValueError(f"expected {size} elements, got {loss.size} and {grad.size}")
    curves = {}
    for name, values, exact in (("loss", loss, sweep.loss), ("grad", grad, sweep.grad)):
        for target, errors in zip(TARGETS, sweep.split(exact.errors(values))):
            curves[f"{name} y={target:g}"] = errors
    return curves


def error_profile(backend: Any, device: str, dtype: str) -> ErrorProfile:
    """ULP error of ``backend``'s loss and gradient along the sweep, and of its framework's.

    Each is one call on the whole sweep (every target at once). The framework curve
    comes from the backend's optional ``framework_loss(logits, targets)``.

    >>> from bce_numpy.backend import NumpyBackend
    >>> profile = error_profile(NumpyBackend(), "cpu", "float64")
    >>> i = int(np.argmin(abs(profile.logits - 20)))  # the textbook sigmoid(x) - 1 cancels
    >>> bool(profile.ours["grad y=1"][i] < 1), bool(profile.framework["grad y=1"][i] > 1e6)
    (True, True)
    """
    sweep = exact_sweep(dtype)
    x = backend.asarray(sweep.logits, device)
    y = backend.asarray(sweep.targets, device)
    loss = backend.to_numpy(backend.binary_cross_entropy_with_logits(x, y, reduction="none"))
    _, grad = backend.value_and_grad(x, y, reduction="none")
    profile = ErrorProfile(
        backend.name,
        device,
        dtype,
        sweep_logits(dtype).astype(np.float64),
        _curves(sweep, loss, backend.to_numpy(grad)),
    )
    if not isinstance(backend, FrameworkLossBackend):
        profile.note = "no framework curve: the backend has no framework_loss method"
        return profile
    framework_loss = backend.framework_loss
    profile.framework_label = (framework_loss.__doc__ or "framework_loss").strip().splitlines()[0]
    try:
        theirs, their_grad = framework_loss(x, y)
        profile.framework = _curves(sweep, backend.to_numpy(theirs), backend.to_numpy(their_grad))
    except ImportError as error:  # e.g. optax for JAX: the overlay is optional
        profile.note = f"no framework curve: {error}"
    except Exception as error:  # a framework that refuses a dtype must not sink the page
        profile.note = f"no framework curve for {dtype}: {type(error).__name__}: {error}"
    return profile
