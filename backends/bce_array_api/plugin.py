"""Registers the Array API backend with bce-core (entry point ``bce: array_api``).

It claims the array types of the libraries it is built for by name (no import),
and, through ``array_protocols``, any other array type that carries the
standard's ``__array_namespace__`` and that no backend claims: NumPy, torch,
JAX and TensorFlow arrays keep their own backends. ``bce backends`` shows the
namespaces found here (``found_namespaces``, read from package metadata).

>>> spec = bce_backends()[0]
>>> spec.name, spec.array_protocols, spec.requires
('array_api', ('__array_namespace__',), ('array_api_compat',))
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from bce_core.plugin import ArrayType, BackendSpec, hookimpl

#: The libraries this backend is built for, by the module that holds their namespace, with the
#: distribution that installs them.
KNOWN_NAMESPACES = {
    "array_api_strict": "array-api-strict",
    "dask.array": "dask",
    "cupy": "cupy",
    "ndonnx": "ndonnx",
}


def found_namespaces() -> dict[str, str]:
    """The namespaces of ``KNOWN_NAMESPACES`` installed here, with their versions, found without
    importing them.

    >>> "array_api_strict" in found_namespaces()
    True
    """
    found = {}
    for module, distribution in KNOWN_NAMESPACES.items():
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            continue
        try:
            found[module] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[module] = "version unknown"
    return found


def describe_namespaces() -> str:
    """The line ``bce backends`` shows, e.g. "namespaces: array_api_strict 2.6.1, ...".

    >>> describe_namespaces().startswith("namespaces: ")
    True
    """
    found = found_namespaces()
    listed = ", ".join(f"{module} {version}" for module, version in found.items())
    return f"namespaces: {listed or 'none of ' + ', '.join(KNOWN_NAMESPACES)}"


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="array_api",
            loader="bce_array_api.backend:ArrayApiBackend",
            array_types=tuple(ArrayType(module, None) for module in KNOWN_NAMESPACES),
            array_protocols=("__array_namespace__",),
            requires=("array_api_compat",),
            extra="array-api",
            description="any Array API namespace (array-api-strict, Dask, CuPy, ...), float64 "
            "working precision where the namespace has it",
            details=describe_namespaces,
        )
    ]
