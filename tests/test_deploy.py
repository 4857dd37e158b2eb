"""deploy/: the KubeRay RayJob, the SLURM script and the Grafana dashboard are what they claim.

Their sweep command lines are parsed by this project's own argument parser and expanded
into jobs, so a renamed flag or preset breaks this test, not a cluster allocation.
"""
import json
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from helpers.cli import REPO
from ddg_sweep.cli.sweep import _jobs
from ddg_sweep.run import build_parser
from trainables import GAUGES

DEPLOY = REPO / "deploy"
PAPER_JOBS = 66


def parse_sweep(argv: list[str]):
    assert argv[:3] == ["python", "-m", "ddg_sweep.run"], argv
    args = build_parser().parse_args(argv[3:])
    assert args.command == "full-benchmark" and args.space == "paper"
    assert Path(args.output_dir).is_absolute() and Path(args.data_dir).is_absolute()
    assert len(_jobs(args)) == PAPER_JOBS
    return args


def test_kuberay_rayjob_runs_the_paper_benchmark_on_gpu_workers_with_shared_storage_and_auth():
    spec = yaml.safe_load((DEPLOY / "kuberay-rayjob.yaml").read_text())
    assert spec["apiVersion"] == "ray.io/v1" and spec["kind"] == "RayJob"
    job = spec["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    cluster = job["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    args = parse_sweep(shlex.split(job["entrypoint"]))
    assert args.address == "auto"

    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"]
                                                             for g in cluster["workerGroupSpecs"]]
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0]
    assert gpu_groups and all(g["replicas"] >= 1 for g in gpu_groups)
    env = yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if m["name"] in claims}
            for path in (args.output_dir, args.data_dir, env["DDG_SWEEP_CACHE"], env["HF_HOME"]):
                assert any(path.startswith(mount + "/") for mount in mounts), (container["name"], path)


def sbatch_sweep_argv(script: str) -> list[str]:
    """The sweep line's argv as bash expands it, with the script's own folders and a stand-in head."""
    lines = script.splitlines()
    (sweep,) = [line for line in lines if line.startswith("python -m ddg_sweep.run")]
    settings = [line for line in lines if re.match(r"^(SHARED|VENV|DATA|OUT)=", line)]
    program = "\n".join(["head_ip=10.0.0.1", "port=6379", *settings,
                         sweep.replace("python -m ddg_sweep.run", "printf '%s\\0' python -m ddg_sweep.run", 1)])
    expanded = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout
    return expanded.rstrip("\0").split("\0")


def test_slurm_script_is_valid_bash_starts_ray_on_every_node_and_attaches_the_sweep():
    path = DEPLOY / "slurm.sbatch"
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    script = path.read_text()
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --gpus-per-node=" in script
    assert "export RAY_AUTH_MODE=token" in script and "RAY_AUTH_MODE=disabled" not in script
    assert re.search(r'srun [^\n]*-w "\$head_node" \\\n\s+ray start --head', script)
    assert re.search(r'for node in "\$\{nodes\[@\]:1\}"; do\n\s+srun [^\n]*-w "\$node" \\\n\s+ray start '
                     r'--block --address="\$head_ip:\$port"', script)
    args = parse_sweep(sbatch_sweep_argv(script))
    assert args.address == "10.0.0.1:6379"
    assert args.output_dir == "/shared/OUT" and args.data_dir == "/shared/data/domainbed"


def test_grafana_dashboard_panels_each_query_a_gauge_the_trainable_sets():
    dashboard = json.loads((DEPLOY / "grafana-ddg-sweep.json").read_text())
    queried = []
    for panel in dashboard["panels"]:
        names = {n for t in panel["targets"] for n in re.findall(r"\bray_(\w+)\{", t["expr"])}
        assert names and names <= set(GAUGES.values()), (panel["title"], names)
        assert all('job_id=~"$job_id"' in t["expr"] for t in panel["targets"])
        queried += names
    assert sorted(queried) == sorted(GAUGES.values())  # one panel per gauge, none missing
    (job_variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "job_id"]
    assert re.search(r"label_values\(ray_(\w+), job_id\)", job_variable["definition"]).group(1) in GAUGES.values()
