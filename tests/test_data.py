import numpy as np
import pytest
import torch
from PIL import Image

from ddg_sweep.data.catalog import DATASETS, check_test_envs, get_dataset_spec
from ddg_sweep.data.demo_digits import demo_data_dir
from ddg_sweep.data.folders import read_domain_data
from ddg_sweep.data import loaders as loaders_module
from ddg_sweep.data.loaders import StepBatches, eval_loaders, split_environment, train_loaders
from ddg_sweep.data.transforms import denormalise, eval_transform, train_transform
from ddg_sweep.errors import UserError


def test_split_is_deterministic_disjoint_and_complete():
    a = split_environment(101, 0.2, trial_seed=3, env_index=1)
    b = split_environment(101, 0.2, trial_seed=3, env_index=1)
    assert np.array_equal(a.in_idx, b.in_idx) and np.array_equal(a.out_idx, b.out_idx)
    assert len(a.out_idx) == 20 and len(a.in_idx) == 81
    assert not set(a.in_idx) & set(a.out_idx)
    assert sorted(np.concatenate([a.in_idx, a.out_idx])) == list(range(101))
    other_trial = split_environment(101, 0.2, trial_seed=4, env_index=1)
    other_env = split_environment(101, 0.2, trial_seed=3, env_index=2)
    assert not np.array_equal(a.out_idx, other_trial.out_idx)
    assert not np.array_equal(a.out_idx, other_env.out_idx)


def test_step_batches_are_a_function_of_the_step():
    in_idx = np.arange(10, 30)
    full = StepBatches(in_idx, 8, seed=1, env_index=0, start_step=0, steps=6)
    resumed = StepBatches(in_idx, 8, seed=1, env_index=0, start_step=4, steps=6)
    assert list(full)[4:] == list(resumed)
    first_epoch = [i for step in range(2) for i, _ in full.batch(step)] + [i for i, _ in full.batch(2)[:4]]
    assert sorted(first_epoch) == list(range(10, 30))  # each epoch visits every sample once


def test_demo_digits_is_an_imagefolder_dataset_with_four_styles():
    data = read_domain_data(DATASETS["DemoDigits"], demo_data_dir())
    assert [len(env) for env in data.environments] == [450, 449, 449, 449]
    assert data.readable_class_names[3] == "digit 3"
    means = []
    for env in data.environments:
        pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p, _ in env[:50]])
        assert pixels.shape[1:] == (32, 32, 3)
        means.append(pixels.mean())
    assert means[0] > 180 and means[1] < 100  # clean paper is bright, inverted is dark
    assert len({round(m) for m in means}) == 4


def test_transforms_shape_range_and_determinism():
    image = Image.new("RGB", (40, 30), (200, 50, 10))
    a, b = train_transform(image, 32, seed=7), train_transform(image, 32, seed=7)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, train_transform(image, 32, seed=8))
    e = eval_transform(image, 32)
    assert torch.allclose(denormalise(e[None])[0, :, 0, 0], torch.tensor([200, 50, 10]) / 255, atol=1e-5)


def test_loaders_give_one_batch_per_training_env(tmp_path):
    data = read_domain_data(DATASETS["DemoDigits"], demo_data_dir())
    splits = [split_environment(len(e), 0.2, 0, i) for i, e in enumerate(data.environments)]
    loaders = train_loaders(data.environments, splits, [1, 2, 3], 4, 32, seed=0, start_step=0, steps=2,
                            num_workers=0)
    steps = list(zip(*loaders))
    assert len(steps) == 2 and len(steps[0]) == 3
    x, y = steps[0][0]
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long


def test_small_eval_sets_are_decoded_once_and_replayed_unchanged(monkeypatch):
    data = read_domain_data(DATASETS["DemoDigits"], demo_data_dir())
    splits = [split_environment(len(e), 0.2, 0, i) for i, e in enumerate(data.environments)]
    decoded = []
    original = loaders_module.EvalImages.__getitem__
    monkeypatch.setattr(loaders_module.EvalImages, "__getitem__",
                        lambda self, item: decoded.append(item) or original(self, item))
    kept = eval_loaders(data.environments, splits, 32, num_workers=0)
    first = [(name, [x.clone() for x, _ in loader]) for name, loader in kept]
    assert len(decoded) == sum(map(len, data.environments))
    second = [(name, [x for x, _ in loader]) for name, loader in kept]
    assert len(decoded) == sum(map(len, data.environments))  # nothing decoded again
    assert all(a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1])) for a, b in zip(first, second))
    streamed = eval_loaders(data.environments, splits, 32, num_workers=0, cache_bytes=0)
    [x for _, loader in streamed for x, _ in loader]
    [x for _, loader in streamed for x, _ in loader]
    assert len(decoded) == 3 * sum(map(len, data.environments))  # too large to keep: read every time


def _make_pacs(root, skip_env=None, empty_class=None, corrupt=None):
    spec = DATASETS["PACS"]
    for env in spec.environments:
        if env == skip_env:
            continue
        for c in range(spec.n_classes):
            folder = root / "PACS" / env / f"class{c}"
            folder.mkdir(parents=True)
            if (env, c) == empty_class:
                continue
            Image.new("RGB", (8, 8), (c * 30, 0, 0)).save(folder / "a.png")
    if corrupt:
        (root / "PACS" / corrupt / "class0" / "bad.jpg").write_bytes(b"not an image")


def test_valid_pacs_layout_reads(tmp_path):
    _make_pacs(tmp_path)
    data = read_domain_data(DATASETS["PACS"], tmp_path)
    assert [len(e) for e in data.environments] == [7, 7, 7, 7]
    assert data.environments[0][3][1] == 3


@pytest.mark.parametrize("case,fragment", [
    ("missing_dir", "does not exist"),
    ("missing_dataset", "dataset folder"),
    ("missing_env", "environment folder"),
    ("empty_class", "holds no images"),
    ("corrupt", "cannot be read"),
])
def test_bad_data_is_a_one_line_user_error(tmp_path, case, fragment):
    if case == "missing_env":
        _make_pacs(tmp_path, skip_env="cartoon")
    elif case == "empty_class":
        _make_pacs(tmp_path, empty_class=("sketch", 2))
    elif case == "corrupt":
        _make_pacs(tmp_path, corrupt="photo")
    elif case == "missing_dataset":
        (tmp_path / "other").mkdir()
    data_dir = tmp_path / "nowhere" if case == "missing_dir" else tmp_path
    with pytest.raises(UserError) as err:
        read_domain_data(DATASETS["PACS"], data_dir)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    assert "PACS" in message or "nowhere" in message


def test_catalogue_checks():
    with pytest.raises(UserError, match="unknown dataset"):
        get_dataset_spec("MNIST")
    with pytest.raises(UserError, match="out of range"):
        check_test_envs(DATASETS["PACS"], [4])
    assert check_test_envs(DATASETS["DomainNet"], [5, 0]) == (0, 5)
