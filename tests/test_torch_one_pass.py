"""The Torch backend's compiled one-pass path (``bce_torch.fused``), held to the same
spec as its eager Functions: the conformance grid, ULP sweeps against the exact oracle,
autograd (first and second order), the fallback when compiling fails, and no recompile
for a new batch size. The backends here use the path from one element on, so the suite's
small cases go through it.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bce_conformance import oracle  # noqa: E402
from bce_conformance.cases import all_cases  # noqa: E402
from bce_conformance.runner import CaseRunner  # noqa: E402
from bce_torch import fused as compiled  # noqa: E402
from bce_torch.backend import TorchBackend  # noqa: E402

ONE_PASS = TorchBackend(one_pass_min_elements=1)
EAGER = TorchBackend(one_pass_min_elements=None)
ULP_BOUND = 4.0


def _programs() -> int:
    return len(ONE_PASS._programs._programs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conformance_grid_passes_through_the_one_pass_path(dtype: str) -> None:
    runner = CaseRunner(ONE_PASS, "cpu")
    failures = []
    for case in all_cases((dtype,)):
        if case.form != "logits":
            continue
        # The compiled cases of the suite test torch.compile of the whole loss, which
        # traces the eager Functions' ops; here the backend compiles its own kernel.
        case = dataclasses.replace(case, tags=tuple(t for t in case.tags if t != "compile"))
        result = runner.run(case)
        if not result.passed:
            bad = [f"{c.quantity}: {c.detail}" for c in result.comparisons if not c.passed]
            failures.append(f"{case.id}: {result.error or bad}")
    assert not failures, "\n".join(failures)
    assert ONE_PASS._programs.failure is None and _programs() > 0


def _sweep(dtype: type) -> np.ndarray:
    """Logits over every regime: tiny, moderate, the subnormal tails, huge and zero."""
    info = np.finfo(dtype)
    magnitudes = np.concatenate(
        [
            np.geomspace(1e-30, 1e4, 150),
            np.linspace(0.05, 60, 150),
            [
                info.smallest_subnormal,
                info.tiny,
                87.5,
                88.7,
                100.0,
                103.9,
                700.0,
                709.7,
                745.2,
                info.max,
            ],
        ]
    )
    return np.concatenate([magnitudes, -magnitudes, [0.0]]).astype(dtype)


# (targets, weight, pos_weight, label_smoothing)
CONFIGS = [
    (1.0, None, None, 0.0),
    (0.3, None, None, 0.0),
    (0.0, 3.0, 0.4, 0.0),
    (0.85, 1.3, 1.7, 0.1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "y{}-w{}-q{}-ls{}".format(*c))
def test_loss_and_gradients_are_within_4_ulp_of_exact(dtype: type, config: tuple) -> None:
    y, w, q, eps = config
    name = np.dtype(dtype).name
    x = torch.from_numpy(_sweep(dtype))
    full = lambda v: None if v is None else torch.full_like(x, v)  # noqa: E731
    options = dict(weight=full(w), pos_weight=full(q), label_smoothing=eps, reduction="none")
    yd, wd, qd = (float(np.asarray(1.0 if v is None else v, dtype)) for v in (y, w, q))
    exact_loss = [oracle.element_loss(v, yd, wd, qd, eps) for v in x.tolist()]
    exact_grad = [oracle.element_grad(v, yd, wd, qd, eps) for v in x.tolist()]
    hard = eps == 0 and y in (0.0, 1.0)
    references = [None if hard else g[1] for g in exact_grad]  # soft: against the larger term

    loss = ONE_PASS.binary_cross_entropy_with_logits(x, full(y), **options)
    _, vg_grad = ONE_PASS.value_and_grad(x, full(y), **options)
    leaf = x.clone().requires_grad_(True)
    ONE_PASS.binary_cross_entropy_with_logits(leaf, full(y), **options).sum().backward()
    results = {"loss": oracle.ulp_errors(loss.numpy(), exact_loss, name)}
    for label, grad in (("value_and_grad", vg_grad), ("autograd", leaf.grad)):
        results[label] = oracle.ulp_errors(
            grad.numpy(), [g[0] for g in exact_grad], name, references
        )
    for label, ulps in results.items():
        worst = int(np.argmax(ulps))
        assert ulps[worst] <= ULP_BOUND, f"{label}: {ulps[worst]:.2f} ULP at x={x[worst].item()!r}"


def test_infinite_and_nan_logits_follow_the_spec() -> None:
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([inf, -inf, inf, -inf, nan, nan])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    loss = ONE_PASS.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert loss[:4].tolist() == [0.0, 0.0, inf, inf] and torch.isnan(loss[4:]).all()
    _, grad = ONE_PASS.value_and_grad(x, y, reduction="none")
    assert grad[:4].tolist() == [0.0, 0.0, 1.0, -1.0] and torch.isnan(grad[4:]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "batch_mean", "weighted_mean", "none"])
def test_masks_weights_and_reductions_match_the_eager_path(reduction: str) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 50, generator=generator, dtype=torch.float64) * 20
    x[0, :3] = torch.tensor([float("inf"), float("nan"), -float("inf")])  # masked out below
    y = torch.rand(6, 50, generator=generator, dtype=torch.float64)
    w = torch.rand(6, 1, generator=generator, dtype=torch.float64)
    q = torch.rand(50, generator=generator, dtype=torch.float64) * 3
    keep = torch.rand(6, 50, generator=generator) > 0.3
    keep[0, :3] = False
    options = dict(weight=w, pos_weight=q, mask=keep, label_smoothing=0.05, reduction=reduction)
    results = []
    for backend in (ONE_PASS, EAGER):
        leaf = x.clone().requires_grad_(True)
        loss = backend.binary_cross_entropy_with_logits(leaf, y, **options)
        loss.sum().backward()
        results.append((loss.detach(), leaf.grad, *backend.value_and_grad(x, y, **options)))
    for fast, slow in zip(*results):
        torch.testing.assert_close(fast, slow, rtol=1e-13, atol=1e-300)
    assert torch.isfinite(results[0][1]).all() and (results[0][1][0, :3] == 0).all()


def test_zero_denominators_give_zero_loss_and_zero_gradient() -> None:
    x = torch.tensor([float("nan"), 2.0, -3.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    none_kept = torch.zeros(3, dtype=torch.bool)
    loss = ONE_PASS.binary_cross_entropy_with_logits(x, y, mask=none_kept)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.tolist() == [0.0, 0.0, 0.0]
    zero_weights = torch.zeros(3)
    loss, grad = ONE_PASS.value_and_grad(
        x.detach(), y, weight=zero_weights, reduction="weighted_mean"
    )
    assert loss.item() == 0.0 and grad.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_rounded_once(dtype: torch.dtype) -> None:
    x = (torch.randn(300, generator=torch.Generator().manual_seed(5)) * 8).to(dtype)
    y = torch.rand(300, generator=torch.Generator().manual_seed(6)).to(dtype)
    loss, grad = ONE_PASS.value_and_grad(x, y, reduction="none")
    wide_loss, wide_grad = EAGER.value_and_grad(x.float(), y.float(), reduction="none")
    assert loss.dtype == grad.dtype == dtype
    assert torch.equal(loss, wide_loss.to(dtype)) and torch.equal(grad, wide_grad.to(dtype))


def test_second_derivatives_and_a_second_backward_go_through_the_exact_functions() -> None:
    x = torch.linspace(-30, 30, 101, dtype=torch.float64, requires_grad=True)
    y = torch.rand(101, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = ONE_PASS.binary_cross_entropy_with_logits(x, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    s = torch.sigmoid(x.detach())
    # Against the plain formulas, whose own rounding (s - y cancels) is about 1e-16.
    torch.testing.assert_close(grad.detach(), s - y, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(second, s * (1 - s), rtol=1e-13, atol=1e-15)

    leaf = x.detach().clone().requires_grad_(True)
    loss = ONE_PASS.binary_cross_entropy_with_logits(leaf, y)
    loss.backward(retain_graph=True)
    first = leaf.grad.clone()
    leaf.grad = None
    (loss * 3).backward()
    torch.testing.assert_close(leaf.grad, 3 * first, rtol=1e-14, atol=0.0)


def test_a_new_batch_size_reuses_the_compiled_program() -> None:
    from torch._dynamo.utils import counters

    backend = TorchBackend(one_pass_min_elements=1)
    generator = torch.Generator().manual_seed(0)
    backend.value_and_grad(torch.randn(2000, generator=generator), torch.rand(2000))
    graphs = counters["stats"]["unique_graphs"]
    for n in (3000, 45_000):
        loss, grad = backend.value_and_grad(torch.randn(n, generator=generator), torch.rand(n))
        assert grad.shape == (n,)
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(backend._programs._programs) == 1


def test_targets_that_require_grad_take_the_eager_functions() -> None:
    x = torch.tensor([0.5, -1.0])
    y = torch.tensor([0.25, 1.0], requires_grad=True)
    ONE_PASS.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    torch.testing.assert_close(y.grad, -x)  # d/dy [(1 - y) softplus(x) + y softplus(-x)] = -x


def test_a_failed_compile_warns_once_and_computes_eagerly(monkeypatch) -> None:
    def broken_compile(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return fail

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    backend = TorchBackend(one_pass_min_elements=1)
    x, y = torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0])
    with pytest.warns(compiled.CompileFallbackWarning, match="no C.. compiler found"):
        loss = backend.binary_cross_entropy_with_logits(x, y)
    assert "no C++ compiler found" in backend._programs.failure
    loss_again, grad = backend.value_and_grad(x, y)  # no second warning (filterwarnings=error)
    expected, expected_grad = EAGER.value_and_grad(x, y)
    torch.testing.assert_close(loss, expected) and torch.testing.assert_close(loss_again, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_the_environment_variable_turns_compiling_off(monkeypatch) -> None:
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    backend = TorchBackend(one_pass_min_elements=1)
    backend.value_and_grad(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert backend._programs._programs == {}


def test_threads_share_the_programs_and_agree() -> None:
    x = torch.randn(5000, generator=torch.Generator().manual_seed(9))
    y = torch.rand(5000, generator=torch.Generator().manual_seed(10))
    expected = ONE_PASS.value_and_grad(x, y)
    results: list = [None] * 4

    def work(index: int) -> None:
        results[index] = ONE_PASS.value_and_grad(x, y)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for loss, grad in results:
        assert torch.equal(loss, expected[0]) and torch.equal(grad, expected[1])


def test_a_label_smoothing_schedule_compiles_once() -> None:
    # The compiled one-pass kernel takes the smoothing constants as tensors: a schedule of
    # values after a first smoothed call makes no new graph.
    from torch._dynamo.utils import counters

    backend = TorchBackend(one_pass_min_elements=1)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3000, generator=generator), torch.rand(3000, generator=generator)
    backend.value_and_grad(x, y, label_smoothing=0.05)
    backend.binary_cross_entropy_with_logits(x, y, label_smoothing=0.05)
    graphs = counters["stats"]["unique_graphs"]
    programs = len(backend._programs._programs)
    for i in range(20):
        backend.value_and_grad(x, y, label_smoothing=0.01 * (i + 1))
        backend.binary_cross_entropy_with_logits(x, y, label_smoothing=0.01 * (i + 1))
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(backend._programs._programs) == programs
