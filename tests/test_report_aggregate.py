"""Aggregation: DomainBed's fixture reproduced exactly, robust reading, the synthetic generator."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ddg_sweep.errors import UserError
from ddg_sweep.report.aggregate import aggregate
from ddg_sweep.report.read.records import read_sweep_records
from helpers.cli import FIXTURE
from benchmarks.sweepgen import make_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture_aggregate(tmp_path_factory):
    out = tmp_path_factory.mktemp("agg")
    summary = aggregate(FIXTURE, out)
    return out, summary


def test_fixture_text_tables_match_domainbed_exactly(fixture_aggregate):
    out, summary = fixture_aggregate
    expected = (FIXTURE / "expected.txt").read_text()
    ours = (out / "tables.txt").read_text()
    assert ours.splitlines() == expected.splitlines()
    assert ours.startswith("Total records: 200\n")
    assert summary["total_records"] == 200 and summary["runs"] == 40


def test_records_without_the_splits_no_rule_reads_give_domainbeds_tables(tmp_path):
    """A run evaluates the training environments' in splits only at its last checkpoint
    (ddg_sweep/evaluate.py); DomainBed's rules never read them, so its fixture with those
    accuracies removed from every other record still gives expected.txt to the byte."""
    from ddg_sweep.splits import evaluated_splits

    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    removed = 0
    for results in sweep.glob("*/results.jsonl"):
        records = [json.loads(line) for line in results.read_text().splitlines()]
        last_step = max(r["step"] for r in records)
        for record in records:
            kept = evaluated_splits(4, record["args"]["test_envs"], record["step"] == last_step)
            for key in [k for k in record if k.endswith(("_in_acc", "_out_acc")) and k[:-4] not in kept]:
                del record[key]
                removed += 1
        results.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert removed > 200  # most records lost two or three accuracies
    aggregate(sweep, tmp_path / "agg")
    expected = (FIXTURE / "expected.txt").read_text()
    assert (tmp_path / "agg" / "tables.txt").read_text().splitlines() == expected.splitlines()


def test_fixture_table_parquet_schema(fixture_aggregate):
    out, _ = fixture_aggregate
    table = pd.read_parquet(out / "table.parquet")
    assert list(table.columns) == ["selection", "dataset", "algorithm", "test_env", "env_name",
                                   "mean", "sem", "n", "complete", "ties"]
    assert set(table["selection"]) == {"iid", "oracle", "loo"}
    iid = table[(table["selection"] == "iid")].set_index("test_env")
    assert iid.loc[0, "env_name"] == "C" and iid.loc[0, "n"] == 2
    assert round(iid.loc[0, "mean"], 1) == 98.0 and round(iid.loc[-1, "mean"], 1) == 78.3
    assert table["test_env"].dtype == "int64"
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 200
    for column in ("run_id", "dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed",
                   "step", "env0_in_acc", "env3_out_acc", "hp_lr", "hp_batch_size", "val_acc",
                   "test_acc"):
        assert column in records.columns
    assert records["step"].dtype == "int64" and records["hp_lr"].dtype == "float64"


def _copy_fixture(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    return sweep


def test_malformed_and_truncated_lines_are_skipped_and_counted(tmp_path):
    sweep = _copy_fixture(tmp_path)
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    with open(runs[0] / "results.jsonl", "a") as handle:  # a write cut short
        handle.write('{"args": {"dataset": "VLCS", "algo')
    lines = (runs[1] / "results.jsonl").read_text().splitlines(keepends=True)
    lines.insert(2, "this is not json\n")
    lines.insert(3, '{"step": "not a number"}\n')
    (runs[1] / "results.jsonl").write_text("".join(lines))
    (runs[2] / "results.jsonl").write_text("garbage\n" + (runs[2] / "results.jsonl").read_text())
    result = read_sweep_records(sweep)
    assert result.stats["malformed_lines"] == 4
    assert len(result.records) == 200
    summary = aggregate(sweep, tmp_path / "agg")
    assert summary["malformed_lines"] == 4
    expected = (FIXTURE / "expected.txt").read_text()
    assert (tmp_path / "agg" / "tables.txt").read_text() == expected


def test_unfinished_runs_excluded_by_default_and_included_with_flag(tmp_path):
    sweep = _copy_fixture(tmp_path)
    run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    (run / "done").unlink()
    n_lines = len((run / "results.jsonl").read_text().splitlines())
    default = read_sweep_records(sweep)
    assert default.stats["unfinished_runs_skipped"] == 1
    assert len(default.records) == 200 - n_lines
    included = read_sweep_records(sweep, include_unfinished=True)
    assert included.stats["unfinished_runs_skipped"] == 0 and len(included.records) == 200
    assert included.records["finished"].sum() == 200 - n_lines


def test_unknown_dataset_kept_with_index_names(tmp_path):
    make_sweep(tmp_path / "sweep", 60, datasets=("Mystery",), algorithms=("ERM",), n_trials=2,
               records_per_run=3)
    summary = aggregate(tmp_path / "sweep", tmp_path / "agg")
    assert summary["datasets"] == {"Mystery": ["0", "1", "2", "3"]}
    text = (tmp_path / "agg" / "tables.txt").read_text()
    assert "Dataset: Mystery" in text


def test_missing_or_empty_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_sweep_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no records"):
        read_sweep_records(tmp_path / "empty")
    sweep = _copy_fixture(tmp_path)
    for done in sweep.glob("*/done"):
        done.unlink()
    with pytest.raises(UserError, match="--include-unfinished"):
        read_sweep_records(sweep)


@pytest.mark.parametrize("layout", ["domainbed", "ddg"])
def test_generator_layout_and_record_count(tmp_path, layout):
    info = make_sweep(tmp_path / "sweep", 1234, records_per_run=10, layout=layout, with_swad=True)
    files = sorted((tmp_path / "sweep").rglob("results.jsonl"))
    assert info["n_records"] == 1234 and len(files) == info["n_runs"] == 124
    assert sum(len(f.read_text().splitlines()) for f in files) == 1234
    if layout == "ddg":
        assert all(f.parent.parent.name == "runs" for f in files)
    else:
        assert all(f.parent.parent == tmp_path / "sweep" for f in files)
    assert all((f.parent / "done").exists() for f in files)
    first = json.loads(files[0].read_text().splitlines()[0])
    assert {"args", "hparams", "step", "env0_in_acc", "env0_out_acc"} <= set(first)
    again = make_sweep(tmp_path / "again", 1234, records_per_run=10, layout=layout)
    assert (again["run_dirs"][5] / "results.jsonl").read_text() == (
        info["run_dirs"][5] / "results.jsonl").read_text()
    summary = aggregate(tmp_path / "sweep", tmp_path / "agg")
    assert summary["total_records"] == 1234 and summary["swad_runs"] > 0
    assert "swad" in summary["selections"]


def _domainbed_like_text(sweep) -> str:
    """What benchmarks/domainbed_like.py (the benchmark's DomainBed stand-in) prints."""
    import contextlib
    import io

    spec = importlib.util.spec_from_file_location("domainbed_like",
                                                  REPO / "benchmarks" / "domainbed_like.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        records = module.load_records(str(sweep))
        print("Total records:", len(records))
        for rule in (module.IID, module.LeaveOneOut, module.Oracle):
            module.print_tables(records, rule)
    return out.getvalue()


def test_benchmark_stand_in_prints_domainbeds_tables(tmp_path):
    """The speed benchmark's DomainBed stand-in reproduces DomainBed's own output, and ours."""
    assert _domainbed_like_text(FIXTURE) == (FIXTURE / "expected.txt").read_text()
    make_sweep(tmp_path / "sweep", 4000, records_per_run=5, n_trials=3)
    aggregate(tmp_path / "sweep", tmp_path / "agg")
    ours = (tmp_path / "agg" / "tables.txt").read_text()
    assert ours == _domainbed_like_text(tmp_path / "sweep")
    assert "X" not in ours


def test_swad_tables_list_only_algorithms_with_a_swad_model(tmp_path):
    """ERM never averages weights: the SWAD table has no ERM row of X's, the others do list it."""
    from ddg_sweep.report.aggregate import aggregate
    from ddg_sweep.report.aggregate_folder import load_aggregate
    from ddg_sweep.report.render.tables import build_grids
    from benchmarks.sweepgen import make_sweep

    make_sweep(tmp_path / "sweep", 400, datasets=("PACS",), algorithms=("ERM", "DDG"), with_swad=True)
    aggregate(tmp_path / "sweep", tmp_path / "agg")
    table, summary = load_aggregate(tmp_path / "agg")
    swad_rows = [alg for alg, _ in build_grids(table, summary, "swad")[0][2]]
    iid_rows = [alg for alg, _ in build_grids(table, summary, "iid")[0][2]]
    assert "ERM" in iid_rows and "DDG" in iid_rows
    assert "DDG" in swad_rows and "ERM" not in swad_rows


def test_runs_of_two_protocol_versions_are_never_mixed(tmp_path):
    """Protocol 2 changed what `lmd` means: a folder holding runs of versions 1 and 2 is refused."""
    sweep = tmp_path / "sweep"
    for name, version in (("old", 1), ("new", 2), ("new2", 2)):
        run = sweep / name
        run.mkdir(parents=True)
        record = {"args": {"dataset": "VLCS", "algorithm": "DDG", "test_envs": [0], "trial_seed": 0,
                           "hparams_seed": 0, "protocol_version": version},
                  "hparams": {"lmd": 0.5}, "step": 0, "env0_in_acc": 0.5, "env0_out_acc": 0.5,
                  "env1_in_acc": 0.5, "env1_out_acc": 0.5}
        (run / "results.jsonl").write_text(json.dumps(record) + "\n")
        (run / "done").touch()
    with pytest.raises(UserError, match=r"protocol versions 1 \(e.g. old\), 2 \(e.g. new\)"):
        aggregate(sweep, tmp_path / "agg")
    shutil.rmtree(sweep / "old")
    assert aggregate(sweep, tmp_path / "agg")["runs"] == 2
