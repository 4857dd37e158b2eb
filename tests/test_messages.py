"""Messages that help: one-line argparse errors, `train --help`, `plan`'s estimate in words, preset
errors, and `status OUT --job ID --log`."""
import argparse
import json

import pytest

from helpers.cli import assert_one_line_error, run_cli
from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.hparams import ALGORITHMS, REGISTRY
from ddg_sweep.estimate import PAPER_CARD, STEP_SECONDS
from ddg_sweep.jobs import run_config, write_manifest
from ddg_sweep.run import build_parser, main
from search_spaces import SpaceOptions, space_jobs


def one_line(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "usage:" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_a_missing_required_flag_is_one_line_naming_it_and_the_help(capsys):
    line = one_line(capsys, ["train", "--dataset", "DemoDigits", "--output-dir", "x"], "--test-envs",
                    "python -m ddg_sweep.run train --help")
    assert "--output-dir" not in line  # only what is missing
    one_line(capsys, ["sweep"], "--space/--preset", "python -m ddg_sweep.run sweep --help")
    one_line(capsys, [], "COMMAND", "python -m ddg_sweep.run --help")
    one_line(capsys, ["plan", "--preset", "demo", "--format", "xml"], "invalid choice: 'xml'", "plan --help")


def _train_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def test_train_help_explains_every_flag_lists_choices_and_shows_registry_defaults():
    parser = _train_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 25
    assert all(a.help and a.help.strip() for a in flags), [a.option_strings for a in flags if not a.help]
    by_flag = {a.option_strings[0]: a for a in flags}
    assert all(name in by_flag["--dataset"].help for name in DATASETS)
    assert all(name in by_flag["--algorithm"].help for name in ALGORITHMS)
    text = parser.format_help()
    for h in REGISTRY:
        if h.name == "models":
            continue
        help_ = by_flag["--" + h.name.replace("_", "-")].help
        paper, demo = h.default("PACS", "paper"), h.default("DemoDigits", "tiny")
        assert str(paper) in help_ and str(demo) in help_, (h.name, help_)
        if paper != demo:
            assert f"paper {paper}" in help_ and f"DemoDigits {demo}" in help_, help_
    steps = by_flag["--steps"].help
    assert f"{DATASETS['DemoDigits'].default_steps} for DemoDigits" in steps
    from search_spaces import demo

    assert f"`--preset demo` run {demo.STEPS}" in steps
    assert "%" not in text.replace("%%", "")  # argparse rendered every help string


def test_plan_says_in_words_what_the_gpu_hour_estimate_is_based_on(tmp_path):
    paper = run_cli("plan", "--preset", "paper", "--datasets", "PACS", "--output-dir", tmp_path, check=True)
    lines = paper.stdout.strip().splitlines()
    assert lines[-3].startswith("estimated GPU-hours left: ") and lines[-1].startswith("figures: constants: ")
    assert f"step times measured on {PAPER_CARD}" in lines[-1] and "docs/performance.md" in lines[-1]
    assert f"Stage II {STEP_SECONDS['paper']['DDG']['diffusion']} s per step" in lines[-1]
    demo = run_cli("plan", "--preset", "demo", "--output-dir", tmp_path, check=True).stdout.strip()
    assert demo.splitlines()[-1].startswith("figures: constants for the tiny models: ")
    assert "on one CPU core each of a shared 2-core machine" in demo.splitlines()[-1]


def test_preset_errors_say_preset_and_space_errors_say_space():
    assert_one_line_error(run_cli("full-benchmark", "--preset", "dmo"), "unknown preset 'dmo'", "choose one of")
    assert_one_line_error(run_cli("plan", "--preset", "demo", "--datasets", "PACS"),
                          "preset demo has no jobs for these")
    assert_one_line_error(run_cli("plan", "--space", "dmo"), "unknown space 'dmo'")
    assert_one_line_error(run_cli("plan", "--space", "demo", "--datasets", "PACS"), "space demo has no jobs")


@pytest.fixture
def sweep_folder(tmp_path):
    """A sweep folder with one job trained for real and one that failed (error.json as the trainable
    writes it), without Ray."""
    from ddg_sweep.train import run
    from trainables.ddg_trainable import _write_error

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": 2, "checkpoint_freq": 2, "hparams": {"batch_size": 4}}}))
    out = tmp_path / "OUT"
    good, bad = space_jobs(str(space), SpaceOptions())
    write_manifest(out, [good, bad])
    run(run_config(good, out), log=lambda message: None)
    bad_dir = out / "runs" / bad.job_id
    bad_dir.mkdir(parents=True)
    (bad_dir / "config.json").write_text(json.dumps(run_config(good, out).to_json()))  # a copied folder
    try:
        run(run_config(bad, out), log=lambda message: None)
    except Exception as err:  # what train_job does with it
        (bad_dir / "train.log").write_text("2026-01-01 00:00:00 started\n")
        _write_error(bad_dir, bad.job_id, err, 3)
    return out, good, bad


def test_status_job_log_prints_the_last_lines_and_the_error_of_a_failed_job(sweep_folder):
    out, good, bad = sweep_folder
    shown = run_cli("status", out, "--job", good.job_id[:8], "--log", "--lines", "3", check=True).stdout
    log = (out / "runs" / good.job_id / "train.log").read_text().splitlines()
    assert len(log) >= 4
    assert f"{good.job_id} ERM DemoDigits test_envs=0" in shown and ": done" in shown
    assert shown.rstrip().endswith("\n".join(log[-3:])) and log[-4] not in shown
    assert "error.json" not in shown
    failed = run_cli("status", out, "--job", bad.job_id, "--log", check=True).stdout
    assert ": failed" in failed and "2026-01-01 00:00:00 started" in failed
    assert "already holds a different run" in failed and '"attempts": 3' in failed
    as_json = json.loads(run_cli("status", out, "--job", bad.job_id, "--log", "--format", "json",
                                 check=True).stdout)
    assert as_json["state"] == "failed" and as_json["error"]["attempts"] == 3 and len(as_json["log"]) == 1
    assert_one_line_error(run_cli("status", out, "--job", "zzzz"), "no job 'zzzz'")
    assert_one_line_error(run_cli("status", out, "--log"), "pass --job ID")
