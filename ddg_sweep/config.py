"""One run's configuration: what it computes (identity) and where it reads and writes."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ddg_sweep.data.catalog import check_test_envs, get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import check_algorithm, check_hparams, identity_hparams


@dataclass
class RunConfig:
    dataset: str
    algorithm: str
    test_envs: tuple[int, ...]
    steps: int
    hparams: dict
    output_dir: str
    checkpoint_freq: int | None = None  # None: the dataset's (200, DomainNet 1000)
    trial_seed: int = 0
    hparams_seed: int = 0
    seed: int = 0
    holdout_fraction: float = 0.2
    # Where things are, never part of what a run computes:
    data_dir: str | None = None
    student_path: str | None = None
    clip_path: str | None = None
    sd_path: str | None = None
    device: str = "auto"
    num_workers: int | None = None
    eval_all_splits: bool = False  # evaluate training envs' in splits at every checkpoint (evaluate.py)
    extra_args: dict = field(default_factory=dict)  # e.g. job_id, written into records' args

    def __post_init__(self):
        self.test_envs = tuple(self.test_envs)
        if self.checkpoint_freq is None:
            self.checkpoint_freq = get_dataset_spec(self.dataset).checkpoint_freq

    def validate(self) -> None:
        """Every check that needs no data and no weights; one-line UserErrors."""
        spec = get_dataset_spec(self.dataset)
        check_algorithm(self.algorithm)
        self.test_envs = check_test_envs(spec, self.test_envs)
        if self.steps <= 0:
            raise UserError(f"--steps must be > 0, got {self.steps}")
        if self.checkpoint_freq <= 0:
            raise UserError(f"--checkpoint-freq must be > 0, got {self.checkpoint_freq}")
        if not 0 < self.holdout_fraction < 1:
            raise UserError(f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise UserError(f"--device {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.trial_seed < 0 or self.seed < 0:
            raise UserError("--trial-seed and --seed must be >= 0")
        check_hparams(self.hparams, steps=self.steps)
        if not spec.builtin and not self.data_dir:
            raise UserError(f"{self.dataset} is read from disk: pass --data-dir DIR holding "
                            f"{spec.folder}/ (see README, 'Real datasets')")

    def identity(self) -> dict:
        """What the run computes; two runs with equal identity give the same records."""
        return {
            "dataset": self.dataset, "algorithm": self.algorithm, "test_envs": list(self.test_envs),
            "steps": self.steps, "checkpoint_freq": self.checkpoint_freq,
            "trial_seed": self.trial_seed, "hparams_seed": self.hparams_seed, "seed": self.seed,
            "holdout_fraction": self.holdout_fraction, "hparams": identity_hparams(self.hparams),
        }

    def args_record(self) -> dict:
        """The `args` of every record, in DomainBed's vocabulary."""
        args = {k: v for k, v in asdict(self).items() if k not in ("hparams", "extra_args")}
        args["test_envs"] = list(self.test_envs)
        args["task"] = "domain_generalization"
        args.update(self.extra_args)
        return args

    def to_json(self) -> dict:
        return asdict(self) | {"test_envs": list(self.test_envs)}

    @classmethod
    def from_json(cls, obj: dict) -> "RunConfig":
        return cls(**obj)
