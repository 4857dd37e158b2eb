"""Table cells from the selected runs: mean and standard error over trial seeds, as DomainBed.

A per-environment cell is the selected test accuracies of its trial seeds. A
dataset's averages cell (test_env -1) follows DomainBed's collect_results: each
trial seed's accuracies are averaged over the test environments *that trial
has*, then mean and standard error are taken over trial seeds; so a trial
missing an environment still counts. `complete` says whether every trial seed
has every environment (False: the cell is marked in markdown/LaTeX); `ties`
counts the selections in the cell that the tie rule decided (rules.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

AVERAGE_ENV = -1  # test_env of a dataset's row in the averages table
TABLE_COLUMNS = ["selection", "dataset", "algorithm", "test_env", "env_name", "mean", "sem", "n",
                 "complete", "ties"]
CELL_KEYS = ["selection", "dataset", "algorithm"]


def percent_mean_and_sem(accs: np.ndarray) -> tuple[float, float]:
    # DomainBed's format_mean arithmetic, so printed digits agree.
    return 100 * float(np.mean(accs)), 100 * float(np.std(accs / np.sqrt(len(accs))))


def _segments(keys: list[np.ndarray]) -> np.ndarray:
    """Start offsets of the runs of equal consecutive key tuples (rows already sorted)."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    change = np.zeros(len(keys[0]), dtype=bool)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def cell_table(selected: pd.DataFrame, env_names: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (selection, dataset, algorithm, test_env) plus each dataset's average row."""
    if not len(selected):
        return pd.DataFrame(columns=TABLE_COLUMNS)
    selected = selected.sort_values(CELL_KEYS + ["test_env", "trial_seed"], kind="stable")
    cell_keys = [selected[k].to_numpy().astype(str) for k in CELL_KEYS]
    env = selected["test_env"].to_numpy(dtype=np.int64)
    trial = selected["trial_seed"].to_numpy(dtype=np.int64)
    acc = selected["test_acc"].to_numpy(dtype=float)
    tie = selected["tie_decided"].to_numpy(dtype=bool)
    rows = []
    group_starts = _segments(cell_keys)
    for g, start in enumerate(group_starts):
        stop = group_starts[g + 1] if g + 1 < len(group_starts) else len(env)
        selection, dataset, algorithm = (key[start] for key in cell_keys)
        names = env_names.get(dataset, [])
        trials = np.unique(trial[start:stop])
        env_starts = _segments([env[start:stop]]) + start
        for e, env_start in enumerate(env_starts):
            env_stop = env_starts[e + 1] if e + 1 < len(env_starts) else stop
            test_env = int(env[env_start])
            mean, sem = percent_mean_and_sem(acc[env_start:env_stop])
            name = names[test_env] if 0 <= test_env < len(names) else str(test_env)
            rows.append((selection, dataset, algorithm, test_env, name, mean, sem,
                         env_stop - env_start, env_stop - env_start == len(trials),
                         int(tie[env_start:env_stop].sum())))
        # DomainBed's averages: each trial seed over the test envs it has (in env order),
        # float(np.mean(list)) as its Query.mean, then mean and SEM over trial seeds.
        order = np.lexsort((env[start:stop], trial[start:stop]))
        by_trial_acc, by_trial = acc[start:stop][order], trial[start:stop][order]
        trial_starts = _segments([by_trial])
        bounds = list(trial_starts) + [len(by_trial)]
        trial_means = np.array([float(np.mean(list(by_trial_acc[a:b])))
                                for a, b in zip(bounds[:-1], bounds[1:])])
        n_envs = len(names) or len(np.unique(env[start:stop]))
        complete = all(b - a == n_envs for a, b in zip(bounds[:-1], bounds[1:]))
        mean, sem = percent_mean_and_sem(trial_means)
        rows.append((selection, dataset, algorithm, AVERAGE_ENV, "Avg", mean, sem,
                     len(trial_means), complete, int(tie[start:stop].sum())))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.sort_values(["test_env"], key=lambda s: s == AVERAGE_ENV, kind="stable")
    return table.reset_index(drop=True).astype(
        {"test_env": "int64", "n": "int64", "mean": "float64", "sem": "float64",
         "complete": "bool", "ties": "int64"})
