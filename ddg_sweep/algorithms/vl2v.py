"""VL2V (VL2V-ADiP): distil the CLIP teacher into the student by the alignment loss, in two stages.

Steps [0, stage1_steps): L_align trains the projection P alone (the backbone frozen,
VL2V-ADiP's DFC_STAGE1; `stage1_trainable: all` trains everything); steps
[stage1_steps, steps): L_align trains the backbone and P (DFC_STAGE2, where SWAD averages).

Also the shared base of DDG: the student, the projection P, the frozen CLIP teacher,
its zero-shot text head (`self.network`: x -> logits) and Stage I are common to both.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ddg_sweep.algorithms.base import Algorithm, RunContext
from ddg_sweep.algorithms.losses import alignment_loss
from ddg_sweep.hparams import resolve_step
from ddg_sweep.models.clip_teacher import load_clip_teacher
from ddg_sweep.models.student import Classifier, load_student


class ZeroShotHead(nn.Module):
    """logits = logit_scale * normalise(P f) . T^T, with P trained and T (C, J) frozen."""

    def __init__(self, student_width: int, text_head: torch.Tensor, logit_scale: float):
        super().__init__()
        self.projection = nn.Linear(student_width, text_head.shape[1])
        self.register_buffer("text_embeddings", text_head.detach().clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)

    def logits_from_projection(self, projected: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(projected, dim=-1) @ self.text_embeddings.t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits_from_projection(self.project(features))


class AlignedAlgorithm(Algorithm):
    """Student + P + frozen CLIP teacher. Subclasses finish with `self._ready()`.

    teacher_autocast: run the frozen teachers under bf16 autocast; None (the default)
    follows `ctx.step_options.teacher_bf16`; never on a CPU.
    """

    def __init__(self, ctx: RunContext, teacher_autocast: bool | None = None):
        super().__init__(ctx)
        self.device = torch.device(ctx.device)
        on_cuda = self.device.type == "cuda"
        if teacher_autocast is None:
            teacher_autocast = ctx.step_options.teacher_bf16
        self.teacher_autocast = bool(teacher_autocast and on_cuda)
        student = ctx.components.get("student") or load_student(ctx.hparams["backbone"], ctx.model_paths["student"])
        clip_teacher = ctx.components.get("clip_teacher") or load_clip_teacher(ctx.model_paths["clip_teacher"])
        self.clip_teacher = clip_teacher.to(self.device)
        text_head = self.clip_teacher.class_text_head(ctx.class_names)  # once per run: full precision
        head = ZeroShotHead(student.n_outputs, text_head, self.clip_teacher.logit_scale)
        self.network = Classifier(student, head)
        self.stage_two_start = resolve_step(ctx.hparams["stage1_steps"], ctx.steps)

    def in_stage_two(self, step: int) -> bool:
        return step >= self.stage_two_start

    def _ready(self) -> None:
        self.to(self.device)
        self.optimizer = self.make_optimizer()

    def teacher_precision(self):
        if self.teacher_autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        with self.teacher_precision():
            return self.clip_teacher.image_embeddings(x).float()

    def student_projection(self, x: torch.Tensor, train_student: bool) -> torch.Tensor:
        """P f(x); with train_student False the student runs without gradient (only P trains)."""
        if train_student:
            features = self.network.featurizer(x)
        else:
            with torch.no_grad():
                features = self.network.featurizer(x)
        return self.network.head.project(features)

    def alignment(self, projected: torch.Tensor, image_embeddings: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        text_rows = self.network.head.text_embeddings[y]
        return alignment_loss(projected, image_embeddings, text_rows, self.hparams["lmd"])

    def stage_one_update(self, x: torch.Tensor, y: torch.Tensor, image_embeddings: torch.Tensor) -> dict:
        """Stage I: L_align on P alone (or on everything, `stage1_trainable: all`)."""
        train_student = self.hparams["stage1_trainable"] == "all"
        loss = self.alignment(self.student_projection(x, train_student), image_embeddings, y)
        self.optimise(loss)
        value = loss.item()
        return {"loss": value, "loss_align": value, "stage": "align"}

    def optimise(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class VL2V(AlignedAlgorithm):
    """Stage I on P, then the same loss on the backbone and P (see the module docstring)."""

    def __init__(self, ctx: RunContext, teacher_autocast: bool | None = None):
        super().__init__(ctx, teacher_autocast)
        self._ready()

    def update(self, minibatches, step):
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        image_embeddings = self.teacher_image_embeddings(x)
        if not self.in_stage_two(step):
            return self.stage_one_update(x, y, image_embeddings)
        loss = self.alignment(self.student_projection(x, train_student=True), image_embeddings, y)
        self.optimise(loss)
        value = loss.item()
        return {"loss": value, "loss_align": value, "stage": "align_backbone"}
