"""`train`: one leave-one-out run into --output-dir."""
from __future__ import annotations

import argparse

from ddg_sweep.hparams import REGISTRY, resolve_hparams


def add_hparam_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per hyperparameter (`--lmd`, `--cfg-scale`, ...); unset means the default."""
    group = parser.add_argument_group("hyperparameters (default: the paper's; stored in hparams)")
    for h in REGISTRY:
        if h.name == "models":
            continue  # --models is a top-level flag
        sample = h.default("PACS", "paper")
        kind = h.convert or {bool: str, int: int, float: float}.get(type(sample), str)
        group.add_argument("--" + h.name.replace("_", "-"), dest=f"hp_{h.name}", type=kind,
                           default=None, metavar=type(sample).__name__.upper(), help=h.help or None)


def hparam_overrides(args: argparse.Namespace) -> dict:
    return {h.name: getattr(args, f"hp_{h.name}") for h in REGISTRY
            if getattr(args, f"hp_{h.name}", None) is not None}


def add_location_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the DomainBed dataset folders")
    parser.add_argument("--student-path", help="student backbone folder or HF cache id")
    parser.add_argument("--clip-path", help="CLIP teacher folder or HF cache id")
    parser.add_argument("--sd-path", help="Stable Diffusion (diffusers format) folder or HF cache id")
    parser.add_argument("--models", choices=("tiny", "paper"),
                        help="model family (default: tiny for DemoDigits, paper otherwise)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="one leave-one-out run",
                                   description="Train one leave-one-out run and write DomainBed records.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--algorithm", default="ERM")
    parser.add_argument("--test-envs", type=int, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: 8000, DemoDigits 120)")
    parser.add_argument("--checkpoint-freq", type=int, default=None,
                        help="evaluate and checkpoint every K steps (default: the dataset's)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--trial-seed", type=int, default=0)
    parser.add_argument("--hparams-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--num-workers", type=int, default=None, help="data loader workers per environment")
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
    )
    from ddg_sweep.train import run

    run(config)
    return 0
