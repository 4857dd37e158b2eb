"""Reading a DomainBed dataset from its folders, validated before any training.

The class list (label = index) is the catalogue's where it has one, else the sorted union of
every environment's class folders, so an environment that lacks a class (DomainBed's
TerraIncognita download makes a folder only where a camera location saw the class) shifts no
label; a warning names what is missing. DomainBed itself sorts each environment's folders
separately, which would shift labels there.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ddg_sweep.data.catalog import DatasetSpec
from ddg_sweep.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_warned: set[str] = set()  # dataset roots whose missing class folders were already reported


class MissingClassesWarning(UserWarning):
    """Some environment has no folder for some class (allowed; labels stay fixed)."""


@dataclass
class DomainData:
    """One dataset on disk: per environment, its (image path, label) samples."""

    spec: DatasetSpec
    root: Path
    class_names: list[str]  # label = index: the catalogue's classes, else the sorted union of folders
    environments: list[list[tuple[str, int]]]
    missing: dict[str, list[str]] = field(default_factory=dict)  # environment -> its absent class folders

    @property
    def readable_class_names(self) -> list[str]:
        return [name.replace("_", " ") for name in self.class_names]

    @property
    def missing_note(self) -> str | None:
        """One line naming the absent class folders, or None."""
        if not self.missing:
            return None
        listed = "; ".join(f"{env} lacks {', '.join(names)}" for env, names in self.missing.items())
        if len(listed) > 300:
            listed = listed[:300].rsplit(";", 1)[0] + "; ..."
        return (f"{self.root}: some environments have no folder for some classes ({listed}); "
                "labels keep the full class list, those environments just have no such images")


def expected_layout(spec: DatasetSpec) -> str:
    return f"<data-dir>/{spec.folder}/{{{','.join(spec.environments)}}}/<class>/<image>"


def _list_images(folder: Path) -> list[str]:
    return sorted(
        str(folder / name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _layout(spec: DatasetSpec, data_dir) -> tuple[DomainData | None, list[str]]:
    """The dataset's samples and every layout problem found (one line each)."""
    root = Path(data_dir).expanduser() / spec.folder
    layout = expected_layout(spec)
    if not Path(data_dir).expanduser().is_dir():
        return None, [f"data dir {data_dir} does not exist; pass --data-dir pointing at a folder "
                      f"laid out as {layout}"]
    if not root.is_dir():
        return None, [f"dataset folder {root} is missing; expected {layout}"]
    problems = []
    found: dict[str, list[str]] = {}
    for env in spec.environments:
        env_dir = root / env
        if not env_dir.is_dir():
            problems.append(f"environment folder {env_dir} is missing; expected {layout}")
        elif not (classes := _subfolders(env_dir)):
            problems.append(f"environment folder {env_dir} holds no class folders; expected {layout}")
        else:
            found[env] = classes
    union = sorted(set().union(*found.values())) if found else []
    if spec.classes is not None:
        class_names = list(spec.classes)
        for env, classes in found.items():
            strangers = [name for name in classes if name not in spec.classes]
            if strangers:
                problems.append(f"{root / env} has class folders {spec.name} does not have: "
                                f"{', '.join(strangers[:5])}; its classes are {', '.join(spec.classes)}")
    else:
        class_names = union
        if found and len(union) != spec.n_classes:
            problems.append(f"the environments of {root} have {len(union)} distinct class folders, "
                            f"{spec.name} has {spec.n_classes} classes; expected {layout}")
    if problems:
        return None, problems
    label = {name: index for index, name in enumerate(class_names)}
    environments, missing = [], {}
    for env in spec.environments:
        samples = []
        for name in found[env]:
            images = _list_images(root / env / name)
            if not images:
                problems.append(f"class folder {root / env / name} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); expected {layout}")
            samples.extend((path, label[name]) for path in images)
        absent = [name for name in class_names if name not in found[env]]
        if absent:
            missing[env] = absent
        environments.append(samples)
    if problems:
        return None, problems
    return DomainData(spec, root, class_names, environments, missing), []


def _folders(data: DomainData) -> dict[Path, list[str]]:
    """Each class folder's images, for the remembered image check."""
    folders: dict[Path, list[str]] = {}
    for samples in data.environments:
        for path, _ in samples:
            folders.setdefault(Path(path).parent, []).append(path)
    return folders


def _warn_missing(data: DomainData) -> None:
    note = data.missing_note
    if note and str(data.root) not in _warned:
        _warned.add(str(data.root))
        # explicit, with no source file: printed as one line, not followed by a line of code
        warnings.warn_explicit(note, MissingClassesWarning, filename="ddg_sweep.data", lineno=0)


def check_dataset(spec: DatasetSpec, data_dir) -> list[str]:
    """Every problem of a dataset on disk, one line each (at most 20 bad images, then a count);
    [] when it is fine. Decodes every image of a class folder not yet remembered as clean
    (ddg_sweep/data/verify.py) and remembers the clean ones; warns once about absent class folders."""
    from ddg_sweep.data.verify import bad_images, summarised

    data, problems = _layout(spec, data_dir)
    if data is None:
        return problems
    _warn_missing(data)
    return summarised(bad_images(_folders(data)))


def read_domain_data(spec: DatasetSpec, data_dir: str | Path, check_images: bool = True) -> DomainData:
    """List every environment's images and check the layout (and, remembered, the images);
    the first problem is a one-line UserError."""
    from ddg_sweep.data.verify import bad_images

    data, problems = _layout(spec, data_dir)
    if data is None:
        raise UserError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    _warn_missing(data)
    if check_images:
        bad = bad_images(_folders(data))
        if bad:
            raise UserError(bad[0] + (f" ({len(bad) - 1} more bad images)" if len(bad) > 1 else ""))
    return data
