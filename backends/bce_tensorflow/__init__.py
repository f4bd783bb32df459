"""bce-core's TensorFlow backend (work in progress)."""
