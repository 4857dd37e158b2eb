"""The `tiny` family: small models of the paper's classes, pretrained and shipped with the package.

Architectures live here (built from configs); their weights were trained on synthetic
digits by `python -m ddg_sweep.run teachers --train DIR` (`tiny_training.py`, never on
DemoDigits) and ship in `tiny_weights/` in the real on-disk formats: a transformers
CLIPModel folder, a diffusers StableDiffusionPipeline folder, one folder per student
backbone. They load through the same `from_pretrained(local_files_only=True)` path as
real weights. As in SD v1, the SD text encoder is the CLIP teacher's text tower; the
tiny `clip_vit-b16` student starts as the CLIP teacher's image tower.
"""
from __future__ import annotations

import os
from pathlib import Path

from ddg_sweep.errors import UserError

TINY_IMAGE_SIZE = 32
PROMPT_LENGTH = 77
SHIPPED = Path(__file__).resolve().parent / "tiny_weights"
CLIP_FOLDER = "clip"
SD_FOLDER = "stable-diffusion"
STUDENT_FOLDER = "student-{}"

CLIP_WIDTH = 64  # text width = SD cross-attention width; the joint space is as wide
CLIP_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                   image_size=TINY_IMAGE_SIZE, patch_size=8)
SD_LATENT_SCALE = 0.18215  # SD v1's; the trained VAE is rescaled so that scaled latents have unit std
SD_RESOLUTION = 32  # the tiny VAE downsamples by 4: 8x8 latents of the 32x32 images, no upsampling
# Stable Diffusion v1.4's noise schedule
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                   beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                   steps_offset=1)


def weights_dir() -> Path:
    """The tiny weights: `$DDG_SWEEP_TINY_WEIGHTS` if set (a retrained set), else the shipped ones."""
    return Path(os.environ.get("DDG_SWEEP_TINY_WEIGHTS") or SHIPPED)


def _shipped(name: str) -> str:
    folder = weights_dir() / name
    if not folder.is_dir():
        raise UserError(f"tiny model folder {folder} is missing; reinstall ddg-sweep, or train the tiny "
                        f"models with `python -m ddg_sweep.run teachers --train DIR` and set "
                        "DDG_SWEEP_TINY_WEIGHTS=DIR")
    return str(folder)


def tiny_clip_teacher_path() -> str:
    return _shipped(CLIP_FOLDER)


def tiny_sd_path() -> str:
    return _shipped(SD_FOLDER)


def tiny_student_path(backbone: str) -> str:
    return _shipped(STUDENT_FOLDER.format(backbone))


def tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer whose vocabulary is the 256 byte symbols (no merges).

    Every text tokenises to characters, so class and domain names of any dataset are covered.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=PROMPT_LENGTH)


def text_config(tokenizer, hidden_size: int = CLIP_WIDTH) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=PROMPT_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def clip_model(tokenizer):
    import transformers

    config = transformers.CLIPConfig(text_config=text_config(tokenizer), vision_config=CLIP_VISION,
                                     projection_dim=CLIP_WIDTH)
    return transformers.CLIPModel(config)


def vae_model():
    from diffusers import AutoencoderKL

    # SD's VAE downsamples 512 px by 8 to 64x64 latents; three blocks (two downsamplings) give
    # the 32 px digits 8x8 latents without feeding the VAE upsampled pixels
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32), sample_size=SD_RESOLUTION,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        scaling_factor=SD_LATENT_SCALE,
    )


def unet_model():
    from diffusers import UNet2DConditionModel

    # cross-attention at both resolutions (8x8 and 4x4) and in the middle block; about 1.1 M
    # parameters, 8 GFLOP for a Stage II forward and backward of 48 samples
    return UNet2DConditionModel(
        sample_size=SD_RESOLUTION // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CLIP_WIDTH,
    )


def student_model(backbone: str):
    """A tiny student of `backbone`'s class, randomly initialised (training fills it)."""
    import transformers

    if backbone == "clip_vit-b16":
        config = transformers.CLIPVisionConfig(**CLIP_VISION, projection_dim=CLIP_WIDTH)
        return transformers.CLIPVisionModelWithProjection(config)
    if backbone == "vit-base":
        config = transformers.ViTConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            image_size=TINY_IMAGE_SIZE, patch_size=8,
        )
        return transformers.ViTModel(config, add_pooling_layer=False)
    config = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], layer_type="basic",
    )
    config.image_size = TINY_IMAGE_SIZE  # ResNet configs have no size; Student reads this
    return transformers.ResNetModel(config)
