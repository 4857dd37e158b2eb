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

from ddg_sweep.data.decode import open_rgb, resized

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
    return to_normalised_tensor(resized(image.convert("RGB"), (size, size)))


def eval_image(path: str, size: int) -> np.ndarray:
    """The file at `path` as the eval transform sees it, before normalisation: size x size x 3 uint8."""
    image, _ = open_rgb(path, lambda full: (size, size))
    return np.array(resized(image, (size, size)), dtype=np.uint8)  # a writable copy, for torch


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Random resized crop (area 0.7-1, aspect 3/4-4/3) in the image's own pixel coordinates."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.7, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    side = min(width, height)  # fallback: the centre square
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


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


def _augment(image: Image.Image, box, size: int, rng: random.Random, horizontal_flip: bool) -> torch.Tensor:
    image = resized(image, (size, size), box=box)
    if rng.random() < 0.5 and horizontal_flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = _colour_jitter(image, rng)
    if rng.random() < 0.1:
        image = image.convert("L").convert("RGB")
    return to_normalised_tensor(image)


def train_transform(image: Image.Image, size: int, seed: int, horizontal_flip: bool = True) -> torch.Tensor:
    rng = random.Random(seed)
    image = image.convert("RGB")
    return _augment(image, crop_box(*image.size, rng), size, rng, horizontal_flip)


def train_image(path: str, size: int, seed: int, horizontal_flip: bool = True) -> torch.Tensor:
    """`train_transform` of the file at `path`; the crop is drawn in the file's own pixel
    coordinates, so a drafted (reduced) decode gets the same crop as a full one."""
    rng = random.Random(seed)
    box = []

    def needed(full):  # the decoded crop must keep DRAFT_MARGIN x `size` pixels per side
        box.extend(crop_box(*full, rng))
        return size * full[0] / (box[2] - box[0]), size * full[1] / (box[3] - box[1])

    image, (fx, fy) = open_rgb(path, needed)
    scaled = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
    return _augment(image, scaled, size, rng, horizontal_flip)
