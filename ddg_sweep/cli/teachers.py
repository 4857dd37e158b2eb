"""`teachers`: measure what the tiny teachers know on DemoDigits, or train the tiny family anew."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddg_sweep.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "teachers", help="the tiny teachers' figures on DemoDigits, or train the tiny models",
        description="Measure the tiny CLIP (zero-shot accuracy) and Stable Diffusion (as a diffusion "
                    "classifier, plain and guided) on every DemoDigits environment, and the cosine "
                    "between Stage II's diffusion gradient and the supervised gradient on the "
                    "student's logits. With --train DIR, train the whole tiny family from configs on "
                    "synthetic digits into DIR instead (use it with DDG_SWEEP_TINY_WEIGHTS=DIR).")
    parser.add_argument("--models", choices=("tiny",), default="tiny",
                        help="model family to measure (only tiny: DemoDigits is the tiny models' data)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("--images-per-env", type=int, default=100, metavar="N",
                        help="DemoDigits images scored per environment (default 100)")
    parser.add_argument("--draws", type=int, default=16, metavar="N",
                        help="noise draws per image for the diffusion classifier (default 16)")
    parser.add_argument("--cfg-scale", type=float, default=3.0,
                        help="guidance scale w of the guided classifier and of each guidance form's gradient "
                             "check (default 3.0; w = 1 is always checked too)")
    parser.add_argument("--train", type=Path, default=None, metavar="DIR",
                        help="train the tiny family into DIR instead of measuring (again on an interrupted "
                             "DIR: its finished parts are kept)")
    parser.add_argument("--budget", choices=("full", "short"), default="full",
                        help="with --train: full (the shipped weights, about an hour on 2 cores) or short "
                             "(a few minutes, weaker)")
    parser.add_argument("--threads", type=int, default=None, help="with --train: torch threads")
    parser.set_defaults(func=main)


def _text(figures: dict) -> str:
    envs = [k for k in figures["clip_zero_shot"] if k != "mean"]
    rows = [f"{'':<24}" + "".join(f"{env:>10}" for env in envs) + f"{'mean':>10}"]
    for name in ("clip_zero_shot", "sd_classifier", "sd_classifier_guided", "prompt_sensitivity"):
        values = figures[name]
        rows.append(f"{name:<24}" + "".join(f"{values[env]:>10.3f}" for env in envs) + f"{values['mean']:>10.3f}")
    settings = figures["settings"]
    rows.append(f"(chance {settings['chance']:.2f}; {settings['images_per_env']} images per environment, "
                f"{settings['n_draws']} noise draws, guided at w={settings['cfg_scale']:g} against the "
                f"environment's domain prompt; SD at {settings['sd_resolution']} px)")
    gradient = figures["stage2_gradient"]
    rows.append(f"Stage II gradient on the student's logits, averaged over {gradient['n_draws']} noise draws "
                f"(student after {gradient['stage1_steps']} Stage I steps: accuracy "
                f"{gradient['student_accuracy']:.2f}, true-class probability {gradient['student_true_class_prob']:.2f}); "
                "cosine with the cross-entropy gradient / with the pull toward the domain-style prediction:")
    names = list(gradient["uniform"])
    rows.append(f"{'logits x T (p_true)':<24}" + "".join(f"{name:>22}" for name in names))
    for row in gradient["scan"]:
        label = f"T={row['temperature']:g} ({row['true_class_prob']:.2f})"
        rows.append(f"{label:<24}" + "".join(
            f"{row['cases'][n]['toward_label']:>+11.2f} /{row['cases'][n]['domain_pull']:>+6.2f}   " for n in names))
    rows.append(f"{'uniform':<24}" + "".join(
        f"{gradient['uniform'][n]['toward_label']:>+11.2f} /{gradient['uniform'][n]['domain_pull']:>+6.2f}   "
        for n in names))
    crossings = [f"{n} at p_true {p:.2f}" for n, p in gradient["sign_change_at_true_class_prob"].items()
                 if p is not None]
    rows.append("toward the label changes sign: " + (", ".join(crossings) if crossings else "never in the scan"))
    if figures.get("training"):
        seconds = figures["training"]["seconds"]
        rows.append(f"trained ({figures['training']['budget']} budget) in {sum(seconds.values()):.0f} s: "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    if args.images_per_env <= 0 or args.draws <= 0:
        raise UserError("--images-per-env and --draws must be > 0")
    if args.train is not None:
        from ddg_sweep.models.tiny_training import train_all

        if args.train.exists() and any(args.train.iterdir()) and not (args.train / "training.json").exists():
            raise UserError(f"{args.train} is not empty and holds no interrupted training; pass a new "
                            "folder to --train")
        train_all(args.train, args.budget, args.threads, say=lambda line: print(line, flush=True))
        print(f"trained the tiny family into {args.train}; use it with DDG_SWEEP_TINY_WEIGHTS={args.train}")
        return 0
    from ddg_sweep.models.tiny import weights_dir
    from ddg_sweep.teachers import stage_two_gradient_cosine, teacher_figures

    figures = teacher_figures(args.images_per_env, args.draws, args.cfg_scale)
    figures["stage2_gradient"] = stage_two_gradient_cosine(cfg_scale=args.cfg_scale)
    training = weights_dir() / "training.json"
    figures["training"] = json.loads(training.read_text()) if training.is_file() else None
    figures["weights"] = str(weights_dir())
    print(json.dumps(figures, indent=2) if args.format == "json" else _text(figures))
    return 0
