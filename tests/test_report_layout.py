"""The report package's shape (docs/report.md, Layout): read -> select -> render -> plots, no import
cycle, no module reaching into another's private names, every file readable in one sitting."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "ddg_sweep.report"
ROOT = Path(__file__).resolve().parents[1] / "ddg_sweep" / "report"
# A stage may import the stages before it, never one after it.
STAGES = ("read", "select", "render", "plots")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def report_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> list[tuple[str, str]]:
    """(report module imported, name taken from it or "") for every import in the file, wherever
    it stands (a function's lazy import counts too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, "") if submodule in known else (node.module, alias.name))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the report modules it imports, with each one's parent packages (importing
    `a.b.c` runs `a/b/__init__.py` first)."""
    modules = report_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target, _ in imports_of(path, set(modules)):
            while target.startswith(PACKAGE):
                targets.add(target)
                target = target.rpartition(".")[0]
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other round in a circle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[2]) if len(parts) > 2 and parts[2] in STAGES else None


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_and_private_names_are_seen(tmp_path):
    path = tmp_path / "example.py"
    path.write_text("from ddg_sweep.report.read import parsing\n"
                    "def f():\n    from ddg_sweep.report.read.run_folders import _secret, find_runs\n")
    known = {f"{PACKAGE}.read.parsing", f"{PACKAGE}.read.run_folders"}
    assert imports_of(path, known) == [(f"{PACKAGE}.read.parsing", ""),
                                       (f"{PACKAGE}.read.run_folders", "_secret"),
                                       (f"{PACKAGE}.read.run_folders", "find_runs")]


def test_the_graph_holds_each_import_and_its_packages():
    graph = import_graph()
    assert {f"{PACKAGE}.read.records", f"{PACKAGE}.read", PACKAGE} <= graph[f"{PACKAGE}.aggregate"]


def test_no_import_cycle_in_the_report_package():
    assert find_cycle(import_graph()) is None


def test_each_stage_imports_only_the_stages_before_it():
    wrong = [(module, target) for module, targets in import_graph().items() for target in targets
             if stage_of(module) is not None and stage_of(target) is not None
             and stage_of(target) > stage_of(module)]
    assert wrong == []


def test_no_module_imports_another_modules_private_names():
    modules = report_modules()
    private = [(name, f"{target}.{taken}") for name, path in modules.items()
               for target, taken in imports_of(path, set(modules)) if taken.startswith("_")]
    assert private == []


def test_every_report_file_reads_in_one_sitting():
    long = {name: n for name, path in report_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
