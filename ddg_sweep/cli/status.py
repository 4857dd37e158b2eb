"""`status`: a sweep folder's jobs by state, the running ones with ETAs, one job's log; and the
words `plan` and `status` say their estimate in.

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
    add_concurrency_flag(status)
    status.set_defaults(func=run_status)


def add_concurrency_flag(parser) -> None:
    parser.add_argument("--max-concurrent", type=int, metavar="N",
                        help="jobs at once, for the wall-time estimate (default: one per CPU when every job "
                             "left uses the tiny models, as a local cluster runs them; else 1, one GPU)")


def check_concurrency(args) -> None:
    if args.max_concurrent is not None and args.max_concurrent <= 0:
        raise UserError(f"--max-concurrent must be > 0, got {args.max_concurrent}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _hours(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.2f}" if hours >= 0.01 else f"{hours:.4f}"


def describe(estimate) -> list[str]:
    """Three lines: GPU-hours by part, wall time and what it assumes, which figures it used
    (an ddg_sweep.estimate.Estimate: `plan`, `plan --search` and `status` print the same)."""
    if not estimate.wall_seconds:
        return ["estimated GPU-hours left: 0.0, nothing left to train"]
    lines = [f"estimated GPU-hours left: {_hours(estimate.gpu_hours)} (training {_hours(estimate.part('train') / 3600)}, "
             f"evaluation {_hours(estimate.part('evaluation') / 3600)}, startup {_hours(estimate.startup_seconds / 3600)})"]
    if estimate.concurrency_given:
        why = "--max-concurrent"
    elif estimate.families() == {"tiny"}:
        why = "one per CPU, as a local cluster runs tiny jobs; --max-concurrent N to change"
    else:
        why = "one GPU; --max-concurrent N for N GPUs"
    lines.append(f"estimated wall time left: {_duration(estimate.wall_seconds)} with {estimate.concurrency} "
                 f"job(s) at once ({why}), including {estimate.launch:.0f} s to start and stop a local Ray cluster"
                 + (" (measured)" if estimate.measured.launch is not None else ""))
    lines.append("figures: " + "; ".join(_measured_words(estimate) + _constant_words(estimate)))
    return lines


def _measured_words(estimate) -> list[str]:
    names = estimate.figures("measured")
    if not names:
        return []
    m = estimate.measured
    words = {"steps": "step times", "evaluation": "evaluation images/s", "startup": "startup per run and worker"}
    return [f"measured in this folder ({m.records} records, {m.runs} runs finished in one attempt): "
            + ", ".join(words[n] for n in names)]


def _constant_words(estimate) -> list[str]:
    from ddg_sweep.estimate import (EVAL_IMAGES_PER_S, PAPER_CARD, STARTUP_SECONDS, STEP_SECONDS,
                                    WORKER_START_SECONDS)

    names = estimate.figures("constants")
    if not names:
        return []
    families = estimate.families()
    words = []
    if "paper" in families:
        ddg = STEP_SECONDS["paper"]["DDG"]
        parts = []
        if "steps" in names:
            parts.append(f"step times measured on {PAPER_CARD} at the paper's settings (DDG Stage I {ddg['align']} s, "
                         f"Stage II {ddg['diffusion']} s per step; ERM and VL2V estimated from the same passes)")
        if "evaluation" in names:
            parts.append(f"evaluation {EVAL_IMAGES_PER_S['paper']:,.0f} images/s")
        if "startup" in names:
            parts.append(f"startup {STARTUP_SECONDS['paper']:.0f} s per run + {WORKER_START_SECONDS['paper']:.0f} s "
                         "per worker")
        estimated = " and ".join(n for n in ("evaluation", "startup") if n in names)
        words.append("constants: " + "; ".join(parts) + (f" ({estimated}: estimates for {PAPER_CARD}, not measured)"
                                                          if estimated else "") + " (docs/performance.md)")
    if "tiny" in families:
        tiny = {"steps": "the step times of a narrowed demo sweep",
                "evaluation": f"{EVAL_IMAGES_PER_S['tiny']:,.0f} images/s",
                "startup": f"startup {STARTUP_SECONDS['tiny']:.0f} s per run + {WORKER_START_SECONDS['tiny']:.0f} s "
                           "per worker"}
        words.append("constants for the tiny models: " + ", ".join(tiny[n] for n in names)
                     + ", measured on one CPU core each of a shared 2-core machine (docs/performance.md)")
    return words


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
    from ddg_sweep.jobs import job_dir, last_record, node_of, read_json
    from ddg_sweep.layout import RunFolder

    folder = job_dir(out, job)
    files = RunFolder(folder)
    state = plan.states[job.job_id]
    record = last_record(folder)
    error = read_json(files.error) if state == "failed" else None
    log = _tail(files.log, args.lines) if args.log else None
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
        print(f"--- last {len(log)} line(s) of {files.log}" if log else
              f"--- {files.log}: nothing logged yet")
        for line in log:
            print(line)
    if error is not None:
        print(f"--- {files.error}")
        print(json.dumps(error, indent=1))
    return 0


def run_status(args) -> int:
    from ddg_sweep.estimate import estimate
    from ddg_sweep.jobs import STATES, build_plan, job_dir, log_progress, read_manifest, steps_left

    out = Path(args.output_dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a sweep folder (it does not exist)")
    if args.log and not args.job:
        raise UserError("--log shows one job's log: pass --job ID as well")
    if args.lines <= 0:
        raise UserError(f"--lines must be > 0, got {args.lines}")
    check_concurrency(args)
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
    cost = estimate(steps_left(plan, out), out, args.max_concurrent)
    if args.format == "json":
        print(json.dumps({"counts": counts, "running": running, "gpu_hours_left": round(cost.gpu_hours, 3),
                          "estimate": cost.to_json()}))
        return 0
    print(f"{'dataset':14} " + " ".join(f"{s:>8}" for s in STATES) + f" {'total':>8}")
    for name, c in list(counts["by_dataset"].items()) + [("all", counts["total"])]:
        print(f"{name:14} " + " ".join(f"{c.get(s, 0):>8}" for s in STATES) + f" {c['total']:>8}")
    for r in running:
        eta = f"ETA {r['eta_s'] // 60}m{r['eta_s'] % 60:02d}s" if r["eta_s"] is not None else "ETA unknown"
        print(f"running {r['job']}: step {r['step']}/{r['steps']}, {eta}")
    print("\n".join(describe(cost)))
    return 0
