"""The conformance runner fails backends that compute the wrong function."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import bce_numpy.plugin
from bce_conformance.runner import run_suite
from bce_core.plugin import BackendSpec, hookimpl
from bce_core.registry import Registry, set_registry
from bce_numpy.backend import NumpyBackend


class SoftGradientSign(NumpyBackend):
    """Flips the sign of the logits gradient where the target is soft."""

    name = "soft_gradient_sign"

    def value_and_grad(self, logits: Any, targets: Any, **options: Any) -> Any:
        loss, grads = super().value_and_grad(logits, targets, **options)
        soft = (np.asarray(targets) > 0) & (np.asarray(targets) < 1)
        if isinstance(grads, tuple):
            return loss, (np.where(soft, -grads[0], grads[0]),) + grads[1:]
        return loss, np.where(soft, -grads, grads)


class PosWeightOnNegatives(NumpyBackend):
    """Applies pos_weight to the negative term: swaps the roles of y and 1 - y for q."""

    name = "pos_weight_on_negatives"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        q = options.pop("pos_weight", None)
        reduction = options.pop("reduction", "mean")
        base = super().binary_cross_entropy_with_logits(logits, targets, reduction="none", **options)
        if q is not None:
            y = np.asarray(targets, dtype=np.float64)
            x = np.asarray(logits, dtype=np.float64)
            base = base + (np.asarray(q) - 1) * (1 - y) * np.logaddexp(0, x)
        return np.asarray(base.sum() / base.size if reduction != "none" else base,
                          np.asarray(logits).dtype)


class MeanIgnoresMask(NumpyBackend):
    """Divides the masked mean by every element instead of the kept ones."""

    name = "mean_ignores_mask"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        if options.get("reduction") == "mean" and options.get("mask") is not None:
            total = super().binary_cross_entropy_with_logits(
                logits, targets, **{**options, "reduction": "sum"})
            return np.asarray(total / np.asarray(logits).size, total.dtype)
        return super().binary_cross_entropy_with_logits(logits, targets, **options)


class UnstableSoftplus(NumpyBackend):
    """log(1 + exp(x)) without the stable form: overflows to inf for large logits."""

    name = "unstable_softplus"

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any, **options: Any) -> Any:
        x = np.asarray(logits)
        with np.errstate(over="ignore"):
            broken = np.where(np.abs(x) > 30, np.log1p(np.exp(np.abs(x))), x)
        return super().binary_cross_entropy_with_logits(broken.astype(x.dtype), targets, **options)


MUTANTS = {cls.name: cls for cls in (SoftGradientSign, PosWeightOnNegatives, MeanIgnoresMask,
                                     UnstableSoftplus)}


class MutantPlugin:
    @hookimpl
    def bce_backends(self) -> list[BackendSpec]:
        return [BackendSpec(name, f"{__name__}:{cls.__name__}") for name, cls in MUTANTS.items()]


@pytest.fixture(scope="module", autouse=True)
def mutant_registry() -> Iterator[None]:
    old = set_registry(Registry.from_plugins(bce_numpy.plugin, MutantPlugin()))
    yield
    set_registry(old)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_wrong_backend_fails_with_a_named_case(name: str) -> None:
    report = run_suite([name], dtypes=("float32",))
    assert report.failures, f"{name} passed conformance"
    first = report.failures[0]
    assert first.case.startswith(("logits/", "probs/"))
    assert "reproduce(" in first.reproduction() and first.case in first.reproduction()


def test_the_faithful_backend_passes() -> None:
    assert run_suite(["numpy"], dtypes=("float32", "float64")).failures == []
