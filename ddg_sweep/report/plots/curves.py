"""`curves_<dataset>.png`: learning curves, one line per algorithm.

Held-out test accuracy and training-domain validation accuracy against step, for
the runs that training-domain validation chose (selected.parquet); each trial seed
is averaged over the test environments, the line is the mean over trial seeds and
the band its standard error.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ddg_sweep.report.plots.toolbox import mean_and_sem, safe_name, save

CURVE_SELECTION = "iid"


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
