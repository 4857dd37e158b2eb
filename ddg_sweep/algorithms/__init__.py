"""The algorithm registry: ERM here; VL2V and DDG (issue 4) add themselves below."""
from __future__ import annotations

import importlib

from ddg_sweep.errors import UserError

# name -> "module:Class", imported only when a run builds it
REGISTRY = {
    "ERM": "ddg_sweep.algorithms.erm:ERM",
    "VL2V": "ddg_sweep.algorithms.vl2v:VL2V",
    "DDG": "ddg_sweep.algorithms.ddg:DDG",
}


def get_algorithm_class(name: str):
    if name not in REGISTRY:
        raise UserError(f"unknown algorithm {name!r}; choose one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
