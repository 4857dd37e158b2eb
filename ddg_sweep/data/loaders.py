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
from torch.utils.data import DataLoader, Dataset

from ddg_sweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_image, train_image
from ddg_sweep.seeding import seed_hash

EVAL_BATCH_SIZE = 128
# Evaluation images are the same at every checkpoint: each split's decoded, resized images are
# kept as uint8 (3 x size x size bytes each; PACS at 224 px: 1.5 GB) while this budget per run
# lasts, first come first kept (the splits every checkpoint reads come first); the rest stream.
EVAL_CACHE_BYTES = 4 << 30
MAX_WORKERS = 16  # per pool: beyond this the step, not decoding, is the bottleneck


def loader_workers(cpus: int, n_train_envs: int) -> tuple[list[int], int]:
    """(workers of each training loader, workers of the evaluation pool) for a trial holding `cpus`.

    The main process is one CPU; the training loaders share the other cpus - 1 (a loader left
    with none decodes in the main process), and the evaluation pool has cpus - 1 too. Training
    and evaluation take turns (train.py evaluates between steps, the training workers then idle
    with their prefetched batches, and the evaluation workers idle during training), so at most
    `cpus` processes decode at any moment."""
    spare = max(0, min(int(cpus) - 1, MAX_WORKERS))
    share, extra = divmod(spare, max(n_train_envs, 1))
    return [share + (i < extra) for i in range(n_train_envs)], spare


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
    """Training samples: item (index, augmentation seed) -> (normalised tensor, label)."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, horizontal_flip: bool = True):
        self.samples = samples
        self.image_size = image_size
        self.horizontal_flip = horizontal_flip

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        index, aug_seed = item
        path, label = self.samples[index]
        return train_image(path, self.image_size, aug_seed, self.horizontal_flip), label


class EvalImages(Dataset):
    """Every environment's samples in one list: global index -> (3 x size x size uint8, label)."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int):
        self.samples = samples
        self.image_size = image_size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return torch.from_numpy(eval_image(path, self.image_size)).permute(2, 0, 1), label


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
                  start_step, steps, num_workers: int | list[int], horizontal_flip: bool = True) -> list[DataLoader]:
    """One loader per training environment, yielding that environment's batch of each step.

    `num_workers`: per loader, one number for all or a list (`loader_workers`)."""
    workers = num_workers if isinstance(num_workers, (list, tuple)) else [num_workers] * len(train_envs)
    loaders = []
    for env, n_workers in zip(train_envs, workers, strict=True):
        dataset = ImageSamples(environments[env], image_size, horizontal_flip=horizontal_flip)
        sampler = StepBatches(splits[env].in_idx, batch_size, seed, env, start_step, steps)
        loaders.append(DataLoader(dataset, batch_sampler=sampler, num_workers=n_workers,
                                  collate_fn=_collate, persistent_workers=False,
                                  prefetch_factor=4 if n_workers else None))
    return loaders


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> ImageNet-normalised float32, the same numbers as to_normalised_tensor."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


class _Budget:
    def __init__(self, n_bytes: int):
        self.left = n_bytes

    def take(self, n_bytes: int) -> bool:
        if n_bytes > self.left:
            return False
        self.left -= n_bytes
        return True


class _SplitSampler:
    """Batches of whichever split the pool reads now (the pool's DataLoader re-iterates it each pass)."""

    def __init__(self):
        self.indices: list[int] = []

    def __iter__(self):
        for start in range(0, len(self.indices), EVAL_BATCH_SIZE):
            yield self.indices[start:start + EVAL_BATCH_SIZE]

    def __len__(self):
        return -(-len(self.indices) // EVAL_BATCH_SIZE)


class EvalPool:
    """One DataLoader over all evaluation images whose workers persist across splits and checkpoints."""

    def __init__(self, dataset: EvalImages, num_workers: int):
        self.sampler = _SplitSampler()
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 collate_fn=_collate, persistent_workers=num_workers > 0)
        self.busy = False

    def batches(self, indices: list[int]):
        if self.busy:
            raise RuntimeError("evaluation splits share one pool: read them one after the other")
        self.busy = True
        try:
            self.sampler.indices = indices
            yield from self.loader
        finally:
            self.busy = False


class EvalSplit:
    """One split's (normalised images, labels) batches; decoded once and replayed from uint8 when
    the run's budget has room for it, else decoded again at every pass."""

    def __init__(self, pool: EvalPool, indices: list[int], image_size: int, budget: _Budget):
        self.pool, self.indices, self.budget = pool, indices, budget
        self.n_bytes = len(indices) * 3 * image_size * image_size
        self.kept: list | None = None
        self.streams = False  # the budget had no room at the first pass

    def __iter__(self):
        if self.kept is not None:
            yield from ((normalise(x), y) for x, y in self.kept)
            return
        keep = not self.streams and self.budget.take(self.n_bytes)
        self.streams = not keep
        batches = []
        complete = False
        try:
            for x, y in self.pool.batches(self.indices):
                if keep:  # out of the worker's shared memory: one open file per kept batch otherwise
                    batches.append((x.clone(), y.clone()))
                yield normalise(x), y
            complete = True
        finally:
            if keep and complete:
                self.kept = batches
            elif keep:  # abandoned mid-pass: give the room back, try again next pass
                self.budget.left += self.n_bytes
                self.streams = False

    def __len__(self):
        return -(-len(self.indices) // EVAL_BATCH_SIZE)


def eval_loaders(environments, splits, image_size, num_workers,
                 cache_bytes: int = EVAL_CACHE_BYTES) -> list[tuple[str, EvalSplit]]:
    """(name, batches) for every environment's in and out split, in record order; one pool of
    `num_workers` persistent workers serves them all, read one split at a time."""
    offsets = np.cumsum([0] + [len(samples) for samples in environments])
    pool = EvalPool(EvalImages([s for samples in environments for s in samples], image_size), num_workers)
    budget = _Budget(cache_bytes)
    loaders = []
    for env in range(len(environments)):
        for part, idx in (("in", splits[env].in_idx), ("out", splits[env].out_idx)):
            indices = [int(offsets[env] + i) for i in idx]
            loaders.append((f"env{env}_{part}", EvalSplit(pool, indices, image_size, budget)))
    return loaders
