"""Table cells from the selected runs: mean and standard error over trial seeds, as DomainBed.

A per-environment cell is the selected test accuracies of its trial seeds. A
dataset's averages cell (test_env -1) follows DomainBed's collect_results: each
trial seed's accuracies are averaged over the test environments *that trial
has*, then mean and standard error are taken over trial seeds; so a trial
missing an environment still counts. `complete` says whether every trial seed
has every environment (False: the cell is marked in markdown/LaTeX); `ties`
counts the selections in the cell that the tie rule decided (selection.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

AVERAGE_ENV = -1  # test_env of a dataset's row in the averages table
TABLE_COLUMNS = ["selection", "dataset", "algorithm", "test_env", "env_name", "mean", "sem", "n",
                 "complete", "ties"]
CELL_KEYS = ["selection", "dataset", "algorithm"]


def mean_and_sem(accs: np.ndarray) -> tuple[float, float]:
    # DomainBed's format_mean arithmetic, so printed digits agree.
    return 100 * float(np.mean(accs)), 100 * float(np.std(accs / np.sqrt(len(accs))))


def cell_table(selected: pd.DataFrame, env_names: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (selection, dataset, algorithm, test_env) plus each dataset's average row."""
    if not len(selected):
        return pd.DataFrame(columns=TABLE_COLUMNS)
    selected = selected.sort_values(CELL_KEYS + ["test_env", "trial_seed"], kind="stable")
    trials_of = selected.groupby(CELL_KEYS, sort=False)["trial_seed"].nunique()
    rows = []
    for (selection, dataset, algorithm, test_env), cell in selected.groupby(
            CELL_KEYS + ["test_env"], sort=False):
        mean, sem = mean_and_sem(cell["test_acc"].to_numpy(dtype=float))
        names = env_names.get(dataset, [])
        name = names[test_env] if 0 <= test_env < len(names) else str(test_env)
        complete = len(cell) == trials_of[(selection, dataset, algorithm)]
        rows.append((selection, dataset, algorithm, int(test_env), name, mean, sem, len(cell),
                     complete, int(cell["tie_decided"].sum())))
    for (selection, dataset, algorithm), cell in selected.groupby(CELL_KEYS, sort=False):
        per_trial = cell.groupby("trial_seed", sort=True)
        # float(np.mean(list)) per trial in test-env order: DomainBed's Query.mean.
        trial_means = np.array([float(np.mean(t["test_acc"].to_numpy(dtype=float)))
                                for _, t in per_trial])
        n_envs = len(env_names.get(dataset, [])) or cell["test_env"].nunique()
        complete = bool((per_trial["test_env"].nunique() == n_envs).all())
        mean, sem = mean_and_sem(trial_means)
        rows.append((selection, dataset, algorithm, AVERAGE_ENV, "Avg", mean, sem,
                     len(trial_means), complete, int(cell["tie_decided"].sum())))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"test_env": "int64", "n": "int64", "mean": "float64", "sem": "float64",
                         "complete": "bool", "ties": "int64"})
