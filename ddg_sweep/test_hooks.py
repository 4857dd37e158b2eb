"""The test suite's hooks into product code: environment variables, all listed here, read only
through `hook_value`. Unset (as outside the tests), each changes nothing.

| variable                      | value   | effect                                                        |
|-------------------------------|---------|---------------------------------------------------------------|
| `DDG_SWEEP_FAULT_AFTER_STEP`  | step N  | every trial of a sweep raises once, on its first attempt,     |
|                               |         | after step N (the driver puts it in each job's payload;       |
|                               |         | tests/test_sweep.py: the retry resumes from the checkpoint)   |
| `DDG_SWEEP_AGGREGATE_PAUSE`   | seconds | `full-benchmark` sleeps this long between the aggregate and   |
|                               |         | the tables (tests/test_faults_driver.py: a window to kill it  |
|                               |         | mid-aggregation)                                              |
"""
from __future__ import annotations

import os

HOOKS = {  # name -> (environment variable, type of its value)
    "fault_after_step": ("DDG_SWEEP_FAULT_AFTER_STEP", int),
    "aggregate_pause": ("DDG_SWEEP_AGGREGATE_PAUSE", float),
}


def hook_value(name: str) -> int | float | None:
    """The hook's value when its variable is set (and not empty), else None."""
    variable, kind = HOOKS[name]
    value = os.environ.get(variable)
    return kind(value) if value else None

