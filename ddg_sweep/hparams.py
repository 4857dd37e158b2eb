"""Every hyperparameter, its default (the paper's), its random draw and its check.

`--hparams-seed 0` gives the defaults; any other seed draws each hparam that has a
random distribution from an RNG seeded by (algorithm, dataset, hparams seed,
trial seed, name), as DomainBed's hparams_registry does. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.seeding import seed_hash

ALGORITHMS = ("ERM", "VL2V", "DDG")
MODEL_FAMILIES = ("tiny", "paper")
BACKBONES = ("clip_vit-b16", "vit-base", "resnet50")
ALIGNED = ("VL2V", "DDG")  # algorithms with the CLIP teacher, its alignment loss and two stages
GUIDANCE_FORMS = ("prediction", "target", "interpolate")  # DDG's L_diff forms (algorithms/losses.py)


def frozen_passes(form: str, scale: float) -> tuple[str, ...]:
    """The no-grad UNet passes a form needs beside the student's: the domain style's ("negative")
    unless w = 1, and for `target` the label's class prompt ("label"). Here, not in
    algorithms/losses.py, because `plan` costs a Stage II step by them without importing torch."""
    if scale == 1.0:
        return ()
    return ("negative", "label") if form == "target" else ("negative",)


@dataclass(frozen=True)
class HParam:
    name: str
    algorithms: tuple[str, ...]
    default: Callable[[str, str], Any]  # (dataset, models family) -> value
    draw: Callable[[np.random.RandomState], Any] | None = None
    check: Callable[[Any], str | None] = lambda v: None  # returns what is wrong
    help: str = ""
    convert: Callable[[Any], Any] | None = None  # a value from a flag or a file; None: the default's type


def _const(value):
    return lambda dataset, models: value


def _family(tiny_value, paper_value):
    return lambda dataset, models: tiny_value if models == "tiny" else paper_value


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def _in_unit(v):
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def _timestep(v):
    return None if 0 <= v <= 999 else "must be a DDPM timestep in 0..999"


def _resolution(v):
    return None if v >= 8 and v % 8 == 0 else "must be a positive multiple of 8 (SD's VAE downsamples by 8)"


def is_fraction(value) -> bool:
    """A stage length written as a fraction of --steps (0 < v < 1), not as a step count."""
    return isinstance(value, float) and 0 < value < 1


def step_or_fraction(value):
    """'5000' -> 5000 (a step), '0.625' -> 0.625 (of --steps); integral floats become steps."""
    number = float(value)
    if number.is_integer():
        return int(number)
    return number


def _step_or_fraction_check(v):
    if is_fraction(v) or (isinstance(v, int) and v >= 0):
        return None
    return "must be a step count >= 0 or a fraction of --steps in (0, 1)"


def resolve_step(value, steps: int) -> int:
    """The step a stage boundary falls on: a fraction of `steps`, rounded, or the step count itself."""
    return int(round(value * steps)) if is_fraction(value) else int(value)


# The paper's stage proportions: Stage II and SWAD start at 5000 of 8000 steps.
PAPER_STAGE_FRACTION = 0.625

_ALL = ALGORITHMS
REGISTRY: tuple[HParam, ...] = (
    HParam("models", _ALL, lambda d, m: m, check=_one_of(*MODEL_FAMILIES),
           help="model family: tiny (built from configs) or paper (pretrained weights)"),
    HParam("backbone", _ALL, _const("clip_vit-b16"), check=_one_of(*BACKBONES),
           help="student backbone (tiny family: clip_vit-b16 is the tiny CLIP's image tower; the "
                "others are pretrained on synthetic digits)"),
    HParam("lr", _ALL, _family(1e-3, 5e-5), lambda r: float(10 ** r.uniform(-5.5, -3.5)), _positive,
           "Adam learning rate (tiny family: 1e-3, the better of 3e-4 and 1e-3 by training-domain "
           "validation on the demo)"),
    HParam("weight_decay", _ALL, _const(0.0), lambda r: float(10 ** r.uniform(-6, -2)),
           _non_negative, "Adam weight decay"),
    HParam("batch_size", _ALL, _family(16, 32), lambda r: int(2 ** r.uniform(3, 5.5)), _positive,
           "images per training environment per step"),
    HParam("lmd", ALIGNED, _const(0.5), lambda r: float(r.uniform(0, 1)), _in_unit,
           "alignment loss mix a (VL2V-ADiP's --lmd): L_align = -(a cos(z, v) + (1 - a) cos(z, t_y)), "
           "the CLIP image term against the class text term"),
    HParam("align_weight", ("DDG",), _const(1.0), lambda r: float(10 ** r.uniform(-1, 0.5)), _non_negative,
           "Stage II weight beta of L_align: L = L_diff + beta L_align (not published; 1.0 assumed)"),
    HParam("stage1_steps", ALIGNED, _const(PAPER_STAGE_FRACTION), check=_step_or_fraction_check,
           convert=step_or_fraction,
           help="Stage I length (projection-only alignment): a step count, or a fraction of --steps "
                "(default 0.625: the paper's 5000 of 8000)"),
    HParam("stage1_trainable", ALIGNED, _const("projection"), check=_one_of("projection", "all"),
           help="parameters Stage I trains: the projection P (VL2V-ADiP's stage 1) or all"),
    HParam("swad_start", _ALL, _const(PAPER_STAGE_FRACTION), check=_step_or_fraction_check,
           convert=step_or_fraction,
           help="step from which SWAD averages the student: a step count or a fraction of --steps"),
    HParam("swad_n_converge", _ALL, _const(3), check=_positive,
           help="SWAD: segments whose validation loss must not undercut the first (convergence)"),
    HParam("swad_n_tolerance", _ALL, _const(6), check=_positive,
           help="SWAD: look-ahead segments when deciding whether the loss left the valley"),
    HParam("swad_tolerance_ratio", _ALL, _const(0.3), check=_non_negative,
           help="SWAD: the valley ends once the loss exceeds (1 + ratio) x its converged level"),
    HParam("cfg_scale", ("DDG",), _const(3.0), lambda r: float(r.uniform(1.0, 7.5)), _non_negative,
           "domain-debiasing guidance scale w, diffusers' convention (1 = plain diffusion distillation; "
           "the other convention's eps_c + w (eps_c - eps_neg) is `prediction` at w + 1)"),
    HParam("guidance_form", ("DDG",), _const("prediction"), check=_one_of(*GUIDANCE_FORMS),
           help="how the guidance enters L_diff (docs/method.md): prediction (the literal CFG loss, the "
                "paper's reading), target (a stop-gradient guided target; one more no-grad UNet pass) or "
                "interpolate (the student's branch divided by w)"),
    HParam("negative", ("DDG",), _const("domain"), check=_one_of("domain", "null"),
           help="guidance negative: the source domain's style prompt, or the empty prompt"),
    HParam("conditioning", ("DDG",), _const("probs"), check=_one_of("probs", "projected"),
           help="how the student conditions the UNet"),
    HParam("sd_resolution", ("DDG",), _family(32, 512), check=_resolution,
           help="image side fed to the VAE (SD's latents are 1/8 of it, 64x64 at 512; the tiny VAE's "
                "1/4, 8x8 at 32)"),
    HParam("t_min", ("DDG",), _const(0), check=_timestep, help="smallest noise timestep"),
    HParam("t_max", ("DDG",), _const(999), check=_timestep, help="largest noise timestep"),
    HParam("n_noise", ("DDG",), _const(1), check=_positive, help="noise draws per image"),
)
BY_NAME = {h.name: h for h in REGISTRY}

# Hparams added after PROTOCOL_VERSION 2, with the value at which a run computes exactly what
# runs computed before the hparam existed. At that value it is left out of a job's identity,
# so earlier sweeps' job ids, finished runs and checkpoints stay valid.
ADDED_LATER = {"guidance_form": "prediction"}


def identity_hparams(hparams: dict) -> dict:
    """The hparams a job id and a run's identity hash (see ADDED_LATER)."""
    return {k: v for k, v in hparams.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}


def default_models(dataset: str) -> str:
    return "tiny" if get_dataset_spec(dataset).builtin else "paper"


def names_for(algorithm: str) -> list[str]:
    return [h.name for h in REGISTRY if algorithm in h.algorithms]


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    return algorithm


def resolve_hparams(algorithm: str, dataset: str, hparams_seed: int = 0, trial_seed: int = 0,
                    models: str | None = None, overrides: dict | None = None) -> dict:
    """The full hparams dict of one run: defaults or a random draw, then overrides."""
    check_algorithm(algorithm)
    get_dataset_spec(dataset)
    if hparams_seed < 0:
        raise UserError(f"--hparams-seed must be >= 0, got {hparams_seed}")
    models = models or default_models(dataset)
    if models not in MODEL_FAMILIES:
        raise UserError(f"unknown model family {models!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    hparams = {}
    for h in REGISTRY:
        if algorithm not in h.algorithms:
            continue
        value = h.default(dataset, models)
        if hparams_seed != 0 and h.draw is not None:
            rng = np.random.RandomState(seed_hash(algorithm, dataset, hparams_seed, trial_seed, h.name))
            value = h.draw(rng)
        hparams[h.name] = value
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in BY_NAME:
            raise UserError(f"unknown hyperparameter {name!r}; known: {', '.join(BY_NAME)}")
        if name not in hparams:
            raise UserError(f"hyperparameter {name!r} does not apply to {algorithm} "
                            f"(it applies to {', '.join(BY_NAME[name].algorithms)})")
        convert = BY_NAME[name].convert or type(hparams[name])
        try:
            hparams[name] = convert(value)
        except (TypeError, ValueError):
            what = "number" if BY_NAME[name].convert else convert.__name__
            raise UserError(f"hyperparameter {name}={value!r} is not a {what}") from None
    check_hparams(hparams)
    return hparams


def check_hparams(hparams: dict, steps: int | None = None) -> None:
    """One-line errors for out-of-range values, including those tied to the step budget."""
    for name, value in hparams.items():
        if name in BY_NAME:
            problem = BY_NAME[name].check(value)
            if problem:
                raise UserError(f"hyperparameter {name}={value!r} {problem}")
    if hparams.get("guidance_form") == "interpolate" and hparams.get("cfg_scale", 1.0) <= 0:
        raise UserError(f"cfg_scale={hparams['cfg_scale']} with guidance_form=interpolate divides by w; "
                        "pass --cfg-scale > 0")
    if hparams.get("t_min", 0) > hparams.get("t_max", 999):
        raise UserError(f"t_min={hparams['t_min']} is above t_max={hparams['t_max']}; pass --t-min <= --t-max")
    if steps is not None:
        for name in ("stage1_steps", "swad_start"):
            if name in hparams and not is_fraction(hparams[name]) and hparams[name] > steps:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{name}={hparams[name]} is beyond --steps {steps}; pass {flag} <= {steps} "
                                "or a fraction of --steps such as 0.625")
