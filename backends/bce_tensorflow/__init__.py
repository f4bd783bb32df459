"""bce-core's TensorFlow backend, laid out as a third-party plugin would be.

- ``plugin.py`` registers the backend (never imports TensorFlow).
- ``backend.py`` is the backend object: argument checks through the core, dispatch to paths.
- ``operands.py`` is TensorFlow's converter, array operations and compensated primitives.
- ``kernels.py`` holds the elementwise math the core does not (other partial derivatives,
  second derivatives, the probability form) and the analytic derivatives of a call.
- ``fused.py`` holds the compiled XLA programs of the loss from logits and its gradient.
- ``chunks.py`` runs a program's elementwise pass a chunk of rows at a time on the CPU.
- ``autodiff.py`` is the tf.custom_gradient glue and the tapes of the autodiff methods.

>>> from bce_tensorflow.plugin import bce_backends
>>> bce_backends()[0].name
'tensorflow'
"""
