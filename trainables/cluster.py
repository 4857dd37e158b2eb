"""The Ray cluster of a sweep: what each trial gets, connecting (and the auth token), cleanup.

- `SweepOptions`: the Ray flags of `sweep` and `full-benchmark`.
- `trial_resources`: {"cpu": k, "gpu": g} per trial; requests no node can satisfy are refused.
- `connect`: attach to --address or start a local cluster, with Ray's token auth said explicitly
  (`token_hint`: where the dashboard's token is, never the token).
- `locked`: one sweep at a time per OUT; first, `stop_leftover_cluster` kills what the local
  cluster of a killed predecessor left (OUT/ray_local.json names its Ray session).
- `ray_cluster`: the cluster for one call, from local assets built to the cluster stopped.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray

from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.io import atomic_write_json
from ddg_sweep.jobs import Job, read_json
from ddg_sweep.layout import SweepFolder
from ddg_sweep.lock import SweepLock, pid_alive
from ddg_sweep.trackers import TrackingOptions


@dataclass
class SweepOptions:
    address: str | None = None  # None: start a local cluster; "auto" or "host:port" or "ray://host:port"
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_trial: int | None = None  # None: 1 on CPU-only clusters, else CPUs per GPU (at most 8)
    max_concurrent: int | None = None
    max_failures: int = 2
    retry_failed: bool = False
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    num_cpus: int | None = None  # CPUs of a local cluster (default: all)
    reuse_workers: bool | None = None  # None: reuse Tune's actors when every job is tiny (imports dominate)
    tracking: TrackingOptions = TrackingOptions()  # --tracker: TensorBoard, MLflow, W&B


def local_gpu_count() -> int:
    """GPUs Ray would find on this machine, without starting Ray."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    except Exception:  # private API moved: ask CUDA_VISIBLE_DEVICES, then no GPU
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return len([d for d in visible.split(",") if d.strip()]) if visible else 0


def trial_resources(options: SweepOptions, node_cpus: list[float], node_gpus: list[float]) -> dict:
    """{"cpu": k, "gpu": g} per trial; refuses requests no node can ever satisfy (Ray would wait forever)."""
    total_gpus = sum(node_gpus)
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else (1 if total_gpus else 0)
    if gpus < 0:
        raise UserError(f"--gpus-per-trial must be >= 0, got {gpus}")
    if gpus and not total_gpus:
        raise UserError(f"--gpus-per-trial {gpus:g} asks for GPUs but the Ray cluster has none; pass "
                        "--gpus-per-trial 0 to train on CPUs, or attach to a GPU cluster with --address")
    if gpus and max(node_gpus) < gpus:
        raise UserError(f"--gpus-per-trial {gpus:g} is more than any node has (at most {max(node_gpus):g})")
    cpus = options.cpus_per_trial
    if cpus is None:
        cpus = 1 if not gpus else max(1, min(8, int(sum(node_cpus) // max(total_gpus, 1))))
    if cpus <= 0:
        raise UserError(f"--cpus-per-trial must be > 0, got {cpus}")
    if max(node_cpus, default=0) < cpus:
        raise UserError(f"--cpus-per-trial {cpus} is more than any node has "
                        f"(at most {max(node_cpus, default=0):g}); pass a smaller --cpus-per-trial")
    return {"cpu": cpus, "gpu": gpus} if gpus else {"cpu": cpus}


def check_reachable(address: str) -> None:
    if address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}; "
                        "check --address (the head's `ray start --head` prints it)") from None


def connect(options: SweepOptions) -> tuple[bool, object]:
    """(started_here, ray context): attach to --address, or start a local cluster."""
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if options.address:
        check_reachable(options.address)
        if "RAY_AUTH_MODE" not in os.environ and _token_available():
            _set_token_mode()  # present the token we have (Ray's own rule for `ray.init()`), silently
        try:
            return False, ray.init(address=options.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot attach to the Ray cluster at {options.address}: {first} (a cluster with "
                            "token auth needs its token here: ~/.ray/auth_token or $RAY_AUTH_TOKEN)") from None
    dashboard = {"include_dashboard": options.dashboard}
    if options.dashboard:
        dashboard["dashboard_host"] = options.dashboard_host
        if options.dashboard_port:
            dashboard["dashboard_port"] = options.dashboard_port
    if "RAY_AUTH_MODE" not in os.environ:
        _set_token_mode()  # Ray's default for a new local cluster, said explicitly
    return True, ray.init(address="local", num_cpus=options.num_cpus or os.cpu_count(), **dashboard, **quiet)


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").exists()


def _set_token_mode() -> None:
    """Token auth on for this process and its children, set explicitly: left unset, Ray turns it on
    all the same but prints advice to set RAY_AUTH_MODE=disabled, which ddg-sweep never follows."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()  # the environment variable, and Ray's cached config refreshed
    except Exception:  # private API moved: the environment variable alone, read by ray.init
        os.environ["RAY_AUTH_MODE"] = "token"


def token_hint() -> str:
    """Where the dashboard's token is; never the token itself."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        if not is_token_auth_enabled():
            return "token auth is off on this cluster"
    except Exception:
        pass
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "sign in with the token in $RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return f"sign in with the token in {path} (or print it with `ray get-auth-token`)"


def dashboard_line(context) -> str | None:
    url = getattr(context, "dashboard_url", None)
    if not url:
        return None
    url = url if url.startswith("http") else f"http://{url}"
    return f"dashboard: {url}  ({token_hint()})"


def build_local_assets(jobs: list[Job], say: Callable[[str], None]) -> None:
    """Check the tiny models are there and generate DemoDigits once here, not in every trial at once."""
    tiny = {(job.algorithm, job.hparams["backbone"]): job for job in jobs if job.hparams.get("models") == "tiny"}
    builtin = any(get_dataset_spec(job.dataset).builtin for job in jobs)
    if not tiny and not builtin:
        return
    from ddg_sweep.data.demo_digits import demo_data_dir
    from ddg_sweep.models.paths import resolve_model_paths

    for job in tiny.values():
        resolve_model_paths(job.algorithm, job.hparams)  # a one-line error if the shipped weights are missing
    if builtin:
        began = time.time()
        say("preparing DemoDigits (generated once into the cache, then reused)")
        demo_data_dir()
        say(f"DemoDigits ready in {time.time() - began:.1f} s")


@contextmanager
def locked(out: Path, say: Callable[[str], None]):
    """One sweep at a time in OUT; what a killed predecessor's local cluster left is stopped first."""
    with SweepLock(out) as lock:
        if lock.took_over:
            say(f"took over the lock of a sweep that is gone (host {lock.took_over.get('host')}, pid "
                f"{lock.took_over.get('pid')})")
        stop_leftover_cluster(out, say)
        yield


LOCAL_CLUSTER_FILE = SweepFolder.LOCAL_CLUSTER  # the local cluster this folder's sweep started, until it stops it


def _session_processes(session_dir: str) -> list[int]:
    """Pids of this host's processes that name the Ray session folder or hold a file in it open."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if session_dir in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
                continue
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(session_dir):
                    pids.append(int(proc.name))
                    break
        except OSError:  # gone, or not ours to inspect
            continue
    return pids


def stop_leftover_cluster(out: Path, say: Callable[[str], None]) -> None:
    """Kill what is left of the local cluster of a sweep into `out` that was killed itself.

    A SIGKILLed driver cannot stop its cluster; Ray's agents (and, for a while, trial
    workers still writing into job folders) outlive it. Only processes of that Ray
    session, on this host, once its driver is dead, are touched.
    """
    record = read_json(out / LOCAL_CLUSTER_FILE)
    if not record or record.get("host") != socket.gethostname() or not record.get("session_dir"):
        return
    if not pid_alive(int(record.get("pid", -1))) and Path("/proc").is_dir():
        pids = _session_processes(record["session_dir"])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if pids:
            say(f"stopped {len(pids)} leftover process(es) of the Ray cluster of the killed sweep "
                f"(pid {record['pid']})")
    (out / LOCAL_CLUSTER_FILE).unlink(missing_ok=True)


@contextmanager
def ray_cluster(out: Path, options: SweepOptions, jobs: list[Job], say: Callable[[str], None]):
    """Build local assets, connect (recording a local cluster in OUT), yield each trial's resources;
    at the end stop the cluster started here (only disconnect from an attached one)."""
    if not options.address or options.address == "auto":
        build_local_assets(jobs, say)
    started, context = connect(options)
    try:
        if started:
            atomic_write_json(out / LOCAL_CLUSTER_FILE, {"host": socket.gethostname(), "pid": os.getpid(),
                                                         "session_dir": context.address_info["session_dir"]})
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        resources = trial_resources(options, [n["Resources"].get("CPU", 0) for n in nodes],
                                    [n["Resources"].get("GPU", 0) for n in nodes])
        say(f"ray: {'started a local cluster' if started else 'attached to ' + options.address}, "
            f"{len(nodes)} node(s); each trial gets {resources}")
        line = dashboard_line(context)
        if line:
            say(line)
        yield resources
    finally:
        ray.shutdown()  # stops the local cluster we started; only disconnects from an attached one
        (out / LOCAL_CLUSTER_FILE).unlink(missing_ok=True)


