"""`python -m harness ...`: the engine outside pytest.

    python -m harness replay reports/failures/CASE.npz [--model REF] [--converted PATH] [--trust-model-code]
                                                         rerun one saved failing input; model files,
                                                         converted files and trust from the command line only
    python -m harness replay reports/failures/CASE.repro  run a localized failure's reproduction (its repro.py):
                                                         exit 1 reproduced, 0 not, 2 it cannot run here
    python -m harness localize --model REF --converted PATH [--input FILE.npz] [--target T] [--device D]
                                                         where a converted model first leaves the original,
                                                         with a reproduction: exit 1 they disagree, 0 agree
    python -m harness report [reports/parity.json]       rebuild parity.html from the JSON
    python -m harness diff OLD.json NEW.json [--html OUT.html] [--compare-fail error:10x] [--allow-lost-coverage]
                                                         versions that changed, then the drift of
                                                         every output; exit 1 on a regression or
                                                         when NEW covers less than OLD
    python -m harness merge SHARD.json... -o parity.json [--html parity.html] [--prefer=newest] [--expect=CASES.json]
                                                         one run out of its shards' results, each case with
                                                         its machine's environment: exit 2 an input cannot
                                                         be read, 1 expected cases are missing
    python -m harness cache export DIR -o FILE.tar.gz     the cache's entries that pass their checksums, as a
                                                         tarball to unpack and give as --parity-cache-seed
    python -m harness cache prune DIR [--older-than DAYS] [--max-size GB]
                                                         remove entries least recently used first; one in use
                                                         by another process stays
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_REPLAY_DRAWS = 100_000   # a random case replayed over its run's draws: more would be a file made by hand
CACHE_SEED_HELP = ("a read-only cache (another run's, restored or unpacked) consulted where --cache-dir misses; "
                   "its entries are checked and copied into --cache-dir, it is never written")


def replay(path: Path, model: str | None, converted: Path | None, trust_model_code: bool, cache_dir: Path,
           cache_seed: Path | None = None) -> int:
    """Rerun a saved failing input. The .npz says which case and with which
    options; trust and every path (the model file, the converted file, the
    cache) come from the command line only: a failure file is data, and may
    come from anyone."""
    # A reproduction folder (harness/localize/repro.py): its own script judges. A repro.py that is a dangling
    # link is one too, so that it is refused as a link.
    if (path / "repro.py").is_file() or (path / "repro.py").is_symlink():
        from harness.localize.repro import run_repro

        try:
            code, output = run_repro(path, trust_script=trust_model_code)
        except ValueError as error:
            print(f"python -m harness replay: {error}", file=sys.stderr)
            return 2
        print(output.rstrip("\n"))
        return code if code in (0, 1) else 2

    import shlex
    from dataclasses import replace

    from harness.cache import ArtifactCache
    from harness.engine import distribution_outcome, prepare_case, run_example
    from harness.errors import CaseError, OptionError, summarize_exception
    from harness.explore import RANDOM_DRAWS
    from harness.matrix import availability_checked, build_cases
    from harness.options import RunOptions
    from harness.registry import zoo_models
    from harness.results import load_failure

    try:
        info, inputs = load_failure(path)
    except ValueError as error:
        print(f"python -m harness replay: {error}", file=sys.stderr)
        return 2
    try:
        stored = RunOptions.from_json(info["options"])
    except (TypeError, KeyError, AttributeError, ValueError) as error:  # stored options of the wrong shape
        print(f"python -m harness replay: {path}: its stored options cannot be used ({summarize_exception(error, 1)})",
              file=sys.stderr)
        return 2
    ref = info["model_ref"]
    needed = []  # what the command line must name, since the file may not
    if model is None and ref not in zoo_models():
        needed.append(("--model", ref))
    if converted is None and stored.converted is not None:
        needed.append(("--converted", str(stored.converted)))
    if needed:
        flags = " ".join(f"{flag} {shlex.quote(value)}" for flag, value in needed)
        trusted = (f" (the run that saved it also passed --trust-model-code: add it only if you trust {ref})"
                   if stored.trust_model_code else "")
        print(f"python -m harness replay: {path} was saved from {' and '.join(repr(v) for _, v in needed)}; replay "
              f"takes model files and converted files from the command line only, never from the failure file. "
              f"If you trust them, run: python -m harness replay {shlex.quote(str(path))} {flags}{trusted}",
              file=sys.stderr)
        return 2
    if converted is not None and stored.converted is None:
        print(f"python -m harness replay: {path} was not found with a converted file: --converted does not apply",
              file=sys.stderr)
        return 2
    options = replace(stored, models=(model or ref,), sources=(info["source"],), targets=(info["target"],),
                      devices=(info["device"],), converted=converted, trust_model_code=trust_model_code,
                      cache_dir=cache_dir, cache_seed=cache_seed, reports_dir=RunOptions().reports_dir)
    try:
        cases = build_cases(options)
    except OptionError as error:   # the stored --input-spec names no input of the model file given now
        print(f"python -m harness replay: {path}: {error}", file=sys.stderr)
        return 2
    chosen = [c for c in cases if c.id == info["case_id"]]
    if not chosen and model is not None:
        # The file named on the command line may go by another name than the one the failure was saved from
        # (renamed, or told apart from another model of its run by its folder's name): the rest of the id must
        # match. A name made from a path holds no "-" (matrix.model_name), so the id's model part ends at the first.
        rest = info["case_id"].partition("-")[2]
        chosen = [c for c in cases if c.id[len(c.model) + 1:] == rest]
    if not chosen:
        why = "; ".join(c.error for c in cases if c.error) or f"no case {info['case_id']} among {[c.id for c in cases]}"
        print(f"python -m harness replay: {path}: the case cannot be rebuilt here: {why}", file=sys.stderr)
        return 2
    case = availability_checked(chosen[0])
    if case.skip or case.error:
        print(f"{case.id}: {case.skip or case.error}", file=sys.stderr)
        return 2
    draws = info.get("draws", max(options.examples or 0, RANDOM_DRAWS))   # absent: a file of an older harness
    if isinstance(draws, bool) or not isinstance(draws, int) or not 3 <= draws <= MAX_REPLAY_DRAWS:
        print(f"python -m harness replay: {path}: its replay entry's draws {draws!r} is not a whole number from 3 to "
              f"{MAX_REPLAY_DRAWS}: it is not a file this harness wrote; run the case again to save a new one",
              file=sys.stderr)
        return 2
    try:
        prepared = prepare_case(case, options, ArtifactCache(options.cache_dir, options.use_cache, options.cache_seed))
        if prepared.case.random_ops:   # judged by distribution over the run's own number of draws (explore.py)
            outcome, drawn = distribution_outcome(prepared, inputs, draws)
        else:
            outcome = run_example(prepared, inputs, noise_wanted=lambda comparison: True)
    except CaseError as error:
        print(f"{case.id}: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # an option from the file that an adapter cannot use raises that adapter's own type
        print(f"{case.id}: {summarize_exception(error, 6)}", file=sys.stderr)
        return 2
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
    print(f"{case.id} on {shapes or 'no inputs'}: {'PASSED' if outcome.passed else 'FAILED'}")
    if prepared.case.random_ops:
        print(f"  random operators ({', '.join(prepared.case.random_ops)}): compared by distribution over {drawn} "
              "runs of this input, never elementwise")
    for comparison in outcome.comparisons:
        print(f"  {comparison.message}")
    if outcome.error:
        print(f"  {outcome.error}")
    return 0 if outcome.passed else 1


def localize(model: str, converted: Path, input_path: Path | None, source: str | None, target: str, device: str,
             input_specs: list[str], trust_model_code: bool, mode: str, out: Path, cache_dir: Path,
             cache_seed: Path | None = None, hop_options: dict | None = None,
             runtime_options: dict | None = None) -> int:
    """Localize a user's pair (`--model` and `--converted`) on one input: a
    saved failure's, a .npz of arrays by input name, or the spec's example.
    Prints what a failed case's record says; writes it as JSON and the
    reproduction under `out`. Exit 1 when the outputs disagree, 0 when they
    agree, 2 when it cannot run."""
    import json

    from harness.cache import ArtifactCache
    from harness.engine import prepare_case, run_example
    from harness.errors import CaseError, summarize_exception
    from harness.inputs import example_recipe, make_inputs
    from harness.localize.locate import localize as localize_walk, walkable_case
    from harness.matrix import availability_checked, build_cases
    from harness.errors import OptionError
    from harness.options import RunOptions, parse_input_specs

    try:
        options = RunOptions(models=(model,), converted=converted, sources=(source,) if source else (),
                             targets=(target,), devices=(device,),
                             input_specs=parse_input_specs(input_specs),
                             trust_model_code=trust_model_code, cache_dir=cache_dir, cache_seed=cache_seed,
                             reports_dir=out, localize=mode, hop_options=hop_options or {},
                             runtime_options=runtime_options or {})
        built = build_cases(options)
    except OptionError as error:
        print(f"python -m harness localize: {error}", file=sys.stderr)
        return 2
    cases = [c for c in map(availability_checked, built) if not c.skip and not c.error]
    if not cases:
        why = "; ".join(c.skip or c.error for c in built) or "no case"
        print(f"python -m harness localize: nothing to run for {model} and {converted}: {why}", file=sys.stderr)
        return 2
    case = cases[0]
    try:
        prepared = prepare_case(case, options, ArtifactCache(options.cache_dir, options.use_cache, options.cache_seed))
        names = [i.name for i in prepared.spec.inputs]
        if input_path is None:
            inputs = make_inputs(prepared.spec, example_recipe(prepared.spec))
        else:
            inputs = _input_file(input_path, names)
        outcome = run_example(prepared, inputs, noise_wanted=lambda comparison: True)
    except (CaseError, ValueError) as error:
        print(f"{case.id}: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2
    except Exception as error:   # an adapter's own error type (a framework's, a runtime's): said, not a traceback
        print(f"{case.id}: {summarize_exception(error, 6)}", file=sys.stderr)
        return 2
    if outcome.error:
        print(f"{case.id}: {outcome.error}", file=sys.stderr)
        return 2
    walkable = walkable_case(prepared, inputs, options)
    if isinstance(walkable, str):
        print(f"{case.id}: {walkable}", file=sys.stderr)
        return 2
    failing = [c.to_json() for c in outcome.comparisons if not c.passed]
    folder = out / "localize" / f"{case.id}.repro"
    record = localize_walk(walkable, failing, folder, mode)
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
    print(f"{case.id} on {shapes}: {'FAILED' if failing else 'PASSED'}")
    for comparison in outcome.comparisons:
        print(f"  {comparison.message}")
    print(f"localized: {record['message']}")
    for row in record.get("path", []):
        error = row["normalized_error"]
        print(f"    {'*' if row['diverged'] else ' '} {row['op_type']:<18} {str(row['tensor'])[:40]:<40} "
              f"{'-' if error is None else format(float(error), '.3g'):>10}  {row.get('layer') or ''}")
    if "compared" in record:
        print(f"compared {record['compared']} tensors of {record['nodes']} nodes against {record.get('compared_against')}"
              f", in {record['seconds']:.2f} s")
    if record.get("repro"):
        print(f"reproduction: {record['repro']['command']}")
    written = out / "localize" / f"{case.id}.json"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(json.dumps({"case": case.id, "inputs": shapes, "localization": record}, indent=1))
    print(f"record: {written}")
    if record["status"] in ("unavailable", "error"):
        return 2
    return 1 if failing else 0


def _input_file(path: Path, names: list[str]) -> dict:
    """The inputs of a saved failure, or of a .npz holding one array per input
    name; read as load_failure reads a failure: its size budget checked before
    anything is unpacked, nothing unpickled."""
    import zipfile

    import numpy as np

    from harness.model_file import check_zip_budget, not_a_file
    from harness.results import load_failure
    from harness.user_inputs import ARRAY_FILE_ERRORS

    if not path.is_file():
        raise ValueError(f"{path} {not_a_file(path)}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz (zip) archive: give a saved failure's .npz, or one holding an "
                         f"array per input name")
    with zipfile.ZipFile(path) as archive:
        check_zip_budget(path, archive.infolist(), "input file")
        if "__replay__.npy" in archive.namelist():
            return load_failure(path)[1]
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ARRAY_FILE_ERRORS as error:
        raise ValueError(f"{path} cannot be read as a .npz of input arrays: {error}") from None
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"{path} holds {sorted(arrays)}, not the model's inputs {missing}: name each array after "
                         f"its input")
    return {name: arrays[name] for name in names}


def report(path: Path) -> int:
    from harness.report.baseline import BaselineError, load_baseline
    from harness.report.html import write_html_report
    from harness.results import ReportsFolderError, check_writable

    try:
        results = load_baseline(path)   # any file a user names: read under the JSON budget, its schema checked
        check_writable(path.parent, remedy="copy the JSON to a writable folder and rebuild the report there")
    except (BaselineError, ReportsFolderError) as error:
        print(f"python -m harness report: {error}", file=sys.stderr)
        return 2
    out = write_html_report(results, path.with_suffix(".html"))
    print(out)
    return 0


def diff(old_path: Path, new_path: Path, html_path: Path | None, compare_fail: str,
         allow_lost_coverage: bool = False) -> int:
    """Exit 0 when the new run holds up against the old, 1 on a regression, lost coverage
    (unless allowed) or a metric that is not a number, 2 when a file cannot be used."""
    from harness.report.baseline import (BaselineError, diff_runs, load_baseline, parse_compare_fail,
                                         render_diff_text, write_diff_html)
    from harness.results import ReportsFolderError, check_writable

    out = html_path or new_path.with_name(new_path.stem + ".diff.html")
    try:
        limits = parse_compare_fail(compare_fail)
        old, new = load_baseline(old_path), load_baseline(new_path)
        check_writable(out.parent, remedy="give --html a path in a writable folder")
    except (BaselineError, ReportsFolderError) as error:
        print(f"python -m harness diff: {error}", file=sys.stderr)
        return 2
    result = diff_runs(old, new, limits, old_label=str(old_path), new_label=str(new_path),
                       allow_lost_coverage=allow_lost_coverage)
    sys.stdout.write(render_diff_text(result))
    write_diff_html(result, out)
    print(f"html: {out}")
    return 1 if result.failed else 0


def merge(shard_paths: list[Path], out: Path, html_path: Path | None, prefer: str | None,
          expect: Path | None) -> int:
    """Write one run out of the shards' results. Exit 2 when an input cannot be read (the rest is
    merged and written all the same) or two shards disagree on a case (nothing is written), 1 when
    expected cases or a shard of a split are missing, else 0."""
    from harness.merge import MergeError, load_expected_cases, merge_shards
    from harness.report.html import write_html_report
    from harness.report.summary import summary_lines
    from harness.results import ReportsFolderError, atomic_write_text, check_writable

    try:
        expected = load_expected_cases(expect) if expect else None
        merged = merge_shards(shard_paths, prefer_newest=prefer == "newest", expected=expected)
        for place in {out.parent, (html_path or out).parent}:
            check_writable(place, remedy="give -o and --html paths in a writable folder")
        atomic_write_text(out, json.dumps(merged.results, indent=1))
        if html_path:
            write_html_report(merged.results, html_path)
    except (MergeError, ReportsFolderError) as error:
        print(f"python -m harness merge: {error}", file=sys.stderr)
        return 2
    for problem in merged.unreadable:
        print(f"python -m harness merge: {problem}", file=sys.stderr)
    records = list(merged.results["cases"].values())
    print(f"merged {len(records)} cases from {len(merged.results['shards'])} of {len(shard_paths)} files: "
          f"{summary_lines(records)[0] if records else 'no case'}")
    if merged.missing_shards:
        print(f"missing: shard {', '.join(merged.missing_shards)}, which no input holds"
              + ("" if expect else ": its cases are not in the merged run; pass --expect=CASES.json (pytest --parity "
                 "--collect-only's) to record them as missing"))
    if merged.missing:
        print(f"missing: {len(merged.missing)} expected cases no shard recorded, e.g. {merged.missing[0]}")
    print(out if not html_path else f"{out}  html: {html_path}")
    return 2 if merged.unreadable else 1 if merged.missing or merged.missing_shards else 0


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _cache_folder(command: str, root: Path) -> str | None:
    """Why `root` cannot be the cache `command` works on, or None."""
    if root.is_dir():
        return None
    return (f"python -m harness cache {command}: {root} {'is not a folder' if root.exists() else 'does not exist'}: "
            f"give the folder --parity-cache-dir names (default .parity-cache)")


def cache_export(root: Path, out: Path) -> int:
    """Package the cache's entries that pass their check; exit 2 when the tarball cannot be written."""
    from harness.cache import export_cache

    problem = _cache_folder("export", root)
    if problem is None and not out.parent.is_dir():
        problem = f"python -m harness cache export: -o {out}: its folder {out.parent} does not exist; create it first"
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    try:
        result = export_cache(root, out)
    except OSError as error:
        print(f"python -m harness cache export: -o {out} cannot be written ({error.strerror or error}): give -o a "
              f"path in a writable folder with room", file=sys.stderr)
        return 2
    for skipped in result.skipped:
        print(f"skipped {skipped}")
    print(f"exported {result.entries} entries ({_size(result.size)}) of {root} to {out}"
          + (f"; skipped {len(result.skipped)} that failed their checksums" if result.skipped else ""))
    return 0


def cache_prune(root: Path, older_than_days: float | None, max_size_gb: float | None) -> int:
    """Remove entries not used for `older_than_days`, then the least recently used until the
    rest hold `max_size_gb`; exit 2 on an unusable option."""
    import math
    import time

    from harness.cache import prune_cache

    problem = _cache_folder("prune", root)
    if older_than_days is None and max_size_gb is None:
        problem = "python -m harness cache prune: give --older-than=DAYS, --max-size=GB or both"
    for flag, value in (("--older-than", older_than_days), ("--max-size", max_size_gb)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            problem = f"python -m harness cache prune: {flag} {value:g}: a number >= 0"
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    result = prune_cache(root, None if older_than_days is None else older_than_days * 86400,
                         None if max_size_gb is None else int(max_size_gb * 1e9))
    for name, size, used in result.removed:
        print(f"removed {name}: {_size(size)}, last used {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(used))}")
    for name in result.in_use:
        print(f"kept {name}: in use by another process (its lock is held); prune again later")
    print(f"freed {_size(sum(size for _, size, _ in result.removed))} from {len(result.removed)} entries; "
          f"{result.kept} entries ({_size(result.kept_size)}) remain")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m harness`: its subcommands and their options."""
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    replay_parser = commands.add_parser("replay", help="rerun a saved failing input")
    replay_parser.add_argument("npz", type=Path, metavar="PATH",
                               help="a failure's .npz, or a reproduction folder (CASE.repro, holding repro.py): "
                                    "its script is run")
    replay_parser.add_argument("--model", default=None, metavar="REF",
                               help="the model, as --model took it (a file, ARCH=PATH, a .py file): needed for "
                                    "any model but a zoo one, since paths are never taken from the .npz")
    replay_parser.add_argument("--converted", type=Path, default=None, metavar="PATH",
                               help="your converted file, for a failure found with --converted")
    replay_parser.add_argument("--trust-model-code", action="store_true",
                               help="allow model files whose loading runs code (never taken from the .npz)")
    replay_parser.add_argument("--cache-dir", type=Path, default=Path(".parity-cache"), metavar="DIR",
                               help="converted-artifact cache (default .parity-cache)")
    replay_parser.add_argument("--cache-seed", default=None, metavar="DIR", help=CACHE_SEED_HELP)
    localize_parser = commands.add_parser("localize", help="where a converted model first leaves the original")
    localize_parser.add_argument("--model", required=True, metavar="REF",
                                 help="the original: a zoo name, a model file, ARCH=PATH, a .py file")
    localize_parser.add_argument("--converted", required=True, type=Path, metavar="PATH",
                                 help="the converted file (an .onnx, or a file whose path goes through ONNX)")
    localize_parser.add_argument("--input", type=Path, default=None, metavar="FILE.npz",
                                 help="the input: a saved failure's .npz, or one array per input name "
                                      "(default: the spec's example)")
    localize_parser.add_argument("--source", default=None, help="the original's framework, where it has several")
    localize_parser.add_argument("--target", default="onnxruntime", help="the runtime (default onnxruntime)")
    localize_parser.add_argument("--device", default="cpu", help="the device (default cpu)")
    localize_parser.add_argument("--input-spec", action="append", default=[], metavar="SPEC",
                                 help="an input's spec, as pytest --input-spec takes it; repeatable")
    localize_parser.add_argument("--trust-model-code", action="store_true",
                                 help="allow model files whose loading runs code")
    localize_parser.add_argument("--all", action="store_true", help="every failing output, not only the first")
    localize_parser.add_argument("--out", type=Path, default=Path("reports"), metavar="DIR",
                                 help="where the record and the reproduction go (default reports: "
                                      "reports/localize/)")
    localize_parser.add_argument("--cache-dir", type=Path, default=Path(".parity-cache"), metavar="DIR",
                                 help="converted-artifact cache (default .parity-cache)")
    localize_parser.add_argument("--cache-seed", default=None, metavar="DIR", help=CACHE_SEED_HELP)
    from harness.options import BACKEND_OPTION_KINDS, backend_option_arguments

    for kind in BACKEND_OPTION_KINDS:   # each hop's and runtime's own settings, as pytest takes them
        for flag, keywords in backend_option_arguments(kind):
            localize_parser.add_argument(flag, **keywords)
    commands.add_parser("report", help="rebuild the HTML report").add_argument(
        "json", type=Path, nargs="?", default=Path("reports/parity.json"))
    diff_parser = commands.add_parser("diff", help="compare two runs' results (versions, then drift per output)")
    diff_parser.add_argument("old", type=Path, help="the earlier parity.json (or a baseline)")
    diff_parser.add_argument("new", type=Path, help="the later parity.json")
    diff_parser.add_argument("--html", type=Path, default=None,
                             help="where to write the HTML diff (default: NEW.diff.html next to NEW)")
    diff_parser.add_argument("--compare-fail", default="error:10x",
                             help="growth that fails: error:10x, error:10, error:1000%% (default error:10x), "
                                  "also cosine:, snr_db:; the drop of an agreement that fails: agreement:0.01")
    diff_parser.add_argument("--allow-lost-coverage", action="store_true",
                             help="exit 0 even where cases that ran in OLD are missing or skipped in NEW "
                                  "(a deliberate change of the matrix)")
    merge_parser = commands.add_parser("merge", help="one run out of its shards' results files")
    merge_parser.add_argument("shards", type=Path, nargs="+", metavar="SHARD.json",
                              help="the shards' parity.json files")
    merge_parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.json",
                              help="where the merged parity.json goes")
    merge_parser.add_argument("--html", type=Path, default=None, metavar="OUT.html",
                              help="also write the merged run's HTML report there")
    merge_parser.add_argument("--prefer", choices=("newest",), default=None,
                              help="newest: where two shards recorded one case differently, keep the record that "
                                   "finished later (default: refuse them)")
    merge_parser.add_argument("--expect", type=Path, default=None, metavar="CASES.json",
                              help="the whole matrix's case ids, written to REPORTS/expected-cases.json by pytest "
                                   "--parity --collect-only: an expected case no shard recorded is 'missing', "
                                   "which the gate fails")
    cache_parser = commands.add_parser("cache", help="package or age a converted-artifact cache")
    cache_commands = cache_parser.add_subparsers(dest="cache_command", required=True)
    export_parser = cache_commands.add_parser("export", help="the entries that pass their checksums, as a tarball")
    export_parser.add_argument("cache_dir", type=Path, metavar="DIR", help="the cache (--parity-cache-dir)")
    export_parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.tar.gz",
                               help="the tarball to write; unpacked into a folder (tar -xzf FILE -C SEED), it is "
                                    "a --parity-cache-seed")
    prune_parser = cache_commands.add_parser("prune", help="remove entries, least recently used first")
    prune_parser.add_argument("cache_dir", type=Path, metavar="DIR", help="the cache (--parity-cache-dir)")
    prune_parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                              help="remove entries no run has used (hit or made) for DAYS")
    prune_parser.add_argument("--max-size", type=float, default=None, metavar="GB",
                              help="then remove the least recently used until the rest hold at most GB (10^9 bytes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "cache_seed", None):
        from harness.errors import OptionError
        from harness.options import parse_cache_seed

        try:
            args.cache_seed = parse_cache_seed("--cache-seed", args.cache_seed)
        except OptionError as error:
            print(f"python -m harness {args.command}: {error}", file=sys.stderr)
            return 2
    if args.command == "replay":
        return replay(args.npz, args.model, args.converted, args.trust_model_code, args.cache_dir, args.cache_seed)
    if args.command == "localize":
        from functools import partial

        from harness.errors import OptionError
        from harness.options import BACKEND_OPTION_KINDS, parse_backend_options

        try:
            given = {kind: parse_backend_options(kind, partial(getattr, args)) for kind in BACKEND_OPTION_KINDS}
        except OptionError as error:
            print(f"python -m harness localize: {error}", file=sys.stderr)
            return 2
        return localize(args.model, args.converted, args.input, args.source, args.target, args.device,
                        args.input_spec, args.trust_model_code, "all" if args.all else "first", args.out,
                        args.cache_dir, args.cache_seed, given["hop"], given["runtime"])
    if args.command == "diff":
        return diff(args.old, args.new, args.html, args.compare_fail, args.allow_lost_coverage)
    if args.command == "merge":
        return merge(args.shards, args.output, args.html, args.prefer, args.expect)
    if args.command == "cache":
        if args.cache_command == "export":
            return cache_export(args.cache_dir, args.output)
        return cache_prune(args.cache_dir, args.older_than, args.max_size)
    return report(args.json)


if __name__ == "__main__":
    sys.exit(main())
