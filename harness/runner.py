"""Runs one case end to end and records it: prepare, explore, save the shrunk
failure, append the record. The pytest plugin and `python -m harness` both call
`run_case`; it returns the record, whose status the caller turns into an outcome."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.accuracy import add_accuracy
from harness.cache import ArtifactCache
from harness.case_record import CaseRecord
from harness.case import Case
from harness.engine import PreparedCase, Progress, no_progress, prepare_case
from harness.errors import CaseError, RuntimeLimit, summarize_exception
from harness.explore import Exploration, explore_case
from harness.file_precision import check_file, examples_to_check
from harness.golden import check_golden, check_user_inputs, golden_failure
from harness.matrix import availability_checked
from harness.model_file import describe as describe_model_file
from harness.option_effects import on_cuda
from harness.options import RunOptions
from harness.qdq_check import check_case as check_qdq_case
from harness.results import ResultsWriter, save_failure
from harness.user_inputs import UserExample, user_inputs_failure


def examples_database(options: RunOptions) -> Path:
    """Hypothesis' example database, kept with the reports."""
    return options.reports_dir / "hypothesis-examples"


def base_record(case: Case) -> CaseRecord:
    record = CaseRecord(id=case.id, model=case.model, model_ref=case.model_ref, source=case.source,
                        target=case.target, device=case.device, reference_device=case.reference_device,
                        precision=case.precision, variant=case.variant)
    if case.random_ops:   # compared by distribution, never elementwise (explore.py)
        record.random_ops = list(case.random_ops)
    # The user's file the model came from, with its sha256 (model_file.describe): what exactly was tested.
    described = describe_model_file(case.spec.origin) if case.spec is not None and case.spec.origin != "zoo" else None
    if described:
        record.model_file = described
    return record


def start_case(case: Case, options: RunOptions, cache: ArtifactCache,
               progress: Progress = no_progress) -> tuple[CaseRecord, PreparedCase | None]:
    """Everything before the examples. The record comes back finished (status
    set) for a skip or an error; otherwise with the prepared case to explore.
    `progress(stage)` is told each stage as it starts."""
    record = base_record(case)
    record.started_at = time.perf_counter()
    if case.error:
        record.set_status("error", case.error, stage="options")
        return _finished(record), None
    case = availability_checked(case)   # imports what collection only looked up (matrix.py)
    if case.skip:
        record.set_status("skipped", case.skip)
        return _finished(record), None
    try:
        return record, prepare_case(case, options, cache, progress)
    except RuntimeLimit as error:
        if case.source == "onnx" and not case.path and options.converted is None:   # the user's file, as it is
            record.set_status("skipped", f"{case.target} cannot run this file: {error.message}")
        else:   # a file the harness converted: the conversion path produced what its target cannot run
            record.set_status("error", error.message, stage=error.stage)
    except CaseError as error:
        record.set_status("error", error.message, stage=error.stage)
    except Exception as error:  # a bug in an adapter must not end the run
        record.set_status("error", summarize_exception(error, 10), stage="internal")
    return _finished(record), None


def finish_case(record: CaseRecord, prepared: PreparedCase, options: RunOptions,
                progress: Progress = no_progress) -> CaseRecord:
    """Run the golden examples stored with the model, if any, then the drawn
    examples, and complete the record. Where the drawn examples cannot run (the
    reference cannot load the model, or rejects the inputs) the golden sets
    give the verdict alone (`_golden_only`); where they ran but could not judge
    an output (inconclusive), the golden sets judge it (`_judged_by_stored_sets`)."""
    progress("run")
    if prepared.case.random_ops:   # found as the case was prepared (engine.py): the matrix's case may lack them
        record.random_ops = list(prepared.case.random_ops)
    try:
        golden = check_golden(prepared, options.tolerance_overrides)
        user_entry, user_failing = check_user_inputs(prepared, options) if prepared.user_inputs else (None, None)
        drawn_error = prepared.reference_error
        if drawn_error is None:
            try:
                exploration = explore_case(prepared, options.examples, database_path=examples_database(options),
                                           corners=options.corners)
            except CaseError as error:
                if golden is None:
                    raise
                drawn_error = error
        if drawn_error is not None:
            _golden_only(record, golden, drawn_error, prepared)
        else:
            _describe(record, prepared, exploration, options)
            file_check = check_file(prepared, examples_to_check(prepared, exploration))
            if file_check is not None:   # the target computed the file wider than its types: its own verdict
                record.file_precision = file_check
                if file_check["verdict"] == "failed":   # a failure of the file, which the target hid
                    record.set_status("failed", file_check["message"], earlier_as=(
                        f"{prepared.case.target} {prepared.case.device}'s own verdict: "))
            qdq = check_qdq_case(prepared, options.calibration)
            if qdq is not None:   # each Q/DQ pair against its tensor (qdq_check.py): a bad scale no output shows
                record.qdq_pairs = qdq.pop("pairs", [])
                record.qdq_check = qdq
                if qdq.get("findings"):
                    record.set_status("failed", "\n".join(qdq["findings"]), earlier_as="outputs: ")
            if record.has("failure") and options.localize != "off" and prepared.case.random_ops:
                # a walk compares tensors element by element, which two runs of a random graph never match
                record.localization = {"status": "unavailable", "seconds": 0.0,
                                       "message": "random operators: compared by distribution, which no "
                                                  "element-by-element walk can localize"}
            elif record.has("failure") and options.localize != "off":
                progress("localize")
                _add_localization(record, prepared, exploration, options)
        if golden is not None:
            record.golden = golden
            failure = golden_failure(golden)
            if failure:  # the stored outputs are the model author's word: they fail the case on their own
                record.set_status("failed", failure)
                if drawn_error is not None:
                    record.message += f"\n{_drawn_note(drawn_error)}"
            elif record.status == "inconclusive":
                _judged_by_stored_sets(record, golden, exploration)
            if "note" in golden and not failure:   # what the matching sets were held to (golden.py)
                record.message += f"\n{golden['note']}"
        if user_entry is not None:
            record.user_inputs = user_entry
            if user_failing is not None:   # the user's own data fails the case on its own, as a golden set does
                saved = _save_user_failure(user_entry, prepared, user_failing, options)
                record.set_status("failed", f"{user_inputs_failure(user_entry)}\n{saved}")
        if options.parity_labels and prepared.user_inputs:   # the user's examples, labelled: top-1 accuracy
            add_accuracy(record, prepared, options)
    except CaseError as error:
        record.set_status("error", error.message, stage=error.stage)
    except Exception as error:   # a bug in an adapter or a check must not end the run: the case's internal error
        record.set_status("error", summarize_exception(error, 10), stage="internal")
    for name in ("provenance", "versions", "timings"):   # an error before the examples: what was prepared
        if not record.has(name):
            setattr(record, name, getattr(prepared, name))
    return _finished(record)


def run_case(case: Case, options: RunOptions, cache: ArtifactCache, writer: ResultsWriter | None = None,
             progress: Progress = no_progress) -> CaseRecord:
    """One case from start to record, outside pytest."""
    record, prepared = start_case(case, options, cache, progress)
    if prepared is not None:
        record = finish_case(record, prepared, options, progress)
    if writer is not None:
        writer.add(record)
    return record


def _golden_only(record: CaseRecord, golden: dict[str, Any], drawn_error: CaseError, prepared: PreparedCase) -> None:
    """The record of a case its golden sets judge alone: passed on its stored
    examples only (a stored set the target misses fails it afterwards, as
    always), the reason the drawn examples could not run kept beside."""
    record.set_status("passed", f"passed on its {golden['sets']} stored example(s) only; {_drawn_note(drawn_error)}")
    record.examples = 0
    record.drawn_error = {"stage": drawn_error.stage, "message": drawn_error.message}
    record.outputs = {o.name: {"tolerance": prepared.tolerances[o.name].__dict__} for o in prepared.spec.outputs}


def _judged_by_stored_sets(record: CaseRecord, golden: dict[str, Any], exploration: Exploration) -> None:
    """A case the drawn examples found inconclusive, passed on its stored sets,
    which all match: a target that computed a wrong shape, count or value from
    the stored inputs would have missed them, whatever the drawn inputs could
    show, and they hold no noise multiple (an ill-conditioned output is judged
    at their rtol too). An output no stored set compared a finite value of
    (stored as NaN everywhere, or empty) leaves the case inconclusive (no
    change). The drawn part of the record stays as it was."""
    reasons = _inconclusive_outputs(exploration)
    measured = {o["name"] for result in golden["results"] for o in result["outputs"] if o["finite_elements"]}
    if not set(reasons) <= measured:
        return
    short = []
    for name, (kind, detail) in reasons.items():
        short.append({"nonfinite": detail, "empty": detail,
                      "constant": f"{name}: it does not depend on the input ({detail})",
                      "loose": f"{name}: ill-conditioned, {detail}"}[kind])
    record.set_status("passed", f"passed on its {golden['sets']} stored example(s); the drawn examples could not "
                                f"judge {'; '.join(short)}")
    record.drawn_inconclusive = list(reasons)


def _drawn_note(drawn_error: CaseError) -> str:
    return f"the drawn examples could not run: {drawn_error.message.splitlines()[0]}"


def _finished(record: CaseRecord) -> CaseRecord:
    record.duration_s = time.perf_counter() - record.started_at
    # In UTC to the millisecond: `merge --prefer=newest` orders records of machines in other time zones by it.
    record.finished = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return record


def _describe(record: CaseRecord, prepared: PreparedCase, exploration: Exploration, options: RunOptions) -> None:
    """The drawn examples' verdict and numbers, into `record`."""
    outputs = {}
    for out in prepared.spec.outputs:
        tolerance = prepared.tolerances[out.name].__dict__
        worst = exploration.worst.get(out.name)
        sensitivity = exploration.sensitivity.get(out.name)
        if worst is None:
            outputs[out.name] = {"tolerance": tolerance, "sensitivity": sensitivity}
            continue
        outputs[out.name] = {"tolerance": tolerance, **worst["comparison"].to_json(), "noise": worst["noise"],
                             "recipe": worst["recipe"].to_json(), "sensitivity": sensitivity}
        if out.name in exploration.nonfinite:   # the original's NaN/Inf, matched position by position
            outputs[out.name]["nonfinite"] = exploration.nonfinite[out.name]
    # A case that failed by an exception has no error ratio: the examples that
    # passed before it say nothing of the ones that raised.
    raised = exploration.failure is not None and exploration.failure.error is not None
    ratios = [o.get("error_ratio") for o in outputs.values() if isinstance(o.get("error_ratio"), (int, float))]
    normalized = [o.get("normalized_error") for o in outputs.values() if isinstance(o.get("normalized_error"), (int, float))]
    record.set_status("passed" if exploration.passed else "failed",
                      "all outputs within tolerance" if exploration.passed else _failure_message(exploration))
    record.examples = exploration.examples
    record.corner_examples = exploration.corners
    record.shrink_steps = exploration.shrink_steps
    record.first_failure_at = exploration.first_failure_at
    record.worst_error_ratio = max(ratios) if ratios and not raised else None
    record.worst_normalized_error = max(normalized) if normalized and not raised else None
    record.outputs = outputs
    record.provenance = prepared.provenance
    record.versions = prepared.versions
    record.timings = prepared.timings
    if exploration.shrink_cut_s is not None:
        record.shrink_cut_s = exploration.shrink_cut_s
    record.cost = _cost(prepared.timings, exploration.examples + exploration.shrink_steps)
    if exploration.passed and any(o.get("accepted_by") == "noise" for o in outputs.values()):
        noisy = [name for name, o in outputs.items() if o.get("accepted_by") == "noise"]
        record.message = (f"all outputs within tolerance, or within {_multiples(outputs, noisy)} the original's "
                          f"own float32 error ({', '.join(noisy)})")
    floored = [name for name, o in outputs.items() if (o.get("floor") or {}).get("passed")]
    if exploration.passed and floored:   # held to a standard build's error too (harness/precision_floor.py)
        floor = outputs[floored[0]]["floor"]
        record.message += (f"; within {floor['multiple']:g}x the error of {floor['recipe']} of the same model "
                           f"({', '.join(floored)})")
    # passed beyond its fixed tolerance by what the precision explains (precision_floor.py, compare.accept_argmax_flips,
    # compare.accept_saturation)
    explained = [o["message"] for o in outputs.values() if o.get("accepted_by") in ("floor", "argmax", "saturation")]
    if exploration.passed and explained:
        record.message += "; beyond its fixed tolerance, as the precision explains: " + "; ".join(explained)
    if exploration.passed and not prepared.spec.inputs:   # nothing to draw: explore.py ran each side once
        record.message = f"the model takes no inputs: one run of each side compared; {record.message}"
    if prepared.warnings:
        record.warnings = [w.to_json() for w in prepared.warnings]
    if exploration.passed and prepared.case.random_ops:
        record.message = (f"random operators in the graph ({', '.join(prepared.case.random_ops)}): compared by "
                          f"distribution over {exploration.examples} runs of one input, never elementwise; every "
                          "output's shape, dtype, mean, variance, range and spread across draws within the bounds its "
                          "record states")
    if exploration.passed and exploration.inconclusive:
        # --strict-cuda is advice only where it changes the arithmetic: a case on CUDA that runs without it.
        strict_cuda_helps = on_cuda(prepared.case) and not options.strict_cuda
        record.set_status("inconclusive", _inconclusive_message(exploration, strict_cuda_helps))
    if not exploration.passed:
        _add_failure(record, prepared, exploration, options)


def _add_failure(record: CaseRecord, prepared: PreparedCase, exploration: Exploration,
                 options: RunOptions) -> None:
    """The failing input saved beside the reports, with the command that replays
    it, its statistics and its outputs' comparisons, into the record."""
    case, failure = prepared.case, exploration.failure
    replay = {"case_id": case.id, "model_ref": case.model_ref, "source": case.source, "target": case.target,
              "device": case.device, "options": options.to_json(), "recipe": exploration.failure_recipe.to_json()}
    if case.random_ops:   # one input run this many times, compared by distribution: replay draws as many
        replay["draws"] = exploration.examples
    path, command = save_failure(options.reports_dir, case.id, exploration.failure_inputs, replay)
    command += _replay_flags(case, options)
    record.failure = {"recipe": exploration.failure_recipe.to_json(), "npz": str(path), "replay": command,
                      "corner": exploration.failure_corner,
                      "shapes": {k: list(v.shape) for k, v in exploration.failure_inputs.items()},
                      "input_stats": {k: _statistics(v) for k, v in exploration.failure_inputs.items()},
                      "outputs": [c.to_json() for c in failure.comparisons]}
    if failure.error:
        record.failure["error"] = failure.error
        record.failure["error_kinds"] = dict(exploration.errors)
    # Only hypothesis' draws are shrunk: not a corner, nor the one input of a model without inputs or with
    # random operators (explore.py).
    unshrunk = exploration.failure_corner or not prepared.spec.inputs or case.random_ops
    shrunk = "failing input" if unshrunk else "shrunk failing input"
    record.message += f"\n{shrunk}: {path}\nreplay: {command}"
    # The likely cause, found before the first example; dims the harness bounded by default only where the
    # converted model raised (at a size it may not take), never before an error of values.
    causes = [w.message for w in prepared.warnings if w.kind != "default_bounds" or failure.error]
    if causes:
        record.message = "\n".join(causes) + "\n" + record.message


def _save_user_failure(entry: dict[str, Any], prepared: PreparedCase, example: UserExample,
                       options: RunOptions) -> str:
    """The failing user example saved as a drawn failure is, replayed by the same command (without
    --parity-inputs, which replay need not find again), into `entry`; returns the lines that name them."""
    case = prepared.case
    replay = {"case_id": case.id, "model_ref": case.model_ref, "source": case.source, "target": case.target,
              "device": case.device, "options": replace(options, parity_inputs="").to_json(),
              "user_example": example.name}
    path, command = save_failure(options.reports_dir, f"{case.id}.user", example.inputs, replay)
    command += _replay_flags(case, options)
    entry["failure"] = {"example": example.name, "npz": str(path), "replay": command}
    return f"failing user example: {path}\nreplay: {command}"


def _add_localization(record: CaseRecord, prepared: PreparedCase, exploration: Exploration,
                      options: RunOptions) -> None:
    """Where the failing input first diverges (harness.localize), with its
    reproduction beside the .npz, into the record and its message."""
    from harness.localize.locate import localize, walkable_case

    failure = exploration.failure
    case_seconds = time.perf_counter() - record.started_at
    if failure.error:
        localization = {"status": "unavailable", "seconds": 0.0,
                        "message": "the converted model raised on the failing input: no values to walk"}
    else:
        start = time.perf_counter()
        try:
            walkable = walkable_case(prepared, exploration.failure_inputs, options)
        except Exception as error:   # the failing input's reference, run again, must not hide the verdict
            walkable = f"localization failed: {summarize_exception(error, 3)}"
        if isinstance(walkable, str):
            localization = {"status": "unavailable", "message": walkable,
                            "seconds": round(time.perf_counter() - start, 4)}
        else:
            folder = Path(record.failure["npz"]).with_suffix(".repro")
            pair_check = {**record.qdq_check, "pairs": record.qdq_pairs} if record.has("qdq_check") else None
            localization = localize(walkable, [c.to_json() for c in failure.comparisons if not c.passed], folder,
                                    options.localize, pair_check)
    localization["case_seconds"] = round(case_seconds, 4)
    record.localization = localization
    record.message += f"\nlocalized: {localization['message']}"
    if localization.get("repro"):
        record.message += f"\nreproduction: {localization['repro']['command']}"


def _replay_flags(case: Case, options: RunOptions) -> str:
    """What `replay` must be told on its command line, which it never takes
    from the .npz: the model file, the converted file, the trust, the cache."""
    flags = []
    if case.spec is not None and case.spec.origin != "zoo":
        flags += ["--model", case.model_ref]
    if options.converted is not None:
        flags += ["--converted", str(options.converted)]
    if options.trust_model_code:
        flags.append("--trust-model-code")
    if options.cache_dir != RunOptions().cache_dir:
        flags += ["--cache-dir", str(options.cache_dir)]
    return "".join(f" {shlex.quote(flag)}" for flag in flags)


def _cost(timings: dict[str, float], calls: int) -> dict[str, Any]:
    """Milliseconds per example of each side and of the harness's own work
    (input generation, comparison, the float64 twin, the input-sensitivity
    draws, a reduced precision's floor build, and the rest: hypothesis,
    bookkeeping), and that work over the two
    models' inference time."""
    if not calls or "explore_s" not in timings:
        return {}
    parts = {key: timings.get(f"{key}_s", 0.0) for key in ("reference", "target", "inputs", "compare", "noise",
                                                             "sensitivity", "floor")}
    inference = parts["reference"] + parts["target"]
    parts["other"] = max(timings["explore_s"] - sum(parts.values()), 0.0)
    harness = sum(v for k, v in parts.items() if k not in ("reference", "target"))
    return {"per_example_ms": {k: 1e3 * v / calls for k, v in parts.items()},
            "harness_over_inference": harness / inference if inference > 0 else None}


def _failure_message(exploration: Exploration) -> str:
    """What failed, in a few lines: a runtime error once, with how many examples
    raised it; a corner named when only a corner showed the failure."""
    failure = exploration.failure
    if failure.error:
        drawn = exploration.examples + exploration.shrink_steps
        raised = sum(exploration.errors.values())
        kinds = len(exploration.errors)
        text = f"the converted model raised on {raised} of {drawn} examples"
        if kinds > 1:
            text += f" ({kinds} different errors; all of them in the JSON record)"
        message = f"{text}; the last (smallest) one:\n{failure.error}"
    else:
        message = failure.message
    if exploration.failure_corner:
        message = f"[corner example: {exploration.failure_corner}] {message}"
    return message


def _multiples(outputs: dict[str, Any], names: list[str]) -> str:
    allowed = sorted({outputs[n]["tolerance"].get("noise_multiple") for n in names})
    return "/".join(f"{m:g}x" for m in allowed)


def _inconclusive_outputs(exploration: Exploration) -> dict[str, tuple[str, str]]:
    """Each output the drawn examples could not judge, with why: ("nonfinite",
    its NaN/Inf reason), ("empty", empty on both sides), ("constant", how
    little it moved), or ("loose", the error its noise multiple allowed)."""
    reasons = {name: ("nonfinite", reason) for name, reason in exploration.nonfinite_reasons.items()}
    for name in exploration.inconclusive:
        if name in reasons:
            continue
        sensitivity = exploration.sensitivity[name]
        if sensitivity.get("empty"):   # no value on either side: nothing moved because nothing is there
            reasons[name] = ("empty", f"{name} is empty on both sides: compared by shape and dtype only")
        elif sensitivity.get("inconclusive"):
            reasons[name] = ("constant", f"largest change {sensitivity['max_abs_change']:.3g}, "
                                         f"{sensitivity['ratio']:.3g}x its tolerance, over {sensitivity['draws']} "
                                         "different inputs of one shape")
        else:
            reasons[name] = ("loose", f"the noise multiple allowed an error of {exploration.noise_allowance[name]:.3g} "
                                      "of max|ref|")
    return reasons


def _inconclusive_message(exploration: Exploration, strict_cuda_helps: bool) -> str:
    reasons = _inconclusive_outputs(exploration)
    parts = [detail for kind, detail in reasons.values() if kind in ("nonfinite", "empty")]
    constant = [f"{name} ({detail})" for name, (kind, detail) in reasons.items() if kind == "constant"]
    loose = [f"{name} ({detail})" for name, (kind, detail) in reasons.items() if kind == "loose"]
    if constant:
        parts.append("; ".join(constant) + " does not depend on the input within its tolerance, so a converted "
                     "model that ignored its input would have passed too: check the model (a saturated or "
                     "untrained output?), or hold that output to a tighter tolerance")
    if loose:
        parts.append("; ".join(loose) + " passed only within its noise multiple of the original's own float32 "
                     "error, which is so large here that the check cannot tell a conversion error from rounding: "
                     "the model is ill-conditioned in this arithmetic ("
                     + ("try --strict-cuda on CUDA, or a better-conditioned model)" if strict_cuda_helps else
                        "try a better-conditioned model)"))
    return "passed, but inconclusive: " + "; ".join(parts) + ". --parity-strict fails such cases"


def _statistics(array: np.ndarray) -> dict[str, Any]:
    """What a reader of the report needs to know of a failing input at a glance."""
    values = array.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None, "std": float(finite.std()) if finite.size else None,
            "zeros": int(np.count_nonzero(values == 0)), "non_finite": int(values.size - finite.size)}
