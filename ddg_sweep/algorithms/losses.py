"""The DDG losses as pure functions of tensors (docs/method.md, Stage I and II)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ddg_sweep.hparams import GUIDANCE_FORMS


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
                         *frozen: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(eps_cond, *eps_frozen) from ONE UNet call on [cond; frozen...]; the frozen parts are detached.

    Every UNet operation is per sample, so this equals separate calls, and only the
    conditional part carries gradient back to `cond`.
    """
    k = 1 + len(frozen)
    conditioning = torch.cat([cond, *(c.detach().to(cond.dtype) for c in frozen)])
    eps = predict_noise(torch.cat([x_t] * k), torch.cat([t] * k), conditioning).chunk(k)
    return (eps[0], *(e.detach() for e in eps[1:]))


def separate_guidance_eps(predict_noise: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                          *frozen: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(eps_cond, *eps_frozen): one UNet call per frozen conditioning under no-grad, then cond's.

    Same numbers as `batched_guidance_eps`; the backward pass then runs through the
    conditional call only, the no-grad calls store no activations, and no call holds more
    samples than `x_t` (what the micro-batch and out-of-memory ladder count on).
    """
    with torch.no_grad():
        eps_frozen = [predict_noise(x_t, t, c.to(cond.dtype)) for c in frozen]
    return (predict_noise(x_t, t, cond), *eps_frozen)


def guidance_loss(form: str, eps_cond: torch.Tensor, eps_neg: torch.Tensor, eps: torch.Tensor, scale: float,
                  eps_label: torch.Tensor | None = None) -> torch.Tensor:
    """L_diff of one guidance form (docs/method.md, "Guidance forms"; the names: hparams.GUIDANCE_FORMS);
    eps_neg (the domain-style prediction) and eps_label carry no gradient.

    At w = 1 every form is plain distillation || eps_c - eps ||^2, and eps_neg may be None (the
    caller then skips its UNet pass).

    - prediction:  || eps_neg + w (eps_c - eps_neg) - eps ||^2  (the literal CFG reading; equals
      w ||eps_c - eps||^2 + w (w - 1) ||eps_c - eps_neg||^2 + terms without c: a pull toward eps_neg)
    - target:      || eps_c - sg[eps + (w - 1)(eps_label - eps_neg)] ||^2  (eps_label: the teacher
      under the label's class prompt; the target moves away from the domain style)
    - interpolate: || eps_neg + (eps_c - eps_neg) / w - eps ||^2  (the student's branch must carry
      w times the evidence beyond eps_neg)
    """
    if form not in GUIDANCE_FORMS:
        raise ValueError(f"unknown guidance form {form!r}; choose one of {', '.join(GUIDANCE_FORMS)}")
    if scale == 1.0:
        return diffusion_loss(eps_cond, eps)
    if form == "prediction":
        return diffusion_loss(guided_eps(eps_cond, eps_neg, scale), eps)
    if form == "interpolate":
        return diffusion_loss(guided_eps(eps_cond, eps_neg, 1.0 / scale), eps)
    if eps_label is None:
        raise ValueError("guidance form 'target' needs eps_label, the prediction under the label's prompt")
    target = eps.float() + (scale - 1.0) * (eps_label - eps_neg)
    return diffusion_loss(eps_cond, target.detach())


def diffusion_loss(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_diff = mean ||eps_hat - eps||^2, averaged over every latent element (as SD training does)."""
    return F.mse_loss(eps_hat.float(), eps.float())
