"""What a search maximises, computed from a job's DomainBed records alone.

- `val_acc` (the default, DomainBed's training-domain validation): a record's value is
  the mean `out`-split accuracy of the *training* environments; a job's objective is
  its best checkpoint's value (the checkpoint that selection would take). The test
  environments' accuracies are never read.
- `oracle` (test-domain validation, allowed only when asked and labelled ORACLE
  wherever it shows): a record's value is the mean `out`-split accuracy of the test
  environments; a job's objective is its last checkpoint's value (DomainBed's oracle).
  Never the test environments' `in` split, which is what tables report.

A trial evaluates one configuration on one or more jobs, one after the other
(`--search-scope dataset`: every test environment of a dataset); its objective is the
mean over its jobs. The trajectory (the objective after each checkpoint) is what ASHA
compares: trials at the same count of checkpoints have seen the same jobs.
"""
from __future__ import annotations

METRICS = ("val_acc", "oracle")
METRIC_WORDS = {"val_acc": "training-domain validation accuracy",
                "oracle": "ORACLE: test-domain validation accuracy, not a protocol result"}


def record_value(record: dict, n_envs: int, test_envs, metric: str) -> float:
    """One checkpoint's value; reads only the keys the metric allows."""
    if metric == "val_acc":
        envs = [env for env in range(n_envs) if env not in test_envs]
    elif metric == "oracle":
        envs = list(test_envs)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return sum(float(record[f"env{env}_out_acc"]) for env in envs) / len(envs)


def job_trajectory(records: list[dict], n_envs: int, test_envs, metric: str) -> list[float]:
    """The job's objective after each of its checkpoints (best so far; the last one for oracle)."""
    values, best = [], None
    for record in records:
        value = record_value(record, n_envs, test_envs, metric)
        best = value if metric == "oracle" or best is None else max(best, value)
        values.append(best)
    return values


def trial_trajectory(jobs: list[tuple[list[dict], int, tuple]], metric: str) -> list[float]:
    """Jobs run one after the other: `jobs` is [(records, n_envs, test_envs)] in trial order, the
    last possibly unfinished; after each checkpoint, the mean over the jobs started so far of
    their objective so far."""
    finished, trajectory = [], []
    for records, n_envs, test_envs in jobs:
        values = job_trajectory(records, n_envs, test_envs, metric)
        for value in values:
            trajectory.append((sum(finished) + value) / (len(finished) + 1))
        if not values:
            break
        finished.append(values[-1])
    return trajectory


def checkpoints_per_job(steps: int, checkpoint_freq: int) -> int:
    """How many records a finished job has (train.py evaluates at every multiple of the
    frequency and at the last step)."""
    return len([s for s in range(steps) if s % checkpoint_freq == 0 or s == steps - 1])
