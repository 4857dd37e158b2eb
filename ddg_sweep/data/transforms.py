"""The method's image transforms, on PIL images (torchvision is not a dependency).

Train: random resized crop (scale 0.7-1), horizontal flip, colour jitter 0.3,
random grayscale 0.1; eval: resize. Both end ImageNet-normalised at the
student's input size. Each train transform draws from its own seeded RNG, so a
sample's augmentation depends only on (run seed, step, environment, position).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER = 0.3


def to_normalised_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised -> [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x * std + mean


def eval_transform(image: Image.Image, size: int) -> torch.Tensor:
    return to_normalised_tensor(image.convert("RGB").resize((size, size), Image.BILINEAR))


def _random_resized_crop(image: Image.Image, size: int, rng: random.Random) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.7, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    side = min(width, height)  # fallback: the centre square
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    h, s, v = image.convert("HSV").split()
    hue = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
    return Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8)), s, v)).convert("RGB")


def _colour_jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    ops = [
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - JITTER, 1 + JITTER)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - JITTER, 1 + JITTER)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - JITTER, 1 + JITTER)),
        lambda im: _shift_hue(im, rng.uniform(-JITTER, JITTER)),
    ]
    rng.shuffle(ops)
    for op in ops:
        image = op(image)
    return image


def train_transform(image: Image.Image, size: int, seed: int, horizontal_flip: bool = True) -> torch.Tensor:
    rng = random.Random(seed)
    image = _random_resized_crop(image.convert("RGB"), size, rng)
    if rng.random() < 0.5 and horizontal_flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = _colour_jitter(image, rng)
    if rng.random() < 0.1:
        image = image.convert("L").convert("RGB")
    return to_normalised_tensor(image)
