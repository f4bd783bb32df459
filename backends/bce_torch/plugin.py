"""Registers the Torch backend with bce-core (entry point ``bce: torch``).

Describes the backend without importing torch: the array type is named by
module and class, and the registry matches it along a type's MRO, so every
``torch.Tensor`` subclass (``torch.nn.Parameter`` included) selects this backend.

>>> spec = bce_backends()[0]
>>> spec.loader, spec.array_types[0].matches("torch", "Tensor")
('bce_torch.backend:TorchBackend', True)
"""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="torch",
            loader="bce_torch.backend:TorchBackend",
            # torch.Tensor and its subclasses (nn.Parameter, ...), found through the type's MRO.
            array_types=(ArrayType("torch", "Tensor"),),
            requires=("torch",),
            extra="torch",
            description="PyTorch, native float32/float64, exact to 4 ULP, autograd to second order",
        )
    ]
