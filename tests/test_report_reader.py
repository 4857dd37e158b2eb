"""The reader's shortcuts (docs/report.md, Speed) give exactly the records of the plain path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ddg_sweep.report.read import jsonl
from ddg_sweep.report.read.records import read_sweep_records
from benchmarks.sweepgen import make_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "domainbed_test_sweep"


def _lines(record: dict, n: int, **dumps) -> bytes:
    out = []
    for step in range(n):
        out.append(json.dumps({**record, "step": step, "loss": step / 7}, **dumps) + "\n")
    return "".join(out).encode()


RECORD = {"args": {"dataset": "VLCS", "algorithm": "ERM", "test_envs": [0], "trial_seed": 0,
                   "hparams_seed": 1}, "hparams": {"lr": 0.001, "batch_size": 32},
          "env0_in_acc": 0.5, "env0_out_acc": 0.25}


@pytest.mark.parametrize("dumps", [{}, {"sort_keys": True}, {"separators": (",", ":")}])
def test_shared_prefix_is_cut_from_later_lines_and_restored_exactly(dumps):
    content = _lines(RECORD, 5, **dumps)
    first = content[:content.index(b"\n") + 1]
    stripped, prefix, rows = jsonl.strip_shared(content, first)
    assert prefix is not None and prefix.startswith(b'{"args":') and rows == 5
    assert stripped.startswith(first) and stripped.count(prefix) == 1
    assert len(stripped) < len(content) - 3 * len(prefix)
    assert jsonl.restore_shared(stripped, len(first), prefix) == content


@pytest.mark.parametrize("damage", ["other args", "no args", "args again", "blank line", "nested args",
                                    "brace in string"])
def test_no_cut_unless_every_later_line_shares_the_prefix(damage):
    lines = _lines(RECORD, 4).decode().splitlines(keepends=True)
    record = json.loads(lines[2])
    if damage == "other args":
        record["args"]["hparams_seed"] = 2
        lines[2] = json.dumps(record) + "\n"
    elif damage == "no args":
        del record["args"]
        lines[2] = json.dumps(record) + "\n"
    elif damage == "args again":
        lines[2] = lines[2][:-2] + ', "args": null}\n'
    elif damage == "blank line":
        lines.insert(2, "\n")
    elif damage == "nested args":
        lines = [line[:-2] + ', "meta": {"args": 1}}\n' for line in lines]
    else:
        lines = [line.replace('"ERM"', '"E}R{M"') for line in lines]
    content = "".join(lines).encode()
    stripped, prefix, rows = jsonl.strip_shared(content, lines[0].encode())
    assert (stripped, prefix, rows) == (content, None, content.count(b"\n"))


def _damaged_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())

    def edit(run, change):
        lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
        (run / "results.jsonl").write_text("".join(change(lines)))

    def other_args(lines):
        record = json.loads(lines[1])
        record["args"]["hparams_seed"] = 99
        return [lines[0], json.dumps(record, sort_keys=True) + "\n", *lines[2:]]

    def cut_after_prefix(lines):
        prefix = lines[0][:lines[0].index('"env0_in_acc"')]
        return [lines[0], prefix + "\n", prefix.rstrip(", ") + ", }\n", *lines[1:]]

    edit(runs[0], lambda lines: lines + ['{"args": {"dataset": "VLCS", "algo'])
    edit(runs[1], lambda lines: lines[:2] + ["this is not json\n", '{"step": "x"}\n'] + lines[2:])
    edit(runs[2], other_args)
    edit(runs[3], cut_after_prefix)
    edit(runs[4], lambda lines: [lines[0][:-30] + "\n", *lines[1:]])  # first line broken after args
    edit(runs[5], lambda lines: [line[:-1] + "\r\n" for line in lines])
    return sweep


def test_cutting_shared_prefixes_reads_the_same_records(tmp_path, monkeypatch):
    sweeps = [_damaged_sweep(tmp_path), tmp_path / "ddg"]
    make_sweep(tmp_path / "ddg", 600, layout="ddg", with_swad=True, records_per_run=6)
    cut, strip = [], jsonl.strip_shared
    monkeypatch.setattr(jsonl, "strip_shared",
                        lambda content, first: cut.append(strip(content, first)[1]) or strip(content, first))
    fast = [read_sweep_records(sweep) for sweep in sweeps]
    assert sum(prefix is not None for prefix in cut) > 100  # the shortcut was taken (most files)
    monkeypatch.setattr(jsonl, "strip_shared",
                        lambda content, first: (content, None, jsonl.expected_rows(content)))
    plain = [read_sweep_records(sweep) for sweep in sweeps]
    for a, b in zip(fast, plain):
        pd.testing.assert_frame_equal(a.records, b.records, check_exact=True)
        pd.testing.assert_frame_equal(a.swad, b.swad, check_exact=True)
        assert a.stats == b.stats
    assert fast[0].stats["malformed_lines"] == 6


def test_files_read_ahead_come_back_in_order_and_unreadable_ones_as_none(tmp_path):
    from ddg_sweep.report.read.parsing import _contents

    paths = []
    for index in range(23):
        path = tmp_path / f"f{index}"
        if index != 7:
            path.write_bytes(b"x" * index * 9000)  # some past os.read's first 64 kB
        paths.append(str(path))
    got = list(_contents(paths, chunk=4, ahead=2))
    assert got == [None if i == 7 else b"x" * i * 9000 for i in range(23)]
