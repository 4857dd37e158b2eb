"""Every listed run's results.jsonl parsed into one table: from the cache when unchanged, else read.

Files are read with `os.open`/`os.read` in a thread that stays a few chunks of
files ahead, joined into batches and parsed by pyarrow in another thread
(`jsonl.Batch`); a run whose results file has the size and mtime_ns its cache
entry has takes its rows from the cache instead (parse_cache.py). The rows come
out in the runs' order, tagged with their index in `read`, as a cold read gives them.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ddg_sweep.report.jsonl import BATCH_BYTES, ENV_FLOOR, RUN_TAG, Batch, record_schema
from ddg_sweep.report.runfiles import (RESULTS_FILE, _drop_truncated_tail, _env_count_of_line,
                                       _first_line, _read_file)


@dataclass
class Parsed:
    read: list  # (RunFile, first line) per run with records, in order; rows' `__run` index this
    table: pa.Table  # every parsed row, in run order (invalid ones still in)
    careful: bool  # some file needed the careful path: hparams from each run's first good line
    widest: int  # the most environments a first line names
    entries: list  # per run, what its cache entry holds (parse_cache.RUN_FIELDS)
    parsed: int = 0
    reused: int = 0
    changed: bool = True  # the cache must be written again


def parse_runs(runs, cache, stats: dict) -> Parsed:
    """Parse `runs` (RunFiles, sorted), reusing `cache`'s entries (None: no cache); adds the
    truncated and malformed lines to stats["malformed_lines"]."""
    paths = [os.path.join(run.path, RESULTS_FILE) for run in runs]
    keys = [stat_key(path) for path in paths] if cache is not None else [None] * len(runs)
    hits = [cache.lookup(run.run_id, key) if cache is not None else None
            for run, key in zip(runs, keys)]
    if any(hit is not None for hit in hits) and not cache.load_rows():
        hits = [None] * len(runs)
    read, batches, pending, reused, entries, blank = [], [], [], [], [], []
    batch = Batch()
    contents = _contents([path for path, hit in zip(paths, hits) if hit is None])
    with ThreadPoolExecutor(max_workers=1) as parser:
        for run, key, hit in zip(runs, keys, hits):
            size, mtime = key if key is not None else (-1, -1)
            if hit is not None:
                stats["malformed_lines"] += hit.truncated + hit.dropped
                entry = {"run_id": run.run_id, "size": size, "mtime_ns": mtime, "first_line": hit.first_line,
                         "n_envs": hit.n_envs, "truncated": hit.truncated, "dropped": hit.dropped,
                         "dirty": hit.dirty}
                if hit.first_line is None:
                    blank.append(entry)
                else:
                    reused.append((len(read), hit))
                    read.append((run, hit.first_line))
                    entries.append(entry)
                continue
            content = next(contents)
            if content is None:
                continue
            content, truncated = _drop_truncated_tail(content)
            stats["malformed_lines"] += truncated
            first_line = _first_line(content)
            n_envs = _env_count_of_line(first_line) if first_line is not None else 0
            entry = {"run_id": run.run_id, "size": size, "mtime_ns": mtime, "first_line": first_line,
                     "n_envs": n_envs, "truncated": truncated, "dropped": 0, "dirty": False}
            if first_line is None:
                blank.append(entry)
                continue
            batch.add(content, len(read), n_envs, first_line)
            read.append((run, first_line))
            entries.append(entry)
            if batch.size >= BATCH_BYTES:
                batches.append(batch)
                pending.append(parser.submit(batch.parse))
                batch = Batch()
        if batch.contents:
            batches.append(batch)
            pending.append(parser.submit(batch.parse))
        tables = [future.result() for future in pending]
    for done in batches:
        stats["malformed_lines"] += done.dropped
        for index in done.dirty:
            entries[index]["dirty"] = True
        for index, bad in done.dropped_by_run.items():
            entries[index]["dropped"] = bad
    cached = cache.rows(reused) if cache is not None else None
    parsed = len(runs) - len(reused) - sum(hit is not None and hit.first_line is None for hit in hits)
    result = Parsed(read, _combine(tables, cached), any(e["dirty"] for e in entries),
                    max((e["n_envs"] for e in entries), default=0), entries + blank,
                    parsed=parsed, reused=len(runs) - parsed)
    result.changed = (cache is None or cache.note is not None or result.parsed > 0
                      or len(cache.entries) != len(result.entries))
    return result


def _combine(tables: list[pa.Table], cached: pa.Table | None) -> pa.Table:
    """New and cached rows in run order (each run's rows are contiguous and in file order)."""
    if cached is not None:
        if not tables:
            return cached
        tables = [cached, *tables]
    if not tables:
        return record_schema(ENV_FLOOR).empty_table()
    table = pa.concat_tables(tables, promote_options="default")
    if cached is not None:
        tags = table.column(RUN_TAG).to_numpy()
        table = table.take(pa.array(np.argsort(tags, kind="stable")))
    return table


def stat_key(path: str) -> tuple | None:
    """(size, mtime_ns) of the file, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_chunk(paths: list[str]) -> list[bytes | None]:
    return [_read_file(path) for path in paths]


def _contents(paths: list[str], chunk: int = 256, ahead: int = 2):
    """Each file's bytes (None: unreadable), in order; another thread reads a few chunks
    ahead (its system calls release the GIL, so they overlap the caller's work)."""
    chunks = [paths[start:start + chunk] for start in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = deque(reader.submit(_read_chunk, c) for c in chunks[:ahead])
        for index in range(ahead, len(chunks) + ahead):
            contents = pending.popleft().result()
            if index < len(chunks):
                pending.append(reader.submit(_read_chunk, chunks[index]))
            yield from contents
