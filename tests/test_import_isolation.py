"""``import bce_core`` and NumPy calls import no machine-learning framework."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras", "optax")

SCRIPT = f"""
import json, sys
import numpy as np
import bce_core
after_import = sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)
loss = bce_core.binary_cross_entropy_with_logits(np.zeros(3), np.ones(3))
bce_core.value_and_grad(np.zeros(3), np.ones(3))
bce_core.get_registry().names()  # builds the registry: plugins load, frameworks must not
after_call = sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)
print(json.dumps({{"after_import": after_import, "after_call": after_call,
                  "loss": float(loss)}}))
"""


def test_no_framework_is_imported() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_import"] == []
    assert result["after_call"] == []
    assert abs(result["loss"] - 0.6931471805599453) < 1e-15


def test_import_does_not_build_the_registry() -> None:
    script = "import bce_core, bce_core.registry as r; print(r._registry is None)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_bce_backends_imports_no_framework() -> None:
    # The listing comes from metadata; only --devices loads the frameworks.
    script = f"""
import contextlib, io, json, sys
from bce_core.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["backends"])
print(json.dumps({{"code": code, "out": out.getvalue(),
                  "imported": sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["imported"] == []
    assert "torch" in result["out"] and "numpy" in result["out"]
