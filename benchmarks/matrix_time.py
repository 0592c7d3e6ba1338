"""Where the time of a whole parity run goes, cold and warm: the run's wall time
and CPU time, and the worker-seconds of its cases split into conversion (the
model's build and its hops), the reference (the original on the examples, its
float64 twin, the input-sensitivity draws), the target (loading and running the
converted model) and the harness's own work (inputs, comparison, exploration
and every other part of a case), plus what no case holds: process and worker
start-up, collection, imports charged to no case, the reports.

Cold = the artifact cache and the reports removed before the run; warm = the
same command again. Whole `pytest` processes in the repository, each pair
measured back to back.

    python benchmarks/matrix_time.py [--pairs 1] [-- PYTEST ARGS...]

The default arguments are `make parity`'s (`--parity --hypothesis-profile=ci -p
no:randomly -n auto`); give `-- --tier=all` to add to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

MAKE_PARITY = ("--parity", "--hypothesis-profile=ci", "-p", "no:randomly", "-n", "auto")
REPO = Path(__file__).resolve().parents[1]
# timings keys (runner records) by the share they count in
SHARES = {
    "conversion": ("build_s", "convert_s"),
    "reference": ("reference_s", "noise_s", "sensitivity_s"),
    "target": ("load_s", "target_s"),
}


def _run(args: list[str], scratch: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s of the process and its children, parity.json) of one run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # as `make parity` runs it (Makefile, RUN)
    env["PYTHONPYCACHEPREFIX"] = str(REPO / ".pycache")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *MAKE_PARITY, f"--parity-cache-dir={scratch / 'cache'}",
                           f"--parity-reports={scratch / 'reports'}", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):   # 1: a case failed, which is a result to time too
        sys.exit(f"pytest exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return wall, cpu, json.loads((scratch / "reports" / "parity.json").read_text())


def shares(results: dict, wall: float, workers: int) -> dict[str, float]:
    """Worker-seconds by share: the cases' timings summed, the rest of each case
    as the harness's own, and the workers' time outside any case."""
    totals = dict.fromkeys([*SHARES, "harness", "outside cases"], 0.0)
    for record in results["cases"].values():
        timings = record.get("timings") or {}
        duration = record.get("duration_s") or 0.0
        counted = 0.0
        for share, keys in SHARES.items():
            seconds = sum(timings.get(key, 0.0) for key in keys)
            totals[share] += seconds
            counted += seconds
        totals["harness"] += max(duration - counted, 0.0)
    totals["outside cases"] = max(wall * workers - sum(totals.values()), 0.0)
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1, help="cold and warm runs, in pairs")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    workers = os.cpu_count() or 1
    rows = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="matrix-time-") as scratch_dir:
        scratch = Path(scratch_dir)
        for _ in range(args.pairs):
            shutil.rmtree(scratch / "cache", ignore_errors=True)
            shutil.rmtree(scratch / "reports", ignore_errors=True)
            for kind in ("cold", "warm"):
                rows[kind].append(_run(args.pytest_args, scratch))
    print(f"`pytest {' '.join([*MAKE_PARITY, *args.pytest_args])}`, {date.today()}, {workers} cores, "
          f"medians of {args.pairs} pair(s)")
    statuses = {}
    for record in rows["cold"][-1][2]["cases"].values():
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    print("cases:", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    print("\n| run | wall s | CPU s | conversion | reference | target | harness | outside cases |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        split = shares(runs[-1][2], runs[-1][0], workers)
        total = sum(split.values()) or 1.0
        cells = " | ".join(f"{seconds:.0f} s ({seconds / total:.0%})" for seconds in split.values())
        print(f"| {kind} | {wall:.1f} | {cpu:.0f} | {cells} |")
    ratio = statistics.median(w[0] / c[0] for w, c in zip(rows["warm"], rows["cold"]))
    print(f"\nwarm / cold wall time: {ratio:.2f}x (shares in worker-seconds: wall x {workers} workers)")


if __name__ == "__main__":
    main()
