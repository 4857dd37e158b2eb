"""Each run's `hparams`, read once from its first record, as typed `hp_<name>` columns.

Fast path: the runs' first lines are parsed together by pyarrow (schema
inferred in a single block), and the `hparams` struct becomes the columns. When
that cannot work (a malformed first line, an hparam whose type changes between
runs, nested objects), each first good line goes through `json.loads` and
`hparams_frame` types the columns. Both give: bool -> boolean, int -> Int64,
int and float -> float64, anything else -> string (lists and dicts as JSON).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
                 pa.string(): pd.StringDtype(), pa.float64(): None}


def hparams_frame(hparams_dicts: list[dict]) -> pd.DataFrame:
    """`hp_<name>` columns with one dtype each: bool, int64, float64 or string."""
    names = sorted({name for hparams in hparams_dicts for name in hparams})
    columns = {}
    for name in names:
        values = [hparams.get(name) for hparams in hparams_dicts]
        kinds = {type(v) for v in values if v is not None}
        if kinds and kinds <= {bool}:
            column = pd.array(values, dtype="boolean")
        elif kinds and kinds <= {int}:
            column = pd.array(values, dtype="Int64")
        elif kinds and kinds <= {int, float}:
            column = pd.array([np.nan if v is None else float(v) for v in values], dtype="float64")
        else:
            column = pd.array([v if v is None or isinstance(v, str) else json.dumps(v)
                               for v in values], dtype="string")
        columns[f"hp_{name}"] = column
    return pd.DataFrame(columns, index=range(len(hparams_dicts)))


def _from_arrow(hparams: pa.Array, n_rows: int) -> pd.DataFrame | None:
    if pa.types.is_null(hparams.type):
        return pd.DataFrame(index=range(n_rows))
    if not pa.types.is_struct(hparams.type) or hparams.null_count:
        return None  # a run without an hparams object: the careful path
    columns = {}
    for field, child in zip(hparams.type, hparams.flatten()):
        if field.type in _PANDAS_TYPES:
            columns[f"hp_{field.name}"] = child.to_pandas(
                types_mapper=_PANDAS_TYPES.get).reset_index(drop=True)
        elif pa.types.is_null(field.type):
            columns[f"hp_{field.name}"] = pd.array([None] * n_rows, dtype="string")
        elif pa.types.is_list(field.type) and not pa.types.is_nested(field.type.value_type):
            columns[f"hp_{field.name}"] = pd.array(
                [None if v is None else json.dumps(v) for v in child.to_pylist()], dtype="string")
        else:
            return None  # nested objects: json.loads keeps their exact form
    return pd.DataFrame({name: columns[name] for name in sorted(columns)}, index=range(n_rows))


_KEY = b'"hparams": {'


def hparams_text(line: bytes) -> bytes | None:
    """The text of a line's top-level, flat `hparams` object, or None when unsure.

    The object runs from `"hparams": {` to the first `}`; a nested object or a
    string holding `}` cuts it short and makes it invalid JSON, which the parse
    below rejects (then json.loads decides). A second `"hparams": {` (an object of
    that name nested elsewhere) also returns None."""
    start = line.find(_KEY)
    if start < 0 or line.find(_KEY, start + 1) >= 0:
        return None
    start += len(_KEY) - 1
    end = line.find(b"}", start)
    return line[start:end + 1] if end > 0 else None


def hparams_columns(first_lines: list[bytes]) -> pd.DataFrame | None:
    """hp_* columns, one row per first line, or None when the fast path does not apply.

    Runs mostly share their hparams text, so each distinct text is parsed once
    (pyarrow, schema inferred in one block) and the rows are spread back."""
    if not first_lines:
        return pd.DataFrame()
    texts = [hparams_text(line) for line in first_lines]
    if any(text is None for text in texts):
        return None
    distinct = list(dict.fromkeys(texts))
    position = {text: index for index, text in enumerate(distinct)}
    buffer = b"".join(b'{"hparams": ' + text + b"}\n" for text in distinct)
    options = pa_json.ParseOptions(explicit_schema=pa.schema([]),
                                   unexpected_field_behavior="infer")
    try:
        table = pa_json.read_json(io.BytesIO(buffer), parse_options=options,
                                  read_options=pa_json.ReadOptions(block_size=len(buffer) + 1))
    except (pa.ArrowInvalid, ValueError):
        return None
    if table.num_rows != len(distinct) or "hparams" not in table.column_names:
        return None
    rows = pa.array(np.array([position[text] for text in texts], dtype=np.int64))
    return _from_arrow(table.column("hparams").combine_chunks().take(rows), len(first_lines))


def hparams_of_lines(first_lines: list[bytes]) -> pd.DataFrame:
    """hp_* columns of the given lines, by pyarrow when it can, else json.loads."""
    fast = hparams_columns(first_lines)
    if fast is not None:
        return fast
    dicts = []
    for line in first_lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = {}
        hparams = record.get("hparams") if isinstance(record, dict) else None
        dicts.append(hparams if isinstance(hparams, dict) else {})
    return hparams_frame(dicts)
