"""The ``bce`` command: ``backends`` and ``conformance``."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bce_core.cli import main


def test_backends_json_lists_every_builtin_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    backends = {b["name"]: b for b in payload["backends"]}
    assert {"numpy", "torch", "tensorflow", "jax"} <= set(backends)
    # Listed from metadata, without loading: the framework's version, no devices.
    assert backends["numpy"]["status"] == "installed"
    assert backends["numpy"]["version"] == importlib.metadata.version("numpy")
    assert backends["numpy"]["devices"] == []
    assert backends["numpy"]["distribution"] == "bce-core"
    assert payload["spec_version"] == "1.0"


def test_backends_devices_loads_each_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--devices", "--json"]) == 0
    backends = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backends"]}
    assert backends["numpy"]["status"] == "ok"
    assert backends["numpy"]["devices"] == ["cpu"]
    assert backends["numpy"]["version"] == importlib.metadata.version("numpy")
    for name in ("torch", "tensorflow", "jax"):
        if backends[name]["status"] != "not installed":
            assert backends[name]["status"] == "ok", backends[name]
            assert backends[name]["devices"][0] == "cpu"


def test_backends_table_through_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bce_core", "backends"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": ""},
    )
    numpy_row = next(line for line in out.stdout.splitlines() if " numpy " in line)
    assert "installed" in numpy_row and "bce-core" in numpy_row


def test_conformance_on_numpy_passes_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    assert main(["conformance", "--backend", "numpy", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    rows = {row["dtype"]: row for row in data["summary"]}
    assert rows["float64"]["passed"] > 20 and rows["float64"]["failed"] == 0
    assert rows["float64"]["grade"] == "A"
    assert rows["errors"]["passed"] >= 16
    assert data["failures"] == []
    assert "0 failed" in capsys.readouterr().out


def test_conformance_with_unknown_backend_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--backend", "nupmy"]) == 2
    assert "bce conformance: error: no backend named 'nupmy'" in capsys.readouterr().err


def test_version_and_help() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
