"""`swad.parquet`'s rows: each run's `swad.json` (the weight-averaged model's accuracies)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from ddg_sweep.report.derived import add_selection_columns
from ddg_sweep.report.headers import hparams_frame
from ddg_sweep.report.runfiles import (ENV_KEY, SWAD_FILE, RunFile, _env_count,
                                       _has_required_args, _read_file, _run_row)


def read_swad(runs: list[RunFile], runs_frame: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """One row per run with a swad.json: run keys, env accuracies, SWAD window, hp_*.

    `runs`: the runs with records, in the order of `runs_frame`'s rows (their run keys,
    used when a swad.json lacks its own `args`)."""
    rows, hparams = [], []
    for position, run in enumerate(runs):
        if not run.has_swad:
            continue
        try:
            swad = json.loads(_read_file(os.path.join(run.path, SWAD_FILE)))
            if _has_required_args(swad):
                base = _run_row(run, swad, _env_count(swad))
            else:
                known = runs_frame.iloc[position]
                base = {k: (v.item() if hasattr(v, "item") else v)
                        for k, v in known.items() if not k.startswith("hp_")}
        except (OSError, ValueError, KeyError, TypeError):
            stats["malformed_swad"] += 1
            continue
        base["n_envs"] = _env_count(swad) or base["n_envs"]
        for key in ("swad_start_step", "swad_end_step", "n_averaged"):
            base[key] = swad.get(key)
        for key, value in swad.items():
            if ENV_KEY.match(key):
                base[key] = float(value)
        rows.append(base)
        hp = swad.get("hparams")
        hparams.append(hp if isinstance(hp, dict) else {})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).join(hparams_frame(hparams))
    for env in range(int(frame["n_envs"].max())):
        for split in ("in", "out"):
            if f"env{env}_{split}_acc" not in frame:
                frame[f"env{env}_{split}_acc"] = np.nan
    return add_selection_columns(frame)
