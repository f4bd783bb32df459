"""A third party's CI: a tiny backend distribution checked with
``pytest --pyargs bce_conformance --bce-backend NAME``, as the README's guide describes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = """
from bce_core.plugin import BackendSpec, hookimpl

@hookimpl
def bce_backends():
    return [BackendSpec(name="tiny", loader="tiny_backend.backend:TinyBackend")]
"""

# The guide's backend: reuse the NumPy kernels, with one deliberate bug behind a flag.
BACKEND = """
import os
import numpy as np
from bce_numpy.backend import NumpyBackend

class TinyBackend(NumpyBackend):
    name = "tiny"

    def version(self):
        return "0.0.1"

    def binary_cross_entropy_with_logits(self, logits, targets, **options):
        loss = super().binary_cross_entropy_with_logits(logits, targets, **options)
        if os.environ.get("TINY_BUG") and options.get("reduction") == "batch_mean":
            return loss * 2
        return loss
"""


def make_tiny_distribution(root: Path) -> Path:
    package = root / "tiny_backend"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(textwrap.dedent(PLUGIN))
    (package / "backend.py").write_text(textwrap.dedent(BACKEND))
    info = root / "tiny_backend-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-backend\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[bce]\ntiny = tiny_backend.plugin\n")
    return root


def run_pytest(root: Path, *args: str, bug: bool = False) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TINY_BUG", None)
    if bug:
        env["TINY_BUG"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "bce_conformance",
        "--bce-backend",
        "tiny",
        "--bce-dtype",
        "float32",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_distribution(tmp_path_factory.mktemp("dist"))


def test_a_correct_backend_passes_the_whole_suite(tiny: Path) -> None:
    result = run_pytest(tiny)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "backend tiny: ok 0.0.1 devices cpu" in result.stdout  # the report header
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_a_bug_fails_with_the_case_and_a_reproduction(tiny: Path) -> None:
    result = run_pytest(tiny, bug=True)
    assert result.returncode == 1
    assert "cpu-logits/random:3/f32/(2,1,3,2)/soft/batch_mean" in result.stdout
    assert "reproduce('tiny', 'logits/random:3/f32/(2,1,3,2)/soft/batch_mean'" in result.stdout


def test_expected_failures_file_marks_xfail_and_warns_about_stale_entries(tiny: Path) -> None:
    listing = tiny / "expected-failures.txt"
    listing.write_text(
        textwrap.dedent("""\
        # known bug: batch_mean doubles the loss
        logits/random:3/f32/(2,1,3,2)/soft/batch_mean
        logits/random:4/f32/(6,4)/soft/batch_mean/weight(6,1)/pos_weight(4,)/mask(6,4)/ls0.05
        logits/random:4/f32/(6,4)/soft/batch_mean/weight(6,4)/pos_weight(6,4)/mask(6,4)/ls0.05/masked-nonfinite
        logits/no/such/case
    """)
    )
    result = run_pytest(tiny, "--bce-expected-failures", str(listing), bug=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 xfailed" in result.stdout
    assert "bce: stale expected failures" in result.stdout
    assert "logits/no/such/case (line 5): matches no case" in result.stdout
    fixed = run_pytest(tiny, "--bce-expected-failures", str(listing))  # the bug is fixed
    assert "expected to fail but passed" in fixed.stdout


def test_without_the_option_the_suite_is_not_collected(tiny: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tiny)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "bce_conformance",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=tiny,
        env=env,
        timeout=120,
    )
    assert result.returncode == 5  # no tests: the plugin is inert
