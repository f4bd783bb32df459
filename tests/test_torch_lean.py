"""The Torch backend's lean path (``bce_torch.lean``): the usual small call, held to the same
spec as the exact Functions. Each test checks that the lean path was the one taken, so a
change that routes the call elsewhere makes it fail rather than pass vacuously.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bce_conformance import oracle  # noqa: E402
from bce_core import reference  # noqa: E402
from bce_torch import lean  # noqa: E402
from bce_torch.backend import TorchBackend  # noqa: E402
from bce_torch.fused import DEFAULT_MIN_ELEMENTS  # noqa: E402

# torch loads its forward-mode decompositions with torch.jit.script, which warns.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"
)

BACKEND = TorchBackend()
ULP_BOUND = 4.0
DTYPES = {"float32": torch.float32, "float64": torch.float64}
REDUCTIONS = ("mean", "sum", "batch_mean", "weighted_mean", "none")


def _sweep(dtype: type) -> np.ndarray:
    """Logits over every regime: tiny, moderate, both sides of softplus's threshold (40),
    the tails where the small side is subnormal, huge, and zero."""
    info = np.finfo(dtype)
    magnitudes = np.concatenate(
        [
            np.geomspace(1e-30, 1e4, 150),
            np.linspace(0.05, 60, 150),
            [info.smallest_subnormal, info.tiny, 20.0, 39.99, 40.0, 40.01, 87.5, 88.7],
            [100.0, 103.9, 700.0, 709.7, 745.2, 1e30, float(info.max)],
        ]
    )
    return np.concatenate([magnitudes, -magnitudes, [0.0]]).astype(dtype)


def _is_lean(loss: torch.Tensor) -> bool:
    return type(loss.grad_fn).__name__ == "LeanLossBackward"


def _assert_lean_within_4_ulp(
    x: torch.Tensor,
    targets: torch.Tensor,
    options: dict,
    exact_loss: list,
    exact_grad: list,
    references: list,
    dtype: str,
) -> None:
    """The unreduced loss, its backward() and value_and_grad on the lean path, each within
    ULP_BOUND of the exact values (the gradient of soft targets against ``references``)."""
    leaf = x.clone().requires_grad_(True)
    loss = BACKEND.binary_cross_entropy_with_logits(leaf, targets, reduction="none", **options)
    assert _is_lean(loss)
    loss.sum().backward()
    _, fused_grad = BACKEND.value_and_grad(x, targets, reduction="none", **options)
    errors = {
        "loss": oracle.ulp_errors(loss.detach().numpy(), exact_loss, dtype),
        "backward": oracle.ulp_errors(
            leaf.grad.numpy(), [g[0] for g in exact_grad], dtype, references
        ),
        "value_and_grad": oracle.ulp_errors(
            fused_grad.numpy(), [g[0] for g in exact_grad], dtype, references
        ),
    }
    for label, ulps in errors.items():
        worst = int(np.argmax(ulps))
        assert ulps[worst] <= ULP_BOUND, f"{label}: {ulps[worst]:.2f} ULP at x={x[worst].item()!r}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("y", [0.0, 1.0, 0.5, 0.3, 0.999, 1e-3])
def test_elements_and_gradients_are_within_4_ulp(dtype: str, y: float) -> None:
    x = torch.from_numpy(_sweep(np.dtype(dtype).type))
    targets = torch.full_like(x, y)
    yd = float(np.asarray(y, dtype))
    exact_loss = [oracle.element_loss(v, yd) for v in x.tolist()]
    exact_grad = [oracle.element_grad(v, yd) for v in x.tolist()]
    # Soft targets: the gradient's one difference is graded against its larger term.
    references = [None if y in (0.0, 1.0) else g[1] for g in exact_grad]

    _assert_lean_within_4_ulp(x, targets, {}, exact_loss, exact_grad, references, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_reduction_matches_the_reference(reduction: str, dtype: str) -> None:
    generator = np.random.default_rng(7)
    x64 = generator.normal(0.0, 4.0, (6, 5))
    y64 = generator.uniform(0.0, 1.0, (6, 5)).round(2)
    x = torch.tensor(x64, dtype=DTYPES[dtype])
    y = torch.tensor(y64, dtype=DTYPES[dtype])
    expected_loss, expected_grad = reference.value_and_grad(
        x.double().numpy(), y.double().numpy(), reduction=reduction
    )
    rtol = 2e-6 if dtype == "float32" else 1e-14

    leaf = x.clone().requires_grad_(True)
    loss = BACKEND.binary_cross_entropy_with_logits(leaf, y, reduction=reduction)
    assert _is_lean(loss) and loss.dtype == x.dtype and loss.shape == np.shape(expected_loss)
    loss.sum().backward()
    fused_loss, fused_grad = BACKEND.value_and_grad(x, y, reduction=reduction)
    with torch.no_grad():
        forward_only = BACKEND.binary_cross_entropy_with_logits(leaf, y, reduction=reduction)
    assert forward_only.grad_fn is None
    for got in (loss.detach(), fused_loss, forward_only):
        np.testing.assert_allclose(got.double().numpy(), expected_loss, rtol=rtol)
    # Soft targets: the gradient's one difference is graded against its larger term.
    sigma = 1 / (1 + np.exp(-x.double().numpy()))
    larger = np.maximum((1 - y64) * sigma, y64 * (1 - sigma))
    larger = larger * np.abs(expected_grad) / np.maximum(np.abs(sigma - y64), 1e-300)
    for got in (leaf.grad, fused_grad):
        error = np.abs(got.double().numpy() - expected_grad)
        assert np.all(error <= 2 * rtol * larger + 1e-300), np.max(error / larger)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(
    ("y", "w", "q", "eps"),
    [
        (1.0, 0.7, 2.5, 0.0),
        (0.0, 3.0, 0.1, 0.0),
        (0.3, 0.25, 4.0, 0.0),
        (1.0, 1.0, 1.0, 0.1),
        (0.0, 1.0, 1.0, 0.05),
        (0.7, 1.5, 3.0, 0.2),
        (1.0, 0.5, 2.0, 1.0),
    ],
)
def test_weights_and_smoothing_elements_and_gradients_are_within_4_ulp(
    dtype: str, y: float, w: float, q: float, eps: float
) -> None:
    sweep = _sweep(np.dtype(dtype).type)
    # Without the largest logits, whose weighted loss overflows (the exact path gives inf).
    x = torch.from_numpy(sweep[np.abs(sweep) < np.finfo(sweep.dtype).max / 16])
    targets = torch.full_like(x, y)
    weight, pos_weight = torch.full_like(x, w), torch.tensor([q], dtype=x.dtype)
    yd, wd, qd = (float(np.asarray(v, dtype)) for v in (y, w, q))
    exact_loss = [oracle.element_loss(v, yd, wd, qd, eps) for v in x.tolist()]
    exact_grad = [oracle.element_grad(v, yd, wd, qd, eps) for v in x.tolist()]
    references = [None if y in (0.0, 1.0) and not eps else g[1] for g in exact_grad]

    options = dict(weight=weight, pos_weight=pos_weight, label_smoothing=eps)
    _assert_lean_within_4_ulp(x, targets, options, exact_loss, exact_grad, references, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("weight_shape", "pos_weight_shape", "mask_shape", "eps"),
    [
        ((6, 1), (5,), None, 0.0),
        ((5,), (), None, 0.1),
        ((6, 5), None, (6, 5), 0.0),
        (None, (1,), (6, 1), 0.2),
        ((6, 1), (5,), (5,), 0.05),
    ],
)
def test_broadcast_weights_and_masks_match_the_reference_on_every_reduction(
    reduction: str,
    weight_shape: tuple[int, ...] | None,
    pos_weight_shape: tuple[int, ...] | None,
    mask_shape: tuple[int, ...] | None,
    eps: float,
) -> None:
    generator = np.random.default_rng(11)
    x64 = generator.normal(0.0, 4.0, (6, 5))
    y64 = generator.uniform(0.0, 1.0, (6, 5)).round(2)
    w64 = None if weight_shape is None else generator.uniform(0.0, 2.0, weight_shape)
    q64 = None if pos_weight_shape is None else generator.uniform(0.5, 3.0, pos_weight_shape)
    keep = None if mask_shape is None else generator.uniform(size=mask_shape) < 0.7
    if keep is not None:  # masked-out elements may hold anything, NaN included
        x64 = np.where(np.broadcast_to(keep, x64.shape), x64, np.nan)
    expected_loss, expected_grad = reference.value_and_grad(
        x64, y64, weight=w64, pos_weight=q64, mask=keep, label_smoothing=eps, reduction=reduction
    )
    as_tensor = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    options = dict(
        weight=as_tensor(w64),
        pos_weight=as_tensor(q64),
        mask=as_tensor(keep),
        label_smoothing=eps,
        reduction=reduction,
    )
    leaf = torch.tensor(x64, requires_grad=True)
    loss = BACKEND.binary_cross_entropy_with_logits(leaf, torch.tensor(y64), **options)
    assert _is_lean(loss)
    loss.sum().backward()
    value, grad = BACKEND.value_and_grad(torch.tensor(x64), torch.tensor(y64), **options)
    for got in (loss.detach(), value):
        np.testing.assert_allclose(got.numpy(), expected_loss, rtol=1e-13)
    for got in (leaf.grad, grad):
        np.testing.assert_allclose(got.numpy(), expected_grad, rtol=1e-12, atol=1e-16)


def test_non_finite_weights_and_zero_weight_sums_take_the_exact_path() -> None:
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    nan, inf = float("nan"), float("inf")
    for options in (
        dict(weight=torch.tensor([inf, 1.0, 1.0])),
        dict(weight=torch.tensor([nan, 1.0, 1.0])),
        dict(pos_weight=torch.tensor([inf])),
        dict(weight=torch.tensor([0.0, 1.0, 1.0]), pos_weight=torch.tensor([inf])),
    ):
        loss = BACKEND.binary_cross_entropy_with_logits(x, y, reduction="none", **options)
        assert not _is_lean(loss)
        expected = reference.binary_cross_entropy_with_logits(
            x.detach().numpy(),
            y.numpy(),
            reduction="none",
            **{k: v.numpy() for k, v in options.items()},
        )
        np.testing.assert_array_equal(loss.detach().numpy(), expected.astype(np.float32))
    zero = torch.zeros(3)
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, weight=zero, reduction="weighted_mean")
    assert not _is_lean(loss) and loss.item() == 0.0
    loss.backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    nothing = torch.zeros(3, dtype=torch.bool)
    for reduction in ("mean", "weighted_mean"):
        loss = BACKEND.binary_cross_entropy_with_logits(x, y, mask=nothing, reduction=reduction)
        assert not _is_lean(loss) and loss.item() == 0.0


def test_a_non_finite_logit_is_recomputed_by_the_exact_path() -> None:
    """(1 - y) softplus(x) at x = inf, y = 1 is 0 * inf in the lean arithmetic; the spec's
    zero coefficient gives 0 there, as the exact path does."""
    x = torch.tensor([float("inf"), float("-inf"), 0.0, 3.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ones = torch.ones(4)
    elements = BACKEND.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert not _is_lean(elements)
    # A weight that autograd differentiates takes the exact path.
    exact = BACKEND.binary_cross_entropy_with_logits(
        x, y, weight=ones.requires_grad_(), reduction="none"
    )
    assert elements.tolist() == exact.tolist()
    assert elements[:2].tolist() == [0.0, 0.0]
    loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    assert not _is_lean(loss) and loss.item() == pytest.approx(exact.mean().item())
    loss.backward()
    assert x.grad.tolist()[:2] == [0.0, 0.0]
    value, grad = BACKEND.value_and_grad(x.detach(), y)
    assert value.item() == loss.item() and grad.tolist() == x.grad.tolist()
    nan = BACKEND.binary_cross_entropy_with_logits(
        torch.tensor([float("nan"), 0.0]), torch.tensor([1.0, 1.0])
    )
    assert torch.isnan(nan)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_derivatives_are_those_of_the_exact_path(reduction: str) -> None:
    x = torch.tensor([-30.0, -2.0, 0.0, 0.5, 25.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.25, 1.0, 0.0], dtype=torch.float64)
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, reduction=reduction)
    assert _is_lean(loss)
    (grad,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    exact = BACKEND.binary_cross_entropy_with_logits(
        x, y, weight=torch.ones_like(y).requires_grad_(), reduction=reduction
    )
    (exact_grad,) = torch.autograd.grad(exact.sum(), x, create_graph=True)
    (exact_second,) = torch.autograd.grad(exact_grad.sum(), x)
    assert grad.tolist() == exact_grad.tolist()
    assert second.tolist() == exact_second.tolist()
    scale = 1 / 5 if reduction == "mean" else 1.0
    sigma = torch.sigmoid(x.detach())
    curvature = sigma * torch.sigmoid(-x.detach())  # not sigma (1 - sigma): that cancels
    np.testing.assert_allclose(second.numpy(), (scale * curvature).numpy(), rtol=1e-12)


def test_backward_twice_with_retain_graph_and_a_scaled_upstream() -> None:
    x = torch.tensor([0.0, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    assert _is_lean(loss)
    (3.0 * loss).backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    _, grad = reference.value_and_grad([0.0, 2.0], [1.0, 0.0])
    np.testing.assert_allclose(first.numpy(), 3 * grad, rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 4 * grad, rtol=1e-6)


def test_other_calls_take_the_exact_path() -> None:
    x = torch.tensor([0.0, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    exact = {
        "weight to differentiate": dict(weight=torch.ones(2, requires_grad=True)),
        "pos_weight to differentiate": dict(pos_weight=torch.ones(2, requires_grad=True)),
        "validate": dict(validate=True),
    }
    for label, options in exact.items():
        assert not _is_lean(BACKEND.binary_cross_entropy_with_logits(x, y, **options)), label
    # Targets of another type are converted first, then take the lean path too: the same
    # values give the same result whatever their type.
    expected = BACKEND.binary_cross_entropy_with_logits(x, y)
    for targets in (y.double(), [1.0, 0.0], y.half(), y.long(), y.bool(), np.array([1, 0])):
        loss = BACKEND.binary_cross_entropy_with_logits(x, targets)
        assert _is_lean(loss) and loss.item() == expected.item()
        _, grad = BACKEND.value_and_grad(x.detach().numpy(), targets)
        assert grad.tolist() == BACKEND.value_and_grad(x.detach(), y)[1].tolist()
    y_leaf = y.clone().requires_grad_(True)
    loss = BACKEND.binary_cross_entropy_with_logits(x, y_leaf)
    assert not _is_lean(loss)
    loss.backward()
    assert y_leaf.grad is not None  # d loss / d targets = -x / n
    np.testing.assert_allclose(y_leaf.grad.numpy(), [0.0, -1.0], atol=1e-7)
    half = BACKEND.binary_cross_entropy_with_logits(x.detach().half().requires_grad_(), y.half())
    assert not _is_lean(half) and half.dtype == torch.float16


def test_torch_func_and_forward_mode_take_the_exact_path() -> None:
    x = torch.tensor([0.0, 2.0])
    y = torch.tensor([1.0, 0.0])

    def loss(z: torch.Tensor) -> torch.Tensor:
        return BACKEND.binary_cross_entropy_with_logits(z, y)

    hessian = torch.func.hessian(loss)(x)
    sigma = torch.sigmoid(x)
    np.testing.assert_allclose(
        torch.diag(hessian).numpy(), (sigma * (1 - sigma) / 2).numpy(), rtol=1e-6
    )
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones(2))
        tangent = torch.autograd.forward_ad.unpack_dual(loss(dual)).tangent
    _, grad = reference.value_and_grad([0.0, 2.0], [1.0, 0.0])
    assert tangent.item() == pytest.approx(float(np.sum(grad)), rel=1e-6)


@pytest.mark.parametrize("size", [DEFAULT_MIN_ELEMENTS - 1, DEFAULT_MIN_ELEMENTS])
def test_both_sides_of_the_one_pass_threshold(size: int) -> None:
    generator = np.random.default_rng(size)
    x64 = generator.normal(0.0, 5.0, size)
    y64 = (generator.uniform(size=size) < 0.5).astype(np.float64)
    leaf = torch.tensor(x64, dtype=torch.float32, requires_grad=True)
    loss = BACKEND.binary_cross_entropy_with_logits(leaf, torch.tensor(y64, dtype=torch.float32))
    assert _is_lean(loss) == (size < DEFAULT_MIN_ELEMENTS)
    assert BACKEND.size_thresholds("cpu") == (DEFAULT_MIN_ELEMENTS,)
    loss.backward()
    expected_loss, expected_grad = reference.value_and_grad(
        leaf.detach().double().numpy(), y64, reduction="mean"
    )
    assert loss.item() == pytest.approx(float(expected_loss), rel=1e-6)
    np.testing.assert_allclose(leaf.grad.double().numpy(), expected_grad, rtol=1e-5, atol=1e-12)


def test_the_callers_tensors_are_left_alone_and_in_place_edits_are_caught() -> None:
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    before = (x.detach().clone(), y.clone())
    loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    loss.backward()
    assert torch.equal(x.detach(), before[0]) and torch.equal(y, before[1])
    loss = BACKEND.binary_cross_entropy_with_logits(x, y)
    y.add_(0.0)  # the saved targets changed: autograd must refuse, not use stale values
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_lean_applies_is_strict_about_layout() -> None:
    x = torch.zeros(3)
    assert lean.applies(x, torch.ones(3), "mean")
    assert not lean.applies(x, torch.ones(3, dtype=torch.float64), "mean")
    assert not lean.applies(x, torch.ones(1), "mean")
    assert not lean.applies(torch.zeros(0), torch.ones(0), "mean")
    assert not lean.applies(torch.zeros(()), torch.ones(()), "batch_mean")
    assert not lean.applies(x, torch.ones(3), "median")
