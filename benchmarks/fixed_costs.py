"""The harness's own fixed costs on the 12-case set of issue 22 (cnn, mlp,
transformer from torch x ONNX Runtime, OpenVINO, MNN, ncnn on the CPU, ci
profile): collection against the bare import of the frameworks, the cold and
the cached (warm) run of the set, and each warm case's time beyond the two
models' inference, from its record's timings. Whole `pytest` processes in a
scratch folder, each figure the median of its runs.

    python benchmarks/fixed_costs.py [--runs 3] [--pairs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

SET_ARGS = ("--parity", "--hypothesis-profile=ci", "--model=cnn,mlp,transformer", "--source=torch",
            "--target=onnxruntime,openvino,mnn,ncnn", "--device=cpu")
# the frameworks issue 22 measured collection against
BARE_IMPORTS = "import torch, onnxruntime, openvino, numpy"


def _wall(command: list[str], cwd: Path) -> float:
    """Seconds `command` took as a whole process; its failure ends the benchmark, with its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds


def _pytest(cwd: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *SET_ARGS,
            f"--parity-cache-dir={cache}", *extra]


def _beyond_inference(report: Path) -> list[tuple[str, float, float, float, float]]:
    """(case id, duration, the two models' inference on the examples, the original's other runs (its
    float64 twin, the input-sensitivity draws), the rest: the harness's own) of each case that ran."""
    rows = []
    for case_id, record in json.loads(report.read_text())["cases"].items():
        timings = record.get("timings") or {}
        if "explore_s" not in timings:
            continue
        inference = timings.get("reference_s", 0.0) + timings.get("target_s", 0.0)
        extra_runs = timings.get("noise_s", 0.0) + timings.get("sensitivity_s", 0.0)
        rows.append((case_id, record["duration_s"], inference, extra_runs,
                     record["duration_s"] - inference - extra_runs))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of collection and of the bare imports")
    parser.add_argument("--pairs", type=int, default=1, help="cold and warm runs of the set, in pairs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fixed-costs-") as scratch:
        work = Path(scratch)
        bare = statistics.median(_wall([sys.executable, "-c", BARE_IMPORTS], work) for _ in range(args.runs))
        collect = statistics.median(_wall(_pytest(work, work / "unused-cache", "--collect-only", "-q"), work)
                                    for _ in range(args.runs))
        cold, warm = [], []
        for pair in range(args.pairs):
            cache = work / f"cache-{pair}"
            cold.append(_wall(_pytest(work, cache), work))
            warm.append(_wall(_pytest(work, cache), work))
        rows = _beyond_inference(work / "reports" / "parity.json")   # the last warm run's records
    print(f"fixed costs of the 12-case set, {date.today()}, {os.cpu_count()} cores; medians")
    print(f"collection (--collect-only) {collect:.2f} s; `python -c '{BARE_IMPORTS}'` {bare:.2f} s: "
          f"{collect / bare:.2f}x")
    print(f"cold run {statistics.median(cold):.1f} s, warm run {statistics.median(warm):.1f} s: "
          f"{statistics.median(w / c for w, c in zip(warm, cold)):.2f}x (median of {args.pairs} pair(s))")
    print("\n| warm case | duration s | inference s | twin + sensitivity s | the rest (build, cache hit, load, "
          "hypothesis, the harness) s |")
    print("| --- | --- | --- | --- | --- |")
    for case_id, duration, inference, extra_runs, own in rows:
        print(f"| {case_id} | {duration:.2f} | {inference:.2f} | {extra_runs:.2f} | {own:.2f} |")
    owns = [row[4] for row in rows]
    if owns:
        print(f"\nharness's own time per case: median {statistics.median(owns):.2f} s, largest {max(owns):.2f} s")


if __name__ == "__main__":
    main()
