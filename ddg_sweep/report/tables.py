"""Tables from an aggregate's table.parquet: DomainBed's text, markdown, LaTeX, paper layout.

The text format is byte-for-byte what DomainBed's collect_results prints. A
missing cell is `X`, and a row average with a missing cell is `X` too.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ddg_sweep.errors import UserError
from ddg_sweep.report import files
from ddg_sweep.report.selection import SELECTION_METHODS, SELECTION_ORDER

FORMATS = {"markdown": ".md", "latex": ".tex", "text": ".txt"}
MISSING = "X"
AVERAGE_ENV = -1

# The paper's table (accuracy %, CLIP ViT-B/16 init), from docs ddg-method.md.
PAPER_COLUMNS = (("OfficeHome", "OfficeHome"), ("TerraIncognita", "TerraInc"), ("VLCS", "VLCS"),
                 ("PACS", "PACS"), ("DomainNet", "DomainNet"))
PAPER_REFERENCE_ROWS = (
    ("VL2V-SD (published)", (87.38, 58.54, 83.25, 96.68, 62.79), 77.73),
    ("DDG (paper)", (87.90, 65.37, 84.43, 96.83, 63.31), 79.57),
    ("DDG (re-run, A800)", (87.74, 65.44, 84.04, 96.97, 63.63), 79.56),
)


def check_selections(selections, available=SELECTION_ORDER) -> list[str]:
    unknown = [s for s in selections if s not in SELECTION_METHODS]
    if unknown:
        raise UserError(f"unknown selection {', '.join(unknown)}; choose from "
                        f"{', '.join(SELECTION_ORDER)}")
    return [s for s in SELECTION_ORDER if s in selections and s in available]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


class Cell:
    """One table cell: mean and standard error in percent, or missing."""

    def __init__(self, mean=None, sem=None):
        self.mean, self.sem = mean, sem

    def render(self, style: str, decimals: int = 1) -> str:
        if self.mean is None:
            return MISSING
        pm = {"text": "+/-", "markdown": "±", "latex": "$\\pm$"}[style]
        return f"{self.mean:.{decimals}f} {pm} {self.sem:.{decimals}f}"


def _row_average(cells: list[Cell], decimals: int = 1) -> str:
    means = [c.mean for c in cells]
    if not means or any(m is None for m in means):
        return MISSING
    return f"{sum(means) / len(means):.{decimals}f}"


def _lookup(table: pd.DataFrame) -> dict:
    return {(r.selection, r.dataset, r.algorithm, int(r.test_env)): Cell(r.mean, r.sem)
            for r in table.itertuples(index=False)}


def build_grids(table: pd.DataFrame, summary: dict, selection: str) -> list[tuple]:
    """[(title, column labels, [(algorithm, [Cell...])], colwidth)] for one selection."""
    cells = _lookup(table)
    algorithms = summary["algorithms"]
    if selection == "swad":  # algorithms that never average weights (ERM) have no row to show
        algorithms = [a for a in algorithms if any(k[0] == "swad" and k[2] == a for k in cells)]
    name = SELECTION_METHODS[selection].name
    grids = []
    for dataset, env_names in summary["datasets"].items():
        rows = [(alg, [cells.get((selection, dataset, alg, env), Cell())
                       for env in range(len(env_names))]) for alg in algorithms]
        grids.append((f"Dataset: {dataset}, model selection method: {name}",
                      ["Algorithm", *env_names, "Avg"], rows, 20))
    datasets = list(summary["datasets"])
    rows = [(alg, [cells.get((selection, d, alg, AVERAGE_ENV), Cell()) for d in datasets])
            for alg in algorithms]
    grids.append((f"Averages, model selection method: {name}",
                  ["Algorithm", *datasets, "Avg"], rows, 25))
    return grids


def _text_row(values, colwidth: int) -> str:
    # DomainBed's print_row: fixed-width columns joined by two spaces, then print's " ".
    return "  ".join(str(v).ljust(colwidth)[:colwidth] for v in values) + " \n"


def render_domainbed_text(table: pd.DataFrame, summary: dict, selections=None) -> str:
    """Exactly the text DomainBed's collect_results prints."""
    selections = selections or _default_selections(summary)
    out = [f"Total records: {summary['total_records']}\n"]
    for selection in selections:
        for title, labels, rows, width in build_grids(table, summary, selection):
            out.append("\n-------- " + title + "\n")
            out.append(_text_row(labels, width))
            for alg, cells in rows:
                out.append(_text_row([alg, *(c.render("text") for c in cells),
                                      _row_average(cells)], width))
    return "".join(out)


def _default_selections(summary: dict) -> list[str]:
    wanted = ["iid", "loo", "oracle"] + (["swad"] if summary.get("swad_runs") else [])
    return [s for s in SELECTION_ORDER if s in wanted]


def _escape_latex(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                          ("#", "\\#"), ("$", "\\$")):
        text = text.replace(char, escaped)
    return text


def _markdown_table(labels, body) -> str:
    lines = ["| " + " | ".join(labels) + " |", "|" + "---|" * len(labels)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _latex_table(labels, body) -> str:
    lines = ["\\begin{center}", "\\begin{tabular}{l" + "c" * (len(labels) - 1) + "}", "\\toprule",
             " & ".join("\\textbf{" + _escape_latex(str(l)) + "}" for l in labels) + " \\\\",
             "\\midrule"]
    lines += [" & ".join([_escape_latex(row[0]), *row[1:]]) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{center}"]
    return "\n".join(lines) + "\n"


def render_selection(table, summary, selection: str, fmt: str) -> str:
    """DomainBed's per-dataset and averages tables of one selection, in `fmt`."""
    if fmt == "text":
        return render_domainbed_text(table, summary, [selection]).split("\n", 1)[1]
    name = SELECTION_METHODS[selection].name
    out = ([f"## Model selection: {name}\n"] if fmt == "markdown"
           else [f"\\subsection{{Model selection: {_escape_latex(name)}}}\n"])
    for title, labels, rows, _ in build_grids(table, summary, selection):
        heading = title.split(",")[0].replace("Dataset: ", "")
        body = [[alg, *(c.render(fmt) for c in cells), _row_average(cells)] for alg, cells in rows]
        if fmt == "markdown":
            out.append(f"\n### {heading}\n\n" + _markdown_table(labels, body))
        else:
            out.append(f"\n\\subsubsection{{{_escape_latex(heading)}}}\n" + _latex_table(labels, body))
    return "".join(out)


def paper_rows(table, summary, selections) -> tuple[list[str], list[list[str]]]:
    """The paper's layout: its reference rows, then ours (averages-table means, %)."""
    labels = ["Method", *(short for _, short in PAPER_COLUMNS), "Avg"]
    body = [[name, *(f"{v:.2f}" for v in values), f"{avg:.2f}"]
            for name, values, avg in PAPER_REFERENCE_ROWS]
    cells = _lookup(table)
    for selection in selections:
        for alg in summary["algorithms"]:
            row = [cells.get((selection, d, alg, AVERAGE_ENV), Cell()) for d, _ in PAPER_COLUMNS]
            if all(c.mean is None for c in row):
                continue
            body.append([f"{alg} (ours, {selection})", *(c.render("text", 2) for c in row),
                         _row_average(row, 2)])
    return labels, body


def render_paper(table, summary, selections, fmt: str) -> str:
    labels, body = paper_rows(table, summary, selections)
    if fmt == "markdown":
        body = [[cell.replace("+/-", "±") for cell in row] for row in body]
        return "## Paper layout (accuracy %, ours: mean ± standard error)\n\n" + _markdown_table(
            labels, body)
    if fmt == "latex":
        body = [[cell.replace("+/-", "$\\pm$") for cell in row] for row in body]
        return "\\subsection{Paper layout}\n" + _latex_table(labels, body)
    width = max(12, *(len(cell) for row in body for cell in row))
    return ("\n-------- Paper layout (accuracy %)\n" + _text_row(labels, width)
            + "".join(_text_row(row, width) for row in body))


def render(table, summary, fmt: str, selections=None) -> str:
    """Everything the `tables` command prints: every selection's tables, then the paper's."""
    fmt = check_format(fmt)
    selections = check_selections(selections) if selections else _default_selections(summary)
    if fmt == "text":
        parts = [render_domainbed_text(table, summary, selections)]
    else:
        parts = [render_selection(table, summary, s, fmt) + "\n" for s in selections]
    parts.append(render_paper(table, summary, selections, fmt))
    return "".join(parts)


def write_tables(agg_dir, out_dir, formats=("markdown", "latex")) -> list[Path]:
    """Write OUT/tables/<selection>.<ext> and OUT/tables/paper.<ext> for each format."""
    table, summary = files.load_aggregate(agg_dir)
    selections = _default_selections(summary)
    folder = Path(out_dir) / "tables"
    written = []
    for fmt in formats:
        ext = FORMATS[check_format(fmt)]
        for selection in selections:
            written.append(files.atomic_write_text(
                folder / f"{selection}{ext}", render_selection(table, summary, selection, fmt)))
        written.append(files.atomic_write_text(
            folder / f"paper{ext}", render_paper(table, summary, selections, fmt)))
    return written
