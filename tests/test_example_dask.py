"""examples/dask_linear_model.py runs, on a small dataset, and matches NumPy in memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_linear_model.py"


def test_the_example_runs_and_matches_numpy() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--rows", "20000", "--chunk-rows", "3001", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "in 7 chunks" in out and "% Completed" in out
    assert "in-memory NumPy: loss" in out and out.rstrip().endswith("matches")
    assert "peak worker RSS" in out and "wall time" in out
