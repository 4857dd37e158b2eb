"""The aggregate folder's files: atomic writes and loading them back."""
from __future__ import annotations

import io
import json
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.io import atomic_write_bytes, atomic_write_text  # noqa: F401  (the report's writers)

RECORDS_FILE = "records.parquet"
SWAD_FILE = "swad.parquet"
TABLE_FILE = "table.parquet"
SUMMARY_FILE = "summary.json"
TEXT_TABLES_FILE = "tables.txt"


def atomic_write_parquet(path: Path, frame) -> Path:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_aggregate(agg_dir) -> tuple:
    """(table DataFrame, summary dict) of an aggregate folder, or a UserError saying how to make one."""
    import pandas as pd

    agg_dir = Path(agg_dir)
    table_path, summary_path = agg_dir / TABLE_FILE, agg_dir / SUMMARY_FILE
    if not table_path.is_file() or not summary_path.is_file():
        raise UserError(f"{agg_dir} is not an aggregate folder (no {TABLE_FILE} / {SUMMARY_FILE}); "
                        "make one with: python -m ddg_sweep.run aggregate --input-dir SWEEP "
                        f"--output-dir {agg_dir}")
    return pd.read_parquet(table_path), json.loads(summary_path.read_text())


def load_records(agg_dir):
    import pandas as pd

    path = Path(agg_dir) / RECORDS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found; make it with: python -m ddg_sweep.run aggregate "
                        f"--input-dir SWEEP --output-dir {agg_dir}")
    return pd.read_parquet(path)
