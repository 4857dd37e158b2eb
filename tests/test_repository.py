"""The repository is self-contained: a clone with nothing beside it runs its own tests."""
from __future__ import annotations

import re
import subprocess

from helpers.cli import FIXTURE, REPO

# A path that leaves the checkout for a sibling `shared/` folder, however it is spelled.
OUTSIDE = re.compile(r"\.\./shared|parents?(\[\d+\])?\s*/\s*[\"']shared[\"']")


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in names:
        path = REPO / name
        if path.suffix in {".py", ".md", ".sh", ".toml", ".cfg", ".txt", ""} and path.is_file():
            yield name, path


def test_nothing_reads_a_shared_folder_beside_the_checkout():
    offenders = []
    for name, path in tracked_text_files():
        if name == "tests/test_repository.py":
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []


def test_the_pattern_catches_the_old_spellings():
    assert OUTSIDE.search('FIXTURE = REPO.parent / "shared" / "fixtures"')
    assert OUTSIDE.search("see ../shared/docs")
    assert not OUTSIDE.search("--output-dir /shared/OUT")


def test_domainbed_fixture_is_in_the_repository():
    assert FIXTURE.is_relative_to(REPO)
    runs = [p for p in FIXTURE.iterdir() if (p / "results.jsonl").is_file()]
    assert len(runs) == 40
    assert "MIT License" in (FIXTURE / "LICENSE").read_text()
    readme = (FIXTURE / "README.md").read_text()
    assert "facebookresearch/DomainBed" in readme and "b93c22a" in readme
    assert (FIXTURE / "expected.txt").read_text().count("Dataset: VLCS, model selection method") == 3


def test_a_module_with_a_shared_fixture_runs_on_one_xdist_worker():
    """The suite's time depends on it: conftest's xdist_group marks must reach xdist's scheduler
    (they do not under pytest 9 with pytest-xdist 3.8, hence the pin in pyproject.toml)."""
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                           "-p", "no:cacheprovider", "tests/test_tiny_teachers.py", "-k", "synthetic or looks or seeded"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    passed = re.findall(r"\[(gw\d)\].* PASSED (\S+)", proc.stdout)
    assert len(passed) == 3, proc.stdout[-2000:]
    assert all(nodeid.endswith("@test_tiny_teachers") for _, nodeid in passed), passed
    assert len({worker for worker, _ in passed}) == 1, passed
