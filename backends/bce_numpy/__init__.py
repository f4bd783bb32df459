"""bce-core's NumPy backend, laid out as a third-party plugin would be.

Files: ``plugin.py`` registration (cheap, imports no NumPy); ``backend.py`` the
backend object (argument checks through the core, dispatch to the paths);
``kernels.py`` the float64 elementwise math; ``fused.py`` the blocked one-pass
loss and d loss / d logits; ``lean.py`` the same for the common call, in fewer
ufunc calls. Every rule of the spec comes from ``bce_core``.

>>> from bce_numpy.backend import NumpyBackend
>>> NumpyBackend().name
'numpy'
"""
