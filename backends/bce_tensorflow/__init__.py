"""bce-core's TensorFlow backend, laid out as a third-party plugin would be.

- ``plugin.py`` describes the backend to bce-core (imported at registry build; never imports
  TensorFlow).
- ``backend.py`` is the backend object, imported on first use.
- ``operands.py`` turns arguments into checked tensors (bce-core's dtype and shape rules).
- ``precision.py`` is the working precision and the one rounding back to the input's dtype.
- ``kernels.py`` holds the exact elementwise math in working precision; ``ops.py`` makes it
  differentiable to any order and reduces it (gradients other than the logits', second
  derivatives, the probability form).
- The fused path of the loss from logits: ``pairs.py`` (compensated arithmetic),
  ``underflow.py`` (subnormal results), ``compensated.py`` (the loss and its slope in the
  input's precision), ``chunks.py`` (the pass over large inputs), ``programs.py`` (the
  compiled XLA programs), ``layout.py``, ``canonical.py`` and ``small.py`` (what a program is
  specialised on, and the one program of small inputs), ``fast.py`` (which program a call
  runs), ``backward.py`` and ``differentiable.py`` (tf.GradientTape reusing the gradient the
  forward computed).
- ``autodiff.py`` runs tf.GradientTape around the losses, eager or under XLA.

>>> from bce_tensorflow.plugin import bce_backends
>>> bce_backends()[0].name
'tensorflow'
"""
