"""Stage II's UNet work in micro-batches, holding one micro-batch's activations at a time.

The diffusion loss is a mean over samples, and every UNet operation is per sample, so
the batch loss is the sum of each micro-batch's loss weighted by its share of the batch.
`micro_batched_loss` runs each micro-batch forward and, at once, backward into its slice
of the conditioning c; what it keeps for the outer backward is only dL/dc (B x 77 x D),
not the UNet's activations. Unlike activation checkpointing nothing is computed twice.
"""
from __future__ import annotations

from typing import Callable

import torch

SliceLoss = Callable[[slice, torch.Tensor], torch.Tensor]


def micro_batch_slices(n: int, micro_batch: int) -> list[slice]:
    """[0, n) in consecutive slices of `micro_batch` samples (the last may be shorter)."""
    if micro_batch <= 0 or micro_batch >= n:
        return [slice(0, n)]
    return [slice(start, min(start + micro_batch, n)) for start in range(0, n, micro_batch)]


class _EagerBackward(torch.autograd.Function):
    """Forward: the summed micro-batch losses, each differentiated into its slice of c at once.

    Backward: grad_output * the stored dL/dc, so the outer graph never holds UNet activations.
    """

    @staticmethod
    def forward(ctx, cond: torch.Tensor, slice_loss: SliceLoss, slices: list[slice]) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(cond) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=cond.device)
        for piece in slices:
            cond_piece = cond[piece].detach().requires_grad_(needs_grad)
            with torch.enable_grad():
                loss = slice_loss(piece, cond_piece)
            if needs_grad and loss.requires_grad:  # else this slice's gradient is zero
                # backward(), not autograd.grad(): the flop counter's module hooks refuse the latter
                loss.backward(inputs=[cond_piece])
                grad[piece] = cond_piece.grad
            total += loss.detach().float()
        ctx.save_for_backward(grad if needs_grad else torch.empty(0))
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None


def micro_batched_loss(slice_loss: SliceLoss, cond: torch.Tensor, micro_batch: int) -> torch.Tensor:
    """sum over micro-batches s of slice_loss(s, cond[s]); differentiable in `cond`.

    `slice_loss(s, cond_s)` must return samples s's share of the batch loss (so the shares
    sum to it) and must be a function of `cond_s` alone among tensors that need gradient.
    With `micro_batch` 0 or >= the batch it is one ordinary call, gradients flowing as usual.
    """
    slices = micro_batch_slices(len(cond), micro_batch)
    if len(slices) == 1:
        return slice_loss(slices[0], cond)
    return _EagerBackward.apply(cond, slice_loss, slices)
