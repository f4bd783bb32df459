"""``bce_core.local_denominator`` and ``denominator=``: the shard's share of a global reduction.

Per backend: the local denominators, the call with a shard's own denominator against the plain
call, the zero-denominator rule, the errors; and gradient accumulation over micro-batches of
uneven valid counts against the whole batch (torch and JAX), where each micro-batch's own
mean is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from parallel_data import REDUCTIONS, make_batch, relative_error

import bce_core
from bce_core.dispatch import get_backend

GLOBAL = ("mean", "weighted_mean", "batch_mean")
#: float32 summation in a different order: a few units in the last place.
TOLERANCE = 1e-6

X = np.array([[0.5, -1.0], [2.0, 0.0], [-3.0, 1.5]], np.float32)
Y = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
MASK = np.array([[True, False], [True, True], [False, True]])
WEIGHT = np.array([[0.5], [2.0], [1.5]], np.float32)
#: What each reduction divides by on (X, MASK, WEIGHT): 4 kept, their weights, 3 rows.
EXPECTED = {"mean": 4.0, "weighted_mean": 0.5 + 2.0 + 2.0 + 1.5, "batch_mean": 3.0}


def _native(name: str) -> tuple[Any, Any]:
    """(to the framework, to NumPy) for the backend ``name``."""
    if name == "numpy":
        return np.asarray, np.asarray
    if name == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy, lambda t: t.detach().numpy()
    if name == "array_api":
        strict = pytest.importorskip("array_api_strict")
        return strict.asarray, np.from_dlpack
    if name == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray, np.asarray
    tf = pytest.importorskip("tensorflow")
    return tf.constant, lambda t: t.numpy()


BACKENDS = ["numpy", "torch", "jax", "tensorflow", "array_api"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_denominator(backend: str) -> None:
    to, back = _native(backend)
    for reduction, expected in EXPECTED.items():
        d = bce_core.local_denominator(to(X), reduction=reduction, mask=to(MASK), weight=to(WEIGHT))
        assert type(d) is type(to(X)) or backend == "tensorflow"
        value = back(d)
        assert value.shape == () and value.dtype == np.float32
        assert float(value) == expected, reduction
    # Without a mask: every element; without a weight, weighted_mean counts.
    assert float(back(bce_core.local_denominator(to(X)))) == 6.0
    assert float(back(bce_core.local_denominator(to(X), reduction="weighted_mean"))) == 6.0
    assert float(back(bce_core.local_denominator(to(X[:0]), mask=to(MASK[:0])))) == 0.0


def test_half_inputs_count_in_float32() -> None:
    torch = pytest.importorskip("torch")
    x = torch.zeros(3001, dtype=torch.float16)  # 3001 is not a float16
    d = bce_core.local_denominator(x)
    assert d.dtype == torch.float32 and d.item() == 3001.0
    y = torch.ones(3001, dtype=torch.float16)
    loss = bce_core.binary_cross_entropy_with_logits(x, y, denominator=d)
    assert loss.dtype == torch.float16
    assert loss.item() == bce_core.binary_cross_entropy_with_logits(x, y).item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_own_denominator_is_the_plain_call(backend: str) -> None:
    to, back = _native(backend)
    for reduction in GLOBAL:
        options = {"mask": to(MASK), "weight": to(WEIGHT), "reduction": reduction}
        d = bce_core.local_denominator(to(X), **{k: options[k] for k in options})
        plain = bce_core.binary_cross_entropy_with_logits(to(X), to(Y), **options)
        shard = bce_core.binary_cross_entropy_with_logits(to(X), to(Y), denominator=d, **options)
        assert relative_error(back(shard), back(plain)) < TOLERANCE, reduction
        probs = to(1 / (1 + np.exp(-X)))
        plain = bce_core.binary_cross_entropy(probs, to(Y), **options)
        shard = bce_core.binary_cross_entropy(probs, to(Y), denominator=d, **options)
        assert relative_error(back(shard), back(plain)) < TOLERANCE, reduction
        wrt = ("logits", "targets") if reduction == "weighted_mean" else ("logits", "weight")
        want = bce_core.value_and_grad(to(X), to(Y), wrt=wrt, **options)
        got = bce_core.value_and_grad(to(X), to(Y), wrt=wrt, denominator=d, **options)
        assert relative_error(back(got[0]), back(want[0])) < TOLERANCE, reduction
        for g, h in zip(got[1], want[1]):
            assert relative_error(back(g), back(h)) < TOLERANCE, reduction


def test_gradient_is_the_sums_over_the_denominator() -> None:
    loss, grad = bce_core.value_and_grad(X, Y, mask=MASK, reduction="mean", denominator=8)
    total, summed = bce_core.value_and_grad(X, Y, mask=MASK, reduction="sum")
    assert float(loss) == pytest.approx(float(total) / 8, rel=1e-7)
    np.testing.assert_allclose(grad, summed / 8, rtol=1e-7)
    assert grad.dtype == np.float32 and loss.dtype == np.float32


def test_autodiff_through_denominator() -> None:
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    want = bce_core.value_and_grad(X, Y, mask=MASK, weight=WEIGHT, reduction="mean")[1] * 4 / 10
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    d = torch.tensor(10.0)
    loss = bce_core.binary_cross_entropy_with_logits(
        x,
        torch.from_numpy(Y),
        mask=torch.from_numpy(MASK),
        weight=torch.from_numpy(WEIGHT),
        denominator=d,
    )
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6)

    def shard(x: Any) -> Any:
        return bce_core.binary_cross_entropy_with_logits(
            x, Y, mask=MASK, weight=WEIGHT, denominator=jax.numpy.float32(10.0)
        )

    np.testing.assert_allclose(jax.jit(jax.grad(shard))(X), want, rtol=1e-6)


@pytest.mark.parametrize("zero", [0, 0.0, np.float32(0.0), "array"])
def test_zero_denominator_gives_zero_loss_and_gradient(zero: Any) -> None:
    torch = pytest.importorskip("torch")
    none = np.zeros_like(MASK)
    d = np.asarray(0.0, np.float32) if isinstance(zero, str) else zero
    loss, grad = bce_core.value_and_grad(X, Y, mask=none, denominator=d)
    assert float(loss) == 0.0 and not grad.any() and np.isfinite(grad).all()
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    d = torch.tensor(0.0) if isinstance(zero, str) else zero
    loss = bce_core.binary_cross_entropy_with_logits(
        x,
        torch.from_numpy(Y),
        mask=torch.from_numpy(none),
        reduction="weighted_mean",
        weight=torch.from_numpy(WEIGHT),
        denominator=d,
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_errors() -> None:
    with pytest.raises(
        ValueError, match=r"local_denominator\(reduction='sum'\) has nothing to count"
    ):
        bce_core.local_denominator(X, reduction="sum")
    with pytest.raises(ValueError, match=r"reduction='none'.*drop denominator="):
        bce_core.binary_cross_entropy_with_logits(X, Y, reduction="none", denominator=4)
    with pytest.raises(ValueError, match=r"reduction='sum'.*drop denominator="):
        bce_core.value_and_grad(X, Y, reduction="sum", denominator=4)
    with pytest.raises(ValueError) as from_loss:
        bce_core.binary_cross_entropy_with_logits(X, Y, reduction="meen")
    with pytest.raises(ValueError) as from_denominator:
        bce_core.local_denominator(X, reduction="meen")
    assert str(from_denominator.value) == str(from_loss.value)
    with pytest.raises(ValueError, match="mask shape"):
        bce_core.local_denominator(X, mask=np.ones(3, bool))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        bce_core.local_denominator(X, mask=np.ones(2))
    with pytest.raises(ValueError, match="weight shape"):
        bce_core.local_denominator(X, reduction="weighted_mean", weight=np.ones(3))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            bce_core.binary_cross_entropy_with_logits(X, Y, denominator=bad)
    with pytest.raises(TypeError, match="is a bool"):
        bce_core.binary_cross_entropy_with_logits(X, Y, denominator=True)
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        bce_core.binary_cross_entropy_with_logits(X, Y, denominator=np.ones(1))
    with pytest.raises(TypeError, match="of type str"):
        bce_core.binary_cross_entropy_with_logits(X, Y, denominator="4")
    with pytest.raises(ValueError, match="holds the global loss"):
        bce_core.value_and_grad(
            X, Y, weight=WEIGHT, reduction="weighted_mean", wrt="weight", denominator=4.0
        )
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="'torch' backend's framework"):
        bce_core.binary_cross_entropy_with_logits(X, Y, denominator=torch.tensor(4.0))
    with pytest.raises(ValueError, match="must be 0-d"):
        bce_core.binary_cross_entropy_with_logits(
            torch.from_numpy(X), torch.from_numpy(Y), denominator=torch.ones(1)
        )


def test_a_backend_without_ops_is_refused() -> None:
    class Bare(type(get_backend("numpy"))):  # type: ignore[misc]
        ops = None

    with pytest.raises(TypeError, match="has no 'ops' and 'converter' attributes"):
        bce_core.local_denominator(X, backend=Bare())


# -- gradient accumulation ---------------------------------------------------------------------

#: Four micro-batches: shard 1 entirely masked, shard 2 empty, the others kept unevenly.
MICRO = (5, 3, 0, 6)


def test_accumulation_torch() -> None:
    torch = pytest.importorskip("torch")
    batch = make_batch(MICRO)
    parts = [tuple(torch.from_numpy(a) for a in batch.shard(i)) for i in range(len(MICRO))]
    for reduction in REDUCTIONS:
        w = torch.from_numpy(batch.w0.copy()).requires_grad_(True)
        options = {"reduction": reduction}
        whole = bce_core.binary_cross_entropy_with_logits(
            torch.from_numpy(batch.x) @ w,
            torch.from_numpy(batch.y),
            mask=torch.from_numpy(batch.mask),
            weight=torch.from_numpy(batch.weight),
            **options,
        )
        whole.backward()
        want = w.grad.clone()
        w.grad = None
        if reduction != "sum":  # the recipe: the denominator of every micro-batch, up front
            options["denominator"] = sum(
                bce_core.local_denominator(x @ w, reduction=reduction, mask=m, weight=v)
                for x, _, m, v in parts
            )
        total = 0.0
        for x, y, m, v in parts:
            loss = bce_core.binary_cross_entropy_with_logits(x @ w, y, mask=m, weight=v, **options)
            loss.backward()
            total += loss.item()
        assert relative_error(total, whole.item()) < TOLERANCE, reduction
        assert relative_error(w.grad, want) < TOLERANCE, reduction
        if reduction != "sum":  # each micro-batch's own mean, averaged over the four
            w.grad = None
            for x, y, m, v in parts:
                loss = bce_core.binary_cross_entropy_with_logits(
                    x @ w, y, mask=m, weight=v, reduction=reduction
                )
                (loss / len(parts)).backward()
            assert relative_error(w.grad, want) > 1e-2, reduction


def test_accumulation_jax() -> None:
    jax = pytest.importorskip("jax")
    batch = make_batch(MICRO)
    parts = [batch.shard(i) for i in range(len(MICRO))]

    def loss(w: Any, x: Any, y: Any, m: Any, v: Any, reduction: str, d: Any = None) -> Any:
        return bce_core.binary_cross_entropy_with_logits(
            x @ w, y, mask=m, weight=v, reduction=reduction, denominator=d
        )

    for reduction in GLOBAL:
        want = jax.grad(loss)(batch.w0, batch.x, batch.y, batch.mask, batch.weight, reduction)
        d = sum(
            float(bce_core.local_denominator(y, reduction=reduction, mask=m, weight=v))
            for _, y, m, v in parts  # the targets have the logits' shape
        )
        got = sum(jax.grad(loss)(batch.w0, *part, reduction, d) for part in parts)
        assert relative_error(got, want) < TOLERANCE, reduction


def test_the_example_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "parallel_naive_error.py"
    spec = importlib.util.spec_from_file_location("parallel_naive_error", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 9
    for *_, global_loss, global_grad in rows:
        assert float(global_loss) < TOLERANCE and float(global_grad) < TOLERANCE
    assert max(float(row[2].strip(" %")) for row in rows) > 10.0  # naive is off


def test_torch_modules_take_a_denominator() -> None:
    torch = pytest.importorskip("torch")
    from bce_core.torch import BCELoss, BCEWithLogitsLoss

    x, y, m = torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(MASK)
    w = torch.from_numpy(WEIGHT)
    for module, inputs in ((BCEWithLogitsLoss, x), (BCELoss, torch.sigmoid(x))):
        loss_fn = module(weight=w, reduction="weighted_mean")
        d = bce_core.local_denominator(inputs, reduction="weighted_mean", mask=m, weight=w)
        want = loss_fn(inputs, y, m).item()
        assert loss_fn(inputs, y, m, denominator=d).item() == pytest.approx(want, rel=1e-6)
        assert loss_fn(inputs, y, m, denominator=2 * d).item() == pytest.approx(want / 2, rel=1e-6)
