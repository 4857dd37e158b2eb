"""Benchmark: our aggregation against a DomainBed-style collect_results, same sweeps.

    /work/venv/bin/python benchmarks/bench_aggregate.py [--sizes 100000 1000000]
        [--baseline-max 100000] [--keep DIR]

Each measurement runs in its own subprocess, which reports its wall time (reading,
selection, tables; interpreter start and imports excluded) and its peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), after a pass that warms the page
cache. The baseline is a plain
re-implementation of DomainBed's approach (json.loads per line into dicts, a
Query-style list wrapper, per-record Python loops); it exists only for this
comparison, and its tables are checked against ours.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- DomainBed-style baseline
class Q:
    """A list with DomainBed-Query-like helpers (group, map, filter, select, argmax)."""

    def __init__(self, items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self):
        return iter(self.items)

    def group(self, key):
        groups = {}
        for item in self.items:
            groups.setdefault(key(item), []).append(item)
        return Q((k, Q(v)) for k, v in groups.items())

    def map(self, fn):
        return Q(fn(*item) if isinstance(item, tuple) else fn(item) for item in self.items)

    def filter(self, fn):
        return Q(item for item in self.items if fn(item))

    def argmax(self, key):
        return max(self.items, key=key)


def baseline_load(path):
    records = []
    for name in os.listdir(path):
        try:
            with open(os.path.join(path, name, "results.jsonl")) as handle:
                for line in handle:
                    records.append(json.loads(line[:-1]))
        except IOError:
            pass
    return Q(records)


def _n_envs(record):
    return next(i for i in itertools.count() if f"env{i}_out_acc" not in record)


def _singles(records):
    return records.filter(lambda r: len(r["args"]["test_envs"]) == 1)


def iid_run_acc(run_records):
    singles = _singles(run_records)
    if not len(singles):
        return None

    def step_acc(record):
        test_env = record["args"]["test_envs"][0]
        keys = [f"env{i}_out_acc" for i in range(_n_envs(record)) if i != test_env]
        return {"val_acc": np.mean([record[k] for k in keys]),
                "test_acc": record[f"env{test_env}_in_acc"]}
    return singles.map(step_acc).argmax(lambda acc: acc["val_acc"])


def oracle_run_acc(run_records):
    singles = _singles(run_records)
    if not len(singles):
        return None
    test_env = singles[0]["args"]["test_envs"][0]
    last = sorted(singles, key=lambda r: r["step"])[-1]
    return {"val_acc": last[f"env{test_env}_out_acc"], "test_acc": last[f"env{test_env}_in_acc"]}


def loo_run_acc(run_records):
    def step_acc(step, records):
        singles = _singles(records)
        if len(singles) != 1:
            return None
        test_env = singles[0]["args"]["test_envs"][0]
        n_envs = _n_envs(records[0])
        val_accs = np.zeros(n_envs) - 1
        for record in records.filter(lambda r: len(r["args"]["test_envs"]) == 2):
            val_env = (set(record["args"]["test_envs"]) - {test_env}).pop()
            val_accs[val_env] = record[f"env{val_env}_in_acc"]
        val_accs = list(val_accs[:test_env]) + list(val_accs[test_env + 1:])
        if any(v == -1 for v in val_accs):
            return None
        return {"val_acc": np.sum(val_accs) / (n_envs - 1),
                "test_acc": singles[0][f"env{test_env}_in_acc"]}
    step_accs = run_records.group(lambda r: r["step"]).map(step_acc).filter(
        lambda acc: acc is not None)
    return step_accs.argmax(lambda acc: acc["val_acc"]) if len(step_accs) else None


def sweep_acc(run_acc, records):
    accs = records.group(lambda r: r["args"]["hparams_seed"]).map(
        lambda _, run: (run_acc(run), run)).filter(lambda x: x[0] is not None)
    ranked = sorted(accs, key=lambda x: x[0]["val_acc"])[::-1]
    return ranked[0][0]["test_acc"] if ranked else None


def baseline_tables(path) -> str:
    """DomainBed's collect_results text, computed the DomainBed way."""
    sys.path.insert(0, str(ROOT))
    from ddg_sweep.report.aggregate import environment_names, order_algorithms, order_datasets
    import pandas as pd

    records = baseline_load(path)
    groups = collections.defaultdict(list)
    for record in records:
        for test_env in record["args"]["test_envs"]:
            args = record["args"]
            groups[(args["trial_seed"], args["dataset"], args["algorithm"], test_env)].append(
                record)
    datasets = order_datasets({r["args"]["dataset"] for r in records})
    algorithms = order_algorithms({r["args"]["algorithm"] for r in records})
    env_names = environment_names(pd.DataFrame(
        {"dataset": [r["args"]["dataset"] for r in records],
         "n_envs": [_n_envs(r) for r in records]}))
    out = [f"Total records: {len(records)}\n"]
    methods = (("training-domain validation set", iid_run_acc),
               ("leave-one-domain-out cross-validation", loo_run_acc),
               ("test-domain validation set (oracle)", oracle_run_acc))
    for name, run_acc in methods:
        accs = {key: sweep_acc(run_acc, Q(group)) for key, group in groups.items()}
        accs = {key: acc for key, acc in accs.items() if acc is not None}
        for dataset in datasets:
            rows = [["Algorithm", *env_names[dataset], "Avg"]]
            for algorithm in algorithms:
                cells, means = [], []
                for env in range(len(env_names[dataset])):
                    trial = [a for (t, d, al, e), a in accs.items()
                             if (d, al, e) == (dataset, algorithm, env)]
                    mean, cell = _format_mean(trial)
                    cells.append(cell)
                    means.append(mean)
                avg = "X" if None in means else f"{sum(means) / len(means):.1f}"
                rows.append([algorithm, *cells, avg])
            out.append(_table(f"Dataset: {dataset}, model selection method: {name}", rows, 20))
        rows = [["Algorithm", *datasets, "Avg"]]
        for algorithm in algorithms:
            cells, means = [], []
            for dataset in datasets:
                per_trial = collections.defaultdict(list)
                for (t, d, al, e), acc in accs.items():
                    if (d, al) == (dataset, algorithm):
                        per_trial[t].append(acc)
                mean, cell = _format_mean([float(np.mean(v)) for v in per_trial.values()])
                cells.append(cell)
                means.append(mean)
            avg = "X" if None in means else f"{sum(means) / len(means):.1f}"
            rows.append([algorithm, *cells, avg])
        out.append(_table(f"Averages, model selection method: {name}", rows, 25))
    return "".join(out)


def _format_mean(data):
    if not data:
        return None, "X"
    mean = 100 * np.mean(data)
    err = 100 * np.std(np.asarray(data) / np.sqrt(len(data)))
    return mean, f"{mean:.1f} +/- {err:.1f}"


def _table(title, rows, width):
    lines = ["\n-------- " + title + "\n"]
    lines += ["  ".join(str(v).ljust(width)[:width] for v in row) + " \n" for row in rows]
    return "".join(lines)


# ---------------------------------------------------------------- measurement
def worker(kind: str, input_dir: str, output_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    if kind == "ours":
        from ddg_sweep.report.aggregate import aggregate
        start = time.perf_counter()
        aggregate(input_dir, output_dir)
        seconds = time.perf_counter() - start
        text = (Path(output_dir) / "tables.txt").read_text()
    else:
        start = time.perf_counter()
        text = baseline_tables(input_dir)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    Path(output_dir, f"{kind}.txt").write_text(text)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def warm_page_cache(sweep: Path) -> None:
    """Read every file once so that both contenders start from a warm page cache."""
    for path in sweep.rglob("*"):
        if path.is_file():
            path.read_bytes()


def measure(kind: str, sweep: Path, out: Path) -> dict:
    warm_page_cache(sweep)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--worker", kind, str(sweep), str(out)],
                            check=True, capture_output=True, text=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["process_seconds"] = time.perf_counter() - start
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--baseline-max", type=int, default=100_000,
                        help="run the baseline only on sweeps up to this many records")
    parser.add_argument("--keep", type=Path, default=None, help="generate sweeps here and keep them")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "INPUT", "OUTPUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from sweepgen import make_sweep

    with tempfile.TemporaryDirectory(prefix="bench_aggregate_") as tmp:
        base = args.keep or Path(tmp)
        for size in args.sizes:
            sweep, out = base / f"sweep_{size}", base / f"agg_{size}"
            if not (sweep / ".complete").exists():
                start = time.perf_counter()
                info = make_sweep(sweep, size)
                (sweep / ".complete").write_text("")
                print(f"generated {info['n_records']} records in {info['n_runs']} runs "
                      f"({time.perf_counter() - start:.1f} s)")
            ours = measure("ours", sweep, out)
            line = (f"{size:>9} records  ours: {ours['seconds']:6.2f} s "
                    f"(process {ours['process_seconds']:.2f} s), peak RSS {ours['peak_rss_mb']:7.0f} MB")
            if size <= args.baseline_max:
                base_run = measure("baseline", sweep, out)
                same = (out / "ours.txt").read_text() == (out / "baseline.txt").read_text()
                line += (f"  | DomainBed-style: {base_run['seconds']:6.2f} s, peak RSS "
                         f"{base_run['peak_rss_mb']:7.0f} MB  | speed-up "
                         f"{base_run['seconds'] / ours['seconds']:.1f}x, tables identical: {same}")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
