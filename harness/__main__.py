"""`python -m harness ...`: the engine outside pytest.

    python -m harness replay reports/failures/CASE.npz   rerun one saved failing input
    python -m harness report [reports/parity.json]       rebuild parity.html from the JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def replay(path: Path) -> int:
    from harness.cache import ArtifactCache
    from harness.engine import prepare_case, run_example
    from harness.errors import CaseError
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.results import load_failure

    info, inputs = load_failure(path)
    options = RunOptions.from_json(info["options"])
    options.models, options.sources = (info["model_ref"],), (info["source"],)
    options.targets, options.devices = (info["target"],), (info["device"],)
    cases = [c for c in build_cases(options) if c.id == info["case_id"]]
    if not cases:
        print(f"{path}: case {info['case_id']} cannot be rebuilt here", file=sys.stderr)
        return 2
    case = cases[0]
    if case.skip or case.error:
        print(f"{case.id}: {case.skip or case.error}", file=sys.stderr)
        return 2
    try:
        prepared = prepare_case(case, options, ArtifactCache(options.cache_dir, options.use_cache))
        outcome = run_example(prepared, inputs)
    except CaseError as error:
        print(f"{case.id}: {error}", file=sys.stderr)
        return 2
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
    print(f"{case.id} on {shapes}: {'PASSED' if outcome.passed else 'FAILED'}")
    for comparison in outcome.comparisons:
        print(f"  {comparison.message}")
    if outcome.error:
        print(f"  {outcome.error}")
    return 0 if outcome.passed else 1


def report(path: Path) -> int:
    from harness.report.html import write_html_report
    from harness.results import load_results

    out = write_html_report(load_results(path), path.with_suffix(".html"))
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("replay", help="rerun a saved failing input").add_argument("npz", type=Path)
    commands.add_parser("report", help="rebuild the HTML report").add_argument(
        "json", type=Path, nargs="?", default=Path("reports/parity.json"))
    args = parser.parse_args(argv)
    if args.command == "replay":
        return replay(args.npz)
    return report(args.json)


if __name__ == "__main__":
    sys.exit(main())
