"""The conformance suite's own machinery: cases, golden values, size regimes, coverage."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import bce_core
from bce_conformance import oracle
from bce_conformance.cases import (
    DEFAULT_LARGE_SIZES,
    LARGE_PRIME,
    TILE,
    Case,
    all_cases,
    case_by_id,
    is_prime,
    regime_sizes,
    size_cases,
    thread_cases,
)
from bce_conformance.golden import expected
from bce_conformance.runner import _unchanged, backend_sizes, cases_for
from bce_core import reference
from bce_core.spec import REDUCTIONS, WRT_NAMES

FLOAT64 = all_cases(("float64",))


def _as64(case: Case) -> dict[str, np.ndarray]:
    return {k: (v if v.dtype == bool else v.astype(np.float64)) for k, v in case.inputs().items()}


def _reference_loss(case: Case) -> np.ndarray:
    arrays = _as64(case)
    options = {k: arrays.get(k) for k in ("weight", "pos_weight", "mask")}
    options.update(label_smoothing=case.label_smoothing, reduction=case.reduction)
    if case.form == "logits":
        return reference.binary_cross_entropy_with_logits(
            arrays["logits"], arrays["targets"], **options
        )
    return reference.binary_cross_entropy(
        arrays["probs"], arrays["targets"], log_clamp=case.log_clamp_value, **options
    )


@pytest.mark.parametrize(
    "case", [c for c in FLOAT64 if c.form == "logits" or c.values != "edge"], ids=lambda c: c.id
)
def test_golden_values_agree_with_the_float64_reference(case: Case) -> None:
    golden = expected(case)
    np.testing.assert_allclose(
        golden.loss, _reference_loss(case), rtol=1e-12, atol=1e-300, equal_nan=True
    )
    if case.form == "logits":
        arrays = _as64(case)
        names = tuple(n for n in ("logits", "targets", "weight", "pos_weight") if n in golden.grads)
        _, grads = reference.value_and_grad(
            arrays["logits"],
            arrays["targets"],
            wrt=names,
            label_smoothing=case.label_smoothing,
            reduction=case.reduction,
            **{k: arrays.get(k) for k in ("weight", "pos_weight", "mask")},
        )
        # The reference may cancel (q softplus(-x) - softplus(x) at tiny x): allow float64
        # rounding of the terms' size, |x| + 1 per element (summed for broadcast operands).
        with np.errstate(over="ignore"):
            size = 8.0 * (1.0 + np.abs(arrays["logits"]))
        for name, grad in zip(names, grads):
            atol = 1e-13 * (size if grad.shape == size.shape else np.sum(size))
            close = np.isclose(golden.grads[name], grad, rtol=1e-10, atol=0, equal_nan=True)
            with np.errstate(invalid="ignore", over="ignore"):
                close |= np.abs(golden.grads[name] - grad) <= atol
            assert close.all(), (name, golden.grads[name][~close], grad[~close])


def test_a_tiled_case_costs_one_oracle_call_per_pool_entry_and_sums_exactly() -> None:
    small = Case("logits", "tiled", "float64", (TILE * 3 + 5,), targets="soft", reduction="sum")
    golden = expected(small)
    np.testing.assert_allclose(golden.loss, _reference_loss(small), rtol=1e-13)
    large = size_cases("float32", 2 * 10**6 + 11)[1]
    arrays = large.inputs()
    assert arrays["logits"].shape == (2 * 10**6 + 11,)
    assert arrays["mask"][-1] and np.isfinite(arrays["logits"][-1])
    assert arrays["logits"][-1] == np.float32(1e37)  # the dominant tail
    columns = np.stack(
        [arrays[k].astype(np.float64) for k in ("logits", "targets", "weight", "pos_weight")]
    )
    distinct = np.unique(np.where(np.isnan(columns), 12345.0, columns), axis=1)
    assert distinct.shape[1] <= TILE + 1


def test_masked_out_elements_hold_nan_and_infinities_and_kept_ones_are_finite() -> None:
    case = next(c for c in FLOAT64 if c.masked == "nonfinite" and c.weight == (6, 4))
    arrays = case.inputs()
    dropped = ~arrays["mask"]
    assert dropped.any() and arrays["mask"].any()
    for name in ("logits", "targets", "weight", "pos_weight"):
        assert not np.isfinite(arrays[name][dropped]).any(), name
        assert np.isfinite(arrays[name][~dropped]).all(), name
    values = arrays["logits"][dropped]
    assert np.isnan(values).any() and (values == np.inf).any() and (values == -np.inf).any()
    nothing_kept = next(c for c in FLOAT64 if c.masked == "all")
    assert not nothing_kept.inputs()["mask"].any() and float(expected(nothing_kept).loss) == 0.0


def test_every_documented_option_and_value_is_exercised() -> None:
    """Each keyword of the public functions takes a non-default value in some case, every
    reduction meets every operand in both forms, and every log_clamp regime is run.

    ``denominator`` is not a backend's option: the public functions divide a backend's sum
    by it (``bce_core.parallel``), which ``test_parallel*.py`` checks on every backend."""
    for function in (
        bce_core.binary_cross_entropy_with_logits,
        bce_core.binary_cross_entropy,
        bce_core.value_and_grad,
    ):
        keywords = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in ("backend", "wrt", "denominator")
        ]
        for parameter in keywords:
            name = parameter.name
            form = "probs" if function is bce_core.binary_cross_entropy else "logits"
            varied = [
                c
                for c in all_cases()
                if c.form == form and (getattr(c, name, None) not in (None, parameter.default, 0.0))
            ]
            assert varied, f"no {form} case varies {name}"
    for form in ("logits", "probs"):
        for reduction in REDUCTIONS:
            assert any(
                c.form == form and c.reduction == reduction and c.weight and c.pos_weight and c.mask
                for c in all_cases()
            ), (form, reduction)
    clamps = {c.log_clamp_value for c in all_cases() if c.form == "probs"}
    assert {-np.inf, -100.0, -10.0, 0.0} <= clamps
    # value_and_grad: the runner asks for every name, alone and together.
    assert set(WRT_NAMES) == {"logits", "targets", "weight", "pos_weight"}
    assert any(c.weight and c.pos_weight and c.targets == "soft" for c in all_cases())


def test_sizes_straddle_each_declared_threshold() -> None:
    assert regime_sizes([32768]) == (32767, 32771, LARGE_PRIME)
    assert regime_sizes(()) == regime_sizes(None) == DEFAULT_LARGE_SIZES
    assert all(is_prime(n) for n in DEFAULT_LARGE_SIZES + (LARGE_PRIME,))
    # NumPy's lean path switches its log1p at 512 and its exponential at 4096; blocks at 32768.
    numpy_sizes = (511, 521, 4095, 4099, 32767, 32771, LARGE_PRIME)
    assert backend_sizes(bce_core.get_backend("numpy"), "cpu") == numpy_sizes

    class OnePath:
        def size_thresholds(self, device: str) -> tuple[int, ...]:
            return ()

    assert backend_sizes(OnePath(), "cpu") == DEFAULT_LARGE_SIZES


def test_every_case_of_a_plan_is_found_again_by_its_id() -> None:
    plan = cases_for(bce_core.get_backend("numpy"), "cpu", "float32")
    ids = [case.id for case in plan]
    assert len(ids) == len(set(ids))
    for case in plan:
        if case.id.startswith("threads/"):
            assert case in thread_cases("float32", [case.cases[0].size])
        else:
            assert case_by_id(case.id) == case


def test_an_input_change_is_reported_with_its_first_index() -> None:
    before = np.array([[1.0, np.nan], [3.0, 4.0]])
    assert _unchanged("unchanged[logits]", before, before.copy(), "the caller's logits").passed
    after = before.copy()
    after[1, 0] = -3.0
    changed = _unchanged("unchanged[logits]", before, after, "the caller's logits")
    assert not changed.passed
    assert "1 element(s) changed, first at index (1, 0): 3.0 became -3.0" in changed.detail
    removed = _unchanged("unchanged[parameter grad]", before, None, "the parameter's grad")
    assert not removed.passed and "removed" in removed.detail


def test_the_vectorised_ulp_rule_matches_the_scalar_one() -> None:
    exact = [oracle.element_loss(x, 1.0) for x in (0.0, -20.0, 1e-30, np.inf, -np.inf)]
    exact += [oracle.MP.nan, oracle.MP.mpf("1e-320"), oracle.MP.mpf(2) ** 2000]
    got = np.array([0.6931471805599453, 20.0, 0.7, np.inf, 1.0, np.nan, 0.0, np.inf])
    values = oracle.ExactValues.of(exact, "float64")
    expected_errors = [oracle.ulp_error(g, e, "float64") for g, e in zip(got, exact)]
    np.testing.assert_allclose(values.errors(got), expected_errors, rtol=1e-9)
