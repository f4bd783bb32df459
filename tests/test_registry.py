"""The pluggy registry with real entry points in temporary distributions."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import bce_core
from bce_core.errors import BackendConflictError, BackendUnavailableError, UnknownBackendError
from bce_core.registry import DISABLE_AUTOLOAD_ENV, get_registry

GOOD_PLUGIN = """
from bce_core.plugin import ArrayType, BackendSpec, hookimpl

@hookimpl
def bce_backends():
    return [BackendSpec(name="acme", loader="acme_backend:AcmeBackend",
                        array_types=(ArrayType("acme_arrays", "AcmeArray"),))]
"""

GOOD_BACKEND = """
from bce_numpy.backend import NumpyBackend

class AcmeBackend(NumpyBackend):
    name = "acme"
    def version(self):
        return "9.9"
"""

ACME_ARRAYS = """
import numpy as np

class AcmeArray(np.ndarray):
    pass
"""


def test_builtin_backends_are_registered_through_entry_points(fresh_registry: None) -> None:
    registry = get_registry()
    assert {"numpy", "torch", "tensorflow", "jax"} <= set(registry.names())
    assert registry.record("numpy").distribution == "bce-core"
    assert any(command.name == "conformance" for command in registry.commands)


def test_third_party_plugin_is_found_and_used(make_distribution) -> None:
    make_distribution(
        "acme-bce",
        {"acme": "acme_plugin"},
        {"acme_plugin": GOOD_PLUGIN, "acme_backend": GOOD_BACKEND, "acme_arrays": ACME_ARRAYS},
    )
    info = {i.name: i for i in bce_core.available_backends()}["acme"]
    assert (info.status, info.version, info.distribution) == ("ok", "9.9", "acme-bce")
    import acme_arrays

    logits = np.zeros(3).view(acme_arrays.AcmeArray)
    # The array's type picks the plugin's backend (detected by module and class name).
    assert get_registry().owner_of(type(logits)) == "acme"
    loss = bce_core.binary_cross_entropy_with_logits(logits, [0, 1, 1], reduction="sum")
    assert float(loss) == pytest.approx(3 * np.log(2))


def test_plugin_that_raises_on_import_is_reported_and_others_work(make_distribution) -> None:
    make_distribution(
        "broken-bce",
        {"broken": "broken_plugin"},
        {"broken_plugin": "raise RuntimeError('boom at import')"},
    )
    registry = get_registry()
    errors = {e.plugin: e for e in registry.plugin_errors}
    assert "boom at import" in errors["broken"].error
    assert errors["broken"].distribution == "broken-bce"
    assert float(bce_core.binary_cross_entropy_with_logits([0.0], [1.0])) == pytest.approx(
        np.log(2)
    )


def test_plugin_whose_hook_raises_is_isolated(make_distribution) -> None:
    make_distribution(
        "hookfail-bce",
        {"hookfail": "hookfail_plugin"},
        {
            "hookfail_plugin": """
        from bce_core.plugin import hookimpl

        @hookimpl
        def bce_backends():
            raise ValueError("cannot describe myself")
    """
        },
    )
    registry = get_registry()
    assert any("cannot describe myself" in e.error for e in registry.plugin_errors)
    assert "numpy" in registry.names()


def test_backend_that_fails_to_load_is_reported_as_failed(make_distribution) -> None:
    make_distribution(
        "lazyfail-bce",
        {"lazyfail": "lazyfail_plugin"},
        {
            "lazyfail_plugin": """
            from bce_core.plugin import BackendSpec, hookimpl

            @hookimpl
            def bce_backends():
                return [BackendSpec(name="lazyfail", loader="lazyfail_backend:Backend")]
        """,
            "lazyfail_backend": "raise ImportError('missing shared library libacme.so')",
        },
    )
    info = {i.name: i for i in bce_core.available_backends()}["lazyfail"]
    assert info.status == "failed"
    assert "libacme.so" in info.error
    with pytest.raises(BackendUnavailableError, match="lazyfail.*libacme.so"):
        bce_core.get_backend("lazyfail")


def test_duplicate_backend_name_is_an_error_naming_both(make_distribution) -> None:
    make_distribution(
        "acme-bce",
        {"acme": "acme_plugin"},
        {"acme_plugin": GOOD_PLUGIN, "acme_backend": GOOD_BACKEND, "acme_arrays": ACME_ARRAYS},
    )
    make_distribution(
        "rival-bce",
        {"rival": "rival_plugin"},
        {
            "rival_plugin": """
        from bce_core.plugin import BackendSpec, hookimpl

        @hookimpl
        def bce_backends():
            return [BackendSpec(name="acme", loader="acme_backend:AcmeBackend")]
    """
        },
    )
    with pytest.raises(BackendConflictError) as raised:
        bce_core.get_backend("acme")
    message = str(raised.value)
    assert "'acme_plugin'" in message or "acme-bce" in message
    assert "rival-bce" in message
    assert {i.name: i.status for i in bce_core.available_backends()}["acme"] == "conflict"
    assert bce_core.get_backend("numpy").name == "numpy"  # the others keep working


def test_autoload_can_be_disabled(make_distribution, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(
        "acme-bce",
        {"acme": "acme_plugin"},
        {"acme_plugin": GOOD_PLUGIN, "acme_backend": GOOD_BACKEND, "acme_arrays": ACME_ARRAYS},
    )
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = get_registry()
    assert "acme" not in registry.names()
    assert "numpy" in registry.names()  # bce-core's own backends still load


def test_unknown_name_suggests_the_closest(fresh_registry: None) -> None:
    with pytest.raises(UnknownBackendError, match="no backend named 'nmupy'.*Did you mean 'numpy'"):
        bce_core.get_backend("nmupy")
    with pytest.raises(ValueError):  # UnknownBackendError is a ValueError
        bce_core.binary_cross_entropy_with_logits([0.0], [1.0], backend="jaxx")


def test_known_but_uninstalled_backend_names_the_extra(make_distribution) -> None:
    make_distribution(
        "ghost-bce",
        {"ghost": "ghost_plugin"},
        {
            "ghost_plugin": """
        from bce_core.plugin import BackendSpec, hookimpl

        @hookimpl
        def bce_backends():
            return [BackendSpec(name="ghost", loader="ghost_backend:Backend",
                                requires=("ghost_framework_not_installed",), extra="ghost")]
    """
        },
    )
    with pytest.raises(BackendUnavailableError, match=r"pip install 'bce-core\[ghost\]'"):
        bce_core.get_backend("ghost")
    info = {i.name: i for i in bce_core.available_backends()}["ghost"]
    assert info.status == "not installed"


def test_registry_is_built_once_under_concurrent_first_use(fresh_registry: None) -> None:
    seen = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        seen.append(id(get_registry()))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1


#: The capabilities each built-in backend declares through the protocols of bce_core.plugin.
CAPABILITIES = {
    "numpy": {"FrameworkLossBackend"},
    "torch": {"AutodiffBackend", "ParameterBackend", "FrameworkLossBackend"},
    "tensorflow": {"AutodiffBackend", "ParameterBackend", "FrameworkLossBackend"},
    "jax": {"AutodiffBackend", "FrameworkLossBackend"},
}


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_built_in_backends_satisfy_the_typed_contract(name: str) -> None:
    from bce_core import plugin

    info = get_registry().info(name)
    if info.status != "ok":
        pytest.skip(f"{name} is {info.status}: {info.error}")
    backend = bce_core.get_backend(name)
    assert isinstance(backend, plugin.Backend)
    declared = {
        protocol
        for protocol in ("AutodiffBackend", "ParameterBackend", "FrameworkLossBackend")
        if isinstance(backend, getattr(plugin, protocol))
    }
    assert declared == CAPABILITIES[name]
    assert backend.device_of(backend.asarray(np.zeros(2, np.float32))) == backend.devices()[0]
    assert all(isinstance(size, int) and size > 0 for size in backend.size_thresholds("cpu"))


def test_an_object_short_of_the_protocol_is_refused_naming_what_it_lacks(make_distribution) -> None:
    make_distribution(
        "half-bce",
        {"half": "half_plugin"},
        {
            "half_plugin": """
        from bce_core.plugin import BackendSpec, hookimpl

        @hookimpl
        def bce_backends():
            return [BackendSpec(name="half", loader="half_backend:HalfBackend")]
    """,
            "half_backend": """
        class HalfBackend:
            name = "half"

            def version(self):
                return "0.0"

            def devices(self):
                return ["cpu"]
    """,
        },
    )
    with pytest.raises(BackendUnavailableError) as error:
        bce_core.get_backend("half")
    lacking = str(error.value).split(" lacks ")[1]
    assert lacking.startswith("asarray, binary_cross_entropy, ")
    assert "device_of" in lacking and "size_thresholds" in lacking
    assert "version" not in lacking and "devices" not in lacking
