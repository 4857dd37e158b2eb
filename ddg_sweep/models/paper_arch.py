"""Full-size architectures of the paper's models with random weights, for benchmarks.

SD v1.4 (UNet, VAE, CLIP ViT-L/14 text encoder), the CLIP ViT-L/14 teacher and the
CLIP ViT-B/16 student, built from their published configs: nothing is downloaded,
and step speed does not depend on the weights. The tokenizer is the byte-level
tiny one (token ids stay inside the real vocabulary).
"""
from __future__ import annotations

import torch

SD_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_L14_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, hidden_act="quick_gelu")
CLIP_B16_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16, hidden_act="quick_gelu", projection_dim=512)


def paper_arch_student():
    import transformers

    from ddg_sweep.models.student import Student

    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**CLIP_B16_VISION))
    return Student("clip_vit-b16", model)


def paper_arch_clip_teacher():
    import transformers

    from ddg_sweep.models.clip_teacher import CLIPTeacher
    from ddg_sweep.models.tiny import tiny_clip_tokenizer

    config = transformers.CLIPConfig(text_config=SD_TEXT, vision_config=CLIP_L14_VISION, projection_dim=768)
    return CLIPTeacher(transformers.CLIPModel(config), tiny_clip_tokenizer())


def paper_arch_unet():
    """SD v1.4's UNet (unet/config.json), random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def paper_arch_vae():
    """SD v1.4's VAE (vae/config.json), random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def paper_arch_sd_teacher():
    import transformers
    from diffusers import DDPMScheduler

    from ddg_sweep.models.sd_teacher import SDTeacher
    from ddg_sweep.models.tiny import SD_SCHEDULE, tiny_clip_tokenizer

    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD_TEXT))
    alphas_cumprod = DDPMScheduler(**SD_SCHEDULE).alphas_cumprod
    return SDTeacher(paper_arch_vae(), paper_arch_unet(), text_encoder, tiny_clip_tokenizer(), alphas_cumprod)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
