"""Which splits a checkpoint evaluates, and how many images that is; no torch, so `plan` reads it.

DomainBed's selection rules read, at each checkpoint, only the training environments' `out`
splits (training-domain validation, SWAD's loss) and the test environments' `in` and `out`
splits (the reported accuracy, the oracle, leave-one-domain-out's validation environment).
The training environments' `in` splits (most of the images) are read by no rule, so a run
evaluates them only at its last checkpoint, unless `--eval-all-splits` asks for every split at
every checkpoint as DomainBed does.
"""
from __future__ import annotations


def split_names(n_envs: int) -> list[str]:
    """Every split of a dataset, in record order: env0_in, env0_out, env1_in, ..."""
    return [f"env{env}_{part}" for env in range(n_envs) for part in ("in", "out")]


def selection_splits(n_envs: int, test_envs) -> list[str]:
    """The splits a selection rule reads (see the module docstring), in record order."""
    tested = set(test_envs)
    return [f"env{env}_{part}" for env in range(n_envs) for part in ("in", "out")
            if part == "out" or env in tested]


def evaluated_splits(n_envs: int, test_envs, last_checkpoint: bool, eval_all_splits: bool = False) -> list[str]:
    """What a checkpoint evaluates: everything at the last one (or with --eval-all-splits), else
    what selection reads."""
    if last_checkpoint or eval_all_splits:
        return split_names(n_envs)
    return selection_splits(n_envs, test_envs)


def split_sizes(env_images, holdout_fraction: float) -> dict[str, int]:
    """Images per split from each environment's image count: `out` holds int(n * holdout_fraction)
    (data/loaders.split_environment), `in` the rest."""
    sizes = {}
    for env, n in enumerate(env_images):
        n_out = int(n * holdout_fraction)
        sizes[f"env{env}_in"], sizes[f"env{env}_out"] = n - n_out, n_out
    return sizes


def checkpoint_steps(start: int, steps: int, checkpoint_freq: int) -> list[int]:
    """The steps in [start, steps) that write a record (train.run: every K-th step and the last)."""
    return [s for s in range(start, steps) if s % checkpoint_freq == 0 or s == steps - 1]
