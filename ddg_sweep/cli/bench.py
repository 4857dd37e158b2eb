"""`bench`: time DDG's Stage I and Stage II steps and the UNet pass."""
from __future__ import annotations

import argparse
import dataclasses
import json

from ddg_sweep.errors import UserError
from ddg_sweep.hparams import GUIDANCE_FORMS
from ddg_sweep.perf import SWITCHES, CompiledUNetMismatch, StepOptions

# --compare: each optimisation added in turn, then the memory and compile switches.
_PLAIN = StepOptions.plain()
COMPARE = (
    ("fp32 plain", _PLAIN),
    ("bf16 autocast", dataclasses.replace(_PLAIN, teacher_bf16=True)),
    ("+sdpa", dataclasses.replace(_PLAIN, teacher_bf16=True, sdpa=True)),
    ("+channels_last", dataclasses.replace(_PLAIN, teacher_bf16=True, sdpa=True, channels_last=True)),
    ("+bf16 weights", dataclasses.replace(_PLAIN, teacher_bf16=True, sdpa=True, teacher_bf16_weights=True)),
    ("default", StepOptions()),
    ("default+batched", dataclasses.replace(StepOptions(), batched_guidance=True)),
    ("default+ckpt", dataclasses.replace(StepOptions(), unet_checkpointing=True)),
    ("default+compile", dataclasses.replace(StepOptions(), compile_unet=True)),
    ("default+compile+ckpt", dataclasses.replace(StepOptions(), compile_unet=True, unet_checkpointing=True)),
    ("default+cudnn", dataclasses.replace(StepOptions(), cudnn_benchmark=True)),
    ("default+micro48", dataclasses.replace(StepOptions(), unet_micro_batch=48)),
    ("default+micro32", dataclasses.replace(StepOptions(), unet_micro_batch=32)),
    ("default+micro24", dataclasses.replace(StepOptions(), unet_micro_batch=24)),
    ("default+compile+micro48", dataclasses.replace(StepOptions(), compile_unet=True, unet_micro_batch=48)),
    ("default+compile+micro32", dataclasses.replace(StepOptions(), compile_unet=True, unet_micro_batch=32)),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="time DDG training steps (images/s, MFU)",
                                   description=__doc__)
    parser.add_argument("--models", choices=("tiny", "paper-arch"), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32, help="images per source domain (3 domains)")
    parser.add_argument("--sd-resolution", type=int, default=None, help="default: 32 tiny, 512 paper-arch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for MFU (default: known bf16 dense peak of the GPU)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--guidance-form", choices=(*GUIDANCE_FORMS, "all"), default="prediction",
                        help="Stage II's guidance form (docs/method.md); all: time each form in turn "
                             "(target adds a no-grad UNet pass under the label's prompt)")
    parser.add_argument("--plain", action="store_true", help="start from every optimisation off")
    parser.add_argument("--compare", action="store_true",
                        help="run fp32 plain, then each optimisation in turn, on the same models")
    parser.add_argument("--configs", default=None,
                        help=f"with --compare, a comma-separated subset of: {', '.join(l for l, _ in COMPARE)}")
    for name in SWITCHES:
        flag = name.replace("_", "-")
        parser.add_argument(f"--{flag}", dest=name, action="store_true", default=None, help=f"turn {name} on")
        parser.add_argument(f"--no-{flag}", dest=name, action="store_false", help=f"turn {name} off")
    parser.add_argument("--unet-micro-batch", type=int, default=None, metavar="N",
                        help="samples per UNet call in Stage II (0 = the whole batch)")
    parser.set_defaults(func=main)


def _options(args) -> StepOptions:
    base = StepOptions.plain() if args.plain else StepOptions()
    chosen = {name: getattr(args, name) for name in SWITCHES if getattr(args, name) is not None}
    if args.unet_micro_batch is not None:
        chosen["unet_micro_batch"] = args.unet_micro_batch
    return dataclasses.replace(base, **chosen)


def _row(label: str, r: dict) -> str:
    if "error" in r:
        return f"{label:<30} {r['error']}"
    u = r["unet_pass"]
    mfu = f"{100 * u['mfu']:.1f}%" if u["mfu"] is not None else "n/a"
    return (f"{label:<30} {r['stage1']['images_per_s']:>9.1f} {r['stage2']['images_per_s']:>9.1f} "
            f"{r['stage2']['ms_per_step']:>9.1f} {r['stage2']['peak_memory_gb']:>8.2f} "
            f"{u['tflops_per_s']:>8.1f} {mfu:>6} {r['stage2']['loss']:>9.5f}"
            + (f"  compiled-vs-eager gradient error {r['compiled_unet_gradient_error']:.1e}"
               if r.get("compiled_unet_gradient_error") is not None else ""))


HEADER = (f"{'config':<30} {'I img/s':>9} {'II img/s':>9} {'II ms':>9} {'mem GiB':>8} "
          f"{'UNet TF/s':>8} {'MFU':>6} {'II loss':>9}")


def main(args: argparse.Namespace) -> int:
    import torch

    from ddg_sweep.bench import paper_arch_components, run_benchmark

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: torch sees no CUDA GPU here; use --device cpu")
    if args.batch_size <= 0 or args.iters <= 0 or args.warmup < 0:
        raise UserError("--batch-size and --iters must be > 0, --warmup >= 0")
    if args.unet_micro_batch is not None and args.unet_micro_batch < 0:
        raise UserError(f"--unet-micro-batch {args.unet_micro_batch} must be >= 0 (0 = the whole batch)")
    if args.sd_resolution is not None and (args.sd_resolution < 8 or args.sd_resolution % 8):
        raise UserError(f"--sd-resolution {args.sd_resolution} must be a positive multiple of 8")
    configs = COMPARE if args.compare else (("options", _options(args)),)
    if args.configs:
        known = dict(COMPARE)
        wanted = [label.strip() for label in args.configs.split(",")]
        unknown = [label for label in wanted if label not in known]
        if unknown:
            raise UserError(f"unknown --configs {', '.join(unknown)}; choose from {', '.join(known)}")
        configs = tuple((label, known[label]) for label in wanted)
    forms = GUIDANCE_FORMS if args.guidance_form == "all" else (args.guidance_form,)
    if len(forms) > 1:
        configs = tuple((f"{label} {form}", options, form) for label, options in configs for form in forms)
    else:
        configs = tuple((label, options, forms[0]) for label, options in configs)
    components = paper_arch_components() if args.models == "paper-arch" else None
    # Every config starts from the same student weights, so their losses are comparable.
    initial_student = ({k: v.clone() for k, v in components["student"].state_dict().items()}
                       if components else None)
    results = []
    if args.format == "text":
        print(HEADER, flush=True)
    for label, options, form in configs:
        if initial_student is not None:
            components["student"].load_state_dict(initial_student)
        try:
            result = run_benchmark(args.models, args.device, args.batch_size, 3, args.sd_resolution, options,
                                   args.warmup, args.iters, args.peak_tflops, components, form)
        except torch.OutOfMemoryError:
            result = {"error": "out of memory", "options": dataclasses.asdict(options)}
            torch.cuda.empty_cache()
        except CompiledUNetMismatch as error:  # a wrong fast step is no result: say so, go on
            result = {"error": str(error), "options": dataclasses.asdict(options)}
        result["label"] = label
        results.append(result)
        if args.format == "text":
            print(_row(label, result), flush=True)
    if args.format == "json":
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        r = next((r for r in results if "error" not in r), None)
        if r:
            print(f"device {r['device']}, {r['models']}, batch {r['batch_per_domain']}x{r['n_domains']}, "
                  f"SD resolution {r['sd_resolution']}; MFU against {r['unet_pass']['peak_tflops']} TFLOP/s")
    return 0
