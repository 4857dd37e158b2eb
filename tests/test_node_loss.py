"""A worker node lost mid-trial: on a two-node cluster sharing OUT, every Ray process of the worker
node is killed while a trial trains there. Tune retries the trial on the surviving node, it resumes
from its checkpoint.pt in OUT, and the sweep ends with every job done once and no step twice.

The test starts both nodes itself (`ray start --block`, each in its own session) and kills only
the worker node's processes: the descendants of its `ray start` and that process group.
"""
import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from helpers.cluster import free_ports, start_node, stop_nodes, wait_for_nodes
from helpers.cli import start
from helpers.job_folders import checkpoint_step, expected_steps, job_folders, read_steps, steps_redone
from helpers.processes import alive, ray_pids, wait_for

STEPS, FREQ = 200, 20


def descendants(root: int) -> set[int]:
    """`root` and every live process below it (from /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return {pid for pid in found if alive(pid)}


def process_group(pgid: int) -> set[int]:
    members = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == pgid:
                    members.add(int(proc.name))
            except (OSError, IndexError, ValueError):
                continue
    return {pid for pid in members if alive(pid)}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    # The head notices a silent node after ~3 s instead of Ray's default ~30 s (its health checks).
    monkeypatch.setenv("RAY_health_check_period_ms", "1000")
    monkeypatch.setenv("RAY_health_check_timeout_ms", "1000")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    temp_dir = tempfile.mkdtemp(prefix="ddgn", dir="/tmp")  # short: unix socket paths
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    log = open(tmp_path / "ray_nodes.log", "w")
    nodes = [start_node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp_dir],
                        log)]
    try:
        time.sleep(3)
        nodes.append(start_node(["--address", address, "--resources", json.dumps({"node2": 1})], log))
        wait_for_nodes(address, 2)
        yield {"address": address, "head": nodes[0], "worker": nodes[1]}
    finally:
        stop_nodes(nodes)
        for pid in ray_pids(temp_dir):
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_worker_node_lost_mid_trial_is_retried_on_the_other_node_from_its_checkpoint(cluster, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": STEPS, "checkpoint_freq": FREQ, "hparams": {"batch_size": 8}}}))
    out, log_path = tmp_path / "OUT", tmp_path / "sweep.log"
    driver = start(["sweep", "--space", space, "--output-dir", out, "--address", cluster["address"],
                    "--max-concurrent", "2", "--max-failures", "2"], log_path, {})
    worker = cluster["worker"]
    try:
        def trials():
            nodes = [json.loads(p.read_text()) for p in out.glob("runs/*/node.json")]
            return nodes if len(nodes) == 2 else None

        nodes = wait_for(trials, 180, "both trials to start")
        on_worker = [n for n in nodes if n["pid"] in descendants(worker.pid)]
        assert len(on_worker) == 1, nodes  # one CPU per node, two trials: one on each
        lost = on_worker[0]
        folder = out / "runs" / lost["job_id"]
        wait_for(lambda: len(read_steps(folder)) >= 3 and checkpoint_step(folder) >= 2 * FREQ, 120,
                 "two checkpoints on the worker node")
        time.sleep(0.3)  # between two checkpoints
        doomed = descendants(worker.pid) | process_group(worker.pid)
        killed_at = time.time()
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not alive(lost["pid"]), 30, "the trial's worker to die", interval=0.01)
        dead_at = time.time()
        at_kill, recorded = checkpoint_step(folder), read_steps(folder)
        checkpoint_time = (folder / "checkpoint.pt").stat().st_mtime
        step_time = json.loads((folder / "results.jsonl").read_text().splitlines()[-1])["step_time"]
        assert driver.wait(timeout=400) == 0, log_path.read_text()
        finished_at = time.time()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    sweep_log = log_path.read_text()
    assert "2 node(s)" in sweep_log and "retrying" in sweep_log and "sweep finished: 2/2 jobs done" in sweep_log

    for job in job_folders(out):  # every job done once, no step recorded twice
        assert (job / "done").exists() and not (job / "error.json").exists()
        assert read_steps(job) == expected_steps(job) == [*range(0, STEPS, FREQ), STEPS - 1]
        assert (job / "train.log").read_text().count(" done: ") == 1
    log = (folder / "train.log").read_text()
    resumed = [int(n) for n in re.findall(r"resuming \S+ at step (\d+) of", log)]
    assert resumed == [at_kill + 1], (resumed, at_kill)
    retried = json.loads((folder / "node.json").read_text())
    assert retried["attempt"] == 2 and retried["node_id"] != lost["node_id"]  # on the surviving node
    other = next(j for j in job_folders(out) if j != folder)
    assert "resuming" not in (other / "train.log").read_text()  # the surviving node's job was not disturbed

    stamp = re.search(r"^(\S+ \S+) retry 2: ", log, re.M).group(1)
    retry_after = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - killed_at
    low, high = steps_redone(at_kill, checkpoint_time, recorded, step_time, FREQ, killed_at, dead_at)
    print(f"\nnode lost: {len(doomed)} Ray processes of the worker node killed; trial resumed at step "
          f"{resumed[0]} on the head node, steps redone {low}" + (f"-{high}" if high != low else "")
          + f" (records rewritten: {sum(1 for s in recorded if s > at_kill)}); kill to sweep finished "
          f"{finished_at - killed_at:.1f} s wall (the retry started {retry_after:.0f} s after the kill)")
