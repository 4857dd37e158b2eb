"""Benchmark: loading SD v1.4's UNet and VAE from safetensors, with and without empty-weight init.

    python benchmarks/model_load.py [--dir /tmp/sd14-random] [--repeats 3]

The UNet and VAE are built once at SD v1.4's published sizes (ddg_sweep/models/paper_arch.py,
random weights: load cost does not depend on the values) and saved with `save_pretrained`
into --dir (kept for the next time). Then each contender loads both through the project's
loader (`ddg_sweep.models.hub.load_pretrained`, as `load_sd_teacher` does) in its own
process under `/usr/bin/time -v`, `--repeats` times, alternating: wall time and peak RSS of
the whole process (interpreter start and imports included), and the in-process seconds of the
two `from_pretrained` calls and one read of every weight (labelled as such; safetensors are
memory-mapped, so a weight costs memory once it is read, as moving it to a GPU does).

- `low_cpu_mem_usage=False`: what diffusers does when `accelerate` is not installed: it
  builds both models with randomly initialised weights, then copies the checkpoint over them.
- `low_cpu_mem_usage=True` (diffusers' default once `accelerate` is installed): the models
  are built on the meta device and the checkpoint's tensors become their weights.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(folder: Path) -> None:
    from ddg_sweep.models.paper_arch import paper_arch_unet, paper_arch_vae

    for name, make in (("unet", paper_arch_unet), ("vae", paper_arch_vae)):
        if not (folder / name / "diffusion_pytorch_model.safetensors").is_file():
            print(f"building and saving SD v1.4's {name} into {folder / name} ...", flush=True)
            make().save_pretrained(folder / name, safe_serialization=True)


def child(folder: Path, low_cpu_mem_usage: bool) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ddg_sweep.models.hub import load_pretrained

    start = time.perf_counter()
    models = [load_pretrained(loader.from_pretrained, str(folder), f"SD {name}", "--sd-path", subfolder=name,
                              low_cpu_mem_usage=low_cpu_mem_usage)
              for name, loader in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL))]
    # Safetensors are memory-mapped: read every weight once, as moving them to a GPU does, so that
    # the peak RSS counts them.
    total = sum(float(p.detach().abs().sum()) for model in models for p in model.parameters())
    print(f"in-process load seconds: {time.perf_counter() - start:.2f} (weights' abs sum {total:.6g})")


def measure(folder: Path, low_cpu_mem_usage: bool) -> tuple[float, float, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        out = subprocess.run(["/usr/bin/time", "-v", "-o", report.name, sys.executable, __file__, "--child",
                              "--dir", str(folder), "--low-cpu-mem-usage", str(int(low_cpu_mem_usage))],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        text = report.read()
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_gib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 2 ** 20
    in_process = float(re.search(r"in-process load seconds: ([\d.]+)", out.stdout).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_gib, in_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/sd14-random"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--low-cpu-mem-usage", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.dir, bool(args.low_cpu_mem_usage))
        return
    import accelerate  # noqa: F401  (the `True` contender needs it; fail here, not in a child)

    build(args.dir)
    results = {False: [], True: []}
    for _ in range(args.repeats):
        for mode in results:
            results[mode].append(measure(args.dir, mode))
    print(f"SD v1.4 UNet + VAE from {args.dir}, median of {args.repeats} whole processes")
    print("| low_cpu_mem_usage | wall s | peak RSS GiB | in-process load s |")
    print("|---|---|---|---|")
    for mode, runs in results.items():
        wall, rss, load = (statistics.median(column) for column in zip(*runs))
        print(f"| {mode} | {wall:.1f} | {rss:.2f} | {load:.1f} |")


if __name__ == "__main__":
    main()
