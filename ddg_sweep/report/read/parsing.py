"""Every listed run's results.jsonl parsed into one table: from the cache when unchanged, else read.

Files are read with `os.open`/`os.read` in a thread that stays a few chunks of
files ahead, joined into batches and parsed by pyarrow in another thread
(`jsonl.Batch`); a run whose results file has the size and mtime_ns its cache
entry has takes its rows from the cache instead (below). The rows come
out in the runs' order, tagged with their index in `read`, as a cold read gives them.

The cache of parsed runs (AGG/.parsed/, `ParseCache`): a re-aggregate parses only what
changed. What is cached per run is what the reader gets from its `results.jsonl` alone: the
parsed rows (pyarrow, before any filtering), the first line (hparams, env count), the
truncated and malformed lines dropped and whether the file needed the careful path.
Everything else (which runs are listed, `done`, `stopped.json`, `search.json`,
`swad.json`, `provenance.json`, the selection and tables) is read and computed
afresh each time, so those files need no key. A run's entry is keyed by its
results file's size and mtime_ns; the whole cache by READER_VERSION (bump it when the
reader's parsed output changes) and ENV_FLOOR. Files changed less than RACY_NS before
the listing are never reused (a rewrite within the clock's resolution keeps size and
mtime). `--include-unfinished` / `--include-stopped` only choose which runs are read,
not what a run's parse gives, so toggling them reuses the runs read before.

Files: index.json (version, the two data files' names) written last, atomically,
naming runs-<token>.parquet (one row per run) and rows-<token>.parquet (the parsed
rows, `__run` = the run's row in the runs file); a missing, corrupt or mismatched
cache is ignored (one note) and rebuilt.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ddg_sweep.io import atomic_write_text
from ddg_sweep.report.read.jsonl import BATCH_BYTES, ENV_FLOOR, RUN_TAG, Batch, record_schema
from ddg_sweep.layout import AggregateFolder
from ddg_sweep.report.read.run_folders import (RESULTS_FILE, drop_truncated_tail, env_count_of_line,
                                               first_nonblank_line, read_file)

READER_VERSION = 1
CACHE_DIR = AggregateFolder.PARSED
INDEX_FILE = "index.json"
RACY_NS = 2_000_000_000
RUN_FIELDS = pa.schema([("run_id", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                        ("first_line", pa.binary()), ("n_envs", pa.int64()),
                        ("truncated", pa.int64()), ("dropped", pa.int64()), ("dirty", pa.bool_())])


@dataclass
class Parsed:
    read: list  # (RunFile, first line) per run with records, in order; rows' `__run` index this
    table: pa.Table  # every parsed row, in run order (invalid ones still in)
    careful: bool  # some file needed the careful path: hparams from each run's first good line
    widest: int  # the most environments a first line names
    entries: list  # per run, what its cache entry holds (RUN_FIELDS)
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
            content, truncated = drop_truncated_tail(content)
            stats["malformed_lines"] += truncated
            first_line = first_nonblank_line(content)
            n_envs = env_count_of_line(first_line) if first_line is not None else 0
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
    return [read_file(path) for path in paths]


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


class Entry:
    """One run's cached parse; `rows` is its row in the cached runs file (its rows' `__run`)."""

    __slots__ = ("first_line", "n_envs", "truncated", "dropped", "dirty", "position")

    def __init__(self, first_line, n_envs, truncated, dropped, dirty, position):
        self.first_line, self.n_envs, self.truncated = first_line, n_envs, truncated
        self.dropped, self.dirty, self.position = dropped, dirty, position


class ParseCache:
    """Load with `ParseCache(agg_dir)`; `lookup` per run, `rows` for the reused ones, `save`."""

    def __init__(self, agg_dir):
        self.folder = Path(agg_dir) / CACHE_DIR
        self.note = None
        self.entries: dict[str, tuple] = {}
        self._rows_path, self._rows = None, None
        self.started_ns = time.time_ns()
        self._load()

    def _load(self) -> None:
        index_path = self.folder / INDEX_FILE
        if not index_path.is_file():
            return
        try:
            index = json.loads(index_path.read_text())
            if index.get("reader_version") != READER_VERSION or index.get("env_floor") != ENV_FLOOR:
                self.note = (f"the cache of parsed runs in {self.folder} is from another reader "
                             "version; parsing every run again")
                return
            runs = pq.read_table(self.folder / index["runs"], schema=RUN_FIELDS).to_pydict()
            rows_path = self.folder / index["rows"]
            if not rows_path.is_file():
                raise OSError(f"{rows_path.name} missing")
            self.entries = {run_id: (size, mtime, Entry(line, n_envs, truncated, dropped, dirty, i))
                            for i, (run_id, size, mtime, line, n_envs, truncated, dropped, dirty)
                            in enumerate(zip(*(runs[f.name] for f in RUN_FIELDS)))}
            self._rows_path = rows_path
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as error:
            self.entries = {}
            self.note = (f"the cache of parsed runs in {self.folder} is unreadable "
                         f"({type(error).__name__}); parsing every run again")

    def lookup(self, run_id: str, key: tuple | None) -> Entry | None:
        cached = self.entries.get(run_id)
        if cached is None or key is None or cached[:2] != key:
            return None
        return cached[2]

    def load_rows(self) -> bool:
        """Read the cached rows; False (and no entries) when that fails."""
        if self._rows is None and self.entries:
            try:
                self._rows = pq.read_table(self._rows_path)
                tags = self._rows.column(RUN_TAG)
                if tags.null_count or (len(tags) and pc.max(tags).as_py() >= len(self.entries)):
                    raise ValueError("rows of unknown runs")
            except (OSError, ValueError, KeyError, pa.ArrowException) as error:
                self.entries, self._rows = {}, None
                self.note = (f"the cache of parsed runs in {self.folder} is unreadable "
                             f"({type(error).__name__}); parsing every run again")
        return self._rows is not None

    def rows(self, reused: list[tuple[int, Entry]]) -> pa.Table | None:
        """The cached rows of the reused runs, `__run` set to their new index, in that order."""
        if not reused:
            return None
        table = self._rows
        remap = np.full(len(self.entries), -1, dtype=np.int64)
        for new, entry in reused:
            remap[entry.position] = new
        tags = remap[table.column(RUN_TAG).to_numpy()]
        keep = tags >= 0
        if not keep.all():
            table, tags = table.filter(pa.array(keep)), tags[keep]
        return table.set_column(table.schema.get_field_index(RUN_TAG), RUN_TAG, pa.array(tags))

    def save(self, runs: list[dict], table: pa.Table) -> None:
        """Write the cache: `runs` (RUN_FIELDS' keys; a run's rows carry its position as
        `__run`), then the index naming them; the files of the previous cache are removed."""
        token = secrets.token_hex(4)
        names = {"runs": f"runs-{token}.parquet", "rows": f"rows-{token}.parquet"}
        for run in runs:  # a file changed just before the listing may change again unseen
            if run["mtime_ns"] > self.started_ns - RACY_NS:
                run["mtime_ns"] = -1
        frame = pa.Table.from_pylist(runs, schema=RUN_FIELDS)
        _write(self.folder / names["runs"], frame)
        _write(self.folder / names["rows"], table)
        index = {"reader_version": READER_VERSION, "env_floor": ENV_FLOOR, **names}
        atomic_write_text(self.folder / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        for path in self.folder.iterdir():
            if path.name not in (INDEX_FILE, *names.values()):
                path.unlink(missing_ok=True)


def _write(path: Path, table: pa.Table) -> None:
    """Straight to its final name: a new name each time, used only once index.json names it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", use_dictionary=False)


def remove(agg_dir) -> None:
    """Drop the cache (`--no-cache` leaves an old one untouched: this is for tests and tools)."""
    folder = Path(agg_dir) / CACHE_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()
