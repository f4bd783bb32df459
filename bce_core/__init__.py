"""bce-core: one specification of binary (sigmoid) cross-entropy, exact in
every backend.

Importing this package imports no machine-learning framework; backends are
found through the ``bce`` entry-point group and loaded on first use.

>>> import bce_core
>>> round(float(bce_core.binary_cross_entropy_with_logits([[9.7], [0.0]], [[0], [1]])), 5)
5.1966
"""

from __future__ import annotations

from .api import binary_cross_entropy, binary_cross_entropy_with_logits, grad_hess, value_and_grad
from .dispatch import get_backend, set_default_backend, use_backend
from .errors import (
    BackendConflictError,
    BackendUnavailableError,
    MixedFrameworksError,
    UnknownBackendError,
)
from .parallel import local_denominator
from .registry import BackendInfo, get_registry
from .spec import REDUCTIONS, SPEC_VERSION

__version__ = "0.1.0"


def available_backends(*, load: bool = True) -> list[BackendInfo]:
    """Every registered backend with its status, version, devices and load error.

    Installed backends are loaded (and so their frameworks imported) to report
    their devices. With ``load=False`` nothing is imported: installed backends
    are ``"installed"``, with their framework's version from package metadata.

    >>> [info.status for info in available_backends() if info.name == "numpy"]
    ['ok']
    >>> [info.status for info in available_backends(load=False) if info.name == "numpy"]
    ['installed']
    """
    registry = get_registry()
    describe = registry.info if load else registry.describe
    return [describe(name) for name in registry.names()]


__all__ = [
    "REDUCTIONS",
    "SPEC_VERSION",
    "BackendConflictError",
    "BackendInfo",
    "BackendUnavailableError",
    "MixedFrameworksError",
    "UnknownBackendError",
    "available_backends",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "get_backend",
    "grad_hess",
    "local_denominator",
    "set_default_backend",
    "use_backend",
    "value_and_grad",
]
