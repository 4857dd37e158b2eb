"""Accuracy on the splits model selection reads, and the validation loss SWAD watches.

Which splits each checkpoint evaluates is ddg_sweep/splits.py (torch-free, so `plan` counts them too).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F


def evaluation_precision(device: torch.device):
    """bf16 autocast on CUDA (accuracies agree with fp32 to within a few images); fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(network, loaders, train_envs, device, splits=None, precision=None) -> tuple[dict, float]:
    """({"env{i}_{in,out}_acc": fraction}, mean cross-entropy over training envs' out splits).

    `splits`: the names to evaluate (default every loader's); `precision`: a context manager
    for the forward passes (default `evaluation_precision(device)`)."""
    was_training = network.training
    network.eval()
    accuracies = {}
    val_loss_sum, val_count = 0.0, 0
    val_names = {f"env{e}_out" for e in train_envs}
    wanted = None if splits is None else set(splits)
    precision = precision if precision is not None else evaluation_precision(torch.device(device))
    for name, loader in loaders:
        if wanted is not None and name not in wanted:
            continue
        correct = total = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with precision:
                logits = network(x)
            logits = logits.float()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
            if name in val_names:
                val_loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                val_count += len(y)
        accuracies[f"{name}_acc"] = correct / total if total else 0.0
    network.train(was_training)
    return accuracies, val_loss_sum / max(val_count, 1)


def timed_evaluate(network, loaders, train_envs, device, splits, split_sizes: dict) -> tuple[dict, float]:
    """`evaluate`, plus `eval_time` (seconds) and `eval_images` (images evaluated) in the accuracies."""
    began = time.time()
    accuracies, val_loss = evaluate(network, loaders, train_envs, device, splits)
    accuracies["eval_time"] = time.time() - began
    accuracies["eval_images"] = int(sum(split_sizes[name] for name in splits))
    return accuracies, val_loss
