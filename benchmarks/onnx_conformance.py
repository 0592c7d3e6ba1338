"""ONNX's own operator conformance tests through the harness, held against an
independent check of the same stored examples.

1. The node tests of `onnx.backend.test` (shipped in the onnx wheel as code,
   `onnx.backend.test.case.node`) are written out with onnx's own writer
   (`onnx.backend.test.cmd_tools.generate_data`), numpy's seed fixed, into
   OUT/node-tests-onnx<version>-seed0/node/test_X/ (model.onnx,
   test_data_set_N/): once; a rerun finds the folder and skips this. (The
   installed `python -m onnx.backend.test.cmd_tools generate-data -o DIR`
   writes only the model tests, not the node tests, hence the call.)
2. Independent verdict, per test and target: every stored set run on ONNX
   Runtime (CPU provider) or OpenVINO (CPU, f32) in plain calls, compared by
   onnx's own backend-test comparison (`Runner.assert_similar_outputs`, rtol
   1e-3, atol 1e-7): pass, fail, or cannot-run with the reason. Runs in a child
   process, so that a runtime's crash or hang is that test's cannot-run.
3. The harness: every test as `--model=DIR/test_X --target=... --device=cpu`
   would run it, in process through `harness.matrix.build_cases` and the
   harness's own worker processes (`harness.worker.CaseWorkers`, a crash or a
   hang is that case's error), a chunk of tests per set of options. Its
   reports folder (OUT/reports) is held for the run: the failing inputs it
   saves there are read back in 4.
4. A third opinion where the harness failed a test on a drawn input the stored
   sets lack and the independent check passed those sets (TopK's ties put in
   another order, NaN for a fully masked attention row): the failing input the
   harness saved (.npz) run through onnx.reference.ReferenceEvaluator, ONNX
   Runtime (the harness's reference for an ONNX file) and the target, compared
   as in 2: confirmed where the evaluator agrees with ONNX Runtime and the
   target differs or raised; otherwise (it agrees with the target, with neither,
   or cannot run) the pair stays "harness fails, independent passes", with the
   reason. A failure a stored set showed has no third opinion. In a child
   process, as 2.
5. Per target: agree (harness passed and the independent check passes, or
   failed and fails), harness passes where the independent check fails,
   harness fails where it passes, harness fails confirmed by onnx.reference,
   no independent verdict (the harness judged, the runtime alone could not run
   the stored sets), inconclusive, skipped (grouped by the reason's first
   words), error (grouped by the message's first line); the tests of every
   column but agree and skipped by name; harness tracebacks (stage "internal":
   an exception the harness did not expect); the goal line: agree + confirmed
   + skips that name a type or runtime limit, of all tests (issue 20 asks
   97%); total time, and the harness's time per test beside the runtime's own.

    .venv/bin/python benchmarks/onnx_conformance.py [--sample 60 --seed 0] [--limit N] [--pattern REGEX]
        [--targets onnxruntime,openvino] [--out DIR] [--json FILE]

All 1,884 node tests on both targets take hours on 2 cores; --sample gives a
stable random subset.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import shutil
import statistics
import sys
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("onnxruntime", "openvino")
RTOL, ATOL = 1e-3, 1e-7          # every node test's own (onnx.backend.test.case.node.expect)
GENERATOR_SEED = 0               # numpy's seed while the node tests draw their data: a stable set
CHUNK = 20                       # tests per set of harness options (and per rebuild in a fresh worker)
CASE_TIMEOUT_S = 120.0           # a node test is tiny: one that runs longer is hung, not slow
GROUP_WORDS = 8                  # a skip reason is grouped by its first words

AGREE = "agree"
HARNESS_PASSES = "harness passes, independent fails"
HARNESS_FAILS = "harness fails, independent passes"
CONFIRMED = "harness fails, confirmed by onnx.reference"
UNJUDGED = "no independent verdict"
INCONCLUSIVE = "inconclusive"
SKIPPED = "skipped"
ERROR = "error"
COLUMNS = (AGREE, HARNESS_PASSES, HARNESS_FAILS, CONFIRMED, UNJUDGED, INCONCLUSIVE, SKIPPED, ERROR)
THIRD_OPINIONS = ("confirmed", "unconfirmed", "cannot-run")   # onnx.reference on the harness's failing input
# A skip that names a type or a runtime limit (matrix._type_limit, runner.start_case): it counts toward the goal.
LIMIT_SKIP = re.compile(r"\): \S+ does not take |\) is not a tensor: |^\S+ cannot run this file: ")


# ---------------------------------------------------------------- the table's pure parts

def classify(harness_status: str, independent: str, third_opinion: str | None = None) -> str:
    """The column of one (test, target): the harness's status (passed, failed,
    inconclusive, skipped, error) against the independent verdict (pass, fail,
    cannot-run); a harness failure the independent check passes is confirmed
    where the third opinion (onnx.reference on the failing input, `third_opinion`)
    says "confirmed"."""
    if independent not in ("pass", "fail", "cannot-run"):
        raise ValueError(f"unknown independent verdict {independent!r}")
    if third_opinion is not None and third_opinion not in THIRD_OPINIONS:
        raise ValueError(f"unknown third opinion {third_opinion!r}")
    if harness_status in (SKIPPED, ERROR, INCONCLUSIVE):
        return harness_status
    if harness_status not in ("passed", "failed"):
        raise ValueError(f"unknown harness status {harness_status!r}")
    if independent == "cannot-run":
        return UNJUDGED
    if (harness_status == "passed") == (independent == "pass"):
        return AGREE
    if harness_status == "passed":
        return HARNESS_PASSES
    return CONFIRMED if third_opinion == "confirmed" else HARNESS_FAILS


def names_a_limit(skip_message: str) -> bool:
    """Whether a skip names a type the target does not take or a runtime limit:
    such a skip counts toward the goal, any other does not."""
    return bool(LIMIT_SKIP.search(skip_message))


def group_key(column: str, message: str, test: Path) -> str:
    """What a skip (its reason's first words) or an error (its message's first
    line) is counted under, the test's folder and name taken out so that one
    cause is one group."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else "(no message)"
    first = first.replace(str(test), "<test>").replace(test.name, "<test>")
    if column == SKIPPED:
        return " ".join(first.split()[:GROUP_WORDS])
    return first[:200]


# ---------------------------------------------------------------- 1. the node tests

def node_tests(out: Path) -> Path:
    """The folder of the written node tests (one test_X/ each), written once."""
    import onnx

    folder = out / f"node-tests-onnx{onnx.__version__}-seed{GENERATOR_SEED}"
    if (folder / "node").is_dir():
        return folder / "node"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    import numpy as np

    np.random.seed(GENERATOR_SEED)   # before the import: the test modules draw their data as they are imported
    import onnx.backend.test.case.node as node_cases
    from onnx.backend.test import cmd_tools

    with warnings.catch_warnings():   # the tests' own overflow and divide-by-zero, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = node_cases.collect_testcases(None)
    # onnx's own writer over the node tests: its command line feeds it the model tests only.
    writer_cases = cmd_tools.model_test
    try:
        cmd_tools.model_test = argparse.Namespace(collect_testcases=lambda: cases)
        cmd_tools.generate_data(argparse.Namespace(output=str(partial)))
    finally:
        cmd_tools.model_test = writer_cases
    partial.rename(folder)
    return folder / "node"


def select(names: list[str], pattern: str | None, sample: int | None, seed: int, limit: int | None) -> list[str]:
    """The tests to run, sorted: those matching `pattern`, a stable random
    `sample` of them, the first `limit`."""
    chosen = sorted(n for n in names if pattern is None or re.search(pattern, n))
    if sample is not None and sample < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, sample))
    return chosen[:limit] if limit is not None else chosen


# ---------------------------------------------------------------- 2. the independent check

# Plain calls, the only harness code used being how a bfloat16 tensor crosses each runtime's boundary
# (neither numpy bridge has the type): that moves bits, it judges nothing.

def _onnxruntime(model: Path) -> Callable[[dict[str, Any]], list[Any]]:
    import onnxruntime

    from harness.runtimes.onnxruntime import run_session

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: run_session(session, names, feeds)


def _openvino(model: Path) -> Callable[[dict[str, Any]], list[Any]]:
    import openvino

    from harness.runtimes.openvino import array_of, tensor_of

    compiled = openvino.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kept = {name for port in compiled.inputs for name in port.get_names()}

    def run(feeds: dict[str, Any]) -> list[Any]:
        request = compiled.create_infer_request()
        if len(compiled.inputs) == len(feeds):   # by position: a port passed through to an output takes its name
            for index, value in enumerate(feeds.values()):
                request.set_input_tensor(index, tensor_of(value))
        else:   # OpenVINO's reader dropped an empty input (a Reduce's axes of shape (0,)): the others by name
            for name, value in feeds.items():
                if name in kept:
                    request.set_tensor(name, tensor_of(value))
        request.infer()
        return [array_of(request.get_tensor(output)) for output in compiled.outputs]

    return run


LOADERS = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


def independent_check(test: Path, target: str) -> dict[str, Any]:
    """pass / fail / cannot-run (with the reason) of `test`'s stored sets on
    `target`, and the runtime's own seconds (load and run)."""
    import onnx
    from onnx import numpy_helper

    from harness.random_ops import random_ops

    start = time.perf_counter()
    model = onnx.load(str(test / "model.onnx"), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    kinds = [v.type.WhichOneof("value") for v in [*inputs, *model.graph.output]]
    if any(kind != "tensor_type" for kind in kinds):
        return {"verdict": "cannot-run", "reason": f"a {next(k for k in kinds if k != 'tensor_type')} input or "
                                                   "output (the check feeds tensors only)", "seconds": 0.0}
    try:
        run = LOADERS[target](test / "model.onnx")
    except Exception as error:
        return {"verdict": "cannot-run", "reason": f"load: {_first_line(error)}",
                "seconds": time.perf_counter() - start}
    # A graph that draws random numbers gives another draw than the stored one: its shapes and dtypes alone
    # can be checked (the harness compares such a graph by distribution).
    draws_anew = bool(random_ops(test / "model.onnx"))
    for data in sorted(test.glob("test_data_set_*")):
        # A copy: to_array may view the file's read-only buffer, and OpenVINO refuses read-only arrays.
        feeds = {i.name: numpy_helper.to_array(onnx.load_tensor(str(data / f"input_{k}.pb"))).copy()
                 for k, i in enumerate(inputs) if (data / f"input_{k}.pb").exists()}
        expected = [numpy_helper.to_array(onnx.load_tensor(str(data / f"output_{k}.pb")))
                    for k in range(len(model.graph.output))]
        try:
            got = run(feeds)
        except Exception as error:
            return {"verdict": "cannot-run", "reason": f"run: {_first_line(error)}",
                    "seconds": time.perf_counter() - start}
        difference = _kinds_differ(expected, got) if draws_anew else _difference(expected, got)
        if difference:
            return {"verdict": "fail", "reason": f"{data.name}: {difference}", "seconds": time.perf_counter() - start}
    return {"verdict": "pass", "reason": "", "seconds": time.perf_counter() - start}


def _kinds_differ(expected: list[Any], got: list[Any]) -> str | None:
    """How the shapes or dtypes of `got` differ from `expected`'s, or None."""
    for index, (want, have) in enumerate(zip(expected, got)):
        if want.shape != have.shape or want.dtype != have.dtype:
            return f"Output {index}: {have.dtype}{list(have.shape)} where {want.dtype}{list(want.shape)} is stored"
    return None if len(expected) == len(got) else f"{len(got)} outputs where {len(expected)} are stored"


def _difference(expected: list[Any], got: list[Any]) -> str | None:
    """How `got` differs from `expected` by onnx's own backend-test comparison
    (rtol 1e-3, atol 1e-7, shapes and dtypes exact, NaN equal to NaN), or None."""
    from onnx.backend.test.runner import Runner

    try:
        Runner.assert_similar_outputs(expected, got, rtol=RTOL, atol=ATOL)
    except (AssertionError, TypeError, ValueError) as error:
        # numpy's first line says only which check failed; what it compared (onnx's err_msg: a shape),
        # how many elements it failed on, NaN in other places, or the two dtypes come later
        details = [line.strip().rstrip(":") for line in str(error).splitlines() if line.strip().startswith(
            ("Output ", "Mismatched elements", "x and y nan location mismatch", "ACTUAL:", "DESIRED:"))]
        return "; ".join([_first_line(error).rstrip(":"), *details])
    return None


class ChildDied(Exception):
    """The child process ended (a runtime's crash) or outlasted its time limit (a hang) during a call."""


def _serve(connection: Any) -> None:
    """The child's loop: call each (function, args) received, send back (True, result) or (False, the error)."""
    while True:
        function, args = connection.recv()
        try:
            connection.send((True, function(*args)))
        except Exception as error:
            connection.send((False, _first_line(error)))


class ChildProcess:
    """Calls run one at a time in a spawned process (no runtime state inherited
    from this one), reused from call to call; a call that crashes the process or
    outlasts `timeout_s` ends it (ChildDied), and the next call starts a fresh one."""

    def __init__(self, timeout_s: float = CASE_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._process: Any = None
        self._connection: Any = None

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """function(*args) in the child (both picklable); an exception it raised comes back
        as a RuntimeError holding its first line, the child kept."""
        if self._process is None:
            context = multiprocessing.get_context("spawn")
            self._connection, child_end = context.Pipe()
            self._process = context.Process(target=_serve, args=(child_end,), daemon=True)
            self._process.start()
            child_end.close()
        self._connection.send((function, args))
        if not self._connection.poll(self.timeout_s):
            self.close()
            raise ChildDied(f"no answer in {self.timeout_s:.0f} s")
        try:
            succeeded, value = self._connection.recv()
        except EOFError:   # the pipe closed: the process died (joined, so that its exit code is known)
            self._process.join(timeout=5)
            code = self._process.exitcode
            self.close()
            raise ChildDied(f"the process died (exit code {code})") from None
        if not succeeded:
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._connection.close()
            self._process = self._connection = None


def independent_checks(tests: list[Path], targets: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """independent_check of every (test, target) in a child process: one that
    dies or hangs is that test's cannot-run, and the next runs in a fresh one."""
    verdicts: dict[tuple[str, str], dict[str, Any]] = {}
    child = ChildProcess()
    try:
        for test in tests:
            for target in targets:
                try:
                    verdicts[test.name, target] = child.call(independent_check, test, target)
                except ChildDied as died:
                    verdicts[test.name, target] = {"verdict": "cannot-run", "seconds": 0.0,
                                                   "reason": f"{target} ended the checking process: {died}"}
    finally:
        child.close()
    return verdicts


# ---------------------------------------------------------------- 3. the harness

def harness_records(tests: list[Path], targets: tuple[str, ...], out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The harness's record of every (test, target), as a pytest run with
    --model=TEST --target=... --device=cpu makes it, each case in a worker."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.profiles import load_default_profile
    from harness.runner import run_case
    from harness.worker import CaseWorkers

    load_default_profile()   # the plugin's default budget (the `dev` profile) for the workers' cases
    records: dict[tuple[str, str], dict[str, Any]] = {}
    by_ref = {str(test): test.name for test in tests}
    for start in range(0, len(tests), CHUNK):
        chunk = tests[start:start + CHUNK]
        print(f"  harness: tests {start + 1}-{start + len(chunk)} of {len(tests)}", file=sys.stderr, flush=True)
        options = RunOptions(models=tuple(str(t) for t in chunk), sources=("onnx",), targets=targets,
                             devices=("cpu",), cache_dir=out / "cache", reports_dir=out / "reports",
                             isolate="always", timeout_s=CASE_TIMEOUT_S)
        cache = ArtifactCache(options.cache_dir)
        workers = CaseWorkers(options)
        try:
            for case in build_cases(options):
                if case.skip or case.error:
                    record = run_case(case, options, cache).to_json()   # a skip or an error found as the matrix was built
                else:
                    record = workers.run(case, "the conformance benchmark runs every case in a worker").to_json()
                test = by_ref.get(record.get("model_ref", ""), record.get("model", ""))
                # A model the matrix could not resolve is one case with no target: each target's error.
                for target in ([record["target"]] if record.get("target") else targets):
                    records[test, target] = record
        finally:
            workers.close()
    return records


# ---------------------------------------------------------------- 4. the third opinion

def failing_input(record: dict[str, Any], verdict: dict[str, Any]) -> Path | None:
    """The drawn input the harness failed `record` on, where the independent
    check passed the stored sets: the one a third opinion can judge. None for
    any other pair, and for a failure a stored set showed (the independent check
    has judged those sets already)."""
    from harness.golden import golden_failure

    if classify(record["status"], verdict["verdict"]) != HARNESS_FAILS or golden_failure(record.get("golden")):
        return None
    npz = (record.get("failure") or {}).get("npz")
    return Path(npz) if npz else None


def third_opinion(test: Path, target: str, npz: Path) -> dict[str, str]:
    """onnx.reference.ReferenceEvaluator, ONNX Runtime (the harness's reference
    for an ONNX file) and `target` on the failing input saved at `npz`, compared
    by onnx's own comparison: confirmed (the evaluator agrees with ONNX Runtime,
    and the target differs or raised), unconfirmed (the evaluator agrees with the
    target, or with neither), or cannot-run (the evaluator or ONNX Runtime
    raised), with the reason."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from harness.results import load_failure

    _, inputs = load_failure(npz)
    model = test / "model.onnx"
    try:
        evaluator = ReferenceEvaluator(onnx.load(str(model))).run(None, inputs)
    except Exception as error:
        return {"verdict": "cannot-run", "reason": f"onnx.reference: {_first_line(error)}"}
    outputs: dict[str, Any] = {}
    for runtime in dict.fromkeys(("onnxruntime", target)):
        try:   # copies: OpenVINO refuses the read-only arrays np.load may give
            outputs[runtime] = LOADERS[runtime](model)({name: array.copy() for name, array in inputs.items()})
        except Exception as error:
            outputs[runtime] = error
    if isinstance(outputs["onnxruntime"], Exception):
        return {"verdict": "cannot-run", "reason": f"onnxruntime: {_first_line(outputs['onnxruntime'])}"}
    from_onnxruntime = _difference(evaluator, outputs["onnxruntime"])
    if isinstance(outputs[target], Exception):
        if from_onnxruntime:
            return {"verdict": "unconfirmed", "reason": f"{target} raised, and onnx.reference differs from "
                                                        f"onnxruntime too: {from_onnxruntime}"}
        return {"verdict": "confirmed", "reason": f"onnx.reference agrees with onnxruntime; {target} raised "
                                                  f"{_first_line(outputs[target])}"}
    from_target = _difference(evaluator, outputs[target])
    if from_onnxruntime is None and from_target:
        return {"verdict": "confirmed", "reason": f"onnx.reference agrees with onnxruntime; {target}: {from_target}"}
    if from_target is None:
        return {"verdict": "unconfirmed", "reason": f"onnx.reference agrees with {target}"
                + (f"; onnxruntime: {from_onnxruntime}" if from_onnxruntime else
                   " and onnxruntime within onnx's tolerance (rtol 1e-3, atol 1e-7)")}
    return {"verdict": "unconfirmed", "reason": f"onnx.reference agrees with neither: onnxruntime: {from_onnxruntime}; "
                                                f"{target}: {from_target}"}


def third_opinions(tests: list[Path], targets: tuple[str, ...], verdicts: dict,
                   records: dict) -> dict[tuple[str, str], dict[str, str]]:
    """third_opinion of every (test, target) whose harness failure a drawn input
    showed and the independent check passed, in a child process: one that dies
    or hangs is that pair's cannot-run."""
    opinions: dict[tuple[str, str], dict[str, str]] = {}
    child = ChildProcess()
    try:
        for test in tests:
            for target in targets:
                record = records.get((test.name, target))
                npz = record and failing_input(record, verdicts[test.name, target])
                if not npz:
                    continue
                try:
                    opinions[test.name, target] = child.call(third_opinion, test, target, npz)
                except ChildDied as died:
                    opinions[test.name, target] = {"verdict": "cannot-run", "reason": f"the process ended: {died}"}
                except RuntimeError as error:   # the saved input cannot be read back (load_failure's ValueError)
                    opinions[test.name, target] = {"verdict": "cannot-run", "reason": str(error)}
    finally:
        child.close()
    return opinions


# ---------------------------------------------------------------- 5. the table

def tabulate(tests: list[Path], targets: tuple[str, ...], verdicts: dict, records: dict,
             opinions: dict) -> dict[str, Any]:
    """Per target: the counts of each column, the goal (agree, confirmed and
    skips naming a type or runtime limit, of all tests), the tests of every
    column but agree and skipped by name, the skips and errors grouped (each
    error group with the independent verdicts of its tests), tracebacks, median
    seconds per test, and one row per test."""
    table: dict[str, Any] = {}
    for target in targets:
        counts: Counter = Counter()
        skips: Counter = Counter()
        errors: dict[str, Counter] = {}
        rows, harness_s, runtime_s, tracebacks, other_skips = [], [], [], 0, []
        for test in tests:
            name = test.name
            record = records.get((name, target)) or {"status": "error", "stage": "internal",
                                                     "message": "the harness made no case of this test"}
            verdict = verdicts[name, target]
            opinion = opinions.get((name, target))
            column = classify(record["status"], verdict["verdict"], opinion and opinion["verdict"])
            counts[column] += 1
            message = record.get("message") or ""
            if column == SKIPPED:
                skips[group_key(column, message, test)] += 1
                if not names_a_limit(message):
                    other_skips.append(name)
            elif column == ERROR:
                errors.setdefault(group_key(column, message, test), Counter())[verdict["verdict"]] += 1
            if record.get("stage") == "internal" or "Traceback (most recent call last)" in message:
                tracebacks += 1
            if record.get("duration_s") is not None:
                harness_s.append(record["duration_s"])
            runtime_s.append(verdict["seconds"])
            rows.append({"test": name, "column": column, "harness_status": record["status"],
                         "harness_message": message.strip().splitlines()[0] if message.strip() else "",
                         "independent": verdict["verdict"], "independent_reason": verdict["reason"],
                         **({"third_opinion": opinion["verdict"], "third_opinion_reason": opinion["reason"]}
                            if opinion else {})})
        met = counts[AGREE] + counts[CONFIRMED] + counts[SKIPPED] - len(other_skips)
        table[target] = {
            "counts": {c: counts[c] for c in COLUMNS},
            "goal": {"met": met, "tests": len(tests), "percent": round(100 * met / len(tests), 1) if tests else None,
                     "skips_naming_no_limit": other_skips},
            "tests": {c: [r["test"] for r in rows if r["column"] == c] for c in COLUMNS if c not in (AGREE, SKIPPED)},
            "skipped": dict(skips.most_common()),
            "errors": {key: dict(by_verdict) for key, by_verdict in
                       sorted(errors.items(), key=lambda item: -sum(item[1].values()))}, "tracebacks": tracebacks,
            "harness_median_s": statistics.median(harness_s) if harness_s else None,
            "runtime_median_s": statistics.median(runtime_s) if runtime_s else None, "rows": rows}
    return table


def render(table: dict[str, Any], tests: int, seconds: dict[str, float]) -> str:
    head = ["target", "tests", *COLUMNS, "tracebacks", "harness s/test", "runtime's own s/test"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for target, data in table.items():
        cells = [target, str(tests), *(str(data["counts"][c]) for c in COLUMNS), str(data["tracebacks"]),
                 _seconds(data["harness_median_s"]), _seconds(data["runtime_median_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Time: {seconds['total']:.0f} s in all (writing the tests {seconds['generate']:.0f} s, "
                 f"independent checks {seconds['independent']:.0f} s, harness {seconds['harness']:.0f} s, "
                 f"onnx.reference's third opinions {seconds['third_opinion']:.0f} s); "
                 "per test: medians.")
    for target, data in table.items():
        goal = data["goal"]
        lines.append(f"{target}: {goal['percent']}% of {goal['tests']} tests agree, are confirmed by onnx.reference "
                     f"or skipped naming a type or runtime limit ({goal['met']}; the goal: 97%); "
                     f"{data['tracebacks']} harness tracebacks.")
    for target, data in table.items():
        for column in (HARNESS_PASSES, HARNESS_FAILS, CONFIRMED, UNJUDGED, INCONCLUSIVE):
            rows = [r for r in data["rows"] if r["column"] == column]
            if rows:
                lines.append(f"\n{target}, {column}:")
                lines += [f"- {r['test']}: harness {r['harness_status']} ({r['harness_message'][:120]}); "
                          f"independent {r['independent']} {r['independent_reason'][:120]}"
                          + (f"; onnx.reference: {r['third_opinion']}, {r['third_opinion_reason'][:160]}"
                             if "third_opinion" in r else "") for r in rows]
        if data["skipped"]:
            lines.append(f"\n{target}, skipped:")
            lines += [f"- {n} x {key}" for key, n in data["skipped"].items()]
        if data["errors"]:
            lines.append(f"\n{target}, errors (with the independent verdicts of their tests):")
            lines += [f"- {sum(by_verdict.values())} x {key} (independent: "
                      f"{', '.join(f'{n} {v}' for v, n in by_verdict.items())})"
                      for key, by_verdict in data["errors"].items()]
            lines.append(f"- tests: {', '.join(data['tests'][ERROR])}")
        if data["goal"]["skips_naming_no_limit"]:
            lines.append(f"\n{target}, skipped naming no type or runtime limit: "
                         f"{', '.join(data['goal']['skips_naming_no_limit'])}")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="the first N tests (after --pattern and --sample)")
    parser.add_argument("--sample", type=int, help="a random sample of N tests, stable for a --seed")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--pattern", help="only the tests whose name matches this regular expression")
    parser.add_argument("--out", type=Path, default=ROOT / ".parity-cache" / "onnx-conformance",
                        help="the written tests, the harness's cache and reports (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the table's data here")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"--targets {','.join(unknown)}: choose from {', '.join(TARGETS)}")
    for name in ("limit", "sample"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: give a number of tests, 1 or more")
    if args.pattern is not None:
        try:
            re.compile(args.pattern)
        except re.error as error:
            parser.error(f"--pattern {args.pattern!r} is not a regular expression: {error}")

    started = time.perf_counter()
    folder = node_tests(args.out)
    generated = time.perf_counter()
    names = select([p.name for p in folder.iterdir() if (p / "model.onnx").is_file()],
                   args.pattern, args.sample, args.seed, args.limit)
    if not names:
        parser.error(f"--pattern {args.pattern!r} matches none of the node tests in {folder}")
    tests = [folder / n for n in names]
    from harness.results import ReportsFolderError, claim_reports_folder

    try:   # held until the third opinions have read the failing inputs the harness saves there
        reports_lock = claim_reports_folder(args.out / "reports", remedy="give this run another --out folder")
    except ReportsFolderError as error:
        parser.error(str(error))
    print(f"{len(tests)} node tests from {folder}; independent checks ...", file=sys.stderr, flush=True)
    verdicts = independent_checks(tests, targets)
    checked = time.perf_counter()
    records = harness_records(tests, targets, args.out)
    harnessed = time.perf_counter()
    opinions = third_opinions(tests, targets, verdicts, records)
    reports_lock.release()
    finished = time.perf_counter()
    seconds = {"generate": generated - started, "independent": checked - generated, "harness": harnessed - checked,
               "third_opinion": finished - harnessed, "total": finished - started}
    table = tabulate(tests, targets, verdicts, records, opinions)
    print(render(table, len(names), seconds))
    if args.json:
        args.json.write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": sys.argv,
            "tests": names, "seconds": seconds, "tolerance": {"rtol": RTOL, "atol": ATOL}, "targets": table},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
