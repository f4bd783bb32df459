"""bce-core's JAX backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; imports no JAX).
- ``backend.py`` is the backend object, imported on first use: argument checks by the core,
  dispatch to the paths below.
- ``operands.py`` is JAX's side of the core: its converter, array operations and compensated
  arithmetic primitives; devices and x64.
- ``kernels.py`` holds the element math the core does not: the probability form and the
  partial derivatives held to parity.
- ``fused.py`` holds the one-pass compiled programs (loss, gradients and curvature at once)
  and chooses which outputs a call computes.
- ``autodiff.py`` makes the loss a JAX operation whose derivatives are those programs'
  outputs, and holds the element losses JAX differentiates for every other derivative.
- ``chunks.py`` runs a program over large inputs a chunk of rows at a time on CPU.

>>> from bce_jax.plugin import bce_backends
>>> bce_backends()[0].name
'jax'
"""
