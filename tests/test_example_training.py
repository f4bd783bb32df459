"""The framework-agnostic training example gives the same curve on every backend."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the example's data set ships with scikit-learn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_logistic.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_logistic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_logistic"] = module
    spec.loader.exec_module(module)
    return module


example = load_example()
BACKENDS = example.installed_backends()
STEPS = 25


@pytest.fixture(scope="module")
def numpy_run():
    return example.train("numpy", steps=STEPS)


def test_numpy_run_learns(numpy_run) -> None:
    assert numpy_run.curve[0] == pytest.approx(np.log(2), abs=0.02)  # near-zero initial weights
    assert numpy_run.curve[-1] < 0.2
    assert numpy_run.test_accuracy > 0.9


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_every_backend_follows_the_same_curve(backend: str, numpy_run) -> None:
    if backend == "jax":
        pytest.importorskip("optax", reason="the JAX trainer steps with optax")
    result = example.train(backend, steps=STEPS)
    np.testing.assert_allclose(result.curve, numpy_run.curve, rtol=2e-4)
    assert result.final_loss == pytest.approx(numpy_run.final_loss, rel=2e-4)
    assert result.test_accuracy == pytest.approx(numpy_run.test_accuracy, abs=0.01)
