"""Columns every record gets from its accuracies: `val_acc` and `test_acc` (DomainBed's)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ddg_sweep.report.runfiles import ENV_KEY


def add_selection_columns(records: pd.DataFrame) -> pd.DataFrame:
    """`val_acc` (mean out-acc of training envs) and `test_acc` (first test env's in-acc)."""
    n = len(records)
    max_envs = sum(1 for c in records.columns if ENV_KEY.match(c) and c.endswith("_out_acc"))
    val_sum = np.zeros(n)
    test_acc = np.full(n, np.nan)
    env_of = records["test_env"].to_numpy() if n else np.zeros(0, dtype=int)
    second = records["test_env2"].to_numpy() if n else np.zeros(0, dtype=int)
    for env in range(max_envs):
        out_acc = records[f"env{env}_out_acc"].to_numpy(dtype=float)
        in_acc = records[f"env{env}_in_acc"].to_numpy(dtype=float)
        is_test = (env_of == env) | (second == env)
        # Adding in env order, like np.mean over DomainBed's list, gives identical floats.
        val_sum = val_sum + np.where(is_test | (env >= records["n_envs"].to_numpy()), 0.0, out_acc)
        test_acc = np.where(env_of == env, in_acc, test_acc)
    n_train = records["n_envs"].to_numpy() - records["n_test_envs"].to_numpy() if n else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        records["val_acc"] = np.where(n_train > 0, val_sum / np.maximum(n_train, 1), np.nan)
    records["test_acc"] = test_acc
    return records
