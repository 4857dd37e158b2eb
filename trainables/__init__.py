"""The Ray side of ddg-sweep; with the CLI, all that imports Ray.

- `cluster`: trial resources, connecting (and the auth token), leftover cleanup, the lock.
- `driver`: `run_sweep` (a grid of jobs) and `run_search` (a sweep's searches), one fit loop.
- `ddg_trainable`, `search_trial`: what Tune runs (one job; a search trial's jobs).
- `search_tuner`: searchers and the ASHA scheduler per search; `tracking`: tracker callbacks.

Layers: the method core (`ddg_sweep` without its CLI) and `search_spaces` never import this
package; this package never imports the CLI (`ddg_sweep.cli`, `ddg_sweep.run`), which calls it
(tests/test_layers.py).
"""
from trainables.ddg_trainable import GAUGES, DDGTrial, train_job, trial_label

__all__ = ["GAUGES", "DDGTrial", "train_job", "trial_label"]
