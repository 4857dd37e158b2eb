"""The Ray Tune driver: run a list of jobs, one trial each, on a local or an existing cluster.

The job folders are the truth, not Tune's experiment state: done jobs are
filtered out before Tune starts (so nothing finished is ever rerun), partial
ones resume from their checkpoint.pt, and Tune's own storage is a fresh
experiment under OUT/ray_results on every call (never restored).
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
from ray import tune

from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.io import atomic_write_json
from ddg_sweep.jobs import ERROR_FILE, Job, build_plan, job_dir, read_json, validate_job, write_manifest
from ddg_sweep.lock import SweepLock, pid_alive
from ddg_sweep.trackers import TrackingOptions

FORWARDED_ENV = ("DDG_SWEEP_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME")
FAULT_ENV = "DDG_SWEEP_FAULT_AFTER_STEP"  # tests only: every trial raises once after this step


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


def check_data(jobs: list[Job], locations: dict) -> None:
    data_dir = locations.get("data_dir")
    for dataset in sorted({j.dataset for j in jobs}):
        spec = get_dataset_spec(dataset)
        if not spec.builtin and data_dir and not (Path(data_dir) / spec.folder).is_dir():
            raise UserError(f"{Path(data_dir) / spec.folder} does not exist: --data-dir must hold "
                            f"the {dataset} folder {spec.folder}/")


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


def _check_reachable(address: str) -> None:
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
        _check_reachable(options.address)
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


class ProgressLines(tune.Callback):
    """One concise line per checkpoint, completion, retry and failure."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.finished, self.say = total, 0, say

    def _name(self, trial) -> str:
        return trial_payload(trial)["label"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "held_out_acc" in result:
            self.say(f"  {self._name(trial)}: step {result['step']}/{result['steps']}, held-out "
                     f"{result['held_out_acc']:.3f}, val {result['val_acc']:.3f}, "
                     f"{result['images_per_s']:.0f} img/s")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        self.say(f"[{self.finished}/{self.total}] done {self._name(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.say(f"  retrying {self._name(trial)} from its checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        self.say(f"[{self.finished}/{self.total}] FAILED {self._name(trial)}")


def trial_payload(trial) -> dict:
    """What a trial runs: one job (`config["job"]`) or a search trial (`config["trial"]`)."""
    return trial.config.get("job") or trial.config["trial"]


def trial_name(trial) -> str:
    return trial_payload(trial)["name"]


def job_payload(job: Job, config, resources: dict) -> dict:
    payload = {"job_id": job.job_id, "name": job.job_id, "label": job.describe(), "run_config": config.to_json(),
               "threads": int(resources["cpu"]),
               "env": {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}}
    if os.environ.get(FAULT_ENV):
        payload["fault_after_step"] = int(os.environ[FAULT_ENV])
    return payload


@dataclass
class SweepResult:
    ran: int
    done: int
    failed: list[str]  # "job_id: message"
    skipped_failed: int


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


def run_sweep(jobs: list[Job], output_dir, locations: dict, options: SweepOptions,
              say: Callable[[str], None] = print) -> SweepResult:
    """Run every job not yet done; one sweep at a time per output folder (SweepLock)."""
    out = Path(output_dir).resolve()
    configs = preflight(jobs, out, locations, options)
    with locked(out, say):
        return _run_sweep_locked(jobs, out, configs, options, say)


def preflight(jobs: list[Job], out: Path, locations: dict, options: SweepOptions) -> dict:
    """Every check before OUT is created (configurations, data, address or means): {job_id: RunConfig}."""
    configs = {job.job_id: validate_job(job, out, locations, need_data=True) for job in jobs}
    check_data(jobs, locations)
    if options.address:
        _check_reachable(options.address)
    else:  # refuse impossible requests before starting anything
        trial_resources(options, [float(options.num_cpus or os.cpu_count())], [float(local_gpu_count())])
    return configs


@contextmanager
def locked(out: Path, say: Callable[[str], None]):
    """One sweep at a time in OUT; what a killed predecessor's local cluster left is stopped first."""
    with SweepLock(out) as lock:
        if lock.took_over:
            say(f"took over the lock of a sweep that is gone (host {lock.took_over.get('host')}, pid "
                f"{lock.took_over.get('pid')})")
        stop_leftover_cluster(out, say)
        yield


LOCAL_CLUSTER_FILE = "ray_local.json"  # the local cluster this folder's sweep started, until it stops it


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


def _run_sweep_locked(jobs: list[Job], out: Path, configs: dict, options: SweepOptions,
                      say: Callable[[str], None]) -> SweepResult:
    plan = build_plan(jobs, out)
    to_run = plan.to_run(options.retry_failed)
    skipped_failed = 0 if options.retry_failed else sum(1 for s in plan.states.values() if s == "failed")
    counts = plan.counts()["total"]
    say(f"{len(jobs)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in counts if s != "total")
        + f"; {len(to_run)} jobs to run"
        + (f" ({skipped_failed} failed skipped: pass --retry-failed to rerun them)" if skipped_failed else ""))
    if not to_run:
        write_manifest(out, jobs)
        return SweepResult(0, counts.get("done", 0), [], skipped_failed)
    write_manifest(out, jobs)
    with ray_cluster(out, options, to_run, say) as resources:
        _fit(to_run, configs, resources, out, options, say)
    final = build_plan(jobs, out)
    failed = [f"{j.job_id}: {(read_json(job_dir(out, j) / ERROR_FILE) or {}).get('error', 'unknown error')}"
              for j in to_run if final.states[j.job_id] != "done"]
    done = sum(1 for s in final.states.values() if s == "done")
    say(f"sweep finished: {done}/{len(jobs)} jobs done" + (f", {len(failed)} failed" if failed else ""))
    for line in failed:
        say(f"  failed {line}")
    return SweepResult(len(to_run), done, failed, skipped_failed)


def fit_saying(tuner, starting: str, say: Callable[[str], None], interrupted: str) -> None:
    """`tuner.fit()` between a starting line and its duration; on Ctrl-C, say how to resume, then re-raise."""
    started = time.time()
    say(starting)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        say(interrupted)
        raise
    say(f"tune finished in {time.time() - started:.0f} s")


def _fit(to_run: list[Job], configs: dict, resources: dict, out: Path, options: SweepOptions,
         say: Callable[[str], None]) -> None:
    from trainables import DDGTrial

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C is a KeyboardInterrupt here (below), not Tune's graceful stop that returns as if the
    # sweep had ended and would report its unfinished jobs as failed.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    trackers = []
    if options.tracking.trackers:
        from trainables.tracking import tracker_callbacks

        trackers = tracker_callbacks(options.tracking, out, name, say)
    payloads = [job_payload(job, configs[job.job_id], resources) for job in to_run]
    reuse = options.reuse_workers
    if reuse is None:  # a tiny job trains in seconds; a fresh worker spends ~9 s importing first
        reuse = all(job.hparams.get("models") == "tiny" for job in to_run)
    trainable = tune.with_resources(DDGTrial, resources)
    trainable.__name__ = trainable.__qualname__ = "DDGTrial"  # the class the dashboard's Actors page lists
    tuner = tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search(payloads)},
        tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent, reuse_actors=reuse,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out / "ray_results"), verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            callbacks=[ProgressLines(len(to_run), say), *trackers],
        ),
    )
    fit_saying(tuner, f"running {len(to_run)} jobs ...", say,
               "interrupted: run the same command again; done jobs are kept, partial ones resume from their "
               "checkpoint (ignore Tune's Tuner.restore hint: the job folders are the state)")
