"""DomainBed's in/out split and the loaders of one run.

Training draws, for each training environment and step, a batch that is a pure
function of (seed, environment, step): epoch-wise permutations of the `in` split
and a per-sample augmentation seed. So a run resumed at step k sees exactly the
batches an uninterrupted run would, whatever the number of loader workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ddg_sweep.data.transforms import eval_transform, train_transform
from ddg_sweep.seeding import seed_hash

EVAL_BATCH_SIZE = 128
# Evaluation images are the same at every checkpoint: a dataset whose eval tensors fit in this
# many bytes (DemoDigits: 22 MB) is decoded once per run and kept; larger ones stream each time.
EVAL_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Split:
    """Indices into one environment's samples."""

    in_idx: np.ndarray
    out_idx: np.ndarray


def split_environment(n: int, holdout_fraction: float, trial_seed: int, env_index: int) -> Split:
    """DomainBed's split: shuffle with seed_hash(trial_seed, env); the first 20 % are `out`."""
    keys = np.arange(n)
    np.random.RandomState(seed_hash(trial_seed, env_index)).shuffle(keys)
    n_out = int(n * holdout_fraction)
    return Split(in_idx=keys[n_out:], out_idx=keys[:n_out])


class ImageSamples(Dataset):
    """Loads (path, label) samples; train items carry their augmentation seed."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, train: bool,
                 horizontal_flip: bool = True):
        self.samples = samples
        self.image_size = image_size
        self.train = train
        self.horizontal_flip = horizontal_flip

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        index, aug_seed = item if self.train else (item, None)
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        if self.train:
            return train_transform(image, self.image_size, aug_seed, self.horizontal_flip), label
        return eval_transform(image, self.image_size), label


class StepBatches:
    """Batch sampler: for step s, `batch_size` (sample index, augmentation seed) pairs."""

    def __init__(self, in_idx: np.ndarray, batch_size: int, seed: int, env_index: int,
                 start_step: int, steps: int):
        self.in_idx = in_idx
        self.batch_size = batch_size
        self.seed = seed
        self.env_index = env_index
        self.start_step = start_step
        self.steps = steps
        self._perms: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.RandomState(
                seed_hash(self.seed, self.env_index, epoch)).permutation(len(self.in_idx))}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        n = len(self.in_idx)
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(position, n)
            sample = int(self.in_idx[self._permutation(epoch)[offset]])
            out.append((sample, seed_hash(self.seed, self.env_index, position)))
        return out

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield self.batch(step)

    def __len__(self):
        return self.steps - self.start_step


def _collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def train_loaders(environments, splits, train_envs, batch_size, image_size, seed,
                  start_step, steps, num_workers, horizontal_flip: bool = True) -> list[DataLoader]:
    """One loader per training environment, yielding that environment's batch of each step."""
    loaders = []
    for env in train_envs:
        dataset = ImageSamples(environments[env], image_size, train=True, horizontal_flip=horizontal_flip)
        sampler = StepBatches(splits[env].in_idx, batch_size, seed, env, start_step, steps)
        loaders.append(DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                  collate_fn=_collate, persistent_workers=False,
                                  prefetch_factor=4 if num_workers else None))
    return loaders


class KeptBatches:
    """A loader's batches, read on the first pass and replayed from memory afterwards."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.batches: list | None = None

    def __iter__(self):
        if self.batches is None:
            self.batches = list(self.loader)
        return iter(self.batches)

    def __len__(self):
        return len(self.loader)


def eval_loaders(environments, splits, image_size, num_workers,
                 cache_bytes: int = EVAL_CACHE_BYTES) -> list[tuple[str, DataLoader | KeptBatches]]:
    """(name, loader) for every environment's in and out split, in record order."""
    keep = sum(map(len, environments)) * 3 * image_size * image_size * 4 <= cache_bytes
    loaders = []
    for env, samples in enumerate(environments):
        dataset = ImageSamples(samples, image_size, train=False)
        for part, idx in (("in", splits[env].in_idx), ("out", splits[env].out_idx)):
            subset = torch.utils.data.Subset(dataset, [int(i) for i in idx])
            loader = DataLoader(subset, batch_size=EVAL_BATCH_SIZE, num_workers=num_workers, collate_fn=_collate)
            loaders.append((f"env{env}_{part}", KeptBatches(loader) if keep else loader))
    return loaders
