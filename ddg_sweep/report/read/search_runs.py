"""Search runs in the report: tagged, kept out of the protocol tables unless asked, one row per trial.

A run a search suggested (its folder holds `search.json`) is tagged in records.parquet
(`search`: name/searcher/metric, `search_id`, `search_trial`, `search_metric`) and its
`algorithm` becomes a row of its own, `DDG [search optuna]`, or `DDG [ORACLE search optuna]`
when the searcher maximised test-domain accuracy: selection never mixes a search's runs with
the protocol's runs of a cell, the standard tables leave those rows out unless
`--include-search` (render/tables.py, `visible`), and every table and plot that shows them
names them so.
`search_trials` gives search_trials.parquet's rows: one per trial (state, objective,
configuration), what the search plots and `tables --importance` read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.layout import RunFolder, SweepFolder


def row_label(algorithm: str, header: dict) -> str:
    oracle = "ORACLE " if header.get("metric") == "oracle" else ""
    return f"{algorithm} [{oracle}{header.get('name', 'search')} {header.get('searcher', '?')}]"


def _header(input_dir: Path, run_id: str) -> dict | None:
    try:
        header = json.loads(RunFolder(Path(input_dir) / run_id).search.read_text())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) and "search_id" in header else None


def tag_search_runs(frame: pd.DataFrame, input_dir, searched=None) -> tuple[pd.DataFrame, dict]:
    """(frame with the search columns and search runs' algorithm relabelled, {row label: its search}).

    `searched`: the run ids whose folder holds a search.json (the sweep's listing knows them);
    None: look in every run's folder. Work is per run, not per record."""
    if not len(frame):
        return frame, {}
    codes, runs = pd.factorize(frame["run_id"])
    runs = [str(run) for run in runs]
    candidates = runs if searched is None else [run for run in runs if run in searched]
    headers = {run: h for run, h in ((run, _header(input_dir, run)) for run in candidates) if h}
    columns = {}
    for column, key, empty in (("search", "label", ""), ("search_id", "search_id", ""),
                               ("search_metric", "metric", "")):
        per_run = np.array([headers[run][key] if run in headers else empty for run in runs], dtype=object)
        columns[column] = pd.array(per_run[codes], dtype="str")
    trials = pd.Series([headers[run]["trial"] if run in headers else -1 for run in runs], dtype=object)
    columns["search_trial"] = trials.astype("int64").to_numpy()[codes]
    frame = frame.assign(**columns)
    rows = {}
    if headers:
        firsts = np.unique(codes, return_index=True)[1]  # codes count runs in order of appearance
        position = {run: index for index, run in enumerate(runs)}
        algorithms = frame["algorithm"].astype(str).to_numpy()
        per_run = [row_label(algorithms[first], headers[run]) if run in headers else algorithms[first]
                   for run, first in zip(runs, firsts)]
        labels = np.array(per_run, dtype=object)[codes].tolist()
        frame["algorithm"] = pd.Categorical(labels) if isinstance(frame["algorithm"].dtype, pd.CategoricalDtype) \
            else labels
        for run, header in headers.items():
            label = row_label(algorithms[firsts[position[run]]], header)
            rows[label] = {"search": header["label"], "searcher": header["searcher"], "metric": header["metric"]}
    return frame, rows


def search_trials(input_dir) -> pd.DataFrame:
    """One row per trial of every search below `input_dir` (OUT, holding runs/)."""
    from ddg_sweep.search.searches import read_trials, scan_headers

    out = Path(input_dir)
    if not SweepFolder(out).runs.is_dir() and out.name == SweepFolder.RUNS:  # --input-dir OUT/runs
        out = out.parent
    rows = []
    for search_id, headers in scan_headers(out).items():
        first = headers[0]
        for trial in read_trials(out, headers):
            rows.append({
                "search_id": search_id, "search": first["label"], "name": first["name"],
                "searcher": first["searcher"], "metric": first["metric"], "scope": first["scope"],
                "algorithm": first["algorithm"], "row": row_label(first["algorithm"], first),
                "dataset": first["dataset"], "test_envs": " ".join(",".join(map(str, e)) for e in first["test_envs"]),
                "trial_seed": first["trial_seed"], "trial": trial.index, "state": trial.state,
                "objective": np.nan if trial.objective is None else trial.objective,
                "checkpoints": len(trial.trajectory), "jobs": ",".join(trial.job_ids),
                "ranges": json.dumps(first["ranges"], sort_keys=True),
                **{f"hp_{name}": value for name, value in trial.config.items()}})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["search_id", "trial"], ignore_index=True)
