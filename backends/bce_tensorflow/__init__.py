"""bce-core's TensorFlow backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; never imports
  TensorFlow).
- ``backend.py`` is the backend object, imported on first use.
- ``operands.py`` turns arguments into checked tensors (bce-core's dtype and shape rules).
- ``precision.py`` is the working precision and the one rounding back to the input's dtype.
- ``kernels.py`` holds the elementwise math; ``ops.py`` makes it differentiable and reduces it.
- ``autodiff.py`` runs tf.GradientTape around the losses, eager or under XLA.

>>> from bce_tensorflow.plugin import bce_backends
>>> bce_backends()[0].name
'tensorflow'
"""
