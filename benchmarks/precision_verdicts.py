"""The harness's own verdicts on reduced-precision builds (issue 21): every correct build
and every planted bug of benchmarks/precision_floor.py, each run as a case THROUGH THE
HARNESS (the fp32 ONNX file as the original, the build as --converted, onnxruntime cpu,
the build's --precision), at each hypothesis profile (harness/profiles.py: dev, ci, nightly).

    .venv/bin/python benchmarks/precision_verdicts.py [--profiles dev,ci,nightly] [--nightly subset|all]
        [--models cnn,two_outputs,transformer] [--json out.json]

A cell is the case's status (pass, FAIL, inconclusive; in bold where it is not the one wanted),
and for a failure the checks that failed it: F (an output's error past the multiple of a standard
build's, harness/precision_floor.py), Q (a Quantize/Dequantize pair past its limits,
harness/qdq_check.py), T (an output's fixed tolerance, which the floor does not lift), H (the file
run in its own float16 by harness/file_precision.py: what the target hid). The goal: every bug
FAIL in every column, every correct build pass, none inconclusive.

`--nightly subset` (the default) runs nightly's 200 examples on every bug and on the two
correct builds per model with the largest error ratio at the previous profile; the rest
of the column reads `-`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# imported before the first case: a run takes the harness as it stands when it starts
from hypothesis import settings  # noqa: E402

from benchmarks import precision_floor as pf  # noqa: E402
from harness.cache import ArtifactCache  # noqa: E402
from harness.matrix import build_cases  # noqa: E402
from harness.options import RunOptions  # noqa: E402
from harness.profiles import PROFILES, register_profiles  # noqa: E402
from harness.registry import get_model  # noqa: E402
from harness.runner import run_case  # noqa: E402

MODELS = pf.MODELS
# the transformer's fp16 bugs are planted in it fed tokens x1000 (precision_floor.export_large_transformer)
LARGE = "transformer x1000"
HARNESS_OWN = "harness's own lowering"


@dataclass(frozen=True)
class Build:
    """One converted file of one model: what it is, what verdict it should get."""

    model: str          # the zoo spec whose inputs the case draws
    name: str           # the row of the table
    kind: str           # "correct" or "bug"
    precision: str      # fp16, int8, int8-dynamic
    original: Path      # the fp32 ONNX file
    converted: Path | None   # None: the harness lowers the original itself


def builds(folder: Path, models: Sequence[str] = MODELS) -> list[Build]:
    """Every correct build and planted bug of precision_floor.py, per model, in table order."""
    found: list[Build] = []
    for model in models:
        original = pf.export_zoo_model(model, folder / model / "fp32")
        _, correct, bugs = pf.int8_builds(original, model, folder / model)
        found.append(Build(model, f"int8 {HARNESS_OWN}", "correct", "int8", original, None))
        found += [Build(model, f"int8 {name}", "correct", "int8", original, path) for name, path in correct.items()]
        found += [Build(model, f"int8 {name}", "bug", "int8", original, path) for name, path in bugs.items()]
        _, dynamic = pf.dynamic_builds(original, model, folder / model)
        found.append(Build(model, f"int8-dynamic {HARNESS_OWN}", "correct", "int8-dynamic", original, None))
        found += [Build(model, f"int8-dynamic {name}", "correct", "int8-dynamic", original, path)
                  for name, path in dynamic.items()]
    for label, original, spec_name, _, correct, bugs in pf.fp16_builds(folder / "fp16"):
        if spec_name not in models:
            continue
        suffix = " (tokens x1000)" if label == LARGE else ""
        found.append(Build(spec_name, f"fp16 {HARNESS_OWN}{suffix}", "correct", "fp16", original, None))
        found += [Build(spec_name, f"fp16 {name}{suffix}", "correct", "fp16", original, path)
                  for name, path in correct.items()]
        found += [Build(spec_name, f"fp16 {name}{suffix}", "bug", "fp16", original, path)
                  for name, path in bugs.items()]
    return found


def failed_checks(record: dict[str, Any]) -> list[str]:
    """The checks that failed `record`: floor, Q/DQ, thresholds, file (see the module's docstring)."""
    checks = []
    for output in record.get("outputs", {}).values():
        floor = output.get("floor")
        if floor is not None and not floor["passed"]:
            checks.append("floor")
        elif not output.get("passed", True):
            checks.append("thresholds")
    if (record.get("qdq_check") or {}).get("findings"):
        checks.append("Q/DQ")
    if (record.get("file_precision") or {}).get("verdict") == "failed":
        checks.append("file")
    return sorted(set(checks), key=checks.index)


def run_build(build: Build, profile: str, cache: Path, reports: Path) -> dict[str, Any]:
    """`build` as one case at `profile` (its hypothesis profile loaded for the case: ci's
    derandomized draws), in process: the record's verdict, the checks that failed it, its error
    ratio and wall time."""
    register_profiles()
    previous = settings.get_current_profile_name()
    settings.load_profile(profile)
    options = RunOptions(models=(str(build.original),), sources=("onnx",), targets=("onnxruntime",),
                         devices=("cpu",), precisions=(build.precision,), converted=build.converted,
                         input_specs=get_model(build.model).inputs, cache_dir=cache, reports_dir=reports,
                         localize="off")
    (case,) = build_cases(options)
    start = time.perf_counter()
    try:
        record = run_case(case, options, ArtifactCache(cache)).to_json()
    finally:   # a test's process keeps the profile it chose
        settings.load_profile(previous)
    seconds = time.perf_counter() - start
    file_check = record.get("file_precision") or {}
    return {"model": build.model, "build": build.name, "kind": build.kind, "profile": profile,
            "status": record["status"], "checks": failed_checks(record),
            "error_ratio": record.get("worst_error_ratio"), "seconds": round(seconds, 2),
            "examples": record.get("examples"), "file_precision": file_check.get("verdict"),
            "message": record.get("message", "")}


def expected(row: dict[str, Any]) -> bool:
    """Whether `row`'s verdict is the one its build should get."""
    return row["status"] == ("failed" if row["kind"] == "bug" else "passed")


def nightly_subset(rows: list[dict[str, Any]], models: Sequence[str]) -> set[tuple[str, str]]:
    """(model, build) of every bug and of the two correct builds per model with the largest error
    ratio at the last profile run before nightly."""
    last = [r for r in rows if r["profile"] == rows[-1]["profile"]]
    chosen = {(r["model"], r["build"]) for r in last if r["kind"] == "bug"}
    for model in models:
        correct = sorted((r for r in last if r["model"] == model and r["kind"] == "correct"),
                         key=lambda r: -(r["error_ratio"] or 0.0))
        chosen |= {(r["model"], r["build"]) for r in correct[:2]}
    return chosen


# a failed cell's checks, by letter: floor, Q/DQ pair, fixed thresholds, the file in float16
CHECK_LETTERS = {"floor": "F", "Q/DQ": "Q", "thresholds": "T", "file": "H"}


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    text = {"failed": "FAIL", "passed": "pass"}.get(row["status"], row["status"])
    if row["checks"]:
        text += " " + "".join(CHECK_LETTERS[check] for check in row["checks"])
    return text if expected(row) else f"**{text}**"


def table(rows: list[dict[str, Any]], models: Sequence[str], profiles: Sequence[str]) -> str:
    """Rows = build, columns = model x profile; a verdict that is not the one wanted is in bold."""
    columns = [(m, p) for m in models for p in profiles]
    by_cell = {(r["build"], r["model"], r["profile"]): r for r in rows}
    names = list(dict.fromkeys((r["build"], r["kind"]) for r in rows))
    lines = ["| build | kind | " + " | ".join(f"{m} {p}" for m, p in columns) + " |",
             "|" + " --- |" * (len(columns) + 2)]
    for name, kind in names:
        lines.append(f"| {name} | {kind} | " + " | ".join(cell(by_cell.get((name, m, p))) for m, p in columns) + " |")
    return "\n".join(lines)


def column_times(rows: list[dict[str, Any]], profiles: Sequence[str]) -> str:
    parts = []
    for profile in profiles:
        found = [r for r in rows if r["profile"] == profile]
        if found:
            parts.append(f"{profile}: {len(found)} cases, {sum(r['seconds'] for r in found):.0f} s "
                         f"(slowest {max(r['seconds'] for r in found):.1f} s)")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated: dev,ci,nightly")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--nightly", choices=("subset", "all"), default="subset",
                        help="nightly on every bug and the two worst correct builds per model, or on all")
    parser.add_argument("--json", type=Path, help="write every row here too")
    args = parser.parse_args(argv)
    profiles = args.profiles.split(",")
    models = args.models.split(",")
    unknown = [p for p in profiles if p not in PROFILES] + [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--profiles/--models: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(PROFILES)} and {', '.join(MODELS)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        start = time.perf_counter()
        every = builds(folder / "builds", models)
        print(f"built {len(every)} files in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for profile in profiles:
            chosen = every
            if profile == "nightly" and args.nightly == "subset" and rows:
                subset = nightly_subset(rows, models)
                chosen = [b for b in every if (b.model, b.name) in subset]
            for index, build in enumerate(chosen):
                # a reports folder per case: its hypothesis database replays a failure found there first,
                # and every case here has one id (model-onnx-onnxruntime-cpu-converted-PRECISION)
                row = run_build(build, profile, folder / "cache", folder / "reports" / f"{profile}-{index}")
                rows.append(row)
                print(f"{profile} {build.model} {build.name}: {cell(row)} ratio {row['error_ratio']} "
                      f"{row['seconds']} s", file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows, models, profiles))
    print(f"\n{column_times(rows, profiles)}")
    wrong = [r for r in rows if not expected(r)]
    for row in wrong:
        print(f"\nWRONG: {row['model']} {row['build']} @{row['profile']}: {row['status']}\n{row['message']}")


if __name__ == "__main__":
    main()
