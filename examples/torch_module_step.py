"""Time a training step (forward and ``backward()``, eager) with ``bce_core.torch``'s
``BCEWithLogitsLoss`` against ``torch.nn.BCEWithLogitsLoss`` on the same tensors, in one run,
and print the ratio at each size: without options, with ``pos_weight``, and with
``pos_weight``, label smoothing and a mask (which ``torch.nn``'s loss has not: against its
plain loss with ``pos_weight``).

Run: ``python examples/torch_module_step.py`` (one thread; the best of 5 rounds).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from functools import partial

import torch

from bce_core.torch import BCEWithLogitsLoss

SIZES = (100, 1_000, 10_000, 100_000)


def step_time(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> float:
    """Microseconds per step, the best of 5 rounds."""

    def step() -> None:
        x.grad = None
        loss_fn(x, y).backward()

    step()  # the first call loads the backend
    number = max(10, 200_000 // x.numel())
    return min(timeit.repeat(step, repeat=5, number=number)) / number * 1e6


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    pos_weight = torch.tensor([2.0])
    print(f"{'elements':>9} {'options':>18} {'torch.nn':>10} {'bce_core':>10} {'ratio':>6}")
    for size in SIZES:
        x = torch.randn(size, 1, requires_grad=True)
        y = (torch.rand(size, 1) > 0.5).float()
        mask = torch.rand(size, 1) > 0.1
        smoothed = BCEWithLogitsLoss(pos_weight=pos_weight, label_smoothing=0.1)
        rows = [
            ("none", torch.nn.BCEWithLogitsLoss(), BCEWithLogitsLoss()),
            (
                "pos_weight",
                torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight),
                BCEWithLogitsLoss(pos_weight=pos_weight),
            ),
            # torch.nn has neither: its plain loss with pos_weight against ours with both.
            (
                "+smoothing+mask",
                torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight),
                partial(smoothed, mask=mask),
            ),
        ]
        for label, native_fn, ours_fn in rows:
            native, ours = step_time(native_fn, x, y), step_time(ours_fn, x, y)
            ratio = ours / native
            print(f"{size:>9} {label:>18} {native:>8.1f}us {ours:>8.1f}us {ratio:>5.2f}x")


if __name__ == "__main__":
    main()
