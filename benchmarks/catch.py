"""How many examples it takes to catch each planted bug of tests/, at each
hypothesis profile's budget, with the corner examples first (the default) and
without them (hypothesis' search alone, --no-parity-corners).

For every planted bug, the plugin runs in a subprocess on the user's converted
file that carries it; the record's `first_failure_at` is the number of the
first failing example drawn. `dev` and `nightly` draw at random, so they run
with several seeds (--hypothesis-seed) and report the median and how many
seeds caught the bug within the budget; `ci` is derandomized: one run.

    .venv/bin/python benchmarks/catch.py [--seeds 5] [--json benchmarks/catch.json]

Prints a markdown table; takes ~10-20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROFILES = {"dev": 10, "ci": 25, "nightly": 200}


def planted_bugs(folder: Path) -> list[tuple[str, list[str]]]:
    """(bug, plugin arguments) for each planted bug of the tests."""
    from harness.registry import load_model_file
    from tests import planted

    bugs = [
        ("cnn: one weight x1.001", ["--model=cnn", f"--converted={planted.perturbed_weight_onnx('cnn', folder)}"]),
        ("depthwise: H and W swapped", ["--model=depthwise", "--converted="
                                        f"{planted.export_zoo('depthwise', folder / 'tr', planted.TransposeHW)}"]),
        ("mlp: an extra output axis", ["--model=mlp", "--converted="
                                       f"{planted.export_zoo('mlp', folder / 'ax', planted.ExtraAxis)}"]),
        ("hf_resnet: one weight x1.001 deep inside", [
            "--model=hf_resnet", f"--converted={planted.perturbed_weight_onnx('hf_resnet', folder, which='middle')}"]),
    ]
    sqrt_file = folder / "sqrt_models.py"
    sqrt_file.write_text(planted.SQRT_MODEL_FILE)
    (sqrt_spec,) = load_model_file(sqrt_file)
    bugs.append(("sqrt: NaN on one side only", [f"--model={sqrt_file}", "--converted="
                 f"{planted.export(planted.SquareRootOfMagnitude(), sqrt_spec, folder / 'sqrt')}"]))
    corner_file = folder / "corner_models.py"
    corner_file.write_text(planted.CORNER_MODEL_FILE)
    specs = {spec.name: spec for spec in load_model_file(corner_file)}
    for name, (where, buggy) in planted.CORNER_BUGS.items():
        path = planted.export(buggy(), specs[name], folder / f"{name}-bug")
        bugs.append((f"{name}: wrong only at {where}", [f"--model={corner_file}", "-k", name, f"--converted={path}"]))
    return bugs


def first_failure(args: list[str], examples: int, corners: bool, seed: int | None, workdir: Path,
                  cache: Path) -> int | None:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--device=cpu", "--source=torch",
               f"--parity-examples={examples}", f"--parity-cache-dir={cache}", *args]
    if not corners:
        command.append("--no-parity-corners")
    if seed is None:
        command.append("--hypothesis-profile=ci")
    else:
        command += ["--hypothesis-profile=dev", f"--hypothesis-seed={seed}"]
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    (record,) = json.loads((workdir / "reports" / "parity.json").read_text())["cases"].values()
    return record.get("first_failure_at") if record["status"] == "failed" else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds for the random profiles (default 5)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "catch.json")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="parity-catch-"))
    cache = folder / "cache"
    results: dict[str, dict] = {}
    for bug, bug_args in planted_bugs(folder):
        results[bug] = {}
        for corners in (True, False):
            for profile, budget in PROFILES.items():
                seeds = [None] if profile == "ci" else list(range(args.seeds))
                found = []
                for seed in seeds:
                    workdir = folder / "run"
                    shutil.rmtree(workdir, ignore_errors=True)  # no example database from an earlier run
                    workdir.mkdir()
                    found.append(first_failure(bug_args, budget, corners, seed, workdir, cache))
                results[bug][f"{'corners' if corners else 'search only'} {profile}"] = found
                print(f"{bug} | corners={corners} | {profile}: {found}", file=sys.stderr, flush=True)
    args.json.write_text(json.dumps(results, indent=1))
    columns = [f"{mode} {profile}" for mode in ("corners", "search only") for profile in PROFILES]
    print("| planted bug | " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for bug, row in results.items():
        cells = []
        for column in columns:
            found = row[column]
            caught = [n for n in found if n is not None]
            if not caught:
                cells.append(f"not caught ({len(found)})")
            elif len(found) == 1:
                cells.append(str(caught[0]))
            else:
                cells.append(f"{statistics.median(caught):g} ({len(caught)}/{len(found)} caught)")
        print(f"| {bug} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
