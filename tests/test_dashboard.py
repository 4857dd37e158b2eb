"""The Ray dashboard of a running sweep: its page, token auth, trials named by their job.

Two tests share one running sweep. The first runs everywhere: the dashboard serves its
page, its API refuses without the token and accepts with it, and lists every trial as
class `DDGTrial` with a repr naming the job. The second looks at the Actors page in a
real browser and needs Debian's `chromium` (`apt-get install -y chromium`; skipped
without it, as the README says). Chromium cannot send the dashboard's bearer token by
itself, so that test puts a small local proxy in front of the dashboard that adds the
`Authorization` header; the token is read from where the sweep said it is and never
written anywhere.
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
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.cli import REPO, default_sigint
from helpers.processes import ray_pids

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
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


@pytest.fixture(scope="module")
def running_sweep(tmp_path_factory):
    """A sweep of two long ERM jobs with its dashboard, running while the module's tests look at it."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    ray_tmp = tempfile.mkdtemp(prefix="ddgd", dir="/tmp")  # short: Ray's socket paths
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": 3000, "checkpoint_freq": 100, "hparams": {"batch_size": 8}}}))
    out, log_path, port = tmp_path / "out", tmp_path / "sweep.log", free_port()
    with open(log_path, "w") as log:
        sweep = subprocess.Popen([sys.executable, "-m", "ddg_sweep.run", "sweep", "--space", str(space),
                                  "--output-dir", str(out), "--dashboard-port", str(port), "--num-cpus", "2"],
                                 cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "RAY_TMPDIR": ray_tmp}, preexec_fn=default_sigint)
    try:
        line = wait_for(lambda: re.search(r"dashboard: (http://\S+)\s+\(sign in with the token in (\S+)",
                                          log_path.read_text()), 180, "the dashboard line")
        dashboard, token_file = line.group(1), line.group(2)
        assert dashboard == f"http://127.0.0.1:{port}"

        def trials():
            nodes = [json.loads(p.read_text()) for p in out.glob("runs/*/node.json")]
            return {n["pid"]: n["job_id"] for n in nodes} if len(nodes) == 2 else None

        yield {"url": dashboard, "token": Path(token_file).read_text().strip(), "out": out, "log": log_path,
               "trials": wait_for(trials, 180, "both trials to start")}
    finally:
        sweep.send_signal(signal.SIGINT)  # the sweep stops Tune and the local cluster it started
        try:
            sweep.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
        for pid in ray_pids(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def job_labels(out: Path) -> dict:
    """job_id -> the repr a trial of that job should have, from the sweep's jobs.json."""
    return {j["job_id"]: f"{j['algorithm']} {j['dataset']} test_envs=[{','.join(map(str, j['test_envs']))}] "
                         f"trial {j['trial_seed']} hp {j['hparams_seed']} job {j['job_id']}"
            for j in json.loads((out / "jobs.json").read_text())["jobs"]}


def test_dashboard_serves_its_page_needs_the_token_and_names_each_trial(running_sweep):
    """The browser-free check of the dashboard's promise; runs everywhere."""
    url, token = running_sweep["url"], running_sweep["token"]
    status, page = get(url + "/")
    assert status == 200 and b"<title>Ray Dashboard</title>" in page
    for bad in (None, "not-" + token):  # token auth stays on
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(f"{url}/api/v0/actors", bad)
        assert refused.value.code in (401, 403)
    status, body = get(f"{url}/api/v0/actors?detail=true&limit=100", token)
    assert status == 200
    alive = {a["pid"]: a for a in json.loads(body)["data"]["result"]["result"] if a["state"] == "ALIVE"}
    labels = job_labels(running_sweep["out"])
    for pid, job_id in running_sweep["trials"].items():
        assert alive[pid]["class_name"] == "DDGTrial", alive[pid]
        assert alive[pid]["repr_name"] == labels[job_id], (alive[pid]["repr_name"], labels[job_id])
    log = running_sweep["log"].read_text()
    assert "RAY_AUTH_MODE=disabled" not in log and "opt out" not in log  # no advice to turn auth off
    assert token not in log


def grafana_metrics() -> set[str]:
    panels = json.loads((REPO / "deploy" / "grafana-ddg-sweep.json").read_text())["panels"]
    return {name for panel in panels for target in panel["targets"]
            for name in re.findall(r"\b(ray_ddg_sweep_\w+)\{", target["expr"])}


def test_the_grafana_dashboards_metrics_are_what_the_running_trials_export(running_sweep):
    """Each panel of deploy/grafana-ddg-sweep.json queries a series the nodes' /metrics really serve,
    once per running job."""
    _, summary = get(running_sweep["url"] + "/nodes?view=summary", running_sweep["token"])
    ports = set(re.findall(r'"metricsExportPort": (\d+)', summary.decode()))
    assert ports
    wanted = grafana_metrics()
    assert len(wanted) == 5

    def exported():
        text = "".join(get(f"http://127.0.0.1:{port}/metrics")[1].decode() for port in ports)
        series = {(name, job) for name, job in re.findall(r'^(ray_ddg_sweep_\w+)\{[^}]*job_id="(\w+)"', text, re.M)}
        return all((name, job) in series for name in wanted for job in running_sweep["trials"].values())

    wait_for(exported, 90, "every gauge of the Grafana dashboard for both jobs on /metrics")


@needs_chromium
def test_dashboard_actors_page_in_a_real_browser_names_each_trial(running_sweep, tmp_path):
    proxy = start_token_proxy(running_sweep["url"], running_sweep["token"])
    try:
        page = f"http://127.0.0.1:{proxy.server_address[1]}/#/actors"
        shot = tmp_path / "dashboard.png"
        chromium(page, tmp_path / "profile", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000
        dom = chromium(page, tmp_path / "profile2", "--dump-dom").stdout
        assert "DDGTrial" in dom and all(str(pid) in dom for pid in running_sweep["trials"])
        labels = job_labels(running_sweep["out"])
        assert all(labels[job_id] in dom for job_id in running_sweep["trials"].values()), dom[-3000:]
        keep = os.environ.get("DDG_SWEEP_SCREENSHOT_DIR")
        if keep:
            shutil.copy(shot, Path(keep) / "dashboard.png")
    finally:
        proxy.shutdown()
