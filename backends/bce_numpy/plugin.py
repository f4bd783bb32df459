"""Registers the NumPy backend with bce-core (entry point ``bce: numpy``).

>>> bce_backends()[0].loader
'bce_numpy.backend:NumpyBackend'
"""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="numpy",
            loader="bce_numpy.backend:NumpyBackend",
            # ndarray and NumPy scalars (numpy.generic), including bfloat16 from ml_dtypes arrays.
            array_types=(ArrayType("numpy", "ndarray"), ArrayType("numpy", "generic")),
            requires=("numpy",),
            description="NumPy, float64 working precision, exact to 4 ULP",
        )
    ]
