"""Walk `full-benchmark`'s arguments: the first-party modules its calls enter, from `main(argv)`
up to the moment Tune would start trials (Ray faked: ray.init, ray.nodes, Tuner.fit; no cluster).

sys.setprofile over Python calls whose frame belongs to ddg_sweep, trainables or search_spaces:
- imported: first-party modules whose body ran; ran: those with a function called;
- entries of a module: distinct call edges (caller function -> callee function) into it from
  another first-party module (module bodies, i.e. imports, not counted);
- climbs: distinct such edges into a module already on the call stack below the caller
  (a call back up the chain, A -> B -> A);
- upward: distinct edges, imports included, from a lower layer into a higher one
  (core ddg_sweep + search_spaces = 0, trainables = 1, ddg_sweep.cli.* and ddg_sweep.run = 2).

    python benchmarks/walk_full_benchmark.py                 # a grid: --preset demo --algorithms ERM
    python benchmarks/walk_full_benchmark.py --preset search --datasets DemoDigits --search random \
        --num-samples 1 --models tiny                        # a search

Tune never starts; OUT is a fresh temporary folder (DemoDigits is built into the cache if missing).
"""
from __future__ import annotations

import collections
import sys
import tempfile
import types

FIRST = ("ddg_sweep", "trainables", "search_spaces")


class Stop(Exception):
    pass


def layer(mod):
    if mod == "ddg_sweep.run" or mod.startswith("ddg_sweep.cli"):
        return 2
    return 1 if mod.split(".")[0] == "trainables" else 0


def fake_ray():
    import ray
    from ray import tune

    session = tempfile.mkdtemp(prefix="walk-session-")
    ray.init = lambda *a, **k: types.SimpleNamespace(address_info={"session_dir": session}, dashboard_url=None)
    ray.nodes = lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}]
    ray.shutdown = lambda: None

    def fit(self):
        raise Stop

    tune.Tuner.fit = fit


def total(table: dict) -> int:
    return sum(map(len, table.values()))


def walk(argv):
    fake_ray()
    from ddg_sweep.run import main

    stack, calls, imported, ran = [], {}, set(), set()
    entries, climbs, upward = (collections.defaultdict(set) for _ in range(3))

    def profile(frame, event, arg):
        if event == "call":
            mod = frame.f_globals.get("__name__", "")
            if mod.split(".")[0] not in FIRST:
                return
            code = frame.f_code
            here = (mod, code.co_name, code.co_firstlineno)
            body = code.co_name == "<module>"
            (imported if body else ran).add(mod)
            if stack and stack[-1][0] != mod:
                edge = (stack[-1], here)
                if layer(stack[-1][0]) < layer(mod):
                    upward[mod].add(edge)
                if not body:
                    entries[mod].add(edge)
                    if any(m == mod for m, _, _ in stack[:-1]):
                        climbs[mod].add(edge)
            stack.append(here)
            calls[id(frame)] = True
        elif event == "return" and calls.pop(id(frame), None):
            stack.pop()

    sys.setprofile(profile)
    try:
        main(argv)
    except Stop:
        pass
    finally:
        sys.setprofile(None)
    return imported, ran, entries, climbs, upward


if __name__ == "__main__":
    out = tempfile.mkdtemp(prefix="walk-out-")
    argv = ["full-benchmark", "--output-dir", out, "--trial-seeds", "0", "--test-envs", "0", "--steps", "8",
            *(sys.argv[1:] or ["--preset", "demo", "--algorithms", "ERM"])]
    imported, ran, entries, climbs, upward = walk(argv)
    print(f"argv: {' '.join(argv[1:])}")
    print(f"first-party modules: {len(imported | ran)} imported or run, {len(ran)} with a function run; "
          f"cross-module call edges: {total(entries)}; climbs back up: {total(climbs)}; "
          f"upward (layer) edges: {total(upward)}")
    for name, table in (("climb", climbs), ("upward", upward)):
        for mod in sorted(table):
            for caller, callee in sorted(table[mod]):
                print(f"    {name} {caller[0]}.{caller[1]} -> {callee[0]}.{callee[1]}")
    for mod in sorted(ran):
        print(f"  {mod:36} entered {len(entries[mod]):3}  climbs {len(climbs[mod]):3}")
