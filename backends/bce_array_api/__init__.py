"""bce-core's Array API backend, laid out as a third-party plugin would be.

One backend, written against the Python Array API standard through
``array-api-compat``, for every array library that speaks it and that no other
installed backend owns (array-api-strict, Dask, CuPy, ndonnx, ...).

- ``plugin.py``: registration with bce-core (imported at registry build; imports no array
  library).
- ``backend.py``: the backend object, imported on first use (argument checks via the core,
  the spec's math on whole arrays of the call's namespace).
- ``operands.py``: the ``rules.Converter`` and ``rules.ArrayOps`` of any namespace, dtype
  names, devices and the namespaces found here.
- ``kernels.py``: the elementwise math in the namespace's functions (one exp per element).
- ``chunked.py``: the Dask path: blockwise tasks over the logits' chunks, exact sums across
  chunks.

>>> from bce_array_api.backend import ArrayApiBackend
>>> ArrayApiBackend().name
'array_api'
"""
