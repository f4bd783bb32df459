"""bce-core's JAX backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; imports no JAX).
- ``backend.py`` is the backend object, imported on first use.
- ``operands.py`` checks and converts one call's arguments.
- ``compute.py`` holds the compiled computations; ``reductions.py`` the masked reductions.
- ``autodiff.py`` makes the element losses differentiable by JAX with the spec's derivatives.
- ``kernels.py`` holds the elementwise math.

>>> from bce_jax.plugin import bce_backends
>>> bce_backends()[0].name
'jax'
"""
