"""`python -m harness ...`: the engine outside pytest.

    python -m harness replay reports/failures/CASE.npz   rerun one saved failing input
    python -m harness report [reports/parity.json]       rebuild parity.html from the JSON
    python -m harness diff OLD.json NEW.json [--html OUT.html] [--compare-fail error:10x]
                                                         versions that changed, then the drift of
                                                         every output; exit 1 on a regression
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
        outcome = run_example(prepared, inputs, noise_wanted=lambda comparison: True)
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


def diff(old_path: Path, new_path: Path, html_path: Path | None, compare_fail: str) -> int:
    from harness.report.baseline import (BaselineError, diff_runs, load_baseline, parse_compare_fail,
                                         render_diff_text, write_diff_html)

    try:
        limits = parse_compare_fail(compare_fail)
        old, new = load_baseline(old_path), load_baseline(new_path)
    except BaselineError as error:
        print(f"python -m harness diff: {error}", file=sys.stderr)
        return 2
    result = diff_runs(old, new, limits, old_label=str(old_path), new_label=str(new_path))
    sys.stdout.write(render_diff_text(result))
    out = html_path or new_path.with_name(new_path.stem + ".diff.html")
    write_diff_html(result, out)
    print(f"html: {out}")
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("replay", help="rerun a saved failing input").add_argument("npz", type=Path)
    commands.add_parser("report", help="rebuild the HTML report").add_argument(
        "json", type=Path, nargs="?", default=Path("reports/parity.json"))
    diff_parser = commands.add_parser("diff", help="compare two runs' results (versions, then drift per output)")
    diff_parser.add_argument("old", type=Path, help="the earlier parity.json (or a baseline)")
    diff_parser.add_argument("new", type=Path, help="the later parity.json")
    diff_parser.add_argument("--html", type=Path, default=None,
                             help="where to write the HTML diff (default: NEW.diff.html next to NEW)")
    diff_parser.add_argument("--compare-fail", default="error:10x",
                             help="growth that fails: error:10x, error:10, error:1000%% (default error:10x)")
    args = parser.parse_args(argv)
    if args.command == "replay":
        return replay(args.npz)
    if args.command == "diff":
        return diff(args.old, args.new, args.html, args.compare_fail)
    return report(args.json)


if __name__ == "__main__":
    sys.exit(main())
