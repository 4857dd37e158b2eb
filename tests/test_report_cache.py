"""The cache of parsed runs (OUT/.parsed): a re-aggregate equals a no-cache aggregate, always."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from ddg_sweep.report.read import parsing as parse_cache
from ddg_sweep.report.aggregate import aggregate
from benchmarks.sweepgen import make_sweep

OUTPUTS = ("records.parquet", "selected.parquet", "table.parquet", "swad.parquet")


def _age(sweep: Path) -> None:
    """Files older than the racy window, as a sweep's finished runs are (one fixed time: an
    unchanged file keeps its key)."""
    old = 1_600_000_000 * 10**9
    for path in sweep.rglob("*"):
        os.utime(path, ns=(old, old))


def _same_as_no_cache(sweep: Path, agg: Path, tmp_path: Path, **options) -> dict:
    """Aggregate with the cache into `agg` and without into a fresh folder; assert equal outputs."""
    warm = aggregate(sweep, agg, **options)
    fresh = tmp_path / f"nocache_{len(list(tmp_path.iterdir()))}"
    cold = aggregate(sweep, fresh, cache=False, **options)
    assert not (fresh / parse_cache.CACHE_DIR).exists()
    for name in OUTPUTS:
        assert (agg / name).exists() == (fresh / name).exists(), name
        if (agg / name).exists():
            pd.testing.assert_frame_equal(pd.read_parquet(agg / name), pd.read_parquet(fresh / name))
    assert (agg / "tables.txt").read_text() == (fresh / "tables.txt").read_text()
    ours = json.loads((agg / "summary.json").read_text())
    counts = ours.pop("parse_cache")
    assert ours == {**json.loads((fresh / "summary.json").read_text()), "input_dir": ours["input_dir"]}
    return counts


@pytest.fixture()
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_sweep(root, 600, records_per_run=10, with_swad=True)
    _age(root)
    return root


def _runs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.rglob("results.jsonl"))


def test_warm_equals_cold_and_counts(sweep, tmp_path):
    agg = tmp_path / "agg"
    n_runs = len(_runs(sweep))
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": n_runs, "runs_reused": 0}
    stamp = (agg / parse_cache.CACHE_DIR / parse_cache.INDEX_FILE).stat().st_mtime_ns
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 0, "runs_reused": n_runs}
    # nothing changed: the cache is not written again
    assert (agg / parse_cache.CACHE_DIR / parse_cache.INDEX_FILE).stat().st_mtime_ns == stamp


def test_grown_new_removed_done_swad(sweep, tmp_path):
    agg = tmp_path / "agg"
    aggregate(sweep, agg)
    runs = _runs(sweep)
    n_runs = len(runs)
    lines = (runs[0] / "results.jsonl").read_text().splitlines(keepends=True)
    with open(runs[0] / "results.jsonl", "a") as handle:  # a run that grew
        handle.write(lines[-1].replace('"step": ', '"step": 1'))
    _age(sweep)
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 1, "runs_reused": n_runs - 1}
    new = sweep / "zz_new_run"  # a new run
    new.mkdir()
    (new / "results.jsonl").write_text((runs[1] / "results.jsonl").read_text())
    (new / "done").write_text("")
    _age(sweep)
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 1, "runs_reused": n_runs}
    for path in runs[2].iterdir():  # a removed run
        path.unlink()
    runs[2].rmdir()
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 0, "runs_reused": n_runs}
    (runs[3] / "done").unlink()  # unfinished (skipped: not kept in the cache), then done
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 0, "runs_reused": n_runs - 1}
    (runs[3] / "done").write_text("")
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 1, "runs_reused": n_runs - 1}
    swad = next(run for run in runs[4:] if (run / "swad.json").exists())
    content = json.loads((swad / "swad.json").read_text())
    content = {k: (v / 2 if k.endswith("_acc") else v) for k, v in content.items()}
    (swad / "swad.json").write_text(json.dumps(content))  # read afresh every time
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 0, "runs_reused": n_runs}


def test_unfinished_toggled_and_malformed_lines(sweep, tmp_path):
    agg = tmp_path / "agg"
    runs = _runs(sweep)
    (runs[0] / "done").unlink()
    with open(runs[1] / "results.jsonl", "a") as handle:
        handle.write("not json\n")
    with open(runs[2] / "results.jsonl", "a") as handle:
        handle.write('{"args": {"dataset": "PA')  # cut short
    _age(sweep)
    n_runs = len(runs)
    assert _same_as_no_cache(sweep, agg, tmp_path)["runs_parsed"] == n_runs - 1
    counts = _same_as_no_cache(sweep, agg, tmp_path, include_unfinished=True)
    assert counts == {"runs_parsed": 1, "runs_reused": n_runs - 1}
    assert _same_as_no_cache(sweep, agg, tmp_path, include_unfinished=True) == {
        "runs_parsed": 0, "runs_reused": n_runs}
    assert _same_as_no_cache(sweep, agg, tmp_path)["runs_reused"] == n_runs - 1


@pytest.mark.parametrize("damage", ["index", "runs", "rows", "version", "missing_rows"])
def test_damaged_or_foreign_cache_is_rebuilt(sweep, tmp_path, damage):
    agg = tmp_path / "agg"
    aggregate(sweep, agg)
    folder = agg / parse_cache.CACHE_DIR
    index = json.loads((folder / parse_cache.INDEX_FILE).read_text())
    if damage == "index":
        (folder / parse_cache.INDEX_FILE).write_text("{not json")
    elif damage in ("runs", "rows"):
        (folder / index[damage]).write_bytes(b"PAR1 garbage")
    elif damage == "missing_rows":
        (folder / index["rows"]).unlink()
    else:
        index["reader_version"] = parse_cache.READER_VERSION - 1
        (folder / parse_cache.INDEX_FILE).write_text(json.dumps(index))
    warm = aggregate(sweep, agg)
    assert warm["parse_cache_note"] and "parsing every run again" in warm["parse_cache_note"]
    n_runs = len(_runs(sweep))
    assert _same_as_no_cache(sweep, agg, tmp_path) == {"runs_parsed": 0, "runs_reused": n_runs}


def test_recently_changed_files_are_not_trusted(tmp_path):
    sweep = tmp_path / "sweep"
    make_sweep(sweep, 100, records_per_run=10)  # written just now: within the racy window
    agg = tmp_path / "agg"
    n_runs = len(_runs(sweep))
    aggregate(sweep, agg)
    assert _same_as_no_cache(sweep, agg, tmp_path)["runs_parsed"] == n_runs


def test_cli_no_cache_neither_reads_nor_writes(sweep, tmp_path, capsys):
    from ddg_sweep.run import main

    agg = tmp_path / "agg"
    assert main(["aggregate", "--input-dir", str(sweep), "--output-dir", str(agg), "--no-cache"]) == 0
    assert not (agg / parse_cache.CACHE_DIR).exists()
    assert "runs parsed: all (--no-cache)" in capsys.readouterr().out
    main(["aggregate", "--input-dir", str(sweep), "--output-dir", str(agg)])
    main(["aggregate", "--input-dir", str(sweep), "--output-dir", str(agg)])
    assert f"runs parsed: 0  reused from the cache: {len(_runs(sweep))}" in capsys.readouterr().out
