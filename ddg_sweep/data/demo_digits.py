"""DemoDigits: scikit-learn's bundled digits in four styles, as a DomainBed dataset.

The 1,797 real 8x8 scans are split into four disjoint parts; each part becomes one
environment with its own look (clean ink on paper, inverted colours, edge sketch,
textured noise), upsampled to 32x32 and written once as PNGs in the ImageFolder
layout, so DemoDigits goes through exactly the loader PACS does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.io import build_once, cache_dir

DEMO_VERSION = 1
SIZE = 32
CLASS_FOLDERS = tuple(f"digit_{d}" for d in range(10))


def _upsample(digit: np.ndarray) -> np.ndarray:
    """8x8 in 0..16 -> 32x32 in 0..1, bilinear, with a 2-pixel margin."""
    from PIL import Image

    image = Image.fromarray((digit / 16.0 * 255).astype(np.uint8))
    inner = np.asarray(image.resize((SIZE - 4, SIZE - 4), Image.BILINEAR), dtype=np.float32) / 255
    out = np.zeros((SIZE, SIZE), np.float32)
    out[2:-2, 2:-2] = inner
    return out


def _style(env: str, ink: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """ink (32x32, 0..1) -> an RGB uint8 image in the environment's style."""
    if env == "clean":  # dark ink on white paper
        rgb = np.repeat((1 - ink)[..., None], 3, axis=2)
    elif env == "inverted":  # bright coloured ink on a dark coloured ground
        ground, colour = rng.uniform(0, 0.35, 3), rng.uniform(0.6, 1.0, 3)
        rgb = ground + ink[..., None] * (colour - ground)
    elif env == "sketch":  # only the outline of the stroke, in pencil grey
        gy, gx = np.gradient(ink)
        edges = np.clip(np.hypot(gx, gy) * 4, 0, 1)
        rgb = np.repeat((1 - 0.8 * edges)[..., None], 3, axis=2)
    else:  # "noisy": stripes and speckle over a tinted ground
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        stripes = 0.5 + 0.5 * np.sin((xx + yy * rng.uniform(-1, 1)) * rng.uniform(0.5, 1.5))
        ground = 0.3 + 0.4 * stripes[..., None] * rng.uniform(0.3, 1.0, 3)
        rgb = ground * (1 - ink[..., None]) + ink[..., None] * rng.uniform(0.0, 0.2, 3)
        rgb = rgb + rng.normal(0, 0.08, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _build(folder: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.target))
    envs = DATASETS["DemoDigits"].environments
    for env_index, env in enumerate(envs):
        rng = np.random.RandomState(1000 + env_index)
        for name in CLASS_FOLDERS:
            (folder / env / name).mkdir(parents=True)
        for i in order[env_index::len(envs)]:
            image = _style(env, _upsample(digits.images[i]), rng)
            label = int(digits.target[i])
            Image.fromarray(image).save(folder / env / CLASS_FOLDERS[label] / f"{i:04d}.png")


def demo_data_dir() -> Path:
    """The data dir holding `DemoDigits/`, generated on first use."""
    root = cache_dir() / f"data-v{DEMO_VERSION}"
    build_once(root / "DemoDigits", _build)
    return root
