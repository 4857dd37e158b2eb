"""What every algorithm is: a network to evaluate, an update step, a checkpointable state."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import nn

from ddg_sweep.perf import StepOptions


@dataclass
class RunContext:
    """Everything an algorithm needs to build itself, resolved before any compute."""

    hparams: dict
    dataset: str
    class_names: list[str]  # readable names, in label order
    env_names: list[str]  # every environment, in index order
    train_envs: list[int]  # the environment index of each minibatch given to update()
    steps: int
    device: torch.device
    model_paths: dict = field(default_factory=dict)  # student / clip_teacher / stable_diffusion
    # Already-built components (student, clip_teacher, sd_teacher) used instead of loading
    # from model_paths: the benchmark's full-size random-weight models.
    components: dict = field(default_factory=dict)
    step_options: StepOptions = field(default_factory=StepOptions)  # how steps execute, not what

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class Algorithm(nn.Module, abc.ABC):
    """Subclasses build `self.network` (x -> logits; what is evaluated and SWAD-averaged),
    any other trained modules, and `self.optimizer`; teachers stay out of `trained_modules`.
    """

    def __init__(self, ctx: RunContext):
        super().__init__()
        self.ctx = ctx
        self.hparams = ctx.hparams

    def trained_modules(self) -> nn.ModuleDict:
        """Modules whose weights change in training: checkpointed, nothing else is."""
        return nn.ModuleDict({"network": self.network})

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.trained_modules().parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])

    @abc.abstractmethod
    def update(self, minibatches: list[tuple[torch.Tensor, torch.Tensor]], step: int) -> dict:
        """One optimisation step on one (x, y) batch per training environment.

        Returns the record's scalars: at least `loss`; algorithms with stages add `stage`.
        """

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def state_dict_for_checkpoint(self) -> dict:
        return {"modules": self.trained_modules().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint(self, state: dict) -> None:
        self.trained_modules().load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
