"""Seeded pretraining of the tiny models on synthetic digits (`synthetic_digits.py`).

`train_clip` fits a transformers CLIPModel with the CLIP loss (class-level positives,
learned temperature); `train_vae` and `train_unet` fit Stable Diffusion's parts, the
UNet with caption dropout (10 % empty prompts, as SD v1 was trained for classifier-free
guidance) and look-only captions ("a sketch image"), so the null and domain prompts
DDG's guidance uses mean something; `train_classifier` pretrains a tiny student
backbone by supervised classification. Every function draws from explicit generators
and reports progress through `log(step, steps, message)`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ddg_sweep.models.synthetic_digits import DIGITS, SyntheticDigits, look_words

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Progress = Callable[[int, int, str], None]


def _quiet(step: int, steps: int, message: str) -> None:
    pass


def class_caption(digit: int) -> str:
    """The zero-shot prompt of DemoDigits' class `digit d` ("a photo of a {class}.")."""
    return f"a photo of a digit {digit}."


def caption(digit: int, tags: tuple[str, ...], rng: np.random.RandomState) -> str:
    """A web-like caption of a digit: the class prompt half the time, else a variant, maybe naming the look."""
    if rng.rand() < 0.5:
        return class_caption(digit)
    look = " ".join(look_words(tags, rng))
    templates = ("a {s} photo of a digit {d}.", "a {s} image of a digit {d}.", "a picture of the digit {d}.",
                 "the number {d}.", "a {s} digit {d}.")
    return templates[rng.randint(len(templates))].format(d=digit, s=look)


def sd_caption(digit: int, tags: tuple[str, ...], rng: np.random.RandomState) -> str:
    """10 % empty (the null prompt), 15 % the look only ("a sketch image": a domain prompt), else a caption."""
    draw = rng.rand()
    if draw < 0.1:
        return ""
    if draw < 0.25:
        return f"a {' '.join(look_words(tags, rng, most=1))} image"
    return caption(digit, tags, rng)


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class CaptionTokens:
    """Token ids of captions, each tokenised once; a batch is padded to its longest caption."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for text in set(captions) - set(self.ids):
            self.ids[text] = self.tokenizer(text, truncation=True).input_ids
        longest = max(len(self.ids[c]) for c in captions)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([self.ids[c] + [pad] * (longest - len(self.ids[c])) for c in captions])
        mask = torch.tensor([[1] * len(self.ids[c]) + [0] * (longest - len(self.ids[c])) for c in captions])
        return ids, mask


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _adamw(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


def _step(optimizer, loss: torch.Tensor, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ---------------------------------------------------------------------------- CLIP

def train_clip(model, tokenizer, data: SyntheticDigits, steps: int, batch_size: int, lr: float, seed: int,
               captions_per_digit: int = 4, spread_weight: float = 1.0, log: Progress = _quiet) -> None:
    """The CLIP loss of a batch of images against a few captions per digit; same digit = positive.

    Captions are class-level, so image-caption pairs would repeat each caption many times;
    scoring the images against a small deduplicated caption set instead keeps the text
    tower's gradient strong enough to leave the near-collapsed random start. `spread`
    pushes different digits' captions apart.
    """
    rng = np.random.RandomState(seed)
    tokens = CaptionTokens(tokenizer)
    optimizer = _adamw(model, lr, weight_decay=0.05)
    caption_labels = torch.tensor(DIGITS).repeat_interleave(captions_per_digit)
    different = (caption_labels[:, None] != caption_labels[None, :]).float()
    model.train()
    for step in range(steps):
        images, labels, tags = data.batch(batch_size)
        caption_tags = [tags[rng.randint(len(tags))] for _ in caption_labels]
        captions = [caption(int(d), t, rng) for d, t in zip(caption_labels, caption_tags)]
        input_ids, attention_mask = tokens(captions)
        image_features = F.normalize(model.get_image_features(
            pixel_values=normalised(images, CLIP_MEAN, CLIP_STD)).pooler_output, dim=-1)
        text_features = F.normalize(model.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask).pooler_output, dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.t()
        same = (labels[:, None] == caption_labels[None, :]).float()
        image_to_text = torch.sum(-same / same.sum(1, keepdim=True) * logits.log_softmax(1), 1).mean()
        same_t = same.t()
        present = same_t.sum(1) > 0
        text_to_image = torch.sum(-same_t / same_t.sum(1, keepdim=True).clamp(min=1)
                                  * logits.t().log_softmax(1), 1)[present].mean()
        spread = ((text_features @ text_features.t()) ** 2 * different).sum() / different.sum()
        loss = 0.5 * (image_to_text + text_to_image) + spread_weight * spread
        _step(optimizer, loss, lr, lr_factor(step, steps, steps // 20))
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log(step, steps, f"loss {loss.item():.3f}")
    model.eval()


# ---------------------------------------------------------------------------- Stable Diffusion

def vae_pixels(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """[0, 1] images -> SD's VAE input: [-1, 1] at `resolution` (as SDTeacher.encode_images does)."""
    pixels = images * 2 - 1
    if pixels.shape[-1] != resolution:
        pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return pixels


def train_vae(vae, data: SyntheticDigits, steps: int, batch_size: int, lr: float, kl_weight: float,
              target_scale: float, resolution: int, log: Progress = _quiet) -> None:
    """Reconstruction (L1 + MSE) + a small KL; then rescale so `target_scale * latent mean` has unit std."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(int(data.generator.initial_seed()) + 7)
    vae.train()
    for step in range(steps):
        pixels = vae_pixels(data.batch(batch_size)[0], resolution)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(latents).sample
        loss = (recon - pixels).abs().mean() + F.mse_loss(recon, pixels) + kl_weight * posterior.kl().mean()
        _step(optimizer, loss, lr, lr_factor(step, steps, steps // 20))
        log(step, steps, f"loss {loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(vae_pixels(data.batch(256)[0], resolution)).latent_dist.mean
                           for _ in range(4)])
        rescale_latents(vae, 1.0 / (target_scale * float(means.std())))


@torch.no_grad()
def rescale_latents(vae, factor: float) -> None:
    """Latent z -> factor * z, exactly: the encoder's mean rows scale, the decoder's input undoes it."""
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= factor
    vae.quant_conv.bias[:channels] *= factor
    vae.quant_conv.bias[channels:] += 2 * math.log(factor)  # log-variance of the scaled posterior
    vae.post_quant_conv.weight /= factor


@torch.no_grad()
def encode_bank(vae, data: SyntheticDigits, images: int, resolution: int, latent_scale: float,
                chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, list]:
    """`images` styled digits encoded once: (scaled latent means, digits, look tags)."""
    latents, labels, tags = [], [], []
    for start in range(0, images, chunk):
        x, y, t = data.batch(min(chunk, images - start))
        latents.append(vae.encode(vae_pixels(x, resolution)).latent_dist.mean * latent_scale)
        labels.append(y)
        tags += t
    return torch.cat(latents), torch.cat(labels), tags


def train_unet(unet, bank: tuple[torch.Tensor, torch.Tensor, list], encode_prompts, alphas_cumprod: torch.Tensor,
               steps: int, batch_size: int, lr: float, seed: int, log: Progress = _quiet) -> None:
    """Epsilon-prediction DDPM loss on a bank of VAE latents, conditioned on caption text states.

    The VAE and text encoder are frozen: latents are encoded once (`encode_bank`) and each
    caption's states computed once.
    """
    latents, labels, tags = bank
    rng = np.random.RandomState(seed)
    generator = torch.Generator().manual_seed(seed)
    cache: dict[str, torch.Tensor] = {}

    def states(captions: list[str]) -> torch.Tensor:
        missing = sorted(set(captions) - set(cache))
        if missing:
            cache.update(zip(missing, encode_prompts(missing)))
        return torch.stack([cache[c] for c in captions])

    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    unet.train()
    for step in range(steps):
        index = torch.randint(len(latents), (batch_size,), generator=generator)
        x0 = latents[index]
        cond = states([sd_caption(int(labels[i]), tags[i], rng) for i in index.tolist()])
        t = torch.randint(len(alphas_cumprod), (batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=cond).sample, eps)
        _step(optimizer, loss, lr, lr_factor(step, steps, steps // 20))
        log(step, steps, f"loss {loss.item():.4f}")
    unet.eval()


# ---------------------------------------------------------------------------- students

def train_classifier(backbone, features: Callable, width: int, data: SyntheticDigits, steps: int,
                     batch_size: int, lr: float, log: Progress = _quiet) -> None:
    """Supervised digit classification through a throw-away linear head (ImageNet-normalised input)."""
    head = torch.nn.Linear(width, len(DIGITS))
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    backbone.train()
    for step in range(steps):
        images, labels, _ = data.batch(batch_size)
        loss = F.cross_entropy(head(features(normalised(images, IMAGENET_MEAN, IMAGENET_STD))), labels)
        _step(optimizer, loss, lr, lr_factor(step, steps, steps // 20))
        log(step, steps, f"loss {loss.item():.3f}")
    backbone.eval()
