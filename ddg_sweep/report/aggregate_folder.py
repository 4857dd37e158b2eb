"""The aggregate folder (AGG, made by `aggregate`): writing and loading its files (their names:
ddg_sweep/layout.py's AggregateFolder).

It is where reading and selection hand over to the tables and plots, which load it back.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.io import atomic_write_bytes, atomic_write_text  # noqa: F401  (the report's writers)
from ddg_sweep.layout import AggregateFolder, SweepFolder

RECORDS_PARQUET = AggregateFolder.RECORDS
SWAD_PARQUET = AggregateFolder.SWAD
TABLE_PARQUET = AggregateFolder.TABLE
SELECTED_PARQUET = AggregateFolder.SELECTED
SEARCH_TRIALS_PARQUET = AggregateFolder.SEARCH_TRIALS
SUMMARY_JSON = AggregateFolder.SUMMARY
TABLES_TXT = AggregateFolder.TABLES_TXT


def atomic_write_parquet(path: Path, frame) -> Path:
    """Write `frame` as parquet atomically. Dictionary encoding only for text columns (numbers
    gain nothing from it and it triples the write time); zstd keeps the file small."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = [field.name for field in table.schema
            if pa.types.is_dictionary(field.type) or pa.types.is_string(field.type)
            or pa.types.is_large_string(field.type)]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", use_dictionary=text)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def not_an_aggregate(agg_dir: Path, missing: str, flag: str = "--input") -> UserError:
    """The error for a folder that is no aggregate: point at OUT/aggregate when it holds one,
    else say how to make an aggregate beside the sweep (never inside its run folders)."""
    sweep = SweepFolder(agg_dir)
    nested = sweep.aggregate
    if (nested / TABLE_PARQUET).is_file():
        return UserError(f"{agg_dir} is a sweep folder, not an aggregate ({missing} missing); its "
                         f"aggregate is {nested}: pass {flag} {nested}")
    if sweep.runs.is_dir() or sweep.manifest.is_file():
        return UserError(f"{agg_dir} is a sweep folder without an aggregate ({missing} missing); "
                         f"make one with: python -m ddg_sweep.run aggregate --input-dir {agg_dir} "
                         f"--output-dir {nested}, then pass {flag} {nested}")
    return UserError(f"{agg_dir} is not an aggregate folder ({missing} missing); make one with: "
                     "python -m ddg_sweep.run aggregate --input-dir SWEEP --output-dir "
                     f"SWEEP/aggregate, then pass {flag} SWEEP/aggregate")


def load_aggregate(agg_dir) -> tuple:
    """(table DataFrame, summary dict) of an aggregate folder, or a UserError saying how to make one."""
    import pandas as pd

    agg_dir = Path(agg_dir)
    table_path, summary_path = agg_dir / TABLE_PARQUET, agg_dir / SUMMARY_JSON
    if not table_path.is_file() or not summary_path.is_file():
        raise not_an_aggregate(agg_dir, f"{TABLE_PARQUET} / {SUMMARY_JSON}")
    return pd.read_parquet(table_path), json.loads(summary_path.read_text())


def load_records(agg_dir):
    import pandas as pd

    path = Path(agg_dir) / RECORDS_PARQUET
    if not path.is_file():
        raise not_an_aggregate(Path(agg_dir), RECORDS_PARQUET)
    return pd.read_parquet(path)


def load_selected(agg_dir):
    """selected.parquet of an aggregate, or None when it has none (an older aggregate)."""
    import pandas as pd

    path = Path(agg_dir) / SELECTED_PARQUET
    return pd.read_parquet(path) if path.is_file() else None
