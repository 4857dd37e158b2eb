"""The `aggregate`, `tables` and `plots` commands, tables in every format, figures, imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ddg_sweep.errors import UserError
from ddg_sweep.report.render.tables import PAPER_REFERENCE_ROWS, write_tables
from helpers.cli import FIXTURE, REPO
from helpers.report import PNG_MAGIC, call_report_cli


@pytest.fixture(scope="module")
def agg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("agg")
    assert call_report_cli(["aggregate", "--input-dir", FIXTURE, "--output-dir", out]) == 0
    return out


def test_aggregate_prints_summary_and_writes_files(tmp_path, capsys):
    assert call_report_cli(["aggregate", "--input-dir", FIXTURE, "--output-dir", tmp_path]) == 0
    printed = capsys.readouterr().out
    assert "records read: 200" in printed and "runs: 40" in printed
    assert "unfinished runs skipped: 0" in printed and "malformed lines skipped: 0" in printed
    for name in ("records.parquet", "table.parquet", "tables.txt", "summary.json"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_tables_text_is_domainbed_output(agg_dir, tmp_path):
    out = tmp_path / "t.txt"
    assert call_report_cli(["tables", "--input", agg_dir, "--format", "text", "--output", out]) == 0
    text = out.read_text()
    assert text.startswith((FIXTURE / "expected.txt").read_text().rstrip("\n"))
    assert "Paper layout" in text


def test_tables_markdown_with_paper_rows_and_missing_cells(agg_dir, capsys):
    assert call_report_cli(["tables", "--input", agg_dir, "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    # environments written out; two trial seeds: the standard error and (n=2)
    assert "| Algorithm | Caltech101 | LabelMe | SUN09 | VOC2007 | Avg |" in text
    assert ("| ERM | 98.0 ± 0.2 (n=2) | 64.2 ± 0.8 (n=2) | 74.1 ± 0.4 (n=2) | 77.1 ± 0.2 (n=2) "
            "| 78.3 |") in text
    assert "(n=k): the number rests on k trial seeds" in text
    for name, values, avg in PAPER_REFERENCE_ROWS:
        assert f"{name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {avg:.2f} |" in text
    paper_erm = [l for l in text.splitlines() if l.startswith("| ERM (ours, iid)")][0]
    # only VLCS was run: the other paper columns and the average are X
    assert paper_erm.count("| X") == 5 and "78.34 ± 0.01" in paper_erm


def test_tables_latex_uses_booktabs(agg_dir, capsys):
    assert call_report_cli(["tables", "--input", agg_dir, "--format", "latex", "--selection", "oracle"]) == 0
    text = capsys.readouterr().out
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in text
    assert "96.9 $\\pm$ 1.0" in text and "87.90" in text
    assert "training-domain" not in text  # only the oracle was asked for


def test_write_tables_files(agg_dir, tmp_path):
    written = write_tables(agg_dir, tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(["iid.md", "loo.md", "oracle.md", "paper.md",
                            "iid.tex", "loo.tex", "oracle.tex", "paper.tex"])
    assert all(p.parent == tmp_path / "tables" and p.stat().st_size > 0 for p in written)
    assert "\\bottomrule" in (tmp_path / "tables" / "paper.tex").read_text()


@pytest.mark.parametrize("argv, message", [
    (["tables", "--format", "html"], "unknown table format"),
    (["tables", "--selection", "best"], "unknown selection"),
    (["tables", "--selection", "swad"], "no results for selection swad"),
])
def test_bad_table_arguments_are_user_errors(agg_dir, argv, message):
    with pytest.raises(UserError, match=message):
        call_report_cli(argv[:1] + ["--input", agg_dir] + argv[1:])


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        call_report_cli(["aggregate", "--input-dir", tmp_path / "nope", "--output-dir", tmp_path / "a"])
    with pytest.raises(UserError, match="not an aggregate folder"):
        call_report_cli(["tables", "--input", tmp_path])
    with pytest.raises(UserError, match="records.parquet"):
        call_report_cli(["plots", "--input", tmp_path, "--output-dir", tmp_path / "p"])


def test_plots_from_fixture_skip_absent_hparams(agg_dir, tmp_path, capsys):
    assert call_report_cli(["plots", "--input", agg_dir, "--output-dir", tmp_path]) == 0
    printed = capsys.readouterr().out
    assert "skipped: hparam lmd" in printed and "skipped: hparam cfg_scale" in printed
    curve = tmp_path / "curves_VLCS.png"
    assert curve.read_bytes()[:8] == PNG_MAGIC


def test_no_heavy_imports():
    code = ("import sys; import ddg_sweep.cli.report; "
            "assert 'pandas' not in sys.modules, 'cli.report imports pandas at module level'; "
            "import ddg_sweep.report.aggregate, ddg_sweep.report.render.tables, ddg_sweep.report.plots.figures, "
            "ddg_sweep.report.render.listing, ddg_sweep.report.render.importance; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
