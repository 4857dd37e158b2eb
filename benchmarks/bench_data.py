"""Images/s per core of the evaluation and training image paths, full decode against draft.

    python benchmarks/bench_data.py [--size 224] [--work DIR] [--repeats 3]

Generates photo-like JPEGs (smooth colour fields, shapes with edges, sensor noise; quality
90) at 500x400, 1024x768 and 2048x1536, then, for each (path, image size, mode), runs a whole
process under `/usr/bin/time -v` that reads a fixed number of them through the loaders'
own datasets (`EvalImages`, `ImageSamples`, one thread, no workers): `before` decodes every
JPEG in full and resizes without reducing_gap (the code before issue 21), `after` is the
default (ddg_sweep/data/decode.py). Processes of one repeat run back to back, modes
interleaved; the table gives the median of the repeats:

- before / after: images / (user + sys CPU seconds of the whole process, imports included),
  which a busy shared machine disturbs far less than wall time;
- net of start-up: the same, less the median CPU seconds of a process that reads nothing;
- in-process: images / CPU seconds of the reading loop alone (labelled as such);
- margin 1: `after` with DRAFT_MARGIN 1 (decoded to no less than the size used), for comparison;
- |diff|: mean absolute difference in 0..255 of the eval images (after minus before, same
  final size) and its 99.9th percentile, over the generated images, with the draft scale.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's ddg_sweep, also in children

SIZES = ((500, 400), (1024, 768), (2048, 1536))
DECODES = {500: 1500, 1024: 600, 2048: 300}  # images per process: several seconds of decoding each
MODES = ("before", "after", "margin1")
UNIQUE = 12  # distinct files per resolution, read in turn


def photo_like(width: int, height: int, seed: int):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((height, width, 3), np.float32)
    for _ in range(4):  # low-frequency colour waves
        fx, fy, phase = rng.uniform(0.5, 3) / width, rng.uniform(0.5, 3) / height, rng.uniform(0, 6.3)
        field += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)[..., None] * rng.uniform(10, 40, 3)
    image = Image.fromarray(np.clip(field + 128, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # objects with sharp edges
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        x1, y1 = x0 + rng.randint(width // 20, width // 3), y0 + rng.randint(height // 20, height // 3)
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(width / 1000))
    noise = rng.normal(0, 6, (height, width, 3))  # sensor noise: fine texture for the JPEG coder
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def make_folder(root: Path) -> dict[int, list[str]]:
    files = {}
    for width, height in SIZES:
        folder = root / f"{width}x{height}"
        folder.mkdir(parents=True, exist_ok=True)
        files[width] = []
        for i in range(UNIQUE):
            path = folder / f"{i:02d}.jpg"
            if not path.exists():
                photo_like(width, height, seed=width + i).save(path, quality=90)
            files[width].append(str(path))
    return files


def child(args) -> None:
    """One whole process: read `--count` images of the list through one loader path."""
    import torch

    torch.set_num_threads(1)
    from ddg_sweep.data import decode
    from ddg_sweep.data.loaders import EvalImages, ImageSamples

    if args.mode == "before":
        decode.DRAFT, decode.REDUCING_GAP = False, None
    elif args.mode == "margin1":
        decode.DRAFT_MARGIN = 1
    files = json.loads(Path(args.files).read_text())
    samples = [(path, 0) for path in files]
    if args.path == "eval":
        dataset, items = EvalImages(samples, args.size), [i % len(samples) for i in range(args.count)]
    else:
        dataset = ImageSamples(samples, args.size)
        items = [(i % len(samples), 1000 + i) for i in range(args.count)]
    began = time.process_time()
    for item in items:
        dataset[item]
    print(json.dumps({"loop_cpu_s": time.process_time() - began}))


def measured(command: list[str]) -> dict:
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=True)
    report = done.stderr

    def field(name):
        return re.search(rf"{re.escape(name)}: (.+)", report).group(1).strip()

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    loop = json.loads(done.stdout.strip().splitlines()[-1])["loop_cpu_s"]
    return {"cpu": float(field("User time (seconds)")) + float(field("System time (seconds)")),
            "wall": wall, "loop": loop, "rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}


def pixel_difference(files: list[str], size: int, margin: int) -> tuple[float, float, str]:
    """Eval images with draft (at `margin`) against full decode: mean |diff|, p99.9, the scale."""
    import numpy as np
    from PIL import Image

    from ddg_sweep.data import decode
    from ddg_sweep.data.transforms import eval_image

    saved = decode.DRAFT, decode.REDUCING_GAP, decode.DRAFT_MARGIN
    try:
        decode.DRAFT_MARGIN = margin
        after = np.stack([eval_image(p, size) for p in files]).astype(np.int16)
        with Image.open(files[0]) as image:
            scale = decode.draft_scale(image.size, (size, size))
        decode.DRAFT, decode.REDUCING_GAP = False, None
        before = np.stack([eval_image(p, size) for p in files]).astype(np.int16)
    finally:
        decode.DRAFT, decode.REDUCING_GAP, decode.DRAFT_MARGIN = saved
    diff = np.abs(after - before)
    return float(diff.mean()), float(np.percentile(diff, 99.9)), f"1/{scale}" if scale > 1 else "full"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="the student's input size (default 224)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", help="folder for the generated JPEGs (default: a temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=("eval", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="ddg-bench-data-") as tmp:
        root = Path(args.work or tmp)
        files = make_folder(root)
        lists = {}
        for width, paths in files.items():
            lists[width] = root / f"files-{width}.json"
            lists[width].write_text(json.dumps(paths))
        runs: dict[tuple, list[dict]] = {}
        for _ in range(args.repeats):
            base = [sys.executable, __file__, "--child", "--size", str(args.size)]
            runs.setdefault("startup", []).append(measured(
                base + ["--mode", "after", "--path", "eval", "--files", str(lists[500]), "--count", "0"]))
            for width, _height in SIZES:
                for path in ("eval", "train"):
                    for mode in MODES:
                        command = base + ["--mode", mode, "--path", path, "--files", str(lists[width]),
                                          "--count", str(DECODES[width])]
                        runs.setdefault((width, path, mode), []).append(measured(command))
        startup = statistics.median(r["cpu"] for r in runs["startup"])
        print(f"{args.size} px, images/s per core, median of {args.repeats} whole processes (one thread, no "
              f"loader workers); a process that reads nothing takes {startup:.2f} CPU s\n")
        print("| JPEG | path | n | before | after | speed-up | net of start-up: before, after, speed-up "
              "| in-process: before, after | margin 1: net, |diff| | eval |diff| mean / p99.9 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for width, height in SIZES:
            mean_diff, p999, scale = pixel_difference(files[width], args.size, margin=2)
            mean_m1, _, scale_m1 = pixel_difference(files[width], args.size, margin=1)
            for path in ("eval", "train"):
                n = DECODES[width]

                def cpu(mode, key="cpu", minus=0.0):
                    return statistics.median(r[key] for r in runs[(width, path, mode)]) - minus
                whole = [n / cpu(m) for m in ("before", "after")]
                net = [n / cpu(m, minus=startup) for m in ("before", "after", "margin1")]
                loop = [n / cpu(m, "loop") for m in ("before", "after")]
                diff = f"{mean_diff:.2f} / {p999:.0f} ({scale})" if path == "eval" else "per crop"
                m1 = f"{net[2]:.1f}, {mean_m1:.2f} ({scale_m1})" if path == "eval" else f"{net[2]:.1f}"
                print(f"| {width}x{height} | {path} | {n} | {whole[0]:.1f} | {whole[1]:.1f} | "
                      f"{whole[1] / whole[0]:.2f}x | {net[0]:.1f}, {net[1]:.1f}, {net[1] / net[0]:.2f}x | "
                      f"{loop[0]:.1f}, {loop[1]:.1f} | {m1} | {diff} |")
        rss = statistics.median(r["rss_mb"] for key, rs in runs.items() if key != "startup" for r in rs)
        print(f"\n(median peak RSS of a reading process: {rss:.0f} MB. in-process: the reading loop's CPU "
              "time alone. margin 1: draft to no less than the size used, for comparison only)")


if __name__ == "__main__":
    main()
