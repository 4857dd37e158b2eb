"""The sweep driver killed (SIGKILL) at different moments, then the same command again.

Every test gives Ray its own temp folder (RAY_TMPDIR), so the test can prove which
processes belong to it (they name that folder or hold files in it open) and make
sure none outlives it; `ray stop` would kill other people's clusters.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, default_sigint, mounted_tmpfs, run_cli
from ddg_sweep.layout import SweepFolder
from ddg_sweep.lock import read_lock

LOCK_NAME = SweepFolder.LOCK

RAY = ["--no-dashboard", "--num-cpus", "2"]


# ---- helpers shared with test_faults_trial.py and test_security.py ------------------------------

def ray_pids(root: str) -> list[int]:
    """Live processes (zombies excluded) naming `root` in their command line or holding a file below it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if root in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
                continue
            if any(os.readlink(fd).startswith(root) for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_until_gone(root: str, timeout: float) -> tuple[float, list[int]]:
    """(seconds until no process of `root` was left, or `timeout`; the survivors)."""
    started = time.time()
    while time.time() - started < timeout:
        left = ray_pids(root)
        if not left:
            return time.time() - started, []
        time.sleep(0.1)
    return timeout, ray_pids(root)


@pytest.fixture
def ray_root():
    """A private RAY_TMPDIR; whatever still runs from it at the end is killed (and the test fails on
    it where it asserts so)."""
    root = tempfile.mkdtemp(prefix="ddgf", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    yield root
    for pid in ray_pids(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def start(args, log_path: Path, env: dict) -> subprocess.Popen:
    """The CLI in its own session (so one killpg reaches the driver and all it started)."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "ddg_sweep.run", *map(str, args)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env}, preexec_fn=default_sigint)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_group(proc: subprocess.Popen, out: Path | None = None) -> tuple[float, float]:
    """SIGKILL the driver's process group; (when, when the trial workers of `out` were seen dead).

    The workers are in process groups of their own: they die when their raylet does, a moment later.
    """
    workers = [json.loads(p.read_text())["pid"] for p in out.glob("runs/*/node.json")] if out else []
    killed_at = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    deadline = killed_at + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.01)
    workers_dead_at = time.time()
    proc.wait()
    return killed_at, workers_dead_at


def read_steps(folder: Path) -> list[int]:
    """Steps of a results.jsonl's complete lines (a torn last line, from a kill mid-write, is skipped)."""
    steps = []
    try:
        lines = (folder / "results.jsonl").read_text().splitlines()
    except OSError:
        return steps
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            break
    return steps


def expected_steps(folder: Path) -> list[int]:
    config = json.loads((folder / "config.json").read_text())
    steps, freq = config["steps"], config["checkpoint_freq"]
    return [s for s in range(steps) if s % freq == 0 or s == steps - 1]


def snapshot(folder: Path) -> dict:
    """Every file below `folder`: its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def job_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def checkpoint_step(folder: Path) -> int:
    import torch

    return int(torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)["step"])


def steps_redone(checkpoint_step: int, checkpoint_time: float, recorded: list[int], step_time: float,
                 freq: int, killed_at: float, dead_at: float) -> tuple[int, int]:
    """(low, high): steps trained before the kill that the resumed run trains again.

    A record past the checkpoint means the kill came while that step's checkpoint was being
    saved: exactly those steps. Otherwise the worker trained on from its checkpoint until it
    died (between the kill and when it was seen gone), at its measured step time.
    """
    past = max(recorded, default=checkpoint_step) - checkpoint_step
    if past > 0:
        return past, past
    low = int(max(0.0, killed_at - checkpoint_time) / step_time)
    high = int(max(0.0, dead_at - checkpoint_time) / step_time)
    return min(low, freq - 1), min(high, freq - 1)


def state_at_kill(out: Path) -> dict:
    """Per job: done (with its folder's snapshot) or partial (checkpoint step and time, records)."""
    states = {}
    for folder in job_folders(out):
        if (folder / "done").exists():
            states[folder.name] = {"done": True, "files": snapshot(folder)}
        elif (folder / "checkpoint.pt").exists():
            lines = (folder / "results.jsonl").read_text().splitlines()
            records = lines[:len(read_steps(folder))]  # without a torn last line
            step = checkpoint_step(folder)
            states[folder.name] = {"done": False, "checkpoint_step": step,
                                   "checkpoint_time": (folder / "checkpoint.pt").stat().st_mtime,
                                   "kept": [r for r in records if json.loads(r)["step"] <= step],
                                   "recorded": read_steps(folder),
                                   "step_time": json.loads(records[-1])["step_time"]}
        else:
            states[folder.name] = {"done": False, "checkpoint_step": None}
    return states


def check_every_job_finished_once(out: Path, before: dict, killed_at: float, dead_at: float) -> list[dict]:
    """Done jobs untouched, partial ones resumed from their checkpoint, no step twice; returns
    per resumed job what was redone."""
    redone = []
    for folder in job_folders(out):
        assert (folder / "done").exists(), folder
        assert read_steps(folder) == expected_steps(folder), folder.name  # complete, no step twice
        log = (folder / "train.log").read_text()
        assert log.count(" done: ") == 1, log  # trained to the end exactly once
        was = before.get(folder.name)
        if was is None:
            continue
        if was["done"]:
            assert snapshot(folder) == was["files"], f"{folder.name} was done before the kill and changed"
        elif was["checkpoint_step"] is not None:
            resumed = [int(n) for n in re.findall(r"resuming \S+ at step (\d+) of", log)]
            assert resumed and resumed[0] == was["checkpoint_step"] + 1, (resumed, was["checkpoint_step"])
            text = (folder / "results.jsonl").read_text()
            assert text.startswith("".join(line + "\n" for line in was["kept"]))  # earlier records kept
            freq = json.loads((folder / "config.json").read_text())["checkpoint_freq"]
            redone.append({"job": folder.name, "resumed_at": resumed[0],
                           "records_redone": sum(1 for s in was["recorded"] if s > was["checkpoint_step"]),
                           "redone": steps_redone(was["checkpoint_step"], was["checkpoint_time"], was["recorded"],
                                                  was["step_time"], freq, killed_at, dead_at)})
    return redone


def report(title: str, redone: list[dict], wall_s: float, dead_s: float, gone_s: float,
           survivors: list[int]) -> None:
    print(f"\n{title}: trial workers dead {dead_s:.2f} s and every Ray process {gone_s:.1f} s after the kill"
          + (f" (survivors: {survivors})" if survivors else ""))
    for r in redone:
        low, high = r["redone"]
        print(f"  {r['job']}: resumed at step {r['resumed_at']}, steps redone ~{low}"
              + (f"-{high}" if high != low else "") + f" (records rewritten: {r['records_redone']})")
    print(f"  resumed run: {wall_s:.1f} s wall")


def rerun(args, env, root):
    started = time.time()
    proc = run_cli(*args, env=env, check=True)
    wall = time.time() - started
    _, left = wait_until_gone(root, 20)
    assert not left, f"the rerun left Ray processes running: {left}"
    return proc, wall


def kill_when(driver, out, ray_root, ready):
    """Run `ready()` (waits and checks), SIGKILL the driver's process group, wait for its Ray to go.

    The driver never outlives a failed `ready`. Returns (killed_at, dead_at, seconds until its
    Ray processes were gone, survivors, the job folders' state at the kill).
    """
    try:
        ready()
        killed_at, dead_at = kill_group(driver, out)
    finally:
        if driver.poll() is None:
            kill_group(driver)
    gone_s, survivors = wait_until_gone(ray_root, 30)
    return killed_at, dead_at, gone_s, survivors, state_at_kill(out)


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
