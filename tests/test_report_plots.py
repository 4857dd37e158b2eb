"""Figures: which runs and numbers each plot draws, and that every figure is written."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddg_sweep.report.aggregate import aggregate
from ddg_sweep.report.aggregate_folder import load_aggregate, load_records, load_selected
from ddg_sweep.report.plots import ablation, curves, paper_layout, toolbox
from benchmarks.sweepgen import make_sweep
from helpers.report import PNG_MAGIC, accs, call_report_cli, write_run


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("swept")
    make_sweep(root / "sweep", 900, datasets=("PACS", "VLCS"), algorithms=("ERM", "DDG"),
               n_trials=2, records_per_run=3, with_swad=True)
    aggregate(root / "sweep", root / "agg")
    return root


def test_every_figure_is_written_and_not_empty(swept, capsys):
    assert call_report_cli(["plots", "--input", swept / "agg", "--output-dir", swept / "plots"]) == 0
    assert "skipped" not in capsys.readouterr().out
    for name in ("hparam_lmd.png", "hparam_cfg_scale.png", "hparam_stage1_steps.png", "hparam_guidance_form.png",
                 "curves_PACS.png", "curves_VLCS.png", "paper_layout.png"):
        data = (swept / "plots" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name


def test_curves_follow_the_runs_training_domain_validation_chose(swept):
    records, selected = load_records(swept / "agg"), load_selected(swept / "agg")
    chosen = curves.chosen_runs(records, selected)
    iid = selected[selected["selection"] == "iid"]
    assert set(chosen["run_id"].astype(str)) == set(iid["run_id"])
    # one run per (trial, dataset, algorithm, test env), each with its every checkpoint
    assert chosen.groupby(["trial_seed", "dataset", "algorithm", "test_env"],
                          observed=True)["run_id"].nunique().eq(1).all()
    assert len(chosen) == 3 * len(iid)


def test_mean_and_sem_are_the_tables_arithmetic():
    frame = pd.DataFrame({"g": [1, 1, 1, 2], "v": [0.5, 0.6, 0.7, 0.4]})
    stats = toolbox.mean_and_sem(frame, ["g"], "v").set_index("g")
    assert stats.loc[1, "mean"] == pytest.approx(0.6) and stats.loc[2, "n"] == 1
    assert stats.loc[1, "sem"] == pytest.approx(np.std([0.5, 0.6, 0.7]) / np.sqrt(3))
    assert stats.loc[2, "sem"] == 0


def test_ablation_y_axis_keeps_a_small_gap_small():
    low, high = ablation.y_limits([81.0, 83.0], [81.0, 83.0])  # a 2-point gap, one seed
    assert high - low >= ablation.MIN_SPAN and low < 81 and high > 83
    assert ablation.y_limits([95.0], [99.5])[1] == 100.0  # never past 100 %
    low, high = ablation.y_limits([30.0], [80.0])  # a wide range is left as it is
    assert low == pytest.approx(28.0) and high == pytest.approx(82.0)


def test_ablation_points_by_hand(tmp_path):
    """lmd 0.5 (hparams_seed 0, the default) and 1.0, two trial seeds, one test env."""
    root = tmp_path / "sweep"
    for trial, (low, high) in enumerate(((0.50, 0.60), (0.54, 0.62))):
        for seed, (lmd, test) in enumerate(((0.5, low), (1.0, high))):
            run = write_run(root, f"r{trial}{seed}", [0], seed, {0: accs(0.1, 0, 0.2, 0.2),
                                                               1: accs(test, 0, 0.9, 0.9)},
                            trial_seed=trial)
            text = (run / "results.jsonl").read_text().replace('"lr"', f'"lmd": {lmd}, "lr"')
            (run / "results.jsonl").write_text(text)
    aggregate(root, tmp_path / "agg")
    runs = ablation.best_checkpoint_per_run(load_records(tmp_path / "agg"))
    assert sorted(runs["test_acc"].round(2)) == [0.5, 0.54, 0.6, 0.62]  # step 1 of each run
    runs = runs.assign(value=runs["hp_lmd"])
    assert ablation._default_value(runs) == 0.5
    per_trial = runs.groupby(["value", "trial_seed"])["test_acc"].mean().reset_index()
    stats = toolbox.mean_and_sem(per_trial, ["value"], "test_acc").set_index("value")
    assert stats.loc[0.5, "mean"] == pytest.approx(0.52) and stats.loc[0.5, "sem"] == pytest.approx(
        0.02 / np.sqrt(2))
    path, reason = ablation.plot_hparam(load_records(tmp_path / "agg"), "lmd", tmp_path / "p",
                                        toolbox.pyplot())
    assert reason is None and path.read_bytes()[:8] == PNG_MAGIC


def test_paper_layout_uses_swad_where_an_algorithm_has_it(swept):
    table, summary = load_aggregate(swept / "agg")
    rows = {label: (means, sems) for label, means, sems in paper_layout.ours_rows(table, summary)}
    assert set(rows) == {"ERM (ours, iid)", "DDG (ours, swad)"}  # ERM has no SWAD model
    means, _ = rows["DDG (ours, swad)"]
    pacs = table[(table["selection"] == "swad") & (table["dataset"] == "PACS")
                 & (table["algorithm"] == "DDG") & (table["test_env"] == -1)]["mean"].item()
    assert means[3] == pytest.approx(pacs)  # the paper's columns: OfficeHome, TerraInc, VLCS, PACS
    assert means[0] is None and means[-1] is None  # OfficeHome not run, so no Avg


def test_paper_layout_is_skipped_without_the_papers_datasets(tmp_path):
    write_run(tmp_path / "sweep", "demo", [0], 0, {0: {e: (0.5, 0.5) for e in range(4)}},
              dataset="DemoDigits")
    aggregate(tmp_path / "sweep", tmp_path / "agg")
    table, summary = load_aggregate(tmp_path / "agg")
    path, reason = paper_layout.plot_paper_layout(table, summary, tmp_path, toolbox.pyplot())
    assert path is None and "no results of ours on the paper's datasets" in reason
    assert "this aggregate has DemoDigits" in reason
