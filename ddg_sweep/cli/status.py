"""`status`: a sweep folder's jobs by state, the running ones with ETAs, one job's log.

Reads the job folders alone; imports neither torch nor Ray.
"""
from __future__ import annotations

import json
from pathlib import Path

from ddg_sweep.errors import UserError

LOG_LINES = 20


def register(subparsers) -> None:
    status = subparsers.add_parser("status", help="done/running/failed/pending jobs of a sweep folder",
                                   description="Summarise a sweep folder: states per dataset, running jobs; "
                                               "with --job, one job; with --log, its train.log's last lines "
                                               "and, if it failed, its error.json.")
    status.add_argument("output_dir", metavar="OUT", help="the sweep folder")
    status.add_argument("--format", choices=("text", "json"), default="text", help="text or json (default text)")
    status.add_argument("--job", metavar="ID", help="one job: its id or a unique prefix of it "
                                                    "(ids: `plan ... --output-dir OUT` or `status OUT --format json`)")
    status.add_argument("--log", action="store_true", help="with --job: the last lines of its train.log, "
                                                           "and its error.json if it failed")
    status.add_argument("--lines", type=int, default=LOG_LINES, help=f"with --log: how many (default {LOG_LINES})")
    status.set_defaults(func=run_status)


def estimate_basis(plan) -> str:
    """What the GPU-hour estimate is based on, in words."""
    from ddg_sweep.jobs import STEP_SECONDS, STEP_SECONDS_CARD, STEP_SECONDS_TINY

    if plan.gpu_hours_source == "nothing left":
        return "nothing left to train"
    parts = []
    if "measured" in plan.gpu_hours_source:
        parts.append("the step times measured in this folder's results.jsonl")
    if "constants" in plan.gpu_hours_source:
        tiny = any(job.hparams.get("models") == "tiny" for job in plan.jobs)
        paper = any(job.hparams.get("models") != "tiny" for job in plan.jobs)
        if paper:
            ddg = STEP_SECONDS["DDG"]
            parts.append(f"step times measured on {STEP_SECONDS_CARD} at the paper's settings (DDG Stage I "
                         f"{ddg['align']} s, Stage II {ddg['diffusion']} s per step; docs/performance.md), "
                         "ERM and VL2V estimated from the same student and CLIP passes")
        if tiny:
            parts.append(f"about {STEP_SECONDS_TINY} s per step for the tiny models on one CPU core")
    return "based on " + "; where nothing is measured yet, ".join(parts)


def _find_job(jobs, wanted: str, out: Path):
    matches = [job for job in jobs if job.job_id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no job {wanted!r} in {out}; its job ids are listed by `status {out} --format json` "
                        "(running ones) and `plan ... --output-dir " + str(out) + "`")
    raise UserError(f"--job {wanted!r} matches {len(matches)} jobs in {out} "
                    f"({', '.join(j.job_id for j in matches[:3])}, ...); give more of its id")


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def show_job(out: Path, job, plan, args) -> int:
    from ddg_sweep.jobs import ERROR_FILE, job_dir, last_record, node_of, read_json

    folder = job_dir(out, job)
    state = plan.states[job.job_id]
    record = last_record(folder)
    error = read_json(folder / ERROR_FILE) if state == "failed" else None
    log = _tail(folder / "train.log", args.lines) if args.log else None
    if args.format == "json":
        print(json.dumps({"job": job.to_json(), "state": state, "folder": str(folder),
                          "last_step": record.get("step") if record else None, "node": node_of(folder),
                          "error": error, "log": log}))
        return 0
    print(f"{job.describe()}: {state}")
    print(f"  folder {folder}")
    if record:
        print(f"  last record: step {record.get('step')} of {job.steps}")
    node = node_of(folder)
    if node:
        print(f"  node {node.get('hostname')} ({node.get('node_ip')}), pid {node.get('pid')}, "
              f"attempt {node.get('attempt')}")
    if log is not None:
        print(f"--- last {len(log)} line(s) of {folder / 'train.log'}" if log else
              f"--- {folder / 'train.log'}: nothing logged yet")
        for line in log:
            print(line)
    if error is not None:
        print(f"--- {folder / ERROR_FILE}")
        print(json.dumps(error, indent=1))
    return 0


def run_status(args) -> int:
    from ddg_sweep.jobs import STATES, build_plan, job_dir, log_progress, read_manifest

    out = Path(args.output_dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a sweep folder (it does not exist)")
    if args.log and not args.job:
        raise UserError("--log shows one job's log: pass --job ID as well")
    if args.lines <= 0:
        raise UserError(f"--lines must be > 0, got {args.lines}")
    jobs = read_manifest(out)
    if not jobs:
        raise UserError(f"{out} holds no jobs (no jobs.json, no runs/*/config.json); run `sweep` first")
    plan = build_plan(jobs, out, detect_running=True)
    if args.job:
        return show_job(out, _find_job(jobs, args.job, out), plan, args)
    running = []
    for job in jobs:
        if plan.states[job.job_id] != "running":
            continue
        step, rate = log_progress(job_dir(out, job))
        eta = (job.steps - 1 - step) / rate if step is not None and rate else None
        running.append({"job": job.describe(), "step": step, "steps": job.steps,
                        "eta_s": round(eta) if eta is not None else None})
    counts = plan.counts()
    if args.format == "json":
        print(json.dumps({"counts": counts, "running": running, "gpu_hours_left": round(plan.gpu_hours, 3)}))
        return 0
    print(f"{'dataset':14} " + " ".join(f"{s:>8}" for s in STATES) + f" {'total':>8}")
    for name, c in list(counts["by_dataset"].items()) + [("all", counts["total"])]:
        print(f"{name:14} " + " ".join(f"{c.get(s, 0):>8}" for s in STATES) + f" {c['total']:>8}")
    for r in running:
        eta = f"ETA {r['eta_s'] // 60}m{r['eta_s'] % 60:02d}s" if r["eta_s"] is not None else "ETA unknown"
        print(f"running {r['job']}: step {r['step']}/{r['steps']}, {eta}")
    print(f"estimated GPU-hours left: {plan.gpu_hours:.1f}, {estimate_basis(plan)}")
    return 0
