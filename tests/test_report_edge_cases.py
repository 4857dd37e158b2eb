"""DomainBed's numbers where sweeps are not clean: a trial missing an environment, ties,
one trial seed; which run each cell chose (selected.parquet, --show-hparams, provenance)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ddg_sweep.report.aggregate import aggregate
from ddg_sweep.report.aggregate_folder import load_aggregate
from ddg_sweep.report.render.tables import render
from helpers.report import accs, call_report_cli, write_run


def _cell(table, selection, test_env, dataset="Toy"):
    rows = table[(table["selection"] == selection) & (table["dataset"] == dataset)
                 & (table["test_env"] == test_env)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


@pytest.fixture()
def incomplete_sweep(tmp_path):
    """Toy (3 envs): trial 0 has every test env, trial 1 lacks env 2 (its job failed)."""
    root = tmp_path / "sweep"
    tests = {0: {0: 0.50, 1: 0.60, 2: 0.90}, 1: {0: 0.70, 1: 0.40}}
    for trial, by_env in tests.items():
        for env, test_acc in by_env.items():
            steps = {0: {e: ((test_acc, 0.5) if e == env else (0.5, 0.5)) for e in range(3)}}
            write_run(root, f"t{trial}_e{env}", [env], 0, steps, trial_seed=trial)
    aggregate(root, tmp_path / "agg")
    return tmp_path / "agg", tests


def test_average_over_a_trial_missing_an_environment_is_domainbeds(incomplete_sweep):
    agg, tests = incomplete_sweep
    table, summary = load_aggregate(agg)
    # DomainBed: each trial averaged over the envs it has, then mean and SEM over trials.
    trial_means = np.array([np.mean(list(tests[0].values())), np.mean(list(tests[1].values()))])
    assert trial_means.tolist() == pytest.approx([2.0 / 3, 0.55])
    average = _cell(table, "iid", -1)
    assert average["mean"] == pytest.approx(100 * trial_means.mean())  # 60.8333
    assert average["sem"] == pytest.approx(100 * np.std(trial_means) / np.sqrt(2))  # 4.125
    assert average["n"] == 2 and not average["complete"]
    # per-env cells: env 2 rests on trial 0 only, the others on both
    assert _cell(table, "iid", 2)["n"] == 1 and not _cell(table, "iid", 2)["complete"]
    assert _cell(table, "iid", 0)["complete"] and _cell(table, "iid", 0)["mean"] == pytest.approx(60)
    text = (agg / "tables.txt").read_text()
    assert "60.8 +/- 4.1" in text  # DomainBed's text, no mark
    markdown = render(table, summary, "markdown", ["iid"])
    assert "| ERM | 60.8 ± 4.1 (n=2)* | 60.8 |" in markdown
    assert "\\* incomplete: not every trial seed has every test environment" in markdown
    assert "| 90.0 (n=1)* |" in markdown  # env 2: one seed, no ± 0.0


def test_cross_run_tie_goes_to_the_largest_hparams_seed_and_is_noted(tmp_path):
    root = tmp_path / "sweep"
    # Equal validation .8; folder names sort the other way round, so path order cannot decide.
    write_run(root, "a_hp3", [0], 3, {0: accs(0.30, 0.0, 0.8, 0.8)})
    write_run(root, "z_hp1", [0], 1, {0: accs(0.70, 0.0, 0.8, 0.8)})
    write_run(root, "m_hp2", [0], 2, {0: accs(0.99, 0.0, 0.7, 0.7)})  # lower val: out
    # test env 1: a tie whose runs agree on the test accuracy decides nothing
    same = {0: {0: (0.5, 0.5), 1: (0.6, 0.5), 2: (0.5, 0.5)}}
    write_run(root, "b_same", [1], 0, same)
    write_run(root, "c_same", [1], 4, same)
    aggregate(root, tmp_path / "agg")
    table, summary = load_aggregate(tmp_path / "agg")
    assert _cell(table, "iid", 0)["mean"] == pytest.approx(30.0)  # hparams_seed 3, not 1
    assert _cell(table, "iid", 0)["ties"] == 1 and _cell(table, "iid", 1)["ties"] == 0
    selected = pd.read_parquet(tmp_path / "agg" / "selected.parquet")
    chosen = selected[(selected["selection"] == "iid") & (selected["test_env"] == 0)].iloc[0]
    assert (chosen["run_id"], chosen["hparams_seed"], chosen["tied_runs"]) == ("a_hp3", 3, 2)
    assert bool(chosen["tie_decided"])
    other = selected[(selected["selection"] == "iid") & (selected["test_env"] == 1)].iloc[0]
    assert other["hparams_seed"] == 4 and other["tied_runs"] == 2 and not other["tie_decided"]
    markdown = render(table, summary, "markdown", ["iid"])
    assert "30.0 (n=1)†" in markdown and "60.0 (n=1) |" in markdown
    assert "† decided by a tie" in markdown and "largest hparams_seed" in markdown
    latex = render(table, summary, "latex", ["iid"])
    assert "30.0 (n=1)$^{\\dagger}$" in latex and "$^{\\dagger}$ decided by a tie" in latex
    assert "†" not in (tmp_path / "agg" / "tables.txt").read_text()


def test_one_seed_shows_n_and_three_seeds_show_only_the_error(tmp_path):
    root = tmp_path / "sweep"
    for trial, test_acc in ((0, 0.5), (1, 0.6), (2, 0.7)):
        write_run(root, f"three{trial}", [0], 0, {0: accs(test_acc, 0, 0.5, 0.5)}, trial_seed=trial)
    write_run(root, "one", [1], 0, {0: {0: (0.1, 0.5), 1: (0.319, 0.5), 2: (0.1, 0.5)}})
    aggregate(root, tmp_path / "agg")
    table, summary = load_aggregate(tmp_path / "agg")
    markdown = render(table, summary, "markdown", ["iid"])
    row = [line for line in markdown.splitlines() if line.startswith("| ERM")][0]
    sem = 100 * np.std(np.array([0.5, 0.6, 0.7]) / np.sqrt(3))
    # env 0: all three seeds, complete; env 1: only trial 0 has it
    assert row.startswith(f"| ERM | 60.0 ± {sem:.1f} | 31.9 (n=1)* | X | X |")
    assert "± 0.0" not in markdown
    assert "31.9 +/- 0.0" in (tmp_path / "agg" / "tables.txt").read_text()  # DomainBed's text


def test_selected_parquet_names_the_run_of_each_cell(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "a_run", [0], 0, {0: accs(0.1, 0.5, 0.5, 0.7), 1: accs(0.2, 0.4, 0.8, 0.8)})
    write_run(root, "b_run", [0], 1, {0: accs(0.9, 0.5, 0.7, 0.7), 1: accs(0.95, 0.6, 0.75, 0.75)})
    aggregate(root, tmp_path / "agg")
    selected = pd.read_parquet(tmp_path / "agg" / "selected.parquet")
    for column in ("selection", "dataset", "algorithm", "test_env", "trial_seed", "run_id",
                   "job_id", "hparams_seed", "step", "val_acc", "test_acc", "hp_lr"):
        assert column in selected.columns
    # iid by hand: a_run's best val is .8 at step 1 (test .2); b_run's is .75 -> a_run wins.
    iid = selected[selected["selection"] == "iid"].iloc[0]
    assert (iid["run_id"], iid["job_id"], iid["hparams_seed"], iid["step"]) == ("a_run", "a_run", 0, 1)
    assert iid["val_acc"] == pytest.approx(0.8) and iid["test_acc"] == pytest.approx(0.2)
    assert iid["hp_lr"] == pytest.approx(0.001)
    # oracle by hand: last records' env0_out .4 (a) vs .6 (b) -> b_run's step 1, test .95
    oracle = selected[selected["selection"] == "oracle"].iloc[0]
    assert (oracle["run_id"], oracle["step"], oracle["hp_lr"]) == ("b_run", 1, pytest.approx(0.002))
    assert oracle["test_acc"] == pytest.approx(0.95)


def _session(torch_version):
    return {"ddg_sweep": "0.1.0", "git_commit": "abc123", "torch": torch_version,
            "diffusers": None, "transformers": "4.0", "ray": "2.0", "python": "3.11.7",
            "device": "NVIDIA H100"}


def test_provenance_is_carried_listed_and_mixed_versions_warned(tmp_path, capsys):
    root = tmp_path / "sweep"
    for env, version in ((0, "2.13.0"), (1, "2.12.0")):
        run = write_run(root, f"r{env}", [env], 0, {0: accs(0.5, 0.5, 0.5, 0.5)})
        (run / "provenance.json").write_text(json.dumps({"sessions": [_session(version)]}))
    resumed = write_run(root, "r2", [2], 0, {0: accs(0.5, 0.5, 0.5, 0.5)})
    (resumed / "provenance.json").write_text(json.dumps(
        {"sessions": [_session("2.13.0"), _session("2.12.0")]}))
    aggregate(root, tmp_path / "agg")
    selected = pd.read_parquet(tmp_path / "agg" / "selected.parquet")
    by_run = selected[selected["selection"] == "iid"].set_index("run_id")
    assert by_run.loc["r0", "prov_torch"] == "2.13.0" and by_run.loc["r0", "prov_device"] == "NVIDIA H100"
    assert by_run.loc["r2", "prov_torch"] == "2.13.0; 2.12.0"
    assert "prov_diffusers" not in selected.columns  # never recorded
    assert call_report_cli(["tables", "--input", tmp_path / "agg", "--show-hparams",
                    "--selection", "iid"]) == 0
    captured = capsys.readouterr()
    assert "warning: the iid tables mix versions or devices: torch: " in captured.err
    assert "2.12.0 (1 cell)" in captured.err
    listing = captured.out
    assert listing.startswith("== iid: training-domain validation set\n")
    assert "Toy  ERM  test env 0 (0)\n  trial 0: test 50.0, val 50.0, step 0, hparams_seed 0" in listing
    assert "    run r0  job r0\n    hparams: lr=0.001\n" in listing
    assert "provenance: ddg_sweep=0.1.0 git_commit=abc123 torch=2.13.0 device=NVIDIA H100" in listing


def test_a_run_records_its_provenance_once_per_distinct_session(tmp_path, monkeypatch):
    from ddg_sweep import provenance

    first = provenance.record_provenance(tmp_path, "cpu")
    assert first["ddg_sweep"] and first["python"] and first["device"].startswith("cpu (")
    assert set(first) == set(provenance.FIELDS)
    provenance.record_provenance(tmp_path, "cpu")  # a resume on the same machine: no new entry
    assert len(provenance.read_sessions(tmp_path / "provenance.json")) == 1
    monkeypatch.setattr(provenance, "device_name", lambda device: "NVIDIA H200")
    provenance.record_provenance(tmp_path, "cuda")
    assert provenance.read_provenance(tmp_path)["device"] == f"{first['device']}; NVIDIA H200"
