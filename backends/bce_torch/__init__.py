"""bce-core's Torch backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; never imports torch).
- ``backend.py`` is the backend object, imported on first use.
- ``operands.py`` converts and checks one call's arguments (NumPy, scalars, tensors).
- ``kernels.py`` holds the elementwise math; ``reductions.py`` the masked reductions.
- ``functions.py`` holds the ``torch.autograd.Function``s that give autograd the spec's derivatives.

>>> from bce_torch.backend import TorchBackend
>>> TorchBackend().name
'torch'
"""
