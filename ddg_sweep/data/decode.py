"""Opening an image file at the size it is used, with one-line errors naming the file.

A JPEG much larger than its use is decoded with libjpeg's DCT scaling (`Image.draft`: 1/2,
1/4 or 1/8 of each side, chosen so the decoded image keeps at least DRAFT_MARGIN times the
pixels the resize needs), then resized with `reducing_gap`. The pixel difference against a
full decode is measured in docs/performance.md ("Data"). Other formats decode in full.
Nothing here imports torch.
"""
from __future__ import annotations

from typing import Callable

from PIL import Image

from ddg_sweep.errors import UserError

DRAFT_MARGIN = 2  # decoded side >= 2x the side the resize produces
REDUCING_GAP = 3.0  # Pillow: box-reduce by an integer factor first while >= 3x the target remains
DRAFT = True  # False decodes every JPEG in full (benchmarks/bench_data.py's "before")


def bomb_problem(image: Image.Image) -> str | None:
    """PIL's decompression-bomb rule, as text: over MAX_IMAGE_PIXELS is refused, not warned."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        return (f"{width}x{height} pixels is over PIL's decompression-bomb limit of {limit}; "
                "shrink it or raise PIL.Image.MAX_IMAGE_PIXELS")
    return None


class BadImage(UserError):
    """An image that cannot be decoded; one line even when a DataLoader worker raised it."""

    def __init__(self, message: str):
        if "\n" in message:  # torch re-raises a worker's error as type(err)(its traceback as text)
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def bad_image(path: str, err: BaseException | str) -> BadImage:
    detail = err if isinstance(err, str) else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return BadImage(f"image {path} cannot be read ({detail.rstrip(': ')}); remove or replace it")


def draft_scale(full: tuple[int, int], needed: tuple[float, float]) -> int:
    """The DCT scale (1, 2, 4, 8) `Image.draft` picks when each side must stay >= DRAFT_MARGIN x needed."""
    scale = min(full[0] / (DRAFT_MARGIN * needed[0]), full[1] / (DRAFT_MARGIN * needed[1]))
    return max([s for s in (1, 2, 4, 8) if s <= scale], default=1)


def open_rgb(path: str, needed: Callable[[tuple[int, int]], tuple[float, float]] | None = None,
             draft: bool | None = None) -> tuple[Image.Image, tuple[float, float]]:
    """(decoded RGB image, (x, y) factor from the file's pixel coordinates to the decoded one's).

    `needed(full size)`: the (width, height) the whole image would have at the resolution the
    caller resizes to; a JPEG at least 2 * DRAFT_MARGIN times that in both sides is decoded
    reduced, unless `draft` (default: DRAFT, on) is False."""
    draft = DRAFT if draft is None else draft
    try:
        with Image.open(path) as image:
            problem = bomb_problem(image)
            if problem:
                raise bad_image(path, problem)
            full = image.size
            wanted = needed(full) if needed is not None else None  # always called: it may draw the crop
            if draft and wanted is not None and image.format == "JPEG":
                scale = draft_scale(full, wanted)
                if scale > 1:
                    image.draft("RGB", (full[0] // scale, full[1] // scale))
            rgb = image.convert("RGB")
    except BadImage:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types on malformed files
        raise bad_image(path, err) from None
    return rgb, (rgb.size[0] / full[0], rgb.size[1] / full[1])


def resized(image: Image.Image, size: tuple[int, int], box=None) -> Image.Image:
    """Bilinear resize (of `box`, in `image`'s coordinates) with Pillow's reducing_gap."""
    return image.resize(size, Image.BILINEAR, box=box, reducing_gap=REDUCING_GAP)
