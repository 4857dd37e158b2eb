"""`paper_layout.png`: the paper's table as grouped bars, ours beside the published rows.

Groups are the paper's columns (OfficeHome, TerraInc, VLCS, PACS, DomainNet,
Avg); bars are the published rows (hatched, no error bar) and, per algorithm of
ours, its averages-table cell with the standard error over trial seeds. The
paper reports SWAD models, so ours uses the `swad` cells where an algorithm has
them and training-domain validation (`iid`) otherwise; the legend says which.
A dataset we did not run has no bar of ours (`not run` is written there), and
our Avg bar is drawn only when every paper dataset was run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddg_sweep.report.plots.toolbox import save
from ddg_sweep.report.render.tables import PAPER_COLUMNS, PAPER_REFERENCE_ROWS
from ddg_sweep.report.select.cells import AVERAGE_ENV

OURS_SELECTIONS = ("swad", "iid")  # the first one an algorithm has on the paper's datasets


def ours_rows(table: pd.DataFrame, summary: dict) -> list[tuple[str, list, list]]:
    """[(label, means or None per paper column + Avg, sems)] for each algorithm of ours."""
    datasets = [d for d, _ in PAPER_COLUMNS]
    averages = table[(table["test_env"] == AVERAGE_ENV) & table["dataset"].isin(datasets)]
    rows = []
    for algorithm in summary["algorithms"]:
        for selection in OURS_SELECTIONS:
            cells = averages[(averages["algorithm"] == algorithm)
                             & (averages["selection"] == selection)].set_index("dataset")
            if not len(cells):
                continue
            means = [float(cells.loc[d, "mean"]) if d in cells.index else None for d in datasets]
            sems = [float(cells.loc[d, "sem"]) if d in cells.index else 0.0 for d in datasets]
            complete = all(m is not None for m in means)
            means.append(float(np.mean(means)) if complete else None)
            sems.append(0.0)
            rows.append((f"{algorithm} (ours, {selection})", means, sems))
            break
    return rows


def plot_paper_layout(table: pd.DataFrame, summary: dict, out_dir: Path, plt):
    ours = ours_rows(table, summary)
    if not ours:
        have = ", ".join(summary["datasets"]) or "none"
        return None, ("paper layout: no results of ours on the paper's datasets ("
                      + ", ".join(d for d, _ in PAPER_COLUMNS) + f"); this aggregate has {have}")
    labels = [short for _, short in PAPER_COLUMNS] + ["Avg"]
    published = [(name, list(values) + [avg], [0.0] * len(labels), True)
                 for name, values, avg in PAPER_REFERENCE_ROWS]
    bars = published + [(label, means, sems, False) for label, means, sems in ours]
    width = 0.8 / len(bars)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(labels) + 0.4 * len(bars)), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    not_run = []
    for index, (name, means, sems, is_published) in enumerate(bars):
        offsets = x - 0.4 + width * (index + 0.5)
        present = [i for i, m in enumerate(means) if m is not None]
        values = [means[i] for i in present]
        ax.bar(offsets[present], values, width, label=name, color=colors[index % len(colors)],
               hatch="//" if is_published else None, edgecolor="white" if is_published else None,
               yerr=None if is_published else [sems[i] for i in present], capsize=2)
        not_run += [offsets[i] for i in sorted(set(range(len(labels))) - set(present))]
    ax.set_ylim(0, 100)  # bars start at zero: their lengths compare honestly
    avg_index = len(labels) - 1
    for position in not_run:
        text = "needs all five" if position > avg_index - 0.5 else "not run"
        ax.text(position, 1, text, rotation=90, ha="center", va="bottom",
                fontsize="x-small", color="dimgray")
    ax.set_xticks(x, labels)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Paper layout: published rows (hatched) and ours (mean ± standard error over "
                 "trial seeds)", fontsize="small")
    return save(plt, fig, out_dir / "paper_layout.png"), None
