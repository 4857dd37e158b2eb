"""DDG: Stage I alignment, then Stage II diffusion distillation with domain-debiasing guidance.

Steps [0, stage1_steps): L = L_align (training P only, or everything: `stage1_trainable`),
as VL2V's first stage; `lmd` is L_align's image/text mix.
Steps [stage1_steps, steps): L = L_diff + align_weight * L_align, where the student's class
probabilities (or a trained token map of P f(x)) condition the frozen SD UNet and
L_diff is one of three guidance forms (`guidance_form`) against the source domain's style
prompt as the negative (the literal eps_neg + w (eps_cond - eps_neg), a stop-gradient
target, or the trained branch divided by w). See docs/method.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
from torch import nn

from ddg_sweep.algorithms.base import RunContext
from ddg_sweep.algorithms.losses import (batched_guidance_eps, guidance_loss, probs_conditioning,
                                        separate_guidance_eps)
from ddg_sweep.algorithms.micro_batch import micro_batched_loss
from ddg_sweep.algorithms.vl2v import AlignedAlgorithm
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import frozen_passes
from ddg_sweep.models.sd_teacher import class_prompt, domain_prompt, load_sd_teacher
from ddg_sweep.perf import apply_to_sd_teacher

MIN_MICRO_BATCH = 8  # below this the UNet's GEMMs get small; checkpointing is the cheaper way down


class TokenMap(nn.Module):
    """`conditioning: projected`: a trained linear map P f(x) -> 77 x D UNet tokens.

    The bias starts at the mean class tokens, so the first conditioning is a neutral class prompt.
    """

    def __init__(self, joint_width: int, initial_tokens: torch.Tensor):
        super().__init__()
        self.n_tokens, self.token_width = initial_tokens.shape
        self.linear = nn.Linear(joint_width, self.n_tokens * self.token_width)
        with torch.no_grad():
            self.linear.bias.copy_(initial_tokens.flatten())

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.linear(projected).view(-1, self.n_tokens, self.token_width)


class DDG(AlignedAlgorithm):
    def __init__(self, ctx: RunContext, teacher_autocast: bool | None = None):
        super().__init__(ctx, teacher_autocast)
        hp = self.hparams
        sd_teacher = ctx.components.get("sd_teacher") or load_sd_teacher(ctx.model_paths["stable_diffusion"])
        self.sd_teacher = sd_teacher.to(self.device)
        apply_to_sd_teacher(self.sd_teacher, ctx.step_options, self.device.type)
        # computed once per run, in full precision
        class_tokens = self.sd_teacher.encode_prompts([class_prompt(name) for name in ctx.class_names])
        if hp["negative"] == "domain":
            negative_prompts = [domain_prompt(ctx.env_names[env]) for env in ctx.train_envs]
        else:
            negative_prompts = [""]
        negative_tokens = self.sd_teacher.encode_prompts(negative_prompts)
        # (C, 77, D) and (train envs or 1, 77, D): frozen, rebuilt from the teacher, never checkpointed
        self.register_buffer("class_tokens", class_tokens.float(), persistent=False)
        self.register_buffer("negative_tokens", negative_tokens.float(), persistent=False)
        if hp["conditioning"] == "projected":
            self.token_map = TokenMap(self.network.head.projection.out_features, class_tokens.float().mean(0))
        self._ready()

    def trained_modules(self) -> nn.ModuleDict:
        modules = {"network": self.network}
        if self.hparams["conditioning"] == "projected":
            modules["token_map"] = self.token_map
        return nn.ModuleDict(modules)

    def negative_conditioning(self, batch_sizes: list[int]) -> torch.Tensor:
        """c_neg per sample (B, 77, D): each sample's own source domain prompt, or the empty prompt."""
        if self.hparams["negative"] == "null":
            return self.negative_tokens[0].expand(sum(batch_sizes), -1, -1)
        if len(batch_sizes) != len(self.negative_tokens):
            raise UserError(f"DDG was built for {len(self.negative_tokens)} training environments but got "
                            f"{len(batch_sizes)} minibatches; pass one minibatch per training environment")
        return torch.cat([tokens.expand(n, -1, -1) for tokens, n in zip(self.negative_tokens, batch_sizes)])

    def conditioning(self, logits: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """c (B, 77, D): the student's only way into the UNet."""
        if self.hparams["conditioning"] == "projected":
            return self.token_map(projected)
        return probs_conditioning(logits, self.class_tokens)

    def sd_precision(self):
        """Autocast for the SD teacher, unless its weights are already bf16 (then casts are waste)."""
        if self.ctx.step_options.teacher_bf16_weights and self.device.type == "cuda":
            return contextlib.nullcontext()
        return self.teacher_precision()

    def guided_diffusion_loss(self, x: torch.Tensor, cond: torch.Tensor, neg: torch.Tensor,
                              labels: torch.Tensor | None = None) -> torch.Tensor:
        """L_diff of a batch: encode, draw (t, eps), noise, then `unet_loss`; `labels` only for `target`."""
        hp, options = self.hparams, self.ctx.step_options
        n_noise = hp["n_noise"]
        with self.sd_precision():
            if options.latents_once or n_noise == 1:
                latents = self.sd_teacher.encode_images(x, hp["sd_resolution"])  # once per image view
                latents = latents.repeat_interleave(n_noise, dim=0) if n_noise > 1 else latents
            else:  # the naive way: one encode per noise draw (the benchmark's baseline)
                latents = self.sd_teacher.encode_images(x.repeat_interleave(n_noise, dim=0), hp["sd_resolution"])
        if n_noise > 1:
            cond, neg = (v.repeat_interleave(n_noise, dim=0) for v in (cond, neg))
            labels = labels.repeat_interleave(n_noise, dim=0) if labels is not None else None
        # the train loop seeds the global RNG every step; both draws come from it
        t = torch.randint(hp["t_min"], hp["t_max"] + 1, (len(latents),), device=latents.device)
        eps = torch.randn(latents.shape, device=latents.device)  # not randn_like: its draw follows the memory layout
        x_t = self.sd_teacher.add_noise(latents, t, eps)
        return self.unet_loss(x_t, t, cond, neg, eps, labels)

    def unet_loss(self, x_t, t, cond, neg, eps, labels=None) -> torch.Tensor:
        """L_diff from the UNet's guidance passes (the student's, the domain style's, and for
        `target` the label's), `unet_micro_batch` samples per call."""
        options, n = self.ctx.step_options, len(x_t)
        form, scale = self.hparams.get("guidance_form", "prediction"), self.hparams["cfg_scale"]
        guidance = batched_guidance_eps if options.batched_guidance else separate_guidance_eps
        passes = frozen_passes(form, scale)
        if "label" in passes and labels is None:
            raise ValueError("guidance_form 'target' needs the batch's labels")
        frozen_tokens = {"negative": neg, "label": self.class_tokens[labels] if "label" in passes else None}

        def slice_loss(piece: slice, cond_piece: torch.Tensor) -> torch.Tensor:
            with self.sd_precision():
                eps_cond, *eps_frozen = guidance(self.sd_teacher.predict_noise, x_t[piece], t[piece], cond_piece,
                                                 *(frozen_tokens[name][piece] for name in passes))
            predicted = {name: e.float() for name, e in zip(passes, eps_frozen)}
            loss = guidance_loss(form, eps_cond.float(), predicted.get("negative"), eps[piece], scale,
                                 predicted.get("label"))
            return loss * (len(cond_piece) / n)  # its share of the mean

        return micro_batched_loss(slice_loss, cond, options.unet_micro_batch)

    def update(self, minibatches, step):
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        image_embeddings = self.teacher_image_embeddings(x)
        if not self.in_stage_two(step):
            return self.stage_one_update(x, y, image_embeddings)
        rng_state = self._rng_state()
        while True:
            try:
                return self.stage_two_update(x, y, image_embeddings, minibatches)
            except torch.OutOfMemoryError:
                lighter = self.lighter_step_options(len(x) * self.hparams["n_noise"])
                if lighter is None:
                    raise
            # Outside the except block, so the failed attempt's activations are freed first.
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.ctx.step_options = lighter
            if lighter.unet_checkpointing:
                self.sd_teacher.unet.enable_gradient_checkpointing()
            self._restore_rng_state(rng_state)  # the retried step draws the same noise

    def lighter_step_options(self, unet_batch: int):
        """After running out of memory: halve the UNet micro-batch down to MIN_MICRO_BATCH
        samples (no extra compute), then turn on checkpointing (recompute); None when both are done."""
        options = self.ctx.step_options
        current = min(options.unet_micro_batch or unet_batch, unet_batch)
        if (current + 1) // 2 >= MIN_MICRO_BATCH:
            lighter = dataclasses.replace(options, unet_micro_batch=(current + 1) // 2)
            change = f"UNet micro-batches of {lighter.unet_micro_batch} samples"
        elif not options.unet_checkpointing:
            lighter = dataclasses.replace(options, unet_checkpointing=True)
            change = "UNet activation checkpointing (about 1.3x slower steps)"
        else:
            return None
        warnings.warn(f"Stage II ran out of GPU memory: {change} for the rest of the run "
                      "(same results)", stacklevel=3)
        return lighter

    def _rng_state(self):
        return torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)

    def _restore_rng_state(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def stage_two_update(self, x, y, image_embeddings, minibatches) -> dict:
        projected = self.student_projection(x, train_student=True)
        logits = self.network.head.logits_from_projection(projected)
        loss_align = self.alignment(projected, image_embeddings, y)
        cond = self.conditioning(logits, projected)
        neg = self.negative_conditioning([len(xb) for xb, _ in minibatches])
        loss_diff = self.guided_diffusion_loss(x, cond, neg, y)
        loss = loss_diff + self.hparams["align_weight"] * loss_align
        self.optimise(loss)
        return {"loss": loss.item(), "loss_diff": loss_diff.item(), "loss_align": loss_align.item(),
                "stage": "diffusion"}

