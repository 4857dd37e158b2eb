"""PNG figures from an aggregate's records.parquet (matplotlib, Agg backend).

- `hparam_<name>.png`: held-out accuracy against lmd, cfg_scale, stage1_steps; one line
  per dataset, error bars = standard error over trial seeds. A run's held-out
  accuracy is its test-env accuracy at its best training-domain-validation
  checkpoint, averaged over the runs sharing (dataset, trial seed, value).
- `curves_<dataset>.png`: held-out test accuracy and mean validation accuracy
  against step, averaged over the dataset's single-test-env runs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.report import files

SWEPT_HPARAMS = ("lmd", "cfg_scale", "stage1_steps")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def best_checkpoint_per_run(records: pd.DataFrame) -> pd.DataFrame:
    """Each single-test-env run's record with the highest training-domain val_acc."""
    singles = records[(records["n_test_envs"] == 1) & records["val_acc"].notna()]
    singles = singles.assign(order=np.arange(len(singles)))
    ranked = singles.sort_values(["run_id", "val_acc", "order"], ascending=[True, False, True])
    return ranked.drop_duplicates("run_id", keep="first")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def plot_hparam(runs: pd.DataFrame, hparam: str, out_dir: Path, plt):
    """One figure for `hparam`, or (None, reason) when it cannot be drawn."""
    column = f"hp_{hparam}"
    if column not in runs:
        return None, f"hparam {hparam}: no run has it"
    runs = runs[runs[column].notna()]
    values = pd.to_numeric(runs[column], errors="coerce")
    if values.isna().any():
        return None, f"hparam {hparam}: not numeric"
    if values.nunique() < 2:
        return None, f"hparam {hparam}: does not vary (only {values.iloc[0] if len(values) else '-'})"
    runs = runs.assign(value=values)
    per_trial = runs.groupby(["dataset", "value", "trial_seed"], observed=True)["test_acc"].mean().reset_index()
    stats = per_trial.groupby(["dataset", "value"], observed=True)["test_acc"].agg(
        mean="mean", std=lambda a: float(np.std(a)), n="size").reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for dataset, lines in stats.groupby("dataset", observed=True):
        sem = 100 * lines["std"] / np.sqrt(lines["n"])
        ax.errorbar(lines["value"], 100 * lines["mean"], yerr=sem, marker="o", capsize=3,
                    label=dataset)
    path = _finish(plt, fig, ax, hparam, "held-out accuracy (%)", f"held-out accuracy vs {hparam}",
                   out_dir / f"hparam_{_safe_name(hparam)}.png")
    return path, None


def plot_curves(records: pd.DataFrame, dataset: str, out_dir: Path, plt) -> Path | None:
    singles = records[(records["dataset"] == dataset) & (records["n_test_envs"] == 1)]
    if not len(singles):
        return None
    curve = singles.groupby("step")[["test_acc", "val_acc"]].mean().sort_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(curve.index, 100 * curve["test_acc"], label="held-out test (env in)")
    ax.plot(curve.index, 100 * curve["val_acc"], label="validation (train envs out)")
    return _finish(plt, fig, ax, "step", "accuracy (%)", f"{dataset}: mean over {singles['run_id'].nunique()} runs",
                   out_dir / f"curves_{_safe_name(dataset)}.png")


def _finish(plt, fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label, legend and grid the axes, save the figure atomically, close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def make_plots(agg_dir, out_dir) -> tuple[list[Path], list[str]]:
    """Draw every figure; returns (files written, messages for figures skipped)."""
    records = files.load_records(agg_dir)
    out_dir = Path(out_dir)
    plt = _pyplot()
    written, skipped = [], []
    runs = best_checkpoint_per_run(records)
    for hparam in SWEPT_HPARAMS:
        path, reason = plot_hparam(runs, hparam, out_dir, plt)
        if path is None:
            skipped.append(reason)
        else:
            written.append(path)
    for dataset in sorted(records["dataset"].unique()):
        path = plot_curves(records, dataset, out_dir, plt)
        if path is None:
            skipped.append(f"curves for {dataset}: no single-test-env runs")
        else:
            written.append(path)
    return written, skipped
