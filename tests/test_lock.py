import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ddg_sweep.errors import UserError
from ddg_sweep.layout import SweepFolder
from ddg_sweep.lock import SweepLock, read_lock

LOCK_NAME = SweepFolder.LOCK


def test_lock_holds_host_pid_and_a_beating_heart(tmp_path):
    with SweepLock(tmp_path, heartbeat=0.05):
        first = read_lock(tmp_path)
        assert first["host"] == socket.gethostname() and first["pid"] == os.getpid()
        time.sleep(0.3)
        assert read_lock(tmp_path)["heartbeat"] > first["heartbeat"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_sweep_on_the_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ddg_sweep.lock import SweepLock\n"
        f"lock = SweepLock({str(tmp_path)!r}, heartbeat=0.1).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by another sweep .*pid {holder.pid}"):
            SweepLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time(), "started": 0}))
    with SweepLock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead.pid
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_lock_from_another_host_goes_stale_by_heartbeat(tmp_path):
    other = {"host": "elsewhere", "pid": 1, "heartbeat": time.time(), "started": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(UserError, match="host elsewhere"):
        SweepLock(tmp_path, stale_after=60).acquire()
    other["heartbeat"] = time.time() - 120
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with SweepLock(tmp_path, stale_after=60) as lock:
        assert lock.took_over["host"] == "elsewhere"
