"""The sweep driver killed (SIGKILL) at different moments, then the same command again.

Every test gives Ray its own temp folder (RAY_TMPDIR), so the test can prove which
processes belong to it (they name that folder or hold files in it open) and make
sure none outlives it; `ray stop` would kill other people's clusters.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers.cli import assert_one_line_error, run_cli, start
from helpers.job_folders import (check_every_job_finished_once, expected_steps, job_folders, kill_when, read_steps,
                                 rerun, snapshot)
from helpers.processes import RAY, kill_group, ray_pids, wait_for, wait_until_gone
from helpers.tmpfs import mounted_tmpfs
from ddg_sweep.layout import SweepFolder
from ddg_sweep.lock import read_lock

LOCK_NAME = SweepFolder.LOCK


def report(title: str, redone: list[dict], wall_s: float, dead_s: float, gone_s: float,
           survivors: list[int]) -> None:
    print(f"\n{title}: trial workers dead {dead_s:.2f} s and every Ray process {gone_s:.1f} s after the kill"
          + (f" (survivors: {survivors})" if survivors else ""))
    for r in redone:
        low, high = r["redone"]
        print(f"  {r['job']}: resumed at step {r['resumed_at']}, steps redone ~{low}"
              + (f"-{high}" if high != low else "") + f" (records rewritten: {r['records_redone']})")
    print(f"  resumed run: {wall_s:.1f} s wall")


# ---- the tests ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_driver_killed_before_any_job_finished_resumes_every_job(tmp_path, ray_root):
    out = tmp_path / "OUT"
    args = ["full-benchmark", "--preset", "demo", "--algorithms", "VL2V", "--test-envs", "0", "1",
            "--trial-seeds", "0", "--steps", "200", "--output-dir", out, *RAY]
    env = {"RAY_TMPDIR": ray_root}
    driver = start(args, tmp_path / "first.log", env)

    def both_running_and_the_folder_taken():
        wait_for(lambda: len(list(out.glob("runs/*/node.json"))) == 2, 120, "both trials to start")
        second = run_cli(*args, env=env)  # the folder is taken while the first one really runs
        assert_one_line_error(second, "in use by another sweep", f"host {socket.gethostname()}",
                              f"pid {driver.pid}")
        wait_for(lambda: all(len(read_steps(f)) >= 2 for f in job_folders(out)), 120, "two records per job")
        assert not list(out.glob("runs/*/done"))

    killed_at, dead_at, gone_s, survivors, before = kill_when(driver, out, ray_root,
                                                              both_running_and_the_folder_taken)
    assert all(s["checkpoint_step"] is not None for s in before.values())
    assert read_lock(out)["pid"] == driver.pid  # the dead driver's lock is still there

    proc, wall = rerun(args, env, ray_root)
    assert f"took over the lock of a sweep that is gone (host {socket.gethostname()}, pid {driver.pid})" \
        in proc.stdout
    assert "2 jobs: 2 partial; 2 jobs to run" in proc.stdout
    redone = check_every_job_finished_once(out, before, killed_at, dead_at)
    assert len(redone) == 2
    assert (out / "tables" / "paper.md").exists() and not (out / LOCK_NAME).exists()
    report("killed before any job finished", redone, wall, dead_at - killed_at, dead_at - killed_at + gone_s,
           survivors)


@pytest.mark.slow
def test_driver_killed_with_jobs_done_and_running_then_during_aggregation(tmp_path, ray_root):
    out = tmp_path / "OUT"
    args = ["full-benchmark", "--preset", "demo", "--algorithms", "ERM", "DDG", "--test-envs", "0",
            "--trial-seeds", "0", "--steps", "48", "--output-dir", out, *RAY]  # DDG's Stage II from step 30
    env = {"RAY_TMPDIR": ray_root}
    driver = start(args, tmp_path / "first.log", env)

    def one_done_one_running():
        folders = job_folders(out) if (out / "runs").is_dir() else []
        done = [f for f in folders if (f / "done").exists()]
        running = [f for f in folders if not (f / "done").exists() and len(read_steps(f)) >= 2]
        return done and running

    killed_at, dead_at, gone_s, survivors, before = kill_when(
        driver, out, ray_root, lambda: wait_for(one_done_one_running, 180, "a job done while another runs"))
    assert any(s["done"] for s in before.values()) and any(
        s.get("checkpoint_step") is not None for s in before.values())

    # The same command again, itself killed once its aggregate is written and before its tables.
    env_pause = {**env, "DDG_SWEEP_AGGREGATE_PAUSE": "120"}
    second = start(args, tmp_path / "second.log", env_pause)
    try:
        resumed_started = time.time()
        wait_for(lambda: "sweep finished" in (tmp_path / "second.log").read_text(), 240, "the resumed sweep")
        wall = time.time() - resumed_started
        wait_for(lambda: "aggregate: " in (tmp_path / "second.log").read_text(), 120, "the aggregate")
        kill_group(second)
    finally:
        if second.poll() is None:
            kill_group(second)
    log = (tmp_path / "second.log").read_text()
    assert re.search(r"5 jobs: 1 done, [^;]*; 4 jobs to run", log), log  # ERM + the demo's four DDG variants
    assert (out / "aggregate" / "table.parquet").exists() and not (out / "tables").exists()
    redone = check_every_job_finished_once(out, before, killed_at, dead_at)
    runs = {f.name: snapshot(f) for f in job_folders(out)}

    proc, _ = rerun(args, env, ray_root)
    assert "5 jobs: 5 done; 0 jobs to run" in proc.stdout and "ray:" not in proc.stdout
    assert {f.name: snapshot(f) for f in job_folders(out)} == runs  # nothing trained again
    assert "DDG" in (out / "tables" / "paper.md").read_text()
    assert json.loads((out / "aggregate" / "summary.json").read_text())["runs"] == 5
    report("killed with jobs done and running", redone, wall, dead_at - killed_at, dead_at - killed_at + gone_s,
           survivors)


@pytest.mark.slow
def test_driver_alone_killed_leaves_a_stale_lock_and_orphans_the_next_sweep_clears(tmp_path, ray_root):
    """Only the driver's pid killed (an OOM killer, `kill -9 PID`): Ray's agents outlive it in its
    process group; the next sweep into the folder takes over the lock and stops them."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]],
                                          "steps": 150, "checkpoint_freq": 10, "hparams": {"batch_size": 8}}}))
    out = tmp_path / "OUT"
    args = ["sweep", "--space", space, "--output-dir", out, *RAY]
    env = {"RAY_TMPDIR": ray_root}
    driver = start(args, tmp_path / "first.log", env)
    try:
        wait_for(lambda: (out / "runs").is_dir() and any(len(read_steps(f)) >= 2 for f in job_folders(out)),
                 120, "two records")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            kill_group(driver)
    time.sleep(5)  # the cluster's fate-shared processes die with the driver; what is left, stays
    orphans = ray_pids(ray_root)
    assert read_lock(out)["pid"] == driver.pid

    proc = run_cli(*args, env=env, check=True)
    assert f"took over the lock of a sweep that is gone (host {socket.gethostname()}, pid {driver.pid})" \
        in proc.stdout
    if orphans:
        assert f"leftover process(es) of the Ray cluster of the killed sweep (pid {driver.pid})" in proc.stdout
    _, left = wait_until_gone(ray_root, 20)
    assert not left, left
    (folder,) = job_folders(out)
    assert read_steps(folder) == expected_steps(folder) and "resuming" in (folder / "train.log").read_text()
    print(f"\ndriver alone killed: {len(orphans)} orphaned Ray process(es) stopped by the next sweep")


@pytest.fixture
def tmpfs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "mnt", "64m")


@pytest.mark.slow
def test_read_only_output_folder_is_one_line_and_earlier_results_stay(tmp_path, tmpfs, ray_root):
    space = tmp_path / "space.json"
    grid = {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]], "steps": 10,
            "checkpoint_freq": 5, "hparams": {"batch_size": 8}}
    space.write_text(json.dumps({"grid": grid}))
    out = tmpfs / "OUT"
    env = {"RAY_TMPDIR": ray_root}
    run_cli("full-benchmark", "--space", space, "--output-dir", out, *RAY, env=env, check=True)
    earlier = snapshot(out)
    space.write_text(json.dumps({"grid": {**grid, "test_envs": [[0], [1]]}}))  # one more job to run
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    proc = run_cli("full-benchmark", "--space", space, "--output-dir", out, *RAY, env=env)
    assert_one_line_error(proc, f"cannot write to {out}", "Read-only file system", "--output-dir")
    assert "ray:" not in proc.stdout and snapshot(out) == earlier

    # A folder that went read-only under a killed sweep still holds that sweep's (stale) lock.
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                             "heartbeat": time.time(), "started": 0}))
    earlier = snapshot(out)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    proc = run_cli("full-benchmark", "--space", space, "--output-dir", out, *RAY, env=env)
    assert_one_line_error(proc, f"cannot write to {out}", "Read-only file system")
    assert snapshot(out) == earlier
    assert not wait_until_gone(ray_root, 20)[1]
