"""The conformance suite as pytest tests: ``pytest --pyargs bce_conformance --bce-backend NAME``.

Collected only when ``--bce-backend`` is given (see ``pytest_plugin``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bce_conformance.cases import DTYPES, ERROR_CASES, Case, ErrorCase, ThreadCase
from bce_conformance.runner import CaseRunner, cases_for, select_devices, supports


def _backend(config: pytest.Config) -> Any:
    import bce_core

    return bce_core.get_backend(config.getoption("--bce-backend"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bce_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    backend = _backend(config)
    wanted = config.getoption("--bce-device")
    devices = select_devices(backend, wanted)
    errors = metafunc.function.__name__ == "test_error_case"
    params = []
    if not devices:
        reason = f"no usable {wanted} device for backend {backend.name!r}"
        params.append(
            pytest.param(
                wanted, None, id=f"{wanted}-unavailable", marks=pytest.mark.skip(reason=reason)
            )
        )
    for device in devices:
        if errors:
            params += [
                pytest.param(device, case, id=f"{device}-error/{case.name}") for case in ERROR_CASES
            ]
            continue
        for dtype in config.getoption("--bce-dtype") or DTYPES:
            reason = supports(backend, dtype, device)
            for case in cases_for(backend, device, dtype):
                marks = [pytest.mark.skip(reason=reason)] if reason else []
                params.append(pytest.param(device, case, id=f"{device}-{case.id}", marks=marks))
    metafunc.parametrize(("bce_device", "bce_case"), params)


def _explain(result: Any) -> str:
    lines = [f"{result.backend} on {result.device}: {result.case}"]
    if result.error:
        lines.append(result.error)
    lines += [f"{c.quantity}: {c.detail}" for c in result.comparisons if not c.passed]
    lines.append("reproduce with:\n" + result.reproduction())
    return "\n".join(lines)


def test_case(request: pytest.FixtureRequest, bce_device: str, bce_case: Case | ThreadCase) -> None:
    runner = CaseRunner(_backend(request.config), bce_device)
    result = (
        runner.run_threads(bce_case) if isinstance(bce_case, ThreadCase) else runner.run(bce_case)
    )
    assert result.passed, _explain(result)


def test_error_case(request: pytest.FixtureRequest, bce_device: str, bce_case: ErrorCase) -> None:
    result = CaseRunner(_backend(request.config), bce_device).run_error(bce_case)
    assert result.passed, _explain(result)
