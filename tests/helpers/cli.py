"""The CLI as a user calls it: a subprocess, its one-line errors, one in its own session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "domainbed_test_sweep"


def run_cli(*args, check=False, timeout=600, env=None, cwd=None) -> subprocess.CompletedProcess:
    """`python -m ddg_sweep.run ARGS` in a subprocess, as a user would call it."""
    proc = subprocess.run([sys.executable, "-m", "ddg_sweep.run", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr starting `error:`, no traceback, naming the fragments."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def default_sigint():
    """preexec_fn for a CLI the test interrupts: a pytest-xdist worker ignores SIGINT, and a child
    inherits an ignored SIGINT (Python then installs no KeyboardInterrupt handler); this gives it
    the default a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, log_path: Path, env: dict) -> subprocess.Popen:
    """The CLI in its own session (so one killpg reaches the driver and all it started)."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "ddg_sweep.run", *map(str, args)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env}, preexec_fn=default_sigint)
