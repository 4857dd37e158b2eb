"""The Stage I / Stage II losses as pure functions, checked on numbers."""
import math

import torch

from ddg_sweep.algorithms.losses import (alignment_loss, batched_guidance_eps, diffusion_loss, guided_eps,
                                         probs_conditioning)


def test_alignment_loss_mixes_image_and_text_cosines():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v = torch.tensor([[3.0, 0.0], [0.0, -1.0]])  # cosines 1, -1 -> mean 0
    t = torch.tensor([[1.0, 1.0], [0.0, 5.0]])  # cosines 1/sqrt2, 1 -> mean (1/sqrt2 + 1) / 2
    text_mean = (1 / math.sqrt(2) + 1) / 2
    assert torch.isclose(alignment_loss(z, v, t, 0.5), torch.tensor(-(0.5 * 0.0 + 0.5 * text_mean)))
    assert torch.isclose(alignment_loss(z, v, t, 1.0), torch.tensor(0.0), atol=1e-7)
    assert torch.isclose(alignment_loss(z, v, t, 0.0), torch.tensor(-text_mean))


def test_probs_conditioning_is_the_probability_weighted_mix_of_class_tokens():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])  # probs [1/4, 3/4] and [1/2, 1/2]
    tokens = torch.randn(2, 77, 5)
    mixed = probs_conditioning(logits, tokens)
    torch.testing.assert_close(mixed[0], 0.25 * tokens[0] + 0.75 * tokens[1])
    torch.testing.assert_close(mixed[1], 0.5 * tokens[0] + 0.5 * tokens[1])


def test_guidance_scale_one_is_the_conditional_prediction():
    eps_cond, eps_neg = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    torch.testing.assert_close(guided_eps(eps_cond, eps_neg, 1.0), eps_cond)
    torch.testing.assert_close(guided_eps(eps_cond, eps_neg, 0.0), eps_neg)
    torch.testing.assert_close(guided_eps(eps_cond, eps_neg, 3.0), eps_neg + 3 * (eps_cond - eps_neg))


def per_sample_net(x, t, tokens):
    """A stand-in UNet whose output for a sample depends on that sample only."""
    return x * tokens.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1).float()


def test_batched_guidance_matches_two_calls_and_detaches_the_negative():
    x_t, t = torch.randn(2, 4, 3, 3), torch.tensor([5, 900])
    cond = torch.randn(2, 77, 8, requires_grad=True)
    neg = torch.randn(2, 77, 8, requires_grad=True)
    eps_cond, eps_neg = batched_guidance_eps(per_sample_net, x_t, t, cond, neg)
    torch.testing.assert_close(eps_cond, per_sample_net(x_t, t, cond))
    torch.testing.assert_close(eps_neg, per_sample_net(x_t, t, neg))
    assert not eps_neg.requires_grad
    guided_eps(eps_cond, eps_neg, 3.0).sum().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert neg.grad is None


def test_diffusion_loss_is_the_mean_squared_error():
    eps_hat, eps = torch.zeros(2, 4, 2, 2), torch.full((2, 4, 2, 2), 3.0)
    assert diffusion_loss(eps_hat, eps).item() == 9.0
