"""The `tiny` family: small students built from configs, saved, and loaded back.

Built once (seeded, so every machine builds the same weights) into the cache
folder, then read with `from_pretrained` exactly like real weights. The tiny
CLIP and Stable Diffusion teachers live in `tiny_teachers.py`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ddg_sweep.io import build_once, cache_dir
from ddg_sweep.models.hub import quiet_hf_logging

TINY_VERSION = 1
TINY_IMAGE_SIZE = 32


def tiny_dir() -> Path:
    return cache_dir() / f"tiny-v{TINY_VERSION}"


def _tiny_student_model(backbone: str):
    import transformers

    if backbone == "clip_vit-b16":
        config = transformers.CLIPVisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE, patch_size=8, projection_dim=32,
        )
        return transformers.CLIPVisionModelWithProjection(config)
    if backbone == "vit-base":
        config = transformers.ViTConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE, patch_size=8,
        )
        return transformers.ViTModel(config, add_pooling_layer=False)
    config = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], layer_type="basic",
    )
    config.image_size = TINY_IMAGE_SIZE  # ResNet configs have no size; Student reads this
    return transformers.ResNetModel(config)


def tiny_student_path(backbone: str) -> str:
    """The folder of the tiny student, built on first use."""

    def build(folder: Path) -> None:
        quiet_hf_logging()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _tiny_student_model(backbone)
        model.save_pretrained(folder)

    return str(build_once(tiny_dir() / f"student-{backbone}", build))
