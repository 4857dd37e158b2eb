"""Read a sweep, apply every model selection rule, write the aggregate folder.

`aggregate(input_dir, output_dir)` writes records.parquet, swad.parquet (when any
run has a swad.json), table.parquet, summary.json and tables.txt (DomainBed's
collect_results text). Formats are in docs/report.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.report import files
from ddg_sweep.report.records import read_records
from ddg_sweep.report.selection import SELECTION_METHODS, SELECTION_ORDER, explode_by_test_env

# DomainBed lists algorithms in its registry order; ours come after its core ones.
ALGORITHM_ORDER = ("ERM", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD", "DANN",
                   "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "SelfReg", "Fishr",
                   "VL2V-SD", "VL2V", "DDG")
AVERAGE_ENV = -1  # test_env of a dataset's row in the averages table
TABLE_COLUMNS = ["selection", "dataset", "algorithm", "test_env", "env_name", "mean", "sem", "n"]
# DomainBed's registry order, which its tables follow; then our other datasets, then unknown ones.
DATASET_ORDER = ("VLCS", "PACS", "OfficeHome", "TerraIncognita", "DomainNet",
                 *(name for name in DATASETS
                   if name not in ("VLCS", "PACS", "OfficeHome", "TerraIncognita", "DomainNet")))


def order_datasets(names) -> list[str]:
    names = set(names)
    return [n for n in DATASET_ORDER if n in names] + sorted(names - set(DATASET_ORDER))


def order_algorithms(names) -> list[str]:
    names = set(names)
    return [n for n in ALGORITHM_ORDER if n in names] + sorted(names - set(ALGORITHM_ORDER))


def environment_names(records: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset, its environments' short names (indices for unknown datasets)."""
    names = {}
    n_envs = records.groupby("dataset", observed=True)["n_envs"].max()
    for dataset in order_datasets(n_envs.index):
        spec = DATASETS.get(dataset)
        if spec is not None:
            names[dataset] = list(spec.short_names)
        else:
            names[dataset] = [str(i) for i in range(int(n_envs[dataset]))]
    return names


def select_all(records: pd.DataFrame, swad: pd.DataFrame) -> pd.DataFrame:
    """Every selection's chosen (trial_seed, dataset, algorithm, test_env) accuracies."""
    chosen = []
    records_view = explode_by_test_env(records)
    for key in SELECTION_ORDER:
        if key == "swad":
            selected = SELECTION_METHODS[key].select(swad)
        else:
            selected = SELECTION_METHODS[key].select(records, records_view)
        if len(selected):
            chosen.append(selected.assign(selection=key))
    if not chosen:
        return pd.DataFrame(columns=["selection", "trial_seed", "dataset", "algorithm",
                                     "test_env", "hparams_seed", "step", "val_acc", "test_acc"])
    return pd.concat(chosen, ignore_index=True)


def _mean_and_sem(accs: np.ndarray) -> tuple[float, float]:
    # Same arithmetic as DomainBed's format_mean, so the printed digits agree.
    return 100 * float(np.mean(accs)), 100 * float(np.std(accs / np.sqrt(len(accs))))


def cell_table(selected: pd.DataFrame, env_names: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (selection, dataset, algorithm, test_env) plus each dataset's average row.

    The average row (test_env -1) averages each trial seed's accuracies over the
    dataset's test envs, then takes mean and standard error over trial seeds; a
    trial seed missing any test env is left out of it, so it never averages
    over fewer envs.
    """
    rows = []
    selected = selected.sort_values(["selection", "dataset", "algorithm", "test_env",
                                     "trial_seed"])
    for (selection, dataset, algorithm, test_env), cell in selected.groupby(
            ["selection", "dataset", "algorithm", "test_env"], sort=False):
        mean, sem = _mean_and_sem(cell["test_acc"].to_numpy(dtype=float))
        names = env_names.get(dataset, [])
        name = names[test_env] if 0 <= test_env < len(names) else str(test_env)
        rows.append((selection, dataset, algorithm, int(test_env), name, mean, sem, len(cell)))
    per_trial = selected.groupby(["selection", "dataset", "algorithm", "trial_seed"], sort=False)
    trial_means = per_trial["test_acc"].agg(lambda accs: float(np.mean(accs.to_numpy())))
    trial_counts = per_trial["test_env"].nunique()
    n_envs = pd.Series({d: len(n) for d, n in env_names.items()})
    complete = trial_counts.to_numpy() == n_envs.reindex(
        trial_counts.index.get_level_values("dataset")).to_numpy()
    trial_means = trial_means[complete]
    for (selection, dataset, algorithm), trials in trial_means.groupby(
            level=["selection", "dataset", "algorithm"], sort=False):
        mean, sem = _mean_and_sem(trials.to_numpy(dtype=float))
        rows.append((selection, dataset, algorithm, AVERAGE_ENV, "Avg", mean, sem, len(trials)))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"test_env": "int64", "n": "int64", "mean": "float64", "sem": "float64"})


def aggregate(input_dir, output_dir, include_unfinished: bool = False) -> dict:
    """Aggregate a sweep folder into `output_dir`; returns the summary dict."""
    from ddg_sweep.report.tables import render_domainbed_text

    sweep = read_records(input_dir, include_unfinished=include_unfinished)
    records, swad = sweep.records, sweep.swad
    env_names = environment_names(pd.concat([records[["dataset", "n_envs"]]] + (
        [swad[["dataset", "n_envs"]]] if len(swad) else [])))
    selected = select_all(records, swad)
    table = cell_table(selected, env_names)
    algorithms = set(records["algorithm"]) | (set(swad["algorithm"]) if len(swad) else set())
    summary = {
        "input_dir": str(input_dir),
        "include_unfinished": include_unfinished,
        "total_records": int(len(records)),
        **{k: int(v) for k, v in sweep.stats.items() if k != "records"},
        "swad_runs": int(len(swad)),
        "datasets": env_names,
        "algorithms": order_algorithms(algorithms),
        "selections": [k for k in SELECTION_ORDER if k in set(table["selection"])],
    }
    output_dir = Path(output_dir)
    files.atomic_write_parquet(output_dir / files.RECORDS_FILE, records)
    if len(swad):
        files.atomic_write_parquet(output_dir / files.SWAD_FILE, swad)
    files.atomic_write_parquet(output_dir / "selected.parquet", selected)
    files.atomic_write_parquet(output_dir / files.TABLE_FILE, table)
    files.atomic_write_text(output_dir / files.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    files.atomic_write_text(output_dir / files.TEXT_TABLES_FILE,
                            render_domainbed_text(table, summary))
    return summary
