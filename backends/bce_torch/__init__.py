"""bce-core's Torch backend (work in progress)."""
