"""Shared test set-up: one cache folder (tiny models, DemoDigits) for the whole session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Set before anything builds a model, so subprocesses inherit it too.
os.environ.setdefault("DDG_SWEEP_CACHE", str(Path(tempfile.gettempdir()) / "ddg_sweep_test_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
# DomainBed's own test sweep, copied into the repository (tests/fixtures/domainbed_test_sweep/README.md).
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


def unet_failing_above(algorithm, max_samples: int) -> list[int]:
    """Make a DDG algorithm's UNet raise CUDA's out-of-memory error for calls above `max_samples`
    samples; returns the list the call sizes are appended to."""
    import torch

    predict_noise = algorithm.sd_teacher.predict_noise
    calls = []

    def limited(x_t, t, tokens):
        calls.append(len(x_t))
        if len(x_t) > max_samples:
            raise torch.OutOfMemoryError(f"fake: {len(x_t)} samples")
        return predict_noise(x_t, t, tokens)

    object.__setattr__(algorithm.sd_teacher, "predict_noise", limited)
    return calls


def mounted_tmpfs(mount_point: Path, size: str):
    """Fixture body: a tmpfs of `size` at `mount_point` (skips where mounting needs root we lack)."""
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def default_sigint():
    """preexec_fn for a CLI the test interrupts: a pytest-xdist worker ignores SIGINT, and a child
    inherits an ignored SIGINT (Python then installs no KeyboardInterrupt handler); this gives it
    the default a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cli():
    return run_cli


# Modules whose tests share one expensive module-scoped fixture (a teacher evaluation, a running
# sweep): all on one xdist worker, so it is built once. The other tests, those that start a Ray
# cluster of their own included (each with its own temp folder and ports), go wherever a worker is free.
SHARED_FIXTURE_MODULES = {"test_tiny_teachers", "test_dashboard", "test_tracking", "test_ddg_algorithm",
                          "test_ddg_teachers", "test_search_report"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


def pytest_configure(config):
    # each xdist worker gets its share of the cores, so two workers do not fight over every core
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

