"""Sweeps: refused before anything starts on a local cluster of their own, and run attached to the
session's cluster (tests/conftest.py's ray_address)."""
import json
import re

import pandas as pd

import pytest

from helpers.cli import assert_one_line_error, run_cli

RAY = ["--no-dashboard", "--num-cpus", "2"]


def small_space(tmp_path, steps=40, test_envs=(0,)):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [
        [e] for e in test_envs], "steps": steps, "checkpoint_freq": 10, "hparams": {"batch_size": 8}}}))
    return space


def steps_of(folder):
    return [json.loads(line)["step"] for line in (folder / "results.jsonl").read_text().splitlines()]


def test_gpu_request_on_a_cluster_without_gpus_is_refused_before_anything_starts(tmp_path):
    # a trial asking for a GPU on a cluster without one would wait forever: refused instead (no hang)
    proc = run_cli("sweep", "--space", small_space(tmp_path), "--gpus-per-trial", "1",
                   "--output-dir", tmp_path / "out", *RAY, timeout=120)
    assert_one_line_error(proc, "--gpus-per-trial 1", "has none")
    assert "ray:" not in proc.stdout and not (tmp_path / "out" / "runs").exists()
    proc = run_cli("sweep", "--space", small_space(tmp_path), "--cpus-per-trial", "64",
                   "--output-dir", tmp_path / "out", *RAY)
    assert_one_line_error(proc, "--cpus-per-trial 64")
    proc = run_cli("sweep", "--space", small_space(tmp_path), "--address", "127.0.0.1:1",
                   "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, "cannot reach the Ray cluster at 127.0.0.1:1")


def test_a_failed_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path, ray_address):
    out = tmp_path / "out"
    proc = run_cli("sweep", "--space", small_space(tmp_path), "--output-dir", out, "--address", ray_address,
                   env={"DDG_SWEEP_FAULT_AFTER_STEP": "10"}, check=True)
    (folder,) = (out / "runs").iterdir()
    assert steps_of(folder) == [0, 10, 20, 30, 39]  # no step written twice
    log = (folder / "train.log").read_text()
    assert "resuming" in log and "at step 11 of 40" in log and "retry 2" in log
    error = json.loads((folder / "error.json").read_text())
    assert error["attempts"] == 1 and "injected fault after step 10" in error["error"]
    assert json.loads((folder / "node.json").read_text())["attempt"] == 2
    assert (folder / "done").exists() and not (folder / "checkpoint.pt").exists()
    assert "retrying" in proc.stdout and "1/1 jobs done" in proc.stdout
    assert "token" not in (folder / "train.log").read_text().lower()


@pytest.mark.slow
def test_full_benchmark_demo_end_to_end_then_nothing_to_redo(tmp_path, ray_address):
    """The demo preset's whole pipeline (sweep, aggregate, tables), narrowed to one held-out environment
    and one trial seed of its six algorithm rows (four DDG variants), with short runs; then the same command
    reruns nothing."""
    out = tmp_path / "OUT"
    narrow = ["--test-envs", "0", "--trial-seeds", "0", "--steps", "24", "--checkpoint-freq", "4"]
    first = run_cli("full-benchmark", "--preset", "demo", "--output-dir", out, "--address", ray_address, *narrow,
                   check=True)
    assert "6 jobs: 6 pending; 6 jobs to run" in first.stdout
    assert (out / "aggregate" / "table.parquet").exists()
    tables = sorted(p.name for p in (out / "tables").glob("*.md"))
    assert "paper.md" in tables and "iid.md" in tables and list((out / "tables").glob("*.tex"))
    runs = sorted((out / "runs").iterdir())
    configs = [json.loads((r / "config.json").read_text()) for r in runs]
    assert sorted(c["algorithm"] for c in configs) == ["DDG"] * 4 + ["ERM", "VL2V"]
    assert sorted((c["hparams"]["guidance_form"], c["hparams"]["cfg_scale"]) for c in configs
                  if c["algorithm"] == "DDG") == [("interpolate", 3.0), ("prediction", 1.0), ("prediction", 3.0),
                                                  ("target", 3.0)]
    rows = set(pd.read_parquet(out / "aggregate" / "table.parquet")["algorithm"])
    assert rows == {"ERM", "VL2V", "DDG prediction w=3", "DDG prediction w=1", "DDG target w=3",
                    "DDG interpolate w=3"}
    assert all((r / "done").exists() and (r / "swad.json").exists() for r in runs)  # every algorithm has SWAD
    assert all(steps_of(r)[-1] == 23 for r in runs)
    mtimes = {r.name: (r / "results.jsonl").stat().st_mtime_ns for r in runs}

    second = run_cli("full-benchmark", "--preset", "demo", "--output-dir", out, "--address", ray_address, *narrow,
                   check=True)
    assert "6 done; 0 jobs to run" in second.stdout and "ray:" not in second.stdout
    assert {r.name: (r / "results.jsonl").stat().st_mtime_ns for r in runs} == mtimes
    plan = json.loads(run_cli("plan", "--preset", "demo", "--output-dir", out, "--format", "json", *narrow,
                              check=True).stdout)
    assert plan["counts"]["total"] == {"done": 6, "total": 6} and plan["gpu_hours"] == 0
    status = run_cli("status", out, check=True).stdout
    assert re.search(r"^DemoDigits\s+6\s+0\s+0\s+0\s+0\s+0\s+6$", status, re.M), status  # 6 done of 6
