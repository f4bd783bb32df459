"""Registers the Jax backend with bce-core (entry point ``bce: jax``)."""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="jax",
        loader="bce_jax.backend:JaxBackend",
        array_types=(),  # TODO: the framework's array types
        requires=("jax",),
        extra="jax",
    )]
