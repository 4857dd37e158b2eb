"""Find and read every run's `results.jsonl` (plus `done`, `swad.json`) below a folder.

Layouts: ours (`SWEEP/runs/<job_id>/results.jsonl`) and DomainBed's flat one
(`SWEEP/<hash>/results.jsonl`); any folder holding a `results.jsonl` is a run.

Speed: a run's `args` and `hparams` are the same on every line, so they are read
once per run from its first good line; the per-checkpoint fields of all runs are
parsed in bulk (`jsonl.py`), so no Python code runs per record.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ddg_sweep.errors import UserError
from ddg_sweep.provenance import PROVENANCE_FILE, read_provenance
from ddg_sweep.report.headers import hparams_frame, hparams_of_lines
from ddg_sweep.report.jsonl import BATCH_BYTES, RUN_TAG, Batch

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"
SWAD_FILE = "swad.json"
REQUIRED_ARGS = ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed")
ENV_KEY = re.compile(r"^env(\d+)_(in|out)_acc$")



@dataclass
class SweepRecords:
    """Everything read from a sweep folder."""

    records: pd.DataFrame  # one row per record, see docs/report.md
    swad: pd.DataFrame  # one row per run with a swad.json
    stats: dict = field(default_factory=dict)


@dataclass
class _RunFile:
    run_id: str
    path: str
    finished: bool
    has_swad: bool
    has_provenance: bool = False


def find_runs(input_dir: Path) -> list[_RunFile]:
    """Every folder below `input_dir` holding a results.jsonl, sorted by relative path.

    Each folder is listed once (one scandir gives its files and sub-folders); a run
    folder's sub-folders (checkpoints, ...) are not searched, except the input
    folder's when it is itself a run."""
    found: list[_RunFile] = []
    root = os.fspath(input_dir)
    prefix = root.rstrip(os.sep) + os.sep
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        names = {entry.name for entry in entries}
        if RESULTS_FILE in names:
            run_id = "." if folder == root else (
                folder[len(prefix):] if folder.startswith(prefix) else os.path.relpath(folder, root))
            found.append(_RunFile(run_id, folder, DONE_FILE in names, SWAD_FILE in names,
                                  PROVENANCE_FILE in names))
            if folder != root:
                continue
        pending += [entry.path for entry in entries if entry.is_dir()]
    found.sort(key=lambda run: run.run_id)
    return found


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _first_good_line(content: bytes) -> tuple[dict | None, int]:
    """The first line that parses as a record with the required args; lines tried."""
    first = content[:content.find(b"\n")] if b"\n" in content else content
    try:  # the usual case: the very first line is fine
        record = json.loads(first)
        if isinstance(record, dict) and _has_required_args(record):
            return record, 1
    except ValueError:
        pass
    tried = 0
    for line in content.splitlines():
        if not line.strip():
            continue
        tried += 1
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and _has_required_args(record):
            return record, tried
    return None, tried


def _has_required_args(record: dict) -> bool:
    args = record.get("args")
    return (isinstance(args, dict) and all(args.get(k) is not None for k in REQUIRED_ARGS)
            and isinstance(args["test_envs"], list) and len(args["test_envs"]) > 0)


def _env_count(record: dict) -> int:
    indices = [int(m.group(1)) for m in map(ENV_KEY.match, record) if m]
    return max(indices) + 1 if indices else 0


def _drop_truncated_tail(content: bytes) -> tuple[bytes, int]:
    """A file cut mid-write ends without a newline; drop that last line if it is broken."""
    if not content or content.endswith(b"\n"):
        return content, 0
    cut = content.rfind(b"\n") + 1
    try:
        json.loads(content[cut:])
        return content + b"\n", 0
    except ValueError:
        return content[:cut], 1


def _run_row(run: _RunFile, header: dict, n_envs: int) -> dict:
    args = header["args"]
    test_envs = [int(env) for env in args["test_envs"]]
    return {
        "run_id": run.run_id,
        "job_id": str(header.get("job_id") or Path(run.run_id).name),
        "finished": run.finished,
        "dataset": str(args["dataset"]),
        "algorithm": str(args["algorithm"]),
        "test_envs": ",".join(map(str, test_envs)),
        "n_test_envs": len(test_envs),
        "test_env": test_envs[0],
        "test_env2": test_envs[1] if len(test_envs) > 1 else -1,
        "trial_seed": int(args["trial_seed"]),
        "hparams_seed": int(args["hparams_seed"]),
        "seed": int(args.get("seed") or 0),
        "steps": int(args.get("steps") or -1),
        "holdout_fraction": float(args.get("holdout_fraction") or float("nan")),
        "n_envs": n_envs,
        **({f"prov_{k}": v for k, v in read_provenance(run.path).items()}
           if run.has_provenance else {}),
    }


def read_records(input_dir, include_unfinished: bool = False) -> SweepRecords:
    """Read a sweep; raises UserError when the folder is missing or holds no records."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist; pass --input-dir the sweep's "
                        "output folder (the one holding runs/ or the run folders)")
    runs = find_runs(input_dir)
    stats = {"runs_found": len(runs), "unfinished_runs": sum(not r.finished for r in runs),
             "unfinished_runs_skipped": 0, "malformed_lines": 0, "malformed_swad": 0}
    if not include_unfinished:
        stats["unfinished_runs_skipped"] = stats["unfinished_runs"]
        runs = [run for run in runs if run.finished]

    # Reading the next files overlaps pyarrow's parse of the last batch (it releases the GIL).
    read, batches, pending = [], [], []
    batch = Batch()
    with ThreadPoolExecutor(max_workers=1) as parser:
        for run in runs:
            content = _read_file(os.path.join(run.path, RESULTS_FILE))
            if content is None:
                continue
            content, truncated = _drop_truncated_tail(content)
            stats["malformed_lines"] += truncated
            first_line = _first_line(content)
            if first_line is None:
                continue
            batch.add(content, len(read), _env_count_of_line(first_line))
            read.append((run, first_line))  # not the content: a 1M-record sweep holds 1.3 GB of it
            if batch.size >= BATCH_BYTES:
                batches.append(batch)
                pending.append(parser.submit(batch.parse))
                batch = Batch()
        if batch.contents:
            batches.append(batch)
            pending.append(parser.submit(batch.parse))
        tables = [future.result() for future in pending]
    careful = any(b.fell_back for b in batches)
    stats["malformed_lines"] += sum(b.dropped for b in batches)

    records, runs_frame = _assemble(tables, read, careful, stats)
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
    return SweepRecords(records, swad, stats)


def _first_line(content: bytes) -> bytes | None:
    """The first non-blank line (with its newline), or None for a blank file."""
    start = 0
    while start < len(content):
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end + 1
        if content[start:end].strip():
            return content[start:end]
        start = end
    return None


_ENV_IN_LINE = re.compile(rb'"env(\d+)_(?:in|out)_acc"')


def _env_count_of_line(line: bytes) -> int:
    return max((int(m) for m in _ENV_IN_LINE.findall(line)), default=-1) + 1


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
    runs.insert(0, "run_id", [run.run_id for run in run_files])
    job_ids = first.column("job_id").to_pylist()
    runs.insert(1, "job_id", [job or os.path.basename(run.path) for job, run in zip(job_ids, run_files)])
    runs.insert(2, "finished", [run.finished for run in run_files])
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
    runs = runs[["run_id", "job_id", "finished", "dataset", "algorithm", "test_envs", "n_test_envs",
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


def _hparams_of(run: _RunFile) -> dict:
    content, _ = _drop_truncated_tail(_read_file(os.path.join(run.path, RESULTS_FILE)) or b"")
    header, _ = _first_good_line(content)
    hparams = header.get("hparams") if header else None
    return hparams if isinstance(hparams, dict) else {}


def _assemble(tables, read, careful: bool, stats) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not tables:
        return pd.DataFrame(), pd.DataFrame()
    table = pa.concat_tables(tables, promote_options="default")
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


def read_swad(runs: list[_RunFile], runs_frame: pd.DataFrame, stats: dict) -> pd.DataFrame:
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
