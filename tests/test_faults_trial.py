"""A trial's worker killed mid-run, and a job that fails on every attempt."""
import json
import os
import re
import signal
import time

import pytest

from helpers.cli import run_cli, start
from ddg_sweep.jobs import run_config
from search_spaces import SpaceOptions, space_jobs
from helpers.job_folders import checkpoint_step, expected_steps, job_folders, read_steps, snapshot, steps_redone
from helpers.processes import RAY, alive, wait_for, wait_until_gone


def space_file(tmp_path, test_envs, steps, freq=10):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [
        [e] for e in test_envs], "steps": steps, "checkpoint_freq": freq, "hparams": {"batch_size": 8}}}))
    return space


@pytest.mark.slow
def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, ray_root):
    out = tmp_path / "OUT"  # does not exist: --retry-failed has nothing to retry and is no error
    args = ["sweep", "--space", space_file(tmp_path, [0], steps=200), "--output-dir", out, "--retry-failed",
            "--max-failures", "2", *RAY]
    log_path = tmp_path / "sweep.log"
    driver = start(args, log_path, {"RAY_TMPDIR": ray_root})
    try:
        wait_for(lambda: (out / "runs").is_dir() and len(read_steps(job_folders(out)[0])) >= 2, 120,
                 "two records")
        (folder,) = job_folders(out)
        wait_for(lambda: checkpoint_step(folder) >= 10, 30, "the step-10 checkpoint")
        time.sleep(0.2)  # killed while training, between two checkpoints
        node = json.loads((folder / "node.json").read_text())
        assert node["attempt"] == 1
        killed_at = time.time()
        os.kill(node["pid"], signal.SIGKILL)
        wait_for(lambda: not alive(node["pid"]), 30, "the worker to die", interval=0.01)
        dead_at = time.time()
        at_kill, recorded = checkpoint_step(folder), read_steps(folder)
        checkpoint_time, step_time = (folder / "checkpoint.pt").stat().st_mtime, json.loads(
            (folder / "results.jsonl").read_text().splitlines()[-1])["step_time"]
        assert driver.wait(timeout=240) == 0, log_path.read_text()
        finished_at = time.time()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert not wait_until_gone(ray_root, 20)[1]
    log = (folder / "train.log").read_text()
    resumed = [int(n) for n in re.findall(r"resuming \S+ at step (\d+) of", log)]
    assert resumed == [at_kill + 1], (resumed, at_kill)
    assert "retry 2: Tune's last checkpoint was step" in log  # the attempt count survives a killed worker
    retried = json.loads((folder / "node.json").read_text())
    assert retried["attempt"] == 2 and retried["pid"] != node["pid"]
    assert read_steps(folder) == expected_steps(folder) == [*range(0, 200, 10), 199]
    assert (folder / "done").exists() and not (folder / "error.json").exists()
    assert "retrying" in log_path.read_text() and "1/1 jobs done" in log_path.read_text()
    low, high = steps_redone(at_kill, checkpoint_time, recorded, step_time, 10, killed_at, dead_at)
    print(f"\nworker killed: resumed at step {resumed[0]}, steps redone {low}" + (f"-{high}" if high != low else "")
          + f" (records rewritten: {sum(1 for s in recorded if s > at_kill)}), "
          f"retry to done {finished_at - dead_at:.1f} s wall")


@pytest.mark.slow
def test_a_job_failing_every_attempt_is_failed_and_only_rerun_with_retry_failed(tmp_path, ray_root):
    space = space_file(tmp_path, [0, 1, 2], steps=20)
    out = tmp_path / "OUT"
    env = {"RAY_TMPDIR": ray_root}
    jobs = space_jobs(str(space), SpaceOptions())
    broken = jobs[2]
    # Its folder already holds another run's config (a copied folder): train.run refuses it each time.
    (out / "runs" / broken.job_id).mkdir(parents=True)
    (out / "runs" / broken.job_id / "config.json").write_text(json.dumps(run_config(jobs[0], out).to_json()))
    args = ["sweep", "--space", space, "--output-dir", out, "--max-failures", "1", *RAY]

    first = run_cli(*args, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    error = json.loads((out / "runs" / broken.job_id / "error.json").read_text())
    assert error["attempts"] == 2 and "already holds a different run" in error["error"]  # max_failures + 1
    assert first.stdout.count("retrying") == 1 and "FAILED" in first.stdout
    assert "sweep finished: 2/3 jobs done, 1 failed" in first.stdout
    assert f"failed {broken.job_id}: UserError: " in first.stdout
    done = {f.name: snapshot(f) for f in job_folders(out) if f.name != broken.job_id}
    assert len(done) == 2 and all((out / "runs" / name / "done").exists() for name in done)

    second = run_cli(*args, env=env, check=True)
    assert "3 jobs: 2 done, 1 failed; 0 jobs to run (1 failed skipped: pass --retry-failed" in second.stdout
    assert "ray:" not in second.stdout
    assert json.loads((out / "runs" / broken.job_id / "error.json").read_text()) == error

    (out / "runs" / broken.job_id / "config.json").unlink()  # the cause fixed
    third = run_cli(*args, "--retry-failed", env=env, check=True)
    assert "3 jobs: 2 done, 1 failed; 1 jobs to run" in third.stdout and "3/3 jobs done" in third.stdout
    assert {f.name: snapshot(f) for f in job_folders(out) if f.name != broken.job_id} == done
    folder = out / "runs" / broken.job_id
    assert (folder / "done").exists() and read_steps(folder) == expected_steps(folder)
    assert not wait_until_gone(ray_root, 20)[1]


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_without_failing_its_jobs_and_the_same_command_resumes(tmp_path, ray_root):
    out = tmp_path / "OUT"
    args = ["sweep", "--space", space_file(tmp_path, [0], steps=120), "--output-dir", out, *RAY]
    env = {"RAY_TMPDIR": ray_root}
    driver = start(args, tmp_path / "sweep.log", env)
    try:
        wait_for(lambda: (out / "runs").is_dir() and len(read_steps(job_folders(out)[0])) >= 2, 120, "two records")
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert driver.wait(timeout=120) == 130, (tmp_path / "sweep.log").read_text()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert not wait_until_gone(ray_root, 20)[1]
    (folder,) = job_folders(out)
    assert not (folder / "error.json").exists() and not (folder / "done").exists()
    stopped_at = checkpoint_step(folder)
    status = json.loads(run_cli("status", out, "--job", folder.name, "--format", "json", check=True).stdout)
    assert status["state"] in ("partial", "running")  # not failed: no --retry-failed needed
    again = run_cli(*args, env=env, check=True)
    assert "1 jobs to run" in again.stdout and "failed skipped" not in again.stdout
    assert f"at step {stopped_at + 1} of 120" in (folder / "train.log").read_text()
    assert read_steps(folder) == expected_steps(folder) and (folder / "done").exists()
