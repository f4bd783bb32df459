"""The public API emits no warning at all when it runs inside a framework's compiler:
``tf.function`` (AutoGraph on, as by default), ``jax.jit`` and ``torch.compile(fullgraph=True)``.

Each case runs in a fresh interpreter, so that the first compiled call is also the one that
builds the registry and loads the backend (where AutoGraph, converting the API, used to walk
into the registry's imports). The child first runs the framework's own loss the same way,
so that the framework's start-up messages are out of the way, then prints a marker and
calls the API: after the marker, neither a Python warning, nor a log record at WARNING or
above (the ``tensorflow`` and ``jax`` loggers, absl, the root logger), nor a line of stderr
that reads as a warning may appear.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MARKER = "--- bce-core calls start here ---"

#: What the child runs before and after the marker, per framework.
PROGRAMS = {
    "tensorflow": """
        import tensorflow as tf

        x = tf.constant(np.linspace(-4, 4, 24, dtype=np.float32).reshape(6, 4))
        y = tf.constant((np.arange(24) % 2).astype(np.float32).reshape(6, 4))
        p = tf.sigmoid(x)

        @tf.function  # AutoGraph on, as a user writes it
        def native(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x))
            return loss, tape.gradient(loss, x)

        native(x, y)
        start()

        @tf.function
        def ours(x, y, p):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = bce_core.binary_cross_entropy_with_logits(x, y)
            value, grad = bce_core.value_and_grad(x, y, reduction="sum")
            probs = bce_core.binary_cross_entropy(p, y)
            return loss, tape.gradient(loss, x), value, grad, probs

        results = ours(x, y, p)
        """,
    "jax": """
        import jax
        import jax.numpy as jnp

        x = jnp.asarray(np.linspace(-4, 4, 24, dtype=np.float32).reshape(6, 4))
        y = jnp.asarray((np.arange(24) % 2).astype(np.float32).reshape(6, 4))
        p = jax.nn.sigmoid(x)
        jax.jit(jax.value_and_grad(lambda x: jnp.mean(jax.nn.softplus(x) - x * y)))(x)
        start()

        loss = jax.jit(bce_core.binary_cross_entropy_with_logits)
        results = [
            loss(x, y),
            jax.jit(jax.value_and_grad(bce_core.binary_cross_entropy_with_logits))(x, y),
            jax.jit(lambda x, y: bce_core.value_and_grad(x, y, reduction="sum"))(x, y),
            jax.jit(bce_core.binary_cross_entropy)(p, y),
        ]
        jax.block_until_ready(results)
        """,
    "torch": """
        import torch

        x = torch.linspace(-4, 4, 24).reshape(6, 4)
        y = (torch.arange(24) % 2).float().reshape(6, 4)
        p = torch.sigmoid(x)
        native = torch.compile(torch.nn.functional.binary_cross_entropy_with_logits, fullgraph=True)
        native(x, y)
        # The registry is built before the first compiled call, as the API's docstring says.
        bce_core.get_backend("torch")
        start()

        def step(x, y, p):
            value, fused = bce_core.value_and_grad(x, y, reduction="sum")
            loss = bce_core.binary_cross_entropy_with_logits(x, y)
            return loss, value, fused, bce_core.binary_cross_entropy(p, y)

        leaf = x.clone().requires_grad_(True)
        loss, *results = torch.compile(step, fullgraph=True)(leaf, y, p)
        loss.backward()  # through the compiled backward
        """,
}

#: The child: records warnings and log records, marks where the API's calls start.
CHILD = """
import json, logging, sys, warnings

import numpy as np

records = []


class Recorder(logging.Handler):
    def emit(self, record):
        if recording:
            records.append(f"{record.name}: {record.getMessage()}")


recording = False
handler = Recorder(logging.WARNING)
for name in ("", "tensorflow", "jax", "absl", "torch"):
    logging.getLogger(name).addHandler(handler)
warnings.simplefilter("always")
caught = warnings.catch_warnings(record=True)
seen = caught.__enter__()


def start():
    global recording
    del seen[:]
    recording = True
    print(MARKER, file=sys.stderr, flush=True)


import bce_core

PROGRAM

recording = False
print(json.dumps(dict(warnings=[str(w.message) for w in seen], records=records)))
"""


def run_child(framework: str, folder: Path) -> tuple[dict, str]:
    """The warnings and log records the child recorded after the marker, and its stderr."""
    # A file, not ``python -c``: AutoGraph leaves code without a source file unconverted.
    script = folder / f"child_{framework}.py"
    script.write_text(
        CHILD.replace("MARKER", repr(MARKER)).replace(
            "PROGRAM", textwrap.dedent(PROGRAMS[framework])
        )
    )
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # TensorFlow's own warnings are not silenced
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert MARKER in done.stderr, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr.split(MARKER, 1)[1]


def warning_lines(stderr: str) -> list[str]:
    """Lines of stderr that report a warning (Python's, absl's "W..." and "WARNING:" lines)."""
    return [
        line
        for line in stderr.splitlines()
        if "warning" in line.lower() or (line[:1] == "W" and line[1:5].isdigit())
    ]


@pytest.mark.parametrize("framework", list(PROGRAMS))
def test_no_warning_inside_the_frameworks_compilers(framework, tmp_path):
    module = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}[framework]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    recorded, stderr = run_child(framework, tmp_path)
    assert recorded["warnings"] == [], recorded["warnings"]
    assert recorded["records"] == [], recorded["records"]
    assert warning_lines(stderr) == [], stderr
