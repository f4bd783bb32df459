"""pytest plugin: run the conformance suite on one backend in a third party's CI.

    pytest --pyargs bce_conformance --bce-backend NAME [--bce-device cpu|gpu|all]
           [--bce-dtype float32 ...] [--bce-expected-failures FILE]

The plugin is registered through the ``pytest11`` entry point but stays inert
(no option is set, nothing is imported, no test is collected) unless
``--bce-backend`` is given. With ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, add
``-p bce_conformance.pytest_plugin``.

The expected-failures file lists test ids or case ids, one per line (``#``
starts a comment); those cases are marked xfail. An entry that matches no
case, or whose case passes, is stale and is reported with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

SUITE_MODULE = "test_conformance.py"


class StaleExpectedFailure(pytest.PytestWarning):
    """An entry of the expected-failures file that no longer fails (or matches nothing)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bce", "bce-core conformance")
    group.addoption(
        "--bce-backend",
        metavar="NAME",
        default=None,
        help="run the bce-core conformance suite on this backend",
    )
    group.addoption(
        "--bce-device",
        choices=("cpu", "gpu", "all"),
        default="cpu",
        help="devices to run on (default cpu); GPU cases skip when none is usable",
    )
    group.addoption(
        "--bce-dtype",
        action="append",
        default=None,
        help="dtype to check (repeatable; default all four)",
    )
    group.addoption(
        "--bce-expected-failures",
        metavar="FILE",
        default=None,
        help="file of case ids expected to fail (marked xfail; stale entries warned)",
    )


def _enabled(config: pytest.Config) -> bool:
    return config.getoption("--bce-backend", default=None) is not None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == SUITE_MODULE and collection_path.parent.name == "bce_conformance":
        return None if _enabled(config) else True
    return None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not _enabled(config):
        return None
    import bce_core
    from bce_core.registry import get_registry

    name = config.getoption("--bce-backend")
    info = get_registry().info(name)
    lines = [
        f"bce-core {bce_core.__version__}, spec {bce_core.SPEC_VERSION}",
        f"backend {name}: {info.status} {info.version or ''} devices "
        f"{', '.join(info.devices) or 'none'}" + (f" ({info.error})" if info.error else ""),
    ]
    lines += [
        f"broken plugin {e.plugin!r} ({e.distribution or 'no distribution'}): {e.error}"
        for e in get_registry().plugin_errors
    ]
    return lines


def _read_expected_failures(path: str) -> dict[str, int]:
    entries: dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries[entry] = number
    return entries


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    path = config.getoption("--bce-expected-failures")
    config.stash[_EXPECTED] = _read_expected_failures(path) if path else {}
    config.stash[_MATCHED] = set()
    config.stash[_XPASSED] = []


_EXPECTED = pytest.StashKey[dict]()
_MATCHED = pytest.StashKey[set]()
_XPASSED = pytest.StashKey[list]()


def _matching_entry(item: pytest.Item, expected: dict[str, int]) -> str | None:
    case_id = getattr(item, "callspec", None) and item.callspec.params.get("bce_case")
    candidates = [item.nodeid.split("::", 1)[-1], item.name]
    if case_id is not None:
        candidates.append(getattr(case_id, "id", None) or f"error/{case_id.name}")
    return next((c for c in candidates if c in expected), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _enabled(config):
        return
    expected, matched = config.stash[_EXPECTED], config.stash[_MATCHED]
    for item in items:
        entry = _matching_entry(item, expected)
        if entry is not None:
            matched.add(entry)
            item.add_marker(
                pytest.mark.xfail(
                    reason=f"listed in the expected-failures file (line {expected[entry]})",
                    strict=False,
                )
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and hasattr(report, "wasxfail"):
        item.config.stash[_XPASSED].append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not _enabled(config):
        return
    expected, matched = config.stash[_EXPECTED], config.stash[_MATCHED]
    stale = [
        f"{entry} (line {line}): matches no case"
        for entry, line in expected.items()
        if entry not in matched
    ]
    stale += [f"{nodeid}: expected to fail but passed" for nodeid in config.stash[_XPASSED]]
    if stale:
        terminalreporter.section("bce: stale expected failures")
        for line in stale:
            terminalreporter.write_line(line)
            warnings.warn(StaleExpectedFailure(line), stacklevel=1)
