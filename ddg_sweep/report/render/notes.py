"""The sentences under markdown/LaTeX tables: what a mark means, why a table is empty.

Each note is written only where it applies, so a table that reads oddly says why
in the file itself. The text format carries none (it stays DomainBed's output).
"""
from __future__ import annotations

import pandas as pd

INCOMPLETE = "incomplete"
TIE = "tie"
FEW_SEEDS = "few_seeds"
MARKS = {"markdown": {INCOMPLETE: "*", TIE: "†"}, "latex": {INCOMPLETE: "$^{*}$", TIE: "$^{\\dagger}$"}}

MARK_NOTES = {
    INCOMPLETE: "incomplete: not every trial seed has every test environment (a job failed or "
                "is missing); as DomainBed does, the cell averages the results that exist "
                "(each trial seed over the environments it has).",
    TIE: "decided by a tie: runs with equal validation accuracy had different test "
         "accuracies; the run with the largest hparams_seed is reported (DomainBed's rule, "
         "docs/report.md); `tables --show-hparams` lists the run each cell chose.",
}
FEW_SEEDS_NOTE = ("(n=k): the number rests on k trial seeds; ± is the standard error over "
                  "trial seeds, shown from two seeds on.")
LOO_EMPTY_NOTE = ("All X: leave-one-domain-out cross-validation validates on a second held-out "
                  "environment, so it needs jobs that hold out two environments at once; this "
                  "sweep has none. Rerun the sweep with `--with-pairs` to add them.")


def mark_lines(used: set[str], fmt: str) -> list[tuple[str, str]]:
    """(mark, sentence) per mark used in a table, then the (n=k) explanation when it appears."""
    lines = [(MARKS[fmt][kind], MARK_NOTES[kind]) for kind in (INCOMPLETE, TIE) if kind in used]
    if FEW_SEEDS in used:
        lines.append(("", FEW_SEEDS_NOTE))
    return lines


def paper_empty_note(datasets, paper_datasets) -> str:
    have = ", ".join(datasets) or "none"
    return ("No row of ours: the paper's layout compares on the paper's datasets ("
            + ", ".join(paper_datasets) + f"), and this aggregate has none of them (it has {have}). "
            "Its results are in the per-selection tables (iid, oracle, ...).")


def paper_partial_note(missing) -> str:
    return ("X in a row of ours: this aggregate has no results for " + ", ".join(missing)
            + "; its Avg is X too.")


def version_mix(selected: pd.DataFrame | None, selection: str) -> list[str]:
    """'torch: 2.13.0 (12 cells), 2.12.0 (4 cells)' for each provenance field that varies."""
    if selected is None or not len(selected):
        return []
    rows = selected[selected["selection"] == selection]
    messages = []
    for column in sorted(c for c in rows.columns if c.startswith("prov_")):
        counts = rows[column].dropna().astype(str).value_counts()
        if len(counts) > 1:
            values = ", ".join(f"{value} ({count} cell{'s' if count != 1 else ''})"
                               for value, count in counts.items())
            messages.append(f"{column[len('prov_'):]}: {values}")
    return messages


def version_mix_note(messages: list[str]) -> str:
    return ("Mixed versions or devices: the runs behind these tables differ in " + "; ".join(messages)
            + " (selected.parquet, prov_* columns).")


def search_notes(summary: dict) -> list[str]:
    """One sentence per search row a table shows."""
    rows = summary.get("search_rows") or {}
    lines = []
    for label in (a for a in summary["algorithms"] if a in rows):
        row = rows[label]
        if row["metric"] == "oracle":
            lines.append(f"{label}: hyperparameters chosen by a search ({row['searcher']}) that maximised "
                         "test-domain accuracy (--metric oracle): an ORACLE result, not one under DomainBed's "
                         "protocol.")
        else:
            lines.append(f"{label}: hyperparameters chosen by a search ({row['searcher']}) that maximised "
                         "training-domain validation accuracy (--metric val_acc, within the protocol).")
    hidden = summary.get("hidden_search_rows")
    if hidden:
        lines.append(f"Left out: the rows of searches ({', '.join(hidden)}); `tables --include-search` shows them.")
    return lines
