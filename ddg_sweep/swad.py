"""SWAD: dense weight averaging over the loss valley (Cha et al., 2021), as DDG uses it.

Segments. From step `swad_start` on, every optimiser step's weights join a running
mean; each checkpoint closes the current *segment* and scores it with the online
network's validation loss (mean cross-entropy on the training domains' `out` splits).

The loss-valley rule (`LossValley`, pure; segment i has loss L_i):

1. Convergence: the first segment c such that L_c <= L_{c+1..c+n_converge-1}, i.e. the
   loss has not gone below L_c in the n_converge - 1 segments after it. The valley's
   threshold is (1 + tolerance_ratio) * mean(L_c .. L_{c+n_converge-1}).
2. The average starts at segment c (always included).
3. It extends segment by segment: segment j > c joins while the smoothed loss
   min(L_j .. L_{j+n_tolerance-1}) stays <= threshold (n_tolerance segments of look-ahead,
   so a short spike inside the valley does not end it). The first j whose smoothed loss
   is above the threshold ends the valley for good; later segments never join.
4. At the end of training the segments still waiting for their look-ahead are judged on
   the segments that exist (a shorter window).

This follows SWAD's reference LossValley, without its look-back before c (the doc says
the average starts where the loss converges). The final weights are the step-weighted
mean of the chosen segments' running means, i.e. the plain mean of every step's weights
in the window. Buffers (BatchNorm running statistics) are not averaged: averaging
weights does not average statistics, so `recompute_batchnorm` re-estimates them for
the averaged weights on training-domain data before evaluation (as
torch.optim.swa_utils.update_bn does). Recomputing rather than freezing BatchNorm
(SWAD's reference freezes it in its ResNet) leaves training itself unchanged for
every algorithm; students without BatchNorm (the ViTs) are unaffected.

Fallbacks, reported in `averaged()`'s info: the loss never converged -> the last
n_converge segments (or fewer, if fewer exist); no checkpoint after swad_start but steps
were fed -> those steps; nothing fed -> no averaged model.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from ddg_sweep.hparams import resolve_step


class LossValley:
    """The decision rule alone, fed one segment loss at a time (see the module docstring)."""

    def __init__(self, n_converge: int, n_tolerance: int, tolerance_ratio: float):
        self.n_converge = n_converge
        self.n_tolerance = n_tolerance
        self.tolerance_ratio = tolerance_ratio
        self.losses: list[float] = []
        self.converged_at: int | None = None
        self.threshold: float | None = None
        self.last_accepted = -1
        self.dead = False

    @property
    def converged(self) -> bool:
        return self.converged_at is not None

    def observe(self, loss: float) -> list[int]:
        """Record segment len(losses)'s loss; return the segment indices that now join the average."""
        self.losses.append(float(loss))
        if self.dead:
            return []
        accepted = []
        if not self.converged and len(self.losses) >= self.n_converge:
            start = len(self.losses) - self.n_converge
            window = self.losses[start:]
            if window[0] <= min(window):
                self.converged_at = start
                self.threshold = (1 + self.tolerance_ratio) * sum(window) / len(window)
                self.last_accepted = start
                accepted.append(start)
        if self.converged:
            accepted += self._extend(partial_windows=False)
        return accepted

    def finish(self) -> list[int]:
        """End of training: judge the waiting segments on the look-ahead that exists."""
        return self._extend(partial_windows=True) if self.converged and not self.dead else []

    def _extend(self, partial_windows: bool) -> list[int]:
        accepted = []
        j = self.last_accepted + 1
        while not self.dead and j < len(self.losses):
            window = self.losses[j:j + self.n_tolerance]
            if len(window) < self.n_tolerance and not partial_windows:
                break
            if min(window) > self.threshold:
                self.dead = True
                break
            accepted.append(j)
            self.last_accepted = j
            j += 1
        return accepted

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "converged_at": self.converged_at, "threshold": self.threshold,
                "last_accepted": self.last_accepted, "dead": self.dead}

    def load_state_dict(self, state: dict) -> None:
        self.losses = list(state["losses"])
        self.converged_at = state["converged_at"]
        self.threshold = state["threshold"]
        self.last_accepted = state["last_accepted"]
        self.dead = state["dead"]


def loss_valley_window(losses: list[float], n_converge: int = 3, n_tolerance: int = 6,
                       tolerance_ratio: float = 0.3) -> tuple[int, int] | None:
    """The (first, last) segment indices the rule averages over a whole run, or None."""
    valley = LossValley(n_converge, n_tolerance, tolerance_ratio)
    accepted = [j for loss in losses for j in valley.observe(loss)] + valley.finish()
    return (accepted[0], accepted[-1]) if accepted else None


def _merge(total: dict | None, segment: dict) -> dict:
    """Step-weighted mean of two averages; buffers from the later one."""
    if total is None:
        return {key: copy.deepcopy(value) for key, value in segment.items()}
    n = total["n_steps"] + segment["n_steps"]
    weight = segment["n_steps"] / n
    mean = [a + (b.to(a.device) - a) * weight for a, b in zip(total["mean"], segment["mean"])]
    return {"names": total["names"], "mean": mean, "n_steps": n, "start": total["start"], "end": segment["end"],
            "buffers": segment["buffers"], "n_segments": total["n_segments"] + segment["n_segments"]}


class SWAD:
    """Dense averaging of a network's weights, windowed by the loss valley.

    Calls: `update(network, step)` after every optimiser step; `end_segment(step, val_loss)`
    at every checkpoint; `averaged()` at the end; `state_dict()` / `load_state_dict()` to resume.
    """

    def __init__(self, hparams: dict, steps: int):
        self.swad_start = resolve_step(hparams["swad_start"], steps)
        self.valley = LossValley(int(hparams["swad_n_converge"]), int(hparams["swad_n_tolerance"]),
                                 float(hparams["swad_tolerance_ratio"]))
        self.open_segment: dict | None = None  # running mean of the steps since the last checkpoint
        self.closed: dict[int, dict] = {}  # segments that may still join the average (on CPU)
        self.final: dict | None = None  # running mean of the segments that joined
        self.segment_log: list[dict] = []  # every closed segment's steps and loss
        self.template: nn.Module | None = None

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        if step < self.swad_start:
            return
        self.template = network
        params = [p.detach() for _, p in network.named_parameters()]
        segment = self.open_segment
        if segment is None:
            self.open_segment = {"names": [name for name, _ in network.named_parameters()],
                                 "mean": [p.clone() for p in params], "n_steps": 1, "start": step, "end": step}
            return
        segment["n_steps"] += 1
        segment["end"] = step
        torch._foreach_lerp_(segment["mean"], params, 1.0 / segment["n_steps"])

    def end_segment(self, step: int, val_loss: float) -> None:
        """Close the segment fed since the last checkpoint and score it (no-op before swad_start)."""
        if self.open_segment is None:
            return
        index = len(self.segment_log)
        self.closed[index] = self._freeze_open_segment()
        self.segment_log.append({"start": self.open_segment["start"], "end": self.open_segment["end"],
                                 "n_steps": self.open_segment["n_steps"], "loss": float(val_loss)})
        self.open_segment = None
        for accepted in self.valley.observe(val_loss):
            self.final = _merge(self.final, self.closed.pop(accepted))
        self._forget_unusable()

    def _freeze_open_segment(self) -> dict:
        segment = self.open_segment
        network = self.template
        buffers = {} if network is None else {name: b.detach().cpu().clone() for name, b in network.named_buffers()}
        return {"mean": [t.cpu() for t in segment["mean"]], "names": segment["names"],
                "n_steps": segment["n_steps"], "start": segment["start"], "end": segment["end"],
                "buffers": buffers, "n_segments": 1}

    def _forget_unusable(self) -> None:
        """Keep only the segments the rule (or its fallback) may still average."""
        if self.valley.dead:
            keep_from = len(self.segment_log)
        elif self.valley.converged:
            keep_from = self.valley.last_accepted + 1
        else:
            keep_from = len(self.segment_log) - self.valley.n_converge
        for index in [i for i in self.closed if i < keep_from]:
            del self.closed[index]

    def _chosen(self) -> tuple[dict | None, str]:
        """The averaged weights (without changing any state) and how they were chosen."""
        if self.valley.converged:
            valley = copy.deepcopy(self.valley)
            total = self.final
            for index in valley.finish():
                total = _merge(total, self.closed[index])
            return total, "loss valley"
        if self.closed:
            total = None
            for index in sorted(self.closed):
                total = _merge(total, self.closed[index])
            return total, (f"fallback: the validation loss never converged; averaged the last "
                           f"{total['n_segments']} segments")
        if self.open_segment is not None:
            segment = {**self._freeze_open_segment(), "n_segments": 0}
            return segment, "fallback: no checkpoint after swad_start; averaged every step since swad_start"
        return None, "no step at or after swad_start was fed; nothing to average"

    def averaged(self, template: nn.Module | None = None) -> tuple[nn.Module | None, dict]:
        """(a copy of the network with the averaged weights, or None; what was averaged)."""
        total, rule = self._chosen()
        if total is None:
            return None, {"swad_start_step": None, "swad_end_step": None, "n_averaged": 0,
                          "n_segments": 0, "rule": rule}
        template = template if template is not None else self.template
        if template is None:
            raise ValueError("SWAD.averaged() after a resume needs the network as template")
        model = copy.deepcopy(template)
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in zip(total["names"], total["mean"]):
                params[name].copy_(value)
            for name, value in total["buffers"].items():
                buffers[name].copy_(value)
        info = {"swad_start_step": total["start"], "swad_end_step": total["end"],
                "n_averaged": total["n_steps"], "n_segments": total["n_segments"], "rule": rule,
                "converged": self.valley.converged, "threshold": self.valley.threshold}
        return model, info

    def state_dict(self) -> dict:
        return copy.deepcopy({"swad_start": self.swad_start, "valley": self.valley.state_dict(),
                              "open_segment": self.open_segment, "closed": self.closed, "final": self.final,
                              "segment_log": self.segment_log})

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self.swad_start = state["swad_start"]
        self.valley.load_state_dict(state["valley"])
        self.open_segment = state["open_segment"]
        self.closed = {int(index): segment for index, segment in state["closed"].items()}
        self.final = state["final"]
        self.segment_log = state["segment_log"]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics by their plain average over `batches`.

    Returns the number of images seen (0, and nothing changed, for a model without BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    was_training = model.training
    model.train()
    seen = 0
    for x in batches:
        model(x)
        seen += len(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return seen
