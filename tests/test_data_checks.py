"""Dataset folders DomainBed accepts, bad images as one line, and the remembered image check."""
import os
import warnings

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.data.decode import BadImage, open_rgb
from ddg_sweep.data.folders import MissingClassesWarning, check_dataset, read_domain_data
from ddg_sweep.errors import UserError

PACS = DATASETS["PACS"]
TERRA = DATASETS["TerraIncognita"]


def _jpeg(path, seed, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _dataset(root, spec, classes, skip=(), per_class=2):
    """spec's folder under root: every environment x class (minus `skip` (env, class) pairs)."""
    for e, env in enumerate(spec.environments):
        for c, name in enumerate(classes):
            if (env, name) not in skip:
                for i in range(per_class):
                    _jpeg(root / spec.folder / env / name / f"{i}.jpg", seed=1000 * e + 10 * c + i)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDG_SWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _labels(data, env_index):
    return {os.path.basename(os.path.dirname(p)): y for p, y in data.environments[env_index]}


def test_missing_class_folder_keeps_labels_fixed_and_warns_once(tmp_path, cache):
    classes = [f"class{c}" for c in range(7)]
    _dataset(tmp_path, PACS, classes, skip={("cartoon", "class3"), ("sketch", "class0")})
    with pytest.warns(MissingClassesWarning) as caught:
        data = read_domain_data(PACS, tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and "cartoon lacks class3" in message and "sketch lacks class0" in message
    assert data.class_names == classes
    assert data.missing == {"cartoon": ["class3"], "sketch": ["class0"]}
    # DomainBed sorts each environment's folders alone: class4 would be label 3 in cartoon.
    cartoon = _labels(data, PACS.environments.index("cartoon"))
    assert "class3" not in cartoon and cartoon["class4"] == 4 and cartoon["class6"] == 6
    assert _labels(data, PACS.environments.index("sketch"))["class1"] == 1
    assert [len(env) for env in data.environments] == [14, 12, 14, 12]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process, not at every read
        read_domain_data(PACS, tmp_path)


def test_catalogue_class_list_fixes_labels_even_if_no_environment_has_a_class(tmp_path, cache):
    present = [name for name in TERRA.classes if name != "bobcat"]  # no location has a bobcat folder
    _dataset(tmp_path, TERRA, present, skip={("location_38", "squirrel")}, per_class=1)
    with pytest.warns(MissingClassesWarning, match="location_38 lacks bobcat, squirrel"):
        data = read_domain_data(TERRA, tmp_path)
    assert data.class_names == list(TERRA.classes)
    assert _labels(data, 0)["squirrel"] == TERRA.classes.index("squirrel") == 9
    assert _labels(data, 1)["raccoon"] == 8 and "squirrel" not in _labels(data, 1)
    _jpeg(tmp_path / "terra_incognita" / "location_46" / "zebra" / "0.jpg", seed=0)
    with pytest.raises(UserError, match="location_46 has class folders TerraIncognita does not have: zebra"):
        read_domain_data(TERRA, tmp_path)


def test_class_folders_beyond_the_dataset_are_refused(tmp_path, cache):
    _dataset(tmp_path, PACS, [f"class{c}" for c in range(7)])
    _jpeg(tmp_path / "PACS" / "photo" / "extra" / "0.jpg", seed=1)
    problems = check_dataset(PACS, tmp_path)
    assert problems == [f"the environments of {tmp_path / 'PACS'} have 8 distinct class folders, PACS has 7 "
                        "classes; expected <data-dir>/PACS/{art_painting,cartoon,photo,sketch}/<class>/<image>"]


def _truncated(path):
    _jpeg(path, seed=5, size=(200, 150))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", ["truncated", "bomb", "bomb_warning", "not_an_image"])
def test_bad_image_is_one_line_naming_the_file(tmp_path, cache, monkeypatch, case):
    _dataset(tmp_path, PACS, [f"class{c}" for c in range(7)], per_class=1)
    bad = tmp_path / "PACS" / "photo" / "class2" / "bad.jpg"
    if case == "truncated":
        _truncated(bad)
    elif case == "not_an_image":
        bad.write_bytes(b"\xff\xd8 not a jpeg")
    else:  # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; both are refused
        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
        side = 40 if case == "bomb_warning" else 50  # 1600 or 2500 pixels
        _jpeg(bad, seed=3, size=(side, side))  # the others have 480 pixels
    with pytest.raises(UserError) as err:
        read_domain_data(PACS, tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"image {bad} cannot be read (")
    expected = {"truncated": "truncated", "bomb": "decompression", "bomb_warning": "decompression",
                "not_an_image": "UnidentifiedImageError"}[case]
    assert expected in message.lower() or expected in message
    assert check_dataset(PACS, tmp_path) == [message]
    with pytest.raises(BadImage) as decoded:  # the loaders' own decode says the same file
        open_rgb(str(bad), lambda full: (8, 8))
    assert "\n" not in str(decoded.value) and str(bad) in str(decoded.value)


def test_a_bad_image_read_by_a_loader_worker_is_still_one_line(tmp_path):
    import torch

    from ddg_sweep.data.loaders import EvalImages

    bad = tmp_path / "bad.jpg"
    _truncated(bad)
    batches = iter(torch.utils.data.DataLoader(EvalImages([(str(bad), 0)], 16), num_workers=1))
    try:
        with pytest.raises(BadImage) as err:
            next(batches)
    finally:
        batches._shutdown_workers()  # now, not after the 5 s join timeout
    message = str(err.value)
    assert message.startswith(f"image {bad} cannot be read (OSError: image file is truncated") and "\n" not in message


class _OpenCounter:
    def __init__(self, monkeypatch):
        self.paths = []
        original = PIL.Image.open

        def counting(fp, *args, **kwargs):
            self.paths.append(str(fp))
            return original(fp, *args, **kwargs)
        monkeypatch.setattr(PIL.Image, "open", counting)

    def take(self):
        paths, self.paths = self.paths, []
        return sorted(set(paths))


def test_image_check_is_remembered_and_redone_for_changed_folders(tmp_path, cache, monkeypatch):
    _dataset(tmp_path, PACS, [f"class{c}" for c in range(7)])
    every = sorted(str(p) for p in (tmp_path / "PACS").rglob("*.jpg"))
    opened = _OpenCounter(monkeypatch)
    assert check_dataset(PACS, tmp_path) == []
    assert opened.take() == every  # the first check decodes each image
    assert len(list((cache / "image-checks").rglob("*.json"))) == 28  # one marker per class folder
    assert check_dataset(PACS, tmp_path) == [] and opened.take() == []  # remembered: nothing opened
    read_domain_data(PACS, tmp_path)
    assert opened.take() == []  # a trial's read uses the same memory

    changed = tmp_path / "PACS" / "cartoon" / "class4"
    _jpeg(changed / "0.jpg", seed=99, size=(30, 20))  # replaced: another size
    os.utime(tmp_path / "PACS" / "sketch" / "class1" / "1.jpg", ns=(1, 1))  # touched only
    _jpeg(tmp_path / "PACS" / "photo" / "class0" / "new.jpg", seed=7)  # added
    assert check_dataset(PACS, tmp_path) == []
    assert opened.take() == sorted(
        [str(changed / "0.jpg"), str(changed / "1.jpg"), str(tmp_path / "PACS" / "sketch" / "class1" / "0.jpg"),
         str(tmp_path / "PACS" / "sketch" / "class1" / "1.jpg")]
        + [str(tmp_path / "PACS" / "photo" / "class0" / name) for name in ("0.jpg", "1.jpg", "new.jpg")])

    _truncated(tmp_path / "PACS" / "art_painting" / "class6" / "1.jpg")  # broken after it was checked
    problems = check_dataset(PACS, tmp_path)
    assert len(problems) == 1 and "art_painting/class6/1.jpg cannot be read" in problems[0]
    assert len(check_dataset(PACS, tmp_path)) == 1  # a bad folder is never remembered
