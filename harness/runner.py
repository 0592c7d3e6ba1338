"""Runs one case end to end and records it: prepare, explore, save the shrunk
failure, append the record. The pytest plugin and `python -m harness` both call
`run_case`; it returns the record, whose status the caller turns into an outcome."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import ArtifactCache
from harness.engine import PreparedCase, prepare_case
from harness.errors import CaseError, summarize_exception
from harness.explore import Exploration, explore_case
from harness.matrix import Case
from harness.options import RunOptions
from harness.results import ResultsWriter, save_failure


def examples_database(options: RunOptions) -> Path:
    """Hypothesis' example database, kept with the reports."""
    return options.reports_dir / "hypothesis-examples"


def base_record(case: Case) -> dict[str, Any]:
    return {"id": case.id, "model": case.model, "model_ref": case.model_ref, "source": case.source,
            "target": case.target, "device": case.device, "variant": case.variant}


def start_case(case: Case, options: RunOptions, cache: ArtifactCache) -> tuple[dict[str, Any], PreparedCase | None]:
    """Everything before the examples. The record comes back finished (status
    set) for a skip or an error; otherwise with the prepared case to explore."""
    record = base_record(case)
    record["_start"] = time.perf_counter()
    if case.error:
        record.update(status="error", stage="options", message=case.error)
        return _finished(record), None
    if case.skip:
        record.update(status="skipped", message=case.skip)
        return _finished(record), None
    try:
        return record, prepare_case(case, options, cache)
    except CaseError as error:
        record.update(status="error", stage=error.stage, message=error.message)
    except Exception as error:  # a bug in an adapter must not end the run
        record.update(status="error", stage="internal", message=summarize_exception(error, 10))
    return _finished(record), None


def finish_case(record: dict[str, Any], prepared: PreparedCase, options: RunOptions) -> dict[str, Any]:
    """Run the examples of a prepared case and complete its record."""
    try:
        exploration = explore_case(prepared, options.examples, database_path=examples_database(options))
        record.update(_describe(prepared, exploration, options))
    except CaseError as error:
        record.update(status="error", stage=error.stage, message=error.message)
    except Exception as error:
        record.update(status="error", stage="internal", message=summarize_exception(error, 10))
    record.setdefault("provenance", prepared.provenance)
    record.setdefault("versions", prepared.versions)
    record.setdefault("timings", prepared.timings)
    return _finished(record)


def run_case(case: Case, options: RunOptions, cache: ArtifactCache, writer: ResultsWriter | None = None) -> dict[str, Any]:
    """One case from start to record, outside pytest."""
    record, prepared = start_case(case, options, cache)
    if prepared is not None:
        record = finish_case(record, prepared, options)
    if writer is not None:
        writer.add(record)
    return record


def _finished(record: dict[str, Any]) -> dict[str, Any]:
    record["duration_s"] = time.perf_counter() - record.pop("_start")
    return record


def _describe(prepared: PreparedCase, exploration: Exploration, options: RunOptions) -> dict[str, Any]:
    outputs = {}
    for out in prepared.spec.outputs:
        tolerance = prepared.tolerances[out.name].__dict__
        worst = exploration.worst.get(out.name)
        if worst is None:
            outputs[out.name] = {"tolerance": tolerance}
            continue
        outputs[out.name] = {"tolerance": tolerance, **worst["comparison"].to_json(),
                             "noise": worst["noise"], "recipe": worst["recipe"].to_json()}
    ratios = [o.get("error_ratio") for o in outputs.values() if isinstance(o.get("error_ratio"), (int, float))]
    normalized = [o.get("normalized_error") for o in outputs.values() if isinstance(o.get("normalized_error"), (int, float))]
    record: dict[str, Any] = {
        "status": "passed" if exploration.passed else "failed",
        "message": "all outputs within tolerance" if exploration.passed else exploration.failure.message,
        "examples": exploration.examples,
        "worst_error_ratio": max(ratios) if ratios else None,
        "worst_normalized_error": max(normalized) if normalized else None,
        "outputs": outputs,
        "provenance": prepared.provenance,
        "versions": prepared.versions,
        "timings": prepared.timings,
    }
    if not exploration.passed:
        case = prepared.case
        replay = {"case_id": case.id, "model_ref": case.model_ref, "source": case.source, "target": case.target,
                  "device": case.device, "options": options.to_json(), "recipe": exploration.failure_recipe.to_json()}
        path, command = save_failure(options.reports_dir, case.id, exploration.failure_inputs, replay)
        record["failure"] = {"recipe": exploration.failure_recipe.to_json(), "npz": str(path), "replay": command,
                             "shapes": {k: list(v.shape) for k, v in exploration.failure_inputs.items()},
                             "input_stats": {k: _statistics(v) for k, v in exploration.failure_inputs.items()},
                             "outputs": [c.to_json() for c in exploration.failure.comparisons]}
        record["message"] += f"\nshrunk failing input: {path}\nreplay: {command}"
    return record


def _statistics(array: np.ndarray) -> dict[str, Any]:
    """What a reader of the report needs to know of a failing input at a glance."""
    values = array.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None, "std": float(finite.std()) if finite.size else None,
            "zeros": int(np.count_nonzero(values == 0)), "non_finite": int(values.size - finite.size)}
