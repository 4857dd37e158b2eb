"""Tables from an aggregate's table.parquet: DomainBed's text, markdown, LaTeX, paper layout.

The text format is byte-for-byte what DomainBed's collect_results prints. A
missing cell is `X`, and a row average with a missing cell is `X` too. Markdown and
LaTeX (booktabs) carry notes under each table (notes.py) saying what its marks mean.
`table_files` renders every file of `OUT/tables/` in one pass.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ddg_sweep.errors import UserError
from ddg_sweep.layout import SweepFolder
from ddg_sweep.report import aggregate_folder
from ddg_sweep.report.render import notes
from ddg_sweep.report.render.notes import search_notes
from ddg_sweep.report.select.cells import AVERAGE_ENV
from ddg_sweep.report.select.rules import SELECTION_METHODS, SELECTION_ORDER

FORMATS = {"markdown": ".md", "latex": ".tex", "text": ".txt"}
MISSING = "X"

# The paper's table (accuracy %, CLIP ViT-B/16 init), from docs/method.md.
PAPER_COLUMNS = (("OfficeHome", "OfficeHome"), ("TerraIncognita", "TerraInc"), ("VLCS", "VLCS"),
                 ("PACS", "PACS"), ("DomainNet", "DomainNet"))
PAPER_REFERENCE_ROWS = (
    ("VL2V-SD (published)", (87.38, 58.54, 83.25, 96.68, 62.79), 77.73),
    ("DDG (paper)", (87.90, 65.37, 84.43, 96.83, 63.31), 79.57),
    ("DDG (re-run, A800)", (87.74, 65.44, 84.04, 96.97, 63.63), 79.56),
)


def visible(summary: dict, include_search: bool) -> dict:
    """The summary the tables render: search rows dropped unless asked for."""
    rows = summary.get("search_rows") or {}
    if include_search or not rows:
        return summary
    return {**summary, "algorithms": [a for a in summary["algorithms"] if a not in rows],
            "hidden_search_rows": [a for a in summary["algorithms"] if a in rows]}


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
    """One table cell: mean and standard error in percent over `n` trial seeds, or missing."""

    def __init__(self, mean=None, sem=None, n=0, complete=True, ties=0):
        self.mean, self.sem, self.n = mean, sem, n
        self.complete, self.ties = complete, ties

    def marks(self) -> set[str]:
        """The notes this cell needs in markdown/LaTeX (notes.py)."""
        if self.mean is None:
            return set()
        return ({notes.INCOMPLETE} if not self.complete else set()) | (
            {notes.TIE} if self.ties else set()) | ({notes.FEW_SEEDS} if self.n < 3 else set())

    def render(self, style: str, decimals: int = 1) -> str:
        if self.mean is None:
            return MISSING
        if style == "text":  # DomainBed's, whatever n is
            return f"{self.mean:.{decimals}f} +/- {self.sem:.{decimals}f}"
        pm = {"markdown": "±", "latex": "$\\pm$"}[style]
        text = f"{self.mean:.{decimals}f}"
        if self.n >= 2:  # one seed has no spread: no `± 0.0`
            text += f" {pm} {self.sem:.{decimals}f}"
        if self.n < 3:
            text += f" (n={self.n})"
        marks = self.marks()
        return text + "".join(notes.MARKS[style][kind] for kind in (notes.INCOMPLETE, notes.TIE)
                              if kind in marks)


def _row_average(cells: list[Cell], decimals: int = 1) -> str:
    means = [c.mean for c in cells]
    if not means or any(m is None for m in means):
        return MISSING
    return f"{sum(means) / len(means):.{decimals}f}"


def _lookup(table: pd.DataFrame) -> dict:
    has_flags = "complete" in table.columns
    return {(r.selection, r.dataset, r.algorithm, int(r.test_env)):
            Cell(r.mean, r.sem, int(r.n), bool(r.complete) if has_flags else True,
                 int(r.ties) if has_flags else 0)
            for r in table.itertuples(index=False)}


def environment_labels(summary: dict, full: bool) -> dict[str, list[str]]:
    """Per dataset, DomainBed's short environment names, or the names written out."""
    if full and "environments" in summary:
        return summary["environments"]
    return summary["datasets"]


def build_grids(table: pd.DataFrame, summary: dict, selection: str, full_names: bool = False
                ) -> list[tuple]:
    """[(title, column labels, [(algorithm, [Cell...])], colwidth)] for one selection."""
    cells = _lookup(table)
    algorithms = summary["algorithms"]
    if selection == "swad":  # algorithms that never average weights (ERM) have no row to show
        algorithms = [a for a in algorithms if any(k[0] == "swad" and k[2] == a for k in cells)]
    name = SELECTION_METHODS[selection].name
    grids = []
    for dataset, env_names in environment_labels(summary, full_names).items():
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


_LATEX_ESCAPES = (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                  ("#", "\\#"), ("$", "\\$"), ("±", "$\\pm$"))


def escape_latex(text: str) -> str:
    for char, escaped in _LATEX_ESCAPES:
        text = text.replace(char, escaped)
    return text


def markdown_table(labels, body) -> str:
    lines = ["| " + " | ".join(labels) + " |", "|" + "---|" * len(labels)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def latex_table(labels, body) -> str:
    """Cells of `body` are LaTeX already, except each row's first (a name): escaped here."""
    lines = ["\\begin{center}", "\\begin{tabular}{l" + "c" * (len(labels) - 1) + "}", "\\toprule",
             " & ".join("\\textbf{" + escape_latex(str(label)) + "}" for label in labels) + " \\\\",
             "\\midrule"]
    lines += [" & ".join([escape_latex(row[0]), *row[1:]]) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{center}"]
    return "\n".join(lines) + "\n"


def _code_spans(text: str) -> str:
    """`command` -> \\texttt{command} (typewriter keeps `--with-pairs` two hyphens)."""
    return re.sub(r"`([^`]+)`", r"\\texttt{\1}", text)


def render_notes(lines: list, fmt: str) -> str:
    """Notes below a table; `lines`: sentences or (mark, sentence) pairs."""
    pairs = [line if isinstance(line, tuple) else ("", line) for line in lines]
    if not pairs:
        return ""
    if fmt == "markdown":
        return "\n" + "\n\n".join(("\\" + mark if mark == "*" else mark) + (" " if mark else "")
                                   + text for mark, text in pairs) + "\n"
    body = " \\\\\n".join(mark + (" " if mark else "") + _code_spans(escape_latex(text))
                           for mark, text in pairs)
    return "{\\footnotesize\n" + body + "\n\\par}\n"


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


def render_selection(table, summary, selection: str, fmt: str, selected=None) -> str:
    """DomainBed's per-dataset and averages tables of one selection, in `fmt`, with notes."""
    if fmt == "text":
        return render_domainbed_text(table, summary, [selection]).split("\n", 1)[1]
    name = SELECTION_METHODS[selection].name
    out = ([f"## Model selection: {name}\n"] if fmt == "markdown"
           else [f"\\subsection{{Model selection: {escape_latex(name)}}}\n"])
    if selection == "loo" and not (table["selection"] == "loo").any():
        out.append(render_notes([notes.LOO_EMPTY_NOTE], fmt))
    for title, labels, rows, _ in build_grids(table, summary, selection, full_names=True):
        heading = title.split(",")[0].replace("Dataset: ", "")
        body = [[alg, *(c.render(fmt) for c in cells), _row_average(cells)] for alg, cells in rows]
        used = set().union(*(c.marks() for _, cells in rows for c in cells))
        if fmt == "markdown":
            out.append(f"\n### {heading}\n\n" + markdown_table(labels, body))
        else:
            out.append(f"\n\\subsubsection{{{escape_latex(heading)}}}\n" + latex_table(labels, body))
        out.append(render_notes(notes.mark_lines(used, fmt), fmt))
    mixed = notes.version_mix(selected, selection)
    if mixed:
        out.append(render_notes([notes.version_mix_note(mixed)], fmt))
    out.append(render_notes(search_notes(summary), fmt))
    return "".join(out)


def paper_rows(table, summary, selections, fmt: str = "text"
               ) -> tuple[list[str], list[list[str]], list]:
    """The paper's layout: its reference rows, then ours (averages-table means, %), and notes."""
    labels = ["Method", *(short for _, short in PAPER_COLUMNS), "Avg"]
    body = [[name, *(f"{v:.2f}" for v in values), f"{avg:.2f}"]
            for name, values, avg in PAPER_REFERENCE_ROWS]
    cells = _lookup(table)
    used, ours = set(), 0
    for selection in selections:
        for alg in summary["algorithms"]:
            row = [cells.get((selection, d, alg, AVERAGE_ENV), Cell()) for d, _ in PAPER_COLUMNS]
            if all(c.mean is None for c in row):
                continue
            ours += 1
            used |= set().union(*(c.marks() for c in row))
            body.append([f"{alg} (ours, {selection})", *(c.render(fmt, 2) for c in row),
                         _row_average(row, 2)])
    paper = [d for d, _ in PAPER_COLUMNS]
    if not ours:
        lines = [notes.paper_empty_note(list(summary["datasets"]), paper)]
    else:
        missing = [d for d in paper if d not in summary["datasets"]]
        lines = (notes.mark_lines(used, fmt) if fmt != "text" else []) + (
            [notes.paper_partial_note(missing)] if missing else [])
    return labels, body, lines


def render_paper(table, summary, selections, fmt: str) -> str:
    labels, body, lines = paper_rows(table, summary, selections, fmt)
    lines += search_notes(summary)
    if fmt == "markdown":
        what = ("ours: mean ± standard error over trial seeds"
                if len(body) > len(PAPER_REFERENCE_ROWS) else "published rows only")
        return (f"## Paper layout (accuracy %, {what})\n\n"
                + markdown_table(labels, body) + render_notes(lines, fmt))
    if fmt == "latex":
        return ("\\subsection{Paper layout}\n" + latex_table(labels, body)
                + render_notes(lines, fmt))
    width = max(12, *(len(cell) for row in body for cell in row))
    return ("\n-------- Paper layout (accuracy %)\n" + _text_row(labels, width)
            + "".join(_text_row(row, width) for row in body))


def render(table, summary, fmt: str, selections=None, selected=None, include_search: bool = False) -> str:
    """Everything the `tables` command prints: every selection's tables, then the paper's (a search's
    rows only with `include_search`)."""
    fmt = check_format(fmt)
    summary = visible(summary, include_search)
    selections = check_selections(selections) if selections else _default_selections(summary)
    if fmt == "text":
        parts = [render_domainbed_text(table, summary, selections)]
    else:
        parts = [render_selection(table, summary, s, fmt, selected) + "\n" for s in selections]
    parts.append(render_paper(table, summary, selections, fmt))
    return "".join(parts)


def table_files(table, summary, selected, formats=("markdown", "latex"), include_search: bool = False
                ) -> dict[str, str]:
    """{file name in OUT/tables/: its text}: each selection's tables and the paper's, per format."""
    summary = visible(summary, include_search)
    selections = _default_selections(summary)
    texts = {}
    for fmt in formats:
        ext = FORMATS[check_format(fmt)]
        for selection in selections:
            texts[f"{selection}{ext}"] = render_selection(table, summary, selection, fmt, selected)
        texts[f"paper{ext}"] = render_paper(table, summary, selections, fmt)
    return texts


def write_table_files(out_dir, texts: dict[str, str]) -> list[Path]:
    folder = SweepFolder(out_dir).tables
    return [aggregate_folder.atomic_write_text(folder / name, text) for name, text in texts.items()]


def write_tables(agg_dir, out_dir, formats=("markdown", "latex"), include_search: bool = False) -> list[Path]:
    """Write OUT/tables/<selection>.<ext> and OUT/tables/paper.<ext> for each format, from an
    aggregate folder."""
    table, summary = aggregate_folder.load_aggregate(agg_dir)
    selected = aggregate_folder.load_selected(agg_dir)
    return write_table_files(out_dir, table_files(table, summary, selected, formats, include_search))
