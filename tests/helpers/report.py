"""The report commands in-process, and small hand-made run folders for them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddg_sweep.cli import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def call_report_cli(argv) -> int:
    """Like ddg_sweep.run.main, for the report commands only."""
    parser = argparse.ArgumentParser()
    report.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def write_run(root: Path, name: str, test_envs, hparams_seed, steps, trial_seed=0,
              dataset="Toy", swad=None, done=True):
    """`steps`: {step: {env: (in_acc, out_acc)}}; the Toy dataset has 3 envs."""
    run = root / name
    run.mkdir(parents=True)
    lines = []
    for step, accs in steps.items():
        record = {"args": {"dataset": dataset, "algorithm": "ERM", "test_envs": test_envs,
                           "hparams_seed": hparams_seed, "trial_seed": trial_seed, "seed": 1},
                  "hparams": {"lr": 0.001 * (hparams_seed + 1)}, "step": step}
        for env, (in_acc, out_acc) in accs.items():
            record[f"env{env}_in_acc"], record[f"env{env}_out_acc"] = in_acc, out_acc
        lines.append(json.dumps(record) + "\n")
    (run / "results.jsonl").write_text("".join(lines))
    if done:
        (run / "done").write_text("")
    if swad is not None:
        payload = {"args": {"dataset": dataset, "algorithm": "ERM", "test_envs": test_envs,
                            "hparams_seed": hparams_seed, "trial_seed": trial_seed},
                   "hparams": {"lr": 0.001}, "swad_start_step": 1, "swad_end_step": 2,
                   "n_averaged": 2}
        for env, (in_acc, out_acc) in swad.items():
            payload[f"env{env}_in_acc"], payload[f"env{env}_out_acc"] = in_acc, out_acc
        (run / "swad.json").write_text(json.dumps(payload))
    return run


def accs(test_in, test_out, val1, val2, in1=0.0, in2=0.0):
    """Env 0 is the test env; envs 1 and 2 are training envs."""
    return {0: (test_in, test_out), 1: (in1, val1), 2: (in2, val2)}
