"""`tables --show-hparams`: the run every table cell chose, with its hyperparameters.

Like DomainBed's list_top_hparams.py, but for every cell at once and from
selected.parquet: per selection, dataset, algorithm and test environment, one
line per trial seed with the test and validation accuracy, the checkpoint step,
the hparams seed, the run folder, the job id, the hyperparameters and, when the
run recorded it, the code version and device.
"""
from __future__ import annotations

import math

import pandas as pd

from ddg_sweep.report.select.rules import SELECTION_METHODS

PROVENANCE_SHOWN = ("ddg_sweep", "git_commit", "torch", "device")


def _value(value) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else f"{value:g}"
    return str(value)


def _pairs(row: pd.Series, prefix: str, names=None) -> str:
    names = names or sorted(c[len(prefix):] for c in row.index if c.startswith(prefix))
    shown = [(name, _value(row.get(prefix + name))) for name in names]
    return " ".join(f"{name}={value}" for name, value in shown if value is not None)


def list_selected(selected: pd.DataFrame, summary: dict, selections) -> str:
    out = []
    env_names = summary.get("environments", summary["datasets"])
    for selection in selections:
        rows = selected[selected["selection"] == selection]
        out.append(f"== {selection}: {SELECTION_METHODS[selection].name}\n")
        if not len(rows):
            out.append("  (no cell)\n")
            continue
        for dataset in summary["datasets"]:
            for algorithm in summary["algorithms"]:
                cell_rows = rows[(rows["dataset"] == dataset) & (rows["algorithm"] == algorithm)]
                for test_env, cell in cell_rows.groupby("test_env", sort=True):
                    names = env_names.get(dataset, [])
                    env = names[test_env] if 0 <= test_env < len(names) else str(test_env)
                    out.append(f"{dataset}  {algorithm}  test env {test_env} ({env})\n")
                    for row in cell.sort_values("trial_seed").itertuples(index=False):
                        out.append(_trial_line(pd.Series(row._asdict())))
    return "".join(out)


def _trial_line(row: pd.Series) -> str:
    tie = (f", tie of {row['tied_runs']} runs" + (" decided it" if row["tie_decided"] else ""))
    line = (f"  trial {row['trial_seed']}: test {100 * row['test_acc']:.1f}, val "
            f"{100 * row['val_acc']:.1f}, step {row['step']}, hparams_seed {row['hparams_seed']}"
            + (tie if row["tied_runs"] > 1 else "") + "\n"
            f"    run {row['run_id']}  job {row['job_id']}\n"
            f"    hparams: {_pairs(row, 'hp_') or '-'}\n")
    provenance = _pairs(row, "prov_", PROVENANCE_SHOWN)
    return line + (f"    provenance: {provenance}\n" if provenance else "")
