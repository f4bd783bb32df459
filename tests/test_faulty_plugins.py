"""Faulty plugins, installed as real distributions: each is reported, the others keep working.

Every plugin here is a throw-away distribution (a ``*.dist-info`` with ``entry_points.txt``
and a module, see ``make_distribution`` in conftest.py) that importlib.metadata finds exactly
as it finds an installed third-party package. Each test checks that (a) ``bce backends``
reports the plugin, naming its distribution and what is wrong, (b) NumPy calls still work,
and (c) the conformance header lists the plugin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bce_core
from bce_core.cli import main
from bce_core.registry import CORE_DISTRIBUTION, get_registry

PLUGIN = """
from bce_core.plugin import ArrayType, BackendSpec, CommandSpec, hookimpl

@hookimpl
def {hook}():
    return {value}
"""

#: (case id, hook, what the hook returns, substrings the error must contain).
MALFORMED = [
    (
        "array_types_strings",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', array_types=('some_framework',))]",
        ["array_types", "'some_framework'", "ArrayType"],
    ),
    (
        "array_types_none",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', array_types=None)]",
        ["array_types", "None", "tuple of ArrayType"],
    ),
    (
        "array_type_fields",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', array_types=(ArrayType(3, 'T'),))]",
        ["array_types", "module", "3"],
    ),
    (
        "priority_string",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', priority='high')]",
        ["priority", "'high'", "int"],
    ),
    (
        "priority_bool",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', priority=True)]",
        ["priority", "True", "int"],
    ),
    (
        "name_int",
        "bce_backends",
        "[BackendSpec(name=123, loader='m:B')]",
        ["name", "123", "identifier"],
    ),
    (
        "name_none",
        "bce_backends",
        "[BackendSpec(name=None, loader='m:B')]",
        ["name", "None", "identifier"],
    ),
    (
        "name_empty",
        "bce_backends",
        "[BackendSpec(name='', loader='m:B')]",
        ["name", "''", "identifier"],
    ),
    (
        "name_spaces",
        "bce_backends",
        "[BackendSpec(name='my backend', loader='m:B')]",
        ["name", "'my backend'", "identifier"],
    ),
    (
        "loader_none",
        "bce_backends",
        "[BackendSpec(name='bad', loader=None)]",
        ["loader", "None", "module:attribute"],
    ),
    (
        "loader_not_a_module_path",
        "bce_backends",
        "[BackendSpec(name='bad', loader='not a module')]",
        ["loader", "'not a module'", "module:attribute"],
    ),
    (
        "requires_string",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', requires='torch')]",
        ["requires", "'torch'", "tuple"],
    ),
    (
        "extra_int",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', extra=1)]",
        ["extra", "1", "str or None"],
    ),
    (
        "description_none",
        "bce_backends",
        "[BackendSpec(name='bad', loader='m:B', description=None)]",
        ["description", "None", "str"],
    ),
    ("backends_not_a_list", "bce_backends", "42", ["bce_backends", "42", "list"]),
    (
        "backends_a_single_spec",
        "bce_backends",
        "BackendSpec(name='bad', loader='m:B')",
        ["bce_backends", "BackendSpec", "list"],
    ),
    (
        "backends_wrong_item",
        "bce_backends",
        "['numpy']",
        ["bce_backends", "'numpy'", "BackendSpec"],
    ),
    (
        "commands_wrong_item",
        "bce_commands",
        "['hello']",
        ["bce_commands", "'hello'", "CommandSpec"],
    ),
    ("commands_not_a_list", "bce_commands", "object", ["bce_commands", "list"]),
    (
        "command_run_not_callable",
        "bce_commands",
        "[CommandSpec('hello', 'Say hello.', lambda parser: None, 'run')]",
        ["run", "'run'", "callable"],
    ),
    (
        "command_add_arguments_none",
        "bce_commands",
        "[CommandSpec('hello', 'Say hello.', None, lambda args: 0)]",
        ["add_arguments", "None", "callable"],
    ),
    (
        "command_name_int",
        "bce_commands",
        "[CommandSpec(7, 'Say hello.', lambda parser: None, lambda args: 0)]",
        ["name", "7"],
    ),
    (
        "command_help_none",
        "bce_commands",
        "[CommandSpec('hello', None, lambda parser: None, lambda args: 0)]",
        ["help", "None", "str"],
    ),
    (
        "command_aliases_string",
        "bce_commands",
        "[CommandSpec('hello', 'Hi.', lambda parser: None, lambda args: 0, aliases='hi')]",
        ["aliases", "'hi'", "tuple"],
    ),
    (
        "command_shadows_backends",
        "bce_commands",
        "[CommandSpec('backends', 'Mine.', lambda parser: None, lambda args: 0)]",
        ["'backends'", "built in"],
    ),
]


def _backends_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["backends"]) == 0
    return capsys.readouterr().out


def _backends_json(capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["backends", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _conformance_header() -> list[str]:
    from bce_conformance.report import header_lines
    from bce_conformance.runner import run_suite

    report = run_suite(["numpy"], dtypes=())  # only the error cases: quick, and NumPy runs
    assert report.results and not report.failures
    return header_lines(report)


def _numpy_still_works() -> None:
    loss = bce_core.binary_cross_entropy_with_logits(np.zeros(3), np.ones(3), reduction="sum")
    assert float(loss) == pytest.approx(3 * np.log(2))
    loss = bce_core.binary_cross_entropy([0.5, 0.25], [1.0, 0.0], reduction="none")
    np.testing.assert_allclose(loss, [np.log(2), -np.log(0.75)])
    assert type(bce_core.get_backend("numpy")).__module__ == "bce_numpy.backend"
    registry = get_registry()
    assert {"numpy", "torch", "tensorflow", "jax"} <= set(registry.names())
    assert {"conformance", "bench"} <= {command.name for command in registry.commands}


@pytest.mark.parametrize(
    ("hook", "value", "expected"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_plugin_is_rejected_and_reported(
    make_distribution,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hook: str,
    value: str,
    expected: list[str],
) -> None:
    make_distribution(
        "faulty-bce",
        {"faulty": "faulty_plugin"},
        {"faulty_plugin": PLUGIN.format(hook=hook, value=value)},
    )
    errors = [e for e in get_registry().plugin_errors if e.distribution == "faulty-bce"]
    assert len(errors) == 1, get_registry().plugin_errors
    assert errors[0].plugin == "faulty"
    for part in expected:
        assert part in errors[0].error
    # Nothing of the rejected plugin is registered.
    assert "bad" not in get_registry().names()
    assert not any(c.name == "hello" for c in get_registry().commands)
    _numpy_still_works()
    # (a) bce backends: the table and the JSON both name the plugin, its distribution, the field.
    text = _backends_text(monkeypatch, capsys)
    broken = [line for line in text.splitlines() if "faulty-bce" in line]
    assert broken and all(part in broken[0] for part in ["'faulty'", *expected]), text
    payload = _backends_json(capsys)
    assert [e["plugin"] for e in payload["plugin_errors"]] == ["faulty"]
    assert {b["name"]: b["status"] for b in payload["backends"]}["numpy"] == "installed"
    # (c) the conformance header lists it, and the NumPy backend still passes.
    header = [line for line in _conformance_header() if "faulty-bce" in line]
    assert header and all(part in header[0] for part in expected), header


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("raise ImportError('no module named acme_native')", "acme_native"),
        ("import module_that_does_not_exist_anywhere", "module_that_does_not_exist_anywhere"),
        ("def broken(:\n    pass", "SyntaxError"),
        (
            "from bce_core.plugin import hookimpl\n"
            "@hookimpl\ndef bce_backends():\n    raise RuntimeError('cannot describe myself')",
            "cannot describe myself",
        ),
        (
            "from bce_core.plugin import hookimpl\n"
            "@hookimpl\ndef bce_backends(extra_argument):\n    return []",
            "extra_argument",
        ),
    ],
    ids=["import_error", "missing_module", "syntax_error", "hook_raises", "hook_signature"],
)
def test_plugin_that_fails_to_load_or_whose_hook_raises(
    make_distribution,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    expected: str,
) -> None:
    make_distribution("faulty-bce", {"faulty": "faulty_plugin"}, {"faulty_plugin": module})
    (error,) = [e for e in get_registry().plugin_errors if e.distribution == "faulty-bce"]
    assert error.plugin == "faulty" and expected in error.error
    _numpy_still_works()
    broken = [line for line in _backends_text(monkeypatch, capsys).splitlines() if "faulty" in line]
    assert broken and expected in broken[0] and "faulty-bce" in broken[0]
    assert any("faulty-bce" in line and expected in line for line in _conformance_header())


def test_one_bad_spec_does_not_reject_the_good_one_beside_it(make_distribution) -> None:
    value = (
        "[BackendSpec(name='bad', loader='m:B', priority='high'),"
        " BackendSpec(name='good', loader='bce_numpy.backend:NumpyBackend')]"
    )
    make_distribution(
        "mixed-bce",
        {"mixed": "mixed_plugin"},
        {"mixed_plugin": PLUGIN.format(hook="bce_backends", value=value)},
    )
    registry = get_registry()
    assert "good" in registry.names() and "bad" not in registry.names()
    (error,) = registry.plugin_errors
    assert "'bad'" in error.error and "priority" in error.error
    _numpy_still_works()


def test_bce_backends_does_not_crash_on_a_bad_command_plugin_as_a_subprocess(
    make_distribution,
) -> None:
    root = make_distribution(
        "faulty-bce",
        {"faulty": "faulty_plugin"},
        {"faulty_plugin": PLUGIN.format(hook="bce_commands", value="[None]")},
    )
    env = {"PYTHONPATH": f"{root}:{':'.join(sys.path)}", "COLUMNS": "300", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "bce_core", "backends"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    line = next(line for line in done.stdout.splitlines() if "faulty-bce" in line)
    assert "bce_commands" in line and "None" in line and "CommandSpec" in line


# -- built-in names cannot be shadowed ------------------------------------------------------


SHADOW = """
from bce_core.plugin import ArrayType, BackendSpec, hookimpl

@hookimpl
def bce_backends():
    return [BackendSpec(name="numpy", loader="shadow_backend:Shadow",
                        array_types=(ArrayType("numpy", "ndarray"),), priority=10)]
"""

SHADOW_BACKEND = """
from bce_numpy.backend import NumpyBackend

class Shadow(NumpyBackend):
    def binary_cross_entropy_with_logits(self, *args, **kwargs):
        raise AssertionError("the third party's backend was used")
"""


def _put_last_on_sys_path(root: Path) -> None:
    # The entry points of a distribution late on sys.path are found after bce-core's.
    sys.path.remove(str(root))
    sys.path.append(str(root))


@pytest.mark.parametrize("first", [True, False], ids=["third_party_first", "bce_core_first"])
@pytest.mark.parametrize("entry_point", ["numpy", "fastnumpy"])
def test_a_third_party_cannot_shadow_a_built_in_backend(
    make_distribution,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    entry_point: str,
    first: bool,
) -> None:
    root = make_distribution(
        "shadow-bce",
        {entry_point: "shadow_plugin"},
        {"shadow_plugin": SHADOW, "shadow_backend": SHADOW_BACKEND},
    )
    if not first:
        _put_last_on_sys_path(root)
    registry = get_registry()
    assert [r.distribution for r in registry.records["numpy"]] == [CORE_DISTRIBUTION]
    (error,) = registry.plugin_errors
    assert error.distribution == "shadow-bce" and error.plugin == entry_point
    assert "'numpy'" in error.error and CORE_DISTRIBUTION in error.error
    _numpy_still_works()
    assert registry.owner_of(np.ndarray) == "numpy"
    text = _backends_text(monkeypatch, capsys)
    line = next(line for line in text.splitlines() if "shadow-bce" in line)
    assert CORE_DISTRIBUTION in line and "numpy" in line
    assert any("shadow-bce" in line for line in _conformance_header())


def test_two_third_parties_with_one_entry_point_name_first_distribution_wins(
    make_distribution,
) -> None:
    plugin = """
from bce_core.plugin import BackendSpec, hookimpl

@hookimpl
def bce_backends():
    return [BackendSpec(name="{name}", loader="bce_numpy.backend:NumpyBackend")]
"""
    # zeta is first on sys.path, but alpha sorts first: alpha wins in either order.
    make_distribution(
        "alpha-bce", {"acme": "alpha_plugin"}, {"alpha_plugin": plugin.format(name="alpha")}
    )
    make_distribution(
        "zeta-bce", {"acme": "zeta_plugin"}, {"zeta_plugin": plugin.format(name="zeta")}
    )
    registry = get_registry()
    assert "alpha" in registry.names() and "zeta" not in registry.names()
    (error,) = registry.plugin_errors
    assert error.distribution == "zeta-bce" and "alpha-bce" in error.error
    _numpy_still_works()
