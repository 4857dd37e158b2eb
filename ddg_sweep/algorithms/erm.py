"""ERM: a linear classifier on the student's features, trained with cross-entropy (and SWAD, like every algorithm)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddg_sweep.algorithms.base import Algorithm, RunContext
from ddg_sweep.models.student import Classifier, load_student


class ERM(Algorithm):
    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        student = ctx.components.get("student") or load_student(ctx.hparams["backbone"], ctx.model_paths["student"])
        self.network = Classifier(student, nn.Linear(student.n_outputs, ctx.n_classes))
        self.to(ctx.device)
        self.optimizer = self.make_optimizer()

    def update(self, minibatches, step):
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(self.predict(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}
