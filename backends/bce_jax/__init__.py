"""bce-core's JAX backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; imports no JAX).
- ``backend.py`` is the backend object, imported on first use.
- ``operands.py`` checks and converts one call's arguments.
- ``compute.py`` holds the compiled programs; ``reductions.py`` the masked reductions;
  ``chunks.py`` runs a program over large inputs a chunk of rows at a time on CPU.
- ``ops.py`` makes the loss a JAX operation whose derivatives are outputs of those programs.
- ``autodiff.py`` makes the element losses differentiable by JAX with the spec's derivatives
  (for the derivatives no program gives directly: mixed and higher ones).
- ``kernels.py`` holds the elementwise math, carried as pairs hi + lo where accuracy needs it.

>>> from bce_jax.plugin import bce_backends
>>> bce_backends()[0].name
'jax'
"""
