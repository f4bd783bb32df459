"""bce-core's Jax backend (work in progress)."""
