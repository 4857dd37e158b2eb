"""Train the tiny family from configs on synthetic digits: the script behind the shipped weights.

`python -m ddg_sweep.run teachers --train DIR [--budget full|short]` writes DIR/clip,
DIR/stable-diffusion and DIR/student-<backbone> (the layout of `tiny_weights/`), plus
DIR/training.json (budget, seeds, seconds per part). `full` is what ships; `short` is a
few minutes' version; `test` is what the test suite runs to show the recipe still yields teachers
above chance from random weights.
Nothing here reads DemoDigits.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import torch

from ddg_sweep.errors import UserError
from ddg_sweep.models import tiny
from ddg_sweep.models import tiny_pretraining as pretraining
from ddg_sweep.models.synthetic_digits import SyntheticDigits

BUDGETS = {
    "full": dict(clip_glyphs=600, clip=dict(steps=6000, batch_size=128, lr=2e-3),
                 sd_glyphs=600, vae=dict(steps=1000, batch_size=32, lr=2e-3, kl_weight=1e-4),
                 bank_images=30000, unet=dict(steps=5000, batch_size=64, lr=1e-3),
                 student_glyphs=400, student=dict(steps=600, batch_size=128, lr=2e-3)),
    "short": dict(clip_glyphs=100, clip=dict(steps=800, batch_size=128, lr=2e-3),
                  sd_glyphs=100, vae=dict(steps=300, batch_size=32, lr=2e-3, kl_weight=1e-4),
                  bank_images=5000, unet=dict(steps=1500, batch_size=128, lr=1e-3),
                  student_glyphs=100, student=dict(steps=300, batch_size=128, lr=2e-3)),
    # what the test suite runs: the recipe end to end in about a minute, teachers just above chance
    "test": dict(clip_glyphs=30, clip=dict(steps=250, batch_size=64, lr=3e-3),
                 sd_glyphs=30, vae=dict(steps=80, batch_size=32, lr=3e-3, kl_weight=1e-4),
                 bank_images=1500, unet=dict(steps=300, batch_size=64, lr=2e-3),
                 student_glyphs=20, student=dict(steps=20, batch_size=32, lr=3e-3)),
}
STUDENTS = ("vit-base", "resnet50")  # clip_vit-b16 is copied from the CLIP teacher's image tower
# the budget entries each part depends on (a kept part must have been trained with the same)
PART_SETTINGS = {"clip": ("clip_glyphs", "clip"), "stable_diffusion": ("sd_glyphs", "vae", "bank_images", "unet"),
                 **{f"student_{b}": ("student_glyphs", "student") for b in STUDENTS}}


class Progress:
    """One line per part and about every 10 % of a loop, with the elapsed time and what comes next."""

    def __init__(self, say: Callable[[str], None] = print):
        self.say = say
        self.start = time.time()

    def line(self, message: str) -> None:
        self.say(f"[{time.time() - self.start:6.0f} s] {message}")

    def loop(self, part: str, following: str) -> Callable[[int, int, str], None]:
        def report(step: int, steps: int, message: str) -> None:
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                self.line(f"{part}: step {step + 1}/{steps}, {message} (next: {following})")
        return report


@contextlib.contextmanager
def seeded(seed: int, threads: int | None):
    """Seeded (and on `threads` threads, if given), leaving the caller's RNG and thread count as they were."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(previous)


def train_clip(folder: Path, budget: dict, progress: Progress, threads: int | None = None) -> None:
    from ddg_sweep.models.hub import quiet_hf_logging

    quiet_hf_logging()
    tokenizer = tiny.tiny_clip_tokenizer()
    with seeded(0, threads):
        model = tiny.clip_model(tokenizer)
        progress.line(f"clip: rendering {10 * budget['clip_glyphs']} synthetic digits")
        data = SyntheticDigits(per_digit=budget["clip_glyphs"], seed=1)
        pretraining.train_clip(model, tokenizer, data, seed=2, log=progress.loop("clip", "the SD VAE"),
                               **budget["clip"])
    model.save_pretrained(folder / tiny.CLIP_FOLDER)
    tokenizer.save_pretrained(folder / tiny.CLIP_FOLDER)
    student = tiny.student_model("clip_vit-b16")  # the CLIP image tower, as the paper's CLIP-initialised student
    student.vision_model.load_state_dict(model.vision_model.state_dict())
    student.visual_projection.load_state_dict(model.visual_projection.state_dict())
    student.save_pretrained(folder / tiny.STUDENT_FOLDER.format("clip_vit-b16"))


def train_sd(folder: Path, budget: dict, progress: Progress, threads: int | None = None) -> None:
    import transformers
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from ddg_sweep.models.hub import quiet_hf_logging

    quiet_hf_logging()
    tokenizer = tiny.tiny_clip_tokenizer()
    clip = transformers.CLIPModel.from_pretrained(folder / tiny.CLIP_FOLDER, local_files_only=True)
    scheduler = DDPMScheduler(**tiny.SD_SCHEDULE)
    with seeded(0, threads):
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**tiny.text_config(tokenizer)))
        text_encoder.load_state_dict(clip.text_model.state_dict())
        text_encoder.eval()
        vae, unet = tiny.vae_model(), tiny.unet_model()
        progress.line(f"stable diffusion: rendering {10 * budget['sd_glyphs']} synthetic digits")
        data = SyntheticDigits(per_digit=budget["sd_glyphs"], seed=3)
        pretraining.train_vae(vae, data, target_scale=tiny.SD_LATENT_SCALE, resolution=tiny.SD_RESOLUTION,
                              log=progress.loop("sd vae", "encoding the UNet's images"), **budget["vae"])
        vae.requires_grad_(False)
        progress.line(f"stable diffusion: encoding {budget['bank_images']} styled digits into latents")
        bank = pretraining.encode_bank(vae, data, budget["bank_images"], tiny.SD_RESOLUTION, tiny.SD_LATENT_SCALE)

        @torch.no_grad()
        def encode_prompts(prompts: list[str]) -> torch.Tensor:
            tokens = tokenizer(prompts, padding="max_length", max_length=tiny.PROMPT_LENGTH, return_tensors="pt")
            return text_encoder(input_ids=tokens.input_ids).last_hidden_state

        pretraining.train_unet(unet, bank, encode_prompts, scheduler.alphas_cumprod.float(), seed=4,
                               log=progress.loop("sd unet", "the students"), **budget["unet"])
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / tiny.SD_FOLDER)


def train_student(folder: Path, backbone: str, budget: dict, progress: Progress, threads: int | None = None) -> None:
    from ddg_sweep.models.hub import quiet_hf_logging
    from ddg_sweep.models.student import Student

    quiet_hf_logging()
    with seeded(5, threads):
        model = tiny.student_model(backbone)
        student = Student(backbone, model)
        data = SyntheticDigits(per_digit=budget["student_glyphs"], seed=6)
        pretraining.train_classifier(student, student, student.n_outputs, data,
                                     log=progress.loop(f"student {backbone}", "done"), **budget["student"])
    model.save_pretrained(folder / tiny.STUDENT_FOLDER.format(backbone))


def train_all(folder: Path, budget_name: str = "full", threads: int | None = None,
              say: Callable[[str], None] = print) -> dict:
    """Every tiny model into `folder`; returns (and writes) what was done and how long each part took.

    A part already finished in `folder` by an interrupted call with the same budget is kept.
    """
    from ddg_sweep.io import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    budget = BUDGETS[budget_name]
    progress = Progress(say)
    record = folder / "training.json"
    earlier = json.loads(record.read_text()) if record.is_file() else {}
    kept = {name: seconds for name, seconds in earlier.get("seconds", {}).items()
            if all(earlier["settings"].get(key) == budget[key] for key in PART_SETTINGS[name])}
    if set(kept) != set(earlier.get("seconds", {})):
        raise UserError(f"{folder} holds parts trained with other settings "
                        f"({', '.join(sorted(set(earlier['seconds']) - set(kept)))}); pass a new folder to --train")
    summary = {"budget": budget_name, "settings": budget, "seconds": kept,
               "torch": torch.__version__, "threads": threads or torch.get_num_threads()}
    parts = [("clip", lambda: train_clip(folder, budget, progress, threads)),
             ("stable_diffusion", lambda: train_sd(folder, budget, progress, threads))]
    parts += [(f"student_{b}", lambda b=b: train_student(folder, b, budget, progress, threads)) for b in STUDENTS]
    for name, part in parts:
        if name in summary["seconds"]:
            progress.line(f"{name}: kept from the earlier run ({summary['seconds'][name]:.0f} s)")
            continue
        began = time.time()
        part()
        summary["seconds"][name] = round(time.time() - began, 1)
        atomic_write_json(record, summary)
        progress.line(f"{name} done in {summary['seconds'][name]:.0f} s")
    return summary
