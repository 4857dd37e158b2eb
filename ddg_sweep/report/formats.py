"""Markdown and LaTeX (booktabs) table bodies, and escaping text for LaTeX."""
from __future__ import annotations

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
