"""Read a sweep, apply every model selection rule, write the aggregate folder.

The report's stages, in order: `read/` (run folders -> records), `select/` (model
selection -> table cells), `render/` (tables), `plots/` (figures); this module runs the
first two and writes their results (aggregate_folder.py), then renders tables.txt.
`aggregate(input_dir, output_dir)` writes records.parquet, swad.parquet (when any run has
a swad.json), selected.parquet, table.parquet, summary.json and tables.txt (DomainBed's
collect_results text). Formats are in docs/report.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.report import aggregate_folder
from ddg_sweep.report.read.records import read_sweep_records
from ddg_sweep.report.read.search_runs import search_trials, tag_search_runs
from ddg_sweep.report.render.tables import render_domainbed_text, table_files, visible, write_table_files
from ddg_sweep.report.select.cells import cell_table
from ddg_sweep.report.select.rules import SELECTION_ORDER, select_all
from ddg_sweep.report.select.variants import check_rows_by, split_rows

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


@dataclass
class Aggregate:
    """What `make_aggregate` computed and wrote, kept so that every table renders from it once."""

    agg_dir: Path
    table: pd.DataFrame  # table.parquet
    selected: pd.DataFrame  # selected.parquet
    summary: dict  # summary.json
    parse_cache_note: str | None = None

    def write_tables(self, out_dir=None, formats=(), include_search: bool = False) -> list[Path]:
        """One rendering pass: AGG/tables.txt (DomainBed's text; protocol rows only, as `tables`)
        and, with `out_dir`, OUT/tables/<selection>.<ext> and paper.<ext> per format (a
        search's rows with `include_search`); returns the OUT/tables files written."""
        aggregate_folder.atomic_write_text(self.agg_dir / aggregate_folder.TABLES_TXT,
                                 render_domainbed_text(self.table, visible(self.summary, include_search=False)))
        if out_dir is None:
            return []
        return write_table_files(out_dir, table_files(self.table, self.summary, self.selected, formats,
                                                      include_search))


def make_aggregate(input_dir, output_dir, include_unfinished: bool = False, include_stopped: bool = False,
                   cache: bool = True, rows_by=()) -> Aggregate:
    """Read a sweep, select models and write the aggregate folder's data files (all but
    tables.txt: `Aggregate.write_tables`). `cache`: use and update the cache of parsed runs in
    `output_dir`/.parsed (read/parsing.py). `rows_by`: hparams whose values make rows of
    their own (select/variants.py)."""
    rows_by = check_rows_by(rows_by)

    sweep = read_sweep_records(input_dir, include_unfinished=include_unfinished,
                               include_stopped=include_stopped, cache_dir=output_dir if cache else None)
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
    aggregate_folder.atomic_write_parquet(output_dir / aggregate_folder.RECORDS_PARQUET, records)
    if len(swad):
        aggregate_folder.atomic_write_parquet(output_dir / aggregate_folder.SWAD_PARQUET, swad)
    aggregate_folder.atomic_write_parquet(output_dir / aggregate_folder.SELECTED_PARQUET, selected)
    aggregate_folder.atomic_write_parquet(output_dir / aggregate_folder.TABLE_PARQUET, table)
    if len(trials):
        aggregate_folder.atomic_write_parquet(output_dir / aggregate_folder.SEARCH_TRIALS_PARQUET, trials)
    else:
        (output_dir / aggregate_folder.SEARCH_TRIALS_PARQUET).unlink(missing_ok=True)
    aggregate_folder.atomic_write_text(output_dir / aggregate_folder.SUMMARY_JSON,
                                       json.dumps(summary, indent=2) + "\n")
    return Aggregate(output_dir, table, selected, summary, sweep.cache["note"] if sweep.cache else None)


def aggregate(input_dir, output_dir, include_unfinished: bool = False, include_stopped: bool = False,
              cache: bool = True, rows_by=()) -> dict:
    """Aggregate a sweep folder into `output_dir`, tables.txt included (make_aggregate's
    arguments); returns the summary dict, with `parse_cache_note` when the cache was used."""
    made = make_aggregate(input_dir, output_dir, include_unfinished, include_stopped, cache, rows_by)
    made.write_tables()
    if "parse_cache" in made.summary:
        return {**made.summary, "parse_cache_note": made.parse_cache_note}
    return made.summary
