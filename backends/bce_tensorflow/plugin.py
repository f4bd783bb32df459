"""Registers the TensorFlow backend with bce-core (entry point ``bce: tensorflow``).

It never imports TensorFlow. Every class under the ``tensorflow`` module tree is
claimed (eager and symbolic tensors, variables); NumPy arrays and numbers are not.

>>> spec = bce_backends()[0]
>>> spec.loader
'bce_tensorflow.backend:TensorFlowBackend'
>>> any(t.matches("tensorflow.python.framework.ops", "EagerTensor") for t in spec.array_types)
True
>>> any(t.matches("numpy", "ndarray") or t.matches("builtins", "float") for t in spec.array_types)
False
"""

from __future__ import annotations

from bce_core.plugin import ArrayType, BackendSpec, hookimpl


@hookimpl
def bce_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            name="tensorflow",
            loader="bce_tensorflow.backend:TensorFlowBackend",
            array_types=(ArrayType("tensorflow", None),),
            requires=("tensorflow",),
            extra="tensorflow",
            description="TensorFlow; fused XLA loss and gradient, exact to 4 ULP; "
            "tf.GradientTape, tf.function and XLA to second order",
        )
    ]
