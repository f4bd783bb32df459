"""The array_api backend: which arrays it owns, its namespaces, and its results against the
NumPy backend's on Hypothesis-drawn shapes, options and (Dask) chunks.

The shared backend tests (``native_backends.BACKEND_FRAMEWORKS``) and the conformance suite
hold it to the spec on array-api-strict; the Dask path has tests/test_array_api_dask.py.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bce_core
from bce_core.errors import BackendUnavailableError
from bce_core.registry import Registry, get_registry, set_registry

xp = pytest.importorskip("array_api_strict")
pytest.importorskip("array_api_compat")

from bce_array_api import plugin  # noqa: E402
from bce_array_api.backend import ArrayApiBackend  # noqa: E402
from bce_array_api.operands import to_numpy  # noqa: E402

NUMPY = bce_core.get_backend("numpy")
DTYPES = {"float32": xp.float32, "float64": xp.float64}


def strict(array: Any, dtype: Any = None) -> Any:
    return xp.asarray(np.asarray(array), dtype=dtype)


def numpy_of(array: Any) -> np.ndarray:
    return to_numpy(array)


# -- which arrays are its own ---------------------------------------------------------------


def test_array_api_strict_arrays_choose_the_backend_and_stay_in_their_namespace() -> None:
    x = strict([[2.0, -1.0], [0.5, 30.0]], xp.float32)
    y = strict([[1.0, 0.0], [1.0, 1.0]], xp.float32)
    loss, grad = bce_core.value_and_grad(x, y)
    assert type(loss) is type(x) and loss.dtype == xp.float32 and grad.dtype == xp.float32
    expected_loss, expected_grad = NUMPY.value_and_grad(numpy_of(x), numpy_of(y))
    assert float(loss) == float(expected_loss)
    np.testing.assert_array_equal(numpy_of(grad), expected_grad)


def test_an_array_type_nobody_claims_goes_to_the_backend_by_its_namespace_protocol() -> None:
    class SpeaksTheStandard:
        def __array_namespace__(self, api_version: str | None = None) -> Any:
            return xp

    class Silent:
        pass

    registry = get_registry()
    assert registry.owner_of(SpeaksTheStandard) == "array_api"
    assert registry.owner_of(Silent) is None
    # Claimed by name first: NumPy arrays (which speak the standard too) keep their backend.
    assert registry.owner_of(np.ndarray) == "numpy"


def test_without_array_api_compat_the_error_says_what_to_install() -> None:
    class Missing:
        @staticmethod
        @plugin.hookimpl
        def bce_backends() -> list[Any]:
            (spec,) = plugin.bce_backends()
            return [
                plugin.BackendSpec(
                    name=spec.name,
                    loader=spec.loader,
                    array_types=spec.array_types,
                    array_protocols=spec.array_protocols,
                    requires=("array_api_compat_not_installed_here",),
                    extra=spec.extra,
                )
            ]

    import bce_numpy.plugin

    old = set_registry(Registry.from_plugins(bce_numpy.plugin, Missing()))
    try:
        with pytest.raises(BackendUnavailableError) as raised:
            bce_core.binary_cross_entropy_with_logits(strict([0.0]), strict([1.0]))
    finally:
        set_registry(old)
    assert str(raised.value) == (
        "backend 'array_api' needs 'array_api_compat_not_installed_here', which is not "
        "installed; install it with pip install 'bce-core[array-api]'."
    )


def test_bce_backends_lists_the_namespaces_found(capsys: pytest.CaptureFixture[str]) -> None:
    from bce_core.cli import main

    assert main(["backends", "--json"]) == 0

    (info,) = [
        b for b in json.loads(capsys.readouterr().out)["backends"] if b["name"] == "array_api"
    ]

    assert f"array_api_strict {importlib.metadata.version('array-api-strict')}" in info["detail"]
    assert info["detail"].startswith("namespaces: ")


def test_an_operand_of_another_namespace_is_a_type_error_that_says_how_to_convert() -> None:
    dask = pytest.importorskip("dask.array")
    with pytest.raises(TypeError) as raised:
        bce_core.binary_cross_entropy_with_logits(strict([0.5, 1.0]), dask.ones(2))
    assert str(raised.value) == (
        "targets is an array of dask.array but the input is an array of array_api_strict; "
        "convert it with array_api_strict.asarray (through NumPy, or with from_dlpack) so that "
        "every array of the call is of one namespace."
    )


def test_a_backend_bound_to_a_namespace_makes_lists_arrays_of_it() -> None:
    backend = ArrayApiBackend("array_api_strict")
    loss = backend.binary_cross_entropy_with_logits([0.0, 2.0], [1, 0], reduction="sum")
    assert type(loss).__module__.startswith("array_api_strict")
    assert float(loss) == pytest.approx(float(NUMPY.binary_cross_entropy_with_logits(
        np.array([0.0, 2.0]), np.array([1.0, 0.0]), reduction="sum")), rel=1e-15)  # fmt: skip
    # Unbound, lists stay NumPy arrays.
    assert isinstance(ArrayApiBackend().binary_cross_entropy_with_logits([0.0], [1.0]), np.ndarray)


# -- namespaces with autodiff, asked for by name ----------------------------------------------


def test_torch_tensors_asked_by_name_are_differentiated_by_autograd() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[-3.0, 0.5], [20.0, -0.25]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.25]], dtype=torch.float64)
    w = torch.tensor([2.0, 0.5], dtype=torch.float64)
    loss = bce_core.binary_cross_entropy_with_logits(
        x, y, weight=w, label_smoothing=0.1, reduction="weighted_mean", backend="array_api"
    )
    loss.backward()
    expected, grad = NUMPY.value_and_grad(
        x.detach().numpy(), y.numpy(), weight=w.numpy(), label_smoothing=0.1,
        reduction="weighted_mean",
    )  # fmt: skip
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-13)


def test_jax_arrays_asked_by_name_work_under_jit_and_grad() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.asarray([-3.0, 0.5, 20.0], jnp.float32)
    y = jnp.asarray([0.0, 1.0, 1.0], jnp.float32)
    mask = jnp.asarray([True, False, True])

    def loss(logits: Any) -> Any:
        return bce_core.binary_cross_entropy_with_logits(logits, y, mask=mask, backend="array_api")

    value, grad = jax.jit(jax.value_and_grad(loss))(x)
    expected, expected_grad = NUMPY.value_and_grad(
        np.asarray(x), np.asarray(y), mask=np.asarray(mask)
    )
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-6, atol=1e-12)


# -- against the NumPy backend, on drawn shapes and options ------------------------------------

SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@st.composite
def calls(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(SHAPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(sorted(DTYPES)))

    def broadcastable() -> tuple[int, ...]:
        kept = draw(st.integers(0, len(shape)))
        return tuple(d if draw(st.booleans()) else 1 for d in shape[len(shape) - kept :])

    call: dict[str, Any] = {
        "dtype": dtype,
        "logits": (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 10.0, 60.0]))),
        "targets": rng.choice([0.0, 0.25, 1.0], size=shape),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1, 1.0])),
        "reduction": draw(st.sampled_from(["none", "sum", "mean", "weighted_mean", "batch_mean"])),
    }
    if draw(st.booleans()):
        call["weight"] = rng.uniform(0.0, 3.0, size=broadcastable())
    if draw(st.booleans()):
        call["pos_weight"] = rng.uniform(0.5, 4.0, size=broadcastable())
    if draw(st.booleans()):
        call["mask"] = rng.random(broadcastable()) < 0.7
    # Dask's chunks of the logits and targets: each axis cut at random places.
    call["chunks"] = tuple(_pieces(d, rng) for d in shape)
    return call


def _pieces(size: int, rng: np.random.Generator) -> tuple[int, ...]:
    cuts = sorted({int(c) for c in rng.integers(1, size, size=2)}) if size > 1 else []
    bounds = [0, *cuts, size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def converter(namespace: str, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """NumPy arrays into ``namespace``: array-api-strict, or Dask in ``chunks`` (operands of
    another shape in one chunk)."""
    if namespace == "array_api_strict":
        return strict
    dask = pytest.importorskip("dask.array")

    def to_dask(array: Any) -> Any:
        array = np.asarray(array)
        same = len(chunks) == array.ndim and all(sum(c) == d for c, d in zip(chunks, array.shape))
        return dask.from_array(array, chunks=chunks if same else array.shape)

    return to_dask


def assert_parity(
    got: Any, expected: np.ndarray, dtype: str, what: str, terms: float = 0.0
) -> None:
    """Within 8 eps of the dtype relative to the larger of the two, and a floor of the
    smallest normal number (NumPy's backend is within 4 ULP of exact, as is this one);
    ``terms``: the size of terms that cancel in the value (then 8 eps of it is allowed)."""
    got = numpy_of(got)
    assert got.dtype == np.dtype(dtype), what
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    scale = np.maximum(np.abs(got.astype(np.float64)), np.abs(expected.astype(np.float64)))
    scale = np.maximum(scale, terms)
    error = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    assert np.all(error <= 8 * eps * scale + tiny), f"{what}: {got} != {expected}"


@pytest.mark.parametrize("namespace", ["array_api_strict", "dask"])
@settings(max_examples=40, deadline=None, derandomize=True)
@given(call=calls())
def test_results_agree_with_the_numpy_backend(namespace: str, call: dict[str, Any]) -> None:
    dtype = call.pop("dtype")
    to = converter(namespace, call.pop("chunks"))
    options = dict(call)
    x, y = options.pop("logits").astype(dtype), options.pop("targets").astype(dtype)
    for name in ("weight", "pos_weight"):
        if name in options:
            options[name] = options[name].astype(dtype)
    ours = {k: to(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    if options["reduction"] == "batch_mean" and x.ndim == 0:
        return
    wrt = ("logits", "targets") + tuple(n for n in ("weight", "pos_weight") if n in options)
    loss, grads = bce_core.value_and_grad(to(x), to(y), wrt=wrt, **ours)
    expected_loss, expected_grads = NUMPY.value_and_grad(x, y, wrt=wrt, **options)
    assert_parity(loss, expected_loss, dtype, "loss")
    # d/dweight of a weighted mean is (B - loss) / sum(w), summed over a broadcast weight: terms
    # of the size of the brackets B (at most |x| + log 2) over the weights' sum cancel there.
    weights = np.broadcast_to(options.get("weight", 1.0), x.shape)
    cancelling = (np.abs(x).max(initial=0.0) + 1.0) * x.size / max(np.abs(weights).sum(), 1e-30)
    for name, grad, expected in zip(wrt, grads, expected_grads):
        assert tuple(grad.shape) == expected.shape, name
        terms = cancelling if name == "weight" and options["reduction"] == "weighted_mean" else 0
        assert_parity(grad, expected, dtype, f"d/d{name}", terms)
    probs = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(dtype)
    assert_parity(
        bce_core.binary_cross_entropy(to(probs), to(y), **ours),
        NUMPY.binary_cross_entropy(probs, y, **options),
        dtype,
        "probability form",
    )
    no_smoothing = {k: v for k, v in ours.items() if k in ("weight", "pos_weight")}
    grad, hess = bce_core.grad_hess(to(x), to(y), **no_smoothing)
    expected_grad, expected_hess = NUMPY.grad_hess(
        x, y, **{k: v for k, v in options.items() if k in ("weight", "pos_weight")}
    )
    assert_parity(grad, expected_grad, dtype, "grad_hess gradient")
    assert_parity(hess, expected_hess, dtype, "grad_hess hessian")
