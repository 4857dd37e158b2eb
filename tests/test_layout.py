"""The folder contract lives in ddg_sweep/layout.py: no other module spells a run, sweep or
aggregate folder's file name, the docs list the same names, and one JSONL reader."""
import ast
import re
from pathlib import Path

from ddg_sweep.layout import (AggregateFolder, RunFolder, SweepFolder, drop_torn_tail, last_jsonl_record,
                              read_jsonl)

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("ddg_sweep", "trainables", "search_spaces")
NAMES = {*RunFolder.FILES, *SweepFolder.FILES, *AggregateFolder.FILES}
# names that are also other things' names: a Hugging Face model's config, Tune's state strings
NOT_OURS = {("ddg_sweep/models/hub.py", "config.json")}


def _spelled(text: str) -> str | None:
    """The folder name a string literal spells as a path: the whole string or a path component
    (`*/node.json`). A bare word (`done`, `runs`) is only a path where it is joined onto one."""
    for name in NAMES:
        if "." in name and (text == name or text.endswith("/" + name) or text.startswith(name + "/")):
            return name
    return None


def _offences(path: Path) -> list[str]:
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        strings = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append((node, _spelled(node.value)))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # path / "done"
            right = node.right
            if isinstance(right, ast.Constant) and right.value in NAMES:
                strings.append((right, right.value))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("join", "joinpath"):
            strings += [(a, a.value) for a in node.args if isinstance(a, ast.Constant) and a.value in NAMES]
        found += [f"{rel}:{where.lineno}: {name!r}" for where, name in strings
                  if name and (rel, name) not in NOT_OURS]
    return sorted(set(found))


def test_no_module_but_layout_spells_a_folder_file_name():
    offenders = [line for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py"))
                 if path.name != "layout.py" or path.parent.name != "ddg_sweep"
                 for line in _offences(path)]
    assert not offenders, "spell these through ddg_sweep.layout:\n" + "\n".join(offenders)


def test_the_grep_sees_a_spelled_name(tmp_path):
    """The check above can fail: it catches the ways a name gets spelled."""
    sample = tmp_path / "probe.py"
    sample.write_text('from pathlib import Path\nPath("x") / "done"\nA = "results.jsonl"\nB = f"*/node.json"\n'
                      'import os\nos.path.join("x", "runs")\nstate = "done"\n')
    lines = _offences(sample)
    assert [line.split(": ")[1] for line in lines] == ["'done'", "'results.jsonl'", "'node.json'", "'runs'"]


def test_attributes_are_the_listed_paths(tmp_path):
    for cls in (RunFolder, SweepFolder, AggregateFolder):
        folder = cls(tmp_path)
        paths = {value.name for value in vars(folder).values() if isinstance(value, Path) and value != tmp_path}
        assert paths == set(cls.FILES), cls
    assert SweepFolder(tmp_path).run("abc").results == tmp_path / "runs" / "abc" / "results.jsonl"
    assert SweepFolder(tmp_path).search_log("s1") == tmp_path / "searches" / "s1.jsonl"


def _out_block() -> str:
    text = (REPO / "docs" / "sweeps.md").read_text()
    return text[text.index("    OUT/jobs.json"):text.index("\n\n", text.index("    OUT/jobs.json"))]


def test_docs_list_the_sweep_folder():
    listed = set(re.findall(r"^    OUT/([^/\s]+)", _out_block(), re.M))
    assert listed == set(SweepFolder.FILES)


def test_docs_list_the_run_folder():
    block = _out_block()
    entry = block[block.index("OUT/runs/<job_id>/"):block.index("OUT/searches/")]
    listed = set(re.findall(r"\b(\w+\.\w+)\b", entry)) | ({RunFolder.DONE} & set(re.findall(r"\w+", entry)))
    assert listed == set(RunFolder.FILES)


def test_readme_and_train_docstring_list_what_a_run_writes():
    import ddg_sweep.train

    readme = (REPO / "README.md").read_text()
    assert set(re.findall(r"`RUN/([\w.]+)`", readme)) == set(RunFolder.BY_TRAIN)
    docstring = ddg_sweep.train.__doc__
    assert {name for name in RunFolder.BY_TRAIN if re.search(rf"\b{re.escape(name)}\b", docstring)} \
        == set(RunFolder.BY_TRAIN)


# ---- the one JSONL reader -------------------------------------------------------------------------

def test_read_jsonl_drops_a_torn_last_line_and_skips_a_bad_one(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"step": 0}\nnot json\n\n{"step": 1}\n{"step": 2, "los')
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    assert last_jsonl_record(path) == {"step": 1}
    path.write_bytes(b'{"step": 0}\n{"step": 1}')  # a last line without its newline that parses is kept
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    assert read_jsonl(tmp_path / "missing.jsonl") == [] and last_jsonl_record(tmp_path / "missing") is None
    assert drop_torn_tail(b'{"a": 1}\n{"a"') == (b'{"a": 1}\n', 1)
    assert drop_torn_tail(b'{"a": 1}\n{"a": 2}') == (b'{"a": 1}\n{"a": 2}\n', 0)
