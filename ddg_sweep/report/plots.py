"""PNG figures from an aggregate (matplotlib, Agg backend; no torch, no Ray).

- `curves_<dataset>.png`: learning curves, one line per algorithm: held-out test
  accuracy and training-domain validation accuracy against step, for the runs
  that training-domain validation chose (selected.parquet); each trial seed is
  averaged over the test environments, the line is the mean over trial seeds
  and the band its standard error.
- `hparam_<name>.png` for lmd, cfg_scale, stage1_steps (`ablation.py`).
- `paper_layout.png`: the paper's table as bars, ours beside the published rows
  (`paper_plot.py`).
- for searches, `search_<label>_progress.png` and `search_<label>_parallel.png`
  (`search_plots.py`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.report import files

CURVE_SELECTION = "iid"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def save(plt, fig, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def mean_and_sem(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per `by` group: mean, standard error (population std / sqrt(n), as the tables) and n."""
    stats = frame.groupby(by, observed=True)[value].agg(
        mean="mean", std=lambda a: float(np.std(a)), n="size").reset_index()
    stats["sem"] = stats["std"] / np.sqrt(stats["n"])
    return stats


def chosen_runs(records: pd.DataFrame, selected: pd.DataFrame | None) -> pd.DataFrame:
    """Records of the runs that training-domain validation chose, one per (trial, test env)."""
    singles = records[records["n_test_envs"] == 1]
    if selected is None or "run_id" not in selected:
        return singles[singles["hparams_seed"] == singles["hparams_seed"].min()]
    runs = selected.loc[selected["selection"] == CURVE_SELECTION, "run_id"].astype(str)
    return singles[singles["run_id"].astype(str).isin(set(runs))]


def plot_curves(records: pd.DataFrame, selected, dataset: str, out_dir: Path, plt,
                algorithm_order=None):
    runs = chosen_runs(records[records["dataset"] == dataset], selected)
    algorithm_order = algorithm_order or sorted(runs["algorithm"].astype(str).unique())
    if not len(runs):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    panels = (("test_acc", "held-out test environment (in split)"),
              ("val_acc", "training-domain validation (out splits)"))
    n_trials = {}
    for algorithm in algorithm_order:
        lines = runs[runs["algorithm"] == algorithm]
        if not len(lines):
            continue
        n_trials[algorithm] = lines["trial_seed"].nunique()
        for ax, (column, _) in zip(axes, panels):
            per_trial = lines.groupby(["trial_seed", "step"], observed=True)[column].mean()
            stats = mean_and_sem(per_trial.reset_index(), ["step"], column).sort_values("step")
            mean, sem = 100 * stats["mean"], 100 * stats["sem"]
            (line,) = ax.plot(stats["step"], mean, marker="o", markersize=3,
                              label=f"{algorithm} ({n_trials[algorithm]} trial seed"
                                    f"{'s' if n_trials[algorithm] != 1 else ''})")
            ax.fill_between(stats["step"], mean - sem, mean + sem, color=line.get_color(),
                            alpha=0.2, linewidth=0)
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize="small", loc="lower right")
    band = ("band: ± standard error over trial seeds" if max(n_trials.values()) > 1
            else "one trial seed: no band")
    fig.suptitle(f"{dataset}: learning curves of the runs chosen by training-domain validation, "
                 f"averaged over test environments; {band}", fontsize="small")
    return save(plt, fig, out_dir / f"curves_{safe_name(dataset)}.png")


def make_plots(agg_dir, out_dir) -> tuple[list[Path], list[str]]:
    """Draw every figure; returns (files written, messages for figures skipped)."""
    from ddg_sweep.report.ablation import SWEPT_HPARAMS, plot_hparam
    from ddg_sweep.report.paper_plot import plot_paper_layout

    records = files.load_records(agg_dir)
    selected = files.load_selected(agg_dir)
    table, summary = files.load_aggregate(agg_dir)
    out_dir = Path(out_dir)
    plt = pyplot()
    written, skipped = [], []
    for hparam in SWEPT_HPARAMS:
        path, reason = plot_hparam(records, hparam, out_dir, plt)
        (written.append(path) if path is not None else skipped.append(reason))
    for dataset in sorted(records["dataset"].unique()):
        path = plot_curves(records, selected, dataset, out_dir, plt, summary["algorithms"])
        if path is None:
            skipped.append(f"curves for {dataset}: no single-test-env runs")
        else:
            written.append(path)
    path, reason = plot_paper_layout(table, summary, out_dir, plt)
    (written.append(path) if path is not None else skipped.append(reason))
    from ddg_sweep.report.search_plots import make_search_plots

    search_written, search_skipped = make_search_plots(agg_dir, out_dir, plt)
    return written + search_written, skipped + search_skipped
