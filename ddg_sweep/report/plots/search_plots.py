"""Figures of searches, from search_trials.parquet, one pair per search label (name/searcher/metric):

- `search_<label>_progress.png`: each trial's objective against its index (dots: finished,
  crosses: stopped early by ASHA), and the best so far as a step line, one colour per search
  (a cell: dataset, test envs, trial seed);
- `search_<label>_parallel.png`: parallel coordinates, one line per finished trial across the
  searched hyperparameters (each axis spans its range; log scale for loguniform, options
  in order for choice) and the objective, coloured by the objective.

Titles say the objective; an oracle search's say ORACLE.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.report.aggregate_folder import SEARCH_TRIALS_PARQUET
from ddg_sweep.report.plots.toolbox import safe_name, save
from ddg_sweep.search.objective import METRIC_WORDS


def _title(group: pd.DataFrame, what: str) -> str:
    first = group.iloc[0]
    return f"{first['row']}: {what}\nobjective: {first['metric']} ({METRIC_WORDS[first['metric']]})"


def plot_progress(group: pd.DataFrame, out_dir: Path, plt) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for search_id, trials in group.groupby("search_id", sort=True):
        trials = trials.sort_values("trial")
        first = trials.iloc[0]
        name = f"{first['dataset']} test envs {first['test_envs']} seed {first['trial_seed']}"
        done = trials[trials["state"] == "done"]
        best = 100 * done["objective"].cummax()
        last = trials["trial"].max()  # the best so far holds until the last trial, finished or not
        (line,) = ax.step([*done["trial"], last], [*best, best.iloc[-1] if len(best) else float("nan")],
                          where="post", label=f"{name}: best so far")
        ax.plot(done["trial"], 100 * done["objective"], "o", color=line.get_color(), markersize=4)
        stopped = trials[trials["state"] == "stopped"]
        if len(stopped):
            ax.plot(stopped["trial"], 100 * stopped["objective"], "x", color=line.get_color(),
                    label=f"{name}: stopped early (value when stopped)")
    ax.set_xlabel("trial index")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("objective (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(_title(group, "objective by trial"), fontsize="small")
    return save(plt, fig, out_dir / f"search_{safe_name(group.iloc[0]['search'])}_progress.png")


def _axis(values: pd.Series, spec: dict) -> tuple[np.ndarray, list[str]]:
    """Positions in [0, 1] along the range, and the axis' end labels."""
    (kind, args), = spec.items()
    if kind == "choice":
        index = {repr(option): i for i, option in enumerate(args)}
        span = max(len(args) - 1, 1)
        return np.array([index.get(repr(v), 0) / span for v in values]), [str(args[0]), str(args[-1])]
    lower, upper = float(args[0]), float(args[1] - 1 if kind == "randint" else args[1])
    if kind == "loguniform":
        positions = (np.log(values.astype(float)) - math.log(lower)) / (math.log(upper) - math.log(lower))
    else:
        positions = (values.astype(float) - lower) / max(upper - lower, 1e-12)
    return positions.to_numpy(), [f"{lower:g}", f"{upper:g}"]


def plot_parallel(group: pd.DataFrame, out_dir: Path, plt) -> Path | None:
    done = group[(group["state"] == "done") & group["objective"].notna()]
    if not len(done):
        return None
    ranges = json.loads(group.iloc[0]["ranges"])
    names = sorted(ranges)
    axes_values, ends = [], []
    for name in names:
        positions, labels = _axis(done[f"hp_{name}"], ranges[name])
        axes_values.append(positions)
        ends.append(labels)
    objective = 100 * done["objective"].to_numpy()
    low, high = objective.min(), objective.max()
    axes_values.append((objective - low) / (high - low) if high > low else np.full(len(objective), 0.5))
    ends.append([f"{low:.1f}", f"{high:.1f}"])
    matrix = np.column_stack(axes_values)
    fig, ax = plt.subplots(figsize=(1.8 * (len(names) + 1) + 1, 4))
    colours = plt.get_cmap("viridis")
    for row, value in sorted(zip(matrix, objective), key=lambda pair: pair[1]):  # best drawn last, on top
        ax.plot(range(len(names) + 1), row, color=colours((value - low) / (high - low) if high > low else 0.5),
                alpha=0.8)
    ax.set_xticks(range(len(names) + 1), [*names, "objective (%)"])
    for x, (bottom, top) in enumerate(ends):
        ax.axvline(x, color="grey", linewidth=0.8)
        ax.annotate(bottom, (x, -0.04), ha="center", va="top", fontsize="x-small")
        ax.annotate(top, (x, 1.04), ha="center", va="bottom", fontsize="x-small")
    ax.set_ylim(-0.12, 1.12)
    ax.set_yticks([])
    ax.set_title(_title(group, f"{len(done)} finished trial(s), colour: objective"), fontsize="small")
    return save(plt, fig, out_dir / f"search_{safe_name(group.iloc[0]['search'])}_parallel.png")


def make_search_plots(agg_dir, out_dir, plt) -> tuple[list[Path], list[str]]:
    path = Path(agg_dir) / SEARCH_TRIALS_PARQUET
    if not path.is_file():
        return [], []
    trials = pd.read_parquet(path)
    written, skipped = [], []
    for label, group in trials.groupby("search", sort=True):
        written.append(plot_progress(group, Path(out_dir), plt))
        parallel = plot_parallel(group, Path(out_dir), plt)
        if parallel is None:
            skipped.append(f"parallel coordinates of {label}: no finished trial")
        else:
            written.append(parallel)
    return written, skipped
