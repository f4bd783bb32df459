"""The Torch backend: the float64 reference, the exact oracle, torch's own autodiff, and errors.

Accuracy (ULP against mpmath) is measured for the forward loss, ``value_and_grad``
and the gradient that torch.autograd gives through the loss; parity with the
reference covers every option, reduction, argument and dtype, eager and under
torch.compile(fullgraph=True); first and second derivatives go through
torch.autograd, torch.func and the backend's own methods. GPU cases run on every
CUDA device the backend lists and are skipped where there is none.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import bce_core  # noqa: E402
from bce_conformance import oracle  # noqa: E402
from bce_conformance.cases import ERROR_CASES, all_cases  # noqa: E402
from bce_conformance.runner import CaseRunner  # noqa: E402
from bce_core import reference  # noqa: E402
from bce_core.plugin import AutodiffBackend, Backend  # noqa: E402
from bce_core.registry import get_registry  # noqa: E402
from bce_torch import backend as backend_module  # noqa: E402
from bce_torch.backend import TorchBackend  # noqa: E402

# torch loads its forward-mode decompositions with torch.jit.script, which warns.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"
)

ULP_BOUND = 4.0
BACKEND = TorchBackend()
FLOATS = {"float32": torch.float32, "float64": torch.float64}
ALL_FLOATS = {**FLOATS, "float16": torch.float16, "bfloat16": torch.bfloat16}
NO_GPU = pytest.param(
    "cuda:0",
    marks=pytest.mark.skip(
        reason="no GPU: torch sees no usable CUDA or MPS device on this machine"
    ),
)
GPUS = [d for d in BACKEND.devices() if d != "cpu"] or [NO_GPU]
DEVICES = ["cpu", *GPUS]
ARGUMENTS = ("logits", "targets", "weight", "pos_weight")


def t(values, dtype=torch.float64, device="cpu"):
    return torch.tensor(values, dtype=dtype, device=device)


def numpy(value):
    return BACKEND.to_numpy(value).astype(np.float64)


# -- registration and dispatch --------------------------------------------------------


def test_dispatch_picks_torch_from_the_tensor_type_including_parameters() -> None:
    registry = get_registry()
    assert registry.owner_of(torch.Tensor) == "torch"
    assert registry.owner_of(torch.nn.Parameter) == "torch"
    assert isinstance(bce_core.get_backend("torch"), AutodiffBackend)
    assert isinstance(BACKEND, Backend)

    logits = torch.nn.Parameter(t([[9.7], [0.0]], torch.float32))
    loss = bce_core.binary_cross_entropy_with_logits(logits, np.array([[0.0], [1.0]]))
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(5.196603, rel=1e-6)
    loss.backward()
    _, expected = reference.value_and_grad([[9.7], [0.0]], [[0.0], [1.0]])
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-6)

    value, grad = bce_core.value_and_grad(t([0.0, 0.0]), t([1.0, 0.0]), reduction="mean")
    assert isinstance(grad, torch.Tensor) and grad.tolist() == [-0.25, 0.25]
    g, h = bce_core.grad_hess(t([0.0, 2.0]), [1, 0])
    assert g.tolist() == pytest.approx([-0.5, 0.8807970779778823], rel=1e-15)
    assert h.tolist() == pytest.approx([0.25, 0.10499358540350662], rel=1e-15)
    probs_loss = bce_core.binary_cross_entropy(t([0.9, 0.2], torch.float32), [1, 0])
    assert probs_loss.dtype == torch.float32
    assert probs_loss.item() == pytest.approx(0.164252, rel=1e-5)


# -- accuracy against the exact oracle --------------------------------------------------


def sweep(dtype: type) -> np.ndarray:
    """Logits from -1e4 to 1e4: tiny values, subnormals, the tails where exp(-|x|) is
    subnormal, the largest finite values and zero."""
    info = np.finfo(dtype)
    magnitudes = np.concatenate(
        [
            np.geomspace(1e-30, 1e4, 200),
            np.linspace(0.05, 60, 200),
            [
                info.smallest_subnormal,
                info.tiny,
                1e-300 if dtype == np.float64 else 1e-40,
                20.0,
                50.0,
                87.5,
                88.7,
                100.0,
                103.9,
                700.0,
                709.7,
                745.2,
                1e4,
                info.max,
            ],
        ]
    )
    return np.concatenate([magnitudes, -magnitudes, [0.0]]).astype(dtype)


# (targets, weight, pos_weight, label_smoothing)
CONFIGS = [
    (0.0, 1.0, 1.0, 0.0),
    (1.0, 1.0, 1.0, 0.0),
    (0.3, 1.0, 1.0, 0.0),
    (1.0, 0.7, 2.5, 0.0),
    (0.0, 3.0, 0.4, 0.0),
    (0.85, 1.3, 1.7, 0.1),
    (1.0, 1.0, 1.0, 0.2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "y{}-w{}-q{}-ls{}".format(*c))
def test_loss_and_every_gradient_path_are_within_4_ulp(dtype: type, config: tuple) -> None:
    y, w, q, eps = config
    name = np.dtype(dtype).name
    x = torch.from_numpy(sweep(dtype))
    full = lambda v: torch.full_like(x, v)  # noqa: E731
    options = dict(weight=full(w), pos_weight=full(q), label_smoothing=eps, reduction="none")
    yd, wd, qd = (float(np.asarray(v, dtype)) for v in (y, w, q))
    exact_loss = [oracle.element_loss(float(v), yd, wd, qd, eps) for v in x.tolist()]
    exact_grad = [oracle.element_grad(float(v), yd, wd, qd, eps) for v in x.tolist()]
    hard = eps == 0 and y in (0.0, 1.0)
    # Soft targets: the gradient's error is measured against its larger term.
    references = [None if hard else g[1] for g in exact_grad]

    loss = BACKEND.binary_cross_entropy_with_logits(x, full(y), **options)
    _, vg_grad = BACKEND.value_and_grad(x, full(y), **options)
    leaf = x.clone().requires_grad_(True)
    BACKEND.binary_cross_entropy_with_logits(leaf, full(y), **options).sum().backward()
    gh_grad, _ = BACKEND.grad_hess(x, full(y), weight=full(w), pos_weight=full(q))
    results = {"loss": oracle.ulp_errors(loss.numpy(), exact_loss, name)}
    for label, grad in (
        ("value_and_grad", vg_grad),
        ("autograd", leaf.grad),
        ("grad_hess", gh_grad),
    ):
        if label == "grad_hess" and eps:
            continue
        results[label] = oracle.ulp_errors(
            grad.numpy(), [g[0] for g in exact_grad], name, references
        )
    for label, ulps in results.items():
        worst = int(np.argmax(ulps))
        assert ulps[worst] <= ULP_BOUND, f"{label}: {ulps[worst]:.2f} ULP at x={x[worst].item()!r}"


# -- parity with the reference: the conformance grid and random cases -------------------


@pytest.mark.parametrize("dtype", list(ALL_FLOATS))
def test_conformance_grid_passes_eagerly(dtype: str) -> None:
    """Loss, value_and_grad, grad_hess, autograd (first and second order) and the
    probability form on every case of the suite (compiled runs are tested below)."""
    runner = CaseRunner(BACKEND, "cpu")
    failures = []
    for case in all_cases((dtype,)):
        result = runner.run(_eager(case))
        if not result.passed:
            bad = [f"{c.quantity}: {c.detail}" for c in result.comparisons if not c.passed]
            failures.append(f"{case.id}: {result.error or bad}")
    assert not failures, "\n".join(failures)


def _eager(case):
    return dataclasses.replace(case, tags=tuple(tag for tag in case.tags if tag != "compile"))


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.name)
def test_conformance_error_cases_raise(case) -> None:
    result = CaseRunner(BACKEND, "cpu").run_error(case)
    assert result.passed, result.comparisons


def _broadcast_shape(shape: tuple[int, ...], draw) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape`` without enlarging it."""
    keep = draw(st.integers(0, len(shape)))
    tail = shape[len(shape) - keep :]
    return tuple(d if draw(st.booleans()) else 1 for d in tail)


@st.composite
def calls(draw):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 8.0, 40.0]))
    x = np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)
    kind = draw(st.sampled_from(["hard", "soft", "bool"]))
    y = rng.integers(0, 2, shape)
    y = np.asarray(
        y.astype(bool)
        if kind == "bool"
        else (y.astype(dtype) if kind == "hard" else rng.uniform(0, 1, shape).astype(dtype))
    )
    options = {
        "reduction": draw(st.sampled_from(bce_core.spec.REDUCTIONS)),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1])),
    }
    if options["reduction"] == "batch_mean" and not shape:
        options["reduction"] = "sum"
    for name, low, high in (("weight", 0.0, 2.0), ("pos_weight", 0.5, 3.0)):
        if draw(st.booleans()):
            options[name] = rng.uniform(low, high, _broadcast_shape(shape, draw)).astype(dtype)
    if draw(st.booleans()):
        options["mask"] = rng.uniform(size=_broadcast_shape(shape, draw)) < 0.6
    return x, y, options


def _assert_close(got, expected, dtype: str, scale: float = 1.0) -> None:
    rtol, atol = (2e-5, 2e-6) if dtype == "float32" else (1e-12, 1e-13)
    np.testing.assert_allclose(
        numpy(got), np.asarray(expected, np.float64), rtol=rtol, atol=atol * scale
    )


def _gradient_scale(name: str, x: np.ndarray, options: dict, scale: float) -> float:
    """The absolute scale of a gradient's rounding: that of the loss, except for the weight's
    under "weighted_mean", (B_i - loss) / sum(w), where the loss's own rounding in the
    input's dtype is divided by the kept weights' sum (per element the weight is broadcast
    over)."""
    if name != "weight" or options.get("reduction") != "weighted_mean":
        return scale
    keep = np.broadcast_to(options.get("mask", True), x.shape)
    total = float(np.sum(np.where(keep, np.broadcast_to(options["weight"], x.shape), 0.0)))
    return scale * max(1.0, keep.sum() / abs(total)) if total else scale


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
@example(  # one element: the weight's gradient cancels to 0, less the loss's rounding / w
    (
        np.array(-1.6048683, np.float32),
        np.array(1.0, np.float32),
        {
            "reduction": "weighted_mean",
            "label_smoothing": 0.0,
            "weight": np.array(0.02040829, np.float32),
        },
    )
)
def test_random_calls_match_the_reference_in_every_path(call) -> None:
    x, y, options = call
    dtype = x.dtype.name
    native = {
        k: torch.from_numpy(np.asarray(v))
        for k, v in options.items()
        if k in ("weight", "pos_weight", "mask")
    }
    rest = {k: v for k, v in options.items() if k not in native}
    wrt = tuple(["logits", "targets"] + [n for n in ("weight", "pos_weight") if n in native])
    scale = 1.0 + float(np.abs(x).max(initial=0.0))
    expected_loss, expected_grads = reference.value_and_grad(x, y, wrt=wrt, **options)

    loss = BACKEND.binary_cross_entropy_with_logits(torch.from_numpy(x), y, **native, **rest)
    _assert_close(loss, expected_loss, dtype, scale)
    loss, grads = BACKEND.value_and_grad(torch.from_numpy(x), y, wrt=wrt, **native, **rest)
    _assert_close(loss, expected_loss, dtype, scale)
    scales = [_gradient_scale(name, x, options, scale) for name in wrt]
    for grad, expected, grad_scale in zip(grads, expected_grads, scales):
        assert grad.shape == expected.shape and grad.dtype == FLOATS[dtype]
        _assert_close(grad, expected, dtype, grad_scale)
    targets = torch.from_numpy(y.astype(dtype))  # differentiable targets must be floating
    loss, grads = BACKEND.autodiff_value_and_grad(
        torch.from_numpy(x), targets, wrt=wrt, **native, **rest
    )
    _assert_close(loss, expected_loss, dtype, scale)
    for grad, expected, grad_scale in zip(grads, expected_grads, scales):
        assert grad.shape == expected.shape
        _assert_close(grad, expected, dtype, grad_scale)


# -- torch's own autodiff: every argument, second order, torch.func --------------------


@pytest.mark.parametrize("reduction", bce_core.spec.REDUCTIONS)
def test_backward_gives_the_four_gradients(reduction: str) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 4, (5, 3)), rng.uniform(0, 1, (5, 3))
    w, q, m = rng.uniform(0.2, 2, (5, 1)), rng.uniform(0.5, 3, (3,)), rng.uniform(size=(5, 3)) < 0.7
    leaves = [torch.tensor(v, requires_grad=True) for v in (x, y, w, q)]
    loss = BACKEND.binary_cross_entropy_with_logits(
        leaves[0],
        leaves[1],
        weight=leaves[2],
        pos_weight=leaves[3],
        mask=torch.from_numpy(m),
        label_smoothing=0.05,
        reduction=reduction,
    )
    loss.sum().backward()
    expected_loss, expected = reference.value_and_grad(
        x,
        y,
        weight=w,
        pos_weight=q,
        mask=m,
        label_smoothing=0.05,
        reduction=reduction,
        wrt=ARGUMENTS,
    )
    np.testing.assert_allclose(loss.detach().numpy(), expected_loss, rtol=1e-13)
    for leaf, grad in zip(leaves, expected):
        np.testing.assert_allclose(leaf.grad.numpy(), grad, rtol=1e-12, atol=1e-15)


def test_second_derivative_is_the_spec_hessian_including_at_zero() -> None:
    x = t([0.0, 1e-30, 2.0, -3.0, 30.0, -50.0, 700.0])
    y, w, q = t([1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 0.0]), t([1.5, 0.5, 2.0, 1.0, 3.0, 1.0, 2.0]), t(2.0)
    _, hess = reference.grad_hess(x.numpy(), y.numpy(), weight=w.numpy(), pos_weight=q.numpy())
    second = BACKEND.autodiff_second_derivative(x, y, weight=w, pos_weight=q, reduction="sum")
    np.testing.assert_allclose(second.numpy(), hess, rtol=1e-14)
    assert second[0].item() == pytest.approx(1.5 * 1.0 * 2.0 * 0.25)  # w (1 + (q-1) y) / 4 at 0
    loss_sum = lambda z: BACKEND.binary_cross_entropy_with_logits(  # noqa: E731
        z, y, weight=w, pos_weight=q, reduction="sum"
    )
    np.testing.assert_allclose(torch.func.hessian(loss_sum)(x).diagonal().numpy(), hess, rtol=1e-14)
    nested = torch.func.grad(lambda z: torch.func.grad(loss_sum)(z).sum())(x)
    np.testing.assert_allclose(nested.numpy(), hess, rtol=1e-14)


def test_mixed_second_derivatives_match_differences_of_the_reference_gradient() -> None:
    """d/dv of d loss/du for every pair of (logits, targets, weight, pos_weight)."""
    rng = np.random.default_rng(5)
    values = [
        rng.normal(0, 3, 4),
        rng.uniform(0, 1, 4),
        rng.uniform(0.5, 2, 4),
        rng.uniform(0.5, 2, 4),
    ]
    options = dict(label_smoothing=0.1, reduction="mean")

    def loss(x, y, w, q):
        return BACKEND.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=q, **options)

    hessian = torch.func.hessian(loss, argnums=(0, 1, 2, 3))(*(torch.tensor(v) for v in values))
    step = 1e-6
    for j in range(4):
        up = [v.copy() for v in values]
        down = [v.copy() for v in values]
        up[j][2] += step
        down[j][2] -= step
        grads_up = reference.value_and_grad(
            *up[:2], weight=up[2], pos_weight=up[3], wrt=ARGUMENTS, **options
        )[1]
        grads_down = reference.value_and_grad(
            *down[:2], weight=down[2], pos_weight=down[3], wrt=ARGUMENTS, **options
        )[1]
        for i in range(4):
            difference = (grads_up[i] - grads_down[i]) / (2 * step)
            np.testing.assert_allclose(
                hessian[i][j][:, 2].numpy(),
                difference,
                atol=1e-7,
                err_msg=f"d2 loss / d{ARGUMENTS[i]} d{ARGUMENTS[j]}",
            )


def test_torch_func_grad_vmap_and_jvp() -> None:
    x, y = t([[0.0, 2.0, -3.0], [40.0, -1.0, 0.5]]), t([[1.0, 0.0, 0.3], [1.0, 0.0, 1.0]])
    per_row = torch.func.vmap(lambda a, b: BACKEND.binary_cross_entropy_with_logits(a, b))(x, y)
    expected = [
        float(reference.binary_cross_entropy_with_logits(a, b))
        for a, b in zip(x.numpy(), y.numpy())
    ]
    np.testing.assert_allclose(per_row.numpy(), expected, rtol=1e-15)
    grad = torch.func.grad(lambda a: BACKEND.binary_cross_entropy_with_logits(a, y))(x)
    np.testing.assert_allclose(
        grad.numpy(), reference.value_and_grad(x.numpy(), y.numpy())[1], rtol=1e-15
    )
    tangent = torch.ones_like(x)
    _, directional = torch.func.jvp(
        lambda a: BACKEND.binary_cross_entropy_with_logits(a, y, reduction="sum"), (x,), (tangent,)
    )
    assert directional.item() == pytest.approx(grad.sum().item() * x.numel(), rel=1e-14)


def test_probability_form_gradients_are_pytorchs_formula() -> None:
    p = t([0.0, 1e-30, 0.25, 0.5, 1.0 - 1e-7, 1.0])
    y = t([1.0, 1.0, 0.3, 0.0, 0.0, 0.0])
    loss, grad = BACKEND.autodiff_probs_grad(p, y, reduction="none", label_smoothing=0.1)
    np.testing.assert_allclose(
        grad.numpy(), reference.probs_grad(p.numpy(), y.numpy(), label_smoothing=0.1), rtol=1e-14
    )
    np.testing.assert_allclose(
        loss.numpy(),
        reference.binary_cross_entropy(p.numpy(), y.numpy(), reduction="none", label_smoothing=0.1),
        rtol=1e-15,
    )
    leaves = [
        t(v, torch.float64).requires_grad_(True)
        for v in ([0.3, 0.9], [0.2, 1.0], [1.5, 0.5], [2.0, 3.0])
    ]
    BACKEND.binary_cross_entropy(
        leaves[0], leaves[1], weight=leaves[2], pos_weight=leaves[3], reduction="sum"
    ).backward()
    grads = [leaf.grad.tolist() for leaf in leaves]
    # d/dp = w (p (1 + (q-1) y) - q y) / (p (1 - p)); d/dy = -w (q log p - log(1-p)); ...
    assert grads[0] == pytest.approx([1.5 * (0.3 * 1.2 - 0.4) / 0.21, 0.5 * (0.9 * 3 - 3) / 0.09])
    assert grads[1] == pytest.approx(
        [-1.5 * (2 * np.log(0.3) - np.log(0.7)), -0.5 * (3 * np.log(0.9) - np.log(0.1))]
    )


# -- torch.compile ------------------------------------------------------------------------


def test_compiled_training_step_through_the_public_api() -> None:
    """torch.compile(fullgraph=True) of a function that calls bce_core: forward and backward,
    for logits, targets and pos_weight, with a mask and an infinite logit."""
    rng = np.random.default_rng(11)
    x, y = rng.normal(0, 5, (4, 3)).astype(np.float32), rng.uniform(0, 1, (4, 3)).astype(np.float32)
    x[0, 0], y[0, 0] = np.inf, 1.0  # loss 0; d/dtargets is -inf there
    q, m = np.array([1.0, 2.0, 0.5], np.float32), rng.uniform(size=(4, 3)) < 0.7
    m[0, 0] = True
    bce_core.get_backend("torch")  # the registry is built outside the compiled region

    @torch.compile(fullgraph=True)
    def step(logits, targets, pos_weight, mask):
        return bce_core.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=pos_weight, mask=mask, label_smoothing=0.1
        )

    leaves = [torch.from_numpy(v).requires_grad_(True) for v in (x, y, q)]
    loss = step(*leaves, torch.from_numpy(m))
    loss.backward()
    expected_loss, expected_grads = reference.value_and_grad(
        x, y, pos_weight=q, mask=m, label_smoothing=0.1, wrt=("logits", "targets", "pos_weight")
    )
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), expected_loss, rtol=2e-6)
    assert leaves[1].grad[0, 0].item() == -np.inf
    for leaf, expected in zip(leaves, expected_grads):
        np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=2e-6, atol=1e-8)


def test_compiled_second_derivative_with_a_mask() -> None:
    x, y = t([[0.0, 2.0, -3.0], [40.0, -1.0, 0.5]]), t([[1.0, 0.0, 0.3], [1.0, 0.0, 1.0]])
    w, m = t([[2.0], [0.5]]), torch.tensor([[True, False, True], [True, True, True]])
    second = BACKEND.autodiff_second_derivative(
        x, y, weight=w, mask=m, reduction="sum", compiled=True
    )
    _, hess = reference.grad_hess(x.numpy(), y.numpy(), weight=w.numpy())
    np.testing.assert_allclose(second.numpy(), np.where(m.numpy(), hess, 0.0), rtol=1e-14)
    assert second[0, 0].item() == 0.5  # w / 4 at x = 0


# -- masks, zero weights, zero denominators -------------------------------------------------


def test_masked_out_nan_and_inf_inputs_give_zero_loss_and_zero_gradients() -> None:
    x = t([[float("nan"), 1.0], [float("inf"), -2.0]]).requires_grad_(True)
    y = t([[float("nan"), 1.0], [0.0, 0.0]]).requires_grad_(True)
    mask = torch.tensor([[False, True], [False, True]])
    elements = BACKEND.binary_cross_entropy_with_logits(x, y, mask=mask, reduction="none")
    assert elements[:, 0].tolist() == [0.0, 0.0]
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, mask=mask, reduction="mean")
    expected = reference.binary_cross_entropy_with_logits([1.0, -2.0], [1.0, 0.0])
    assert loss.item() == pytest.approx(float(expected), rel=1e-15)  # two elements counted
    x_grad, y_grad = torch.autograd.grad(loss, (x, y), create_graph=True)
    assert x_grad[:, 0].tolist() == [0.0, 0.0] and y_grad[:, 0].tolist() == [0.0, 0.0]
    (second,) = torch.autograd.grad(x_grad.sum(), x)
    assert torch.isfinite(second).all() and second[:, 0].tolist() == [0.0, 0.0]
    _, grads = BACKEND.value_and_grad(x.detach(), y.detach(), mask=mask, wrt=("logits", "targets"))
    assert [g[:, 0].tolist() for g in grads] == [[0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "batch_mean"])
def test_zero_denominators_give_zero_loss_and_zero_gradients(reduction: str) -> None:
    x = t([[1.0, float("inf")], [-2.0, 3.0]]).requires_grad_(True)
    w = t([[0.0], [0.0]]).requires_grad_(True)
    mask = torch.zeros(2, 2, dtype=torch.bool)
    empty = dict(logits=torch.zeros(0, 2, requires_grad=True), targets=torch.zeros(0, 2))
    cases = {
        "mean": (x, dict(mask=mask)),
        "weighted_mean": (x, dict(weight=w)),
        "batch_mean": (empty["logits"], {}),
    }
    logits, options = cases[reduction]
    targets = empty["targets"] if reduction == "batch_mean" else torch.zeros(2, 2)
    loss = BACKEND.binary_cross_entropy_with_logits(logits, targets, reduction=reduction, **options)
    assert loss.item() == 0.0
    leaves = [logits] + ([w] if "weight" in options else [])
    for grad in torch.autograd.grad(loss, leaves):
        assert torch.equal(grad, torch.zeros_like(grad))
    _, vg = BACKEND.value_and_grad(logits.detach(), targets, reduction=reduction, **options)
    assert torch.equal(vg, torch.zeros_like(vg))


def test_zero_weight_zeroes_loss_and_gradients_even_at_infinite_logits() -> None:
    x = t([float("inf"), float("-inf"), 3.0]).requires_grad_(True)
    y = t([0.0, 1.0, 0.5]).requires_grad_(True)
    w = t([0.0, 0.0, 1.0])
    loss = BACKEND.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")
    assert loss[:2].tolist() == [0.0, 0.0]
    x_grad, y_grad = torch.autograd.grad(loss.sum(), (x, y))
    assert x_grad[:2].tolist() == [0.0, 0.0] and y_grad[:2].tolist() == [0.0, 0.0]


# -- dtypes, devices and operands from NumPy and Python ----------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32_and_rounded_once(dtype: str) -> None:
    x = torch.linspace(-30, 30, 241).to(ALL_FLOATS[dtype])
    y = (torch.arange(241) % 3 == 0).to(ALL_FLOATS[dtype])
    half = BACKEND.binary_cross_entropy_with_logits(x, y, reduction="none")
    single = BACKEND.binary_cross_entropy_with_logits(x.float(), y.float(), reduction="none")
    assert half.dtype == ALL_FLOATS[dtype] and torch.equal(half, single.to(ALL_FLOATS[dtype]))
    _, half_grad = BACKEND.value_and_grad(x, y, reduction="sum")
    _, single_grad = BACKEND.value_and_grad(x.float(), y.float(), reduction="sum")
    assert torch.equal(half_grad, single_grad.to(ALL_FLOATS[dtype]))


def test_devices_lists_cpu_and_is_probed_once_across_threads(monkeypatch) -> None:
    calls = []
    original = backend_module._probe_devices

    def counting() -> list[str]:
        calls.append(1)
        return original()

    monkeypatch.setattr(backend_module, "_probe_devices", counting)
    backend = TorchBackend()
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(backend.devices())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(r == results[0] for r in results)
    assert results[0][0] == "cpu" and all(d == "cpu" or ":" in d or d == "mps" for d in results[0])


@pytest.mark.parametrize("device", GPUS)
def test_gpu_loss_and_gradients_match_cpu(device: str) -> None:
    x, y = t([[0.0, 2.0, -30.0], [40.0, -1.0, 0.5]]), t([[1.0, 0.0, 0.3], [1.0, 0.0, 1.0]])
    on_gpu = x.to(device).requires_grad_(True)
    loss = BACKEND.binary_cross_entropy_with_logits(on_gpu, y.numpy(), pos_weight=[1.0, 2.0, 3.0])
    loss.backward()
    assert BACKEND.device_of(loss) == device and BACKEND.device_of(on_gpu.grad) == device
    expected_loss, expected_grad = reference.value_and_grad(
        x.numpy(), y.numpy(), pos_weight=[1.0, 2.0, 3.0]
    )
    np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-14)
    np.testing.assert_allclose(on_gpu.grad.cpu().numpy(), expected_grad, rtol=1e-14)


# -- errors: the same types and messages as the NumPy backend ---------------------------------


def test_validate_refuses_to_run_under_compile_and_torch_func() -> None:
    x, y = torch.zeros(3), torch.tensor([0.0, 1.0, 2.0])

    def validated(a):
        return BACKEND.binary_cross_entropy_with_logits(a, y, validate=True)

    with pytest.raises(ValueError, match="cannot run under torch.compile"):
        torch.func.grad(validated)(x)
    with pytest.raises(ValueError, match="cannot run under torch.compile"):
        torch.compile(validated)(x)
    with pytest.raises(ValueError, match=r"targets\[2\] = 2.0 is outside \[0, 1\]"):
        validated(x)  # eagerly it validates
