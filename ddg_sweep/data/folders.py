"""Reading a DomainBed dataset from its folders, validated before any training."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ddg_sweep.data.catalog import DatasetSpec
from ddg_sweep.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class DomainData:
    """One dataset on disk: per environment, its (image path, label) samples."""

    spec: DatasetSpec
    root: Path
    class_names: list[str]  # folder names, sorted; label = index
    environments: list[list[tuple[str, int]]]

    @property
    def readable_class_names(self) -> list[str]:
        return [name.replace("_", " ") for name in self.class_names]


def expected_layout(spec: DatasetSpec) -> str:
    return f"<data-dir>/{spec.folder}/{{{','.join(spec.environments)}}}/<class>/<image>"


def _list_images(folder: Path) -> list[str]:
    return sorted(
        str(folder / name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )


def _unreadable(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}"
    return None


def read_domain_data(spec: DatasetSpec, data_dir: str | Path, check_images: bool = True) -> DomainData:
    """List every environment's images and check the layout; one-line errors otherwise."""
    root = Path(data_dir).expanduser() / spec.folder
    layout = expected_layout(spec)
    if not Path(data_dir).expanduser().is_dir():
        raise UserError(f"data dir {data_dir} does not exist; pass --data-dir pointing at a folder "
                        f"laid out as {layout}")
    if not root.is_dir():
        raise UserError(f"dataset folder {root} is missing; expected {layout}")
    class_names: list[str] | None = None
    environments = []
    for env in spec.environments:
        env_dir = root / env
        if not env_dir.is_dir():
            raise UserError(f"environment folder {env_dir} is missing; expected {layout}")
        classes = sorted(d.name for d in env_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if len(classes) != spec.n_classes:
            raise UserError(f"{env_dir} has {len(classes)} class folders, {spec.name} has "
                            f"{spec.n_classes}; expected {layout}")
        if class_names is None:
            class_names = classes
        elif classes != class_names:
            raise UserError(f"{env_dir} has other class folders than {root / spec.environments[0]}; "
                            "every environment must hold the same classes")
        samples = []
        for label, name in enumerate(classes):
            images = _list_images(env_dir / name)
            if not images:
                raise UserError(f"class folder {env_dir / name} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); expected {layout}")
            samples.extend((path, label) for path in images)
        environments.append(samples)
    if check_images:
        paths = [path for env in environments for path, _ in env]
        with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 2)) as pool:
            for path, problem in zip(paths, pool.map(_unreadable, paths, chunksize=64)):
                if problem:
                    raise UserError(f"image {path} cannot be read ({problem}); remove or replace it")
    return DomainData(spec, root, class_names, environments)
