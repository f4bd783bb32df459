"""bce-core's NumPy backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; cheap).
- ``backend.py`` is the backend object, imported on first use.
- ``kernels.py`` holds the elementwise math.

>>> from bce_numpy.backend import NumpyBackend
>>> NumpyBackend().name
'numpy'
"""
