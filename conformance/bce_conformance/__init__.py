"""The bce-core conformance suite: exact oracle, case grid, parity checks and runner.

Run it with ``bce conformance``; a backend author runs it on their own backend
with ``bce conformance --backend NAME``.
"""
