"""`teachers`: what the tiny teachers know about DemoDigits, and where Stage II's gradient points.

Figures (all on DemoDigits, which the teachers never trained on):
- `clip_zero_shot[env]`: the CLIP teacher's zero-shot accuracy;
- `sd_classifier[env]` / `sd_classifier_guided[env]`: Stable Diffusion as a diffusion
  classifier, plain and with DDG's guidance (the demo's w, the environment's domain
  prompt as the negative);
- `prompt_sensitivity[env]`: how much the UNet's prediction moves with the class prompt;
- `stage2_gradient`: on a demo batch, the cosine between dL_diff/dlogits and the supervised
  cross-entropy gradient dCE/dlogits, per sample (mean and share positive) and for the
  batch's gradient averaged over noise draws, at the demo's w and at w = 1, for the student
  as Stage II finds it and for uniform logits. Positive: the teacher pulls the student's
  probabilities toward the right class. With w > 1 the guided loss is smallest when the
  conditioning carries about 1/w of the class evidence (eps_neg + w (eps_c - eps_neg) must
  match eps), so against a confident student the guided gradient turns back.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ddg_sweep.data.catalog import get_dataset_spec

DATASET = "DemoDigits"


def demo_images(per_env: int, seed: int = 0) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Per environment, `per_env` evaluation images (class-balanced draw, ImageNet-normalised) and labels."""
    import numpy as np
    from PIL import Image

    from ddg_sweep.data.demo_digits import demo_data_dir
    from ddg_sweep.data.folders import read_domain_data
    from ddg_sweep.data.transforms import eval_transform
    from ddg_sweep.models.tiny import TINY_IMAGE_SIZE

    data = read_domain_data(get_dataset_spec(DATASET), demo_data_dir(), check_images=False)
    out = {}
    for env, samples in zip(data.spec.environments, data.environments):
        order = np.random.RandomState(seed).permutation(len(samples))[:per_env]
        xs = [eval_transform(Image.open(samples[i][0]), TINY_IMAGE_SIZE) for i in order]
        out[env] = torch.stack(xs), torch.tensor([samples[i][1] for i in order])
    return out, data.readable_class_names


def teacher_figures(per_env: int = 100, n_draws: int = 16, cfg_scale: float = 3.0, seed: int = 0) -> dict:
    """CLIP zero-shot and SD diffusion-classifier accuracy per DemoDigits environment (tiny teachers)."""
    from ddg_sweep.models.clip_teacher import load_clip_teacher
    from ddg_sweep.models.sd_teacher import domain_prompt, load_sd_teacher
    from ddg_sweep.models.teacher_checks import clip_zero_shot, diffusion_classifier, prompt_sensitivity
    from ddg_sweep.models.tiny import SD_RESOLUTION, tiny_clip_teacher_path, tiny_sd_path

    began = time.time()
    clip, sd = load_clip_teacher(tiny_clip_teacher_path()), load_sd_teacher(tiny_sd_path())
    load_seconds = time.time() - began
    images, class_names = demo_images(per_env, seed)
    figures = {"clip_zero_shot": {}, "sd_classifier": {}, "sd_classifier_guided": {}, "prompt_sensitivity": {}}
    for env, (x, y) in images.items():
        figures["clip_zero_shot"][env] = clip_zero_shot(clip, x, y, class_names)
        figures["sd_classifier"][env] = diffusion_classifier(sd, x, y, class_names, SD_RESOLUTION, n_draws,
                                                             seed=seed)
        figures["sd_classifier_guided"][env] = diffusion_classifier(
            sd, x, y, class_names, SD_RESOLUTION, n_draws, cfg_scale=cfg_scale, negative=domain_prompt(env),
            seed=seed)
        figures["prompt_sensitivity"][env] = prompt_sensitivity(sd, x, y, class_names, SD_RESOLUTION, seed=seed)
    for name in ("clip_zero_shot", "sd_classifier", "sd_classifier_guided", "prompt_sensitivity"):
        figures[name]["mean"] = sum(figures[name].values()) / len(images)
    figures["settings"] = {"images_per_env": per_env, "n_draws": n_draws, "cfg_scale": cfg_scale,
                           "sd_resolution": SD_RESOLUTION, "chance": 1 / len(class_names)}
    figures["load_seconds"] = round(load_seconds, 2)
    return figures


def stage_two_gradient_cosine(test_env: int = 0, batch_size: int = 16, stage1_steps: int = 30, n_draws: int = 8,
                              cfg_scales: tuple[float, ...] = (3.0, 1.0), seed: int = 0) -> dict:
    """Cosine of dL_diff/dlogits with dCE/dlogits on a DemoDigits training batch (see the module docstring).

    A DDG student at the demo's defaults first takes `stage1_steps` Stage I steps (so P is
    aligned, as when Stage II starts); then one batch per training environment is scored, per
    guidance scale, at the student's own logits and at uniform ones (a student that knows
    nothing yet). Every case shares the same noise draws.
    """
    from ddg_sweep.algorithms.base import RunContext
    from ddg_sweep.algorithms.ddg import DDG
    from ddg_sweep.algorithms.losses import probs_conditioning
    from ddg_sweep.hparams import resolve_hparams
    from ddg_sweep.models.paths import resolve_model_paths

    spec = get_dataset_spec(DATASET)
    train_envs = [e for e in range(spec.n_envs) if e != test_env]
    hparams = resolve_hparams("DDG", DATASET, overrides={"batch_size": batch_size, "stage1_steps": stage1_steps})
    images, class_names = demo_images(per_env=10_000, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ctx = RunContext(hparams=hparams, dataset=DATASET, class_names=class_names,
                         env_names=list(spec.environments), train_envs=train_envs, steps=stage1_steps + 1,
                         device=torch.device("cpu"), model_paths=resolve_model_paths("DDG", hparams))
        ddg = DDG(ctx)
        pools = [images[spec.environments[e]] for e in train_envs]
        generator = torch.Generator().manual_seed(seed)

        def minibatches():
            picks = [torch.randint(len(y), (batch_size,), generator=generator) for _, y in pools]
            return [(x[i], y[i]) for (x, y), i in zip(pools, picks)]

        for step in range(stage1_steps):
            ddg.update(minibatches(), step)
        batch = minibatches()
        x, y = torch.cat([b[0] for b in batch]), torch.cat([b[1] for b in batch])
        ddg.eval()
        student = ddg.network(x).detach()
        neg = ddg.negative_conditioning([len(b[1]) for b in batch])
        draws_state = torch.get_rng_state()

        def cosines(logits: torch.Tensor, scale: float) -> dict:
            logits = logits.clone().requires_grad_(True)
            ce_grad = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), logits)[0]
            ddg.hparams["cfg_scale"] = scale
            torch.set_rng_state(draws_state)  # the same (t, eps) draws for every case
            diff_grads = []
            for _ in range(n_draws):
                cond = probs_conditioning(logits, ddg.class_tokens)
                loss = ddg.guided_diffusion_loss(x, cond, neg) * len(x)  # per-sample sums, like the CE above
                diff_grads.append(torch.autograd.grad(loss, logits)[0])
            per_sample = torch.stack([F.cosine_similarity(g, ce_grad, dim=1) for g in diff_grads])  # (draws, B)
            averaged = F.cosine_similarity(torch.stack(diff_grads).mean(0), ce_grad, dim=1)
            return {"single_draw_mean": float(per_sample.mean()),
                    "single_draw_positive_share": float((per_sample > 0).float().mean()),
                    "draw_averaged_mean": float(averaged.mean()),
                    "draw_averaged_positive_share": float((averaged > 0).float().mean())}

        p_true = student.softmax(-1)[torch.arange(len(y)), y]
        result = {"test_env": test_env, "stage1_steps": stage1_steps, "n_draws": n_draws, "batch": len(x),
                  "student_accuracy": float((student.argmax(-1) == y).float().mean()),
                  "student_true_class_prob": float(p_true.mean()), "by_cfg_scale": {}}
        for scale in cfg_scales:
            result["by_cfg_scale"][f"{scale:g}"] = {"student": cosines(student, scale),
                                                    "uniform": cosines(torch.zeros_like(student), scale)}
    return result
