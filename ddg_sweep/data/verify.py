"""Decoding every image of a dataset once, and remembering which folders passed.

A class folder that decoded cleanly is remembered in the cache ($DDG_SWEEP_CACHE/image-checks/)
under a hash of its listing: every image's name, size in bytes and mtime. Later trials and
later sweeps over the same, unchanged folder skip it; an added, removed, replaced or touched
file changes the hash and the folder is decoded again. A folder with a bad image is never
remembered. The marker files are written atomically, so concurrent trials race harmlessly.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ddg_sweep.io import atomic_write_json, cache_dir

CHECK_VERSION = 1  # bump when what the check decodes changes: older markers then no longer match
MAX_LISTED = 20  # problems listed before "... and N more"


def listing_key(folder: Path, images: list[str]) -> str:
    """Hash of (name, bytes, mtime_ns) of each image of a folder: what the check's result depends on."""
    digest = hashlib.sha256(f"ddg-sweep image check v{CHECK_VERSION}\n".encode())
    for path in images:
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _marker(key: str) -> Path:
    return cache_dir() / "image-checks" / key[:2] / f"{key}.json"


def image_problem(path: str) -> str | None:
    """Why the image at `path` cannot be used (one line), or None: opened and decoded whole.

    JPEGs decode at 1/8 scale: libjpeg still reads every entropy-coded block, so truncation and
    broken streams are found at a fraction of a full decode's cost."""
    from PIL import Image

    from ddg_sweep.data.decode import bomb_problem

    try:
        with Image.open(path) as image:
            problem = bomb_problem(image)
            if problem:
                return problem
            jpeg = image.format == "JPEG"
            if jpeg:
                image.draft(image.mode, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
                image.load()
            else:
                image.verify()  # checksums (PNG) that load() does not look at
        if not jpeg:
            with Image.open(path) as image:  # verify() leaves the image unusable: open again
                image.load()
    except Exception as err:  # noqa: BLE001 - PIL raises many types on malformed files
        first = str(err).splitlines()[0] if str(err) else ""
        return f"{type(err).__name__}: {first}" if first else type(err).__name__
    return None


def bad_images(folders: dict[Path, list[str]], workers: int | None = None) -> list[str]:
    """One-line problems ("image PATH cannot be read (...)") of the folders' images, in order;
    folders remembered as clean are skipped, clean ones are remembered."""
    from PIL import Image

    keys = {folder: listing_key(folder, images) for folder, images in folders.items()}
    todo = [folder for folder in folders if not _marker(keys[folder]).exists()]
    paths = [path for folder in todo for path in folders[folder]]
    if not paths:
        return []
    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with warnings.catch_warnings():  # a decompression-bomb warning is a problem, not a message
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = dict(zip(paths, pool.map(image_problem, paths, chunksize=32)))
    problems = []
    for folder in todo:
        bad = [(path, found[path]) for path in folders[folder] if found[path]]
        problems.extend(f"image {path} cannot be read ({problem}); remove or replace it" for path, problem in bad)
        if not bad:
            atomic_write_json(_marker(keys[folder]), {"folder": str(folder), "images": len(folders[folder]),
                                                     "version": CHECK_VERSION})
    return problems


def summarised(problems: list[str]) -> list[str]:
    """At most MAX_LISTED problems, then one line counting the rest."""
    if len(problems) <= MAX_LISTED:
        return problems
    return problems[:MAX_LISTED] + [f"... and {len(problems) - MAX_LISTED} more bad images"]


def forget_checks() -> None:
    """Drop every remembered check (tests; or after changing files without changing sizes or mtimes)."""
    import shutil

    shutil.rmtree(cache_dir() / "image-checks", ignore_errors=True)

