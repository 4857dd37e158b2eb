"""Every figure the `plots` command draws from an aggregate (matplotlib, Agg; no torch, no Ray).

- `curves_<dataset>.png`: learning curves of the runs training-domain validation
  chose (`curves.py`).
- `hparam_<name>.png` for lmd, cfg_scale, stage1_steps (`ablation.py`).
- `paper_layout.png`: the paper's table as bars, ours beside the published rows
  (`paper_layout.py`).
- for searches, `search_<label>_progress.png` and `search_<label>_parallel.png`
  (`search_plots.py`).
"""
from __future__ import annotations

from pathlib import Path

from ddg_sweep.report import aggregate_folder
from ddg_sweep.report.plots.ablation import SWEPT_HPARAMS, plot_hparam
from ddg_sweep.report.plots.curves import plot_curves
from ddg_sweep.report.plots.paper_layout import plot_paper_layout
from ddg_sweep.report.plots.search_plots import make_search_plots
from ddg_sweep.report.plots.toolbox import pyplot


def make_plots(agg_dir, out_dir) -> tuple[list[Path], list[str]]:
    """Draw every figure; returns (files written, messages for figures skipped)."""
    records = aggregate_folder.load_records(agg_dir)
    selected = aggregate_folder.load_selected(agg_dir)
    table, summary = aggregate_folder.load_aggregate(agg_dir)
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
    search_written, search_skipped = make_search_plots(agg_dir, out_dir, plt)
    return written + search_written, skipped + search_skipped
