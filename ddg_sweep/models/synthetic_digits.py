"""The tiny teachers' "web": synthetic digits in many looks, never DemoDigits' scans.

Glyphs come from two sources: printed digits in the fonts matplotlib ships (DejaVu,
STIX, Computer Modern) and handwriting-like digits drawn from stroke templates whose
control points, slant, proportions and pen width are perturbed per sample. Some glyphs
pass through a low-resolution "scan" (area-averaged to 6..16 pixels and quantised, as
thumbnails and old scans are). Each glyph is then rendered in a random look: any two
colours for ink and ground (either one the lighter), filled strokes or only their
outline, a flat, graded, wavy, speckled or blotchy ground, noise and blur. No look is
modelled on one DemoDigits environment; they are draws from one broad family.

Captions name the digit and, sometimes, words for the look ("dark", "outline",
"noisy", ...), as web captions would.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
DIGITS = tuple(range(10))

# ---------------------------------------------------------------------------- stroke templates
# Control points in a unit box (x right, y down); a digit is one or more strokes, some digits
# have variants. Points are jittered per sample and joined by a Catmull-Rom spline.
TEMPLATES: dict[int, tuple[tuple[tuple[float, float], ...], ...]] = {
    0: (tuple((0.5 + 0.36 * math.cos(a), 0.5 + 0.46 * math.sin(a))
              for a in np.linspace(-math.pi / 2, 1.55 * math.pi, 11)),),
    1: (((0.52, 0.04), (0.5, 0.96)),),
    2: (((0.15, 0.25), (0.32, 0.06), (0.58, 0.03), (0.82, 0.17), (0.8, 0.38), (0.55, 0.62), (0.15, 0.95),
         (0.5, 0.95), (0.88, 0.94)),),
    3: (((0.15, 0.12), (0.45, 0.03), (0.78, 0.14), (0.76, 0.37), (0.45, 0.48), (0.8, 0.6), (0.84, 0.82),
         (0.52, 0.97), (0.14, 0.86)),),
    4: (((0.62, 0.04), (0.38, 0.35), (0.14, 0.66), (0.5, 0.66), (0.9, 0.65)), ((0.68, 0.3), (0.68, 0.97))),
    5: (((0.26, 0.06), (0.22, 0.45), (0.5, 0.38), (0.8, 0.5), (0.83, 0.75), (0.56, 0.96), (0.15, 0.88)),
        ((0.26, 0.06), (0.55, 0.05), (0.82, 0.05))),
    6: (((0.76, 0.08), (0.46, 0.1), (0.24, 0.4), (0.18, 0.7), (0.35, 0.95), (0.66, 0.95), (0.82, 0.74),
         (0.64, 0.55), (0.36, 0.56), (0.2, 0.72)),),
    7: (((0.14, 0.07), (0.5, 0.07), (0.86, 0.08), (0.6, 0.5), (0.42, 0.96)),),
    8: (((0.5, 0.5), (0.22, 0.3), (0.3, 0.05), (0.7, 0.05), (0.8, 0.3), (0.5, 0.5), (0.16, 0.72),
         (0.3, 0.97), (0.7, 0.97), (0.85, 0.72), (0.5, 0.5)),),
    9: (((0.8, 0.3), (0.6, 0.48), (0.3, 0.47), (0.2, 0.25), (0.4, 0.05), (0.7, 0.07), (0.8, 0.3),
         (0.78, 0.6), (0.74, 0.96)),),
}
VARIANTS: dict[int, tuple] = {  # extra strokes some writers add
    1: (((0.3, 0.24), (0.52, 0.04)), ((0.3, 0.96), (0.75, 0.96))),
    7: (((0.38, 0.52), (0.78, 0.5)),),
}


def _catmull_rom(points: np.ndarray, samples_per_segment: int = 8) -> np.ndarray:
    if len(points) < 3:
        return np.linspace(points[0], points[-1], samples_per_segment + 1)
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    curve = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1:i + 3]
        for s in np.linspace(0, 1, samples_per_segment, endpoint=False):
            curve.append(0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s ** 2
                                + (3 * p1 - p0 - 3 * p2 + p3) * s ** 3))
    curve.append(points[-1])
    return np.array(curve)


def _handwritten(digit: int, rng: np.random.RandomState) -> np.ndarray:
    """A 64x64 ink map of one handwriting-like digit."""
    from PIL import Image, ImageDraw

    strokes = [np.array(s, dtype=np.float64) for s in TEMPLATES[digit]]
    for extra in VARIANTS.get(digit, ()):
        if rng.rand() < 0.4:
            strokes.append(np.array(extra, dtype=np.float64))
    jitter = rng.uniform(0.02, 0.07)
    strokes = [s + rng.normal(0, jitter, s.shape) for s in strokes]
    shear, angle = rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.25)
    aspect = rng.uniform(0.55, 1.15)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    transform = rotation @ np.array([[aspect, shear], [0.0, 1.0]])
    canvas = Image.new("L", (64, 64), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(rng.randint(3, 10))
    for stroke in strokes:
        curve = (_catmull_rom(stroke) - 0.5) @ transform.T * 44 + 32
        xy = [(float(x), float(y)) for x, y in curve]
        draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255


@lru_cache(maxsize=None)
def font_files() -> tuple[str, ...]:
    """The TrueType fonts matplotlib ships that draw all ten digits."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    wanted = ("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")
    return tuple(sorted(str(p) for p in folder.glob("*.ttf")
                        if p.stem.startswith(wanted) and "Display" not in p.stem))


def _printed(digit: int, rng: np.random.RandomState) -> np.ndarray:
    """A 64x64 ink map of one printed digit in a random font, stroke, shear and rotation."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = font_files()
    font = ImageFont.truetype(fonts[rng.randint(len(fonts))], size=int(rng.randint(30, 46)))
    canvas = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(canvas).text((32, 32), str(digit), font=font, fill=255, anchor="mm",
                                stroke_width=int(rng.randint(0, 3)), stroke_fill=255)
    shear = rng.uniform(-0.3, 0.3)
    canvas = canvas.transform((64, 64), Image.AFFINE, (1, shear, -32 * shear, 0, 1, 0), Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-12, 12), Image.BILINEAR)
    return np.asarray(canvas, dtype=np.float32) / 255


def glyph(digit: int, rng: np.random.RandomState) -> np.ndarray:
    """One digit as a 32x32 ink map in [0, 1]: size-normalised, placed, maybe low-resolution."""
    from PIL import Image

    big = _handwritten(digit, rng) if rng.rand() < 0.6 else _printed(digit, rng)
    image = Image.fromarray((big * 255).astype(np.uint8))
    box = image.getbbox() or (0, 0, 64, 64)
    image = image.crop(box)
    height = int(rng.randint(18, 30))
    width = int(np.clip(round(height * image.width / max(image.height, 1) * rng.uniform(0.8, 1.25)), 5, 30))
    image = image.resize((width, height), Image.BILINEAR)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(image, ((SIZE - width) // 2 + int(rng.randint(-3, 4)), (SIZE - height) // 2 + int(rng.randint(-2, 3))))
    ink = np.asarray(out, dtype=np.float32) / 255
    if rng.rand() < 0.5:  # a low-resolution source: area-averaged, quantised, upsampled
        low = int(rng.randint(6, 17))
        small = np.asarray(out.resize((low, low), Image.BOX), dtype=np.float32) / 255
        levels = int(rng.randint(4, 33))
        small = np.round(small / max(small.max(), 1e-6) * levels) / levels
        ink = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR),
                         dtype=np.float32) / 255
    return ink / max(float(ink.max()), 1e-6)


def render_glyphs(per_digit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 32, 32) ink maps and (N,) digit labels, N = 10 * per_digit, sorted by digit."""
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.array(DIGITS), per_digit)
    inks = np.stack([glyph(int(d), rng) for d in labels])
    return torch.from_numpy(inks)[:, None], torch.from_numpy(labels)


# ---------------------------------------------------------------------------- looks

# Words a caption may use for a look (web captions vary); `look_words` picks from these.
LOOK_WORDS = {
    "dark": ("dark", "inverted", "negative", "night"),
    "outline": ("sketch", "outline", "line drawing", "drawing"),
    "textured": ("noisy", "textured", "grainy", "patterned"),
    "plain": ("clean", "plain", "printed", "white"),
    "colour": ("colourful", "coloured", "tinted"),
    "blur": ("blurry", "soft", "faded"),
}
GROUNDS = ("flat", "gradient", "waves", "speckle", "blotches")
GROUND_ODDS = (0.35, 0.15, 0.2, 0.1, 0.2)


def _uniform(generator, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _grounds(kind: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, 32, 32) patterns in [0, 1], one of GROUNDS per sample (flat is all zeros)."""
    n = len(kind)
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    angle = _uniform(generator, (n, 1, 1, 1), 0, 2 * math.pi)
    along = (xx * angle.cos() + yy * angle.sin()) / SIZE
    gradient = (along - along.amin((2, 3), keepdim=True)) / (along.amax((2, 3), keepdim=True)
                                                            - along.amin((2, 3), keepdim=True) + 1e-6)
    freq = _uniform(generator, (n, 1, 1, 1), 3.0, 12.0)
    waves = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * along + _uniform(generator, (n, 1, 1, 1), 0, 2 * math.pi))
    speckle = torch.rand(n, 1, SIZE, SIZE, generator=generator)
    coarse = torch.rand(n, 1, int(4), int(4), generator=generator)
    blotches = F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    patterns = torch.stack([torch.zeros_like(speckle), gradient.expand_as(speckle), waves.expand_as(speckle),
                            speckle, blotches])  # (kinds, n, 1, H, W)
    return patterns[kind, torch.arange(n)]


def _blur(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Per-sample blend towards a 3x3 box blur (amount in [0, 1])."""
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x + amount * (blurred - x)


def stylise(ink: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
    """Ink maps (n, 1, 32, 32) -> RGB images in [0, 1] (n, 3, 32, 32) and each one's look tags.

    Tags are keys of LOOK_WORDS: what a caption may say about the look.
    """
    n = len(ink)
    flag = lambda p: torch.rand(n, 1, 1, 1, generator=generator) < p  # noqa: E731
    outline = flag(0.25)
    edges = (F.max_pool2d(ink, 3, 1, 1) + F.max_pool2d(-ink, 3, 1, 1)).clamp(0, 1)
    ink = torch.where(outline, (edges * _uniform(generator, (n, 1, 1, 1), 1.0, 2.5)).clamp(0, 1), ink)
    grey = flag(0.5)
    light = _uniform(generator, (n, 3, 1, 1), 0.55, 1.0)
    deep = _uniform(generator, (n, 3, 1, 1), 0.0, 0.45)
    light = torch.where(grey, light.mean(1, keepdim=True).expand(-1, 3, -1, -1), light)
    deep = torch.where(grey, deep.mean(1, keepdim=True).expand(-1, 3, -1, -1), deep)
    dark_ground = flag(0.35)
    ground, pen = torch.where(dark_ground, deep, light), torch.where(dark_ground, light, deep)
    faint = flag(0.3)  # low contrast: the ground moves part of the way toward the ink
    ground = ground + faint * _uniform(generator, (n, 1, 1, 1), 0.0, 0.5) * (pen - ground)
    kind = torch.multinomial(torch.tensor(GROUND_ODDS), n, replacement=True, generator=generator)
    pattern = _grounds(kind, generator)
    second = _uniform(generator, (n, 3, 1, 1), 0.0, 1.0)
    strength = _uniform(generator, (n, 1, 1, 1), 0.3, 0.8) * (kind != 0).view(n, 1, 1, 1)
    ground = ground + strength * pattern * (second - ground)
    image = ground + ink * (pen - ground)
    noisy = flag(0.4)
    sigma = _uniform(generator, (n, 1, 1, 1), 0.0, 0.03) + noisy * _uniform(generator, (n, 1, 1, 1), 0.03, 0.15)
    image = image + sigma * torch.randn(image.shape, generator=generator)
    blurred = flag(0.25)
    image = _blur(image, blurred * _uniform(generator, (n, 1, 1, 1), 0.5, 1.0)).clamp(0, 1)
    tags = []
    for i in range(n):
        textured = bool(noisy[i]) or int(kind[i]) in (2, 3, 4)
        look = ("dark",) if dark_ground[i] else ()
        look += ("outline",) if outline[i] else ()
        look += ("textured",) if textured else ()
        look += ("plain",) if not look else ()
        look += ("colour",) if not grey[i] else ()
        look += ("blur",) if blurred[i] else ()
        tags.append(look)
    return image, tags


def look_words(tags: tuple[str, ...], rng: np.random.RandomState, most: int = 2) -> list[str]:
    """Up to `most` words describing a look, each from a different tag, in random order."""
    chosen = [tags[i] for i in rng.permutation(len(tags))[:rng.randint(1, most + 1)]]
    return [LOOK_WORDS[tag][rng.randint(len(LOOK_WORDS[tag]))] for tag in chosen]


class SyntheticDigits:
    """A seeded bank of glyphs, drawn in seeded batches, each in a fresh random look.

    Glyphs are rendered once (the slow part); a batch indexes the bank, styles the ink
    maps and shifts them by a pixel or two.
    """

    def __init__(self, per_digit: int, seed: int):
        self.inks, self.labels = render_glyphs(per_digit, seed)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, ...]]]:
        """(size, 3, 32, 32) images in [0, 1], their digits and look tags."""
        index = torch.randint(len(self.labels), (size,), generator=self.generator)
        dy, dx = torch.randint(-2, 3, (2,), generator=self.generator).tolist()
        ink = torch.roll(self.inks[index], shifts=(dy, dx), dims=(2, 3))
        images, tags = stylise(ink, self.generator)
        return images, self.labels[index], tags
