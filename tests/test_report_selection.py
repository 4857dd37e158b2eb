"""Each model selection rule on small hand-made runs whose answer is worked out by hand."""
from __future__ import annotations

import pytest

from ddg_sweep.report.aggregate import aggregate
from ddg_sweep.report.aggregate_folder import load_aggregate
from helpers.report import accs, write_run


@pytest.fixture()
def toy_sweep(tmp_path):
    root = tmp_path / "sweep"
    # hparams 0: val .6, .8, .8 -> best is step 1 (first of the tie), test .2
    write_run(root, "a_run", [0], 0, {0: accs(0.1, 0.5, 0.5, 0.7), 1: accs(0.2, 0.4, 0.8, 0.8),
                                      2: accs(0.3, 0.5, 0.8, 0.8)},
              swad=accs(0.33, 0.0, 0.7, 0.7))
    # hparams 1: best val .75 < .8; last record's test-out .6 is the oracle's best
    write_run(root, "b_run", [0], 1, {0: accs(0.9, 0.5, 0.7, 0.7), 1: accs(0.95, 0.6, 0.75, 0.75)},
              swad=accs(0.66, 0.0, 0.9, 0.8))
    # hparams 2: ties hparams 0 at val .8 and appears later, so DomainBed picks it: test .4
    write_run(root, "c_run", [0], 2, {0: accs(0.4, 0.55, 0.8, 0.8)})
    # leave-one-out for hparams 0: (0,1) and (0,2) runs; step 2 lacks the (0,2) record.
    write_run(root, "d_pair01", [0, 1], 0, {0: accs(0, 0, 0, 0, in1=0.5), 1: accs(0, 0, 0, 0, in1=0.9),
                                            2: accs(0, 0, 0, 0, in1=1.0)})
    write_run(root, "e_pair02", [0, 2], 0, {0: accs(0, 0, 0, 0, in2=0.5), 1: accs(0, 0, 0, 0, in2=0.7)})
    return root


def cell(table, selection, test_env=0):
    rows = table[(table["selection"] == selection) & (table["dataset"] == "Toy")
                 & (table["test_env"] == test_env)]
    return rows


def test_each_rule_on_hand_made_runs(toy_sweep, tmp_path):
    aggregate(toy_sweep, tmp_path / "agg")
    table, summary = load_aggregate(tmp_path / "agg")
    # iid: hparams 0 and 2 tie at val .8 (tests .2 and .4); the largest hparams_seed (2) wins -> .4
    assert cell(table, "iid")["mean"].tolist() == pytest.approx([40.0])
    assert cell(table, "iid")["ties"].tolist() == [1]
    # oracle: last records' env0_out: .5 (a), .6 (b), .55 (c) -> b's last test .95
    assert cell(table, "oracle")["mean"].tolist() == pytest.approx([95.0])
    # loo: hparams 0 step 0 val (.5+.5)/2=.5, step 1 (.9+.7)/2=.8, step 2 incomplete -> step 1, .2
    assert cell(table, "loo")["mean"].tolist() == pytest.approx([20.0])
    # swad: a's val .7, b's val .85 -> b's SWAD test .66
    assert cell(table, "swad")["mean"].tolist() == pytest.approx([66.0])
    assert cell(table, "swad")["n"].tolist() == [1]
    # Test envs 1 and 2 have no single-test-env runs: no rows, so X in the tables; the
    # averages cell averages the trial over the one env it has (DomainBed), marked incomplete.
    assert cell(table, "iid", 1).empty
    average = cell(table, "iid", -1)
    assert average["mean"].tolist() == pytest.approx([40.0]) and average["n"].tolist() == [1]
    assert average["complete"].tolist() == [False]
    assert summary["datasets"] == {"Toy": ["0", "1", "2"]}
    text = (tmp_path / "agg" / "tables.txt").read_text()
    assert "40.0 +/- 0.0" in text and "SWAD" in text
    toy_row = [line for line in text.splitlines() if line.startswith("ERM")][0]
    assert toy_row.split()[-1] == "X"


def test_iid_picks_first_best_record_within_a_run(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "only", [0], 0, {0: accs(0.1, 0, 0.5, 0.5), 1: accs(0.2, 0, 0.9, 0.9),
                                     2: accs(0.3, 0, 0.9, 0.9), 3: accs(0.4, 0, 0.1, 0.1)})
    aggregate(root, tmp_path / "agg")
    table, _ = load_aggregate(tmp_path / "agg")
    assert cell(table, "iid")["mean"].tolist() == pytest.approx([20.0])
    # oracle takes the last record (step 3) regardless of validation
    assert cell(table, "oracle")["mean"].tolist() == pytest.approx([40.0])


def test_trial_seeds_give_mean_and_population_standard_error(tmp_path):
    root = tmp_path / "sweep"
    for trial, test_acc in ((0, 0.5), (1, 0.7)):
        write_run(root, f"t{trial}", [0], 0, {0: accs(test_acc, 0, 0.5, 0.5)}, trial_seed=trial)
    aggregate(root, tmp_path / "agg")
    table, _ = load_aggregate(tmp_path / "agg")
    row = cell(table, "iid")
    # mean 60, population std 10, / sqrt(2)
    assert row["mean"].item() == pytest.approx(60.0)
    assert row["sem"].item() == pytest.approx(10 / 2 ** 0.5)
    assert row["n"].item() == 2
