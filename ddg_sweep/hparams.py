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
ALIGNED = ("VL2V", "DDG")  # algorithms with the CLIP teacher and SWAD


@dataclass(frozen=True)
class HParam:
    name: str
    algorithms: tuple[str, ...]
    default: Callable[[str, str], Any]  # (dataset, models family) -> value
    draw: Callable[[np.random.RandomState], Any] | None = None
    check: Callable[[Any], str | None] = lambda v: None  # returns what is wrong
    help: str = ""


def _const(value):
    return lambda dataset, models: value


def _demo_or(demo_value, paper_value):
    """Step counts: the paper's for DomainBed datasets, a small budget for the demo."""
    return lambda dataset, models: demo_value if get_dataset_spec(dataset).builtin else paper_value


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
    return None if v >= 8 and v % 8 == 0 else "must be a positive multiple of 8 (the VAE downsamples by 8)"


_ALL = ALGORITHMS
REGISTRY: tuple[HParam, ...] = (
    HParam("models", _ALL, lambda d, m: m, check=_one_of(*MODEL_FAMILIES),
           help="model family: tiny (built from configs) or paper (pretrained weights)"),
    HParam("backbone", _ALL, lambda d, m: "resnet50" if m == "tiny" else "clip_vit-b16",
           check=_one_of(*BACKBONES),
           help="student backbone (tiny family: the small ResNet, the only tiny student that learns "
                "from scratch within a demo's step budget)"),
    HParam("lr", _ALL, lambda d, m: 1e-3 if m == "tiny" else 5e-5, lambda r: float(10 ** r.uniform(-5.5, -3.5)), _positive,
           "Adam learning rate (tiny models start from random weights, hence higher)"),
    HParam("weight_decay", _ALL, _const(0.0), lambda r: float(10 ** r.uniform(-6, -2)),
           _non_negative, "Adam weight decay"),
    HParam("batch_size", _ALL, _const(32), lambda r: int(2 ** r.uniform(3, 5.5)), _positive,
           "images per training environment per step"),
    HParam("align_mix", ALIGNED, _const(0.5), check=_in_unit,
           help="Stage I mix a: weight of the CLIP image term against the class text term"),
    HParam("stage1_trainable", ("DDG",), lambda d, m: "all" if m == "tiny" else "projection",
           check=_one_of("projection", "all"),
           help="parameters Stage I trains (tiny family: all, since its student starts from random weights)"),
    HParam("stage1_steps", ("DDG",), _demo_or(60, 5000), check=_non_negative,
           help="steps of Stage I before Stage II starts"),
    HParam("swad_start", ALIGNED, _demo_or(60, 5000), check=_non_negative,
           help="step from which SWAD averages the student"),
    HParam("swad_n_converge", ALIGNED, _const(3), check=_positive),
    HParam("swad_n_tolerance", ALIGNED, _const(6), check=_positive),
    HParam("swad_tolerance_ratio", ALIGNED, _const(0.3), check=_non_negative),
    HParam("lmd", ("DDG",), _const(0.5), lambda r: float(10 ** r.uniform(-1, 0.5)), _non_negative,
           "weight of the alignment loss in Stage II"),
    HParam("cfg_scale", ("DDG",), _const(3.0), lambda r: float(r.uniform(1.0, 7.5)), _non_negative,
           "domain-debiasing guidance scale w (1 = plain diffusion distillation)"),
    HParam("negative", ("DDG",), _const("domain"), check=_one_of("domain", "null"),
           help="guidance negative: the source domain's style prompt, or the empty prompt"),
    HParam("conditioning", ("DDG",), _const("probs"), check=_one_of("probs", "projected"),
           help="how the student conditions the UNet"),
    HParam("sd_resolution", ("DDG",), lambda d, m: 32 if m == "tiny" else 512, check=_resolution,
           help="image side fed to the VAE"),
    HParam("t_min", ("DDG",), _const(0), check=_timestep, help="smallest noise timestep"),
    HParam("t_max", ("DDG",), _const(999), check=_timestep, help="largest noise timestep"),
    HParam("n_noise", ("DDG",), _const(1), check=_positive, help="noise draws per image"),
)
BY_NAME = {h.name: h for h in REGISTRY}


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
        expected = type(hparams[name])
        try:
            hparams[name] = expected(value) if expected is not float else float(value)
        except (TypeError, ValueError):
            raise UserError(f"hyperparameter {name}={value!r} is not a {expected.__name__}") from None
    check_hparams(hparams)
    return hparams


def check_hparams(hparams: dict, steps: int | None = None) -> None:
    """One-line errors for out-of-range values, including those tied to the step budget."""
    for name, value in hparams.items():
        if name in BY_NAME:
            problem = BY_NAME[name].check(value)
            if problem:
                raise UserError(f"hyperparameter {name}={value!r} {problem}")
    if hparams.get("t_min", 0) > hparams.get("t_max", 999):
        raise UserError(f"t_min={hparams['t_min']} is above t_max={hparams['t_max']}; pass --t-min <= --t-max")
    if steps is not None:
        for name in ("stage1_steps", "swad_start"):
            if name in hparams and hparams[name] > steps:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{name}={hparams[name]} is beyond --steps {steps}; pass {flag} <= {steps}")
