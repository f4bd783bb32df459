"""How the bench hands data to a backend's framework and waits for its results.

A timed call must not return before its work is done: JAX dispatches
asynchronously, and GPU kernels of PyTorch and TensorFlow finish after the
Python call returns. ``Framework.sync`` waits for a result and returns it.

>>> import bce_core
>>> from bce_bench.inputs import make_inputs
>>> framework = framework_for("numpy", bce_core.get_backend("numpy"))
>>> x = framework.tensor(make_inputs(3)[0], "float16")
>>> x.dtype, framework.device(x)
(dtype('float16'), 'cpu')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from bce_core.plugin import Backend

from .inputs import DtypeUnavailable, numpy_dtype

Sync = Callable[[Any], Any]


def _flat(result: Any) -> list[Any]:
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _flat(item)]
    return [result]


@dataclass(frozen=True)
class Framework:
    """A backend together with its framework's ways to cast, to wait and to name a device."""

    name: str
    backend: Backend
    sync: Sync
    #: Casts a native float32 tensor to a dtype by name: the way to bfloat16 without ml_dtypes.
    cast: Callable[[Any, str], Any] | None = None
    device_of: Callable[[Any], str] | None = None

    def tensor(self, array: np.ndarray, dtype: str) -> Any:
        """A native ``dtype`` tensor of ``array`` (float32) on the backend's default device."""
        try:
            host = array.astype(numpy_dtype(dtype))
        except DtypeUnavailable:
            if self.cast is None:
                raise
            return self.cast(self.backend.asarray(array), dtype)
        return self.backend.asarray(host)

    def device(self, tensor: Any) -> str:
        """Where ``tensor`` lives, as the framework names it."""
        device_of = self.device_of or self.backend.device_of
        return str(device_of(tensor))

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A float64 NumPy copy, for comparing results (not timed)."""
        return np.asarray(self.backend.to_numpy(tensor), dtype=np.float64)


class _Parts(NamedTuple):
    sync: Sync
    cast: Callable[[Any, str], Any]
    device_of: Callable[[Any], str]


def _no_wait(result: Any) -> Any:
    return result


def _torch() -> _Parts:
    import torch

    def sync(result: Any) -> Any:
        # CPU kernels finish before the call returns; GPU ones are queued on a stream.
        kinds = {leaf.device.type for leaf in _flat(result) if isinstance(leaf, torch.Tensor)}
        if "cuda" in kinds:
            torch.cuda.synchronize()
        if "mps" in kinds:
            torch.mps.synchronize()
        return result

    return _Parts(
        sync,
        lambda tensor, dtype: tensor.to(getattr(torch, dtype)),
        lambda tensor: str(tensor.device),
    )


def _tensorflow() -> _Parts:
    import tensorflow as tf

    def sync(result: Any) -> Any:
        leaves = _flat(result)
        float(leaves[0])  # the loss, a scalar: copying it to the host waits for it
        for leaf in leaves[1:]:
            if "GPU" in leaf.device:  # on the CPU, eager ops and tf.function calls are synchronous
                float(tf.reshape(leaf, [-1])[-1])
        return result

    return _Parts(
        sync,
        lambda tensor, dtype: tf.cast(tensor, getattr(tf, dtype)),
        lambda tensor: tensor.device.rpartition("device:")[2] or tensor.device,
    )


def _jax() -> _Parts:
    import jax

    return _Parts(
        jax.block_until_ready,
        lambda array, dtype: array.astype(dtype),
        lambda array: ", ".join(sorted(str(d) for d in array.devices())),
    )


def _other(backend: Backend) -> Sync:
    def sync(result: Any) -> Any:
        backend.to_numpy(_flat(result)[0])  # the loss on the host: its work is done
        return result

    return sync


def framework_for(name: str, backend: Backend) -> Framework:
    """The framework adapter of backend ``name`` (imports that framework)."""
    if name == "numpy":
        return Framework(name, backend, _no_wait)
    makers = {"torch": _torch, "tensorflow": _tensorflow, "jax": _jax}
    if name in makers:
        return Framework(name, backend, *makers[name]())
    return Framework(name, backend, _other(backend))
