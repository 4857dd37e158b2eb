"""Each run's hparams: the fast pyarrow path and the json.loads path give the same columns."""
from __future__ import annotations

import json

import pandas as pd

from ddg_sweep.report.read import headers


def _line(hparams, args_hparams=None) -> bytes:
    record = {"args": {"dataset": "PACS", "hparams": args_hparams}, "hparams": hparams, "step": 0}
    return (json.dumps(record) + "\n").encode()


LINES = [_line({"lr": 5e-05, "batch_size": 32, "nonlinear": False, "backbone": "clip"}),
         _line({"lr": 1e-4, "batch_size": 16, "nonlinear": True, "backbone": "clip", "lmd": 0.5}),
         _line({"lr": 5e-05, "batch_size": 32, "nonlinear": False, "backbone": "clip"}),
         _line({"lr": 2, "batch_size": 8, "nonlinear": None, "backbone": "vit", "lmd": 1})]


def test_fast_path_matches_json_loads_and_types_columns():
    fast = headers.hparams_columns(LINES)
    slow = headers.hparams_frame([json.loads(line)["hparams"] for line in LINES])
    assert fast is not None
    pd.testing.assert_frame_equal(fast, slow)
    assert list(fast.columns) == ["hp_backbone", "hp_batch_size", "hp_lmd", "hp_lr", "hp_nonlinear"]
    assert str(fast["hp_batch_size"].dtype) == "Int64" and str(fast["hp_nonlinear"].dtype) == "boolean"
    assert fast["hp_lmd"].dtype == "float64" and fast["hp_lr"].tolist() == [5e-05, 1e-4, 5e-05, 2.0]
    assert pd.isna(fast.loc[0, "hp_lmd"]) and fast.loc[3, "hp_lmd"] == 1.0


def test_args_holding_an_hparams_string_is_not_mistaken_for_the_hparams():
    line = _line({"lr": 0.1}, args_hparams='{"lr": 9}')  # DomainBed passes --hparams as text
    assert headers.hparams_text(line) == b'{"lr": 0.1}'
    assert headers.hparams_columns([line])["hp_lr"].tolist() == [0.1]


def test_nested_or_odd_hparams_take_the_json_path():
    nested = _line({"lr": 0.1, "sched": {"kind": "cos"}})
    brace = _line({"lr": 0.1, "note": "a}b"})
    changing = [_line({"x": 1}), _line({"x": "one"})]
    for lines in ([nested], [brace], changing):
        assert headers.hparams_columns(lines) is None
    frame = headers.hparams_of_lines([nested, brace])
    assert frame["hp_sched"].tolist() == ['{"kind": "cos"}', pd.NA]
    assert frame["hp_note"].tolist() == [pd.NA, "a}b"]
    assert headers.hparams_of_lines(changing)["hp_x"].tolist() == ["1", "one"]
