"""``bce bench``: bce-core's losses timed against each framework's own, in one process."""
