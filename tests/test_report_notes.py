"""Tables that explain themselves: loo all X, paper layout without our datasets, environment
names written out, and `tables --input OUT` on a sweep folder."""
from __future__ import annotations

import pytest

from ddg_sweep.errors import UserError
from ddg_sweep.report.aggregate import aggregate
from ddg_sweep.report.render.tables import write_tables
from helpers.report import call_report_cli, write_run


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """A sweep folder like the demo's: OUT/runs/<job>/ on DemoDigits, single test envs only."""
    out = tmp_path_factory.mktemp("OUT")
    for env in range(4):
        accs = {e: (0.2 + 0.1 * e, 0.5) for e in range(4)}
        write_run(out / "runs", f"job{env}", [env], 0, {0: accs, 20: accs}, dataset="DemoDigits")
    aggregate(out / "runs", out / "aggregate")
    write_tables(out / "aggregate", out)
    return out


def test_loo_all_x_says_it_needs_pair_jobs(demo_out):
    for name in ("loo.md", "loo.tex"):
        text = (demo_out / "tables" / name).read_text()
        assert "| ERM | X | X | X | X | X |" in text or "ERM & X & X & X & X & X" in text
        assert "needs jobs that hold out two environments at once" in text
        assert "--with-pairs" in text
    assert "--with-pairs" not in (demo_out / "tables" / "iid.md").read_text()


def test_paper_layout_without_the_papers_datasets_says_so(demo_out):
    text = (demo_out / "tables" / "paper.md").read_text()
    assert "(ours" not in text and "ours:" not in text.splitlines()[0]
    assert text.startswith("## Paper layout (accuracy %, published rows only)")
    assert "No row of ours: the paper's layout compares on the paper's datasets" in text
    assert "it has DemoDigits" in text
    latex = (demo_out / "tables" / "paper.tex").read_text()
    assert "No row of ours" in latex and "\\_" not in latex.split("No row of ours")[0][-50:]


def test_environment_names_are_written_out(demo_out):
    text = (demo_out / "tables" / "iid.md").read_text()
    assert "| Algorithm | clean | inverted | sketch | noisy | Avg |" in text
    assert "| inv |" not in text
    # DomainBed's text keeps its short column labels
    assert "inv " in (demo_out / "aggregate" / "tables.txt").read_text()


def test_tables_on_the_sweep_folder_points_at_its_aggregate(demo_out, tmp_path):
    with pytest.raises(UserError) as error:
        call_report_cli(["tables", "--input", demo_out])
    message = str(error.value)
    assert f"its aggregate is {demo_out / 'aggregate'}: pass --input {demo_out / 'aggregate'}" in message
    assert "--output-dir" not in message  # never suggests writing an aggregate into OUT
    with pytest.raises(UserError, match=f"pass --input {demo_out / 'aggregate'}"):
        call_report_cli(["plots", "--input", demo_out, "--output-dir", tmp_path / "p"])
    # a sweep folder without an aggregate yet: make it in OUT/aggregate, not in OUT
    bare = tmp_path / "OUT2"
    (bare / "runs").mkdir(parents=True)
    with pytest.raises(UserError) as error:
        call_report_cli(["tables", "--input", bare])
    assert f"--output-dir {bare / 'aggregate'}, then pass --input {bare / 'aggregate'}" in str(error.value)
