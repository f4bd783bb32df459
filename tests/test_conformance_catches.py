"""The conformance suite fails wrong backends and passes a faithful, less accurate one.

The backends are registered through real entry points of a temporary distribution.
"""

from __future__ import annotations

from pathlib import Path

import broken_backends
import pytest

from bce_conformance.runner import CaseResult, reproduce, run_suite

PLUGIN = """
from bce_core.plugin import BackendSpec, hookimpl
import broken_backends

@hookimpl
def bce_backends():
    classes = broken_backends.BROKEN + [broken_backends.ClassicFormula]
    if broken_backends.torch is not None:
        classes += [broken_backends.TorchBuiltin] + broken_backends.BROKEN_TORCH
    return [BackendSpec(cls.name, f"broken_backends:{cls.__name__}") for cls in classes]
"""


@pytest.fixture
def broken_distribution(make_distribution, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    make_distribution("broken-backends", {"broken": "broken_plugin"}, {"broken_plugin": PLUGIN})


NEEDS_TORCH = pytest.mark.skipif(broken_backends.torch is None, reason="needs torch")

WRONG = broken_backends.BROKEN + [
    pytest.param(broken_backends.TorchTouchesGrad, id="torch_touches_grad", marks=NEEDS_TORCH)
]


#: Where each backend's class of bug must be caught: a piece of the failing case's id, or of a
#: failing comparison's name (so a bug is caught by the check meant for it, not by a side effect).
CAUGHT_BY = {
    "mask_multiplied_after": "masked-nonfinite",
    "ignores_log_clamp": "/clamp",
    "wrong_beyond_size": "/tiled/",
    "wrong_remainder": "/tiled/",
    "clips_logits_in_place": "unchanged[logits]",
    "zeroes_masked_in_place": "unchanged[logits]",
    "smooths_targets_in_place": "unchanged[targets]",
    "shared_scratch_buffer": "threads/",
    "validate_changes_result": "/validate",
    "torch_touches_grad": "unchanged[parameter grad]",
}


#: The dtypes each wrong backend runs in (a bug of one precision needs only that one).
DTYPES_OF = {"half_accumulated_in_half": ("float16",), "validate_changes_result": ("float64",)}


def _matches(failure: CaseResult, needle: str) -> bool:
    return needle in failure.case or any(
        needle in c.quantity for c in failure.comparisons if not c.passed
    )


@pytest.mark.parametrize("cls", WRONG, ids=lambda c: c.name)
def test_each_wrong_backend_fails_with_a_named_case(
    cls: type, broken_distribution: None, capsys: pytest.CaptureFixture
) -> None:
    report = run_suite([cls.name], dtypes=DTYPES_OF.get(cls.name, ("float32",)))
    assert report.failures, f"{cls.name} passed conformance"
    data_failures = [f for f in report.failures if not f.case.startswith("error/")]
    assert data_failures, f"{cls.name} only failed error cases"
    failure = data_failures[0]
    assert failure.case.startswith(("logits/", "probs/", "threads/"))
    assert failure.error or any(not c.passed and c.detail for c in failure.comparisons)
    assert f"reproduce({cls.name!r}, {failure.case!r}" in failure.reproduction()
    needle = CAUGHT_BY.get(cls.name)
    if needle is not None:
        caught = [f for f in data_failures if _matches(f, needle)]
        assert caught, f"{cls.name} was not caught by {needle!r}: {[f.case for f in data_failures]}"
        failure = caught[0]
    if not failure.case.startswith("threads/"):  # a race need not repeat on demand
        assert not reproduce(cls.name, failure.case, device=failure.device).passed
        assert "FAIL" in capsys.readouterr().out


def test_the_faithful_classic_formula_passes_with_a_lower_grade(broken_distribution: None) -> None:
    report = run_suite(["classic_formula"], dtypes=("float32", "float64"))
    assert report.failures == []
    grades = {row.dtype: row.grade for row in report.summaries()}
    assert grades["float32"] == "B"


def test_a_wrapper_of_pytorchs_own_loss_passes_with_a_lower_grade(
    broken_distribution: None,
) -> None:
    pytest.importorskip("torch")
    report = run_suite(["torch_builtin"], dtypes=("float32",))
    assert report.failures == []
    assert {row.dtype: row.grade for row in report.summaries()}["float32"] == "B"


def test_the_numpy_backend_passes_with_grade_a() -> None:
    report = run_suite(["numpy"])
    assert report.failures == []
    assert {row.grade for row in report.summaries() if row.dtype != "errors"} == {"A"}
