"""The sweep's preflight (ddg_sweep/preflight.py): `full-benchmark --preset paper` refuses a missing
repo, a missing tensor, a missing dataset folder or a bad image with one line, before any cluster
starts and before OUT exists; `plan` lists the same problems and exits 0.

The paper's five repos come from the fake offline cache of tests/helpers/fake_hub.py (real layout, tiny
widths); PACS is a fake folder of JPEGs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import REPO, assert_one_line_error
from ddg_sweep.models.hub import PAPER_MODELS
from helpers.fake_hub import broken_copy, build_fake_hub, repo_folder, write_fake_pacs

pytestmark = pytest.mark.xdist_group("real_layout")
PAPER_PACS = ("--preset", "paper", "--datasets", "PACS")


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """(the fake hub cache, a data folder holding a fake PACS)."""
    root = tmp_path_factory.mktemp("preflight")
    build_fake_hub(root / "hub")
    write_fake_pacs(root / "data")
    return root / "hub", root / "data"


def cli(command: str, hub: Path, *args, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub), DDG_SWEEP_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "ddg_sweep.run", command, *PAPER_PACS, *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def without_repo(hub: Path, target: Path, repo_id: str) -> Path:
    shutil.copytree(hub, target, symlinks=True)
    shutil.rmtree(repo_folder(target, repo_id))
    return target


def with_truncated_image(data: Path, target: Path) -> tuple[Path, Path]:
    shutil.copytree(data, target)
    image = sorted((target / "PACS" / "sketch" / "horse").iterdir())[0]
    image.write_bytes(image.read_bytes()[:300])
    return target, image


def test_a_fine_paper_sweep_passes_preflight_and_the_image_check_is_remembered(paper_files, tmp_path):
    hub, data = paper_files
    plan = cli("plan", hub, "--data-dir", data, cache=tmp_path / "cache")
    assert plan.returncode == 0, plan.stderr
    assert "preflight: no problem with the models and data" in plan.stdout
    from ddg_sweep.data.catalog import get_dataset_spec
    from ddg_sweep.data.verify import listing_key
    from ddg_sweep.data.folders import read_domain_data

    spec = get_dataset_spec("PACS")
    domain = read_domain_data(spec, data, check_images=False)
    folders = {Path(p).parent for samples in domain.environments for p, _ in samples}
    markers = list((tmp_path / "cache" / "image-checks").rglob("*.json"))
    assert len(folders) == 28 and len(markers) == 28  # every class folder remembered as clean
    keys = {listing_key(f, sorted(str(p) for p in f.iterdir())) for f in folders}
    assert keys == {m.stem for m in markers}


@pytest.mark.parametrize("case", ["missing repo", "missing tensor", "missing dataset folder", "bad image"])
def test_full_benchmark_refuses_with_one_line_before_any_trial(paper_files, tmp_path, case):
    hub, data = paper_files
    sd = PAPER_MODELS["stable_diffusion"]
    if case == "missing repo":
        hub, fragments = without_repo(hub, tmp_path / "hub", sd), (sd, "not in the local Hugging Face cache")
    elif case == "missing tensor":
        drop = "vision_model.encoder.layers.0.self_attn.k_proj.weight"
        hub = broken_copy(hub, tmp_path / "hub", PAPER_MODELS["clip_teacher"], "model.safetensors", drop)
        fragments = (PAPER_MODELS["clip_teacher"], "lacks 1 weight(s)", "k_proj")
    elif case == "missing dataset folder":
        data = tmp_path / "empty"
        data.mkdir()
        fragments = (str(data / "PACS"), "does not exist")
    else:
        data, image = with_truncated_image(data, tmp_path / "data")
        fragments = (str(image),)
    out = tmp_path / "out"
    proc = cli("full-benchmark", hub, "--data-dir", data, "--output-dir", out, cache=tmp_path / "cache")
    line = assert_one_line_error(proc, *fragments)
    assert not out.exists()  # refused before OUT, a cluster or a trial
    assert "Ray" not in proc.stdout and "trial" not in proc.stdout

    plan = cli("plan", hub, "--data-dir", data, "--output-dir", out, cache=tmp_path / "cache")
    assert plan.returncode == 0, plan.stderr
    assert f"  {line.removeprefix('error: ')}" in plan.stdout.splitlines()
