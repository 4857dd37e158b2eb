"""One leave-one-out run, read top to bottom: validate, load, train, evaluate, record.

RUN/ holds config.json, results.jsonl (one DomainBed record per checkpoint),
checkpoint.pt (the trainable state, replaced atomically every checkpoint),
train.log, provenance.json (code and library versions, device), swad.json (the
SWAD-averaged model's accuracies) and finally an empty `done` (ddg_sweep/layout.py).
Each checkpoint evaluates the splits model selection reads, the last one every split
(ddg_sweep/splits.py). The same
call on an unfinished RUN resumes from checkpoint.pt; on a finished one it
does nothing. Batches, augmentations and noise are functions of (seed, step),
so a resumed run reproduces the uninterrupted one.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ddg_sweep.config import RunConfig
from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.io import append_line, atomic_write_bytes, atomic_write_json
from ddg_sweep.layout import RunFolder, read_jsonl
from ddg_sweep.provenance import record_provenance
from ddg_sweep.seeding import seed_hash



@dataclass
class RunOutcome:
    status: str  # "finished" or "already-done"
    output_dir: Path
    last_record: dict | None


def load_data(config: RunConfig):
    from ddg_sweep.data.demo_digits import demo_data_dir
    from ddg_sweep.data.folders import read_domain_data

    spec = get_dataset_spec(config.dataset)
    data_dir = config.data_dir or (demo_data_dir() if spec.builtin else None)
    return read_domain_data(spec, data_dir)


def _check_same_run(run_dir: Path, config: RunConfig) -> None:
    saved = RunFolder(run_dir).config
    if saved.exists():
        try:
            previous = RunConfig.from_json(json.loads(saved.read_text())).identity()
        except (ValueError, TypeError):
            raise UserError(f"{saved} is not a ddg-sweep run config; pass another --output-dir") from None
        if previous != config.identity():
            raise UserError(f"{run_dir} already holds a different run (see its config.json); "
                            "pass a new --output-dir or delete that folder")


@contextmanager
def _writes_to(run_dir: Path):
    """A failed write (full disk, read-only folder) becomes a one-line error; what was
    written before stays valid: records are appended whole, checkpoints replaced atomically."""
    try:
        yield
    except OSError as err:
        raise UserError(f"cannot write to {run_dir}: {err.strerror or err}; earlier records and the last "
                        "checkpoint are intact: free space or fix permissions, then rerun the same "
                        "command to resume") from None


def run(config: RunConfig, on_checkpoint: Callable[[dict, Path], None] | None = None,
        log: Callable[[str], None] = print) -> RunOutcome:
    config.validate()
    run_dir = Path(config.output_dir)
    folder = RunFolder(run_dir)
    _check_same_run(run_dir, config)
    if folder.done.exists():
        log(f"{run_dir} is already done: nothing to train (delete its `{folder.done.name}` to rerun)")
        return RunOutcome("already-done", run_dir, (read_jsonl(folder.results) or [None])[-1])
    data = load_data(config)  # validated before any weight is loaded
    import torch

    from ddg_sweep.algorithms import get_algorithm_class
    from ddg_sweep.algorithms.base import RunContext
    from ddg_sweep.data.loaders import eval_loaders, loader_workers, split_environment, train_loaders
    from ddg_sweep.evaluate import evaluate, timed_evaluate
    from ddg_sweep.models.paths import resolve_model_paths
    from ddg_sweep.splits import evaluated_splits
    from ddg_sweep.swad import SWAD, recompute_batchnorm

    with _writes_to(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        if not folder.config.exists():
            atomic_write_json(folder.config, config.to_json())
    logfile = folder.log

    def say(message: str) -> None:
        log(message)
        with _writes_to(run_dir):
            append_line(logfile, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {config.device} asked for, but torch sees no CUDA GPU here; "
                        "pass --device cpu or auto")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if config.device == "auto" else config.device)
    with _writes_to(run_dir):  # code and library versions, device: RUN/provenance.json
        record_provenance(run_dir, device)
    hp = config.hparams
    spec = data.spec
    train_envs = [e for e in range(spec.n_envs) if e not in config.test_envs]
    splits = [split_environment(len(samples), config.holdout_fraction, config.trial_seed, env)
              for env, samples in enumerate(data.environments)]
    ctx = RunContext(
        hparams=hp, dataset=config.dataset, class_names=data.readable_class_names,
        env_names=list(spec.environments), train_envs=train_envs, steps=config.steps, device=device,
        model_paths=resolve_model_paths(config.algorithm, hp, config.student_path,
                                        config.clip_path, config.sd_path),
    )
    torch.manual_seed(config.seed)
    algorithm = get_algorithm_class(config.algorithm)(ctx)
    image_size = algorithm.network.featurizer.image_size
    swad = SWAD(hp, config.steps)

    # Resume: the checkpoint is the truth; records past it are dropped and redone.
    start_step = 0
    results_path = folder.results
    checkpoint_path = folder.checkpoint
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        algorithm.load_checkpoint(state["algorithm"])
        swad.load_state_dict(state["swad"])
        start_step = state["step"] + 1
        kept = [r for r in read_jsonl(results_path) if r["step"] <= state["step"]]
        with _writes_to(run_dir):
            atomic_write_bytes(results_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        say(f"resuming {run_dir} at step {start_step} of {config.steps}")
    elif results_path.exists():
        results_path.unlink()  # records without a checkpoint cannot be continued
    if start_step == 0:
        say(f"training {config.algorithm} on {config.dataset}, test envs {list(config.test_envs)}, "
            f"{config.steps} steps, device {device}")

    if config.num_workers is not None or spec.builtin:  # --num-workers per loader; none for DemoDigits
        train_workers = eval_workers = config.num_workers or 0
    else:  # from the CPUs this process may use (a trial: --cpus-per-trial, set by the trainable)
        train_workers, eval_workers = loader_workers(torch.get_num_threads(), len(train_envs))
    loaders = train_loaders(data.environments, splits, train_envs, hp["batch_size"], image_size,
                            config.seed, start_step, config.steps, train_workers, spec.horizontal_flip)
    evaluation = eval_loaders(data.environments, splits, image_size, eval_workers)
    split_sizes = {f"env{env}_{part}": len(getattr(split, f"{part}_idx"))
                   for env, split in enumerate(splits) for part in ("in", "out")}
    steps_per_epoch = min(len(splits[e].in_idx) for e in train_envs) / hp["batch_size"]
    window: dict[str, list] = {}
    last_record = None

    batches = zip(*loaders)
    for step in range(start_step, config.steps):
        step_start = time.time()
        torch.manual_seed(seed_hash(config.seed, "step", step))
        minibatches = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                       for x, y in next(batches)]
        algorithm.train()
        scalars = algorithm.update(minibatches, step)
        swad.update(algorithm.network, step)
        for key, value in scalars.items():
            window.setdefault(key, []).append(value)
        window.setdefault("step_time", []).append(time.time() - step_start)

        if step % config.checkpoint_freq == 0 or step == config.steps - 1:
            record = {"args": config.args_record(), "hparams": hp, "step": step,
                      "epoch": step / steps_per_epoch}
            for key, values in window.items():
                numeric = [v for v in values if isinstance(v, (int, float))]
                record[key] = sum(numeric) / len(numeric) if numeric else values[-1]
            evaluated = evaluated_splits(spec.n_envs, config.test_envs, step == config.steps - 1,
                                         config.eval_all_splits)
            accuracies, val_loss = timed_evaluate(algorithm.network, evaluation, train_envs, device, evaluated,
                                                  split_sizes)
            record.update(accuracies)
            swad.end_segment(step, val_loss)
            state = {"step": step, "algorithm": algorithm.state_dict_for_checkpoint(), "swad": swad.state_dict()}
            with _writes_to(run_dir):
                append_line(results_path, json.dumps(record))
                _save_checkpoint(state, checkpoint_path, torch)
            held_out = [record[f"env{e}_in_acc"] for e in config.test_envs]
            say(f"step {step}: loss {record['loss']:.4f}, held-out acc "
                f"{', '.join(f'{a:.3f}' for a in held_out)}, {record['step_time']:.3f} s/step")
            window = {}
            last_record = record
            if on_checkpoint is not None:
                on_checkpoint(record, run_dir)

    averaged, info = swad.averaged(template=algorithm.network)
    swad_record = {"args": config.args_record(), "hparams": hp, **info}
    if averaged is not None:
        averaged.to(device)
        training_splits = {f"env{e}_in" for e in train_envs}
        swad_record["batchnorm_recomputed_on"] = recompute_batchnorm(
            averaged, (x.to(device) for name, loader in evaluation if name in training_splits for x, _ in loader))
        swad_record.update(evaluate(averaged, evaluation, train_envs, device)[0])
        say(f"SWAD averaged steps {info.get('swad_start_step')}..{info.get('swad_end_step')}: held-out acc "
            + ", ".join(f"{swad_record[f'env{e}_in_acc']:.3f}" for e in config.test_envs))
    with _writes_to(run_dir):
        atomic_write_json(folder.swad, swad_record)
    with _writes_to(run_dir):
        folder.done.touch()
    checkpoint_path.unlink(missing_ok=True)
    say(f"done: {results_path}")
    return RunOutcome("finished", run_dir, last_record)


def _save_checkpoint(state: dict, path: Path, torch) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
