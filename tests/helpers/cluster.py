"""Ray nodes a test starts with `ray start --block`, each in its own session, and stops exactly
(never `ray stop`, which would stop every Ray here)."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.processes import kill_everything_below

RAY_BIN = str(Path(sys.executable).with_name("ray"))


def ensure_auth_token() -> None:
    """The token `ray start --head` needs, written once before any test runs, as the first local
    `ray.init()` on a new machine writes it (Ray's path and format). `ray start` itself refuses
    without one; left to whichever test first started a local cluster, a session fixture's head
    node started earlier failed, and every test on that worker with it. O_EXCL: never overwrite."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as token:
        token.write(secrets.token_hex(32))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_node(args, log, num_cpus=1):
    agent, grpc, env_agent, metrics = free_ports(4)
    return subprocess.Popen(
        [RAY_BIN, "start", "--block", "--num-cpus", str(num_cpus), "--node-ip-address", "127.0.0.1",
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
        try:  # a probe started before the head's GCS is up may wait for it past its own timeout
            proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                                  env={**os.environ, "RAY_AUTH_MODE": "token"})
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


def head_node(log_path: Path, num_cpus: int = 2):
    """Generator for a fixture: a one-node cluster without dashboard, in its own temp folder and on
    ports of its own (two at once do not collide); yields its address, then stops it and kills
    whatever of it outlived its `ray start`."""
    temp_dir = tempfile.mkdtemp(prefix="ddgs", dir="/tmp")  # short: unix socket paths
    port, client = free_ports(2)
    with open(log_path, "w") as log:
        head = start_node(["--head", "--port", str(port), "--ray-client-server-port", str(client),
                           "--include-dashboard", "false", "--temp-dir", temp_dir], log, num_cpus=num_cpus)
        try:
            wait_for_nodes(f"127.0.0.1:{port}", 1)
            yield f"127.0.0.1:{port}"
        finally:
            stop_nodes([head])
            kill_everything_below(temp_dir)
