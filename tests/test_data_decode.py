"""Decoding at the size used (JPEG draft), the uint8 evaluation cache, and loader workers per CPU."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, JpegImagePlugin

from ddg_sweep.data import decode
from ddg_sweep.data import loaders as loaders_module
from ddg_sweep.data.loaders import eval_loaders, loader_workers, split_environment
from ddg_sweep.data.transforms import denormalise, eval_image, eval_transform, train_image

# Draft decoding against a full decode, in 0..255 after the same final resize (measured on
# photo-like images: mean 0.15, 99.9th percentile 1; benchmarks/bench_data.py, docs/performance.md).
MEAN_TOLERANCE, P999_TOLERANCE, TRAIN_P999_TOLERANCE = 0.5, 4, 8


def _photo(path, width, height, seed=0, fmt="JPEG"):
    """Smooth colour waves, sharp-edged shapes and sensor noise: a camera picture's statistics."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 128 + 40 * np.sin(xx / width * 5 + rng.rand())[..., None] * rng.uniform(0.3, 1, 3) \
        + 30 * np.cos(yy / height * 4)[..., None] * rng.uniform(0.3, 1, 3)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        draw.ellipse((x0, y0, x0 + width // 5, y0 + height // 4), fill=tuple(int(c) for c in rng.randint(0, 256, 3)))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (height, width, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, fmt, quality=90)
    return str(path)


@pytest.fixture
def full_decode(monkeypatch):
    """The decode before issue 21: no draft, no reducing_gap."""
    def switch():
        monkeypatch.setattr(decode, "DRAFT", False)
        monkeypatch.setattr(decode, "REDUCING_GAP", None)
    return switch


@pytest.fixture
def drafts(monkeypatch):
    """The (width, height) each JPEG was asked to draft to."""
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: calls.append(size) or original(self, mode, size))
    return calls


def test_draft_scale_keeps_twice_the_size_used():
    assert decode.draft_scale((2048, 1536), (224, 224)) == 2
    assert decode.draft_scale((1024, 768), (224, 224)) == 1  # 768 / 2 < 2 x 224
    assert decode.draft_scale((4000, 3000), (224, 224)) == 4
    assert decode.draft_scale((8000, 6000), (224, 224)) == 8
    assert decode.draft_scale((8000, 6000), (2000, 2000)) == 1
    for full in ((2048, 1536), (4000, 3000), (3001, 2001), (9000, 1000)):
        scale = decode.draft_scale(full, (224, 224))
        assert full[0] / scale >= 448 and full[1] / scale >= 448 or scale == 1


def test_eval_draft_matches_full_decode_and_only_large_jpegs_are_drafted(tmp_path, full_decode, drafts):
    # at 112 px: a 1024x768 JPEG is large (decoded at 512x384, each side >= 2 x 112), 512x384 is not
    large = _photo(tmp_path / "large.jpg", 1024, 768)
    medium = _photo(tmp_path / "medium.jpg", 512, 384, seed=1)
    large_png = _photo(tmp_path / "large.png", 1024, 768, seed=2, fmt="PNG")
    image, factor = decode.open_rgb(large, lambda full: (112, 112))
    assert image.size == (512, 384) and factor == (0.5, 0.5) and drafts == [(512, 384)]
    assert decode.open_rgb(medium, lambda full: (112, 112))[0].size == (512, 384)
    assert decode.open_rgb(large_png, lambda full: (112, 112))[0].size == (1024, 768)
    assert decode.open_rgb(medium, lambda full: (56, 56))[0].size == (256, 192)  # large for 56 px
    assert drafts == [(512, 384), (256, 192)]
    drafted = {path: eval_image(path, 112).astype(np.int16) for path in (large, medium, large_png)}
    full_decode()
    for path, after in drafted.items():
        before = eval_image(path, 112).astype(np.int16)
        diff = np.abs(after - before)
        assert after.shape == (112, 112, 3)
        assert diff.mean() <= MEAN_TOLERANCE and np.percentile(diff, 99.9) <= P999_TOLERANCE, path
        if path == medium:  # not drafted, and too close in size for reducing_gap to act: unchanged
            assert diff.max() == 0
        else:  # the draft (JPEG) or reducing_gap (PNG, 9x smaller) did act
            assert diff.max() > 0


def test_train_crop_is_the_same_crop_with_and_without_draft(tmp_path, full_decode):
    large = _photo(tmp_path / "large.jpg", 1024, 768, seed=3)
    drafted = [train_image(large, 112, seed) for seed in range(3)]
    full_decode()
    for seed, after in enumerate(drafted):
        before = train_image(large, 112, seed)
        diff = (denormalise(after[None]) - denormalise(before[None])).abs() * 255
        # colour jitter (contrast up to 1.3x, hue through 8-bit HSV) amplifies the draft's differences
        assert diff.mean() <= MEAN_TOLERANCE and torch.quantile(diff.flatten(), 0.999) <= TRAIN_P999_TOLERANCE
        other = train_image(large, 112, seed + 10)  # another crop differs far more than the draft does
        assert ((denormalise(other[None]) - denormalise(before[None])).abs() * 255).mean() > 10 * diff.mean()


def _folder(tmp_path, n_envs=2, per_env=10, size=(40, 30)):
    environments = []
    for env in range(n_envs):
        samples = []
        for i in range(per_env):
            path = tmp_path / f"e{env}_{i}.png"
            pixels = np.random.RandomState(100 * env + i).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            samples.append((str(path), i % 3))
        environments.append(samples)
    splits = [split_environment(len(e), 0.2, 0, i) for i, e in enumerate(environments)]
    return environments, splits


def _count_decodes(monkeypatch):
    decoded = []
    original = loaders_module.EvalImages.__getitem__
    monkeypatch.setattr(loaders_module.EvalImages, "__getitem__",
                        lambda self, index: decoded.append(index) or original(self, index))
    return decoded


def test_eval_cache_keeps_uint8_within_its_budget_and_replays_the_same_numbers(tmp_path, monkeypatch):
    environments, splits = _folder(tmp_path)
    decoded = _count_decodes(monkeypatch)
    one_image = 3 * 16 * 16
    # room for env0_in (8 images) and env1_out (2) but not also env0_out... in first-read order
    evaluation = dict(eval_loaders(environments, splits, 16, num_workers=0, cache_bytes=10 * one_image))
    order = ["env1_out", "env0_in", "env0_out", "env1_in"]
    first = {name: [(x.clone(), y.clone()) for x, y in evaluation[name]] for name in order}
    assert len(decoded) == 20
    second = {name: list(evaluation[name]) for name in order}
    assert len(decoded) == 20 + 2 + 8  # env1_out and env0_in replayed; env0_out and env1_in streamed again
    for name in order:
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first[name], second[name]))
    x, y = first["env0_in"][0]
    index = int(splits[0].in_idx[0])
    path, label = environments[0][index]
    assert x.dtype == torch.float32 and int(y[0]) == label
    assert torch.equal(x[0], eval_transform(Image.open(path), 16))  # same numbers as the plain transform


def test_loader_workers_never_exceed_the_cpus():
    assert loader_workers(8, 3) == ([3, 2, 2], 7)
    assert loader_workers(1, 3) == ([0, 0, 0], 0)
    assert loader_workers(2, 5) == ([1, 0, 0, 0, 0], 1)
    assert loader_workers(200, 5) == ([4, 3, 3, 3, 3], 16)  # capped: the step is the bottleneck
    for cpus in range(1, 20):
        for n_envs in range(1, 7):
            train, evaluation = loader_workers(cpus, n_envs)
            assert 1 + sum(train) <= cpus and 1 + evaluation <= cpus


def test_eval_workers_persist_across_splits_and_checkpoints(tmp_path):
    environments, splits = _folder(tmp_path, per_env=6)
    evaluation = eval_loaders(environments, splits, 16, num_workers=1, cache_bytes=0)
    pool = evaluation[0][1].pool
    assert all(split.pool is pool for _, split in evaluation)  # one pool for every split
    pids = []
    for _ in range(2):  # two checkpoints
        for name, split in evaluation:
            labels = [int(v) for _, y in split for v in y]
            assert len(labels) == len(split.indices)
            pids.append(tuple(w.pid for w in pool.loader._iterator._workers))
    assert len(set(pids)) == 1 and all(pid for pid in pids[0])
