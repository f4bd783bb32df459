"""Time a training step (forward and ``backward()``, eager) with ``bce_core.torch``'s
``BCEWithLogitsLoss`` against ``torch.nn.BCEWithLogitsLoss`` on the same tensors, in one run,
and print the ratio at each size, with and without ``pos_weight``.

Run: ``python examples/torch_module_step.py`` (one thread; the best of 5 rounds).
"""

from __future__ import annotations

import timeit

import torch

from bce_core.torch import BCEWithLogitsLoss

SIZES = (100, 1_000, 10_000, 100_000)


def step_time(loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
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
    print(f"{'elements':>9} {'options':>11} {'torch.nn':>10} {'bce_core':>10} {'ratio':>6}")
    for size in SIZES:
        x = torch.randn(size, 1, requires_grad=True)
        y = (torch.rand(size, 1) > 0.5).float()
        for label, options in (("none", {}), ("pos_weight", {"pos_weight": pos_weight})):
            native = step_time(torch.nn.BCEWithLogitsLoss(**options), x, y)
            ours = step_time(BCEWithLogitsLoss(**options), x, y)
            print(f"{size:>9} {label:>11} {native:>8.1f}us {ours:>8.1f}us {ours / native:>5.2f}x")


if __name__ == "__main__":
    main()
