"""`hparam_<name>.png`: held-out accuracy against one swept hyperparameter (an ablation).

For each algorithm that varies the hyperparameter: each single-test-env run's
held-out accuracy at its best training-domain-validation checkpoint (DomainBed's
iid rule inside a run); per dataset, value and trial seed the mean over test
environments (and runs sharing the value); a point is the mean over trial
seeds, its error bar the standard error, and `n=k` is written beside points
resting on fewer than three seeds. The default (the value of hparams_seed 0,
which every grid space gives the paper's defaults) is marked. The y-axis spans
at least MIN_SPAN accuracy points, so a gap of a point or two on one seed does
not look like a cliff.

A categorical hyperparameter (`guidance_form`) is drawn at evenly spaced positions, one line
per dataset and guidance scale (`DemoDigits w=3`), so w = 1, where every form is the same
loss, does not blur the w = 3 comparison. Runs split into rows of their own (`--rows-by`,
select/variants.py) are grouped back by their `base_algorithm` here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.hparams import GUIDANCE_FORMS
from ddg_sweep.report.plots.toolbox import mean_and_sem, safe_name, save

SWEPT_HPARAMS = ("lmd", "cfg_scale", "stage1_steps", "guidance_form")
CATEGORIES = {"guidance_form": GUIDANCE_FORMS}  # categorical hparams, drawn in this order
MIN_SPAN = 20.0  # accuracy points on the y-axis at the least


def best_checkpoint_per_run(records: pd.DataFrame) -> pd.DataFrame:
    """Each single-test-env run's first record with the highest training-domain val_acc."""
    singles = records[(records["n_test_envs"] == 1) & records["val_acc"].notna()]
    singles = singles.assign(order=np.arange(len(singles)))
    ranked = singles.sort_values(["run_id", "val_acc", "order"], ascending=[True, False, True])
    return ranked.drop_duplicates("run_id", keep="first")


def _values(column: pd.Series, hparam: str) -> pd.Series:
    """The hparam as numbers: itself, or a categorical one's position in CATEGORIES."""
    if hparam in CATEGORIES:
        positions = {name: float(i) for i, name in enumerate(CATEGORIES[hparam])}
        return column.astype(object).map(positions).astype(float)
    return pd.to_numeric(column, errors="coerce")


def _varying(runs: pd.DataFrame, column: str, hparam: str) -> list[str]:
    """Algorithms whose runs give `column` at least two values."""
    found = []
    for algorithm, group in runs.groupby("group_algorithm", observed=True):
        if _values(group[column], hparam).dropna().nunique() >= 2:
            found.append(str(algorithm))
    return found


def _default_value(runs: pd.DataFrame):
    defaults = runs.loc[runs["hparams_seed"] == 0, "value"].dropna().unique()
    return float(defaults[0]) if len(defaults) == 1 else None


def y_limits(lows, highs, min_span: float = MIN_SPAN) -> tuple[float, float]:
    """Limits covering [min(lows), max(highs)], widened to `min_span` points, inside 0..100."""
    lo, hi = float(np.nanmin(lows)), float(np.nanmax(highs))
    if hi - lo < min_span:
        middle = (lo + hi) / 2
        lo, hi = middle - min_span / 2, middle + min_span / 2
    if lo < 0:
        lo, hi = 0.0, max(hi - lo, min_span)
    if hi > 100:
        lo, hi = min(lo - (hi - 100), 100 - min_span), 100.0
    pad = 0.04 * (hi - lo)
    return max(lo - pad, 0.0), min(hi + pad, 100.0)


def _draw(ax, runs: pd.DataFrame, algorithm: str, hparam: str) -> tuple[list, list]:
    per_trial = runs.groupby(["series", "value", "trial_seed"], observed=True)["test_acc"].mean()
    stats = mean_and_sem(per_trial.reset_index(), ["series", "value"], "test_acc")
    lows, highs = [], []
    for dataset, lines in stats.groupby("series", observed=True):
        lines = lines.sort_values("value")
        mean, sem = 100 * lines["mean"], 100 * lines["sem"]
        ax.errorbar(lines["value"], mean, yerr=sem, marker="o", capsize=3, label=str(dataset))
        for x, y, n in zip(lines["value"], mean, lines["n"]):
            if n < 3:
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize="x-small", color="dimgray")
        lows += list(mean - sem)
        highs += list(mean + sem)
    default = _default_value(runs)
    if hparam in CATEGORIES:
        ax.set_xticks(range(len(CATEGORIES[hparam])), CATEGORIES[hparam])
        ax.set_xlim(-0.5, len(CATEGORIES[hparam]) - 0.5)
    if default is not None:
        ax.axvline(default, color="gray", linestyle=":", linewidth=1.2)
        shown = CATEGORIES[hparam][int(default)] if hparam in CATEGORIES else f"{default:g}"
        ax.annotate(f"default {shown}", (default, 0.02), xycoords=("data", "axes fraction"),
                    xytext=(3, 0), textcoords="offset points", fontsize="x-small", color="gray")
    ax.set_xlabel(hparam)
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="dataset, guidance scale" if hparam in CATEGORIES else "dataset",
              title_fontsize="small")
    n_seeds = runs["trial_seed"].nunique()
    spread = (f"mean ± standard error over {n_seeds} trial seeds" if n_seeds > 1 else
              "one trial seed: no error bars, a gap may be noise")
    ax.set_title(f"{algorithm}: held-out accuracy vs {hparam}\nmodel selection: training-domain "
                 f"validation (best checkpoint per run)\n{spread}", fontsize="small")
    return lows, highs


def plot_hparam(records: pd.DataFrame, hparam: str, out_dir: Path, plt):
    """One figure for `hparam` (a panel per algorithm varying it), or (None, reason)."""
    column = f"hp_{hparam}"
    if column not in records:
        return None, f"hparam {hparam}: no run has it"
    runs = best_checkpoint_per_run(records[records[column].notna()])
    grouping = "base_algorithm" if "base_algorithm" in runs else "algorithm"
    runs = runs.assign(group_algorithm=runs[grouping].astype(str))
    algorithms = _varying(runs, column, hparam)
    if not algorithms:
        values = runs[column].dropna().unique()
        return None, (f"hparam {hparam}: does not vary (only "
                      f"{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values) or 'no values'})")
    fig, axes = plt.subplots(1, len(algorithms), figsize=(5.5 * len(algorithms), 4), squeeze=False)
    lows, highs = [], []
    for ax, algorithm in zip(axes[0], algorithms):
        mine = runs[runs["group_algorithm"] == algorithm]
        series = mine["dataset"].astype(str)
        if hparam in CATEGORIES and "hp_cfg_scale" in mine:
            series = series + " w=" + mine["hp_cfg_scale"].map(lambda w: f"{w:g}")
        mine = mine.assign(value=_values(mine[column], hparam), series=series).dropna(subset=["value"])
        low, high = _draw(ax, mine, algorithm, hparam)
        lows += low
        highs += high
    bottom, top = y_limits(lows, highs)
    for ax in axes[0]:
        ax.set_ylim(bottom, top)
    return save(plt, fig, out_dir / f"hparam_{safe_name(hparam)}.png"), None
