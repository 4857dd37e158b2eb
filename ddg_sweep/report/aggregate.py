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
from ddg_sweep.report.cells import cell_table
from ddg_sweep.report.records import read_records
from ddg_sweep.report.selection import SELECTION_METHODS, SELECTION_ORDER, explode_by_test_env

# DomainBed lists algorithms in its registry order; ours come after its core ones.
ALGORITHM_ORDER = ("ERM", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD", "DANN",
                   "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "SelfReg", "Fishr",
                   "VL2V-SD", "VL2V", "DDG")
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


def environment_names(records: pd.DataFrame, full: bool = False) -> dict[str, list[str]]:
    """Per dataset, its environments' short names (DomainBed's column labels) or, with
    `full`, the names written out (`inverted`, not `inv`); indices for unknown datasets."""
    names = {}
    n_envs = records.groupby("dataset", observed=True)["n_envs"].max()
    for dataset in order_datasets(n_envs.index):
        spec = DATASETS.get(dataset)
        if spec is not None:
            names[dataset] = list(spec.environments if full else spec.short_names)
        else:
            names[dataset] = [str(i) for i in range(int(n_envs[dataset]))]
    return names


# Per-run columns copied from the chosen record into selected.parquet (plus hp_*, prov_*).
RUN_INFO_COLUMNS = ("run_id", "job_id")
SELECTED_FIRST = ["selection", "dataset", "algorithm", "test_env", "trial_seed", "run_id",
                  "job_id", "hparams_seed", "step", "val_acc", "test_acc", "tied_runs",
                  "tie_decided"]


def _run_info(source: pd.DataFrame, order) -> pd.DataFrame:
    columns = [c for c in source.columns
               if c in RUN_INFO_COLUMNS or c.startswith(("hp_", "prov_"))]
    info = source[columns].iloc[np.asarray(order, dtype=np.int64)].reset_index(drop=True)
    return info.astype({c: "string" for c in columns
                        if isinstance(info[c].dtype, pd.CategoricalDtype)})


def select_all(records: pd.DataFrame, swad: pd.DataFrame) -> pd.DataFrame:
    """Every selection's chosen run per (trial_seed, dataset, algorithm, test_env): its
    accuracies, run folder, job id, hyperparameters and provenance (docs/report.md)."""
    chosen = []
    records_view = explode_by_test_env(records)
    for key in SELECTION_ORDER:
        source = swad if key == "swad" else records
        if key == "swad":
            selected = SELECTION_METHODS[key].select(swad)
        else:
            selected = SELECTION_METHODS[key].select(records, records_view)
        if len(selected):
            selected = selected.reset_index(drop=True)
            info = _run_info(source, selected.pop("order"))
            chosen.append(pd.concat([selected.assign(selection=key), info], axis=1))
    if not chosen:
        return pd.DataFrame(columns=SELECTED_FIRST)
    selected = pd.concat(chosen, ignore_index=True)
    rest = sorted(c for c in selected.columns if c not in SELECTED_FIRST)
    selected = selected[SELECTED_FIRST + rest]
    return selected.astype({"step": "int64", "tied_runs": "int64", "tie_decided": "bool"})


def aggregate(input_dir, output_dir, include_unfinished: bool = False, include_stopped: bool = False,
              cache: bool = True, rows_by=()) -> dict:
    """Aggregate a sweep folder into `output_dir`; returns the summary dict. `cache`: use and
    update the cache of parsed runs in `output_dir`/.parsed (parse_cache.py). `rows_by`:
    hparams whose values make rows of their own (report/variants.py)."""
    from ddg_sweep.report.search_runs import SEARCH_TRIALS_FILE, search_trials, tag_search_runs, visible
    from ddg_sweep.report.tables import render_domainbed_text
    from ddg_sweep.report.variants import check_rows_by, split_rows

    rows_by = check_rows_by(rows_by)

    sweep = read_records(input_dir, include_unfinished=include_unfinished, include_stopped=include_stopped,
                         cache_dir=output_dir if cache else None)
    # a search's runs: rows of their own
    records, search_rows = tag_search_runs(sweep.records, input_dir, sweep.searched)
    swad, _ = tag_search_runs(sweep.swad, input_dir, sweep.searched)
    records, swad = split_rows(records, rows_by), split_rows(swad, rows_by)
    trials = search_trials(input_dir)
    datasets = pd.concat([records[["dataset", "n_envs"]]] + (
        [swad[["dataset", "n_envs"]]] if len(swad) else []))
    env_names = environment_names(datasets)
    selected = select_all(records, swad)
    table = cell_table(selected, env_names)
    algorithms = set(records["algorithm"]) | (set(swad["algorithm"]) if len(swad) else set())
    summary = {
        "input_dir": str(input_dir),
        "include_unfinished": include_unfinished,
        "include_stopped": include_stopped,
        "total_records": int(len(records)),
        **{k: int(v) for k, v in sweep.stats.items() if k != "records"},
        "swad_runs": int(len(swad)),
        "pair_runs": int(records.loc[records["n_test_envs"] == 2, "run_id"].nunique()),
        "datasets": env_names,
        "environments": environment_names(datasets, full=True),
        "algorithms": order_algorithms(algorithms),
        "selections": [k for k in SELECTION_ORDER if k in set(table["selection"])],
        "search_rows": search_rows,
        "rows_by": list(rows_by),
        "search_trials": int(len(trials)),
        # runs_parsed / runs_reused: this aggregate's work, not the sweep's (absent: --no-cache)
        **({"parse_cache": {k: v for k, v in sweep.cache.items() if k != "note"}} if sweep.cache else {}),
    }
    output_dir = Path(output_dir)
    files.atomic_write_parquet(output_dir / files.RECORDS_FILE, records)
    if len(swad):
        files.atomic_write_parquet(output_dir / files.SWAD_FILE, swad)
    files.atomic_write_parquet(output_dir / files.SELECTED_FILE, selected)
    files.atomic_write_parquet(output_dir / files.TABLE_FILE, table)
    if len(trials):
        files.atomic_write_parquet(output_dir / SEARCH_TRIALS_FILE, trials)
    else:
        (output_dir / SEARCH_TRIALS_FILE).unlink(missing_ok=True)
    files.atomic_write_text(output_dir / files.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    files.atomic_write_text(output_dir / files.TEXT_TABLES_FILE,  # protocol rows only, as `tables`
                            render_domainbed_text(table, visible(summary, include_search=False)))
    return {**summary, "parse_cache_note": sweep.cache["note"]} if sweep.cache else summary
