"""What a teacher knows, measured on labelled images (docs/tiny-teachers.md in the method notes).

- `clip_zero_shot`: the CLIP teacher's class text head as a classifier.
- `diffusion_classifier`: Stable Diffusion as a classifier (Li et al., 2023): for each image,
  `n_draws` pairs (t, eps) drawn once and shared by every class prompt; a class scores the
  mean || eps - eps_hat(x_t, t, c_k) ||^2; the lowest wins. With `cfg_scale` w and a negative
  prompt, eps_hat is DDG's guided prediction eps_neg + w (eps_k - eps_neg).
- `prompt_sensitivity`: || eps(c_true) - eps(c_null) || / || eps ||: near 0 means the
  conditioning is ignored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ddg_sweep.models.sd_teacher import class_prompt

# Timesteps in the middle of the schedule carry most class information (Li et al., 2023).
CLASSIFIER_T_RANGE = (100, 700)


@torch.no_grad()
def clip_zero_shot(clip_teacher, x: torch.Tensor, y: torch.Tensor, class_names: list[str]) -> float:
    """Accuracy of argmax cos(v(x), T_k) over ImageNet-normalised images `x`."""
    head = clip_teacher.class_text_head(class_names)
    features = F.normalize(clip_teacher.image_embeddings(x).float(), dim=-1)
    return float(((features @ head.t()).argmax(1) == y).float().mean())


def _draws(n_images: int, n_draws: int, latent_shape, generator: torch.Generator):
    """Stratified timesteps over CLASSIFIER_T_RANGE and Gaussian noise, (n_images, n_draws, ...)."""
    low, high = CLASSIFIER_T_RANGE
    edges = torch.linspace(low, high, n_draws + 1)
    offsets = torch.rand(n_images, n_draws, generator=generator)
    t = (edges[:-1] + offsets * (edges[1:] - edges[:-1])).long().clamp(low, high)
    eps = torch.randn(n_images, n_draws, *latent_shape, generator=generator)
    return t, eps


@torch.no_grad()
def diffusion_classifier(sd_teacher, x: torch.Tensor, y: torch.Tensor, class_names: list[str], resolution: int,
                         n_draws: int = 16, cfg_scale: float | None = None, negative: str | None = None,
                         seed: int = 0, batch_size: int = 256) -> float:
    """Accuracy of Stable Diffusion as a zero-shot classifier (see the module docstring)."""
    class_tokens = sd_teacher.encode_prompts([class_prompt(name) for name in class_names])
    negative_tokens = sd_teacher.encode_prompts([negative if negative is not None else ""])[0]
    x0 = sd_teacher.encode_images(x, resolution)
    t, eps = _draws(len(x0), n_draws, x0.shape[1:], torch.Generator().manual_seed(seed))
    n_classes = len(class_names)
    scores = torch.zeros(len(x0), n_classes)
    # one row per (image, draw), then every class prompt for that row
    x_t = sd_teacher.add_noise(x0.repeat_interleave(n_draws, 0), t.flatten(), eps.flatten(0, 1))
    t_rows, eps_rows = t.flatten(), eps.flatten(0, 1)
    rows_per_call = max(1, batch_size // n_classes)
    for start in range(0, len(x_t), rows_per_call):
        rows = slice(start, start + rows_per_call)
        n = len(x_t[rows])
        tokens = class_tokens.repeat(n, 1, 1)
        predicted = sd_teacher.predict_noise(x_t[rows].repeat_interleave(n_classes, 0),
                                             t_rows[rows].repeat_interleave(n_classes, 0), tokens)
        predicted = predicted.float().view(n, n_classes, *x0.shape[1:])
        if cfg_scale is not None:
            neg = sd_teacher.predict_noise(x_t[rows], t_rows[rows], negative_tokens.expand(n, -1, -1)).float()
            predicted = neg[:, None] + cfg_scale * (predicted - neg[:, None])
        errors = ((predicted - eps_rows[rows][:, None]) ** 2).flatten(2).mean(2)  # (rows, classes)
        image = torch.arange(start, start + n) // n_draws
        scores.index_add_(0, image, errors / n_draws)
    return float((scores.argmin(1) == y).float().mean())


@torch.no_grad()
def prompt_sensitivity(sd_teacher, x: torch.Tensor, y: torch.Tensor, class_names: list[str], resolution: int,
                       seed: int = 0) -> float:
    """Mean over images of ||eps(c_true) - eps(c_null)|| / ||eps(c_null)|| at mid-schedule timesteps."""
    class_tokens = sd_teacher.encode_prompts([class_prompt(name) for name in class_names])
    null = sd_teacher.encode_prompts([""])[0]
    x0 = sd_teacher.encode_images(x, resolution)
    t, eps = _draws(len(x0), 1, x0.shape[1:], torch.Generator().manual_seed(seed))
    x_t = sd_teacher.add_noise(x0, t[:, 0], eps[:, 0])
    with_class = sd_teacher.predict_noise(x_t, t[:, 0], class_tokens[y]).float()
    without = sd_teacher.predict_noise(x_t, t[:, 0], null.expand(len(x0), -1, -1)).float()
    return float(((with_class - without).flatten(1).norm(dim=1) / without.flatten(1).norm(dim=1)).mean())
