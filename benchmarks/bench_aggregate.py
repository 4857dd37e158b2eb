"""Benchmark: `aggregate` against DomainBed's collect_results, whole processes, same sweeps.

    python benchmarks/bench_aggregate.py [--sizes 94000 1000000] [--baseline-max 100000]
        [--repeats 3] [--keep DIR] [--domainbed DOMAINBED_CHECKOUT] [--no-torch]

For each size a synthetic sweep is generated (benchmarks/sweepgen.py; kept in --keep
DIR for the next time), every file is read once to warm the page cache, then the
two contenders run one after the other, `--repeats` times, each as its own
process under `/usr/bin/time -v`: wall time, CPU time (user + system; less
sensitive to other load on the machine) and peak RSS of the whole process,
interpreter start and imports included. The load average is printed with each
size, since a busy machine slows both. Ours is `python -m ddg_sweep.run
aggregate`; the baseline is DomainBed's `python -m
domainbed.scripts.collect_results` when --domainbed names a checkout of it, else
benchmarks/domainbed_like.py, a stand-in that does DomainBed's work the way
DomainBed does it (see its docstring). Ours runs twice per repeat: cold (its cache
of parsed runs, OUT/.parsed, removed first: the headline figure) and warm (again
into the same folder, every run reused from the cache: what a re-aggregate of an
unchanged sweep costs), reported as separate rows. The medians are compared, and
the printed tables of all are checked to be identical.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"


def warm_page_cache(sweep: Path) -> None:
    """Read every file once so that both contenders start from a warm page cache."""
    for path in sweep.rglob("*"):
        if path.is_file():
            path.read_bytes()


def timed(command: list[str], cwd: Path, env: dict, stdout_path: Path) -> dict:
    """Run `command` under /usr/bin/time -v; wall seconds and peak RSS (MB) of the process."""
    with open(stdout_path, "w") as stdout, tempfile.NamedTemporaryFile("r") as report:
        if os.path.exists(TIME):
            proc = subprocess.run([TIME, "-v", "-o", report.name, *command], cwd=cwd, env=env,
                                  stdout=stdout, stderr=subprocess.PIPE, text=True)
            text = report.read()
        else:  # no GNU time: the wall clock around the child, its peak RSS from getrusage
            import resource
            start = time.perf_counter()
            proc = subprocess.run(command, cwd=cwd, env=env, stdout=stdout,
                                  stderr=subprocess.PIPE, text=True)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            text = (f"Elapsed (wall clock) time (h:mm:ss or m:ss): 0:{time.perf_counter() - start:.2f}\n"
                    f"Maximum resident set size (kbytes): {peak}\n"
                    f"User time (seconds): {usage.ru_utime}\nSystem time (seconds): {usage.ru_stime}\n")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    wall = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", text).group(1))
              for kind in ("User", "System"))
    return {"seconds": wall, "peak_mb": peak_kb / 1024, "cpu": cpu}


def ours_command(sweep: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ddg_sweep.run", "aggregate", "--input-dir", str(sweep),
            "--output-dir", str(out)]


def drop_cache(out: Path) -> None:
    """Cold: no cache of parsed runs (OUT/.parsed), so every run is read and parsed (and the
    cache written, as a first aggregate does)."""
    import shutil

    shutil.rmtree(out / ".parsed", ignore_errors=True)


def baseline_command(sweep: Path, domainbed: Path | None, no_torch: bool) -> tuple[list, Path]:
    if domainbed is not None:
        return [sys.executable, "-m", "domainbed.scripts.collect_results", "--input_dir",
                str(sweep)], domainbed
    return ([sys.executable, str(ROOT / "benchmarks" / "domainbed_like.py"), "--input_dir",
             str(sweep)] + (["--no-torch"] if no_torch else []), ROOT)


def _line(name: str, runs: list[dict]) -> str:
    seconds = [r["seconds"] for r in runs]
    return (f"  {name:<22} median {statistics.median(seconds):7.2f} s wall, "
            f"{statistics.median(r['cpu'] for r in runs):7.2f} s CPU (user+sys), peak RSS "
            f"{statistics.median(r['peak_mb'] for r in runs):6.0f} MB   (wall: "
            + ", ".join(f"{s:.2f}" for s in seconds) + ")")


def bench_size(size: int, base: Path, args) -> None:
    from sweepgen import make_sweep  # beside this script (the tests use it too)

    sweep, out = base / f"sweep_{size}", base / f"agg_{size}"
    if not (sweep / ".complete").exists():
        start = time.perf_counter()
        info = make_sweep(sweep, size)
        (sweep / ".complete").write_text("")
        print(f"generated {info['n_records']} records in {info['n_runs']} runs "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    warm_page_cache(sweep)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), str(args.domainbed or ""), os.environ.get("PYTHONPATH", "")) if p)}
    with_baseline = size <= args.baseline_max
    command, cwd = baseline_command(sweep, args.domainbed, args.no_torch)
    name = "DomainBed" if args.domainbed else "domainbed_like" + (" (no torch)" if args.no_torch else "")
    ours, warm, baseline, load_before = [], [], [], os.getloadavg()[0]
    for _ in range(args.repeats):
        drop_cache(out)
        ours.append(timed(ours_command(sweep, out), ROOT, env, base / "ours.out"))
        cold_tables = (out / "tables.txt").read_text()
        # warm: the same sweep aggregated again into the same folder, its cache up to date
        warm.append(timed(ours_command(sweep, out), ROOT, env, base / "ours_warm.out"))
        if with_baseline:
            baseline.append(timed(command, cwd, env, base / "baseline.out"))
    print(f"{size} records, whole processes, {args.repeats} runs each, alternating "
          f"(1-minute load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}):")
    print(_line("ours, cold (no cache)", ours))
    print(_line("ours, warm (cache)", warm) + "  [re-aggregate, nothing changed]")
    reused = re.search(r"reused from the cache: (\d+)", (base / "ours_warm.out").read_text())
    print(f"  warm runs reused from the cache: {reused.group(1) if reused else '?'}")
    if with_baseline:
        print(_line(name, baseline))
        same = (base / "baseline.out").read_text() == (out / "tables.txt").read_text() == cold_tables
        speedup = (statistics.median(r["seconds"] for r in baseline)
                   / statistics.median(r["seconds"] for r in ours))
        cpu_ratio = (statistics.median(r["cpu"] for r in baseline)
                     / statistics.median(r["cpu"] for r in ours))
        warm_speedup = (statistics.median(r["seconds"] for r in baseline)
                        / statistics.median(r["seconds"] for r in warm))
        warm_cpu = (statistics.median(r["cpu"] for r in baseline)
                    / statistics.median(r["cpu"] for r in warm))
        print(f"  cold speed-up {speedup:.1f}x wall, {cpu_ratio:.1f}x CPU; warm (cache) "
              f"{warm_speedup:.1f}x wall, {warm_cpu:.1f}x CPU (medians); "
              f"tables identical (baseline, cold, warm): {same}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[94_000, 1_000_000])
    parser.add_argument("--baseline-max", type=int, default=100_000,
                        help="run the baseline only on sweeps up to this many records")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="generate sweeps here and keep them")
    parser.add_argument("--domainbed", type=Path, default=None,
                        help="a DomainBed checkout: run its collect_results as the baseline")
    parser.add_argument("--no-torch", action="store_true",
                        help="the stand-in skips DomainBed's torch import")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_aggregate_") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            bench_size(size, base, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
