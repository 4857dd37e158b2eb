"""Searches (short DemoDigits jobs) attached to the session's cluster (tests/conftest.py's ray_address);
the one that kills its driver starts a cluster of its own."""
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers.cli import run_cli, start
from ddg_sweep.search.searches import SearchOptions, build_searches, scan_headers
from search_spaces import SpaceOptions, space_jobs, space_ranges
from helpers.job_folders import check_every_job_finished_once, expected_steps, kill_when, read_steps, rerun
from helpers.processes import wait_for

RAY = ["--no-dashboard", "--num-cpus", "2", "--cpus-per-trial", "1"]  # a cluster of its own


def attached(address: str) -> list[str]:
    return ["--address", address, "--cpus-per-trial", "1"]


# The demo command, with fewer steps (8, evaluated at 0, 4 and 7) and smaller batches.
DEMO = ["--space", "search", "--search", "optuna", "--datasets", "DemoDigits", "--test-envs", "0", "--steps", "8",
        "--checkpoint-freq", "4", "--batch-size", "8", "--models", "tiny"]


def trials_of(out: Path) -> dict[int, dict]:
    """trial index -> search.json, for the one search in OUT."""
    (headers,) = scan_headers(out).values()
    return {h["trial"]: h for h in headers}


def told(out: Path) -> list[dict]:
    """Every value the searcher was told (OUT/searches/<id>.jsonl)."""
    (path,) = (out / "searches").glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(out: Path, job_id: str) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / job_id / "results.jsonl").read_text().splitlines()]


def val_objective(rows: list[dict], test_env: int, n_envs: int = 4) -> float:
    """Training-domain validation, written out here independently of ddg_sweep.search.objective."""
    return max(sum(r[f"env{e}_out_acc"] for e in range(n_envs) if e != test_env) / (n_envs - 1) for r in rows)


def log_span(out: Path, job_id: str) -> tuple[float, float]:
    lines = (out / "runs" / job_id / "train.log").read_text().splitlines()
    stamp = lambda line: time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))  # noqa: E731
    return stamp(lines[0]), stamp(lines[-1])


@pytest.mark.slow
def test_a_search_runs_n_distinct_jobs_and_a_larger_n_runs_exactly_the_rest(tmp_path, ray_address):
    out = tmp_path / "OUT"
    first = run_cli("sweep", *DEMO, "--num-samples", "4", "--output-dir", out, *attached(ray_address), check=True)
    assert "0 trial(s) in OUT, 0 to resume, 4 new" in first.stdout and "1 search(es): 4 trials to run" in first.stdout
    trials = trials_of(out)
    assert sorted(trials) == [0, 1, 2, 3]
    jobs = [h["jobs"][0] for h in trials.values()]
    assert len(set(jobs)) == 4 and all(len(h["jobs"]) == 1 for h in trials.values())
    assert all((out / "runs" / j / "done").exists() and read_steps(out / "runs" / j) == [0, 4, 7] for j in jobs)
    configs = [json.dumps(h["config"], sort_keys=True) for h in trials.values()]
    assert len(set(configs)) == 4
    # the job ids are what the search computes: rebuilt here from the space and each configuration
    slots = space_jobs("search", SpaceOptions(datasets=("DemoDigits",), test_envs=(0,), steps=8, checkpoint_freq=4,
                                              models="tiny", overrides={"batch_size": 8}))
    (search,) = build_searches(slots, space_ranges("search"), SearchOptions("optuna", 4), "search")
    assert {h["search_id"] for h in trials.values()} == {search.search_id}
    for index, header in trials.items():
        (job,) = search.trial_jobs(index, header["config"])
        assert header["jobs"] == [job.job_id]
        config = json.loads((out / "runs" / job.job_id / "config.json").read_text())
        assert {k: config["hparams"][k] for k in header["config"]} == header["config"]
        assert 0 <= header["config"]["lmd"] <= 1 and 0.1 <= header["config"]["align_weight"] <= 3
    # what the searcher saw: training-domain validation, nothing of test env 0
    seen = {t["trial"]: t["objective"] for t in told(out) if t["source"] == "run"}
    assert seen == {i: pytest.approx(val_objective(records(out, h["jobs"][0]), 0)) for i, h in trials.items()}
    before = {j: (out / "runs" / j / "results.jsonl").stat().st_mtime_ns for j in jobs}

    second = run_cli("sweep", *DEMO, "--num-samples", "6", "--output-dir", out, *attached(ray_address), check=True)
    assert "4 trial(s) in OUT (4 done), 0 to resume, 2 new" in second.stdout
    assert "1 search(es): 2 trials to run" in second.stdout
    trials = trials_of(out)
    assert sorted(trials) == [0, 1, 2, 3, 4, 5]
    assert {j: (out / "runs" / j / "results.jsonl").stat().st_mtime_ns for j in jobs} == before  # untouched
    assert len({json.dumps(h["config"], sort_keys=True) for h in trials.values()}) == 6
    assert len(list((out / "runs").iterdir())) == 6
    assert all((out / "runs" / h["jobs"][0] / "done").exists() for h in trials.values())
    sources = [(t["trial"], t["source"]) for t in told(out)]
    assert sorted(sources[4:8]) == [(i, "warm start") for i in range(4)]
    assert sorted(sources[8:]) == [(4, "run"), (5, "run")]

    third = run_cli("sweep", *DEMO, "--num-samples", "6", "--output-dir", out, *attached(ray_address), check=True)
    assert "0 trials to run" in third.stdout and "ray:" not in third.stdout
    status = json.loads(run_cli("status", out, "--format", "json", check=True).stdout)
    assert status["counts"]["total"] == {"done": 6, "total": 6}


@pytest.mark.slow
def test_a_driver_killed_mid_search_loses_no_finished_trial(tmp_path, ray_root):
    out = tmp_path / "OUT"
    args = ["sweep", *DEMO, "--num-samples", "6", "--output-dir", out, *RAY]
    env = {"RAY_TMPDIR": ray_root}
    driver = start(args, tmp_path / "first.log", env)

    def two_done_one_part_way():
        def ready():
            folders = [f for f in out.glob("runs/*") if f.is_dir()]
            done = [f for f in folders if (f / "done").exists()]
            return len(done) >= 2 and any((f / "checkpoint.pt").exists() for f in folders if f not in done)
        wait_for(ready, 400, "two finished trials and one part-way", interval=0.2)

    killed_at, dead_at, _, survivors, before = kill_when(driver, out, ray_root, two_done_one_part_way)
    assert not survivors
    done_before = sorted(name for name, state in before.items() if state["done"])
    suggested_before = len(before)
    print(f"\nkilled with {suggested_before} trials suggested, {len(done_before)} done, "
          f"{sum(s['checkpoint_step'] is not None for s in before.values() if not s['done'])} part-way")
    proc, _ = rerun(args, env, ray_root)
    assert f"{suggested_before} trial(s) in OUT ({len(done_before)} done" in proc.stdout
    assert f"{suggested_before - len(done_before)} to resume, {6 - suggested_before} new" in proc.stdout
    trials = trials_of(out)
    assert sorted(trials) == [0, 1, 2, 3, 4, 5] and len(list((out / "runs").iterdir())) == 6
    check_every_job_finished_once(out, before, killed_at, dead_at)  # done ones untouched, none trained twice
    # the searcher was told each trial once live (a trial that finished in the instant before the kill
    # may have missed it), and the rerun's searcher every trial done before the kill
    runs = Counter(t["trial"] for t in told(out) if t["source"] == "run")
    warm = {t["trial"] for t in told(out) if t["source"] == "warm start"}
    done_trials = {i for i, h in trials.items() if h["jobs"][0] in done_before}
    assert warm == done_trials and set(runs.values()) == {1}
    assert set(range(6)) - done_trials <= set(runs) and set(runs) | warm == set(range(6))


ASHA_SPACE = {"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]], "steps": 12,
                       "checkpoint_freq": 3, "hparams": {"batch_size": 8}},
              "search": {"lr": {"choice": [0.0003, 3.0]}}}  # Adam at lr 3 wrecks the student


@pytest.mark.slow
def test_asha_stops_a_trial_early_keeps_its_records_and_keeps_it_out_of_the_protocol_table(tmp_path, ray_address):
    space = tmp_path / "asha.json"
    space.write_text(json.dumps(ASHA_SPACE))
    out = tmp_path / "OUT"
    args = ["sweep", "--space", space, "--search", "random", "--scheduler", "asha", "--max-concurrent", "1",
            "--output-dir", out, *attached(ray_address)]
    run_cli(*args, "--num-samples", "5", check=True)
    trials = trials_of(out)
    folders = {i: out / "runs" / h["jobs"][0] for i, h in trials.items()}
    stopped = {i: f for i, f in folders.items() if (f / "stopped.json").exists()}
    assert stopped, "ASHA stopped no trial"
    for index, folder in stopped.items():
        note = json.loads((folder / "stopped.json").read_text())
        assert note["by"] == "asha" and note["trial"] == index and note["checkpoints"] in (1, 2, 4)
        assert not (folder / "done").exists() and (folder / "checkpoint.pt").exists()
        assert len(read_steps(folder)) == note["checkpoints"] < 5  # stopped early, its records kept
    for index in set(folders) - set(stopped):
        assert read_steps(folders[index]) == expected_steps(folders[index])
    seen = {t["trial"]: t for t in told(out)}
    assert {i for i, t in seen.items() if t["stopped"]} == set(stopped)
    for index in stopped:
        assert seen[index]["objective"] == pytest.approx(val_objective(records(out, trials[index]["jobs"][0]), 0))
    spans = sorted(log_span(out, h["jobs"][0]) for h in trials.values())  # --max-concurrent 1: one at a time
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))
    counts = json.loads(run_cli("status", out, "--format", "json", check=True).stdout)["counts"]["total"]
    assert counts == {"done": 5 - len(stopped), "stopped": len(stopped), "total": 5}

    run_cli("aggregate", "--input-dir", out, "--output-dir", out / "aggregate", check=True)
    import pandas as pd

    read = set(pd.read_parquet(out / "aggregate" / "records.parquet")["job_id"].astype(str))
    assert read == {f.name for i, f in folders.items() if i not in stopped}
    protocol = run_cli("tables", "--input", out / "aggregate", "--format", "markdown", check=True).stdout
    assert "| ERM [asha random] |" not in protocol and "Left out" in protocol
    with_search = run_cli("tables", "--input", out / "aggregate", "--format", "markdown", "--include-search",
                          check=True).stdout
    assert "| ERM [asha random] |" in with_search

    before = {i: (f / "results.jsonl").stat().st_mtime_ns for i, f in stopped.items()}
    again = run_cli(*args, "--num-samples", "6", check=True)
    assert f"({5 - len(stopped)} done, {len(stopped)} stopped), 0 to resume, 1 new" in again.stdout
    assert sorted(trials_of(out)) == [0, 1, 2, 3, 4, 5]
    assert {i: (f / "results.jsonl").stat().st_mtime_ns for i, f in stopped.items()} == before  # not resumed


@pytest.mark.slow
def test_full_benchmark_hyperopt_oracle_per_dataset_labels_the_oracle(tmp_path, ray_address):
    space = tmp_path / "scope.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": 6, "checkpoint_freq": 3, "hparams": {"batch_size": 8}},
                                 "search": {"lr": {"loguniform": [1e-4, 1e-2]}}}))
    out = tmp_path / "OUT"
    proc = run_cli("full-benchmark", "--space", space, "--search", "hyperopt", "--search-scope", "dataset",
                   "--metric", "oracle", "--num-samples", "2", "--output-dir", out, *attached(ray_address), check=True)
    assert "objective: oracle (ORACLE" in proc.stdout and "1 search(es): 2 trials to run" in proc.stdout
    trials = trials_of(out)
    assert sorted(trials) == [0, 1]
    for index, header in trials.items():
        assert header["test_envs"] == [[0], [1]] and len(header["jobs"]) == 2  # one configuration, both cells
        assert all((out / "runs" / j / "done").exists() for j in header["jobs"])
        oracle = [records(out, j)[-1][f"env{env}_out_acc"] for j, env in zip(header["jobs"], (0, 1))]
        (seen,) = [t["objective"] for t in told(out) if t["trial"] == index]
        assert seen == pytest.approx(sum(oracle) / 2)  # the oracle: test envs' out splits, last checkpoint
    table = (out / "tables" / "iid.md").read_text()
    assert "| ERM [ORACLE scope hyperopt] |" in table and "an ORACLE result" in table
    assert (out / "plots" / "search_scope_hyperopt_oracle_progress.png").exists()
