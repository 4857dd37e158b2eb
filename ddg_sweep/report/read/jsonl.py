"""Bulk parsing of many runs' results.jsonl contents with pyarrow's JSON reader.

Each batch joins several runs' file contents and parses them in one call with
an explicit schema (unknown fields ignored): the per-checkpoint numbers, each
record's `job_id` and the `args` a run is grouped by; rows map back to runs by
line counts. If that fails, or the counts disagree, every line is tagged with its
run's index (one `bytes.replace` per file) and the batch is parsed again file by
file, then line by line (a file that needs this is *dirty*); the lines that still fail are dropped and counted.

Parsing less: every line of a run repeats the same `args` and `hparams` (two
thirds of a DomainBed line). When a file's first line starts with them as flat
objects and every later line starts with the very same text (and names no
`args` after it), that prefix is cut from the later lines (one `bytes.replace`)
and their rows take the first line's parsed `args` (same text, same value).
The cut is anchored at line starts, so it never touches a string, and it is
undone exactly before the careful path reads the original text.
"""
from __future__ import annotations

import io
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

RUN_TAG = "__run"
BATCH_BYTES = 32 << 20
# Every batch parses at least this many environments' columns, so that a run's rows do not
# depend on which runs share its batch (the parse cache reuses them one run at a time); the
# aggregate drops the columns past the sweep's widest first line.
ENV_FLOOR = 8
RECORD_FLOAT_FIELDS = ("step", "epoch", "loss", "step_time", "loss_diff", "loss_align")
RECORD_STRING_FIELDS = ("stage", "job_id")
# The `args` fields a run row needs (docs/report.md); the others are not parsed.
ARGS_TYPE = pa.struct([("dataset", pa.string()), ("algorithm", pa.string()),
                       ("test_envs", pa.list_(pa.int64())), ("trial_seed", pa.int64()),
                       ("hparams_seed", pa.int64()), ("seed", pa.int64()), ("steps", pa.int64()),
                       ("holdout_fraction", pa.float64()), ("protocol_version", pa.int64())])


def record_schema(n_envs: int) -> pa.Schema:
    fields = [(RUN_TAG, pa.int64())]
    fields += [(name, pa.float64()) for name in RECORD_FLOAT_FIELDS]
    fields += [(name, pa.string()) for name in RECORD_STRING_FIELDS]
    fields.append(("args", ARGS_TYPE))
    for env in range(n_envs):
        fields += [(f"env{env}_in_acc", pa.float64()), (f"env{env}_out_acc", pa.float64())]
    return pa.schema(fields)


def _parse(buffer: bytes, schema: pa.Schema) -> pa.Table:
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pa_json.read_json(io.BytesIO(buffer), parse_options=options,
                             read_options=pa_json.ReadOptions(block_size=8 << 20))


def _parse_lines_one_by_one(buffer: bytes, schema: pa.Schema) -> tuple[list[pa.Table], int]:
    tables, bad = [], 0
    for line in buffer.splitlines():
        if not line.strip():
            continue
        try:
            tables.append(_parse(line + b"\n", schema))
        except (pa.ArrowInvalid, ValueError):
            bad += 1
    return tables, bad


def _tagged(content: bytes, run_index: int) -> bytes:
    tag = b'{"%s":%d,' % (RUN_TAG.encode(), run_index)
    if content.startswith(b"{"):
        content = tag + content[1:]
    return content.replace(b"\n{", b"\n" + tag)


def _flat_object_end(line: bytes, start: int) -> int:
    """The index after the flat JSON object starting at `start` (no nested object, no
    escapes, the closing brace outside strings), or -1."""
    end = line.find(b"}", start)
    if end < 0:
        return -1
    text = line[start:end]
    if b"{" in text[1:] or b"\\" in text or text.count(b'"') % 2:
        return -1
    return end + 1


def shared_prefix(line: bytes) -> bytes | None:
    """The line's leading members `"args"` (first) and `"hparams"` when they are flat
    objects, up to the next key: `{"args": {...}, "hparams": {...}, `; None otherwise.
    A prefix that is not valid JSON makes the first line fail, so the careful path runs."""
    if line.startswith(b'{"args": {'):
        end = _flat_object_end(line, 9)
    elif line.startswith(b'{"args":{'):
        end = _flat_object_end(line, 8)
    else:
        return None
    if end < 0 or not line.startswith(b",", end):
        return None
    position = end + 1 + line.startswith(b" ", end + 1)
    for key in (b'"hparams": {', b'"hparams":{'):
        if line.startswith(key, position):
            end = _flat_object_end(line, position + len(key) - 1)
            if end > 0 and line.startswith(b",", end):
                position = end + 1 + line.startswith(b" ", end + 1)
            break
    return line[:position]


def strip_shared(content: bytes, first_line: bytes) -> tuple[bytes, bytes | None, int]:
    """(content with the first line's shared prefix cut from every later line, the prefix
    cut, the rows expected); the content unchanged and None unless every later line starts
    with the prefix and none names `args` after it (a duplicate key, or a nested one:
    left to pyarrow)."""
    prefix = shared_prefix(first_line)
    if prefix is None or not content.startswith(first_line) or not content.endswith(b"\n"):
        return content, None, expected_rows(content)
    lines = content.split(b"\n")  # a one-byte separator: much faster than a long one
    later = lines[1:-1]
    if not all(map(bytes.startswith, later, repeat(prefix))):
        return content, None, expected_rows(content)
    cut = len(prefix)
    stripped = b"\n{".join([lines[0], *[line[cut:] for line in later]]) + b"\n"
    if stripped.find(b'"args"', len(first_line)) >= 0:
        return content, None, len(lines) - 1
    return stripped, prefix, len(lines) - 1


def restore_shared(content: bytes, first_line_length: int, prefix: bytes | None) -> bytes:
    """The original text of a `strip_shared` content: every later line starts with the cut."""
    if prefix is None:
        return content
    head = first_line_length - 1
    return content[:head] + content[head:].replace(b"\n{", b"\n" + prefix)


def expected_rows(content: bytes) -> int:
    """Rows pyarrow yields for `content` if every line is one record (blank lines yield
    none: the row count then disagrees and the batch takes the careful path)."""
    return content.count(b"\n")


class Batch:
    """Several runs' contents parsed by one pyarrow call; rows map back to runs by line counts."""

    def __init__(self):
        self.contents, self.run_indices, self.row_counts = [], [], []
        self.prefixes, self.heads = [], []  # per file: the prefix cut (or None), first line's length
        self.size, self.n_envs = 0, 0
        self.fell_back = False  # True: some line was malformed, rows no longer follow lines
        self.dropped = 0
        self.dirty, self.dropped_by_run = set(), {}  # per run index: its file needed the careful path

    def add(self, content: bytes, run_index: int, n_envs: int, first_line: bytes = b"") -> None:
        content, prefix, rows = (strip_shared(content, first_line) if first_line
                                 else (content, None, expected_rows(content)))
        self.contents.append(content)
        self.prefixes.append(prefix)
        self.heads.append(len(first_line))
        self.run_indices.append(run_index)
        self.row_counts.append(rows)
        self.size += len(content)
        self.n_envs = max(self.n_envs, n_envs)

    def _shared_args(self, table: pa.Table) -> pa.Table:
        """Rows whose prefix was cut take their file's first row's `args`."""
        cut = np.array([prefix is not None for prefix in self.prefixes])
        if not cut.any():
            return table
        counts = np.asarray(self.row_counts, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        source = np.arange(table.num_rows, dtype=np.int64)
        rows = np.repeat(cut, counts)
        source[rows] = np.repeat(starts, counts)[rows]
        index = table.schema.get_field_index("args")
        return table.set_column(index, "args", table.column(index).take(pa.array(source)))

    def parse(self) -> pa.Table:
        """The batch's records; `self.dropped` counts the malformed lines left out (the
        caller adds it to its stats, so the parse can run in another thread)."""
        schema = record_schema(max(self.n_envs, ENV_FLOOR))
        try:
            table = _parse(b"".join(self.contents), schema)
            if table.num_rows == sum(self.row_counts):
                runs = np.repeat(np.asarray(self.run_indices, dtype=np.int64), self.row_counts)
                self.contents = []  # free the text as soon as it is parsed
                return self._shared_args(table).set_column(0, RUN_TAG, pa.array(runs))
        except (pa.ArrowInvalid, ValueError):
            pass
        # Some line is malformed (or blank-ish): tag each line with its run and parse file by
        # file (then line by line); a file that fails or yields other rows than lines is dirty.
        self.fell_back = True
        tables = []
        for content, head, prefix, run, rows in zip(self.contents, self.heads, self.prefixes,
                                                     self.run_indices, self.row_counts):
            tagged = _tagged(restore_shared(content, head, prefix), run)
            try:
                chunk_tables, bad = [_parse(tagged, schema)], 0
            except (pa.ArrowInvalid, ValueError):
                chunk_tables, bad = _parse_lines_one_by_one(tagged, schema)
                self.dirty.add(run)
            for table in chunk_tables:  # a line not starting with `{` got no tag: it is the run's
                untagged = table.column(RUN_TAG).null_count
                if untagged:
                    table = table.filter(table.column(RUN_TAG).is_valid())
                    bad += untagged
                tables.append(table)
            if sum(t.num_rows for t in chunk_tables) != rows:
                self.dirty.add(run)
            if bad:
                self.dropped_by_run[run] = bad
                self.dropped += bad
        self.contents = []
        return pa.concat_tables(tables) if tables else schema.empty_table()
