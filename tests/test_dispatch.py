"""Backend selection: explicit name, array framework, context, default, numpy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import bce_core
import bce_numpy.plugin
from bce_core import dispatch
from bce_core.errors import MixedFrameworksError
from bce_core.plugin import ArrayType, BackendSpec, hookimpl
from bce_core.registry import Registry, set_registry
from bce_numpy.backend import NumpyBackend


class FakeBackend(NumpyBackend):
    """Computes like NumPy but answers to its own names, so tests can see who was picked."""

    def __init__(self, name: str) -> None:
        self.name = name


class FakeTensor:
    """An array type of a framework that is never imported."""

    __module__ = "fakefw.tensor"


class OtherTensor:
    __module__ = "otherfw"


class FakePlugin:
    @hookimpl
    def bce_backends(self) -> list[BackendSpec]:
        return [
            BackendSpec(
                "fake", f"{__name__}:make_fake", array_types=(ArrayType("fakefw", "FakeTensor"),)
            ),
            BackendSpec(
                "other", f"{__name__}:make_other", array_types=(ArrayType("otherfw", None),)
            ),
        ]


def make_fake() -> FakeBackend:
    return FakeBackend("fake")


def make_other() -> FakeBackend:
    return FakeBackend("other")


@pytest.fixture(autouse=True)
def fake_registry() -> Iterator[None]:
    old = set_registry(Registry.from_plugins(bce_numpy.plugin, FakePlugin()))
    saved = dispatch._default_backend
    try:
        yield
    finally:
        set_registry(old)
        dispatch._default_backend = saved


def pick(*arrays: object, backend: str | None = None) -> str:
    return dispatch.resolve_backend(backend, arrays).name


def test_explicit_name_wins_over_everything() -> None:
    with bce_core.use_backend("other"):
        assert pick(FakeTensor(), backend="numpy") == "numpy"


def test_array_framework_wins_over_context_and_default() -> None:
    bce_core.set_default_backend("other")
    with bce_core.use_backend("other"):
        assert pick(FakeTensor(), [1.0]) == "fake"
        assert pick(np.zeros(2)) == "numpy"


def test_subclass_of_an_owned_type_is_detected() -> None:
    class Parameter(FakeTensor):
        __module__ = "somewhere_else"

    assert pick(Parameter()) == "fake"


def test_numpy_arrays_and_numbers_do_not_make_a_call_mixed() -> None:
    assert pick(np.zeros(2), FakeTensor(), 1.0, None) == "fake"


def test_two_frameworks_raise_naming_both_types() -> None:
    with pytest.raises(MixedFrameworksError, match="fakefw.tensor.FakeTensor.*otherfw.OtherTensor"):
        pick(FakeTensor(), OtherTensor())


def test_context_then_default_then_numpy_for_unowned_inputs() -> None:
    assert pick([0.0]) == "numpy"
    bce_core.set_default_backend("other")
    assert pick([0.0]) == "other"
    with bce_core.use_backend("fake"):
        assert pick([0.0]) == "fake"
        with bce_core.use_backend("numpy"):
            assert pick([0.0]) == "numpy"
        assert pick([0.0]) == "fake"
    assert pick([0.0]) == "other"
    bce_core.set_default_backend(None)
    assert pick([0.0]) == "numpy"


def test_set_default_backend_checks_the_name_at_once() -> None:
    with pytest.raises(ValueError, match="Did you mean 'fake'"):
        bce_core.set_default_backend("faek")


def test_backend_object_can_be_passed_directly() -> None:
    backend = FakeBackend("handmade")
    assert pick([0.0], backend=backend) == "handmade"  # type: ignore[arg-type]


def test_use_backend_is_private_to_each_thread() -> None:
    names = ["numpy", "fake", "other"] * 8
    barrier = threading.Barrier(len(names))
    errors: list[str] = []

    def worker(name: str) -> None:
        with bce_core.use_backend(name):
            barrier.wait()  # every thread is inside its own context at once
            for _ in range(200):
                got = pick([0.0])
                if got != name:
                    errors.append(f"{name} saw {got}")
        if pick([0.0]) != "numpy":
            errors.append("context leaked after the block")

    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_use_backend_is_private_to_each_asyncio_task() -> None:
    async def task(name: str) -> list[str]:
        seen = []
        with bce_core.use_backend(name):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.append(pick([0.0]))
        return seen

    async def main() -> list[list[str]]:
        return await asyncio.gather(task("fake"), task("other"), task("numpy"))

    results = asyncio.run(main())
    assert [set(r) for r in results] == [{"fake"}, {"other"}, {"numpy"}]


def test_top_level_functions_dispatch_and_return_numpy() -> None:
    with bce_core.use_backend("fake"):
        loss = bce_core.binary_cross_entropy_with_logits([[9.7], [0.0]], [[0], [1]])
    assert isinstance(loss, np.ndarray)
    assert float(loss) == pytest.approx(5.19660, abs=5e-6)
