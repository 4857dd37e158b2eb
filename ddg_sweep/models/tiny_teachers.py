"""The `tiny` teachers: a small CLIP (image + text) and a small Stable Diffusion.

Both are built once into the tiny cache folder: created from configs with a fixed
seed, briefly pretrained on rendered digits (`tiny_pretraining.py`) so that they
know something, and saved in the same on-disk formats as the real weights (a
transformers CLIPModel folder; a diffusers StableDiffusionPipeline folder with
model_index.json and one subfolder per component), so the real loading code reads
them unchanged. As in SD v1, the SD text encoder is the CLIP teacher's text tower.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ddg_sweep.models import tiny_pretraining as pretraining
from ddg_sweep.io import build_once
from ddg_sweep.models.hub import quiet_hf_logging
from ddg_sweep.models.tiny import TINY_IMAGE_SIZE, tiny_dir

# Bump to rebuild the teachers in existing caches (the folder names carry it).
TEACHER_VERSION = 2

TINY_JOINT_WIDTH = 32  # CLIP teacher projection_dim
TINY_SD_TEXT_WIDTH = 32  # SD text encoder width = UNet cross-attention width
PROMPT_LENGTH = 77

# Pretraining budgets (the whole build of both teachers is meant to stay around a minute on CPU)
BUILD_THREADS = 1  # tiny tensors gain little from threads, and one thread gives the same weights anywhere
CLIP_GLYPHS_PER_DIGIT = 300
CLIP_TRAINING = dict(steps=1500, batch_size=128, lr=4e-3, seed=2)
SD_GLYPHS_PER_DIGIT = 200
VAE_TRAINING = dict(steps=300, batch_size=32, lr=2e-3, kl_weight=1e-4)
UNET_TRAINING = dict(steps=600, batch_size=128, lr=2e-3, seed=4)
SD_LATENT_SCALE = 0.18215  # SD v1's; the trained VAE is rescaled so that scaled latents have unit std

# Stable Diffusion v1.4's noise schedule
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                   beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                   steps_offset=1)


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


def _text_config_kwargs(tokenizer, hidden_size: int) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=PROMPT_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@contextlib.contextmanager
def _build_context(seed: int):
    """Seeded, on BUILD_THREADS threads, leaving the caller's global RNG and thread count as they were."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _build_tiny_clip(folder: Path) -> None:
    import transformers

    quiet_hf_logging()
    tokenizer = tiny_clip_tokenizer()
    config = transformers.CLIPConfig(
        text_config=_text_config_kwargs(tokenizer, 32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=TINY_IMAGE_SIZE, patch_size=8),
        projection_dim=TINY_JOINT_WIDTH,
    )
    with _build_context(seed=0):
        model = transformers.CLIPModel(config)
        data = pretraining.RenderedDigits(per_digit=CLIP_GLYPHS_PER_DIGIT, seed=1)
        pretraining.train_clip(model, tokenizer, data, **CLIP_TRAINING)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def tiny_clip_teacher_path() -> str:
    """The folder of the tiny CLIP teacher (model and tokenizer), built on first use."""
    return str(build_once(tiny_dir() / f"clip-teacher-v{TEACHER_VERSION}", _build_tiny_clip))


def _build_tiny_sd(folder: Path) -> None:
    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    quiet_hf_logging()
    tokenizer = tiny_clip_tokenizer()
    clip = transformers.CLIPModel.from_pretrained(tiny_clip_teacher_path(), local_files_only=True)
    scheduler = DDPMScheduler(**SD_SCHEDULE)
    with _build_context(seed=0):
        text_encoder = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(**_text_config_kwargs(tokenizer, TINY_SD_TEXT_WIDTH)))
        text_encoder.load_state_dict(clip.text_model.state_dict())
        text_encoder.eval()
        # four blocks: three downsamplings, the factor 8 of SD's VAE
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
            block_out_channels=(8, 8, 16, 16), sample_size=TINY_IMAGE_SIZE,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=SD_LATENT_SCALE,
        )
        unet = UNet2DConditionModel(
            sample_size=TINY_IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_SD_TEXT_WIDTH,
        )
        data = pretraining.RenderedDigits(per_digit=SD_GLYPHS_PER_DIGIT, seed=3)
        pretraining.train_vae(vae, data, target_scale=SD_LATENT_SCALE, **VAE_TRAINING)
        vae.requires_grad_(False)

        @torch.no_grad()
        def encode_prompts(prompts: list[str]) -> torch.Tensor:
            tokens = tokenizer(prompts, padding="max_length", max_length=PROMPT_LENGTH, return_tensors="pt")
            return text_encoder(input_ids=tokens.input_ids).last_hidden_state

        pretraining.train_unet(unet, vae, encode_prompts, scheduler.alphas_cumprod.float(), data,
                               latent_scale=SD_LATENT_SCALE, **UNET_TRAINING)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)


def tiny_sd_path() -> str:
    """The folder of the tiny Stable Diffusion (diffusers pipeline layout), built on first use."""
    return str(build_once(tiny_dir() / f"stable-diffusion-v{TEACHER_VERSION}", _build_tiny_sd))
