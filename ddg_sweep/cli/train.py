"""`train`: one leave-one-out run into --output-dir."""
from __future__ import annotations

import argparse

from ddg_sweep.hparams import REGISTRY, resolve_hparams


def _default_text(h) -> str:
    """`paper X, demo Y` (or one value when they agree), read from the registry's defaults."""
    from ddg_sweep.data.catalog import DATASETS

    demo = next(name for name, spec in DATASETS.items() if spec.builtin)
    paper, tiny = h.default("PACS", "paper"), h.default(demo, "tiny")
    return f"default {paper}" if paper == tiny else f"default: paper {paper}, {demo} {tiny}"


def add_hparam_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per hyperparameter (`--lmd`, `--cfg-scale`, ...); unset means the default."""
    from ddg_sweep.hparams import ALGORITHMS

    group = parser.add_argument_group("hyperparameters (stored in hparams; default: the paper's, or the tiny "
                                      "models' for DemoDigits)")
    for h in REGISTRY:
        if h.name == "models":
            continue  # --models is a top-level flag
        sample = h.default("PACS", "paper")
        kind = h.convert or {bool: str, int: int, float: float}.get(type(sample), str)
        text = h.help or h.name.replace("_", " ")
        only = "" if set(h.algorithms) == set(ALGORITHMS) else f"; {', '.join(h.algorithms)} only"
        group.add_argument("--" + h.name.replace("_", "-"), dest=f"hp_{h.name}", type=kind,
                           default=None, metavar=type(sample).__name__.upper(),
                           help=f"{text} ({_default_text(h)}{only})".replace("%", "%%"))


def hparam_overrides(args: argparse.Namespace) -> dict:
    return {h.name: getattr(args, f"hp_{h.name}") for h in REGISTRY
            if getattr(args, f"hp_{h.name}", None) is not None}


def add_location_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the DomainBed dataset folders (not needed for "
                                           "DemoDigits, which is generated into the cache)")
    parser.add_argument("--student-path", help="student backbone folder or HF cache id")
    parser.add_argument("--clip-path", help="CLIP teacher folder or HF cache id")
    parser.add_argument("--sd-path", help="Stable Diffusion (diffusers format) folder or HF cache id")
    parser.add_argument("--models", choices=("tiny", "paper"),
                        help="model family (default: tiny for DemoDigits, paper otherwise)")
    parser.add_argument("--eval-all-splits", action="store_true", default=None,
                        help="evaluate every split at every checkpoint, as DomainBed does (default: the "
                             "training environments' in splits, which no selection rule reads, only at the last)")


def _steps_help() -> str:
    from ddg_sweep.data.catalog import DATASETS

    by_steps: dict[int, list[str]] = {}
    for name, spec in DATASETS.items():
        by_steps.setdefault(spec.default_steps, []).append(name)
    from search_spaces import demo

    preset = getattr(demo, "STEPS", None)
    return "training steps (default: " + "; ".join(f"{steps} for {', '.join(names)}" for steps, names in
                                                   by_steps.items()) + ")" + (
        f"; the jobs of `--preset demo` run {preset}" if preset else "")


def _freq_help() -> str:
    from ddg_sweep.data.catalog import DATASETS

    by_freq: dict[int, list[str]] = {}
    for name, spec in DATASETS.items():
        by_freq.setdefault(spec.checkpoint_freq, []).append(name)
    return "evaluate and checkpoint every K steps (default: " + "; ".join(
        f"{freq} for {', '.join(names)}" for freq, names in by_freq.items()) + ")"


def register(subparsers) -> None:
    from ddg_sweep.data.catalog import DATASETS
    from ddg_sweep.hparams import ALGORITHMS

    parser = subparsers.add_parser("train", help="one leave-one-out run",
                                   description="Train one leave-one-out run and write DomainBed records.")
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--algorithm", default="ERM", help=f"one of {', '.join(ALGORITHMS)} (default ERM)")
    parser.add_argument("--test-envs", type=int, nargs="+", required=True, metavar="ENV",
                        help="index(es) of the held-out environment(s), e.g. 0 (see README, 'Real datasets')")
    parser.add_argument("--steps", type=int, default=None, help=_steps_help())
    parser.add_argument("--checkpoint-freq", type=int, default=None, help=_freq_help())
    parser.add_argument("--output-dir", required=True, help="the run's folder (created; rerun to resume)")
    parser.add_argument("--trial-seed", type=int, default=0,
                        help="seed of the data split and the random hparams draw (default 0)")
    parser.add_argument("--hparams-seed", type=int, default=0,
                        help="0: the default hparams; N > 0: DomainBed's random draw number N (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training: batches, noise (default 0)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2,
                        help="fraction of each environment held out for validation (default 0.2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="workers of each training loader and of the evaluation pool (default: 0 for "
                             "DemoDigits; else from the CPUs this process may use, ddg_sweep/data/loaders.py)")
    add_location_flags(parser)
    add_hparam_flags(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ddg_sweep.config import RunConfig
    from ddg_sweep.data.catalog import get_dataset_spec

    spec = get_dataset_spec(args.dataset)
    hparams = resolve_hparams(args.algorithm, args.dataset, args.hparams_seed, args.trial_seed,
                              args.models, hparam_overrides(args))
    steps = args.steps if args.steps is not None else spec.default_steps
    config = RunConfig(
        dataset=args.dataset, algorithm=args.algorithm, test_envs=tuple(args.test_envs), steps=steps,
        hparams=hparams, output_dir=args.output_dir, checkpoint_freq=args.checkpoint_freq,
        trial_seed=args.trial_seed, hparams_seed=args.hparams_seed, seed=args.seed,
        holdout_fraction=args.holdout_fraction, data_dir=args.data_dir, student_path=args.student_path,
        clip_path=args.clip_path, sd_path=args.sd_path, device=args.device, num_workers=args.num_workers,
        eval_all_splits=bool(args.eval_all_splits),
    )
    from ddg_sweep.train import run

    run(config)
    return 0
