"""Shared fixtures: temporary plugin distributions and a clean registry per test."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bce_core import dispatch
from bce_core.registry import set_registry

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"

#: Scripts that tests run in subprocesses: collecting their doctests would import them here,
#: setting up their framework in the test process (4 JAX host devices through XLA_FLAGS).
collect_ignore_glob = ["*_worker.py"]


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Rebuild the registry from entry points for this test and restore it afterwards."""
    old = set_registry(None)
    saved_default = dispatch._default_backend
    try:
        yield
    finally:
        set_registry(old)
        dispatch._default_backend = saved_default


@pytest.fixture
def make_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> Callable[..., Path]:
    """Install a throw-away distribution (modules + entry points) on sys.path.

    ``make_distribution("acme-bce", {"acme": "acme_plugin"}, {"acme_plugin": "source"})``
    """
    created: list[str] = []

    def make(dist_name: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        root = tmp_path / dist_name
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = root / f"{dist_name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[bce]\n{lines}")
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    for module in created:
        sys.modules.pop(module, None)
