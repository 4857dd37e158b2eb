"""The dashboard stays token-protected and on 127.0.0.1 unless asked; the token is written nowhere."""
import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import start
from helpers.processes import wait_for, wait_until_gone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_token() -> str:
    """Where Ray 2.60 looks for the token, in its order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return Path(path).read_text().strip()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            if width == 4:
                found.add(socket.inet_ntoa(raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def status_of(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
@pytest.mark.parametrize("host_flag", [[], ["--dashboard-host", "0.0.0.0"]], ids=["default", "dashboard-host"])
def test_dashboard_needs_the_token_binds_where_told_and_the_token_is_written_nowhere(tmp_path, ray_root,
                                                                                       host_flag):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "VL2V", "dataset": "DemoDigits", "test_envs": [[0]],
                                          "steps": 150, "checkpoint_freq": 50, "hparams": {"batch_size": 8}}}))
    out, log_path, port = tmp_path / "OUT", tmp_path / "sweep.log", free_port()
    sweep = start(["sweep", "--space", space, "--output-dir", out, "--num-cpus", "2", "--dashboard-port", port,
                   *host_flag], log_path, {"RAY_TMPDIR": ray_root})
    try:
        line = wait_for(lambda: re.search(r"dashboard: http://(\S+):(\d+)\s+\((.*)\)", log_path.read_text()),
                        120, "the dashboard line")
        assert int(line.group(2)) == port and "sign in with the token in" in line.group(3)
        if not host_flag:  # with 0.0.0.0 Ray prints the node's address
            assert line.group(1) == "127.0.0.1"
        assert listening_addresses(port) == {"0.0.0.0" if host_flag else "127.0.0.1"}
        url = f"http://127.0.0.1:{port}/api/v0/actors?limit=10"
        token = ray_token()
        assert status_of(url, None) in (401, 403)
        assert status_of(url, "not-" + token) in (401, 403)
        assert status_of(url, token) == 200  # the refusals above are the token check, not a broken server
        assert sweep.wait(timeout=240) == 0, log_path.read_text()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)
            sweep.wait()
    assert not wait_until_gone(ray_root, 20)[1]
    assert (next(out.glob("runs/*")) / "done").exists()
    secret = token.encode()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10 and any("ray_results" in str(p) for p in files)
    leaks = [str(p) for p in files + [log_path] if secret in p.read_bytes()]
    assert not leaks, f"the Ray token is written in {leaks}"
