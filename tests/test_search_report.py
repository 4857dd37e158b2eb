"""Searches in the report, on a sweep folder written by hand (no Ray): tags, rows of their own, tables
with and without --include-search, ORACLE labels, stopped runs, search_trials.parquet, importance, plots."""
import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.cli import run_cli
from ddg_sweep.jobs import job_dir, make_job, run_config, write_manifest
from ddg_sweep.layout import RunFolder
from ddg_sweep.search.searches import SearchOptions, build_searches, record_trial
from search_spaces import SpaceOptions, space_jobs, space_ranges

SPACE = {"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]], "steps": 9, "checkpoint_freq": 4},
         "search": {"lr": {"loguniform": [1e-5, 1e-2]}}}


def write_job(out, job, out_accs: list[float], done=True):
    """Records at steps 0, 4, 8: training envs' out splits at `out_accs[k]`, test env 0 at 0.9."""
    folder = job_dir(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    args = run_config(job, out).args_record()
    lines = [json.dumps({"args": args, "hparams": job.hparams, "step": step, "epoch": step / 10, "loss": 1.0,
                         "step_time": 0.1, "env0_in_acc": 0.9, "env0_out_acc": 0.9 - k / 10,
                         **{f"env{e}_{split}_acc": acc for e in (1, 2, 3) for split in ("in", "out")}})
             for k, (step, acc) in enumerate(zip((0, 4, 8), out_accs))]
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps(run_config(job, out).to_json()))
    if done:
        (folder / "done").touch()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A protocol ERM job, a val_acc search (3 done trials, 1 stopped early) and an oracle search (2 trials)."""
    tmp = tmp_path_factory.mktemp("search_report")
    out = tmp / "OUT"
    path = tmp / "erm.json"
    path.write_text(json.dumps(SPACE))
    jobs = space_jobs(str(path), SpaceOptions())
    protocol = make_job("ERM", "DemoDigits", [0], steps=9, checkpoint_freq=4)
    write_job(out, protocol, [0.5, 0.55, 0.6])
    write_manifest(out, [protocol])
    trials = {}
    for metric, values in (("val_acc", [[0.2, 0.3, 0.4], [0.6, 0.7, 0.65], [0.3, 0.35, 0.5], [0.1]]),
                           ("oracle", [[0.5, 0.5, 0.5], [0.4, 0.4, 0.4]])):
        (search,) = build_searches(jobs, space_ranges(str(path)), SearchOptions("random", 4, metric), "erm")
        for index, accs in enumerate(values):
            config = {"lr": 10 ** -(2 + index)}
            (job,) = search.trial_jobs(index, config)
            record_trial(out, search, index, config, [job])
            write_job(out, job, accs, done=len(accs) == 3)
            if len(accs) < 3:
                (RunFolder(job_dir(out, job)).stopped).write_text(json.dumps({"by": "asha", "checkpoints": 1}))
            trials[metric, index] = job.job_id
    run_cli("aggregate", "--input-dir", out, "--output-dir", out / "aggregate", check=True)
    return out, trials, protocol


def test_search_runs_are_tagged_and_kept_apart_from_the_protocol_runs(sweep):
    out, trials, protocol = sweep
    records = pd.read_parquet(out / "aggregate" / "records.parquet")
    runs = records.drop_duplicates("job_id").set_index("job_id")
    assert trials["val_acc", 3] not in runs.index  # stopped early: unfinished, not read
    assert runs.loc[protocol.job_id, "search"] == "" and runs.loc[protocol.job_id, "algorithm"] == "ERM"
    assert runs.loc[trials["val_acc", 1], ["search", "search_metric", "search_trial", "algorithm"]].tolist() == [
        "erm/random/val_acc", "val_acc", 1, "ERM [erm random]"]
    assert runs.loc[trials["oracle", 0], "algorithm"] == "ERM [ORACLE erm random]"
    selected = pd.read_parquet(out / "aggregate" / "selected.parquet")
    iid = selected[selected["selection"] == "iid"].set_index("algorithm")
    assert iid.loc["ERM", "job_id"] == protocol.job_id  # the protocol row: its own run, not a search's
    assert iid.loc["ERM [erm random]", "job_id"] == trials["val_acc", 1]  # the search's best val
    summary = json.loads((out / "aggregate" / "summary.json").read_text())
    assert summary["search_rows"]["ERM [ORACLE erm random]"]["metric"] == "oracle"
    assert "ERM [erm" not in (out / "aggregate" / "tables.txt").read_text()  # protocol rows only

    stopped = out / "with_stopped"
    run_cli("aggregate", "--input-dir", out, "--output-dir", stopped, "--include-stopped", check=True)
    with_stopped = pd.read_parquet(stopped / "records.parquet").drop_duplicates("job_id").set_index("job_id")
    assert with_stopped.loc[trials["val_acc", 3], "stopped"] and not with_stopped.loc[protocol.job_id, "stopped"]
    assert with_stopped.loc[trials["val_acc", 3], "algorithm"] == "ERM [erm random]"


def test_tables_show_searches_only_when_asked_and_label_the_oracle(sweep):
    out, _, _ = sweep
    standard = run_cli("tables", "--input", out / "aggregate", "--format", "markdown", check=True).stdout
    assert "| ERM |" in standard and "[erm random]" not in standard.split("Left out")[0]
    assert "Left out: the rows of searches (ERM [ORACLE erm random], ERM [erm random])" in standard
    shown = run_cli("tables", "--input", out / "aggregate", "--format", "markdown", "--include-search",
                    check=True).stdout
    assert "| ERM [erm random] |" in shown and "| ERM [ORACLE erm random] |" in shown
    assert "an ORACLE result, not one under DomainBed's protocol" in shown and "Left out" not in shown
    text = run_cli("tables", "--input", out / "aggregate", "--include-search", check=True).stdout
    assert "ERM [ORACLE erm r" in text  # DomainBed's 20-character column still shows ORACLE
    hparams = run_cli("tables", "--input", out / "aggregate", "--show-hparams", check=True).stdout
    assert "ERM [erm" not in hparams


def test_search_trials_importance_and_plots(sweep):
    out, trials, _ = sweep
    table = pd.read_parquet(out / "aggregate" / "search_trials.parquet")
    val = table[table["metric"] == "val_acc"].set_index("trial")
    assert val["state"].tolist() == ["done", "done", "done", "stopped"]
    assert val["objective"].tolist() == pytest.approx([0.4, 0.7, 0.5, 0.1])  # best training-env val per trial
    assert val["hp_lr"].tolist() == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    oracle = table[table["metric"] == "oracle"].set_index("trial")
    assert oracle["objective"].tolist() == pytest.approx([0.7, 0.7])  # test env 0's out split, last record
    importance = run_cli("tables", "--input", out / "aggregate", "--importance", check=True).stdout
    assert importance.count("\n  lr ") == 1 and "3 finished trial(s) of 4" in importance and "1.000" in importance
    assert "ORACLE" in importance and "the same objective: nothing to apportion" in importance
    plots = run_cli("plots", "--input", out / "aggregate", "--output-dir", out / "plots", check=True).stdout
    for name in ("search_erm_random_val_acc_progress.png", "search_erm_random_val_acc_parallel.png",
                 "search_erm_random_oracle_progress.png", "search_erm_random_oracle_parallel.png"):
        assert (out / "plots" / name).stat().st_size > 1000, plots


def test_search_plot_titles_name_the_objective(sweep):
    from ddg_sweep.report.plots.search_plots import _title

    out, _, _ = sweep
    table = pd.read_parquet(out / "aggregate" / "search_trials.parquet")
    assert "ORACLE" in _title(table[table["metric"] == "oracle"], "x")
    assert "ORACLE" not in _title(table[table["metric"] == "val_acc"], "x")
    assert "training-domain validation" in _title(table[table["metric"] == "val_acc"], "x")


def test_full_benchmarks_single_rendering_pass_writes_the_bytes_of_aggregate_then_write_tables(sweep, tmp_path):
    """full-benchmark renders tables.txt and OUT/tables/ once, from the aggregate in memory."""
    from ddg_sweep.report.aggregate import aggregate, make_aggregate
    from ddg_sweep.report.render.tables import write_tables

    out, _, _ = sweep
    made = make_aggregate(out, tmp_path / "one" / "aggregate")
    assert not (tmp_path / "one" / "aggregate" / "tables.txt").exists()  # the data files first
    written = made.write_tables(tmp_path / "one", ("markdown", "latex"), include_search=True)
    aggregate(out, tmp_path / "two" / "aggregate")
    expected = write_tables(tmp_path / "two" / "aggregate", tmp_path / "two", ("markdown", "latex"),
                            include_search=True)
    assert [p.relative_to(tmp_path / "one") for p in written] == [p.relative_to(tmp_path / "two") for p in expected]
    names = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*")
                   if p.is_file() and ".parsed" not in p.parts)
    assert Path("aggregate/tables.txt") in names and Path("tables/paper.md") in names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert "ERM [erm random]" in (tmp_path / "one" / "tables" / "iid.md").read_text()  # include_search
    assert "ERM [erm" not in (tmp_path / "one" / "aggregate" / "tables.txt").read_text()  # protocol rows only
