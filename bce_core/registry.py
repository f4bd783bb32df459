"""The plugin registry: which backends exist, and loading them on demand.

The registry is built on first use (never at ``import bce_core``) from the
``bce`` entry-point group. Each plugin is loaded and asked for its backends in
isolation: a plugin that fails is recorded with its error and the others keep
working. What a hook returns is checked field by field (``backend_spec_problems``,
``command_spec_problems``): a malformed backend or command is recorded as a
plugin error and ignored. A backend name that bce-core itself registers can't
be taken by a third party: the built-in wins and the other is recorded as a
plugin error, whatever the load order. Entry points load bce-core's first, then
by distribution name, so when two third parties use one entry-point name the
first distribution by name wins and the other is recorded. Two third parties
that register one backend name make it a "conflict" (neither is used). Setting
``BCE_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the backends shipped with bce-core.

>>> from bce_core.registry import get_registry
>>> "numpy" in get_registry().names()
True
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .errors import BackendConflictError, BackendUnavailableError, UnknownBackendError
from .plugin import (
    PROJECT,
    Backend,
    BackendSpec,
    BceHookSpecs,
    CommandSpec,
    backend_spec_problems,
    command_spec_problems,
    missing_members,
)
from .spec import closest_name

#: Environment variable that turns off loading of third-party plugins.
DISABLE_AUTOLOAD_ENV = "BCE_DISABLE_PLUGIN_AUTOLOAD"

#: The distribution whose plugins always load.
CORE_DISTRIBUTION = "bce-core"


@dataclass(frozen=True)
class PluginError:
    """A plugin that could not be loaded, whose hook raised, or whose hook returned something
    malformed (what was rejected is named in ``error``; the rest of the plugin is used)."""

    plugin: str
    distribution: str | None
    error: str


@dataclass(frozen=True)
class BackendRecord:
    """A backend description together with the plugin that registered it."""

    spec: BackendSpec
    plugin: str
    distribution: str | None


@dataclass(frozen=True)
class BackendInfo:
    """What ``available_backends()`` reports about one backend.

    ``status`` is ``"ok"`` (loaded), ``"installed"`` (its framework is installed, not
    loaded: see ``Registry.describe``), ``"not installed"``, ``"failed"`` or ``"conflict"``.
    """

    name: str
    status: str
    version: str | None = None
    devices: tuple[str, ...] = ()
    error: str | None = None
    #: What the backend says of itself (``BackendSpec.details``), for an installed one.
    detail: str | None = None
    extra: str | None = None
    plugin: str | None = None
    distribution: str | None = None


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _short_error(exc: BaseException) -> str:
    # One line: the error is shown in a table row and in the conformance header.
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"


def _entry_point_order(entry_point: importlib.metadata.EntryPoint) -> tuple[bool, str, str]:
    # bce-core's own first, then by distribution and name: the same order on every machine.
    dist = entry_point.dist.name if entry_point.dist is not None else ""
    return (dist != CORE_DISTRIBUTION, dist, entry_point.name)


@dataclass
class Registry:
    """Backends and commands contributed by plugins; thread-safe, lazily loading.

    >>> registry = Registry.from_entry_points()
    >>> registry.get("numpy").name
    'numpy'
    """

    records: dict[str, list[BackendRecord]] = field(default_factory=dict)
    commands: list[CommandSpec] = field(default_factory=list)
    plugin_errors: list[PluginError] = field(default_factory=list)
    _loaded: dict[str, Backend] = field(default_factory=dict)
    _owner_cache: dict[type, str | None] = field(default_factory=dict)
    #: The loaded backend for calls whose arrays are all of one owned type (see dispatch).
    backend_of_type: dict[type, Backend] = field(default_factory=dict)
    _module_distributions: Mapping[str, list[str]] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- building -----------------------------------------------------------

    @classmethod
    def from_entry_points(cls, *, autoload: bool | None = None) -> Registry:
        """Build a registry from the ``bce`` entry-point group."""
        if autoload is None:
            autoload = not _autoload_disabled()
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(BceHookSpecs)
        registry = cls()
        distributions: dict[str, str | None] = {}
        entry_points = importlib.metadata.entry_points(group=PROJECT)
        for entry_point in sorted(entry_points, key=_entry_point_order):
            dist = entry_point.dist.name if entry_point.dist is not None else None
            if not autoload and dist != CORE_DISTRIBUTION:
                continue
            if manager.has_plugin(entry_point.name):
                # Two distributions with one entry-point name: the first in that order is kept.
                kept = distributions.get(entry_point.name)
                why = (
                    "a built-in plugin of bce-core"
                    if kept == CORE_DISTRIBUTION
                    else "the first distribution by name is kept"
                )
                registry.plugin_errors.append(
                    PluginError(
                        entry_point.name,
                        dist,
                        f"entry point {entry_point.name!r} is already registered by "
                        f"{kept!r} ({why}); this one, of {dist!r}, is ignored; rename the "
                        f"entry point",
                    )
                )
                continue
            try:
                manager.register(entry_point.load(), name=entry_point.name)
            except Exception as exc:  # a broken plugin never takes the others down
                registry.plugin_errors.append(
                    PluginError(entry_point.name, dist, _short_error(exc))
                )
                continue
            distributions[entry_point.name] = dist
        registry._collect(manager, distributions)
        return registry

    @classmethod
    def from_plugins(cls, *plugins: object) -> Registry:
        """Build a registry from plugin objects (modules or instances), for tests and embedding.

        >>> import bce_numpy.plugin
        >>> Registry.from_plugins(bce_numpy.plugin).names()
        ['numpy']
        """
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(BceHookSpecs)
        names: dict[str, str | None] = {}
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            manager.register(plugin, name=name)
            names[name] = None
        registry = cls()
        registry._collect(manager, names)
        return registry

    def _collect(self, manager: pluggy.PluginManager, distributions: dict[str, str | None]) -> None:
        # Call each plugin's hooks on its own so one raising plugin cannot hide the rest.
        for hook_name in ("bce_backends", "bce_commands"):
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                dist = distributions.get(impl.plugin_name)
                try:
                    returned = impl.function()
                except Exception as exc:
                    self.plugin_errors.append(
                        PluginError(impl.plugin_name, dist, _short_error(exc))
                    )
                    continue
                self._add_results(hook_name, returned, impl.plugin_name, dist)
        self._keep_built_in_names()

    def _add_results(self, hook: str, returned: object, plugin: str, dist: str | None) -> None:
        """Check what one plugin's hook returned; keep the valid items, record the others."""
        kind = "BackendSpec" if hook == "bce_backends" else "CommandSpec"
        if returned is None:
            return
        if not isinstance(returned, (list, tuple)):
            self.plugin_errors.append(
                PluginError(
                    plugin,
                    dist,
                    f"{hook} returned {returned!r} ({type(returned).__name__}), expected a list "
                    f"of {kind}; the plugin's {hook} is ignored",
                )
            )
            return
        problems = []
        for item in returned:
            if isinstance(item, BackendSpec) and hook == "bce_backends":
                found = backend_spec_problems(item)
                if not found:
                    self.records.setdefault(item.name, []).append(BackendRecord(item, plugin, dist))
                    continue
                problems.append(f"backend {item.name!r} ignored: {'; '.join(found)}")
            elif isinstance(item, CommandSpec) and hook == "bce_commands":
                found = command_spec_problems(item)
                if not found:
                    self.commands.append(item)
                    continue
                problems.append(f"command {item.name!r} ignored: {'; '.join(found)}")
            else:
                problems.append(
                    f"returned {item!r} ({type(item).__name__}), which is not a {kind}; ignored"
                )
        if problems:
            self.plugin_errors.append(PluginError(plugin, dist, f"{hook}: {'; '.join(problems)}"))

    def _keep_built_in_names(self) -> None:
        """A third party's backend under a name bce-core registers is ignored and recorded."""
        for name, records in self.records.items():
            built_in = [r for r in records if r.distribution == CORE_DISTRIBUTION]
            if not built_in or len(records) == 1:
                continue
            for record in records:
                if record.distribution != CORE_DISTRIBUTION:
                    self.plugin_errors.append(
                        PluginError(
                            record.plugin,
                            record.distribution,
                            f"bce_backends: backend {name!r} of {record.distribution!r} is "
                            f"ignored: {name!r} is a built-in backend of {CORE_DISTRIBUTION!r} "
                            f"(plugin {built_in[0].plugin!r}); register it under another name",
                        )
                    )
            self.records[name] = built_in

    # -- queries ------------------------------------------------------------

    def names(self) -> list[str]:
        """Sorted names of every registered backend, installed or not."""
        return sorted(self.records)

    def record(self, name: str) -> BackendRecord:
        """The single record of ``name``; raises for unknown or conflicting names."""
        records = self.records.get(name)
        if not records:
            hint = closest_name(name, self.names()) if isinstance(name, str) else None
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UnknownBackendError(
                f"no backend named {name!r}; known backends: {', '.join(self.names()) or 'none'}."
                f"{did_you_mean}"
            )
        if len(records) > 1:
            owners = " and ".join(
                f"plugin {r.plugin!r} ({r.distribution or 'no distribution'})" for r in records
            )
            raise BackendConflictError(
                f"backend name {name!r} is registered twice, by {owners}; uninstall one of them."
            )
        return records[0]

    def missing_requirement(self, name: str) -> str | None:
        """The first required module of ``name`` that is not installed (found without importing
        it)."""
        for module in self.record(name).spec.requires:
            try:
                if importlib.util.find_spec(module) is None:
                    return module
            except (ImportError, ValueError):
                return module
        return None

    def get(self, name: str) -> Backend:
        """Return the loaded backend ``name``, importing it on first use."""
        backend = self._loaded.get(name)
        if backend is not None:
            return backend
        with self._lock:
            backend = self._loaded.get(name)
            if backend is None:
                backend = self._load(name)
                self._loaded[name] = backend
        return backend

    def _load(self, name: str) -> Backend:
        record = self.record(name)
        spec = record.spec
        missing = self.missing_requirement(name)
        if missing is not None:
            install = (
                f"pip install 'bce-core[{spec.extra}]'" if spec.extra else f"pip install {missing}"
            )
            raise BackendUnavailableError(
                f"backend {name!r} needs {missing!r}, which is not installed; "
                f"install it with {install}."
            )
        module_name, _, attribute = spec.loader.partition(":")
        try:
            factory: Any = importlib.import_module(module_name)
            for part in attribute.split(".") if attribute else ():
                factory = getattr(factory, part)
            backend = factory() if attribute else factory
        except Exception as exc:
            raise BackendUnavailableError(
                f"backend {name!r} (plugin {record.plugin!r}) failed to load from "
                f"{spec.loader!r}: {_short_error(exc)}"
            ) from exc
        if not isinstance(backend, Backend):
            raise BackendUnavailableError(
                f"backend {name!r} loaded from {spec.loader!r} is a {type(backend).__name__}, "
                f"which lacks {', '.join(missing_members(backend))} of bce_core.plugin.Backend."
            )
        return backend

    def owner_of(self, array_type: type) -> str | None:
        """Name of the backend that owns ``array_type`` (by module and class name), or None."""
        try:
            return self._owner_cache[array_type]
        except KeyError:
            pass
        owner = self._find_owner(array_type)
        self._owner_cache[array_type] = owner  # idempotent: a race writes the same value
        return owner

    def _find_owner(self, array_type: type) -> str | None:
        for cls in array_type.__mro__:
            owner = self._first_claim(functools.partial(_claims_by_name, cls))
            if owner is not None:
                return owner
        # No claim by name: a backend that serves a protocol the type speaks.
        return self._first_claim(
            lambda spec: any(hasattr(array_type, attr) for attr in spec.array_protocols)
        )

    def _first_claim(self, claims: Callable[[BackendSpec], bool]) -> str | None:
        """The backend whose spec ``claims`` the type: the highest priority first; on a tie
        the backend shipped with bce-core, then by name."""
        ranked = sorted(
            (-record.spec.priority, record.distribution != CORE_DISTRIBUTION, name)
            for name, records in self.records.items()
            for record in records
            if claims(record.spec)
        )
        return ranked[0][2] if ranked else None

    def _base_info(self, name: str) -> dict[str, Any]:
        records = self.records.get(name, [])
        first = records[0] if records else None
        return dict(
            name=name,
            extra=first.spec.extra if first else None,
            plugin=first.plugin if first else None,
            distribution=first.distribution if first else None,
        )

    def framework_version(self, name: str) -> str | None:
        """The installed version of ``name``'s framework, read from package metadata without
        importing it: the distribution of its first required module (``torch``), or the
        plugin's own distribution for a backend that requires nothing.

        >>> import importlib.metadata
        >>> get_registry().framework_version("numpy") == importlib.metadata.version("numpy")
        True
        """
        record = self.record(name)
        if record.spec.requires:
            module = record.spec.requires[0].split(".")[0]
            found = self._module_distributions
            if found is None:  # one scan of the installed metadata
                found = self._module_distributions = importlib.metadata.packages_distributions()
            candidates = [*found.get(module, []), module]
        else:
            candidates = [record.distribution] if record.distribution else []
        for distribution in candidates:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def describe(self, name: str) -> BackendInfo:
        """Status and framework version of ``name`` without loading it or importing its
        framework: ``"installed"`` when every required module is found, else ``"not
        installed"`` (or ``"conflict"``). ``info`` loads it and lists its devices.

        >>> get_registry().describe("numpy").status
        'installed'
        """
        base = self._base_info(name)
        try:
            self.record(name)
        except BackendConflictError as exc:
            return BackendInfo(status="conflict", error=str(exc), **base)
        missing = self.missing_requirement(name)
        if missing is not None:
            return BackendInfo(
                status="not installed", error=f"needs {missing!r}, which is not installed", **base
            )
        return BackendInfo(
            status="installed",
            version=self.framework_version(name),
            detail=self._details(name),
            **base,
        )

    def _details(self, name: str) -> str | None:
        """The backend's ``details()``, or why it failed (a broken plugin reports, never
        raises)."""
        details = self.record(name).spec.details
        if details is None:
            return None
        try:
            return str(details())
        except Exception as exc:
            return f"details failed: {_short_error(exc)}"

    def info(self, name: str) -> BackendInfo:
        """Status, version and devices of ``name``; loads it if installed."""
        base = self._base_info(name)
        try:
            self.record(name)
        except BackendConflictError as exc:
            return BackendInfo(status="conflict", error=str(exc), **base)
        if self.missing_requirement(name) is not None:
            try:
                self.get(name)
            except BackendUnavailableError as exc:
                return BackendInfo(status="not installed", error=str(exc), **base)
        try:
            backend = self.get(name)
            return BackendInfo(
                status="ok",
                version=backend.version(),
                devices=tuple(backend.devices()),
                detail=self._details(name),
                **base,
            )
        except Exception as exc:
            detail = str(exc) if isinstance(exc, BackendUnavailableError) else _short_error(exc)
            return BackendInfo(status="failed", error=detail, **base)


def _claims_by_name(cls: type, spec: BackendSpec) -> bool:
    """Whether ``spec`` names ``cls`` (by module and class name) among its array types."""
    return any(t.matches(cls.__module__, cls.__name__) for t in spec.array_types)


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built from entry points on first call."""
    global _registry
    registry = _registry
    if registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry.from_entry_points()
            registry = _registry
    return registry


def set_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (None rebuilds it on next use); returns the old one.

    Used by tests and by hosts that register plugins by hand:

    >>> import bce_numpy.plugin
    >>> old = set_registry(Registry.from_plugins(bce_numpy.plugin))
    >>> _ = set_registry(old)
    """
    global _registry
    with _registry_lock:
        old, _registry = _registry, registry
    return old
