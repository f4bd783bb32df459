"""Measure bce-core's backends and each framework's built-in loss against the exact value.

Every implementation gets the same grid of logits, targets and pos_weight, in
float32 and float64. Each is compared elementwise with the mpmath oracle,
which prints the worst ULP error of the loss and of d loss / d logits, and
counts the cases that give NaN or inf where the exact value is finite. With
``--write-readme`` the table replaces the section between the
``<!-- compare:begin -->`` and ``<!-- compare:end -->`` markers in README.md.

    python tools/compare_frameworks.py [--write-readme] [--points 400]

Frameworks that are not installed are skipped and listed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # JAX computes float64 only with x64 on

import bce_core  # noqa: E402
from bce_conformance import oracle  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"

# An implementation maps (x, y, q) float arrays of one dtype to (loss, d loss / d x) elementwise.
Implementation = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Row:
    name: str
    dtype: str
    worst_loss: float
    worst_grad: float
    nonfinite: int
    examples: str


def grid(dtype: str, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits x targets x pos_weight: a dense sweep, the tails, the extremes and +-inf."""
    largest = float(np.finfo(dtype).max)
    magnitudes = np.concatenate([np.geomspace(1e-6, 1e4, points), [20.0, 50.0, 100.0, largest]])
    logits = np.concatenate([-magnitudes[::-1], [0.0], magnitudes, [np.inf, -np.inf]])
    rows = [(t, q) for t in (0.0, 1.0, 0.3) for q in (1.0, 2.0)]
    x = np.tile(logits, len(rows))
    y = np.repeat([t for t, _ in rows], logits.size)
    q = np.repeat([q for _, q in rows], logits.size)
    return x.astype(dtype), y.astype(dtype), q.astype(dtype)


# -- bce-core -----------------------------------------------------------------


def ours(name: str, autodiff: bool) -> Implementation:
    backend = bce_core.get_backend(name)

    def run(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        args = [backend.asarray(a) for a in (x, y, q)]
        options = dict(pos_weight=args[2], reduction="none")
        loss = backend.binary_cross_entropy_with_logits(args[0], args[1], **options)
        if autodiff:
            _, (grad,) = backend.autodiff_value_and_grad(
                args[0], args[1], wrt=("logits",), **options
            )
        else:
            _, grad = backend.value_and_grad(args[0], args[1], **options)
        return backend.to_numpy(loss), backend.to_numpy(grad)

    return run


# -- the frameworks' own losses -----------------------------------------------


def torch_native(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    tx = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(y), pos_weight=torch.tensor(q), reduction="none"
    )
    (grad,) = torch.autograd.grad(loss.sum(), tx)
    return loss.detach().numpy(), grad.numpy()


def tensorflow_native(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    tx = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tx)
        loss = tf.nn.weighted_cross_entropy_with_logits(
            labels=tf.constant(y), logits=tx, pos_weight=tf.constant(q)
        )
    return loss.numpy(), tape.gradient(loss, tx).numpy()


def optax_native(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import jax
    import jax.numpy as jnp
    import optax

    def element(xi, yi, qi):
        # optax has no pos_weight: weight its two terms as the spec does.
        positive = optax.sigmoid_binary_cross_entropy(xi, jnp.ones_like(yi))
        negative = optax.sigmoid_binary_cross_entropy(xi, jnp.zeros_like(yi))
        return qi * yi * positive + (1 - yi) * negative

    loss = element(jnp.asarray(x), jnp.asarray(y), jnp.asarray(q))
    grad = jax.grad(lambda v: element(v, jnp.asarray(y), jnp.asarray(q)).sum())(jnp.asarray(x))
    return np.asarray(loss), np.asarray(grad)


def keras_native(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import keras
    import tensorflow as tf

    tx = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tx)
        # keras.ops has no pos_weight: weight the two terms as the spec does.
        positive = keras.ops.binary_crossentropy(tf.ones_like(tx), tx, from_logits=True)
        negative = keras.ops.binary_crossentropy(tf.zeros_like(tx), tx, from_logits=True)
        loss = q * y * positive + (1 - y) * negative
    return np.asarray(loss), tape.gradient(loss, tx).numpy()


def implementations() -> tuple[dict[str, Implementation], list[str]]:
    found: dict[str, Implementation] = {}
    missing = []
    for info in bce_core.available_backends():
        if info.status != "ok":
            missing.append(f"bce-core {info.name} ({info.status})")
            continue
        found[f"bce-core {info.name}"] = ours(info.name, autodiff=False)
        if hasattr(bce_core.get_backend(info.name), "autodiff_value_and_grad"):
            found[f"bce-core {info.name} (autodiff)"] = ours(info.name, autodiff=True)
    natives = {
        "torch": ("PyTorch binary_cross_entropy_with_logits", torch_native),
        "tensorflow": ("TensorFlow weighted_cross_entropy_with_logits", tensorflow_native),
        "optax": ("optax sigmoid_binary_cross_entropy", optax_native),
        "keras": ("Keras 3 ops.binary_crossentropy (TensorFlow)", keras_native),
    }
    for module, (label, function) in natives.items():
        needs = ("keras", "tensorflow") if module == "keras" else (module,)
        if all(importlib.util.find_spec(m) for m in needs):
            found[label] = function
        else:
            missing.append(label)
    return found, missing


# -- measuring ----------------------------------------------------------------


def exact(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> tuple[list, list, list]:
    losses, grads, scales = [], [], []
    for xi, yi, qi in zip(x.tolist(), y.tolist(), q.tolist()):
        losses.append(oracle.element_loss(xi, yi, 1.0, qi))
        grad, larger = oracle.element_grad(xi, yi, 1.0, qi)
        grads.append(grad)
        # Hard targets: error relative to the exact value; soft: to the larger term.
        scales.append(None if yi in (0.0, 1.0) else larger)
    return losses, grads, scales


def measure(
    name: str,
    function: Implementation,
    dtype: str,
    x: np.ndarray,
    y: np.ndarray,
    q: np.ndarray,
    expected: tuple[list, list, list],
) -> Row:
    losses, grads, scales = expected
    with np.errstate(all="ignore"):
        loss, grad = function(x, y, q)
    loss_ulps = oracle.ulp_errors(loss, losses, dtype)
    grad_ulps = oracle.ulp_errors(grad, grads, dtype, scales)
    # ulp_error is inf exactly when a result is NaN or inf where the exact value is not (or the
    # reverse); those are counted, and the ULP columns cover the rest.
    bad = np.isinf(loss_ulps) | np.isinf(grad_ulps)
    examples = sorted({f"x={x[i]:g} y={y[i]:g} q={q[i]:g}" for i in np.flatnonzero(bad)})[:3]
    return Row(
        name,
        dtype,
        float(np.max(np.where(np.isinf(loss_ulps), 0, loss_ulps))),
        float(np.max(np.where(np.isinf(grad_ulps), 0, grad_ulps))),
        int(bad.sum()),
        "; ".join(examples),
    )


def fmt(ulps: float) -> str:
    if not np.isfinite(ulps):
        return "inf"
    return f"{ulps:.1f}" if ulps < 1000 else f"{ulps:.2e}"


def table(rows: list[Row], missing: list[str], seconds: float, points: int) -> str:
    lines = [
        f"Measured by `python tools/compare_frameworks.py --write-readme` on {platform.machine()} "
        f"Linux, Python {platform.python_version()}, in {seconds:.0f} s. The grid is "
        f"{2 * points + 7} logits from -max to +max, including ±20, ±50, ±100 and ±inf, "
        "× targets 0, 1 and 0.3 × pos_weight 1 and 2. The table gives the worst error in ULP "
        "against the exact mpmath value. For soft targets the gradient error is measured "
        "against its larger term. The last column counts results that are NaN or inf where "
        "the exact value is finite (or finite where it is infinite).",
        "",
        "| implementation | dtype | loss (ULP) | gradient (ULP) | wrong NaN/inf | e.g. |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.dtype} | {fmt(row.worst_loss)} | "
            f"{fmt(row.worst_grad)} | {row.nonfinite} | {row.examples} |"
        )
    if missing:
        lines += ["", "Not measured (not installed): " + ", ".join(missing) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=300, help="logits per sign (default 300)")
    parser.add_argument(
        "--write-readme", action="store_true", help="replace the comparison section of README.md"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    found, missing = implementations()
    rows = []
    for dtype in ("float32", "float64"):
        x, y, q = grid(dtype, args.points)
        expected = exact(x, y, q)
        for name, function in found.items():
            print(f"  {name} {dtype}", file=sys.stderr)
            try:
                rows.append(measure(name, function, dtype, x, y, q, expected))
            except Exception as exc:  # report, keep measuring the others
                rows.append(
                    Row(name, dtype, np.inf, np.inf, -1, f"raised {type(exc).__name__}: {exc}")
                )
    text = table(rows, missing, time.perf_counter() - start, args.points)
    print(text)
    if args.write_readme:
        readme = README.read_text()
        if BEGIN not in readme or END not in readme:
            print(f"README.md lacks the {BEGIN} ... {END} markers", file=sys.stderr)
            return 1
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", readme))
        print(f"updated {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
