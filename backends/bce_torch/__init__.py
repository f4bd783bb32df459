"""bce-core's Torch backend, laid out as a third-party plugin would be.

- ``plugin.py``: registration with bce-core (imported at registry build; never imports torch).
- ``backend.py``: the backend object, imported on first use (argument checks via the core,
  dispatch to the paths below).
- ``operands.py``: torch's ``rules.Converter`` and ``rules.ArrayOps``, dtypes and devices.
- ``kernels.py``: torch's own elementwise math (one exp per element, the tail scaling).
- ``fused.py``: the one-pass path for large inputs (one ``torch.compile`` kernel).
- ``autodiff.py``: the ``torch.autograd.Function``s that give autograd the spec's
  derivatives, and what the ``autodiff_*`` methods need.

>>> from bce_torch.backend import TorchBackend
>>> TorchBackend().name
'torch'
"""
