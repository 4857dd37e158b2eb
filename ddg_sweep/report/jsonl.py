"""Bulk parsing of many runs' results.jsonl contents with pyarrow's JSON reader.

Each batch joins several runs' file contents and parses them in one call with
an explicit schema (unknown fields ignored): the per-checkpoint numbers, each
record's `job_id` and the `args` a run is grouped by; rows map back to runs by
line counts. If that fails, or the counts disagree, every line is tagged with its
run's index (one `bytes.replace` per file) and the batch is retried file by
file, then line by line; the lines that still fail are dropped and counted.
"""
from __future__ import annotations

import io
import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

RUN_TAG = "__run"
BATCH_BYTES = 32 << 20
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


def _parse_batch(chunks: list[bytes], schema: pa.Schema) -> tuple[list[pa.Table], int]:
    """Parse tagged file contents; returns tables and the number of lines dropped."""
    try:
        return [_parse(b"".join(chunks), schema)], 0
    except (pa.ArrowInvalid, ValueError):
        pass
    tables, bad = [], 0
    for chunk in chunks:
        try:
            tables.append(_parse(chunk, schema))
        except (pa.ArrowInvalid, ValueError):
            chunk_tables, chunk_bad = _parse_lines_one_by_one(chunk, schema)
            tables += chunk_tables
            bad += chunk_bad
    return tables, bad


def _tagged(content: bytes, run_index: int) -> bytes:
    tag = b'{"%s":%d,' % (RUN_TAG.encode(), run_index)
    if content.startswith(b"{"):
        content = tag + content[1:]
    return content.replace(b"\n{", b"\n" + tag)


def expected_rows(content: bytes) -> int:
    """Rows pyarrow yields for `content` if every line is one record (blank lines yield
    none: the row count then disagrees and the batch takes the careful path)."""
    return content.count(b"\n")


class Batch:
    """Several runs' contents parsed by one pyarrow call; rows map back to runs by line counts."""

    def __init__(self):
        self.contents, self.run_indices, self.row_counts = [], [], []
        self.size, self.n_envs = 0, 0
        self.fell_back = False  # True: some line was malformed, rows no longer follow lines
        self.dropped = 0

    def add(self, content: bytes, run_index: int, n_envs: int) -> None:
        self.contents.append(content)
        self.run_indices.append(run_index)
        self.row_counts.append(expected_rows(content))
        self.size += len(content)
        self.n_envs = max(self.n_envs, n_envs)

    def parse(self) -> pa.Table:
        """The batch's records; `self.dropped` counts the malformed lines left out (the
        caller adds it to its stats, so the parse can run in another thread)."""
        schema = record_schema(self.n_envs)
        try:
            table = _parse(b"".join(self.contents), schema)
            if table.num_rows == sum(self.row_counts):
                runs = np.repeat(np.asarray(self.run_indices, dtype=np.int64), self.row_counts)
                self.contents = []  # free the text as soon as it is parsed
                return table.set_column(0, RUN_TAG, pa.array(runs))
        except (pa.ArrowInvalid, ValueError):
            pass
        # Some line is malformed (or blank-ish): tag each line with its run and retry.
        self.fell_back = True
        tagged = [_tagged(c, i) for c, i in zip(self.contents, self.run_indices)]
        batch_tables, bad = _parse_batch(tagged, schema)
        self.contents = []
        self.dropped = bad
        return pa.concat_tables(batch_tables) if batch_tables else schema.empty_table()
