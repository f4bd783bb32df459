"""What a backend plugin needs: the hook markers, the hook specifications and
the small dataclasses that plugins return.

A plugin is a module exposed through the ``bce`` entry-point group. It must not
import its framework at module level: it only *describes* its backends, and
the backend object is imported when first used.

Example plugin module (``my_backend/plugin.py``), registered in its
``pyproject.toml`` with ``[project.entry-points.bce] mine = "my_backend.plugin"``:

>>> from bce_core.plugin import ArrayType, BackendSpec, hookimpl
>>> @hookimpl
... def bce_backends():
...     return [BackendSpec(
...         name="mine",
...         loader="my_backend.backend:MyBackend",
...         array_types=(ArrayType("my_framework", "Tensor"),),
...         requires=("my_framework",),
...         extra="mine",
...     )]
>>> bce_backends()[0].name
'mine'
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

import pluggy

from .spec import DEFAULT_LOG_CLAMP

if TYPE_CHECKING:  # Unpack is in typing from Python 3.11
    from typing_extensions import Unpack

#: Name of the pluggy project and of the entry-point group.
PROJECT = "bce"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class ArrayType:
    """An array type a backend owns, named without importing its framework.

    ``module`` matches the type's module or any module below it; ``name`` is
    the class name, or None for every class in that module tree.

    >>> ArrayType("torch", "Tensor").matches("torch", "Tensor")
    True
    >>> ArrayType("jax", None).matches("jax._src.core", "Tracer")
    True
    """

    module: str
    name: str | None = None

    def matches(self, module: str, name: str) -> bool:
        in_module = module == self.module or module.startswith(self.module + ".")
        return in_module and (self.name is None or self.name == name)


@dataclass(frozen=True)
class BackendSpec:
    """Description of one backend, returned by a plugin's ``bce_backends`` hook.

    ``loader`` is ``"module:attribute"``; the attribute is a class or factory
    called with no arguments on first use. ``requires`` lists top-level modules
    that must be importable (checked without importing them); ``extra`` is the
    pip extra that installs them.

    >>> BackendSpec(name="numpy", loader="bce_numpy.backend:NumpyBackend").priority
    0
    """

    name: str
    loader: str
    array_types: tuple[ArrayType, ...] = ()
    requires: tuple[str, ...] = ()
    extra: str | None = None
    description: str = ""
    #: Higher wins when two backends claim one array type (never for one name).
    priority: int = 0
    #: Attributes (such as the Array API's ``__array_namespace__``) that make an array type this
    #: backend's when no backend claims the type by module and name.
    array_protocols: tuple[str, ...] = ()
    #: What ``bce backends`` shows of an installed backend (the libraries it found, say),
    #: computed without importing a framework; None for nothing.
    details: Callable[[], str] | None = None


@dataclass(frozen=True)
class CommandSpec:
    """A subcommand of the ``bce`` CLI contributed by a plugin.

    >>> spec = CommandSpec("hello", "Say hello.", lambda parser: None, lambda args: 0)
    >>> spec.name
    'hello'
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = field(default=())

    @classmethod
    def lazy(cls, name: str, help: str, module: str) -> CommandSpec:
        """A command implemented by ``module``'s ``add_arguments(parser)`` and ``run(args)``,
        imported only when the ``bce`` command line is built.

        >>> CommandSpec.lazy("conformance", "Check backends.", "bce_conformance.cli").name
        'conformance'
        """

        def add_arguments(parser: argparse.ArgumentParser) -> None:
            importlib.import_module(module).add_arguments(parser)

        def run(args: argparse.Namespace) -> int:
            return int(importlib.import_module(module).run(args))

        return cls(name, help, add_arguments, run)


#: Backend, command and extra names: letters, digits, ``_`` and ``-``, not starting with a digit.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
#: A dotted module path (``bce_numpy.backend``) or attribute path.
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_NAME_RULE = "a non-empty identifier-like str (letters, digits, '_' and '-')"

#: Command names the ``bce`` CLI defines itself.
BUILT_IN_COMMANDS = ("backends",)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.match(value) is not None


def _is_dotted(value: object) -> bool:
    return isinstance(value, str) and _DOTTED.match(value) is not None


def _field(name: str, value: object, expected: str) -> str:
    return f"{name}={value!r} ({type(value).__name__}), expected {expected}"


def _tuple_problems(name: str, value: object, ok: Callable[[object], bool], item: str) -> list[str]:
    if not isinstance(value, tuple):
        return [_field(name, value, f"a tuple of {item}")]
    return [
        _field(f"{name}[{i}]", element, item) for i, element in enumerate(value) if not ok(element)
    ]


def _is_array_type(value: object) -> bool:
    return (
        isinstance(value, ArrayType)
        and _is_dotted(value.module)
        and (value.name is None or _is_dotted(value.name))
    )


def backend_spec_problems(spec: object) -> list[str]:
    """What is wrong with a ``BackendSpec`` a plugin returned, one entry per field ([] if none).

    The registry checks every spec with this before using it, so a malformed one is
    reported and ignored instead of breaking dispatch for every backend.

    >>> backend_spec_problems(BackendSpec(name="mine", loader="my_backend:MyBackend"))
    []
    >>> backend_spec_problems(BackendSpec(name="mine", loader="m:B", priority="high"))
    ["priority='high' (str), expected an int"]
    """
    if not isinstance(spec, BackendSpec):
        return [f"{spec!r} ({type(spec).__name__}) is not a bce_core.plugin.BackendSpec"]
    problems = []
    if not _is_name(spec.name):
        problems.append(_field("name", spec.name, _NAME_RULE))
    module, _, attribute = (
        spec.loader.partition(":") if isinstance(spec.loader, str) else ("", "", "")
    )
    if not _is_dotted(module) or not (attribute == "" or _is_dotted(attribute)):
        problems.append(_field("loader", spec.loader, "'module:attribute' (or 'module') as a str"))
    problems += _tuple_problems(
        "array_types",
        spec.array_types,
        _is_array_type,
        "ArrayType(module, name) with a dotted module str and a class name str or None",
    )
    problems += _tuple_problems("requires", spec.requires, _is_dotted, "module names as str")
    if spec.extra is not None and not _is_name(spec.extra):
        problems.append(_field("extra", spec.extra, "a pip extra name as a str or None"))
    if not isinstance(spec.description, str):
        problems.append(_field("description", spec.description, "a str"))
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
        problems.append(_field("priority", spec.priority, "an int"))
    problems += _tuple_problems(
        "array_protocols", spec.array_protocols, _is_dotted, "attribute names as str"
    )
    if spec.details is not None and not callable(spec.details):
        problems.append(_field("details", spec.details, "a callable returning a str, or None"))
    return problems


def command_spec_problems(spec: object) -> list[str]:
    """What is wrong with a ``CommandSpec`` a plugin returned, one entry per field ([] if none).

    >>> command_spec_problems(CommandSpec("hello", "Say hello.", print, print))
    []
    >>> command_spec_problems(CommandSpec("hello", "Say hello.", print, "run"))
    ["run='run' (str), expected a callable taking the parsed arguments"]
    """
    if not isinstance(spec, CommandSpec):
        return [f"{spec!r} ({type(spec).__name__}) is not a bce_core.plugin.CommandSpec"]
    problems = []
    if not _is_name(spec.name):
        problems.append(_field("name", spec.name, _NAME_RULE))
    elif spec.name in BUILT_IN_COMMANDS:
        problems.append(f"name={spec.name!r} is built in to the bce command; choose another name")
    if not isinstance(spec.help, str):
        problems.append(_field("help", spec.help, "a str"))
    if not callable(spec.add_arguments):
        problems.append(
            _field("add_arguments", spec.add_arguments, "a callable taking an ArgumentParser")
        )
    if not callable(spec.run):
        problems.append(_field("run", spec.run, "a callable taking the parsed arguments"))
    problems += _tuple_problems("aliases", spec.aliases, _is_name, _NAME_RULE)
    return problems


class LogitOptions(TypedDict, total=False):
    """The keyword options of ``binary_cross_entropy_with_logits`` that shape the loss."""

    weight: Any
    pos_weight: Any
    label_smoothing: float
    mask: Any
    reduction: str


class ProbsOptions(LogitOptions, total=False):
    """The keyword options of ``binary_cross_entropy``: those of the logits form and the clamp."""

    log_clamp: float


@runtime_checkable
class Backend(Protocol):
    """What a loaded backend object provides (``bce_numpy.backend.NumpyBackend`` is the model).

    The conformance suite calls every method here; ``isinstance(obj, Backend)``
    checks that an object has them all.

    Optional attributes (read with ``getattr``, not part of the protocol check):

    - ``ops``: the backend's ``bce_core.rules.ArrayOps``, and
    - ``converter``: its ``bce_core.rules.Converter`` (which may also have a
      ``dynamic_shape(array)`` giving traced dimensions as 0-d arrays).

    ``bce_core.local_denominator`` and the ``denominator=`` argument of the public
    functions (``bce_core.parallel``) need both; the built-in backends have them.
    """

    name: str

    def version(self) -> str:
        """The framework's version."""
        ...

    def devices(self) -> list[str]:
        """The devices this backend can run on here, as ``asarray`` names them ("cpu" first)."""
        ...

    def asarray(self, array: Any, device: str | None = None) -> Any:
        """A native array holding the NumPy ``array`` (same dtype) on ``device``."""
        ...

    def to_numpy(self, array: Any) -> Any:
        """A NumPy copy of a native array (bfloat16 as ml_dtypes.bfloat16 or float32)."""
        ...

    def device_of(self, array: Any) -> str:
        """The device of a native array, as ``devices()`` names it."""
        ...

    def size_thresholds(self, device: str) -> tuple[int, ...]:
        """The sizes (in elements) from which the backend takes another code path on
        ``device``; the suite runs sizes on both sides of each (``()`` for none)."""
        ...

    def binary_cross_entropy_with_logits(
        self,
        logits: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
    ) -> Any:
        """``bce_core.binary_cross_entropy_with_logits`` on native arrays."""
        ...

    def binary_cross_entropy(
        self,
        probs: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        log_clamp: float = DEFAULT_LOG_CLAMP,
        validate: bool = False,
    ) -> Any:
        """``bce_core.binary_cross_entropy`` on native arrays."""
        ...

    def value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        weight: Any = None,
        pos_weight: Any = None,
        label_smoothing: float = 0.0,
        mask: Any = None,
        reduction: str = "mean",
        validate: bool = False,
        wrt: str | tuple[str, ...] = "logits",
    ) -> tuple[Any, Any]:
        """``bce_core.value_and_grad`` on native arrays."""
        ...

    def grad_hess(
        self, logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None
    ) -> tuple[Any, Any]:
        """``bce_core.grad_hess`` on native arrays."""
        ...


def missing_members(obj: object, protocol: type = Backend) -> list[str]:
    """The attributes of ``protocol`` that ``obj`` lacks, by name.

    >>> missing_members(object())[:3]
    ['asarray', 'binary_cross_entropy', 'binary_cross_entropy_with_logits']
    """
    members = set(getattr(protocol, "__annotations__", {})) | {
        name for name in vars(protocol) if not name.startswith("_")
    }
    return sorted(name for name in members if not hasattr(obj, name))


@runtime_checkable
class AutodiffBackend(Backend, Protocol):
    """A backend of a framework with automatic differentiation.

    These methods let the conformance suite check that the framework's *own*
    autodiff (torch.autograd, jax.grad, tf.GradientTape) through the backend's
    loss gives the spec's derivatives. With ``compiled=True`` the computation
    runs under the framework's compiler (torch.compile, jax.jit,
    tf.function(jit_compile=True)). The suite checks a backend this way when
    ``isinstance(backend, AutodiffBackend)``.
    """

    def autodiff_value_and_grad(
        self,
        logits: Any,
        targets: Any,
        *,
        wrt: tuple[str, ...],
        compiled: bool = False,
        **options: Unpack[LogitOptions],
    ) -> tuple[Any, tuple[Any, ...]]:
        """(loss, gradients of the loss w.r.t. each name in ``wrt``) by autodiff."""
        ...

    def autodiff_second_derivative(
        self, logits: Any, targets: Any, *, compiled: bool = False, **options: Unpack[LogitOptions]
    ) -> Any:
        """d/dlogits of sum(d loss / d logits) by nested autodiff: the diagonal of the Hessian."""
        ...

    def autodiff_probs_grad(
        self, probs: Any, targets: Any, *, compiled: bool = False, **options: Unpack[ProbsOptions]
    ) -> tuple[Any, Any]:
        """(loss, d loss / d probs) of the probability form by autodiff."""
        ...


@runtime_checkable
class ParameterBackend(Backend, Protocol):
    """A backend whose users train parameters (a torch leaf with ``.grad``, a ``tf.Variable``):
    the suite checks that no call touches one."""

    def as_parameter(self, array: Any, device: str) -> Any:
        """A trainable parameter holding the NumPy ``array`` on ``device``."""
        ...

    def parameter_state(self, parameter: Any) -> dict[str, Any]:
        """Everything a call must leave alone on the parameter (its values, its accumulated
        gradient), as NumPy arrays or None."""
        ...


@runtime_checkable
class FrameworkLossBackend(Backend, Protocol):
    """A backend that can show its framework's own loss beside its own in the HTML report."""

    def framework_loss(self, logits: Any, targets: Any) -> tuple[Any, Any]:
        """The framework's own loss and its derivative on the same native arrays, elementwise."""
        ...


class BceHookSpecs:
    """The hooks of the ``bce`` namespace."""

    @hookspec
    def bce_backends(self) -> Sequence[BackendSpec]:  # type: ignore[empty-body]
        """Describe the backends this plugin provides.

        Called once when the registry is first built. Must not import a framework.
        """

    @hookspec
    def bce_commands(self) -> Sequence[CommandSpec]:  # type: ignore[empty-body]
        """Contribute subcommands to the ``bce`` command line."""
