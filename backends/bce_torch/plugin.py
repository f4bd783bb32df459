"""Registers the Torch backend with bce-core (entry point ``bce: torch``)."""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name="torch",
        loader="bce_torch.backend:TorchBackend",
        array_types=(),  # TODO: the framework's array types
        requires=("torch",),
        extra="torch",
    )]
