"""`ray job submit --working-dir . -- python -m ddg_sweep.run full-benchmark ...` on a local cluster.

The test starts one head node with its dashboard (Ray Jobs go through it) and token
auth on, in its own session and temp folder, and stops exactly that (never `ray stop`).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import REPO
from helpers.cluster import RAY_BIN, free_ports, start_node, stop_nodes, wait_for_nodes
from helpers.processes import ray_pids

ENV = {**os.environ, "RAY_AUTH_MODE": "token",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python` is ours


@pytest.fixture
def head_with_jobs(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="ddgj", dir="/tmp")  # short: unix socket paths
    port, dashboard = free_ports(2)
    log = open(tmp_path / "head.log", "w")
    head = start_node(["--head", "--port", str(port), "--include-dashboard", "true", "--dashboard-port",
                       str(dashboard), "--num-cpus", "2", "--temp-dir", temp_dir], log)
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        stop_nodes([head])
        for pid in ray_pids(temp_dir):  # anything of this cluster that outlived its `ray start`
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_job(*args, env=ENV, timeout=300):
    return subprocess.run([RAY_BIN, "job", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def wait_for_status(address, job_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = ray_job("status", "--address", address, job_id).stdout
        for state in ("SUCCEEDED", "FAILED", "STOPPED"):
            if f"Job '{job_id}' {state.lower()}" in status or f"status: {state}" in status:
                return state
        time.sleep(2)
    raise AssertionError(f"Ray Job {job_id} did not finish in {timeout} s")


@pytest.mark.slow
def test_full_benchmark_submitted_as_a_ray_job_writes_its_tables_and_logs(head_with_jobs, tmp_path):
    address = head_with_jobs
    with pytest.raises(urllib.error.HTTPError) as refused:  # the Jobs API keeps token auth
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)
    wrong = ray_job("submit", "--address", address, "--no-wait", "--", "true",
                    env={**ENV, "RAY_AUTH_TOKEN": "not-the-token"}, timeout=120)
    assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stdout + wrong.stderr

    out = tmp_path / "OUT"
    sweep = [sys.executable, "-m", "ddg_sweep.run", "full-benchmark", "--preset", "demo", "--algorithms", "ERM",
             "--trial-seeds", "0", "--test-envs", "0", "1", "--steps", "60", "--checkpoint-freq", "20"]
    relative = ray_job("submit", "--address", address, "--working-dir", ".", "--submission-id", "ddg-relative",
                       "--no-wait", "--", *sweep, "--output-dir", "OUT")
    assert relative.returncode == 0, relative.stderr
    assert wait_for_status(address, "ddg-relative") == "FAILED"
    logs = ray_job("logs", "--address", address, "ddg-relative").stdout
    assert "error: --output-dir OUT is relative, and Ray Job ddg-relative runs in a temporary copy" in logs
    assert "Traceback" not in logs

    started = time.time()
    submitted = ray_job("submit", "--address", address, "--working-dir", ".", "--submission-id", "ddg-demo",
                        "--no-wait", "--", *sweep, "--output-dir", str(out))
    assert submitted.returncode == 0, submitted.stderr
    status = wait_for_status(address, "ddg-demo")
    wall = time.time() - started
    logs = ray_job("logs", "--address", address, "ddg-demo").stdout  # the driver's output reaches `ray job logs`
    assert status == "SUCCEEDED", logs[-3000:]
    assert "running as Ray Job ddg-demo: attaching to its cluster (--address auto)" in logs
    assert "2 jobs: 2 pending; 2 jobs to run" in logs and "sweep finished: 2/2 jobs done" in logs
    assert "tables: " in logs and "RAY_AUTH_MODE=disabled" not in logs
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2 and all((r / "done").exists() for r in runs)
    steps = [[json.loads(line)["step"] for line in (r / "results.jsonl").read_text().splitlines()] for r in runs]
    assert steps == [[0, 20, 40, 59]] * 2
    assert {p.name for p in (out / "tables").iterdir()} >= {"paper.md", "iid.md", "paper.tex"}
    assert "ERM" in (out / "tables" / "iid.md").read_text()
    print(f"\nRay Job: submitted to SUCCEEDED in {wall:.0f} s")
