"""The DDG losses as pure functions of tensors (docs/ddg-method.md, Stage I and II)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def alignment_loss(projected: torch.Tensor, image_embeddings: torch.Tensor, label_text_embeddings: torch.Tensor,
                   mix: float) -> torch.Tensor:
    """Stage I: L_align = -(a * mean cos(z, v) + (1 - a) * mean cos(z, t_y)).

    projected: P f(x) (B, J); image_embeddings: the CLIP teacher's v(x) (B, J);
    label_text_embeddings: T[y] (B, J); mix: a. Cosines normalise, so inputs need not.
    """
    image_term = F.cosine_similarity(projected, image_embeddings.to(projected.dtype), dim=-1).mean()
    text_term = F.cosine_similarity(projected, label_text_embeddings.to(projected.dtype), dim=-1).mean()
    return -(mix * image_term + (1 - mix) * text_term)


def probs_conditioning(logits: torch.Tensor, class_tokens: torch.Tensor) -> torch.Tensor:
    """c = sum_k softmax(logits)_k E[k]: (B, C) logits and (C, 77, D) tokens -> (B, 77, D)."""
    probs = logits.float().softmax(dim=-1)
    return torch.einsum("bk,ktd->btd", probs, class_tokens.float())


def guided_eps(eps_cond: torch.Tensor, eps_neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Domain-debiasing guidance: eps_hat = eps_neg + w * (eps_cond - eps_neg)."""
    return eps_neg + scale * (eps_cond - eps_neg)


def batched_guidance_eps(predict_noise: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                         neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_neg) from ONE UNet call on [cond; neg]; the negative half is detached.

    Every UNet operation is per sample, so this equals two separate calls, and only
    the conditional half carries gradient back to `cond`.
    """
    eps = predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, neg.detach().to(cond.dtype)]))
    eps_cond, eps_neg = eps.chunk(2)
    return eps_cond, eps_neg.detach()


def separate_guidance_eps(predict_noise: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                          neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_neg) from two UNet calls, the negative one under no-grad.

    Same numbers as `batched_guidance_eps`; the backward pass then runs through the
    conditional half only, and the negative pass stores no activations.
    """
    with torch.no_grad():
        eps_neg = predict_noise(x_t, t, neg.to(cond.dtype))
    return predict_noise(x_t, t, cond), eps_neg


def diffusion_loss(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_diff = mean ||eps_hat - eps||^2, averaged over every latent element (as SD training does)."""
    return F.mse_loss(eps_hat.float(), eps.float())
