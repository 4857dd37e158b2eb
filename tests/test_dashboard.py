"""The Ray dashboard of a running sweep: token auth on, trials listed, a headless screenshot.

Needs Debian's `chromium` (`apt-get install -y chromium`). Chromium cannot send the
dashboard's bearer token by itself, so the test puts a small local proxy in front
of the dashboard that adds the `Authorization` header; the token is read from
where the sweep said it is and never written anywhere.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token=None, timeout=10):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def start_token_proxy(dashboard: str, token: str) -> ThreadingHTTPServer:
    """127.0.0.1:<port> -> the dashboard, adding the bearer token to every GET."""

    class Forward(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                request = urllib.request.Request(dashboard + self.path,
                                                 headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, body, kind = response.status, response.read(), response.headers.get("Content-Type")
            except urllib.error.HTTPError as err:
                status, body, kind = err.code, err.read(), err.headers.get("Content-Type")
            except OSError:
                status, body, kind = 502, b"", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium(url, profile, *extra, timeout=90):
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1600,1000",
         "--virtual-time-budget=15000", *extra, url],
        capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_dashboard_lists_the_running_trials(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": 1500, "checkpoint_freq": 100, "hparams": {"batch_size": 8}}}))
    out, log_path, port = tmp_path / "out", tmp_path / "sweep.log", free_port()
    with open(log_path, "w") as log:
        sweep = subprocess.Popen([sys.executable, "-m", "ddg_sweep.run", "sweep", "--space", str(space),
                                  "--output-dir", str(out), "--dashboard-port", str(port), "--num-cpus", "2"],
                                 cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = None
    try:
        line = wait_for(lambda: re.search(r"dashboard: (http://\S+)\s+\(sign in with the token in (\S+)",
                                          log_path.read_text()), 90, "the dashboard line")
        dashboard, token_file = line.group(1), line.group(2)
        assert dashboard == f"http://127.0.0.1:{port}"
        token = Path(token_file).read_text().strip()
        with pytest.raises(urllib.error.HTTPError) as refused:  # token auth stays on
            get(f"{dashboard}/api/v0/actors")
        assert refused.value.code in (401, 403)

        def trial_pids():
            nodes = [json.loads(p.read_text()) for p in out.glob("runs/*/node.json")]
            return {n["pid"] for n in nodes} if len(nodes) == 2 else None

        pids = wait_for(trial_pids, 120, "both trials to start")
        _, body = get(f"{dashboard}/api/v0/actors?detail=true&limit=100", token)
        actors = json.loads(body)["data"]["result"]["result"]
        alive = {a["pid"] for a in actors if a["class_name"] == "ImplicitFunc" and a["state"] == "ALIVE"}
        assert pids <= alive, (pids, alive)

        proxy = start_token_proxy(dashboard, token)
        page = f"http://127.0.0.1:{proxy.server_address[1]}/#/actors"
        shot = tmp_path / "dashboard.png"
        chromium(page, tmp_path / "profile", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000
        dom = chromium(page, tmp_path / "profile2", "--dump-dom").stdout
        assert "ImplicitFunc" in dom and all(str(pid) in dom for pid in pids)
        keep = os.environ.get("DDG_SWEEP_SCREENSHOT_DIR")
        if keep:
            shutil.copy(shot, Path(keep) / "dashboard.png")
        assert token not in log_path.read_text()
    finally:
        if proxy is not None:
            proxy.shutdown()
        sweep.send_signal(signal.SIGINT)  # the sweep stops Tune and the local cluster it started
        try:
            sweep.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
