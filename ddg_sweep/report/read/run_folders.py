"""Run folders below a sweep and the text of their files: finding, reading, first lines.

The byte-level helpers here are what the rest of `read/` shares (parsing, records, swad).

Layouts: ours (`SWEEP/runs/<job_id>/results.jsonl`) and DomainBed's flat one
(`SWEEP/<hash>/results.jsonl`); any folder holding a `results.jsonl` is a run.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ddg_sweep.layout import RunFolder, drop_torn_tail
from ddg_sweep.provenance import read_provenance

RESULTS_FILE, SWAD_JSON = RunFolder.RESULTS, RunFolder.SWAD
REQUIRED_ARGS = ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed")
ENV_KEY = re.compile(r"^env(\d+)_(in|out)_acc$")


@dataclass
class RunFile:
    run_id: str
    path: str
    finished: bool
    has_swad: bool
    has_provenance: bool = False
    stopped: bool = False  # a search's scheduler stopped it early (stopped.json): unfinished, records kept
    has_search: bool = False  # a search suggested it (search.json)


def find_runs(input_dir: Path) -> list[RunFile]:
    """Every folder below `input_dir` holding a results.jsonl, sorted by relative path.

    Each folder is listed once (one scandir gives its files and sub-folders); a run
    folder's sub-folders (checkpoints, ...) are not searched, except the input
    folder's when it is itself a run."""
    found: list[RunFile] = []
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
            found.append(RunFile(run_id, folder, RunFolder.DONE in names, SWAD_JSON in names,
                                  RunFolder.PROVENANCE in names, RunFolder.STOPPED in names,
                                  RunFolder.SEARCH in names))
            if folder != root:
                continue
        pending += [entry.path for entry in entries if entry.is_dir()]
    found.sort(key=lambda run: run.run_id)
    return found


def read_file(path: str) -> bytes | None:
    """The file's bytes (os.open/os.read: a third of the system calls of open().read())."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 1 << 16)
        if len(data) == 1 << 16:  # a large file: read on to its end
            chunks = [data]
            while chunk := os.read(fd, 1 << 22):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def first_good_line(content: bytes) -> tuple[dict | None, int]:
    """The first line that parses as a record with the required args; lines tried."""
    first = content[:content.find(b"\n")] if b"\n" in content else content
    try:  # the usual case: the very first line is fine
        record = json.loads(first)
        if isinstance(record, dict) and has_required_args(record):
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
        if isinstance(record, dict) and has_required_args(record):
            return record, tried
    return None, tried


def has_required_args(record: dict) -> bool:
    args = record.get("args")
    return (isinstance(args, dict) and all(args.get(k) is not None for k in REQUIRED_ARGS)
            and isinstance(args["test_envs"], list) and len(args["test_envs"]) > 0)


def env_count(record: dict) -> int:
    indices = [int(m.group(1)) for m in map(ENV_KEY.match, record) if m]
    return max(indices) + 1 if indices else 0


drop_truncated_tail = drop_torn_tail  # the one rule for a torn last line (ddg_sweep/layout.py)


def run_row(run: RunFile, header: dict, n_envs: int) -> dict:
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


def first_nonblank_line(content: bytes) -> bytes | None:
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


def env_count_of_line(line: bytes) -> int:
    return max((int(m) for m in _ENV_IN_LINE.findall(line)), default=-1) + 1
