"""Shared test set-up: one cache folder (tiny models, DemoDigits) for the whole session, the
fixtures every module may use, and which modules share a worker. Helpers: tests/helpers/."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from helpers.cluster import ensure_auth_token, head_node
from helpers.processes import ray_root  # noqa: F401  (a fixture)

# Set before anything builds a model, so subprocesses inherit it too.
os.environ.setdefault("DDG_SWEEP_CACHE", str(Path(tempfile.gettempdir()) / "ddg_sweep_test_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Modules whose tests share one expensive module-scoped fixture (a teacher evaluation, a running
# sweep): all on one xdist worker, so it is built once. The other tests, those that start a Ray
# cluster of their own included (each with its own temp folder and ports), go wherever a worker is free.
SHARED_FIXTURE_MODULES = {"test_tiny_teachers", "test_dashboard", "test_tracking", "test_ddg_algorithm",
                          "test_ddg_teachers", "test_search_report"}


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One Ray cluster per xdist worker (2 CPUs, no dashboard) that sweep tests attach to with
    --address: one cluster start per worker instead of one per sweep. Tests of a cluster's own
    start and stop, its dashboard, node loss or a killed driver start their own."""
    yield from head_node(tmp_path_factory.mktemp("ray_head") / "head.log")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, before any xdist worker starts
        ensure_auth_token()
    # each xdist worker gets its share of the cores, so two workers do not fight over every core
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

