"""Rows of their own for an algorithm's variants: `DDG target w=3` beside `DDG prediction w=3`.

DomainBed's selection picks, per (algorithm, dataset, test env, trial seed), the run with
the best validation accuracy among all the algorithm's hparams. A sweep that compares
variants of one algorithm (the `guidance` space: each guidance form, and w = 1) names the
hparams that make a variant (`--rows-by guidance_form,cfg_scale`, or a space's `ROWS`); each
record's `algorithm` becomes the algorithm followed by those hparams' values, so selection
never picks across variants. The original name stays in `base_algorithm`. Algorithms that
do not have the hparams (ERM, VL2V) keep their rows.
"""
from __future__ import annotations

import pandas as pd

from ddg_sweep.errors import UserError
from ddg_sweep.hparams import ADDED_LATER, BY_NAME

# How a variant hparam is written in a row's name; others are written name=value.
SHORT_NAMES = {"guidance_form": "", "cfg_scale": "w="}


def _written(name: str, value) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    prefix = SHORT_NAMES.get(name, f"{name}=")
    return f"{prefix}{value}"


def check_rows_by(rows_by) -> tuple[str, ...]:
    names = tuple(rows_by or ())
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise UserError(f"--rows-by: unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return names


def split_rows(frame: pd.DataFrame, rows_by) -> pd.DataFrame:
    """`frame` with `algorithm` renamed per variant and `base_algorithm` added (see the module docstring)."""
    names = check_rows_by(rows_by)
    if not len(frame):
        return frame
    base = frame["algorithm"].astype(str)
    frame = frame.assign(base_algorithm=pd.array(base.to_numpy(), dtype="str"))
    columns = [f"hp_{name}" for name in names if f"hp_{name}" in frame]
    if not columns:
        return frame
    keys = frame[columns].astype(object).where(frame[columns].notna(), None)
    labels = []
    for algorithm, values in zip(base.to_numpy(), keys.itertuples(index=False, name=None)):
        parts = []
        for column, value in zip(columns, values):
            name = column[3:]
            if value is None and name in ADDED_LATER and algorithm in BY_NAME[name].algorithms:
                value = ADDED_LATER[name]  # a run recorded before the hparam existed computed this
            if value is not None:
                parts.append(_written(name, value))
        labels.append(" ".join([algorithm, *parts]))
    categorical = isinstance(frame["algorithm"].dtype, pd.CategoricalDtype)
    return frame.assign(algorithm=pd.Categorical(labels) if categorical else labels)
