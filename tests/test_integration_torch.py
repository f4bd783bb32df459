"""``bce_core.torch``: the torch.nn drop-ins against torch.nn's own losses and the reference.

Ordinary inputs match ``torch.nn.BCEWithLogitsLoss`` / ``torch.nn.BCELoss`` (values and
gradients, every reduction, weight and pos_weight broadcasting); in the tails the modules
are within a few ULP of the float64 reference where torch.nn is not. The buffers move,
cast and load state dicts as torch.nn's do; the modules run under torch.compile
(fullgraph=True) and in a DistributedDataParallel model of two gloo processes.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bce_core  # noqa: E402
from bce_core import reference  # noqa: E402
from bce_core.torch import BCELoss, BCEWithLogitsLoss  # noqa: E402

# torch loads its forward-mode decompositions with torch.jit.script, which warns.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"
)

ULP_BOUND = 4.0
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Relative and absolute tolerances against torch.nn on ordinary inputs, by dtype.
TOLERANCE = {torch.float32: (2e-6, 1e-7), torch.float64: (1e-13, 1e-15)}
NN_REDUCTIONS = ("none", "sum", "mean")
SHAPE = (5, 3)
#: weight and pos_weight shapes that broadcast to SHAPE without enlarging it.
BROADCAST_SHAPES = {"none": None, "scalar": (), "per class": (3,), "per row": (5, 1), "full": SHAPE}


def tensor(values, dtype=torch.float32, **kwargs):
    return torch.tensor(values, dtype=dtype, **kwargs)


def operands(dtype, *, seed=0, probs=False):
    """Logits (or probabilities), soft and hard targets of SHAPE."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.02, 0.98, SHAPE) if probs else rng.normal(0.0, 3.0, SHAPE)
    y = rng.uniform(0.0, 1.0, SHAPE)
    y[0] = np.round(y[0])  # a row of hard targets
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


def coefficient(shape, dtype, seed):
    if shape is None:
        return None
    return torch.tensor(np.random.default_rng(seed).uniform(0.25, 3.0, shape), dtype=dtype)


def loss_and_grad(loss_fn, x, y, **kwargs):
    """The loss and d sum(loss) / d x by ``backward()``."""
    leaf = x.detach().clone().requires_grad_(True)
    loss = loss_fn(leaf, y, **kwargs)
    loss.sum().backward()
    return loss.detach(), leaf.grad


def assert_close(ours, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    assert ours.dtype == expected.dtype == dtype
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=atol)


def ulps(ours, exact):
    """|ours - exact| in float32 ULPs of the exact value."""
    ours, exact = np.asarray(ours, np.float64), np.asarray(exact, np.float64)
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(ours - exact) / spacing


# -- construction: torch.nn's arguments, bce-core's options, clear errors ---------------------


def test_modules_take_torch_nn_constructor_arguments_positionally() -> None:
    w, q = tensor([1.0, 2.0, 3.0]), tensor([0.5, 1.0, 4.0])
    ours = BCEWithLogitsLoss(w, None, None, "sum", q)
    theirs = torch.nn.BCEWithLogitsLoss(w, None, None, "sum", q)
    assert isinstance(ours, torch.nn.Module)
    assert ours.reduction == theirs.reduction == "sum"
    assert ours.weight is w and ours.pos_weight is q  # stored as given, as torch.nn does
    x, y = operands(torch.float32)
    assert_close(ours(x, y), theirs(x, y), torch.float32)
    probs = BCELoss(w, None, None, "none")
    assert probs.reduction == "none" and probs.weight is w and probs.pos_weight is None


@pytest.mark.parametrize("module", [BCEWithLogitsLoss, BCELoss])
@pytest.mark.parametrize(
    ("legacy", "words", "expected"),
    [  # the reduction torch.nn maps each to (None counts as True)
        ({"size_average": False}, "size_average=False is deprecated", "sum"),
        ({"size_average": True}, "size_average=True is deprecated", "mean"),
        ({"reduce": False}, "reduce=False is deprecated", "none"),
        ({"size_average": False, "reduce": True}, "size_average=False and reduce=True are", "sum"),
    ],
)
def test_deprecated_arguments_name_the_reduction_to_use(module, legacy, words, expected) -> None:
    with pytest.raises(TypeError, match=words) as info:
        module(**legacy)
    assert f"pass reduction={expected!r} instead" in str(info.value)


@pytest.mark.parametrize("module", [BCEWithLogitsLoss, BCELoss])
def test_bad_options_raise_the_api_errors_at_construction(module) -> None:
    x, y = tensor([0.5]), tensor([1.0])
    with pytest.raises(ValueError) as api_error:
        bce_core.binary_cross_entropy_with_logits(x, y, reduction="meen")
    with pytest.raises(ValueError) as module_error:
        module(reduction="meen")
    assert str(module_error.value) == str(api_error.value)
    assert "Did you mean 'mean'" in str(module_error.value)
    with pytest.raises(TypeError, match="label_smoothing"):
        module(label_smoothing="0.1")
    with pytest.raises(ValueError, match="label_smoothing"):
        module(label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"weight=\[1\.0, 2\.0\] is of type list; pass a torch"):
        module(weight=[1.0, 2.0])
    with pytest.raises(TypeError, match="pos_weight=.* is of type ndarray"):
        module(pos_weight=np.ones(3))


def test_log_clamp_is_checked_and_only_the_probability_form_takes_it() -> None:
    with pytest.raises(ValueError, match="log_clamp"):
        BCELoss(log_clamp=1.0)
    with pytest.raises(TypeError, match="log_clamp"):
        BCELoss(log_clamp="-5")
    with pytest.raises(TypeError, match="log_clamp"):
        BCEWithLogitsLoss(log_clamp=-5.0)
    assert BCELoss(log_clamp=-5).log_clamp == -5.0


@pytest.mark.parametrize("reduction", ["weighted_mean", "batch_mean"])
def test_the_extra_reductions_are_accepted(reduction) -> None:
    assert BCEWithLogitsLoss(reduction=reduction).reduction == reduction
    assert BCELoss(reduction=reduction).reduction == reduction


def test_repr_is_torch_nns_and_shows_options_that_differ() -> None:
    assert repr(BCEWithLogitsLoss(pos_weight=tensor([2.0]))) == repr(
        torch.nn.BCEWithLogitsLoss(pos_weight=tensor([2.0]))
    )
    assert repr(BCELoss()) == repr(torch.nn.BCELoss()) == "BCELoss()"
    assert repr(BCEWithLogitsLoss(reduction="sum", label_smoothing=0.1)) == (
        "BCEWithLogitsLoss(reduction='sum', label_smoothing=0.1)"
    )
    assert repr(BCELoss(log_clamp=float("-inf"))) == "BCELoss(log_clamp=-inf)"


# -- buffers: devices, dtypes, state dicts, copies ---------------------------------------------


def test_weight_and_pos_weight_are_buffers_as_in_torch_nn() -> None:
    w, q = tensor([[1.0], [2.0]]), tensor([0.5, 4.0])
    ours, theirs = BCEWithLogitsLoss(w, pos_weight=q), torch.nn.BCEWithLogitsLoss(w, pos_weight=q)
    assert dict(ours.named_buffers()).keys() == dict(theirs.named_buffers()).keys()
    assert list(ours.parameters()) == []
    assert list(BCEWithLogitsLoss().state_dict()) == list(torch.nn.BCEWithLogitsLoss().state_dict())
    assert list(BCEWithLogitsLoss(pos_weight=q).state_dict()) == ["pos_weight"]
    assert list(BCELoss(w).state_dict()) == list(torch.nn.BCELoss(w).state_dict()) == ["weight"]


@pytest.mark.parametrize(
    ("convert", "dtype"),
    [
        (lambda m: m.double(), torch.float64),
        (lambda m: m.half(), torch.float16),
        (lambda m: m.to(torch.bfloat16), torch.bfloat16),
        (lambda m: m.float(), torch.float32),
    ],
)
def test_casting_the_module_casts_the_buffers_and_not_the_callers_tensors(convert, dtype) -> None:
    w, q = tensor([1.0, 2.0, 3.0], torch.float64), tensor([0.5, 1.0, 4.0], torch.float64)
    loss_fn = convert(BCEWithLogitsLoss(w.clone(), pos_weight=q))
    assert loss_fn.weight.dtype == loss_fn.pos_weight.dtype == dtype
    assert q.dtype == torch.float64  # the caller's tensor is not cast in place
    x, y = (t.to(dtype) for t in operands(torch.float32))
    expected = bce_core.binary_cross_entropy_with_logits(
        x, y, weight=loss_fn.weight, pos_weight=loss_fn.pos_weight
    )
    assert loss_fn(x, y).dtype == dtype
    assert torch.equal(loss_fn(x, y), expected)


def test_moving_the_module_moves_the_buffers() -> None:
    loss_fn = BCEWithLogitsLoss(tensor([1.0, 2.0]), pos_weight=tensor([3.0, 1.0]))
    moved = loss_fn.to("meta")  # a device move that needs no accelerator
    assert moved.weight.device.type == moved.pos_weight.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_a_cuda_device() -> None:
    x, y = operands(torch.float32)
    q = tensor([1.0, 2.0, 0.5])
    loss_fn = BCEWithLogitsLoss(pos_weight=q).cuda()
    assert loss_fn.pos_weight.device.type == "cuda"
    loss = loss_fn(x.cuda(), y.cuda())
    assert loss.device.type == "cuda"
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=q)(x, y)
    torch.testing.assert_close(loss.cpu(), expected, rtol=2e-6, atol=1e-7)


def test_a_torch_nn_state_dict_loads_strictly_and_back() -> None:
    q, w = tensor([0.5, 1.0, 4.0]), tensor([[1.0], [2.0], [0.5], [1.0], [3.0]])
    theirs = torch.nn.BCEWithLogitsLoss(w, pos_weight=q)
    ours = BCEWithLogitsLoss(torch.ones(5, 1), pos_weight=torch.ones(3))
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    buffer.seek(0)
    result = ours.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert result.missing_keys == result.unexpected_keys == []
    assert torch.equal(ours.pos_weight, q) and torch.equal(ours.weight, w)
    x, y = operands(torch.float32)
    assert_close(ours(x, y), theirs(x, y), torch.float32)
    back = torch.nn.BCEWithLogitsLoss(torch.zeros(5, 1), pos_weight=torch.zeros(3))
    back.load_state_dict(ours.state_dict(), strict=True)
    assert torch.equal(back.pos_weight, q) and torch.equal(back.weight, w)
    probs = BCELoss(torch.zeros(3))
    probs.load_state_dict(torch.nn.BCELoss(q).state_dict(), strict=True)
    assert torch.equal(probs.weight, q)


def test_copies_and_pickles_keep_the_options_and_buffers() -> None:
    loss_fn = BCELoss(
        tensor([1.0, 2.0]), reduction="sum", label_smoothing=0.1, log_clamp=-20.0
    ).double()
    for copied in (copy.deepcopy(loss_fn), pickle.loads(pickle.dumps(loss_fn))):
        assert repr(copied) == repr(loss_fn)
        assert copied.log_clamp == -20.0 and copied.weight.dtype == torch.float64
        p, y = tensor([[0.0, 0.7]], torch.float64), tensor([[1.0, 0.0]], torch.float64)
        assert torch.equal(copied(p, y), loss_fn(p, y))


# -- parity with torch.nn on ordinary inputs ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("reduction", NN_REDUCTIONS)
@pytest.mark.parametrize("weight_shape", BROADCAST_SHAPES.values(), ids=BROADCAST_SHAPES.keys())
@pytest.mark.parametrize("pos_shape", BROADCAST_SHAPES.values(), ids=BROADCAST_SHAPES.keys())
def test_logits_form_matches_torch_nn(dtype, reduction, weight_shape, pos_shape) -> None:
    x, y = operands(dtype, seed=1)
    w, q = coefficient(weight_shape, dtype, 2), coefficient(pos_shape, dtype, 3)
    ours = BCEWithLogitsLoss(w, reduction=reduction, pos_weight=q)
    theirs = torch.nn.BCEWithLogitsLoss(w, reduction=reduction, pos_weight=q)
    loss, grad = loss_and_grad(ours, x, y)
    expected_loss, expected_grad = loss_and_grad(theirs, x, y)
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("reduction", NN_REDUCTIONS)
@pytest.mark.parametrize("weight_shape", BROADCAST_SHAPES.values(), ids=BROADCAST_SHAPES.keys())
def test_probability_form_matches_torch_nn(dtype, reduction, weight_shape) -> None:
    p, y = operands(dtype, seed=4, probs=True)
    w = coefficient(weight_shape, dtype, 5)
    loss, grad = loss_and_grad(BCELoss(w, reduction=reduction), p, y)
    expected_loss, expected_grad = loss_and_grad(torch.nn.BCELoss(w, reduction=reduction), p, y)
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)


def test_gradients_of_the_targets_and_buffers() -> None:
    """backward() gives torch.nn's gradients for the logits and the targets, and the
    reference's for weight and pos_weight (which torch.nn cannot differentiate)."""
    x, y = operands(torch.float64, seed=6)
    w, q = coefficient((5, 1), torch.float64, 7), coefficient((3,), torch.float64, 8)
    results = []
    for module in (BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss):
        leaves = [t.clone().requires_grad_(True) for t in (x, y, w, q)]
        buffers = leaves[2:] if module is BCEWithLogitsLoss else [w, q]
        module(buffers[0], pos_weight=buffers[1])(leaves[0], leaves[1]).backward()
        results.append([leaf.grad for leaf in leaves])
    ours, theirs = results
    assert_close(ours[0], theirs[0], torch.float64)
    assert_close(ours[1], theirs[1], torch.float64)
    _, expected = reference.value_and_grad(
        x.numpy(), y.numpy(), weight=w.numpy(), pos_weight=q.numpy(), wrt=("weight", "pos_weight")
    )
    np.testing.assert_allclose(ours[2].numpy(), expected[0], rtol=1e-14)
    np.testing.assert_allclose(ours[3].numpy(), expected[1], rtol=1e-14)


@pytest.mark.parametrize("reduction", ["weighted_mean", "batch_mean"])
def test_the_extra_reductions_against_torch_nn_sums(reduction) -> None:
    x, y = operands(torch.float64, seed=9)
    w, q = coefficient((5, 1), torch.float64, 10), coefficient((3,), torch.float64, 11)
    denominator = w.expand(SHAPE).sum() if reduction == "weighted_mean" else SHAPE[0]
    loss, grad = loss_and_grad(BCEWithLogitsLoss(w, reduction=reduction, pos_weight=q), x, y)
    total = torch.nn.BCEWithLogitsLoss(w, reduction="sum", pos_weight=q)
    expected_loss, expected_grad = loss_and_grad(lambda a, b: total(a, b) / denominator, x, y)
    assert_close(loss, expected_loss, torch.float64)
    assert_close(grad, expected_grad, torch.float64)
    p = torch.sigmoid(x)
    probs_loss = BCELoss(w, reduction=reduction)(p, y)
    expected = torch.nn.BCELoss(w, reduction="sum")(p, y) / denominator
    assert_close(probs_loss, expected, torch.float64)


# -- the tails: exact where torch.nn is not ---------------------------------------------------


def test_logits_tails_are_within_a_few_ulp_of_the_reference_where_torch_nn_is_not() -> None:
    x = tensor([-30.0, 30.0, -60.0, 20.0, -17.0, 50.0])
    y = tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    q = tensor([1.0, 1.0, 3.0, 1.0, 1.0, 2.0])
    exact_loss, exact_grad = reference.value_and_grad(
        x.numpy(), y.numpy(), pos_weight=q.numpy(), reduction="none"
    )
    loss, grad = loss_and_grad(BCEWithLogitsLoss(reduction="none", pos_weight=q), x, y)
    theirs, their_grad = loss_and_grad(
        torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=q), x, y
    )
    assert loss.dtype == grad.dtype == torch.float32
    assert ulps(loss, exact_loss).max() <= ULP_BOUND
    assert ulps(grad, exact_grad).max() <= ULP_BOUND
    # torch.nn: a loss of 0 at x = -30, -17 (target 0) and a gradient of 0 at x = 30, 20, 50
    # (target 1); each is wrong by its whole value.
    assert theirs[0].item() == theirs[4].item() == 0.0 and exact_loss[0] > 9e-14
    assert their_grad[1].item() == their_grad[3].item() == their_grad[5].item() == 0.0
    assert ulps(theirs, exact_loss).max() > 1e6 and ulps(their_grad, exact_grad).max() > 1e6


def test_infinite_logits_with_pos_weight_are_exact_where_torch_nn_gives_nan() -> None:
    x, y = tensor([float("inf"), -float("inf"), -float("inf")]), tensor([1.0, 0.0, 1.0])
    q = tensor([2.0])
    loss, grad = loss_and_grad(BCEWithLogitsLoss(reduction="none", pos_weight=q), x, y)
    assert loss.tolist() == [0.0, 0.0, float("inf")]
    assert grad.tolist()[:2] == [0.0, 0.0]
    theirs = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=q)(x, y)
    assert torch.isnan(theirs[:2]).all()


def test_probability_form_tails_against_the_reference() -> None:
    p = tensor([1e-30, 1.0 - 2.0**-24, 1e-8, 0.0, 1.0], torch.float32)
    y = tensor([0.0, 1.0, 0.0, 1.0, 0.0])
    exact = reference.binary_cross_entropy(p.numpy(), y.numpy(), reduction="none")
    loss = BCELoss(reduction="none")(p, y)
    assert ulps(loss, exact).max() <= ULP_BOUND
    assert loss[3:].tolist() == [100.0, 100.0]  # the clamp at -100, as torch.nn's
    exact_log = BCELoss(reduction="none", log_clamp=float("-inf"))(p, y)
    assert exact_log[3:].tolist() == [float("inf"), float("inf")]
    torch.testing.assert_close(loss, torch.nn.BCELoss(reduction="none")(p, y), rtol=2e-6, atol=0)


# -- label smoothing, masks, pos_weight of the probability form -----------------------------------


@pytest.mark.parametrize("reduction", bce_core.REDUCTIONS)
def test_label_smoothing_and_mask_match_the_functional_api(reduction) -> None:
    x, y = operands(torch.float64, seed=12)
    w, q = coefficient((5, 1), torch.float64, 13), coefficient((3,), torch.float64, 14)
    mask = torch.from_numpy(np.random.default_rng(15).uniform(size=SHAPE) < 0.7)
    options = {"label_smoothing": 0.2, "reduction": reduction}
    loss, grad = loss_and_grad(BCEWithLogitsLoss(w, pos_weight=q, **options), x, y, mask=mask)
    expected, expected_grad = reference.value_and_grad(
        x.numpy(), y.numpy(), weight=w.numpy(), pos_weight=q.numpy(), mask=mask.numpy(), **options
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-14, atol=1e-16)
    assert (grad[~mask] == 0).all()
    p = torch.sigmoid(x)
    probs = BCELoss(w, pos_weight=q, **options)(p, y, mask=mask)
    functional = bce_core.binary_cross_entropy(
        p, y, weight=w, pos_weight=q, mask=mask, backend="torch", **options
    )
    assert torch.equal(probs, functional)


def test_label_smoothing_is_torch_nn_on_the_smoothed_targets() -> None:
    x, y = operands(torch.float32, seed=16)
    eps = 0.1
    ours, grad = loss_and_grad(BCEWithLogitsLoss(label_smoothing=eps), x, y)
    theirs, their_grad = loss_and_grad(torch.nn.BCEWithLogitsLoss(), x, y * (1 - eps) + eps / 2)
    assert_close(ours, theirs, torch.float32)
    assert_close(grad, their_grad, torch.float32)


def test_a_mask_is_torch_nn_on_the_kept_elements() -> None:
    x, y = operands(torch.float32, seed=17)
    x[1, 2] = float("nan")  # masked out: adds nothing, not even NaN
    keep = torch.ones(SHAPE, dtype=torch.bool)
    keep[1, 2] = keep[3, 0] = False
    q = tensor([1.0, 2.0, 0.5])
    loss, grad = loss_and_grad(BCEWithLogitsLoss(pos_weight=q), x, y, mask=keep)
    theirs = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=q)(x, y)[keep].mean()
    assert_close(loss, theirs, torch.float32)
    assert grad[1, 2].item() == grad[3, 0].item() == 0.0 and torch.isfinite(grad).all()


def test_numpy_inputs_go_to_the_torch_backend() -> None:
    loss = BCEWithLogitsLoss(reduction="none")(np.array([0.0, 30.0]), np.array([1.0, 1.0]))
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64


# -- torch.compile --------------------------------------------------------------------------------


def test_a_model_and_the_loss_under_torch_compile_fullgraph() -> None:
    """Forward and backward of a small model through the loss, compiled whole, match eager."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    loss_fn = BCEWithLogitsLoss(pos_weight=tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    x, y = torch.randn(6, 4), (torch.rand(6, 3) < 0.5).float()
    mask = torch.rand(6, 3) < 0.8

    def step(inputs, targets, keep):
        return loss_fn(model(inputs), targets, mask=keep)

    compiled = torch.compile(step, fullgraph=True)
    grads = []
    for function in (compiled, step):
        model.zero_grad()
        loss = function(x, y, mask)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (compiled_loss, compiled_grads), (eager_loss, eager_grads) = grads
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-7)
    for ours, expected in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_the_probability_module_compiled_fullgraph() -> None:
    loss_fn = BCELoss(tensor([2.0, 1.0, 0.5]), reduction="sum")
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    p, y = operands(torch.float32, seed=18, probs=True)
    loss, grad = loss_and_grad(compiled, p, y)
    expected, expected_grad = loss_and_grad(torch.nn.BCELoss(loss_fn.weight, reduction="sum"), p, y)
    assert_close(loss, expected, torch.float32)
    assert_close(grad, expected_grad, torch.float32)


# -- DistributedDataParallel -----------------------------------------------------------------------

MODEL = """
import torch
from bce_core.torch import BCEWithLogitsLoss


class Model(torch.nn.Module):
    def __init__(self, pos_weight):
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)]
        self.net = torch.nn.Sequential(*layers)
        self.loss_fn = BCEWithLogitsLoss(pos_weight=pos_weight, label_smoothing=0.1)

    def forward(self, x, y, mask):
        return self.loss_fn(self.net(x), y, mask=mask)


def batch():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=generator)
    y = (torch.rand(8, 3, generator=generator) < 0.5).float()
    return x, y, torch.ones(8, 3, dtype=torch.bool)
"""

WORKER = """
import datetime, sys
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from ddp_model import Model, batch

rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group(
    "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
    timeout=datetime.timedelta(seconds=60),
)
try:
    # Rank 1 starts from another pos_weight: DDP broadcasts rank 0's buffers.
    model = DistributedDataParallel(Model(torch.tensor([1.0, 2.0, 0.5]) * (1 + rank)))
    x, y, mask = batch()
    loss = model(x[rank::world], y[rank::world], mask[rank::world])
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.module.named_parameters()}
    grads["pos_weight"] = model.module.loss_fn.pos_weight.numpy()
    np.savez(out, **grads)
    # No rank tears gloo down while the other still talks to it (an abort at exit otherwise).
    dist.barrier()
finally:
    dist.destroy_process_group()
"""


def test_distributed_data_parallel_gradients_equal_single_process(tmp_path: Path) -> None:
    (tmp_path / "ddp_model.py").write_text(textwrap.dedent(MODEL))
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    env["OMP_NUM_THREADS"] = "1"
    world, store = 2, tmp_path / "store"
    outs = [tmp_path / f"rank{rank}.npz" for rank in range(world)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker), str(rank), str(world), str(store), str(outs[rank])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    try:
        logs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log

    sys.path.insert(0, str(tmp_path))
    try:
        from ddp_model import Model, batch
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ddp_model", None)
    model = Model(torch.tensor([1.0, 2.0, 0.5]))
    model(*batch()).backward()  # the whole batch in one process
    expected = {name: p.grad.numpy() for name, p in model.named_parameters()}
    for out in outs:
        got = np.load(out)
        np.testing.assert_array_equal(got["pos_weight"], [1.0, 2.0, 0.5])
        for name, grad in expected.items():
            np.testing.assert_allclose(got[name], grad, rtol=1e-5, atol=1e-7, err_msg=name)
