"""A two-node Ray cluster on this machine: a sweep attached with --address uses both nodes.

The test starts both nodes with `ray start --block` in their own sessions and stops
exactly those process groups (never `ray stop`, which would stop every Ray here).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_cli

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_node(args, log):
    agent, grpc, env_agent, metrics = free_ports(4)
    return subprocess.Popen(
        [RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
         "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
         "--runtime-env-agent-port", str(env_agent), "--metrics-export-port", str(metrics), *args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "token"})  # joining nodes must present the token too


def stop_nodes(procs, grace=5):
    """SIGTERM, then SIGKILL after `grace` seconds, to the process groups this test started (only those)."""
    def alive(proc):
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if alive(proc):
                os.killpg(proc.pid, sig)
        deadline = time.time() + grace
        while time.time() < deadline and any(alive(p) for p in procs):
            time.sleep(0.2)
    for proc in procs:
        proc.wait(timeout=10)


def wait_for_nodes(address, n, timeout=90):
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))" % address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "RAY_AUTH_MODE": "token"})
        if proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


@pytest.fixture
def two_node_cluster(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="ddgray", dir="/tmp")  # short: unix socket paths
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    log = open(tmp_path / "ray_nodes.log", "w")
    nodes = [start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                         "--temp-dir", temp_dir], log)]
    try:
        time.sleep(3)
        nodes.append(start_node(["--address", address, "--resources", json.dumps({"node2": 1})], log))
        wait_for_nodes(address, 2)
        yield address
    finally:
        stop_nodes(nodes)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_sweep_attached_to_a_two_node_cluster_runs_on_both_nodes(two_node_cluster, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "steps": 40,
                                          "checkpoint_freq": 20, "hparams": {"batch_size": 8}}}))
    out = tmp_path / "out"
    proc = run_cli("sweep", "--space", space, "--output-dir", out, "--address", two_node_cluster,
                   "--max-concurrent", "2", check=True, timeout=300)
    assert "attached to" in proc.stdout and "2 node(s)" in proc.stdout and "4/4 jobs done" in proc.stdout
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4 and all((r / "done").exists() for r in runs)
    nodes = {json.loads((r / "node.json").read_text())["node_id"] for r in runs}
    assert len(nodes) == 2  # one CPU per node, two trials at once: both nodes trained
    again = run_cli("sweep", "--space", space, "--output-dir", out, "--address", two_node_cluster, check=True)
    assert "0 jobs to run" in again.stdout
