"""Read every run of a sweep into its records table and its swad table (docs/report.md).

records.parquet has one row per record, swad.parquet one per run with a `swad.json`; both
get DomainBed's `val_acc` and `test_acc` (`add_selection_columns`).

Speed: all runs' records are parsed in bulk by pyarrow (`jsonl.py`), with each
record's numbers and the `args` that group it; a run's hparams come from one
parse of the runs' first lines (`headers.py`), so no Python code runs per record.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ddg_sweep.errors import UserError
from ddg_sweep.provenance import read_provenance
from ddg_sweep.report.read.headers import hparams_frame, hparams_of_lines
from ddg_sweep.report.read.jsonl import ENV_FLOOR, RUN_TAG
from ddg_sweep.report.read.parsing import ParseCache, parse_runs
from ddg_sweep.report.read.run_folders import (ENV_KEY, RESULTS_FILE, SWAD_JSON, RunFile,
                                               drop_truncated_tail, env_count, find_runs,
                                               first_good_line, has_required_args, read_file, run_row)


@dataclass
class SweepRecords:
    """Everything read from a sweep folder."""

    records: pd.DataFrame  # one row per record, see docs/report.md
    swad: pd.DataFrame  # one row per run with a swad.json
    stats: dict = field(default_factory=dict)
    searched: set = field(default_factory=set)  # run ids whose folder holds a search.json
    cache: dict | None = None  # runs parsed / reused, a note on the cache (None: no cache)


def read_sweep_records(input_dir, include_unfinished: bool = False, include_stopped: bool = False,
                 cache_dir=None) -> SweepRecords:
    """Read a sweep; raises UserError when the folder is missing or holds no records. Unfinished runs
    (a search's stopped ones among them) are left out unless asked for. `cache_dir`: an aggregate
    folder whose cache of parsed runs is used and updated (parsing.py)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist; pass --input-dir the sweep's "
                        "output folder (the one holding runs/ or the run folders)")
    cache = ParseCache(cache_dir) if cache_dir is not None else None
    runs = find_runs(input_dir)
    stats = {"runs_found": len(runs), "unfinished_runs": sum(not r.finished for r in runs),
             "unfinished_runs_skipped": 0, "malformed_lines": 0, "malformed_swad": 0}
    stats["stopped_runs"] = sum(run.stopped and not run.finished for run in runs)
    if not include_unfinished:
        runs = [run for run in runs if run.finished or (include_stopped and run.stopped)]
        stats["unfinished_runs_skipped"] = stats["runs_found"] - len(runs)
    parse = parse_runs(runs, cache, stats)
    if cache is not None and parse.widest > ENV_FLOOR and parse.reused:
        # rows cached at ENV_FLOOR's width may lack this sweep's wider columns: parse all
        cache.entries, cache.note = {}, f"a dataset with over {ENV_FLOOR} environments: parsing every run"
        stats = {**stats, "malformed_lines": 0}
        parse = parse_runs(runs, cache, stats)
    read = parse.read
    if cache is not None and parse.changed and parse.widest <= ENV_FLOOR:
        cache.save(parse.entries, parse.table)
    table = parse.table.drop_columns([c for c in parse.table.column_names if ENV_KEY.match(c)
                                      and int(ENV_KEY.match(c).group(1)) >= parse.widest])
    records, runs_frame = _assemble(table, read, parse.careful, stats)
    swad = read_swad([read[i][0] for i in runs_frame.index] if len(runs_frame) else [],
                     runs_frame, stats)
    stats["records"] = len(records)
    stats["runs"] = int(records["run_id"].nunique()) if len(records) else 0
    stats["finished_runs"] = stats["runs_found"] - stats["unfinished_runs"]
    if not len(records):
        hint = (" (all runs are unfinished: pass --include-unfinished to read them)"
                if stats["unfinished_runs_skipped"] else "")
        raise UserError(f"no records found below {input_dir}{hint}; point --input-dir at a "
                        "folder holding <run>/results.jsonl files")
    cache_info = {"runs_parsed": parse.parsed, "runs_reused": parse.reused,
                  "note": cache.note if cache is not None else None} if cache is not None else None
    return SweepRecords(records, swad, stats, {run.run_id for run, _ in read if run.has_search},
                        cache_info)


CATEGORY_COLUMNS = ("run_id", "job_id", "dataset", "algorithm", "test_envs")
ARG_COLUMNS = ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed", "seed",
               "steps", "holdout_fraction")


def _valid_rows(table: pa.Table) -> pa.Array:
    """A record counts when it parsed, has a step and the args that place it in a group."""
    args = table.column("args")
    valid = pc.and_(pc.is_valid(table.column(RUN_TAG)), pc.is_valid(table.column("step")))
    for name in ("dataset", "algorithm", "trial_seed", "hparams_seed"):
        valid = pc.and_(valid, pc.is_valid(pc.struct_field(args, name)))
    lengths = pc.fill_null(pc.list_value_length(pc.struct_field(args, "test_envs")), 0)
    return pc.and_(valid, pc.greater(lengths, 0))


def _run_frame(first: pa.Table, read, careful: bool) -> pd.DataFrame:
    """One row per run with records, from its first good record (docs/report.md)."""
    args = first.column("args")
    runs = pd.DataFrame({name: pc.struct_field(args, name).to_pandas() for name in ARG_COLUMNS
                         if name != "test_envs"})
    envs = pc.struct_field(args, "test_envs").to_pylist()
    index = first.column(RUN_TAG).to_numpy()
    runs.index = index
    run_files = [read[i][0] for i in index]
    _check_one_protocol(args, run_files)
    runs.insert(0, "run_id", [run.run_id for run in run_files])
    job_ids = first.column("job_id").to_pylist()
    runs.insert(1, "job_id", [job or os.path.basename(run.path) for job, run in zip(job_ids, run_files)])
    runs.insert(2, "finished", [run.finished for run in run_files])
    runs.insert(3, "stopped", [run.stopped and not run.finished for run in run_files])
    runs["test_envs"] = [",".join(map(str, e)) for e in envs]
    runs["n_test_envs"] = np.array([len(e) for e in envs], dtype=np.int64)
    runs["test_env"] = np.array([e[0] for e in envs], dtype=np.int64)
    runs["test_env2"] = np.array([e[1] if len(e) > 1 else -1 for e in envs], dtype=np.int64)
    runs["seed"] = runs["seed"].fillna(0).astype("int64")
    runs["steps"] = runs["steps"].fillna(-1).astype("int64")
    runs["holdout_fraction"] = runs["holdout_fraction"].astype("float64")
    n_envs = np.zeros(len(runs), dtype=np.int64)
    env = 0
    while f"env{env}_out_acc" in first.column_names:
        present = first.column(f"env{env}_out_acc").is_valid().to_numpy(zero_copy_only=False)
        n_envs = np.where(present, env + 1, n_envs)
        env += 1
    runs["n_envs"] = n_envs
    runs = runs[["run_id", "job_id", "finished", "stopped", "dataset", "algorithm", "test_envs", "n_test_envs",
                 "test_env", "test_env2", "trial_seed", "hparams_seed", "seed", "steps",
                 "holdout_fraction", "n_envs"]]
    provenance = [{f"prov_{k}": v for k, v in read_provenance(run.path).items()}
                  if run.has_provenance else {} for run in run_files]
    if any(provenance):
        runs = runs.join(pd.DataFrame(provenance, index=runs.index))
    first_lines = [read[i][1] for i in index]
    if careful or not bool(first.column("first_in_file").to_numpy().all()):
        hparams = hparams_frame([_hparams_of(read[i][0]) for i in index])
    else:
        hparams = hparams_of_lines(first_lines)
    hparams.index = runs.index
    categories = [*CATEGORY_COLUMNS, *(c for c in runs if c.startswith("prov_"))]
    return runs.astype({name: "category" for name in categories}).join(hparams)


def _check_one_protocol(args, run_files) -> None:
    """Runs of different ddg-sweep protocol versions compute different things under the same
    hparam names (version 2 changed what `lmd` means): never average them together."""
    first_run = {}
    for version, run in zip(pc.struct_field(args, "protocol_version").to_pylist(), run_files):
        if version is not None:
            first_run.setdefault(version, run.run_id)
    if len(first_run) > 1:
        listed = ", ".join(f"{version} (e.g. {run})" for version, run in sorted(first_run.items()))
        raise UserError(f"the sweep mixes runs of protocol versions {listed}; their hparams mean different "
                        "things (version 2 changed lmd): aggregate each version's runs from separate folders")


def _hparams_of(run: RunFile) -> dict:
    content, _ = drop_truncated_tail(read_file(os.path.join(run.path, RESULTS_FILE)) or b"")
    header, _ = first_good_line(content)
    hparams = header.get("hparams") if header else None
    return hparams if isinstance(hparams, dict) else {}


def _assemble(table: pa.Table, read, careful: bool, stats) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not len(table):
        return pd.DataFrame(), pd.DataFrame()
    tags = table.column(RUN_TAG).to_numpy(zero_copy_only=False)
    valid = _valid_rows(table)
    stats["malformed_lines"] += int(len(table) - pc.sum(valid).as_py() if len(table) else 0)
    # A run's first row in the table is its file's first line unless a batch fell back.
    _, starts = np.unique(np.where(np.isnan(tags.astype(float)), -1, tags), return_index=True)
    table = table.filter(valid)
    if not len(table):
        return pd.DataFrame(), pd.DataFrame()
    tags = table.column(RUN_TAG).to_numpy()
    run_order, first_rows = np.unique(tags, return_index=True)
    kept_starts = pc.filter(pa.array(np.arange(len(valid))), valid).to_numpy()[first_rows]
    first = table.take(first_rows).append_column(
        "first_in_file", pa.array(np.isin(kept_starts, starts)))
    runs = _run_frame(first, read, careful)
    stage = table.column("stage").dictionary_encode()
    table = table.set_column(table.schema.get_field_index("stage"), "stage", stage)
    frame = table.drop_columns(["args", "job_id", RUN_TAG]).to_pandas()
    frame["step"] = frame["step"].astype("int64")
    env_columns = sorted((c for c in frame if ENV_KEY.match(c)),
                         key=lambda c: (int(ENV_KEY.match(c).group(1)), c.endswith("out_acc")))
    frame = frame[[c for c in frame if c not in env_columns] + env_columns]
    positions = np.searchsorted(run_order, tags)
    out = runs.iloc[positions].reset_index(drop=True)
    out = pd.concat([out, frame.reset_index(drop=True)], axis=1)
    return add_selection_columns(out), runs


def read_swad(runs: list[RunFile], runs_frame: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """One row per run with a swad.json: run keys, env accuracies, SWAD window, hp_*.

    `runs`: the runs with records, in the order of `runs_frame`'s rows (their run keys,
    used when a swad.json lacks its own `args`)."""
    rows, hparams = [], []
    for position, run in enumerate(runs):
        if not run.has_swad:
            continue
        try:
            swad = json.loads(read_file(os.path.join(run.path, SWAD_JSON)))
            if has_required_args(swad):
                base = run_row(run, swad, env_count(swad))
            else:
                known = runs_frame.iloc[position]
                base = {k: (v.item() if hasattr(v, "item") else v)
                        for k, v in known.items() if not k.startswith("hp_")}
        except (OSError, ValueError, KeyError, TypeError):
            stats["malformed_swad"] += 1
            continue
        base["n_envs"] = env_count(swad) or base["n_envs"]
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
