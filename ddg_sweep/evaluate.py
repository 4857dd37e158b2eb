"""Accuracy on every split, and the validation loss SWAD watches."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(network, loaders, train_envs, device) -> tuple[dict, float]:
    """({"env{i}_{in,out}_acc": fraction}, mean cross-entropy over training envs' out splits)."""
    was_training = network.training
    network.eval()
    accuracies = {}
    val_loss_sum, val_count = 0.0, 0
    val_names = {f"env{e}_out" for e in train_envs}
    for name, loader in loaders:
        correct = total = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = network(x).float()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
            if name in val_names:
                val_loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                val_count += len(y)
        accuracies[f"{name}_acc"] = correct / total if total else 0.0
    network.train(was_training)
    return accuracies, val_loss_sum / max(val_count, 1)
