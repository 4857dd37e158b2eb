"""A two-node Ray cluster on this machine: a sweep attached with --address uses both nodes.

The test starts both nodes with `ray start --block` in their own sessions and stops
exactly those process groups (never `ray stop`, which would stop every Ray here).
"""
import json
import shutil
import tempfile
import time

import pytest

from helpers.cli import run_cli
from helpers.cluster import free_ports, start_node, stop_nodes, wait_for_nodes

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
