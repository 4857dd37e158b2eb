"""`teachers`: what the tiny teachers know about DemoDigits, and where Stage II's gradient points.

Figures (all on DemoDigits, which the teachers never trained on):
- `clip_zero_shot[env]`: the CLIP teacher's zero-shot accuracy;
- `sd_classifier[env]` / `sd_classifier_guided[env]`: Stable Diffusion as a diffusion
  classifier, plain and with DDG's guidance (the demo's w, the environment's domain
  prompt as the negative);
- `prompt_sensitivity[env]`: how much the UNet's prediction moves with the class prompt;
- `stage2_gradient`: on a demo batch, for each guidance form (prediction, target, interpolate)
  at the demo's w and at w = 1, the cosine between the draw-averaged dL_diff/dlogits and the
  supervised cross-entropy gradient dCE/dlogits (`toward_label`: positive means the teacher
  pulls the student toward the right class) and with the gradient of ||eps_c - eps_neg||^2
  (`domain_pull`: positive means toward the domain-style prediction), across a temperature
  scan of the Stage-I student's logits and for uniform logits. The literal form's loss is
  w ||eps_c - eps||^2 + w (w - 1) ||eps_c - eps_neg||^2 + (no c): smallest when the
  conditioning carries about 1/w of the class evidence, so against a confident student its
  gradient turns back (docs/method.md).
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


TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0)  # scales of the Stage-I student's logits in the scan


def _sign_change(points: list[tuple[float, float]]) -> float | None:
    """The true-class probability where the cosine crosses zero (linear between scan points), if it does."""
    points = sorted(points)
    for (p0, c0), (p1, c1) in zip(points, points[1:]):
        if c0 == 0:
            return p0
        if (c0 > 0) != (c1 > 0):
            return p0 + (p1 - p0) * c0 / (c0 - c1)
    return None


def stage_two_gradient_cosine(test_env: int = 0, batch_size: int = 16, stage1_steps: int = 30, n_draws: int = 8,
                              cfg_scale: float = 3.0, temperatures: tuple[float, ...] = TEMPERATURES,
                              seed: int = 0) -> dict:
    """Where each guidance form's gradient on the student's logits points (see the module docstring).

    A DDG student at the demo's defaults first takes `stage1_steps` Stage I steps (so P is
    aligned, as when Stage II starts); then one batch per training environment is scored. Its
    logits are scaled by each temperature; at each, for every form at w = `cfg_scale` and at
    w = 1, the draw-averaged gradient g = dL_diff/dlogits is compared with
    - the cross-entropy gradient dCE/dlogits (`toward_label`: cosine > 0 means descending L_diff
      raises the label's probability), and
    - the gradient of ||eps_c - eps_neg||^2 (`domain_pull`: cosine > 0 means descending L_diff
      moves the student's prediction toward the domain-style prediction).
    Every case shares the same noise draws, and the forms share each draw's UNet passes.
    """
    from ddg_sweep.algorithms.base import RunContext
    from ddg_sweep.algorithms.ddg import DDG
    from ddg_sweep.algorithms.losses import diffusion_loss, guidance_loss, probs_conditioning
    from ddg_sweep.hparams import GUIDANCE_FORMS, resolve_hparams
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
        teacher = ddg.sd_teacher
        with torch.no_grad():
            x0 = teacher.encode_images(x, hparams["sd_resolution"])
        draws = torch.Generator().manual_seed(seed + 1)
        noise = [(torch.randint(hparams["t_min"], hparams["t_max"] + 1, (len(x),), generator=draws),
                  torch.randn(x0.shape, generator=draws)) for _ in range(n_draws)]
        with torch.no_grad():  # the frozen predictions of each draw: domain style and the label's prompt
            frozen = []
            for t, eps in noise:
                x_t = teacher.add_noise(x0, t, eps)
                frozen.append((x_t, teacher.predict_noise(x_t, t, neg).float(),
                               teacher.predict_noise(x_t, t, ddg.class_tokens[y]).float()))
        # every form is plain distillation at w = 1 (tests/test_guidance_forms.py): one case for it
        cases = {f"{form} w={cfg_scale:g}": (form, cfg_scale) for form in GUIDANCE_FORMS} | {"plain w=1": ("prediction", 1.0)}

        def gradients(logits: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
            """Per case, the draw-averaged dL/dlogits (and the first draw's), and the pull's gradient."""
            logits = logits.clone().requires_grad_(True)
            summed = {name: torch.zeros_like(logits) for name in cases}
            first = {}
            pull = torch.zeros_like(logits)
            for (t, eps), (x_t, eps_neg, eps_label) in zip(noise, frozen):
                eps_c = teacher.predict_noise(x_t, t, probs_conditioning(logits, ddg.class_tokens)).float()
                for name, (form, w) in cases.items():
                    loss = guidance_loss(form, eps_c, eps_neg, eps, w, eps_label) * len(x)  # per-sample sums
                    grad = torch.autograd.grad(loss, logits, retain_graph=True)[0]
                    summed[name] += grad / n_draws
                    first.setdefault(name, grad)
                pull += torch.autograd.grad(diffusion_loss(eps_c, eps_neg) * len(x), logits)[0] / n_draws
            return summed, first, pull

        def figures_at(logits: torch.Tensor) -> dict:
            probe = logits.clone().requires_grad_(True)
            ce_grad = torch.autograd.grad(F.cross_entropy(probe, y, reduction="sum"), probe)[0]
            summed, first, pull = gradients(logits)
            out = {}
            for name in cases:
                toward = F.cosine_similarity(summed[name], ce_grad, dim=1)
                out[name] = {"toward_label": float(toward.mean()),
                             "toward_label_positive_share": float((toward > 0).float().mean()),
                             "toward_label_single_draw": float(F.cosine_similarity(first[name], ce_grad, dim=1).mean()),
                             "domain_pull": float(F.cosine_similarity(summed[name], pull, dim=1).mean())}
            return out

        scan = []
        for temperature in temperatures:
            scaled = student * temperature
            p_true = scaled.softmax(-1)[torch.arange(len(y)), y]
            scan.append({"temperature": temperature, "true_class_prob": float(p_true.mean()),
                         "cases": figures_at(scaled)})
        result = {"test_env": test_env, "stage1_steps": stage1_steps, "n_draws": n_draws, "batch": len(x),
                  "cfg_scale": cfg_scale, "student_accuracy": float((student.argmax(-1) == y).float().mean()),
                  "student_true_class_prob": float(student.softmax(-1)[torch.arange(len(y)), y].mean()),
                  "temperatures": list(temperatures), "scan": scan,
                  "uniform": figures_at(torch.zeros_like(student)), "sign_change_at_true_class_prob": {}}
        for name in cases:
            points = [(row["true_class_prob"], row["cases"][name]["toward_label"]) for row in scan]
            result["sign_change_at_true_class_prob"][name] = _sign_change(points)
    return result
