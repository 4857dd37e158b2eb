"""A stand-in for DomainBed's `collect_results.py`, for the speed benchmark only.

DomainBed cannot be installed here (it is not on PyPI), so bench_aggregate.py
runs this script in its place unless it is given a DomainBed checkout
(`--domainbed DIR`). It is written for this project and follows DomainBed's
data flow step for step, so that it does the same work: every line of every
`<run>/results.jsonl` (run folders in `os.listdir` order) goes through
`json.loads` into a dict; a small query list groups records per (trial seed,
dataset, algorithm, test env) with hashable and sorted group keys; each
selection rule groups a cell's records by hparams seed (and loo by step) and
takes Python maxima over per-record dicts; each table cell filters every group
again; the tables are printed in DomainBed's text format. Like DomainBed's
script, which imports `domainbed.datasets` and `domainbed.algorithms`, it
imports torch first (pass --no-torch to leave that out); DomainBed also imports
torchvision, which this does not, so it errs on the fast side.

    python benchmarks/domainbed_like.py --input_dir SWEEP [--no-torch]
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

DATASET_ENVS = {  # DomainBed's registry order and environment column labels
    "VLCS": ["C", "L", "S", "V"], "PACS": ["A", "C", "P", "S"],
    "OfficeHome": ["A", "C", "P", "R"], "TerraIncognita": ["L100", "L38", "L43", "L46"],
    "DomainNet": ["clip", "info", "paint", "quick", "real", "sketch"],
}
ALGORITHMS = ["ERM", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD", "DANN",
              "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "SelfReg", "Fishr"]


def _selector(spec):
    if callable(spec):
        return spec
    if "," in spec:
        parts = [_selector(p) for p in spec.split(",")]
        return lambda obj: tuple(part(obj) for part in parts)
    if "." in spec:
        parts = [_selector(p) for p in spec.split(".")]

        def nested(obj):
            for part in parts:
                obj = part(obj)
            return obj
        return nested
    key = spec.strip()
    return lambda obj: obj[key]


def _hashable(obj):
    try:
        hash(obj)
        return obj
    except TypeError:
        return json.dumps({"_": obj}, sort_keys=True)


class Query:
    """A list with grouping, mapping and filtering, in the style of DomainBed's query.Q."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self):
        return iter(self.items)

    def group(self, spec):
        key_of = _selector(spec)
        groups = {}
        for item in self.items:
            value = key_of(item)
            key = _hashable(value)
            if key not in groups:
                groups[key] = (value, Query([]))
            groups[key][1].items.append(item)
        return Query([groups[key] for key in sorted(groups)])

    def map(self, fn):
        if len(inspect.signature(fn).parameters) > 1:
            return Query([fn(*item) for item in self.items])
        return Query([fn(item) for item in self.items])

    def select(self, spec):
        key_of = _selector(spec)
        return Query([key_of(item) for item in self.items])

    def filter(self, fn):
        return Query([item for item in self.items if fn(item)])

    def filter_equals(self, spec, value):
        key_of = _selector(spec)
        return self.filter(lambda item: key_of(item) == value)

    def filter_not_none(self):
        return self.filter(lambda item: item is not None)

    def argmax(self, spec):
        return max(self.items, key=_selector(spec))

    def unique(self):
        seen, out = set(), []
        for item in self.items:
            key = _hashable(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return Query(out)

    def sorted(self, key=None):
        key = key or (lambda item: item)

        def nan_last(item):
            value = key(item)
            return float("-inf") if isinstance(value, float) and np.isnan(value) else value
        return Query(sorted(self.items, key=nan_last))

    def mean(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(np.mean(self.items))


def load_records(path):
    records = []
    names = os.listdir(path)
    try:  # DomainBed shows a tqdm bar (on stderr) while it reads
        import tqdm
        names = tqdm.tqdm(names, ncols=80, leave=False)
    except ImportError:
        pass
    for name in names:
        try:
            with open(os.path.join(path, name, "results.jsonl")) as handle:
                for line in handle:
                    records.append(json.loads(line[:-1]))
        except IOError:
            pass
    return Query(records)


def grouped_records(records):
    groups = {}
    for record in records:
        args = record["args"]
        for test_env in args["test_envs"]:
            key = (args["trial_seed"], args["dataset"], args["algorithm"], test_env)
            groups.setdefault(key, []).append(record)
    return Query([{"trial_seed": t, "dataset": d, "algorithm": a, "test_env": e,
                   "records": Query(r)} for (t, d, a, e), r in groups.items()])


def _singles(records):
    return records.filter(lambda r: len(r["args"]["test_envs"]) == 1)


class Rule:
    name = ""

    @classmethod
    def hparams_accs(cls, records):
        return (records.group("args.hparams_seed")
                .map(lambda _, run: (cls.run_acc(run), run))
                .filter(lambda pair: pair[0] is not None)
                .sorted(key=lambda pair: pair[0]["val_acc"]).items[::-1])

    @classmethod
    def sweep_acc(cls, records):
        ranked = cls.hparams_accs(records)
        return ranked[0][0]["test_acc"] if ranked else None


class Oracle(Rule):
    name = "test-domain validation set (oracle)"

    @classmethod
    def run_acc(cls, run):
        run = _singles(run)
        if not len(run):
            return None
        env = run[0]["args"]["test_envs"][0]
        last = run.sorted(lambda r: r["step"])[-1]
        return {"val_acc": last[f"env{env}_out_acc"], "test_acc": last[f"env{env}_in_acc"]}


class IID(Rule):
    name = "training-domain validation set"

    @classmethod
    def step_acc(cls, record):
        env = record["args"]["test_envs"][0]
        keys = []
        for i in itertools.count():
            if f"env{i}_out_acc" not in record:
                break
            if i != env:
                keys.append(f"env{i}_out_acc")
        return {"val_acc": np.mean([record[k] for k in keys]), "test_acc": record[f"env{env}_in_acc"]}

    @classmethod
    def run_acc(cls, run):
        singles = _singles(run)
        return singles.map(cls.step_acc).argmax("val_acc") if len(singles) else None


class LeaveOneOut(Rule):
    name = "leave-one-domain-out cross-validation"

    @classmethod
    def step_acc(cls, records):
        singles = _singles(records)
        if len(singles) != 1:
            return None
        env = singles[0]["args"]["test_envs"][0]
        n_envs = next(i for i in itertools.count() if f"env{i}_out_acc" not in records[0])
        val = np.zeros(n_envs) - 1
        for record in records.filter(lambda r: len(r["args"]["test_envs"]) == 2):
            other = (set(record["args"]["test_envs"]) - {env}).pop()
            val[other] = record[f"env{other}_in_acc"]
        val = list(val[:env]) + list(val[env + 1:])
        if any(v == -1 for v in val):
            return None
        return {"val_acc": np.sum(val) / (n_envs - 1), "test_acc": singles[0][f"env{env}_in_acc"]}

    @classmethod
    def run_acc(cls, run):
        steps = run.group("step").map(lambda _, records: cls.step_acc(records)).filter_not_none()
        return steps.argmax("val_acc") if len(steps) else None


def _format_mean(data):
    if not len(data):
        return None, "X"
    mean = 100 * np.mean(list(data))
    err = 100 * np.std(list(data) / np.sqrt(len(data)))
    return mean, f"{mean:.1f} +/- {err:.1f}"


def _print_table(rows, header, colwidth):
    print("")
    print("--------", header)
    for row in rows:
        print("  ".join(str(v).ljust(colwidth)[:colwidth] for v in row), "")


def print_tables(records, rule):
    groups = grouped_records(records).map(
        lambda g: {**g, "sweep_acc": rule.sweep_acc(g["records"])}).filter(
        lambda g: g["sweep_acc"] is not None)
    names = records.select("args.algorithm").unique()
    algorithms = [a for a in ALGORITHMS if a in names.items] + [
        a for a in names if a not in ALGORITHMS]
    found = records.select("args.dataset").unique().sorted()
    datasets = [d for d in DATASET_ENVS if d in found.items]
    for dataset in datasets:
        rows = [["Algorithm", *DATASET_ENVS[dataset], "Avg"]]
        for algorithm in algorithms:
            cells, means = [], []
            for env in range(len(DATASET_ENVS[dataset])):
                accs = groups.filter_equals("dataset, algorithm, test_env",
                                            (dataset, algorithm, env)).select("sweep_acc")
                mean, cell = _format_mean(accs)
                cells.append(cell)
                means.append(mean)
            rows.append([algorithm, *cells, "X" if None in means else f"{sum(means) / len(means):.1f}"])
        _print_table(rows, f"Dataset: {dataset}, model selection method: {rule.name}", 20)
    rows = [["Algorithm", *datasets, "Avg"]]
    for algorithm in algorithms:
        cells, means = [], []
        for dataset in datasets:
            trials = (groups.filter_equals("algorithm, dataset", (algorithm, dataset))
                      .group("trial_seed").map(lambda _, g: g.select("sweep_acc").mean()))
            mean, cell = _format_mean(trials)
            cells.append(cell)
            means.append(mean)
        rows.append([algorithm, *cells, "X" if None in means else f"{sum(means) / len(means):.1f}"])
    _print_table(rows, f"Averages, model selection method: {rule.name}", 25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_dir", required=True, type=Path)
    parser.add_argument("--no-torch", action="store_true", help="skip DomainBed's torch import")
    args = parser.parse_args()
    if not args.no_torch:
        import torch  # noqa: F401  (DomainBed's collect_results imports it via its registries)
    records = load_records(args.input_dir)
    print("Total records:", len(records))
    for rule in (IID, LeaveOneOut, Oracle):
        print_tables(records, rule)
    return 0


if __name__ == "__main__":
    sys.exit(main())
