"""The sweep side of the catalogue of bad inputs (train side: test_bad_inputs.py).

Each is one line on stderr, exit 2, no traceback, and nothing started: no Ray (its
RAY_TMPDIR stays empty and it is not initialised), no output folder, no job folder.
"""
import json
import sys
import time

import pytest

import test_bad_inputs
from ddg_sweep.run import main

SPACE = {"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]], "steps": 10,
                  "checkpoint_freq": 5, "hparams": {"batch_size": 8}}}
FILES = {
    "space.json": json.dumps(SPACE),
    "bad.json": '{"grid": {"algorithm": "ERM",',
    "list.json": "[1, 2]",
    "unknown_key.json": json.dumps({"jobs": [{"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [0],
                                              "colour": "red"}]}),
    "missing_key.json": json.dumps({"jobs": [{"dataset": "DemoDigits", "test_envs": [0]}]}),
    "twins.json": json.dumps({"jobs": [{"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [0],
                                        "hparams": {"lr": lr}} for lr in (1e-4, 1e-3)]}),
    "raises.py": "raise RuntimeError('boom')\n",
    "no_jobs.py": "JOBS = []\n",
    "not_jobs.py": "def jobs(options):\n    return ['ERM on PACS']\n",
    "a_file": "not a folder\n",
}
SWEEP = ["sweep", "--space", "{tmp}/space.json"]


def ranged(search: dict, algorithm: str = "DDG") -> str:
    """A space of one DemoDigits job (10 steps) with these search ranges."""
    return json.dumps({"grid": {"algorithm": algorithm, "dataset": "DemoDigits", "test_envs": [[0]], "steps": 10,
                                "checkpoint_freq": 5}, "search": search})


FILES.update({
    "search_ok.json": ranged({"lr": {"loguniform": [1e-5, 1e-3]}}, "ERM"),
    "range_outside.json": ranged({"lmd": {"uniform": [0, 2]}}),
    "log_from_zero.json": ranged({"lr": {"loguniform": [0, 0.1]}}),
    "unknown_hparam.json": ranged({"colour": {"uniform": [0, 1]}}),
    "list_range.json": ranged({"lmd": [0, 1]}),
    "fraction_to_one.json": ranged({"stage1_steps": {"uniform": [0.5, 1.0]}}),
    "ddg_range_on_erm.json": ranged({"cfg_scale": {"uniform": [1, 3]}}, "ERM"),
    "randint_backwards.json": ranged({"batch_size": {"randint": [16, 8]}}),
    "steps_beyond.json": ranged({"stage1_steps": {"randint": [0, 50]}}),
    "empty_choice.json": ranged({"negative": {"choice": []}}),
    "bad_option.json": ranged({"negative": {"choice": ["domain", "colour"]}}),
})
SEARCH = ["sweep", "--space", "{tmp}/search_ok.json", "--search", "random"]

# name: (argv, fragments of the one error line); {tmp} is the test's folder, OUT its output folder.
CASES = {
    "unknown space": (["sweep", "--space", "paperr"], ["unknown space 'paperr'", "paper, baselines"]),
    "unknown preset": (["full-benchmark", "--preset", "dmo"], ["unknown preset 'dmo'"]),
    "space file missing": (["sweep", "--space", "{tmp}/absent.json"], ["absent.json does not exist"]),
    "space file not JSON": (["sweep", "--space", "{tmp}/bad.json"], ["bad.json is not valid JSON"]),
    "space file not an object": (["sweep", "--space", "{tmp}/list.json"], ['"jobs": [...]', '"grid"']),
    "job with an unknown key": (["sweep", "--space", "{tmp}/unknown_key.json"], ["unknown key(s) colour"]),
    "job without algorithm": (["sweep", "--space", "{tmp}/missing_key.json"], ["malformed", "'algorithm'"]),
    "two jobs one hparams_seed": (["sweep", "--space", "{tmp}/twins.json"], ["own hparams_seed"]),
    "python space that raises": (["sweep", "--space", "{tmp}/raises.py"], ["does not load: RuntimeError: boom"]),
    "python space without jobs": (["sweep", "--space", "{tmp}/no_jobs.py"], ["must define `jobs(options)"]),
    "python space returning no Jobs": (["sweep", "--space", "{tmp}/not_jobs.py"], ["list of ddg_sweep.jobs.Job"]),
    "unknown --datasets": (["sweep", "--space", "demo", "--datasets", "CIFAR"], ["unknown dataset 'CIFAR'"]),
    "unknown --algorithms": (["sweep", "--space", "demo", "--algorithms", "IRM"], ["unknown algorithm 'IRM'"]),
    "--test-envs out of range": (["sweep", "--space", "paper", "--datasets", "PACS", "--test-envs", "4"],
                                 ["--test-envs 4 is out of range", "PACS 0..3"]),
    "narrowed to nothing": (["sweep", "--space", "demo", "--datasets", "PACS"], ["has no jobs for these"]),
    "negative --trial-seeds": (["sweep", "--space", "demo", "--trial-seeds", "0", "-1"],
                               ["--trial-seeds must be >= 0"]),
    "dataset folder missing from --data-dir": (["sweep", "--space", "paper", "--datasets", "VLCS",
                                                "--data-dir", "{tmp}"], ["VLCS", "does not exist"]),
    "GPUs on a cluster without": ([*SWEEP, "--gpus-per-trial", "1"], ["--gpus-per-trial 1", "has none"]),
    "zero --cpus-per-trial": ([*SWEEP, "--cpus-per-trial", "0"], ["--cpus-per-trial must be > 0"]),
    "more CPUs per trial than a node has": ([*SWEEP, "--cpus-per-trial", "512", "--num-cpus", "2"],
                                            ["--cpus-per-trial 512 is more than any node has"]),
    "negative --max-concurrent": ([*SWEEP, "--max-concurrent", "-1"], ["--max-concurrent must be > 0"]),
    "negative --max-failures": ([*SWEEP, "--max-failures", "-1"], ["--max-failures must be >= 0"]),
    "zero --num-cpus": ([*SWEEP, "--num-cpus", "0"], ["--num-cpus must be > 0"]),
    "unreachable --address": ([*SWEEP, "--address", "127.0.0.1:1"],
                              ["cannot reach the Ray cluster at 127.0.0.1:1"]),
    "unreachable ray:// --address": ([*SWEEP, "--address", "ray://127.0.0.1:1"],
                                     ["cannot reach the Ray cluster at ray://127.0.0.1:1"]),
    "malformed --address": ([*SWEEP, "--address", "headnode"], ["not auto, HOST:PORT or ray://HOST:PORT"]),
    "--output-dir under a file": ([*SWEEP[:-1], "{tmp}/space.json", "--output-dir", "{tmp}/a_file/OUT"],
                                  ["cannot create output folder", "Not a directory"]),
    "status of a missing folder": (["status", "{tmp}/OUT"], ["is not a sweep folder"]),
    "status of a folder without jobs": (["status", "{tmp}"], ["holds no jobs", "run `sweep` first"]),
    "aggregate of a folder without records": (["aggregate", "--input-dir", "{tmp}", "--output-dir",
                                               "{tmp}/OUT"], ["no records found"]),
    "tables without an aggregate": (["tables", "--input", "{tmp}"], ["is not an aggregate folder"]),
    # searches: ranges and flags
    "search range outside the registry's": (["sweep", "--space", "{tmp}/range_outside.json", "--search", "random"],
                                            ["search range lmd uniform(0, 2)", "lmd=2.0 must be in [0, 1]"]),
    "loguniform from zero": (["sweep", "--space", "{tmp}/log_from_zero.json", "--search", "random"],
                             ["search range lr", "loguniform needs a lower bound > 0"]),
    "range of an unknown hyperparameter": (["sweep", "--space", "{tmp}/unknown_hparam.json", "--search", "random"],
                                           ["search range colour", "unknown hyperparameter 'colour'"]),
    "a list for a range": (["sweep", "--space", "{tmp}/list_range.json", "--search", "random"],
                           ["search range lmd", "is not a range", "[LOW, HIGH]"]),
    "fraction range reaching 1": (["sweep", "--space", "{tmp}/fraction_to_one.json", "--search", "random"],
                                  ["stage1_steps uniform(0.5, 1.0)", "[0, 1)", "randint for step counts"]),
    "DDG range on ERM jobs": (["sweep", "--space", "{tmp}/ddg_range_on_erm.json", "--search", "random"],
                              ["cfg_scale does not apply to ERM", "--algorithms"]),
    "randint backwards": (["sweep", "--space", "{tmp}/randint_backwards.json", "--search", "random"],
                          ["randint(16, 8)", "lower bound must be below the upper bound"]),
    "step range beyond --steps": (["sweep", "--space", "{tmp}/steps_beyond.json", "--search", "random"],
                                  ["search range stage1_steps randint(0, 50)", "beyond --steps 10"]),
    "empty choice": (["sweep", "--space", "{tmp}/empty_choice.json", "--search", "random"],
                     ["search range negative", "at least one option"]),
    "choice with a bad option": (["sweep", "--space", "{tmp}/bad_option.json", "--search", "random"],
                                 ["search range negative", "negative='colour' must be one of domain, null"]),
    "--search on a space without ranges": (["sweep", "--space", "demo", "--search", "optuna"],
                                           ["space demo declares none", "--space search"]),
    "a space with ranges without --search": (["sweep", "--space", "search", "--datasets", "DemoDigits"],
                                             ["declares search ranges (align_weight, cfg_scale, lmd, stage1_steps)",
                                              "--search optuna|hyperopt|random"]),
    "zero --num-samples": ([*SEARCH, "--num-samples", "0"], ["--num-samples must be > 0"]),
    "--metric without --search": (["sweep", "--space", "demo", "--metric", "oracle"],
                                  ["--metric only applies to a search"]),
    "--scheduler without --search": (["sweep", "--space", "demo", "--scheduler", "asha"],
                                     ["--scheduler only applies to a search"]),
    "ASHA flag without --scheduler": ([*SEARCH, "--asha-grace-period", "2"],
                                      ["--asha-grace-period only applies with --scheduler asha"]),
    "ASHA grace period past the last checkpoint": ([*SEARCH, "--scheduler", "asha", "--asha-grace-period", "3"],
                                                   ["--asha-grace-period 3 leaves ASHA nothing to stop", "3 checkpoints"]),
    "ASHA reduction factor of 1": ([*SEARCH, "--scheduler", "asha", "--asha-reduction-factor", "1"],
                                   ["--asha-reduction-factor must be > 1"]),
    "--tracker with --search": ([*SEARCH, "--tracker", "tensorboard"], ["--tracker is not supported with --search"]),
    "tables --importance without search trials": (["tables", "--input", "{tmp}", "--importance"],
                                                  ["holds no search trials", "sweep --search"]),
}
NEEDS_OUTPUT_DIR = ("sweep", "full-benchmark")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sweep_input_is_one_line_and_starts_nothing(case, folder, capsys):
    argv, fragments = CASES[case]
    argv = [a.format(tmp=folder) for a in argv]
    if argv[0] in NEEDS_OUTPUT_DIR and "--output-dir" not in argv:
        argv += ["--output-dir", str(folder / "OUT")]
    started = time.time()
    code = main(argv)
    elapsed = time.time() - started
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.format(tmp=folder) in lines[0], (fragment, lines[0])
    assert elapsed < 15, elapsed  # an unreachable cluster is refused at once, not after Ray's timeouts
    assert not (folder / "OUT").exists() and not (folder / "a_file").is_dir()
    assert not (folder / "ray").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.mark.parametrize("argv, package", [
    (SEARCH[:-1] + ["optuna"], "optuna"), (SEARCH[:-1] + ["hyperopt"], "hyperopt"),
    (["tables", "--input", "{tmp}/AGG", "--importance"], "optuna")])
def test_a_missing_search_package_is_one_line_naming_the_extra(argv, package, folder, capsys, monkeypatch):
    (folder / "AGG").mkdir()
    (folder / "AGG" / "search_trials.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, package, None)  # what `import optuna` meets where it is not installed
    argv = [a.format(tmp=folder) for a in argv] + (["--output-dir", str(folder / "OUT")] if argv[0] == "sweep" else [])
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"needs the {package} package" in lines[0] and 'pip install -e ".[search]"' in lines[0]
    assert not (folder / "OUT").exists() and not (folder / "ray").exists()


def test_the_catalogue_is_at_least_twenty_strong():
    assert len(CASES) + len(test_bad_inputs.CASES) >= 20
    assert not set(CASES) & set(test_bad_inputs.CASES)
