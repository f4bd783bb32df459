"""Registers the JAX backend with bce-core (entry point ``bce: jax``).

Imports no part of JAX: the array types are named by module. A concrete
``jax.Array`` is a ``jaxlib._jax.ArrayImpl``; the values that ``jax.jit``,
``jax.grad`` and ``jax.vmap`` trace are ``Tracer`` subclasses under ``jax._src``.

>>> bce_backends()[0].loader
'bce_jax.backend:JaxBackend'
"""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="jax",
            loader="bce_jax.backend:JaxBackend",
            array_types=(ArrayType("jaxlib", None), ArrayType("jax", None)),
            requires=("jax",),
            extra="jax",
            description="JAX, native float32 within 4 ULP, differentiable to any order",
        )
    ]
