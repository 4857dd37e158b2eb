"""The folder contract: every file name of a run folder, a sweep folder (OUT) and an aggregate
folder, and the one reader of their JSONL files. No other module spells these names.

A class's attributes are its paths; its FILES map each name to what it holds (the docs list
the same names, tests/test_layout.py compares them). Nothing here imports torch or Ray.
"""
from __future__ import annotations

import json
from pathlib import Path


class RunFolder:
    """RUN/ (a sweep's OUT/runs/<job_id>/): one leave-one-out run."""

    CONFIG = "config.json"
    RESULTS = "results.jsonl"
    CHECKPOINT = "checkpoint.pt"
    LOG = "train.log"
    PROVENANCE = "provenance.json"
    SWAD = "swad.json"
    DONE = "done"
    NODE = "node.json"
    ERROR = "error.json"
    SEARCH = "search.json"
    STOPPED = "stopped.json"
    FILES = {
        CONFIG: "the run's configuration (a resume checks it is the same run)",
        RESULTS: "one DomainBed record per checkpoint",
        CHECKPOINT: "the trainable state, replaced atomically every checkpoint (while unfinished)",
        LOG: "progress lines",
        PROVENANCE: "code and library versions, device, one entry per session",
        SWAD: "the SWAD-averaged model's accuracies",
        DONE: "empty, written last: the run is finished",
        NODE: "where a sweep's trial ran it (host, pid, attempt)",
        ERROR: "a sweep's trial failed: the error's first line and the attempt count",
        SEARCH: "a search suggested it: the search, the trial, its configuration",
        STOPPED: "a search's scheduler (ASHA) stopped it early; records kept",
    }
    BY_TRAIN = (CONFIG, RESULTS, CHECKPOINT, LOG, PROVENANCE, SWAD, DONE)  # what train.run writes

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / self.CONFIG
        self.results = self.path / self.RESULTS
        self.checkpoint = self.path / self.CHECKPOINT
        self.log = self.path / self.LOG
        self.provenance = self.path / self.PROVENANCE
        self.swad = self.path / self.SWAD
        self.done = self.path / self.DONE
        self.node = self.path / self.NODE
        self.error = self.path / self.ERROR
        self.search = self.path / self.SEARCH
        self.stopped = self.path / self.STOPPED


class AggregateFolder:
    """AGG/ (OUT/aggregate/ by default, made by `aggregate`): what the tables and plots load."""

    RECORDS = "records.parquet"
    SWAD = "swad.parquet"
    TABLE = "table.parquet"
    SELECTED = "selected.parquet"
    SEARCH_TRIALS = "search_trials.parquet"
    SUMMARY = "summary.json"
    TABLES_TXT = "tables.txt"
    PARSED = ".parsed"
    FILES = {
        RECORDS: "every record of every run read",
        SWAD: "the SWAD records",
        TABLE: "the selected accuracies, one row per cell",
        SELECTED: "the run behind each cell",
        SEARCH_TRIALS: "a search's trials and objectives",
        SUMMARY: "counts, warnings and what was read",
        TABLES_TXT: "DomainBed's text tables",
        PARSED: "a cache of parsed results.jsonl files, keyed by size and mtime",
    }

    def __init__(self, path):
        self.path = Path(path)
        self.records = self.path / self.RECORDS
        self.swad = self.path / self.SWAD
        self.table = self.path / self.TABLE
        self.selected = self.path / self.SELECTED
        self.search_trials = self.path / self.SEARCH_TRIALS
        self.summary = self.path / self.SUMMARY
        self.tables_txt = self.path / self.TABLES_TXT
        self.parsed = self.path / self.PARSED


class SweepFolder:
    """OUT/: everything a sweep knows."""

    MANIFEST = "jobs.json"
    RUNS = "runs"
    SEARCHES = "searches"
    RAY_RESULTS = "ray_results"
    LOCK = "sweep.lock"
    LOCAL_CLUSTER = "ray_local.json"
    AGGREGATE = "aggregate"
    TABLES = "tables"
    PLOTS = "plots"
    TENSORBOARD = "tensorboard"
    MLRUNS = "mlruns"
    WANDB = "wandb"
    FILES = {
        MANIFEST: "every job any sweep into OUT planned (status reads it)",
        RUNS: "one run folder per job, runs/<job_id>/",
        SEARCHES: "searches/<search_id>.jsonl: every value a search's searcher was told",
        RAY_RESULTS: "Tune's own bookkeeping, a fresh experiment per call (never restored)",
        LOCK: "held while a sweep runs: host, pid, heartbeat",
        LOCAL_CLUSTER: "the local Ray cluster this folder's running sweep started",
        AGGREGATE: "the aggregate folder full-benchmark writes",
        TABLES: "markdown and LaTeX tables",
        PLOTS: "PNG figures",
        TENSORBOARD: "--tracker tensorboard",
        MLRUNS: "--tracker mlflow's SQLite store when no URI is given",
        WANDB: "--tracker wandb",
    }

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = self.path / self.MANIFEST
        self.runs = self.path / self.RUNS
        self.searches = self.path / self.SEARCHES
        self.ray_results = self.path / self.RAY_RESULTS
        self.lock = self.path / self.LOCK
        self.local_cluster = self.path / self.LOCAL_CLUSTER
        self.aggregate = self.path / self.AGGREGATE
        self.tables = self.path / self.TABLES
        self.plots = self.path / self.PLOTS
        self.tensorboard = self.path / self.TENSORBOARD
        self.mlruns = self.path / self.MLRUNS
        self.wandb = self.path / self.WANDB

    def run(self, job_id: str) -> RunFolder:
        return RunFolder(self.runs / job_id)

    def search_log(self, search_id: str) -> Path:
        return self.searches / f"{search_id}.jsonl"


# ---- JSONL: the one rule for a torn last line ----------------------------------------------------

def drop_torn_tail(content: bytes) -> tuple[bytes, int]:
    """(the complete lines, 1 if a torn last line was dropped else 0).

    Lines are appended whole, so only a kill mid-write leaves a bad line, and only at the end:
    a last line without its newline that does not parse is that torn write and is dropped; one
    that parses is kept (and given its newline)."""
    if not content or content.endswith(b"\n"):
        return content, 0
    cut = content.rfind(b"\n") + 1
    try:
        json.loads(content[cut:])
        return content + b"\n", 0
    except ValueError:
        return content[:cut], 1


def read_jsonl(path) -> list[dict]:
    """The records of a JSONL file (none if it is missing), in order: every complete line that
    parses as a JSON object. A torn last line is dropped (drop_torn_tail); any other line that is
    no JSON object is skipped, as the report skips it (counting it as malformed)."""
    try:
        content = Path(path).read_bytes()
    except OSError:
        return []
    records = []
    for line in drop_torn_tail(content)[0].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def last_jsonl_record(path) -> dict | None:
    records = read_jsonl(path)
    return records[-1] if records else None

