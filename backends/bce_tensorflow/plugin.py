"""Registers the TensorFlow backend with bce-core (entry point ``bce: tensorflow``)."""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="tensorflow",
        loader="bce_tensorflow.backend:TensorFlowBackend",
        array_types=(),  # TODO: the framework's array types
        requires=("tensorflow",),
        extra="tensorflow",
    )]
