"""The command line's own process keeps the frameworks' C++ start-up records off standard
error, and keeps everything else that is written there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bce_core.quiet import is_startup_record

pytest.importorskip("tensorflow")

IMPORT_TENSORFLOW = (
    "import sys; import tensorflow as tf; float(tf.constant(1.0) + 1);"
    " print('kept: written while TensorFlow loads', file=sys.stderr)"
)


def _stderr(code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stderr.splitlines()


def test_tensorflow_start_up_records_are_dropped_by_the_command_line() -> None:
    plain = _stderr(IMPORT_TENSORFLOW)
    if not any(is_startup_record(line) for line in plain):
        pytest.skip("TensorFlow writes no C++ start-up record on this machine")
    # Through the command's own entry point (a bad command line returns at once), then the
    # same import: the records are gone, the other line stays.
    quiet = _stderr(
        "from bce_core.cli import main; main(['conformance', '--backend', 'nosuch']);"
        + IMPORT_TENSORFLOW
    )
    assert not [line for line in quiet if is_startup_record(line) or "cuInit" in line], quiet
    assert "kept: written while TensorFlow loads" in quiet
    assert any("no backend named 'nosuch'" in line for line in quiet), quiet


@pytest.mark.parametrize(
    "line",
    [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796339007.277378    1113 cudart_stub.cc:31] Could not find cuda drivers",
        "W0000 00:00:1796339007.277378    1113 some/file.cc:12] a warning",
    ],
)
def test_records_are_recognised(line: str) -> None:
    assert is_startup_record(line)


@pytest.mark.parametrize(
    "line", ["Traceback (most recent call last):", "bce conformance: error: no backend", "I0000 is"]
)
def test_other_lines_are_kept(line: str) -> None:
    assert not is_startup_record(line)
