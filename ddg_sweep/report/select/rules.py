"""Model selection: which checkpoint and hparams each table cell reports.

Works like DomainBed's model_selection.py, on whole DataFrames instead of
per-record Python loops. Records are grouped per (trial_seed, dataset,
algorithm, test_env); a record whose run holds out two envs belongs to both
envs' groups. Inside a group a *run* is one `hparams_seed`.

Ties follow DomainBed's code, so both tools pick the same run (docs/report.md):

- across runs, the highest validation accuracy wins; among runs with equal
  validation accuracy the one with the *largest hparams_seed* wins (DomainBed's
  Query.group sorts the runs by hparams_seed, then it sorts by validation
  accuracy, stable, and takes the first of the reversed list);
- inside a run, iid takes the first record (file order, the earliest checkpoint)
  with the best validation accuracy, oracle the last record of the highest step,
  loo the smallest step with the best validation accuracy.

Each chosen row says how many runs shared its validation accuracy (`tied_runs`)
and whether their test accuracies differ (`tie_decided`: the tie rule chose the
number the table shows). `select_all` applies every rule and adds the chosen run's
folder, job id, hyperparameters and provenance: selected.parquet's rows.
"""
from __future__ import annotations

import abc

import numpy as np
import pandas as pd

GROUP_KEYS = ["trial_seed", "dataset", "algorithm", "test_env"]
RUN_KEYS = GROUP_KEYS + ["hparams_seed"]
# `order`: the chosen row's index in the frame selected from (records, or swad runs).
SELECTED_COLUMNS = RUN_KEYS + ["step", "val_acc", "test_acc", "order", "tied_runs",
                               "tie_decided"]


def _env_matrix(frame: pd.DataFrame, split: str) -> np.ndarray:
    n_envs = 0
    while f"env{n_envs}_{split}_acc" in frame:
        n_envs += 1
    if n_envs == 0:
        return np.full((len(frame), 1), np.nan)
    return np.column_stack([frame[f"env{e}_{split}_acc"].to_numpy(dtype=float)
                            for e in range(n_envs)])


def _pick(matrix: np.ndarray, env: np.ndarray) -> np.ndarray:
    valid = (env >= 0) & (env < matrix.shape[1])
    picked = np.full(len(env), np.nan)
    rows = np.flatnonzero(valid)
    picked[rows] = matrix[rows, env[rows]]
    return picked


def _take(column: pd.Series, rows: np.ndarray):
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.Categorical.from_codes(column.cat.codes.to_numpy()[rows],
                                         dtype=column.dtype)
    return column.to_numpy()[rows]


def _ranks(values) -> tuple[np.ndarray, int]:
    """Order-preserving dense ranks (categoricals by their categories' sorted names)."""
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        names = np.asarray(values.categories, dtype=str)
        rank_of_code = np.argsort(np.argsort(names, kind="stable"), kind="stable")
        return rank_of_code[np.asarray(values.codes)], len(names)
    values = np.asarray(values)
    if values.dtype == object:
        values = values.astype(str)
    unique, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _codes(view: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes of GROUP_KEYS and RUN_KEYS that sort like the keys themselves."""
    code = np.zeros(len(view), dtype=np.int64)
    for key in GROUP_KEYS:
        ranks, size = _ranks(view[key].array if key in ("dataset", "algorithm")
                             else view[key].to_numpy())
        code = code * max(size, 1) + ranks
    ranks, size = _ranks(view["hparams_seed"].to_numpy())
    return code, code * max(size, 1) + ranks


def explode_by_test_env(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (record, group): single-test-env records once, pairs twice.

    Columns: RUN_KEYS, order, step, n_test_envs, other_env, n_envs,
    test_in_acc, test_out_acc, other_in_acc, val_acc, and `group` / `run`: int64
    codes of GROUP_KEYS / RUN_KEYS that sort as the keys do (fast sorting).
    """
    frame = frame.reset_index(drop=True)
    in_acc, out_acc = _env_matrix(frame, "in"), _env_matrix(frame, "out")
    order = np.arange(len(frame))
    n_test = frame["n_test_envs"].to_numpy()
    first = frame["test_env"].to_numpy()
    second = frame["test_env2"].to_numpy()
    singles = np.flatnonzero(n_test == 1)
    pairs = np.flatnonzero(n_test == 2)
    rows = np.concatenate([singles, pairs, pairs])
    group_env = np.concatenate([first[singles], first[pairs], second[pairs]])
    other_env = np.concatenate([np.full(len(singles), -1), second[pairs], first[pairs]])
    view = pd.DataFrame({
        "trial_seed": frame["trial_seed"].to_numpy()[rows],
        "dataset": _take(frame["dataset"], rows),
        "algorithm": _take(frame["algorithm"], rows),
        "test_env": group_env,
        "hparams_seed": frame["hparams_seed"].to_numpy()[rows],
        "order": order[rows],
        "step": frame["step"].to_numpy()[rows],
        "n_test_envs": n_test[rows],
        "other_env": other_env,
        "n_envs": frame["n_envs"].to_numpy()[rows],
        "test_in_acc": _pick(in_acc[rows], group_env),
        "test_out_acc": _pick(out_acc[rows], group_env),
        "other_in_acc": _pick(in_acc[rows], other_env),
        "val_acc": frame["val_acc"].to_numpy()[rows],
    })
    view["group"], view["run"] = _codes(view)
    return view


def best_run_per_group(run_accs: pd.DataFrame) -> pd.DataFrame:
    """DomainBed's `sweep_acc`: the run with the highest val_acc; ties -> largest hparams_seed.

    `run_accs`: one row per run (RUN_KEYS) with val_acc, test_acc and the chosen
    record's `order` and `step`.
    """
    run_accs = run_accs.dropna(subset=["val_acc"])
    # `run` sorts like (GROUP_KEYS, hparams_seed): val_acc, then hparams_seed inside a group
    run_accs = run_accs.sort_values(["group", "val_acc", "run"], kind="stable")
    groups = run_accs.groupby("group", sort=False)
    best_val = groups["val_acc"].transform("max")
    at_best = run_accs[run_accs["val_acc"] == best_val]
    tie_stats = at_best.groupby("group", sort=False)["test_acc"].agg(
        tied_runs="size", distinct_tests="nunique")
    chosen = groups.tail(1).merge(tie_stats.reset_index(), on="group", how="left")
    chosen["tied_runs"] = chosen["tied_runs"].astype("int64")
    chosen["tie_decided"] = chosen["distinct_tests"].to_numpy() > 1
    return chosen.sort_values("group")[SELECTED_COLUMNS].reset_index(drop=True)


class SelectionMethod(abc.ABC):
    """Base class: `select(records)` returns one row per group (SELECTED_COLUMNS)."""

    key = ""
    name = ""

    @classmethod
    @abc.abstractmethod
    def run_accs(cls, view: pd.DataFrame) -> pd.DataFrame:
        """Each run's (val_acc, test_acc) under this rule: the rule itself."""

    @classmethod
    def select(cls, records: pd.DataFrame, view: pd.DataFrame | None = None) -> pd.DataFrame:
        """`view`: explode_by_test_env(records), when the caller already has it."""
        if records is None or not len(records):
            return pd.DataFrame(columns=SELECTED_COLUMNS)
        if view is None:
            view = explode_by_test_env(records)
        chosen = best_run_per_group(cls.run_accs(view))
        return chosen.astype({"dataset": str, "algorithm": str})


class IIDSelection(SelectionMethod):
    """Training-domain validation: only runs with a single test env; per record
    val = mean of env{i}_out_acc over the training envs, test = env{test}_in_acc;
    each run's best-val record (first one on ties), then the best run."""

    key = "iid"
    name = "training-domain validation set"

    @classmethod
    def run_accs(cls, view):
        singles = view[(view["n_test_envs"] == 1) & view["val_acc"].notna()]
        ranked = singles.sort_values(["run", "val_acc", "order"],
                                     ascending=[True, False, True], kind="stable")
        best = ranked.drop_duplicates("run", keep="first")
        return best.assign(test_acc=best["test_in_acc"])


class OracleSelection(SelectionMethod):
    """Test-domain validation (oracle): each single-test-env run's *last* record
    (highest step; last line on equal steps), val = env{test}_out_acc,
    test = env{test}_in_acc; the run with the highest val wins."""

    key = "oracle"
    name = "test-domain validation set (oracle)"

    @classmethod
    def run_accs(cls, view):
        singles = view[view["n_test_envs"] == 1]
        last = singles.sort_values(["run", "step", "order"], kind="stable").drop_duplicates(
            "run", keep="last")
        return last.assign(val_acc=last["test_out_acc"], test_acc=last["test_in_acc"])


class LeaveOneOutSelection(SelectionMethod):
    """Leave-one-domain-out cross-validation: per (run, step), needs exactly one
    single-test-env record and, for every other env j, the (test, j) run's record
    at that step; val = mean over j of env{j}_in_acc from the (test, j) run,
    test = env{test}_in_acc of the single run. A step missing any of them is
    skipped; each run's best step (the smallest on ties), then the best run."""

    key = "loo"
    name = "leave-one-domain-out cross-validation"

    @classmethod
    def run_accs(cls, view):
        step_keys = ["run", "step"]
        singles = view[view["n_test_envs"] == 1]
        counts = singles.groupby(step_keys, sort=False)["order"].transform("size")
        tests = singles[counts == 1][RUN_KEYS + ["group", "run", "step", "test_in_acc", "n_envs",
                                                 "order"]]

        pairs = view[(view["n_test_envs"] == 2)]
        pairs = pairs.drop_duplicates(step_keys + ["other_env"], keep="last")
        wide = pairs.set_index(step_keys + ["other_env"])["other_in_acc"].unstack("other_env")
        wide = wide.reindex(columns=range(max(int(view["n_envs"].max()), 1)))
        merged = tests.merge(wide.reset_index(), on=step_keys, how="inner")
        test_env = merged["test_env"].to_numpy()
        n_envs = merged["n_envs"].to_numpy()
        val_sum = np.zeros(len(merged))
        complete = np.ones(len(merged), dtype=bool)
        for env in wide.columns:
            needed = (env != test_env) & (env < n_envs)
            values = merged[env].to_numpy(dtype=float)
            complete &= ~needed | ~np.isnan(values)
            # Summing in env order like np.sum over DomainBed's list keeps floats identical.
            val_sum = val_sum + np.where(needed, values, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged["val_acc"] = np.where(complete, val_sum / (n_envs - 1), np.nan)
        merged["test_acc"] = merged["test_in_acc"]
        merged = merged.dropna(subset=["val_acc"])
        ranked = merged.sort_values(["run", "val_acc", "step"],
                                    ascending=[True, False, True], kind="stable")
        return ranked.drop_duplicates("run", keep="first")


class SwadSelection(SelectionMethod):
    """SWAD: the weight-averaged model of each run (its swad.json), hparams chosen
    by training-domain validation on that evaluation: val = mean of
    env{i}_out_acc over the training envs, test = env{test}_in_acc; only
    single-test-env runs; the run with the highest val wins."""

    key = "swad"
    name = "SWAD, training-domain validation set"

    @classmethod
    def run_accs(cls, view):
        return IIDSelection.run_accs(view)

    @classmethod
    def select(cls, swad_runs: pd.DataFrame, view=None) -> pd.DataFrame:
        if swad_runs is None or not len(swad_runs):
            return pd.DataFrame(columns=SELECTED_COLUMNS)
        step = swad_runs["swad_end_step"] if "swad_end_step" in swad_runs else -1
        swad_runs = swad_runs.assign(step=pd.to_numeric(step, errors="coerce").fillna(-1))
        return super().select(swad_runs)


SELECTION_METHODS = {method.key: method for method in
                     (IIDSelection, LeaveOneOutSelection, OracleSelection, SwadSelection)}
# DomainBed's collect_results prints iid, loo, oracle in this order; swad comes last.
SELECTION_ORDER = ("iid", "loo", "oracle", "swad")


# Per-run columns copied from the chosen record into selected.parquet (plus hp_*, prov_*).
RUN_INFO_COLUMNS = ("run_id", "job_id")
SELECTED_FIRST = ["selection", "dataset", "algorithm", "test_env", "trial_seed", "run_id",
                  "job_id", "hparams_seed", "step", "val_acc", "test_acc", "tied_runs",
                  "tie_decided"]


def _run_info(source: pd.DataFrame, order) -> pd.DataFrame:
    columns = [c for c in source.columns
               if c in RUN_INFO_COLUMNS or c.startswith(("hp_", "prov_"))]
    info = source[columns].iloc[np.asarray(order, dtype=np.int64)].reset_index(drop=True)
    return info.astype({c: "string" for c in columns
                        if isinstance(info[c].dtype, pd.CategoricalDtype)})


def select_all(records: pd.DataFrame, swad: pd.DataFrame) -> pd.DataFrame:
    """Every selection's chosen run per (trial_seed, dataset, algorithm, test_env): its
    accuracies, run folder, job id, hyperparameters and provenance (docs/report.md)."""
    chosen = []
    records_view = explode_by_test_env(records)
    for key in SELECTION_ORDER:
        source = swad if key == "swad" else records
        if key == "swad":
            selected = SELECTION_METHODS[key].select(swad)
        else:
            selected = SELECTION_METHODS[key].select(records, records_view)
        if len(selected):
            selected = selected.reset_index(drop=True)
            info = _run_info(source, selected.pop("order"))
            chosen.append(pd.concat([selected.assign(selection=key), info], axis=1))
    if not chosen:
        return pd.DataFrame(columns=SELECTED_FIRST)
    selected = pd.concat(chosen, ignore_index=True)
    rest = sorted(c for c in selected.columns if c not in SELECTED_FIRST)
    selected = selected[SELECTED_FIRST + rest]
    return selected.astype({"step": "int64", "tied_runs": "int64", "tie_decided": "bool"})
