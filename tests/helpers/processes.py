"""A test's own Ray: its private temp folder, the processes that belong to it, waiting for them to go.

Every fault test gives Ray its own temp folder (RAY_TMPDIR), so the test can prove which
processes belong to it (they name that folder or hold files in it open) and make
sure none outlives it; `ray stop` would kill other people's clusters.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# a sweep's own local cluster, without the dashboard
RAY = ["--no-dashboard", "--num-cpus", "2"]


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


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
    kill_everything_below(root)


def kill_everything_below(root: str) -> None:
    """SIGKILL every process that names `root` or holds a file below it, then remove `root`."""
    for pid in ray_pids(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


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
