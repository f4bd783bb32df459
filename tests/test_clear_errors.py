"""Errors a careless call gets: each names the argument, the value and the fix, and reads the
same on every backend (an invalid ``backend=``, another framework's array being differentiated
or traced, a ragged nested list, ``validate=True`` under a compiler's tracing)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from native_backends import BACKEND_FRAMEWORKS, installed_backend

import bce_core

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "binary_cross_entropy_with_logits": bce_core.binary_cross_entropy_with_logits,
    "binary_cross_entropy": bce_core.binary_cross_entropy,
    "value_and_grad": bce_core.value_and_grad,
    "grad_hess": bce_core.grad_hess,
}


def framework_arrays(name: str) -> tuple[Any, Any]:
    """A (0.25, 0.75) input and (1, 1) targets as ``name``'s native float32 arrays."""
    backend = installed_backend(name)
    return backend.asarray(np.array([0.25, 0.75], np.float32)), backend.asarray(
        np.ones(2, np.float32)
    )


# -- backend= must be a name or a backend object -----------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("arrays", ["list", *BACKEND_FRAMEWORKS])
@pytest.mark.parametrize("choice", [3, 2.5, b"numpy", object(), np.float32])
def test_an_invalid_backend_choice_is_a_type_error_whatever_the_arrays(
    function: str, arrays: str, choice: Any
) -> None:
    x, y = ([0.25, 0.75], [0.0, 1.0]) if arrays == "list" else framework_arrays(arrays)
    with pytest.raises(TypeError) as raised:
        FUNCTIONS[function](x, y, backend=choice)
    assert str(raised.value) == (
        f"backend={choice!r} is of type {type(choice).__qualname__}; pass a backend name (a str "
        f"such as 'numpy'; bce_core.available_backends() lists them) or a backend object from "
        f"bce_core.get_backend(name)."
    )


def test_a_backend_object_and_a_backend_name_are_accepted() -> None:
    loss = bce_core.binary_cross_entropy_with_logits(
        [0.0], [1.0], backend=bce_core.get_backend("numpy")
    )
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-15)


# -- another framework's array that is being differentiated or traced ----------------------------

OTHER_BACKENDS = {name: [b for b in BACKEND_FRAMEWORKS if b != name] for name in BACKEND_FRAMEWORKS}
#: The backends that read another framework's arrays through NumPy, and so must refuse one that
#: is being differentiated or traced. The array_api backend computes in the array's own
#: namespace instead (torch's and JAX's speak the standard): tests/test_array_api_backend.py.
REFUSING_BACKENDS = {
    name: [b for b in others if not (b == "array_api" and name in ("torch", "jax"))]
    for name, others in OTHER_BACKENDS.items()
}
ARGUMENTS = ("logits", "targets", "weight", "pos_weight")


def call_with(function: str, argument: str, value: Any, backend: str) -> Any:
    """``function`` with ``value`` as ``argument`` and plain lists for the others."""
    arguments: dict[str, Any] = {"logits": [0.25, 0.75], "targets": [0.0, 1.0]}
    arguments[argument] = value
    first = "probs" if function == "binary_cross_entropy" else "logits"
    x, y = arguments.pop("logits"), arguments.pop("targets")
    if first == "probs" and argument == "logits":
        argument = "probs"
    return FUNCTIONS[function](x, y, **arguments, backend=backend), argument


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("argument", ARGUMENTS)
@pytest.mark.parametrize("backend", REFUSING_BACKENDS["torch"])
def test_a_torch_tensor_that_requires_grad_is_refused_by_another_backend(
    function: str, argument: str, backend: str
) -> None:
    installed_backend(backend)
    torch = pytest.importorskip("torch")
    value = torch.tensor([0.25, 0.5], dtype=torch.float64, requires_grad=True)
    shown = "probs" if function == "binary_cross_entropy" and argument == "logits" else argument
    with pytest.raises(TypeError) as raised:
        call_with(function, argument, value, backend)
    assert str(raised.value) == (
        f"{shown} is a torch.Tensor that requires grad; a backend of another framework reads "
        f"it through NumPy, which would cut it off from autograd: pass backend='torch' (or no "
        f"backend=) to differentiate it, or {shown}.detach() to use its values."
    )


@pytest.mark.parametrize("argument", ARGUMENTS)
@pytest.mark.parametrize("backend", REFUSING_BACKENDS["jax"])
def test_a_jax_tracer_is_refused_by_another_backend(argument: str, backend: str) -> None:
    installed_backend(backend)
    jax = pytest.importorskip("jax")

    def loss(value: Any) -> Any:
        return call_with("binary_cross_entropy_with_logits", argument, value, backend)[0]

    with pytest.raises(TypeError) as raised:
        jax.grad(loss)(jax.numpy.array([0.25, 0.5]))
    assert str(raised.value) == (
        f"{argument} is a JAX tracer (inside jax.jit, jax.grad or jax.vmap); a backend of "
        f"another framework reads it through NumPy, which cannot see traced values: pass "
        f"backend='jax' (or no backend=) inside the transformation, or call the loss outside it."
    )


@pytest.mark.parametrize("argument", ARGUMENTS)
@pytest.mark.parametrize("backend", OTHER_BACKENDS["tensorflow"])
def test_a_symbolic_tensorflow_tensor_is_refused_by_another_backend(
    argument: str, backend: str
) -> None:
    installed_backend(backend)
    installed_backend("tensorflow")
    import tensorflow as tf

    @tf.function
    def loss(value: Any) -> Any:
        return call_with("binary_cross_entropy_with_logits", argument, value, backend)[0]

    with pytest.raises(TypeError) as raised:
        loss(tf.constant([0.25, 0.5], tf.float64))
    assert (
        str(raised.value)
        .rstrip()
        .endswith(  # after TensorFlow's "in user code" trace
            f"{argument} is a symbolic tf.Tensor (inside tf.function); a backend of another "
            f"framework reads it through NumPy, which cannot see symbolic values: pass "
            f"backend='tensorflow' (or no backend=) inside tf.function, or call the loss eagerly."
        )
    )


@pytest.mark.parametrize("backend", OTHER_BACKENDS["torch"])
def test_a_torch_tensor_without_grad_is_still_converted(backend: str) -> None:
    installed_backend(backend)
    torch = pytest.importorskip("torch")
    loss = bce_core.binary_cross_entropy_with_logits(
        torch.zeros(2), torch.ones(2), backend=backend, reduction="sum"
    )
    assert float(np.asarray(bce_core.get_backend(backend).to_numpy(loss))) == pytest.approx(
        2 * np.log(2.0), rel=1e-6
    )


# -- ragged nested lists ---------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("argument", [*ARGUMENTS, "mask"])
@pytest.mark.parametrize("backend", [None, *BACKEND_FRAMEWORKS])
def test_a_ragged_list_is_a_value_error_naming_the_argument(
    function: str, argument: str, backend: str | None
) -> None:
    if backend is not None:
        installed_backend(backend)
    if function == "grad_hess" and argument == "mask":
        pytest.skip("grad_hess has no mask")
    ragged: list[Any] = [[True, False], [True]] if argument == "mask" else [[0.25, 0.5], [0.75]]
    arguments: dict[str, Any] = {"logits": [[0.25, 0.5], [0.75, 0.5]], "targets": [[0, 1], [1, 0]]}
    arguments[argument] = ragged
    x, y = arguments.pop("logits"), arguments.pop("targets")
    shown = "probs" if function == "binary_cross_entropy" and argument == "logits" else argument
    with pytest.raises(ValueError) as raised:
        FUNCTIONS[function](x, y, **arguments, backend=backend)
    assert str(raised.value) == (
        f"{shown} is a ragged nested list (the lists at depth 1 have lengths 1 and 2); an array "
        f"needs one length per dimension: pad the short lists to one length (and pass mask= to "
        f"exclude the padding)."
    )


def test_the_ragged_error_says_where_the_lengths_differ() -> None:
    with pytest.raises(ValueError, match=r"logits is a ragged nested list \(the lists at depth 2 "):
        bce_core.binary_cross_entropy_with_logits([[[0.0], [1.0, 2.0]]], [[[0.0], [1.0, 0.0]]])
    with pytest.raises(ValueError, match=r"targets is a ragged nested list \(at depth 1 numbers "):
        bce_core.binary_cross_entropy_with_logits([[0.0], [1.0]], [[0.0], 1.0])


# -- validate=True under tracing -------------------------------------------------------------

VALIDATION_UNDER_TRACING = (
    r"validate=True checks the data, which cannot run under {where} \(the values are abstract "
    r"there\); validate the data eagerly before the compiled or transformed step \(call the "
    r"loss once with validate=True outside it\), or pass validate=False inside it\."
)


@pytest.mark.parametrize("bad", [False, True], ids=["good-data", "bad-data"])
@pytest.mark.parametrize("fullgraph", [True, False], ids=["fullgraph", "graph-breaks"])
def test_validate_under_torch_compile_is_our_value_error(bad: bool, fullgraph: bool) -> None:
    installed_backend("torch")
    import torch

    @torch.compile(fullgraph=fullgraph)
    def step(x: Any, y: Any) -> Any:
        return bce_core.binary_cross_entropy_with_logits(x, y, validate=True)

    targets = torch.tensor([0.0, 2.0 if bad else 1.0])
    where = r"torch.compile, torch.jit or a torch.func transform"
    with pytest.raises(ValueError, match=VALIDATION_UNDER_TRACING.format(where=where)):
        step(torch.zeros(2), targets)


def test_validate_under_jax_transformations_is_our_value_error() -> None:
    installed_backend("jax")
    import jax

    def loss(x: Any) -> Any:
        return bce_core.binary_cross_entropy_with_logits(x, jax.numpy.ones(2), validate=True)

    where = r"jax.jit, jax.grad or jax.vmap"
    for transformed in (jax.jit(loss), jax.grad(loss)):
        with pytest.raises(ValueError, match=VALIDATION_UNDER_TRACING.format(where=where)):
            transformed(jax.numpy.zeros(2))


def test_validate_under_tf_function_is_our_value_error() -> None:
    installed_backend("tensorflow")
    import tensorflow as tf

    step = tf.function(lambda x, y: bce_core.binary_cross_entropy_with_logits(x, y, validate=True))
    where = r"tf.function or XLA \(jit_compile\) tracing"
    with pytest.raises(ValueError, match=VALIDATION_UNDER_TRACING.format(where=where)):
        step(tf.zeros(2), tf.ones(2))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_validation_still_runs_eagerly_next_to_a_compiled_step() -> None:
    import torch

    with pytest.raises(ValueError, match=r"targets\[1\] = 2.0 is outside \[0, 1\]"):
        bce_core.binary_cross_entropy_with_logits(
            torch.zeros(2), torch.tensor([0.0, 2.0]), validate=True
        )
